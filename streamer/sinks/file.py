"""Record the restored stream to a file (mkv stays playable after a crash; mp4 needs a clean stop)."""

from __future__ import annotations

import logging
from pathlib import Path

from streamer.config import FileSinkConfig
from streamer.hub import StreamHub
from streamer.sinks.base import H264Muxer, Sink

log = logging.getLogger(__name__)

MATROSKA_SUFFIXES = {".mkv", ".mka", ".webm"}
# A Matroska cluster is written out whole, so a process killed outright (SIGKILL, power loss) loses the
# open one: by default a GOP or up to 5 s. Short clusters, each flushed to the file as it is written,
# bound that to ~0.2 s.
MATROSKA_OPTIONS = {"cluster_time_limit": "200", "flush_packets": "1"}


class FileSink(Sink):
    kind = "file"

    def __init__(self, config: FileSinkConfig, hub: StreamHub) -> None:
        self.path = Path(config.path).expanduser()
        super().__init__(hub, f"file-{self.path.name}")
        self.config = config
        self._parts = 0  # files opened so far

    def _target(self, part: int) -> str:
        if part == 0:
            return str(self.path)
        return str(self.path.with_name(f"{self.path.stem}.{part}{self.path.suffix}"))

    async def run(self) -> None:
        """Record until the stream ends. A new size, or a restart after a failure, starts a new part
        (NAME.1.mkv, NAME.2.mkv, ...): a file already written is never overwritten."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        muxer: H264Muxer | None = None
        try:
            while True:
                unit = await self.subscription.get()
                if unit is None:
                    break
                if muxer is not None and (unit.width, unit.height) != muxer.size and unit.keyframe:
                    await self.blocking(muxer.close)  # a new size starts a new file
                    muxer = None
                if muxer is None:
                    target = self._target(self._parts)
                    muxer = await self.blocking(H264Muxer, target, None, self._options(), unit)
                    self._parts += 1
                    log.info("recording %s to %s", self.hub.name, target)
                await self.blocking(muxer.write, unit)
                self.units_written += 1
        finally:
            if muxer is not None:
                await self.blocking(muxer.close)

    def _options(self) -> dict[str, str]:
        return dict(MATROSKA_OPTIONS) if self.path.suffix.lower() in MATROSKA_SUFFIXES else {}

    def describe(self) -> str:
        return f"file:{self.path}"
