"""streamer: real-time restoration of live video."""

__version__ = "0.1.0"
