"""What the `memguard` command shows: readings, the live monitor view, stress tables, plots.

Kept apart from `memguard.tools.cli` so that ``memguard --help`` imports none of it. Everything here
works without rich (plain text, aligned columns) and uses rich when it is installed: rich,
matplotlib and httpx belong to the optional ``cli`` extra, and the demo must run on a fresh
virtualenv that may lack them. rich and matplotlib are imported inside the functions that
draw with them.
"""

from __future__ import annotations

import datetime
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, TextIO

import attrs

from memguard.policy.units import format_duration, format_size

if TYPE_CHECKING:
    from memguard.tools.stress.results import StressResult

#: Levels at which `memguard health` exits 1.
FAILING_LEVELS = frozenset({"emergency", "critical"})
#: rich styles of the levels.
LEVEL_STYLES: Mapping[str, str] = {
    "ok": "bold green",
    "warning": "bold yellow",
    "emergency": "bold red",
    "critical": "bold white on red",
    "unknown": "bold magenta",
}
_THRESHOLD_NAMES = ("warning", "emergency", "critical")
_BLOCKS = "▁▂▃▄▅▆▇█"


def have_rich() -> bool:
    """True when rich can be imported (the ``cli`` extra is installed)."""
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return True




@attrs.frozen
class Reading:
    """One look at a target's memory: this machine, a process, or a running app's endpoint.

    `target` names it for people; `scope` says what `usage` measures (``machine``,
    ``cgroup``, ``process``, or the app's own scope for ``--url``). `level` is the memguard
    level (``unknown`` when no threshold applies); `thresholds` are bytes by name
    (``warning``, ``emergency``, ``emergency_target``, ``critical``); `stores` holds the
    per-store counts an app's ``/memory`` reports (empty for other targets); `status` the
    health status (``pass``/``warn``/``fail``).
    """

    target: str
    scope: str
    usage: int
    limit: Optional[int]
    level: str
    thresholds: Mapping[str, Optional[int]] = attrs.field(factory=dict)
    stores: tuple[Mapping[str, Any], ...] = ()
    status: str = ""
    rss: Optional[int] = None
    growth_per_minute: Optional[float] = None
    time_to_limit: Optional[float] = None
    monitoring: Optional[bool] = None
    note: str = ""
    at: float = attrs.field(factory=time.time)

    @property
    def utilization(self) -> Optional[float]:
        """`usage` / `limit`, None without a limit."""
        return None if not self.limit else self.usage / self.limit

    @property
    def failing(self) -> bool:
        """The check fails: level emergency or critical, or the app's health says ``fail``."""
        return self.level in FAILING_LEVELS or self.status == "fail"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict: the fields (sizes in bytes), `utilization` and `ok`."""
        return {
            "target": self.target,
            "scope": self.scope,
            "ok": not self.failing,
            "level": self.level,
            "status": self.status,
            "usage": self.usage,
            "rss": self.rss,
            "limit": self.limit,
            "utilization": self.utilization,
            "thresholds": dict(self.thresholds),
            "stores": [dict(store) for store in self.stores],
            "growth_per_minute": self.growth_per_minute,
            "time_to_limit": self.time_to_limit,
            "monitoring": self.monitoring,
            "note": self.note,
            "time": _iso(self.at),
        }

    def summary(self) -> str:
        """One line for people: ``ok: this machine uses 3.1GB of 23.5GB (13%)``."""
        share = "" if self.utilization is None else f" ({self.utilization:.0%})"
        limit = "" if self.limit is None else f" of {format_size(self.limit)}"
        return (f"{self.level}: {self.target} uses {format_size(self.usage)}{limit}{share}"
                f" [{self.scope}]")


def _iso(moment: float) -> str:
    stamp = datetime.datetime.fromtimestamp(moment, tz=datetime.timezone.utc)
    return stamp.isoformat(timespec="seconds").replace("+00:00", "Z")


def human_duration(seconds: float) -> str:
    """An estimate's duration, rounded as people say it: ``45s``, ``55 min``, ``3.2 h``."""
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def threshold_line(reading: Reading) -> str:
    """``warning 400.0MB · emergency 500.0MB · critical 600.0MB · limit 512.0MB``."""
    parts = [f"{name} {format_size(value)}" for name in _THRESHOLD_NAMES
             if (value := reading.thresholds.get(name)) is not None]
    if reading.limit is not None:
        parts.append(f"limit {format_size(reading.limit)}")
    return " · ".join(parts) or "no thresholds"


def health_lines(reading: Reading) -> list[str]:
    """The plain-text report of `memguard health`."""
    lines = [reading.summary(), f"thresholds: {threshold_line(reading)}"]
    if reading.status:
        lines.append(f"health status: {reading.status}")
    if reading.growth_per_minute is not None:
        lines.append(f"growth: {format_size(reading.growth_per_minute)}/min"
                     + ("" if reading.time_to_limit is None
                        else f", limit in {human_duration(reading.time_to_limit)}"))
    for store in reading.stores:
        lines.append(f"store {store.get('name')}: {store.get('jobs', 0)} jobs, "
                     f"{store.get('active', 0)} active, {format_size(store.get('bytes') or 0)}")
    if reading.note:
        lines.append(reading.note)
    return lines


def logfmt_line(reading: Reading) -> str:
    """One logfmt line per sample for `memguard monitor --logfmt` (and non-terminals)."""
    fields: list[tuple[str, Any]] = [
        ("time", _iso(reading.at)),
        ("target", reading.target),
        ("level", reading.level),
        ("usage", reading.usage),
        ("usage_h", format_size(reading.usage)),
        ("limit", reading.limit),
    ]
    if reading.utilization is not None:
        fields.append(("utilization", f"{reading.utilization:.3f}"))
    for name in _THRESHOLD_NAMES:
        fields.append((name, reading.thresholds.get(name)))
    if reading.status:
        fields.append(("status", reading.status))
    if reading.stores:
        fields.append(("jobs", sum(int(s.get("jobs", 0)) for s in reading.stores)))
        for store in reading.stores:
            fields.append((f"jobs.{store.get('name')}", store.get("jobs", 0)))
    return " ".join(f"{key}={_logfmt_value(value)}" for key, value in fields
                    if value is not None)


def _logfmt_value(value: Any) -> str:
    text = str(value)
    if not text or any(c in text for c in ' ="'):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text




def sparkline(values: Sequence[float], top: float, width: int) -> str:
    """The last `width` values as block characters, full height at `top`."""
    shown = list(values)[-width:] if width > 0 else []
    if not shown or top <= 0:
        return ""
    out = []
    for value in shown:
        share = min(max(value / top, 0.0), 1.0)
        out.append(_BLOCKS[min(len(_BLOCKS) - 1, int(share * len(_BLOCKS)))])
    return "".join(out)


def bar_chart(values: Sequence[float], top: float, rows: int) -> list[str]:
    """`values` as vertical bars `rows` characters high (eighth-block resolution), top row
    first; a value of `top` fills its column."""
    if not values or top <= 0 or rows <= 0:
        return []
    steps = len(_BLOCKS)
    heights = [round(min(max(v / top, 0.0), 1.0) * rows * steps) for v in values]
    lines = []
    for row in range(rows - 1, -1, -1):
        cells = []
        for height in heights:
            filled = height - row * steps
            cells.append(" " if filled <= 0 else _BLOCKS[min(filled, steps) - 1])
        lines.append("".join(cells))
    return lines


def _resample(values: Sequence[float], width: int) -> list[float]:
    """`values` squeezed (by maxima of equal spans) or kept, to at most `width` points."""
    if len(values) <= width:
        return list(values)
    out = []
    for i in range(width):
        lo = i * len(values) // width
        hi = max(lo + 1, (i + 1) * len(values) // width)
        out.append(max(values[lo:hi]))
    return out




def monitor_view(reading: Reading, history: Sequence[tuple[float, int, str]], *,
                 interval: float, width: int = 100) -> Any:
    """The rich renderable of one screen of `memguard monitor`.

    `history` holds (time, usage, level) of recent readings, oldest first. Shows the level in
    its colour, usage against the limit and each threshold as a gauge, a chart of recent
    usage coloured by level, and the stores' counts when the target reports them.
    """
    from rich.console import Group
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    chart_width = max(20, min(width - 12, 120))
    header = Text()
    header.append(" memguard monitor ", style="bold reverse")
    header.append(f"  {reading.target}  ")
    header.append(f" {reading.level.upper()} ", style=LEVEL_STYLES.get(reading.level, "bold"))
    header.append(f"  every {format_duration(interval)}  {_iso(reading.at)}", style="dim")

    usage = Text("usage ")
    usage.append(format_size(reading.usage), style="bold")
    if reading.limit is not None:
        usage.append(f" of {format_size(reading.limit)} limit")
        if reading.utilization is not None:
            usage.append(f" ({reading.utilization:.0%})")
    usage.append(f"  [{reading.scope}]", style="dim")
    if reading.rss is not None and reading.rss != reading.usage:
        usage.append(f"  rss {format_size(reading.rss)}", style="dim")
    if reading.growth_per_minute is not None:
        usage.append(f"  growth {format_size(reading.growth_per_minute)}/min", style="dim")
    if reading.time_to_limit is not None:
        usage.append(f"  limit in {human_duration(reading.time_to_limit)}", style="dim")

    top = _chart_top(reading, [u for _, u, _ in history])
    gauge = _gauge(reading, top, chart_width)
    legend = Text("thresholds  ", style="dim")
    for name in _THRESHOLD_NAMES:
        value = reading.thresholds.get(name)
        if value is not None:
            legend.append(f"{name} {format_size(value)}  ", style=LEVEL_STYLES[name])
    if reading.limit is not None:
        legend.append(f"limit {format_size(reading.limit)}", style="bold")

    points = history[-chart_width:]
    colours = [LEVEL_STYLES.get(level, "").replace("bold ", "").replace("white on red", "red")
               for _, _, level in points]
    chart = Text()
    for line in bar_chart([float(value) for _, value, _ in points], top, rows=5):
        for cell, colour in zip(line, colours):
            chart.append(cell, style=colour)
        chart.append("\n")
    chart.rstrip()
    span = (points[-1][0] - points[0][0]) if len(points) > 1 else 0.0
    chart_caption = Text(f"last {len(points)} samples over {format_duration(round(span))}, "
                         f"full height {format_size(top)}", style="dim")

    parts: list[Any] = [header, usage, gauge, legend, Text(""), chart, chart_caption]
    if reading.stores:
        table = Table(title="stores", title_justify="left", expand=False, box=None,
                      header_style="bold")
        for column in ("store", "jobs", "active", "pinned", "bytes", "evictions"):
            table.add_column(column, justify="left" if column == "store" else "right")
        for store in reading.stores:
            evictions = store.get("evictions") or {}
            table.add_row(
                str(store.get("name")), str(store.get("jobs", 0)), str(store.get("active", 0)),
                str(store.get("pinned", 0)), format_size(store.get("bytes") or 0),
                " ".join(f"{k}={v}" for k, v in sorted(evictions.items())) or "-",
            )
        parts += [Text(""), table]
    else:
        parts.append(Text("stores: only an app's /memory endpoint reports stores (--url)",
                          style="dim"))
    if reading.note:
        parts.append(Text(reading.note, style="yellow"))
    parts.append(Text("Ctrl-C to stop", style="dim"))
    return Panel(Group(*parts), border_style=LEVEL_STYLES.get(reading.level, "").split()[-1])


def _chart_top(reading: Reading, usages: Iterable[int]) -> float:
    candidates = [reading.usage, *usages]
    candidates += [v for v in (reading.thresholds.get("critical"), reading.limit) if v]
    return max(candidates) * 1.05 or 1.0


def _gauge(reading: Reading, top: float, width: int) -> Any:
    """A bar of `width` cells: usage filled in the level's colour, thresholds marked ``|``."""
    from rich.text import Text

    filled = min(width, round(reading.usage / top * width)) if top > 0 else 0
    cells = ["█"] * filled + ["░"] * (width - filled)
    styles = [LEVEL_STYLES.get(reading.level, "")] * filled + ["dim"] * (width - filled)
    marks = [(name, reading.thresholds.get(name)) for name in _THRESHOLD_NAMES]
    marks.append(("limit", reading.limit))
    for name, value in marks:
        if value is None or top <= 0:
            continue
        at = min(width - 1, round(value / top * width))
        cells[at] = "┃" if name == "limit" else "|"
        styles[at] = "bold" if name == "limit" else LEVEL_STYLES[name]
    text = Text()
    for cell, style in zip(cells, styles):
        text.append(cell, style=style)
    return text




def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


def _share(part: float, whole: float) -> str:
    return f" ({part / whole:.0%})" if whole else ""


def stress_rows(results: Sequence[StressResult]) -> list[tuple[str, list[str]]]:
    """(label, one cell per result) rows of the stress table (`memguard stress`, the demo)."""
    rows: list[tuple[str, list[str]]] = []

    def row(label: str, cell: Any) -> None:
        rows.append((label, [cell(r) for r in results]))

    row("limit", lambda r: format_size(r.limit))
    row("peak usage", lambda r: f"{format_size(r.peak_usage)}{_share(r.peak_usage, r.limit)}"
        f" at minute {r.peak_at / 60:.0f}")
    row("final usage", lambda r: f"{format_size(r.final_usage)}"
        f"{_share(r.final_usage, r.limit)}")
    for level in ("ok", "warning", "emergency", "critical"):
        row(f"time at {level}", lambda r, lv=level: _minutes(r.time_at_level.get(lv, 0.0)))
    row("time over the limit", lambda r: _minutes(_over_limit(r)))
    row("evictions", lambda r: ", ".join(f"{k} {v}" for k, v in sorted(r.evictions.items()))
        or "none")
    row("evicted (estimate)", lambda r: format_size(r.evicted_bytes))
    row("emergency cleanups", lambda r: str(r.cleanups))
    row("bytes reclaimed", lambda r: format_size(r.reclaimed_bytes))
    row("active jobs lost", lambda r: str(r.active_lost))
    row("results lost", lambda r: f"{r.results_lost} of {r.results_wanted}"
        f"{_share(r.results_lost, r.results_wanted)}")
    row("jobs held at end", lambda r: f"{r.jobs.get('held', 0)} of {r.jobs.get('submitted', 0)}")
    row("came back, found result", lambda r: (
        f"{r.jobs.get('return_hits', 0)} of "
        f"{r.jobs.get('return_hits', 0) + r.jobs.get('return_misses', 0)}"))
    row("wall time", lambda r: f"{r.wall_seconds:.1f} s")
    row("verdict", lambda r: "PASS" if r.passed else "FAIL")
    return rows


def _over_limit(result: StressResult) -> float:
    samples = result.samples
    return sum(b.t - a.t for a, b in zip(samples, samples[1:]) if a.usage >= result.limit)


def stress_charts(results: Sequence[StressResult], width: int = 60) -> list[tuple[str, str]]:
    """(name, sparkline) per result on one shared scale (the limit or the highest peak)."""
    top = max([r.limit for r in results] + [r.peak_usage for r in results]) * 1.02
    out = []
    for result in results:
        usages = _resample([float(s.usage) for s in result.samples], width)
        out.append(("guarded" if result.guard else "baseline", sparkline(usages, top, width)))
    return out


def print_table(title: str, headers: Sequence[str], rows: Sequence[tuple[str, Sequence[str]]],
                *, out: TextIO, color: Optional[bool] = None) -> None:
    """Print a table with rich when available, else as aligned plain text.

    Cells ``PASS`` and ``FAIL`` are coloured; `color=None` lets rich decide (a terminal).
    """
    if have_rich():
        from rich.console import Console
        from rich.table import Table

        console = Console(file=out, force_terminal=color, no_color=color is False,
                          highlight=False, soft_wrap=False, width=max(100, _width(out)))
        console.print(_escape(title), style="bold")
        table = Table(header_style="bold")
        for i, header in enumerate(headers):
            table.add_column(header, justify="left" if i == 0 else "right", no_wrap=True)
        for label, cells in rows:
            styled = [f"[bold green]{c}[/]" if c == "PASS" else f"[bold red]{c}[/]"
                      if c == "FAIL" else _escape(c) for c in cells]
            table.add_row(_escape(label), *styled)
        console.print(table)
        return
    widths = [max(len(headers[0]), *(len(label) for label, _ in rows))]
    for i in range(1, len(headers)):
        widths.append(max(len(headers[i]), *(len(cells[i - 1]) for _, cells in rows)))
    print(title, file=out)
    print("  ".join(h.ljust(w) if i == 0 else h.rjust(w)
                    for i, (h, w) in enumerate(zip(headers, widths))), file=out)
    print("  ".join("-" * w for w in widths), file=out)
    for label, cells in rows:
        print("  ".join([label.ljust(widths[0])]
                        + [c.rjust(w) for c, w in zip(cells, widths[1:])]), file=out)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _width(out: TextIO) -> int:
    import shutil

    try:
        if out.isatty():
            return shutil.get_terminal_size().columns
    except (AttributeError, ValueError, OSError):
        pass
    return 100


#: How each threshold is drawn: (colour, line style, width). Four styles that differ in both
#: colour and dash pattern, so they stay apart in greyscale print too.
THRESHOLD_STYLES: Mapping[str, tuple[str, Any, float]] = {
    "warning": ("#b7791f", (0, (7, 4)), 1.5),
    "emergency": ("#d62728", (0, (10, 3, 2, 3)), 1.7),
    "critical": ("#6a1b9a", (0, (1.5, 2.5)), 2.3),
    "limit": ("#111111", "solid", 2.3),
}


def plot_stress(results: Sequence[StressResult], path: str) -> None:
    """Draw one or more stress runs to a PNG at `path`: what a person needs to judge them.

    The top panel has usage over simulated time, the guarded run in blue beside the baseline
    in grey, the thresholds and the limit each in a style of its own (`THRESHOLD_STYLES`),
    every emergency cleanup as a red mark and the baseline's first sample over the limit
    circled; the bottom panel, the jobs a guarded run evicted per sample interval. The
    verdict of each run (with the results lost before their client came back) is written
    above the chart, and the legend sits outside the axes so it never covers a line.

    Draws from finished results only: call it after the runs (the CLI calls it in another
    process, `plot_main`, so matplotlib never weighs on a measured process). matplotlib with
    the Agg backend (no display needed). Raises ImportError without matplotlib and OSError
    when the file cannot be written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    mb = 2**20
    ordered = sorted(results, key=lambda r: not r.guard)  # guarded first
    first = ordered[0]
    guarded = [r for r in ordered if r.guard]
    figure, (axes, below) = plt.subplots(
        2, 1, figsize=(12, 7.2), dpi=110, sharex=True,
        gridspec_kw={"height_ratios": [3.2, 1], "hspace": 0.08})
    try:
        for result in ordered:
            minutes = [s.t / 60 for s in result.samples]
            usage = [s.usage / mb for s in result.samples]
            name = "guarded (memguard)" if result.guard else "baseline (no guard)"
            axes.plot(minutes, usage, linewidth=2.0 if result.guard else 1.6,
                      color="#1f5fbf" if result.guard else "#8a8f99",
                      label=f"{name}, peak {format_size(result.peak_usage)}",
                      zorder=3 if result.guard else 2)
            if not result.guard and not result.under_limit:
                over = next(s for s in result.samples if s.usage >= result.limit)
                axes.plot([over.t / 60], [over.usage / mb], marker="o", markersize=9,
                          markerfacecolor="none", markeredgecolor="#111111", linestyle="none",
                          label=f"baseline over the limit (minute {over.t / 60:.0f})",
                          zorder=4)
        values = dict(first.thresholds)
        values["limit"] = first.limit
        for name, (colour, dashes, width) in THRESHOLD_STYLES.items():
            value = values.get(name)
            if value:
                axes.axhline(value / mb, color=colour, linestyle=dashes, linewidth=width,
                             label=f"{name} {format_size(value)}", zorder=1)
        emergency_seen = False
        for result in guarded:
            for mark in result.marks:
                if mark.kind != "emergency":
                    continue
                axes.axvline(mark.t / 60, color="#d62728", alpha=0.25, linewidth=1, zorder=0)
                axes.plot([mark.t / 60], [1.0], marker="v", color="#d62728", markersize=8,
                          transform=axes.get_xaxis_transform(), clip_on=False,
                          linestyle="none", zorder=5,
                          label=None if emergency_seen else "emergency cleanup")
                emergency_seen = True
        top = max([first.limit, *(r.peak_usage for r in ordered),
                   *(v for v in values.values() if v)])
        axes.set_ylim(0, top / mb * 1.08)
        axes.set_ylabel("memory used (MB, RSS)")
        axes.grid(alpha=0.3)
        span = max((r.samples[-1].t for r in ordered), default=60.0) / 60
        bucket = max(1, math.ceil(span / 90))  # minutes per bar: at most ~90 bars
        for result in guarded:
            per: dict[int, int] = {}
            for sample in result.samples:
                slot = int(sample.t / 60 // bucket)
                per[slot] = per.get(slot, 0) + sample.evicted
            below.bar([slot * bucket for slot in per], list(per.values()), width=bucket * 0.9,
                      color="#1f5fbf", alpha=0.7, align="edge")
        below.set_ylabel(f"jobs evicted\nper {'minute' if bucket == 1 else f'{bucket} min'}")
        below.set_xlabel("simulated minutes")
        below.grid(alpha=0.3)
        if not guarded:
            below.text(0.5, 0.5, "baseline: nothing is evicted", ha="center", va="center",
                       transform=below.transAxes, color="#5d6677")
        handles, labels = axes.get_legend_handles_labels()
        if guarded:
            handles.append(Line2D([], [], color="#1f5fbf", alpha=0.7, linewidth=6))
            labels.append("jobs evicted (bottom)")
        axes.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0),
                    fontsize=8.5, frameon=False, borderaxespad=0, handlelength=3.6)
        params = first.params
        figure.suptitle(
            f"memguard stress: {float(params.get('minutes', 0)):g} simulated minutes, "
            f"{float(params.get('rate', 0)):g} jobs/min, seed {params.get('seed')}, "
            f"policy {Path(str(params.get('policy', '?'))).name}",
            x=0.06, ha="left", fontsize=12, fontweight="bold")
        lines = [result.verdict() for result in ordered]
        for i, line in enumerate(lines):
            figure.text(0.06, 0.935 - 0.028 * i, line, fontsize=9,
                        color="#1e7e34" if line.startswith("PASS") else "#c62828")
        figure.subplots_adjust(left=0.06, right=0.74, top=0.925 - 0.028 * len(lines),
                               bottom=0.08)
        figure.savefig(path)
    finally:
        plt.close(figure)


def plot_main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m memguard.tools.cli.views OUT.png RESULT.json [RESULT.json]``: draw saved results.

    What ``memguard stress --plot`` runs after its measurement, in a process of its own.
    Exit 0 when the PNG was written, 1 when drawing failed (the reason on stderr).
    """
    import json
    import sys

    from memguard.tools.stress.results import StressResult

    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 2:
        print("usage: python -m memguard.tools.cli.views OUT.png RESULT.json [RESULT.json ...]",
              file=sys.stderr)
        return 2
    try:
        results = [StressResult.from_dict(json.loads(Path(name).read_text(encoding="utf-8")))
                   for name in args[1:]]
        plot_stress(results, args[0])
    except (ImportError, OSError, ValueError, KeyError) as error:
        print(f"cannot draw {args[0]}: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(plot_main())
