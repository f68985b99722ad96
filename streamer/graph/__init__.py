"""Building blocks of the asyncio graph: frames, bounded channels, worker threads."""
