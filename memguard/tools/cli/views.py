"""What the `memguard` command shows: readings, the live monitor view, stress tables, plots.

Kept apart from `memguard.tools.cli` so that ``memguard --help`` imports none of it. Everything here
works without rich (plain text, aligned columns) and uses rich when it is installed: rich
belongs to the optional ``cli`` extra and matplotlib to the ``plot`` extra, and the demo must
run on a fresh virtualenv that may lack them. rich and matplotlib are imported inside the
functions that draw with them.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Optional

import attrs

from memguard.policy.units import format_duration, format_size

if TYPE_CHECKING:
    pass

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
    health status (``pass``/``warn``/``fail``); `warnings` what keeps it from ``pass`` besides
    the level (the app's monitor not running, a store unreachable, no memory limit known).
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
    warnings: tuple[str, ...] = ()
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
            "warnings": list(self.warnings),
            "time": _iso(self.at),
        }

    def summary(self) -> str:
        """One line for people: ``ok: this machine uses 3.1GB of 23.5GB (13%)``, or
        ``warn (level ok): ...`` when `warnings` keep the check from passing."""
        share = "" if self.utilization is None else f" ({self.utilization:.0%})"
        limit = "" if self.limit is None else f" of {format_size(self.limit)}"
        head = (f"warn (level {self.level})" if self.warnings and not self.failing
                else self.level)
        return (f"{head}: {self.target} uses {format_size(self.usage)}{limit}{share}"
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
    lines += [f"warn: {warning}" for warning in reading.warnings]
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
