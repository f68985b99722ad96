"""Outputs beyond the RTSP server: push to an external RTSP server, record to a file."""

from __future__ import annotations

from streamer.config import FileSinkConfig, RtspPublishSinkConfig
from streamer.hub import StreamHub
from streamer.sinks.base import Sink


def create_sink(config: RtspPublishSinkConfig | FileSinkConfig, hub: StreamHub) -> Sink:
    """Factory keyed on the config's ``type``."""
    if isinstance(config, RtspPublishSinkConfig):
        from streamer.sinks.rtsp_publish import RtspPublishSink

        return RtspPublishSink(config, hub)
    from streamer.sinks.file import FileSink

    return FileSink(config, hub)


__all__ = ["Sink", "create_sink"]
