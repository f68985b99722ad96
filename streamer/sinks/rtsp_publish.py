"""Push the restored stream to an external RTSP server (ANNOUNCE/RECORD), e.g. MediaMTX."""

from __future__ import annotations

import asyncio
import logging

import av

from streamer.config import RtspPublishSinkConfig
from streamer.hub import StreamHub
from streamer.redact import redact_url as redact
from streamer.sinks.base import H264Muxer, Sink

log = logging.getLogger(__name__)


class RtspPublishSink(Sink):
    kind = "rtsp_publish"

    def __init__(self, config: RtspPublishSinkConfig, hub: StreamHub) -> None:
        super().__init__(hub, f"publish-{redact(config.url)}")
        self.config = config
        self.connects = 0

    async def run(self) -> None:
        muxer: H264Muxer | None = None
        options = {"rtsp_transport": self.config.transport, "timeout": "5000000"}
        try:
            while not self._stopping:
                unit = await self.subscription.get()
                if unit is None:
                    break
                if muxer is not None and (unit.width, unit.height) != muxer.size and unit.keyframe:
                    await self.blocking(muxer.close)
                    muxer = None
                if muxer is None:
                    if not unit.keyframe:
                        continue
                    try:
                        muxer = await self.blocking(H264Muxer, self.config.url, "rtsp", options, unit)
                    except (av.error.FFmpegError, OSError) as error:
                        await self._failed(f"cannot publish to {redact(self.config.url)}: {error}")
                        continue
                    self.connects += 1
                    log.info("publishing %s to %s", self.hub.name, redact(self.config.url))
                try:
                    await self.blocking(muxer.write, unit)
                    self.units_written += 1
                except (av.error.FFmpegError, OSError) as error:
                    await self.blocking(muxer.close)
                    muxer = None
                    await self._failed(f"publish to {redact(self.config.url)} failed: {error}")
        finally:
            if muxer is not None:
                await self.blocking(muxer.close)

    async def _failed(self, message: str) -> None:
        message = message.replace(self.config.url, redact(self.config.url))  # FFmpeg errors quote the URL
        self.errors += 1
        log.warning("%s; retrying in %.1f s", message, self.config.reconnect_s)
        await asyncio.sleep(self.config.reconnect_s)
        self.subscription.resync()

    def describe(self) -> str:
        return f"rtsp_publish:{redact(self.config.url)}"
