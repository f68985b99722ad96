"""Prometheus metrics, collected from the live stats objects at scrape time (no global registry)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from streamer.inference.metrics import InferenceCollector
from streamer.metrics_pipeline import PipelineDetailCollector

if TYPE_CHECKING:
    from streamer.http.guard import HttpStats
    from streamer.inference import InferenceService
    from streamer.pipeline import CameraPipeline
    from streamer.rtsp.server import RtspServer
    from streamer.webrtc.whep import WhepService
    from streamer.webrtc.whip import WhipService


class StreamerCollector(Collector):
    def __init__(self, pipelines: Iterable[CameraPipeline], rtsp: RtspServer | None) -> None:
        self.streams = pipelines  # the stream registry (or a list), read at every scrape
        self.rtsp = rtsp

    def collect(self) -> Iterator[Metric]:
        pipelines = list(self.streams)
        def counter(name: str, text: str, labels: list[str]) -> CounterMetricFamily:
            return CounterMetricFamily(f"streamer_{name}", text, labels=labels)

        def gauge(name: str, text: str, labels: list[str]) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"streamer_{name}", text, labels=labels)

        frames_in = counter("source_frames", "Frames decoded from the source", ["camera"])
        reconnects = counter("source_reconnects", "Source reconnect attempts", ["camera"])
        corrupt = counter("source_corrupt_packets", "Corrupt packets or frames seen", ["camera"])
        connected = gauge("source_connected", "1 while the source is connected", ["camera"])
        restored = counter("frames_restored", "Frames restored, by the ladder's level and the model it ran (level "
                           "temporal: the classical filter, model 'none')", ["camera", "level", "model"])
        out = counter("frames_out", "Frames handed to the encoder", ["camera"])
        degraded = counter("frames_degraded", "Frames sent unrestored, by reason", ["camera", "reason"])
        dropped = counter("queue_dropped", "Items dropped by a bounded queue", ["camera", "queue"])
        encoded = counter("encoded_bytes", "Bytes of H.264 produced", ["camera"])
        viewers = gauge("rtsp_viewers", "RTSP sessions playing", ["camera"])
        viewer_drops = counter("viewer_dropped_units", "Access units dropped for slow readers", ["camera"])
        restarts = counter("stage_restarts", "Restarts of a pipeline stage after it failed", ["camera", "stage"])
        ready = gauge("camera_ready", "1 while the camera produces output frames (what /readyz checks)", ["camera"])
        encode_errors = counter("encode_errors", "Frames the encoder refused (skipped)", ["camera"])
        keyframes = counter(
            "keyframe_requests",
            "Instant start: IDRs requested by viewers (requested), asked of the encoder (forced), or served by an "
            "IDR already asked for within encoder.keyframe_request_interval_s (coalesced)",
            ["camera", "outcome"],
        )
        tap_messages = counter("tap_messages", "Frames published on a ZeroMQ frame tap", ["camera", "tap"])
        tap_dropped = counter(
            "tap_dropped", "Frames a ZeroMQ frame tap dropped (queue full, or refused at the send high-water mark)",
            ["camera", "tap"],
        )
        for pipeline in pipelines:
            name = pipeline.name
            for point, tap in pipeline.taps.items():
                tap_messages.add_metric([name, point], tap.messages)
                tap_dropped.add_metric([name, point], tap.dropped)
            stats = pipeline.source.stats
            frames_in.add_metric([name], stats.frames)
            reconnects.add_metric([name], stats.reconnects)
            corrupt.add_metric([name], stats.corrupt_packets)
            connected.add_metric([name], float(stats.connected))
            encoded.add_metric([name], pipeline.encoder.stats.bytes)
            dropped.add_metric([name, "decoded"], pipeline.decoded.dropped)
            dropped.add_metric([name, "restored"], pipeline.restored.dropped)
            ready.add_metric([name], float(pipeline.readiness().ready))
            encode_errors.add_metric([name], pipeline.encode_stage.errors)
            for stage, health in pipeline.stage_health().items():
                restarts.add_metric([name, stage], health.restarts)
            restarts.add_metric([name, "rtsp-viewer"], pipeline.hub.sender_restarts)
            if pipeline.restorer is not None:
                restore = pipeline.restorer.stats
                dropped.add_metric([name, "restore_pending"], restore.dropped)
                models = {level.name: level.model or "none" for level in pipeline.restorer.levels}
                for level, count in restore.restored_by_level.items():
                    restored.add_metric([name, level, models.get(level, "none")], count)
                if not restore.restored_by_level:  # the series exists from the start (rate() needs two samples)
                    restored.add_metric([name, pipeline.restorer.levels[0].name, models[pipeline.restorer.levels[0].name]], 0)
                out.add_metric([name], restore.frames_out)
                for reason, count in restore.degraded.items():
                    degraded.add_metric([name, reason], count)
            subscriptions = pipeline.hub.subscriptions
            viewers.add_metric([name], sum(1 for sub in subscriptions if sub.name.startswith("rtsp-")))
            viewer_drops.add_metric([name], sum(sub.dropped for sub in subscriptions))
            gate = pipeline.hub.keyframes
            if gate is not None:
                keyframes.add_metric([name, "requested"], gate.requests)
                keyframes.add_metric([name, "forced"], gate.forced)
                keyframes.add_metric([name, "coalesced"], gate.coalesced)
        yield from (frames_in, reconnects, corrupt, connected, restored, out, degraded, dropped)
        yield from (encoded, viewers, viewer_drops, restarts, ready, encode_errors, keyframes)
        if any(pipeline.taps for pipeline in pipelines):
            yield from (tap_messages, tap_dropped)
        if self.rtsp is not None:
            requests = counter("rtsp_requests", "RTSP requests handled", [])
            requests.add_metric([], self.rtsp.requests)
            bad = counter("rtsp_bad_requests", "RTSP requests refused as malformed or invalid", [])
            bad.add_metric([], self.rtsp.bad_requests)
            yield from (requests, bad)
            yield from _rtsp_metrics(self.rtsp)


_RTSP_COUNTERS = (
    ("connections", "RTSP control connections accepted"),
    ("connections_refused", "RTSP connections closed at once: a connection cap reached and every holder playing"),
    ("connections_evicted", "Idle non-playing RTSP connections closed to make room under a connection cap"),
    ("idle_timeouts", "RTSP connections closed after idle_timeout_s without a request"),
    ("request_timeouts", "RTSP connections closed because a request was not complete within request_timeout_s"),
    ("sessions_refused", "RTSP SETUP or PLAY refused with 453 by a session cap or max_viewers"),
    ("sessions_evicted", "RTSP sessions set up but not playing, ended to make room under a session cap"),
    ("sessions_expired", "RTSP sessions set up but not played within setup_timeout_s"),
    ("auth_failures", "RTSP requests with wrong credentials"),
    ("auth_lockouts", "RTSP client addresses locked out after auth.max_failures wrong credentials"),
    ("auth_locked_requests", "RTSP requests refused (403) because their address was locked out"),
    ("internal_errors", "Exceptions that reached an RTSP catch-all (a bug: should stay 0)"),
)


def _rtsp_metrics(rtsp: RtspServer) -> Iterator[Metric]:
    for name, text in _RTSP_COUNTERS:
        family = CounterMetricFamily(f"streamer_rtsp_{name}", text, labels=[])
        family.add_metric([], getattr(rtsp.counters, name))
        yield family
    connections = GaugeMetricFamily("streamer_rtsp_open_connections", "RTSP control connections open", labels=[])
    connections.add_metric([], len(rtsp.connections))
    sessions = GaugeMetricFamily("streamer_rtsp_sessions", "RTSP sessions by state", labels=["state"])
    sessions.add_metric(["playing"], rtsp.session_limits.playing)
    sessions.add_metric(["pending"], rtsp.session_limits.pending)
    yield from (connections, sessions)


def build_registry(pipelines: Iterable[CameraPipeline], rtsp: RtspServer | None,
                   inference: InferenceService | None = None) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StreamerCollector(pipelines, rtsp))
    if inference is not None:
        registry.register(InferenceCollector(inference))
    registry.register(PipelineDetailCollector(pipelines))
    ProcessCollector(registry=registry)  # process_cpu_seconds_total, process_resident_memory_bytes, fds
    return registry


class HttpCollector(Collector):
    """The HTTP server's own counters (registered by ``HttpServer`` on the registry it serves)."""

    def __init__(self, stats: HttpStats) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self.stats
        for name, text, value in (
            ("http_bad_requests", "HTTP requests refused as malformed or over a size limit (4xx)", stats.bad_requests),
            ("http_internal_errors", "HTTP requests that failed inside the server (500), a bug", stats.internal_errors),
            ("http_auth_failures", "HTTP requests refused for a missing or wrong bearer token (401)", stats.auth_failures),
            ("http_connections_refused", "HTTP connections refused over max_connections(_per_address)",
             stats.connections_refused),
        ):
            family = CounterMetricFamily(f"streamer_{name}", text, labels=[])
            family.add_metric([], value)
            yield family
        open_now = GaugeMetricFamily("streamer_http_connections", "HTTP connections open", labels=[])
        open_now.add_metric([], stats.connections_open)
        yield open_now


class WebRtcCollector(Collector):
    """WebRTC (WHEP) viewers and signalling outcomes (registered by ``HttpServer`` when WebRTC is on)."""

    def __init__(self, whep: WhepService, whip: WhipService | None = None) -> None:
        self.whep = whep
        self.whip = whip

    def collect(self) -> Iterator[Metric]:
        viewers = GaugeMetricFamily("streamer_webrtc_viewers", "WebRTC (WHEP) sessions open, by view (restored, "
                                    "raw, compare)", labels=["camera", "view"])
        drops = CounterMetricFamily(
            "streamer_webrtc_viewer_dropped_units", "Access units dropped for slow WebRTC viewers (ended and open sessions)",
            labels=["camera", "view"],
        )
        ended = self.whep.registry.ended_dropped
        for stream in self.whep.hubs:  # a camera's path, and its views' "<camera>/raw", "<camera>/compare"
            camera, _, view = stream.partition("/")
            sessions = [session for session in self.whep.sessions.values() if session.stream == stream]
            viewers.add_metric([camera, view or "restored"], len(sessions))
            drops.add_metric([camera, view or "restored"], ended.get(stream, 0) + sum(session.dropped for session in sessions))
        yield from (viewers, drops)
        stats = self.whep.stats
        yield from _counters((
            ("webrtc_sessions_started", "WHEP offers answered (201)", stats.started),
            ("webrtc_sessions_refused", "WHEP offers refused at max_sessions or before a picture (503)", stats.refused),
            ("webrtc_bad_offers", "WHEP offers refused as unusable (4xx)", stats.bad_offers),
            ("webrtc_sessions_failed", "WebRTC viewers whose connection failed or never came up",
             self.whep.registry.failed),
            ("webrtc_keyframe_requests", "PLI/FIR received from WebRTC viewers", stats.keyframe_requests),
        ))
        if self.whip is not None:
            yield from _whip_metrics(self.whip)


def _whip_metrics(whip: WhipService) -> Iterator[Metric]:
    publishers = GaugeMetricFamily("streamer_whip_publishers", "WHIP publishers connected", labels=["camera"])
    dropped = CounterMetricFamily("streamer_whip_dropped_frames",
                                  "Published frames dropped because the camera's pipeline was behind", labels=["camera"])
    for name, source in whip.sources.items():
        publishers.add_metric([name], float(source.publisher is not None))
        dropped.add_metric([name], source.dropped)
    yield from (publishers, dropped)
    stats = whip.stats
    yield from _counters((
        ("whip_sessions_started", "WHIP publishers answered (201)", stats.started),
        ("whip_conflicts", "WHIP offers refused because the path had a publisher (409)", stats.conflicts),
        ("whip_bad_offers", "WHIP offers refused as unusable (4xx)", stats.bad_offers),
        ("whip_auth_failures", "WHIP offers without the path's token (401)", stats.auth_failures),
    ))


def _counters(rows: Iterable[tuple[str, str, float]]) -> Iterator[Metric]:
    """Unlabelled counters from (name without the streamer_ prefix, help, value) rows."""
    for name, text, value in rows:
        family = CounterMetricFamily(f"streamer_{name}", text, labels=[])
        family.add_metric([], value)
        yield family
