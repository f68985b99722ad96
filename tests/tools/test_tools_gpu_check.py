"""The GPU check: its report writer, and its whole flow in the CPU rehearsal mode at tiny sizes."""

from __future__ import annotations

import json
import math
from pathlib import Path

from tools.gpu_check import main
from tools.gpu_report import Report


def test_report_records_failures_skips_past_the_deadline_and_writes_strict_json(tmp_path: Path) -> None:
    report = Report(tmp_path / "sub" / "r", deadline_s=30.0, settings={"device": "cpu", "sizes": [(64, 48)]})

    def broken() -> dict[str, object]:
        raise ValueError("no such GPU")

    assert report.run("good", lambda: {"rows": [{"a": 1, "psnr": math.inf}, {"b": "x|y"}]})["status"] == "ok"
    failed = report.run("bad", broken)
    assert failed["status"] == "error" and failed["error"] == "ValueError: no such GPU"
    assert report.run("late", lambda: {"never": True}, needs_s=60.0)["status"] == "skipped"
    data = json.loads(report.json_path.read_text())  # strict JSON: inf written as a string
    assert data["sections"]["good"]["rows"][0]["psnr"] == "inf"
    assert list(data["sections"]) == ["good", "bad", "late"]
    markdown = report.markdown_path.read_text()
    assert "| a | psnr | b |" in markdown and "| 1 | inf |  |" in markdown and "x/y" in markdown
    assert "## bad — error" in markdown and "ValueError: no such GPU" in markdown


def test_quick_cpu_rehearsal_runs_every_section(tmp_path: Path) -> None:
    prefix = tmp_path / "check"
    status = main([
        "--device", "cpu", "--quick", "--out", str(prefix), "--models", "lite", "lite-sr2",
        "--sizes", "64x48", "--batches", "1", "2", "--live-cameras", "1", "--live-seconds", "1", "--live-long-s", "1",
        "--live-size", "128x72",
    ])
    sections = json.loads(prefix.with_name("check.json").read_text())["sections"]
    assert {name: section["status"] for name, section in sections.items()} == dict.fromkeys(
        ["environment", "backends", "parity", "throughput", "tiles", "variants", "tensorrt", "live"], "ok"
    ), sections
    assert status == 0
    parity, upscaler = sections["parity"]["rows"]
    assert parity["goal_45db"] == "pass" and parity["batch_vs_single_max_diff"] == 0
    # the x2 upscaler: the same parity checks; no gain figure (its output is larger than the scene's frames)
    assert upscaler["model"] == "lite-sr2" and upscaler["goal_45db"] == "pass" and upscaler["gain_ours_db"] is None
    assert [row["batch"] for row in sections["throughput"]["rows"]] == [1, 2]
    assert all(row["windows_per_s"] > 0 for row in sections["throughput"]["rows"])
    tiled, whole = sections["tiles"]["rows"]
    assert tiled["mode"] == "tiles 256/32" and whole["mode"] == "whole frame" and tiled["fps"] > 0
    (live,) = sections["live"]["summary"]
    assert live["cameras"] == 1 and live["total_out_fps"] > 0 and live["restored_pct_mean"] > 0
    assert "## live — ok" in prefix.with_name("check.md").read_text()
