"""RTSP camera ingest with PyAV: reconnect with stepped backoff, watchdog, keyframe resync."""

from __future__ import annotations

import logging
import time
from typing import Any

import av

from streamer.config import RtspSourceConfig
from streamer.redact import redact_url as redact  # the URL without its password, for logs
from streamer.sources.base import Source

log = logging.getLogger(__name__)


class ReconnectNeeded(Exception):
    pass


class RtspSource(Source):
    def __init__(self, config: RtspSourceConfig, name: str) -> None:
        super().__init__(name)
        self.config = config
        self.url_for_logs = redact(config.url)

    def open_options(self) -> dict[str, str]:
        return {
            "rtsp_transport": self.config.transport,
            "fflags": "nobuffer+discardcorrupt",
            "flags": "low_delay",
            "analyzeduration": "500000",
            "probesize": "500000",
            "max_delay": "500000",
            "reorder_queue_size": "64",
        }

    def _produce(self) -> None:
        failures = 0
        while not self.stopping:
            try:
                container = av.open(
                    self.config.url,
                    options=self.open_options(),
                    timeout=(self.config.open_timeout_s, self.config.read_timeout_s),
                )
            except (av.error.FFmpegError, OSError) as error:
                failures = self._failed(failures, f"cannot open {self.url_for_logs}: {error}")
                continue
            try:
                if self._read(container):
                    failures = 0
                failures = self._failed(failures, f"{self.url_for_logs}: stream ended")
            except ReconnectNeeded as reason:
                failures = self._failed(failures, f"{self.url_for_logs}: {reason}")
            except (av.error.FFmpegError, OSError) as error:
                failures = self._failed(failures, f"{self.url_for_logs}: {error}")
            finally:
                self.stats.connected = False
                try:
                    container.close()
                except Exception:
                    pass

    def _failed(self, failures: int, message: str) -> int:
        if self.stopping:
            return failures
        steps = self.config.reconnect_backoff_s
        pause = steps[min(failures, len(steps) - 1)]
        message = message.replace(self.config.url, self.url_for_logs)  # FFmpeg errors quote the URL
        self.stats.last_error = message
        self.stats.reconnects += 1
        log.warning("source %s: %s; reconnecting in %.1f s", self.name, message, pause)
        self.sleep(pause)
        return failures + 1

    def _read(self, container: Any) -> bool:
        """Demux and decode until the stream fails; True when at least one frame was decoded."""
        if not container.streams.video:
            raise ReconnectNeeded("no video stream")
        stream = container.streams.video[0]
        stream.codec_context.thread_type = "SLICE"
        if stream.average_rate:
            self.fps_hint = float(stream.average_rate)
        time_base = stream.time_base
        self.stats.connects += 1
        self.stats.connected = True
        self.mark_discontinuity()
        log.info("source %s: connected to %s (%s)", self.name, self.url_for_logs, self.config.transport)
        waiting_for_keyframe = True
        decoded_any = False
        last_frame_at = time.monotonic()
        for packet in container.demux(stream):
            if self.stopping:
                break
            if packet.size == 0:
                continue
            if waiting_for_keyframe:
                if not packet.is_keyframe:
                    self.stats.skipped_until_keyframe += 1
                    continue
                waiting_for_keyframe = False
            if packet.is_corrupt:
                self.stats.corrupt_packets += 1
            try:
                frames = stream.codec_context.decode(packet)
            except av.error.InvalidDataError:
                self.stats.corrupt_packets += 1
                frames = []
            for frame in frames:
                if frame.is_corrupt:
                    self.stats.corrupt_packets += 1
                timestamp = float(frame.pts * time_base) if frame.pts is not None and time_base else None
                self.emit(None, timestamp, video=frame)
                decoded_any = True
                last_frame_at = time.monotonic()
            if time.monotonic() - last_frame_at > self.config.no_frames_timeout_s:
                raise ReconnectNeeded(f"no frame decoded for {self.config.no_frames_timeout_s:.0f} s")
        return decoded_any
