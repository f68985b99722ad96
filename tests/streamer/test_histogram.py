"""The cumulative latency histogram behind the ``*_seconds`` histograms in /metrics."""

from __future__ import annotations

import pytest
from prometheus_client.core import HistogramMetricFamily

from streamer.histogram import LatencyHistogram


def test_buckets_are_cumulative_and_end_with_inf() -> None:
    histogram = LatencyHistogram((0.1, 0.5))
    for seconds in (0.05, 0.1, 0.2, 3.0):
        histogram.observe(seconds)
    assert histogram.cumulative() == [("0.1", 2.0), ("0.5", 3.0), ("+Inf", 4.0)]  # le is inclusive
    assert (histogram.count, histogram.sum) == (4, pytest.approx(3.35))
    family = HistogramMetricFamily("streamer_x_seconds", "x", labels=["camera"])
    histogram.add_to(family, ["cam"])
    samples = {(sample.name, sample.labels.get("le")): sample.value for sample in family.samples}
    assert samples[("streamer_x_seconds_bucket", "+Inf")] == samples[("streamer_x_seconds_count", None)] == 4


def test_bounds_must_increase() -> None:
    with pytest.raises(ValueError):
        LatencyHistogram((0.5, 0.1))


def test_a_copy_is_a_snapshot() -> None:
    histogram = LatencyHistogram((0.1, 0.2))
    histogram.observe(0.05)
    snapshot = histogram.copy()
    histogram.observe(0.15)
    assert snapshot.count == 1 and snapshot.cumulative() == [("0.1", 1.0), ("0.2", 1.0), ("+Inf", 1.0)]
    assert histogram.count == 2 and histogram.cumulative() == [("0.1", 1.0), ("0.2", 2.0), ("+Inf", 2.0)]
