"""Render the Grafana dashboard's panels from a real Prometheus into a PNG (no Grafana needed).

Each panel's PromQL (configs/grafana/streamer.json, template variables filled in) is run over a time range
through Prometheus's /api/v1/query_range; the series are drawn as SVG line charts in one HTML page, which
Debian's headless Chromium turns into a screenshot.

    python -m tools.dashboard_snapshot --prometheus http://127.0.0.1:9090 --minutes 5 --out docs/dashboard.png
    python -m tools.dashboard_snapshot --minutes 5 --mark "camera killed=1796414210" --mark "camera back=1796414240"

``--mark LABEL=UNIX_SECONDS`` draws a dashed vertical line with its label across every panel (an event).
"""

from __future__ import annotations

import argparse
import html
import itertools
import json
import math
import re
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "configs" / "grafana" / "streamer.json"
CHROMIUM = "/usr/bin/chromium"
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")
WIDTH, HEIGHT, PAD = 560, 190, 8


@dataclass
class Series:
    label: str
    points: list[tuple[float, float]]  # (unix seconds, value), finite values only
    unit: str = ""  # a field override's unit ("" = the panel's)


@dataclass
class Panel:
    title: str
    unit: str
    series: list[Series]


def fill_variables(expr: str, variables: dict[str, str]) -> str:
    for name, value in sorted(variables.items(), key=lambda item: -len(item[0])):
        expr = expr.replace(f"${name}", value)
    return expr


def legend(template: str, labels: dict[str, str]) -> str:
    text = template
    for name, value in labels.items():
        text = text.replace("{{" + name + "}}", value)
    return text


def override_unit(panel: dict[str, Any], label: str) -> str:
    """The unit a ``byRegexp`` field override gives the series named ``label`` ("" if none)."""
    for override in panel["fieldConfig"].get("overrides", []):
        matcher = override["matcher"]
        if matcher["id"] == "byRegexp" and re.fullmatch(matcher["options"], label):
            return next((item["value"] for item in override["properties"] if item["id"] == "unit"), "")
    return ""


def query_range(prometheus: str, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
    query = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    with urllib.request.urlopen(f"{prometheus}/api/v1/query_range?{query}", timeout=30) as response:
        return list(json.loads(response.read())["data"]["result"])


def fetch_panels(prometheus: str, dashboard: dict[str, Any], variables: dict[str, str],
                 start: float, end: float, step: float) -> list[Panel]:
    panels = []
    for spec in dashboard["panels"]:
        series = []
        for target in spec["targets"]:
            for row in query_range(prometheus, fill_variables(target["expr"], variables), start, end, step):
                points = [(float(t), float(v)) for t, v in row["values"] if math.isfinite(float(v))]
                label = legend(target.get("legendFormat", ""), row["metric"])
                series.append(Series(label, points, override_unit(spec, label)))
        panels.append(Panel(spec["title"], spec["fieldConfig"]["defaults"].get("unit", ""), series))
    return panels


def _format(value: float, unit: str) -> str:
    if unit == "percentunit":
        return f"{100 * value:.0f} %"
    if unit == "s":
        return f"{1000 * value:.0f} ms"
    scaled, prefix = value, ""
    for factor, name in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            scaled, prefix = value / factor, name
            break
    suffix = {"bps": "b/s", "bytes": "B", "fps": "fps", "cps": "/s"}.get(unit, "")
    return f"{scaled:.3g} {prefix}{suffix}".strip()


def parse_mark(text: str) -> tuple[str, float]:
    """``LABEL=UNIX_SECONDS`` (argparse type of --mark)."""
    label, _, when = text.rpartition("=")
    try:
        return label, float(when)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LABEL=UNIX_SECONDS, got {text!r}") from None


def marks_svg(marks: list[tuple[str, float]], x: Any) -> str:
    return "".join(f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{PAD}" y2="{HEIGHT - PAD}" stroke="#e0b400" '
                   f'stroke-dasharray="4,3"/><text x="{x(t) + 3:.1f}" y="{PAD + 12 + 12 * index}" '
                   f'style="fill:#e0b400">{html.escape(label)}</text>' for index, (label, t) in enumerate(marks))


def runs(points: list[tuple[float, float]]) -> list[list[tuple[float, float]]]:
    """The points split where samples are missing (a gap over 3 steps: no data, e.g. a rate of nothing or
    a state series that is not 1), so that a line is not drawn across the gap, as Grafana does not."""
    if not points:
        return []
    steps = [later[0] - earlier[0] for earlier, later in itertools.pairwise(points)]
    limit = 3 * min((step for step in steps if step > 0), default=1.0)
    pieces: list[list[tuple[float, float]]] = []
    for point, step in zip(points, [limit + 1, *steps], strict=True):
        if step > limit:
            pieces.append([])
        pieces[-1].append(point)
    return pieces


def panel_svg(panel: Panel, start: float, end: float, marks: list[tuple[str, float]] | None = None) -> str:
    values = [value for series in panel.series for _, value in series.points]
    low, high = (min(0.0, *values), max(values)) if values else (0.0, 1.0)
    high = high if high > low else low + 1.0
    def x(t: float) -> float:
        return PAD + (WIDTH - 2 * PAD) * (t - start) / max(end - start, 1e-9)
    def y(v: float) -> float:
        return HEIGHT - PAD - (HEIGHT - 2 * PAD) * (v - low) / (high - low)
    lines = []
    for index, series in enumerate(panel.series):
        colour = COLOURS[index % len(COLOURS)]
        for piece in runs(series.points):
            points = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in piece)
            lines.append(f'<polyline fill="none" stroke-width="1.6" stroke="{colour}" points="{points}"/>' if len(piece) > 1
                         else f'<circle r="1.6" fill="{colour}" cx="{x(piece[0][0]):.1f}" cy="{y(piece[0][1]):.1f}"/>')
    axes = (f'<text x="{PAD}" y="14">{html.escape(_format(high, panel.unit))}</text>'
            f'<text x="{PAD}" y="{HEIGHT - 2 * PAD}">{html.escape(_format(low, panel.unit))}</text>')
    return f'<svg width="{WIDTH}" height="{HEIGHT}">{axes}{marks_svg(marks or [], x)}{"".join(lines)}</svg>'


def panel_html(panel: Panel, start: float, end: float, marks: list[tuple[str, float]] | None = None) -> str:
    keys = []
    recent = end - max(3.0, 3 * (end - start) / 300)  # three query steps: a series with no sample since is not "now"
    for index, series in enumerate(panel.series):
        last = _format(series.points[-1][1], series.unit or panel.unit) if series.points else "no data"
        if series.points and series.points[-1][0] < recent:  # e.g. a state that is no longer 1
            last = f"none now (last {last})"
        colour = COLOURS[index % len(COLOURS)]
        keys.append(f'<span style="color:{colour}">■</span> {html.escape(series.label)}: {html.escape(last)}')
    empty = "" if panel.series else '<div class="empty">no data</div>'
    return (f'<div class="panel"><h2>{html.escape(panel.title)}</h2>{panel_svg(panel, start, end, marks)}{empty}'
            f'<div class="legend">{"<br>".join(keys)}</div></div>')


def render_html(panels: list[Panel], start: float, end: float, title: str,
                marks: list[tuple[str, float]] | None = None) -> str:
    style = ("body{background:#111217;color:#ccccdc;font:12px sans-serif;margin:12px}"
             ".grid{display:grid;grid-template-columns:repeat(2,580px);gap:10px}"
             ".panel{background:#181b1f;border:1px solid #2c3235;padding:6px}h2{font-size:13px;margin:2px 0 4px}"
             "svg text{fill:#8e8e9e;font-size:10px}.legend{margin-top:4px}.empty{color:#d62728}")
    body = "".join(panel_html(panel, start, end, marks) for panel in panels)
    return (f'<!doctype html><html><head><meta charset="utf-8"><style>{style}</style></head><body>'
            f'<h1 style="font-size:16px">{html.escape(title)}</h1><div class="grid">{body}</div></body></html>')


def screenshot(page: str, out: Path, rows: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "dashboard.html"
        source.write_text(page)
        command = [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                   "--disable-background-networking", "--disable-component-update", "--disable-sync",
                   f"--user-data-dir={folder}/profile", "--hide-scrollbars",
                   f"--window-size=1200,{60 + rows * 290}", f"--screenshot={out.resolve()}", source.as_uri()]
        subprocess.run(command, check=True, capture_output=True, timeout=60)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prometheus", default="http://127.0.0.1:9090")
    parser.add_argument("--dashboard", type=Path, default=DASHBOARD)
    parser.add_argument("--camera", default=".*", help="value for $camera (a regex)")
    parser.add_argument("--job", default="streamer", help="value for $job")
    parser.add_argument("--minutes", type=float, default=5.0, help="time range ending now")
    parser.add_argument("--rate-interval", default="15s", help="value for $__rate_interval")
    parser.add_argument("--out", type=Path, default=Path("dashboard.png"))
    parser.add_argument("--mark", type=parse_mark, action="append", default=[], metavar="LABEL=UNIX_SECONDS",
                        help="draw an event's time on every panel (repeatable)")
    args = parser.parse_args(argv)
    dashboard = json.loads(args.dashboard.read_text())
    end = time.time()
    start = end - 60 * args.minutes
    variables = {"camera": args.camera, "job": args.job, "__rate_interval": args.rate_interval}
    panels = fetch_panels(args.prometheus.rstrip("/"), dashboard, variables, start, end, max(1.0, (end - start) / 300))
    title = f"{dashboard['title']} — camera={args.camera}, last {args.minutes:g} min"
    screenshot(render_html(panels, start, end, title, args.mark), args.out, math.ceil(len(panels) / 2))
    print(f"{args.out}: {len(panels)} panels, {sum(not panel.series for panel in panels)} without data")


if __name__ == "__main__":
    main()
