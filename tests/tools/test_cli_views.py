"""The pieces the CLI draws with: readings, logfmt lines, text charts, tables."""

from __future__ import annotations

import io
import sys

import pytest

from memguard.tools.cli.stress_views import print_table
from memguard.tools.cli.views import (
    Reading,
    bar_chart,
    health_lines,
    human_duration,
    logfmt_line,
    sparkline,
)

MB = 2**20


def reading(**changes: object) -> Reading:
    fields: dict[str, object] = {
        "target": "pid 7 (python)", "scope": "process", "usage": 300 * MB, "limit": 512 * MB,
        "level": "ok", "thresholds": {"warning": 400 * MB, "emergency": 500 * MB,
                                      "emergency_target": 400 * MB, "critical": 600 * MB},
        "at": 0.0,
    }
    fields.update(changes)
    return Reading(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(("level", "status", "failing"), [
    ("ok", "", False), ("warning", "warn", False), ("emergency", "warn", True),
    ("critical", "fail", True), ("unknown", "", False), ("ok", "fail", True),
])
def test_a_reading_fails_at_emergency_critical_or_fail(level: str, status: str,
                                                       failing: bool) -> None:
    item = reading(level=level, status=status)
    assert item.failing is failing
    assert item.to_dict()["ok"] is not failing


def test_reading_as_json_and_text() -> None:
    data = reading().to_dict()
    assert data["utilization"] == pytest.approx(300 / 512)
    assert data["time"] == "1970-01-01T00:00:00Z"
    assert health_lines(reading())[:2] == [
        "ok: pid 7 (python) uses 300.0MB of 512.0MB (59%) [process]",
        "thresholds: warning 400.0MB · emergency 500.0MB · critical 600.0MB · limit 512.0MB",
    ]
    assert reading(limit=None).utilization is None


def test_logfmt_quotes_what_needs_quoting() -> None:
    line = logfmt_line(reading(target='my app "eu"', stores=({"name": "diagram", "jobs": 3},)))
    assert line.startswith('time=1970-01-01T00:00:00Z target="my app \\"eu\\"" level=ok ')
    assert f"usage={300 * MB} usage_h=300.0MB limit={512 * MB} utilization=0.586" in line
    assert line.endswith("jobs=3 jobs.diagram=3")


def test_sparkline_scales_to_the_top_and_keeps_the_last_values() -> None:
    assert sparkline([0, 5, 10, 20], 10, 10) == "▁▅██"
    assert sparkline(list(range(100)), 100, 3) == "███"
    assert sparkline([], 10, 5) == "" and sparkline([1], 0, 5) == ""


def test_bar_chart_stacks_eighth_blocks() -> None:
    assert bar_chart([0, 5, 10], 10, 2) == ["  █", " ██"]
    assert bar_chart([1, 15], 10, 1) == ["▁█"]  # clipped at the top
    assert bar_chart([], 10, 3) == []


@pytest.mark.parametrize(("seconds", "text"), [(5, "5s"), (3280, "55 min"), (7200, "2.0 h"),
                                               (86400 * 3, "3.0 days")])
def test_human_duration(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text


def test_plain_table_without_rich(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "rich", None)
    out = io.StringIO()
    print_table("title", ["", "a", "bee"], [("row one", ["1", "PASS"]), ("two", ["333", "-"])],
                out=out)
    assert out.getvalue().splitlines() == [
        "title",
        "           a   bee",
        "-------  ---  ----",
        "row one    1  PASS",
        "two      333     -",
    ]


def test_rich_table_colours_the_verdict_only_on_terminals() -> None:
    out = io.StringIO()
    print_table("t", ["", "x"], [("verdict", ["PASS"])], out=out, color=False)
    assert "PASS" in out.getvalue() and "\x1b[" not in out.getvalue()
    coloured = io.StringIO()
    print_table("t", ["", "x"], [("verdict", ["FAIL"])], out=coloured, color=True)
    assert "\x1b[" in coloured.getvalue()
