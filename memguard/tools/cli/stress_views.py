"""The stress verdict's views: its table, terminal charts and the matplotlib plot."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, TextIO

from memguard.policy.units import format_size
from memguard.tools.cli.views import _minutes, _resample, _share, have_rich, sparkline

if TYPE_CHECKING:
    from memguard.tools.stress.results import StressResult


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
    row("clairvoyant reference", lambda r: "-" if r.reference is None else (
        f"{r.reference.lost} of {r.reference.wanted}"
        f"{_share(r.reference.lost, r.reference.wanted)} at "
        f"{format_size(r.reference.budget)} of results, gap {r.reference_gap:g} points"
        if r.reference_gap is not None else f"{r.reference.lost} of {r.reference.wanted}"))
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
        lines: list[str] = []
        colours: list[str] = []
        for result in ordered:  # wrapped to the figure's width: a verdict runs long
            verdict = result.verdict()
            wrapped = textwrap.wrap(verdict, width=170) or [""]
            lines += wrapped
            colours += ["#1e7e34" if verdict.startswith("PASS") else "#c62828"] * len(wrapped)
        for i, (line, colour) in enumerate(zip(lines, colours)):
            figure.text(0.06, 0.935 - 0.028 * i, line, fontsize=9, color=colour)
        figure.subplots_adjust(left=0.06, right=0.74, top=0.925 - 0.028 * len(lines),
                               bottom=0.08)
        figure.savefig(path)
    finally:
        plt.close(figure)


def plot_main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m memguard.tools.cli.stress_views OUT.png RESULT.json [RESULT.json]``: draw
    saved results.

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
