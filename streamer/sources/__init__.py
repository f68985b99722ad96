"""Frame sources: each decodes in a worker thread and hands frames to a bounded channel."""

from __future__ import annotations

from streamer.config import DemoSourceConfig, FileSourceConfig, RtspSourceConfig, WhipSourceConfig
from streamer.sources.base import Source


def create_source(config: RtspSourceConfig | DemoSourceConfig | FileSourceConfig | WhipSourceConfig,
                  name: str) -> Source:
    """Factory keyed on the config's ``type``."""
    if isinstance(config, RtspSourceConfig):
        from streamer.sources.rtsp import RtspSource

        return RtspSource(config, name)
    if isinstance(config, DemoSourceConfig):
        from streamer.sources.demo import DemoSource

        return DemoSource(config, name)
    if isinstance(config, WhipSourceConfig):
        from streamer.sources.whip import WhipSource

        return WhipSource(config, name)
    from streamer.sources.file import FileSource

    return FileSource(config, name)


__all__ = ["Source", "create_source"]
