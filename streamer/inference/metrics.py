"""Prometheus metrics of the shared inference service, read from the schedulers at scrape time."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from streamer.inference.service import InferenceService


class InferenceCollector(Collector):
    def __init__(self, service: InferenceService) -> None:
        self.service = service

    def collect(self) -> Iterator[Metric]:
        def counter(name: str, text: str, labels: list[str]) -> CounterMetricFamily:
            return CounterMetricFamily(f"streamer_inference_{name}", text, labels=labels)

        batches = counter("batches", "Calls into a shared engine (one batch of one or more windows)", ["device"])
        windows = counter("windows", "Windows restored by the shared engines", ["device", "batch"])
        busy = counter("busy_seconds", "Seconds a device's inference worker spent restoring", ["device"])
        dropped = counter("dropped_windows", "Windows a device's worker did not restore: expired (still queued at "
                          "their frame's deadline), rejected (the camera's queue was full), failed (the backend "
                          "raised)", ["device", "reason"])
        camera_seconds = counter("camera_seconds", "Compute seconds of the shared engines by camera (its share)",
                                 ["device", "camera"])
        queued = GaugeMetricFamily("streamer_inference_queued_windows", "Windows waiting for a device's worker",
                                   labels=["device"])
        wait = HistogramMetricFamily("streamer_inference_queue_wait_seconds",
                                     "Time a window waited for a device's worker", labels=["device"])
        users = GaugeMetricFamily("streamer_inference_engine_cameras", "Cameras sharing an engine",
                                  labels=["device", "backend", "model"])
        counts: dict[tuple[str, str, str], int] = {}  # two engines may share labels (e.g. lite int8 and float)
        for shared in self.service.engines():
            engine = shared.engine
            labels = (engine.device, engine.backend, engine.info.name)
            counts[labels] = counts.get(labels, 0) + len(self.service.cameras(shared))
        for labels, count in counts.items():
            users.add_metric(list(labels), count)
        for scheduler in self.service.schedulers():
            device = scheduler.device
            stats = scheduler.snapshot()
            batches.add_metric([device], stats.batches)
            for size, count in sorted(stats.batch_sizes.items()):
                windows.add_metric([device, str(size)], size * count)
            busy.add_metric([device], stats.busy_s)
            for reason, value in (("expired", stats.expired), ("rejected", stats.rejected), ("failed", stats.failed)):
                dropped.add_metric([device, reason], value)
            for camera, seconds in sorted(stats.camera_s.items()):
                camera_seconds.add_metric([device, camera], seconds)
            queued.add_metric([device], scheduler.queued())
            stats.queue_wait.add_to(wait, [device])
        yield from (batches, windows, busy, dropped, camera_seconds, queued, wait, users)
