"""RTSP camera ingest with PyAV: quick then stepped reconnects, stall and decode watchdogs, keyframe resync."""

from __future__ import annotations

import logging
import time
from typing import Any

import av

from streamer.config import RtspSourceConfig
from streamer.redact import redact_text
from streamer.redact import redact_url as redact  # the URL without its password, for logs
from streamer.sources.backoff import ReconnectSchedule
from streamer.sources.base import Source

log = logging.getLogger(__name__)


REPEAT_LOG_S = 60.0


class ReconnectNeeded(Exception):
    pass


class RtspSource(Source):
    def __init__(self, config: RtspSourceConfig, name: str) -> None:
        super().__init__(name)
        self.config = config
        self.url_for_logs = redact(config.url)
        self.schedule = ReconnectSchedule(
            config.reconnect_fast_s, config.reconnect_fast_for_s, config.reconnect_backoff_s
        )
        self._logged_failure = ""
        self._logged_at = 0.0
        self._decoded = False

    def open_options(self) -> dict[str, str]:
        # Probe as little as possible: the SDP's sprop-parameter-sets carry the stream's parameters, the
        # decoder reads them in-band anyway, and the frame rate is measured downstream from timestamps.
        # FFmpeg's defaults (and fpsprobesize) hold a (re)connect for up to 0.5 s at 25 fps, longer at 10.
        return {
            "rtsp_transport": self.config.transport,
            "fflags": "nobuffer+discardcorrupt",
            "flags": "low_delay",
            "analyzeduration": "100000",
            "probesize": "32",
            "fpsprobesize": "0",
            "max_delay": "500000",
            "reorder_queue_size": "64",
        }

    def _produce(self) -> None:
        while not self.stopping:
            self.schedule.attempt()
            try:
                container = av.open(
                    self.config.url,
                    options=self.open_options(),
                    timeout=(self.config.open_timeout_s, self.config.read_timeout_s),
                )
            except (av.error.FFmpegError, OSError) as error:
                reason = str(error)
                if self.schedule.since_attempt() >= self.config.open_timeout_s:  # interrupted: any error code
                    reason = f"no answer within open_timeout_s={self.config.open_timeout_s:g}"
                self._failed(f"cannot open {self.url_for_logs}: {reason}")
                continue
            message = f"{self.url_for_logs}: stream ended"
            self._decoded = False
            try:
                self._read(container)
            except ReconnectNeeded as reason:
                message = f"{self.url_for_logs}: {reason}"
            except av.error.ExitError:
                message = f"{self.url_for_logs}: no packet for read_timeout_s={self.config.read_timeout_s:g}"
            except (av.error.FFmpegError, OSError) as error:
                message = f"{self.url_for_logs}: {error}"
            finally:
                self.stats.connected = False
                try:
                    container.close()
                except Exception:
                    pass
            if self._decoded:
                self.schedule.lost()
            self._failed(message)

    def _failed(self, message: str) -> None:
        """Count and log a failed attempt or a lost connection, then wait for the next attempt."""
        if self.stopping:
            return
        pause = self.schedule.pause()
        message = redact_text(message.replace(self.config.url, self.url_for_logs))  # FFmpeg errors quote the URL
        self.stats.last_error = message
        self.stats.reconnects += 1
        # One outage's failure is logged once, and again once a minute while it lasts (debug in between).
        now = time.monotonic()
        repeated = message == self._logged_failure and now - self._logged_at < REPEAT_LOG_S
        if not repeated:
            self._logged_failure, self._logged_at = message, now
        level = logging.DEBUG if repeated else logging.WARNING
        log.log(level, "source %s: %s; reconnecting in %.1f s", self.name, message, pause)
        self.sleep(pause)

    def _read(self, container: Any) -> None:
        """Demux and decode until the stream fails (raises) or ends (returns)."""
        if not container.streams.video:
            raise ReconnectNeeded("no video stream")
        stream = container.streams.video[0]
        stream.codec_context.thread_type = "SLICE"
        if stream.average_rate:
            self.fps_hint = float(stream.average_rate)
        time_base = stream.time_base
        self.stats.connects += 1
        self.stats.connected = True
        self._logged_failure = ""
        self.mark_discontinuity()
        log.info("source %s: connected to %s (%s)", self.name, self.url_for_logs, self.config.transport)
        waiting_for_keyframe = True
        last_frame_at = last_packet_at = time.monotonic()
        for packet in container.demux(stream):
            if self.stopping:
                break
            now = time.monotonic()
            if now - last_packet_at > self.config.read_timeout_s:
                # PyAV's read timeout restarts with every av_read_frame, and when it fires FFmpeg's H.264
                # parser hands over the frame it held and drops the error: only the next read, a whole
                # timeout later, fails. A packet after such a gap is that flushed frame: the camera stalled.
                raise ReconnectNeeded(f"no packet for read_timeout_s={self.config.read_timeout_s:g}")
            last_packet_at = now
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
                last_frame_at = time.monotonic()
                self._decoded = True
            if time.monotonic() - last_frame_at > self.config.no_frames_timeout_s:
                raise ReconnectNeeded(f"no frame decoded for {self.config.no_frames_timeout_s:.0f} s")
