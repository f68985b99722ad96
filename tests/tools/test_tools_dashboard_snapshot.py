"""tools/dashboard_snapshot: the dashboard's queries with variables filled in, drawn as SVG panels."""

from __future__ import annotations

import json

from tools.dashboard_snapshot import (
    DASHBOARD,
    Panel,
    Series,
    fill_variables,
    legend,
    override_unit,
    parse_mark,
    render_html,
    runs,
)


def test_variables_and_legends_are_filled_in() -> None:
    expr = 'rate(x{camera=~"$camera"}[$__rate_interval]) + y{job=~"$job"}'
    filled = fill_variables(expr, {"camera": "cam", "job": "streamer", "__rate_interval": "15s"})
    assert filled == 'rate(x{camera=~"cam"}[15s]) + y{job=~"streamer"}'
    assert legend("{{camera}} {{reason}}", {"camera": "cam", "reason": "engine_busy"}) == "cam engine_busy"


def test_every_dashboard_query_is_left_without_variables() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {"camera": ".*", "job": "streamer", "__rate_interval": "15s"}
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            assert "$" not in fill_variables(target["expr"], variables), target["expr"]


def test_panels_are_drawn_with_their_series_and_empty_ones_say_so() -> None:
    panels = [
        Panel("Frames per second", "fps", [Series("cam in", [(0.0, 24.0), (5.0, 25.0), (10.0, 25.0)])]),
        Panel("Nothing here", "s", []),
    ]
    page = render_html(panels, 0.0, 10.0, "streamer")
    assert page.count("<polyline") == 1 and "cam in: 25 fps" in page
    assert "Nothing here" in page and "no data" in page


def test_a_field_override_sets_a_series_unit() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    memory = next(panel for panel in dashboard["panels"] if panel["title"].startswith("Process memory"))
    assert override_unit(memory, "host:8080 open fds") == "none"
    assert override_unit(memory, "host:8080 RSS") == ""
    page = render_html([Panel("m", "bytes", [Series("fds", [(0.0, 25.0)], "none")])], 0.0, 1.0, "t")
    assert "fds: 25<" in page


def test_a_gap_in_the_samples_is_not_bridged_by_a_line() -> None:
    assert runs([]) == []
    points = [(0.0, 1.0), (1.0, 1.0), (2.0, 1.0), (30.0, 1.0), (31.0, 1.0), (60.0, 5.0)]
    assert runs(points) == [points[:3], points[3:5], points[5:]]
    page = render_html([Panel("state", "", [Series("cam running", points)])], 0.0, 60.0, "t")
    assert page.count("<polyline") == 2 and page.count("<circle") == 1


def test_marks_are_drawn_on_every_panel() -> None:
    assert parse_mark("camera back=1796414240.5") == ("camera back", 1796414240.5)
    panels = [Panel("a", "", [Series("x", [(0.0, 1.0), (1.0, 2.0)])]), Panel("b", "", [])]
    page = render_html(panels, 0.0, 10.0, "t", [("camera killed", 5.0)])
    assert page.count("camera killed") == 2 and page.count("stroke-dasharray") == 2


def test_a_series_without_a_recent_sample_is_not_shown_as_its_old_value() -> None:
    stalled = Series("cam stalled", [(20.0, 1.0), (21.0, 1.0)])  # a state that was 1 during an outage, not now
    running = Series("cam running", [(0.0, 1.0), (19.0, 1.0), (22.0, 1.0), (59.0, 1.0)])
    page = render_html([Panel("state", "", [running, stalled])], 0.0, 60.0, "t")
    assert "cam stalled: none now (last 1)" in page and "cam running: 1<" in page
