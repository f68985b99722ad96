"""The GPU check's report: sections run under one deadline, each failure recorded, written after every section.

``Report.run(name, fn)`` runs one section: a section that raises is recorded with its error and the check goes
on; a section that would start after the deadline is recorded as skipped. The report is rewritten (JSON and
Markdown, atomically) after each section, so a run killed from outside still leaves what it measured.
"""

from __future__ import annotations

import json
import math
import os
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

Section = dict[str, Any]


class Report:
    def __init__(self, prefix: Path, deadline_s: float, settings: dict[str, Any]) -> None:
        self.prefix = prefix
        self.started = time.monotonic()
        self.deadline = self.started + deadline_s
        self.data: dict[str, Any] = {
            "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "settings": settings,
            "sections": {},
        }

    @property
    def json_path(self) -> Path:
        return self.prefix.with_name(self.prefix.name + ".json")

    @property
    def markdown_path(self) -> Path:
        return self.prefix.with_name(self.prefix.name + ".md")

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def run(self, name: str, fn: Callable[[], Section], needs_s: float = 0.0) -> Section:
        """Run one section (``needs_s``: the least time it needs to be worth starting)."""
        if self.remaining() < needs_s:
            section: Section = {"status": "skipped", "reason": f"global deadline: {self.remaining():.0f} s left"}
        else:
            started = time.monotonic()
            print(f"[gpu_check] {name} ...", flush=True)
            try:
                section = {"status": "ok", **fn()}
            except Exception as error:  # every section is independent: record and go on
                section = {
                    "status": "error",
                    "error": f"{type(error).__name__}: {error}",
                    "traceback": traceback.format_exc(limit=6).splitlines()[-8:],
                }
            section["seconds"] = round(time.monotonic() - started, 2)
        self.data["sections"][name] = section
        print(f"[gpu_check] {name}: {section['status']} ({section.get('seconds', 0)} s)", flush=True)
        self.write()
        return section

    def progress(self, name: str, partial: Section) -> None:
        """Record what a running section has measured so far (kept if the run is killed before it ends)."""
        self.data["sections"][name] = {"status": "running (partial)", **partial}
        self.write()

    def write(self) -> None:
        self.data["elapsed_s"] = round(time.monotonic() - self.started, 1)
        self.prefix.parent.mkdir(parents=True, exist_ok=True)
        _write_atomic(self.json_path, json.dumps(_finite(self.data), indent=2, default=str) + "\n")
        _write_atomic(self.markdown_path, render_markdown(self.data))


def _finite(value: Any) -> Any:
    """Strict JSON: a non-finite float (PSNR of identical images is inf) becomes its name."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.1f}"
    if isinstance(value, (list, tuple)):
        return " ".join(_cell(item) for item in value)
    return str(value).replace("|", "/").replace("\n", " ")


def table(rows: list[dict[str, Any]]) -> list[str]:
    """Markdown table of ``rows`` (the union of their keys, in first-seen order)."""
    if not rows:
        return ["(none)"]
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(key, "")) for key in columns) + " |" for row in rows]
    return lines


def render_markdown(data: dict[str, Any]) -> str:
    lines = [
        "# streamer GPU check",
        "",
        f"started {data.get('started_utc', '?')}, took {data.get('elapsed_s', '?')} s",
        "",
        "settings: " + ", ".join(f"{key}={_cell(value)}" for key, value in data.get("settings", {}).items()),
    ]
    for name, section in data.get("sections", {}).items():
        lines += ["", f"## {name} — {section.get('status')} ({section.get('seconds', 0)} s)", ""]
        for key, value in section.items():
            if key in ("status", "seconds"):
                continue
            if isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
                lines += [f"**{key}**", "", *table(value), ""]
            elif isinstance(value, dict):
                lines += [f"**{key}**", "", *table([{"name": k, "value": v} for k, v in value.items()]), ""]
            elif key == "traceback":
                lines += ["```", *[str(item) for item in value], "```"]
            else:
                lines.append(f"- {key}: {_cell(value)}")
    return "\n".join(lines) + "\n"
