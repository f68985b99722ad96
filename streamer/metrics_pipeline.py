"""Per-camera metrics beyond the core set in ``streamer.metrics``: latency histograms, source and encoder
detail, window fill, camera state and the engine in use. Read from the live stats objects at scrape time."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from streamer.pipeline import CameraPipeline

CAMERA_STATES = ("starting", "running", "stalled", "failed", "finished", "stopped")

_SOURCE_COUNTERS = (
    ("connects", "connects", "Source connections made (the first one and every reconnect that worked)"),
    ("skipped_frames", "skipped_until_keyframe", "Frames dropped after corruption while waiting for a keyframe"),
    ("size_changes", "size_changes", "Changes of the source's picture size"),
    ("timestamp_jumps", "timestamp_jumps", "Source timestamps that jumped and were re-anchored"),
)


class PipelineDetailCollector(Collector):
    def __init__(self, pipelines: Iterable[CameraPipeline]) -> None:
        self.streams = pipelines  # the stream registry (or a list), read at every scrape

    def collect(self) -> Iterator[Metric]:
        pipelines = list(self.streams)
        yield from _source_metrics(pipelines)
        yield from _restore_metrics(pipelines)
        yield from _encoder_metrics(pipelines)
        yield from _state_metrics(pipelines)
        yield from _delivery_metrics(pipelines)


def _source_metrics(pipelines: list[CameraPipeline]) -> Iterator[Metric]:
    for name, attribute, text in _SOURCE_COUNTERS:
        family = CounterMetricFamily(f"streamer_source_{name}", text, labels=["camera"])
        for pipeline in pipelines:
            family.add_metric([pipeline.name], getattr(pipeline.source.stats, attribute))
        yield family


def _restore_metrics(pipelines: list[CameraPipeline]) -> Iterator[Metric]:
    frames_in = CounterMetricFamily("streamer_restore_frames_in", "Frames that entered the restore stage", labels=["camera"])
    engine = HistogramMetricFamily(
        "streamer_engine_latency_seconds", "Engine time per restored frame (RGB conversion included)", labels=["camera"]
    )
    fill = GaugeMetricFamily("streamer_window_fill_ratio", "Frames held in the temporal window / its size", labels=["camera"])
    resets = CounterMetricFamily(
        "streamer_window_resets", "Temporal window restarts at a discontinuity (reconnect, size change)", labels=["camera"]
    )
    info = GaugeMetricFamily(
        "streamer_engine_info", "The engine a camera restores with (always 1)", labels=["camera", "backend", "model", "precision"]
    )
    level = GaugeMetricFamily(
        "streamer_restore_level", "1 for the degradation ladder's level a camera restores at now (0 for its others)",
        labels=["camera", "level"],
    )
    changes = CounterMetricFamily(
        "streamer_restore_level_changes", "Ladder level changes: down (frames missed their deadline) or up (a probe)",
        labels=["camera", "direction"],
    )
    failures = CounterMetricFamily(
        "streamer_restore_level_failures", "Restorations a ladder level failed on (a GPU out of memory, a device "
        "lost); the frame was restored by a level below it", labels=["camera", "level"],
    )
    recurrent = CounterMetricFamily(
        "streamer_recurrent_state_windows", "Windows of a recurrent model (lite-recurrent) by how its state went in: "
        "continued (the previous frame's) or restarted (the reference frame: a stream's start, a frame sent "
        "unrestored or at another ladder level, a size change)", labels=["camera", "outcome"],
    )
    for pipeline in pipelines:
        restorer = pipeline.restorer
        if restorer is None:
            continue
        counts = restorer.engine.recurrent_counts()
        if counts is not None:
            recurrent.add_metric([pipeline.name, "continued"], counts[0])
            recurrent.add_metric([pipeline.name, "restarted"], counts[1])
        for name in restorer.controller.levels:
            failures.add_metric([pipeline.name, name], restorer.stats.level_failures.get(name, 0))
        frames_in.add_metric([pipeline.name], restorer.stats.frames_in)
        restorer.stats.engine_latency.add_to(engine, [pipeline.name])
        fill.add_metric([pipeline.name], len(restorer.window) / max(1, restorer.window.size))
        resets.add_metric([pipeline.name], restorer.window.resets)
        model = restorer.engine.info
        info.add_metric([pipeline.name, restorer.engine.backend, model.name, model.precision], 1.0)
        for candidate in restorer.controller.levels:
            level.add_metric([pipeline.name, candidate], float(candidate == restorer.controller.level))
        for direction, count in restorer.controller.changes.items():
            changes.add_metric([pipeline.name, direction], count)
    yield from (frames_in, engine, fill, resets, info, level, changes, failures, recurrent)


def _encoder_metrics(pipelines: list[CameraPipeline]) -> Iterator[Metric]:
    frames = CounterMetricFamily("streamer_encoded_frames", "Frames the H.264 encoder produced", labels=["camera"])
    keyframes = CounterMetricFamily(
        "streamer_encoder_keyframes", "IDR frames encoded: on a viewer's request, where the degradation ladder changed level, or on the periodic GOP", labels=["camera", "cause"]
    )
    reinits = CounterMetricFamily("streamer_encoder_reinits", "Encoder re-opens (frame rate or size changed)", labels=["camera"])
    target = GaugeMetricFamily(
        "streamer_encoder_target_bytes_per_second", "Configured target bitrate of the restored stream", labels=["camera"]
    )
    end_to_end = HistogramMetricFamily(
        "streamer_end_to_end_latency_seconds", "Capture wall clock to the access unit handed to viewers", labels=["camera"]
    )
    for pipeline in pipelines:
        stats = pipeline.encoder.stats
        frames.add_metric([pipeline.name], stats.frames)
        switches = min(pipeline.encode_stage.level_switch_keyframes, stats.requested_keyframes)
        keyframes.add_metric([pipeline.name, "requested"], stats.requested_keyframes - switches)
        keyframes.add_metric([pipeline.name, "level_switch"], switches)
        keyframes.add_metric([pipeline.name, "periodic"], max(0, stats.keyframes - stats.requested_keyframes))
        reinits.add_metric([pipeline.name], stats.reinits)
        target.add_metric([pipeline.name], pipeline.config.encoder.bitrate_kbps * 1000 / 8)
        pipeline.hub.end_to_end.add_to(end_to_end, [pipeline.name])
    yield from (frames, keyframes, reinits, target, end_to_end)
    exposure = GaugeMetricFamily(
        "streamer_exposure_gain", "Gain (linear light) the exposure correction applied to the last frame; 1 for a "
        "scene bright enough (cameras with exposure.enabled only)", labels=["camera"])
    brightened = CounterMetricFamily(
        "streamer_exposure_brightened_frames", "Frames the exposure correction brightened", labels=["camera"])
    for pipeline in pipelines:
        if pipeline.exposure is not None:
            exposure.add_metric([pipeline.name], pipeline.exposure.gain)
            brightened.add_metric([pipeline.name], pipeline.exposure.brightened)
    yield from (exposure, brightened)
    upscaled = CounterMetricFamily(
        "streamer_upscaled_frames", "Frames brought to an upscaling model's output size by bicubic scaling instead "
        "of by the model (restored at a lower ladder level, or not restored)", labels=["camera"])
    for pipeline in pipelines:
        if pipeline.output_scaler is not None:
            upscaled.add_metric([pipeline.name], pipeline.output_scaler.upscaled)
    yield upscaled


def _state_metrics(pipelines: list[CameraPipeline]) -> Iterator[Metric]:
    state = GaugeMetricFamily("streamer_camera_state", "1 for the camera's current state (see /readyz)", labels=["camera", "state"])
    for pipeline in pipelines:
        current = pipeline.readiness().state
        for candidate in CAMERA_STATES:
            state.add_metric([pipeline.name, candidate], float(candidate == current))
    yield state


def _delivery_metrics(pipelines: list[CameraPipeline]) -> Iterator[Metric]:
    sent = CounterMetricFamily(
        "streamer_delivered_bytes",
        "H.264 bytes handed to readers' senders (before RTP/SRTP headers), by protocol and view "
        "(restored, or the WebRTC raw and compare views)",
        labels=["camera", "protocol", "view"],
    )
    units = CounterMetricFamily(
        "streamer_delivered_units", "Access units handed to readers' senders, by protocol and view",
        labels=["camera", "protocol", "view"],
    )
    wire = CounterMetricFamily(
        "streamer_rtsp_sent_bytes", "RTP and RTCP bytes sent to RTSP viewers (with the TCP interleaving headers)",
        labels=["camera"],
    )
    queued = CounterMetricFamily(
        "streamer_queue_delivered", "Items taken from a bounded queue by its reader", labels=["camera", "queue"]
    )
    for pipeline in pipelines:
        queued.add_metric([pipeline.name, "decoded"], pipeline.decoded.delivered)
        queued.add_metric([pipeline.name, "restored"], pipeline.restored.delivered)
        wire.add_metric([pipeline.name], pipeline.hub.rtsp_wire_bytes)
        hubs = {"restored": pipeline.hub} | {view.kind: view.hub for view in pipeline.views.views.values()}
        for view, hub in hubs.items():
            for protocol, count in hub.delivered_bytes.items():
                if view == "restored" or protocol == "webrtc":  # the extra views are WebRTC only
                    sent.add_metric([pipeline.name, protocol, view], count)
                    units.add_metric([pipeline.name, protocol, view], hub.delivered_units.get(protocol, 0))
    yield from (sent, units, wire, queued)
