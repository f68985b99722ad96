"""A cumulative latency histogram that the stats objects fill and the metrics collector reads at scrape time."""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from prometheus_client.core import HistogramMetricFamily

ENGINE_BUCKETS_S = (0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5)
END_TO_END_BUCKETS_S = (0.025, 0.05, 0.075, 0.1, 0.125, 0.15, 0.175, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)


class LatencyHistogram:
    """Counts observations (seconds) per bucket, Prometheus style: ``le`` upper bounds plus ``+Inf``.

    Observed and read on the event-loop thread, so it needs no lock (a histogram filled by another thread is
    read through ``copy`` taken under that thread's lock).
    """

    def __init__(self, bounds: Sequence[float]) -> None:
        if list(bounds) != sorted(set(bounds)):
            raise ValueError(f"histogram bounds must be strictly increasing: {bounds}")
        self.bounds = tuple(float(bound) for bound in bounds)
        self._counts = [0] * (len(self.bounds) + 1)  # the last one is the +Inf bucket
        self.count = 0
        self.sum = 0.0

    def copy(self) -> LatencyHistogram:
        """A snapshot (for a histogram written by another thread, copied under that thread's lock)."""
        twin = LatencyHistogram(self.bounds)
        twin._counts, twin.count, twin.sum = list(self._counts), self.count, self.sum
        return twin

    def observe(self, seconds: float) -> None:
        self._counts[bisect.bisect_left(self.bounds, seconds)] += 1
        self.count += 1
        self.sum += seconds

    def cumulative(self) -> list[tuple[str, float]]:
        """(``le`` label, observations ≤ that bound) pairs, ending with ``+Inf`` = ``count``."""
        rows: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip((*self.bounds, float("inf")), self._counts, strict=True):
            running += count
            rows.append(("+Inf" if bound == float("inf") else repr(bound), float(running)))
        return rows

    def add_to(self, family: HistogramMetricFamily, labels: list[str]) -> None:
        family.add_metric(labels, self.cumulative(), self.sum)
