"""tools/dashboard_drop: the per-phase summary and the recovery times read from its timeline."""

from __future__ import annotations

from typing import Any

from tools.dashboard_drop import phase_summary, recovery


def row(t: float, phase: str, frames: int, http: int = 200, connected: float = 1.0, state: str = "running",
        reconnects: float = 0.0) -> dict[str, Any]:
    return {"t": t, "phase": phase, "viewer_frames": frames, "viewer_alive": True, "http": http,
            "camera_state": state, "source_connected": connected, "rtsp_viewers": 1.0,
            "source_reconnects_total": reconnects, "source_frames_total": frames, "encoded_frames_total": frames,
            "end_to_end_over_5s": 0.0}


def test_phase_summary_gives_rates_and_the_states_in_order() -> None:
    rows = [row(10.0, "down", 100, connected=0.0), row(12.0, "down", 100, connected=0.0, reconnects=10),
            row(16.0, "down", 100, 503, 0.0, "stalled", 12)]
    summary = phase_summary(rows)
    assert summary["viewer_fps"] == 0.0 and summary["reconnects"] == 12
    assert summary["readyz"] == [200, 503] and summary["states"] == ["running", "stalled"]
    assert summary["connected"] == [0.0]


def test_recovery_times_count_from_the_cameras_return() -> None:
    timeline = [row(29.0, "down", 100, 503, 0.0, "stalled"), row(30.0, "after", 100, 503, 0.0, "stalled"),
                row(35.0, "after", 100, 503, 1.0, "stalled"), row(36.0, "after", 125), row(37.0, "after", 150)]
    assert recovery(timeline, back=30.0) == {"viewer_frames": 6.0, "readyz_200": 6.0, "source_connected": 5.0}
