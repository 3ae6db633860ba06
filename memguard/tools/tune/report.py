"""The tuner's table and the recommended policy as TOML."""

from __future__ import annotations

import json
from typing import Any, Optional

from memguard.policy.options import ActiveWhen
from memguard.policy.policy import Policy
from memguard.policy.units import format_duration, format_size
from memguard.tools.reference import METHOD, gap
from memguard.tools.tune.replay import CheckedOutcome
from memguard.tools.tune.search import CHECK_TIMES, Row, TuneResult, emergency_ceiling


def table(result: TuneResult, *, top: int = 15) -> str:
    """The candidates as text: each one's modelled peak and lost-result share."""
    head = (f"budget {format_size(result.budget)} (base {format_size(result.base)} + the "
            "results held); candidates (max_jobs/max_age for every store), best first:")
    lines = [head]
    if result.reference is not None:
        lines.append(f"clairvoyant reference ({METHOD}) at the whole budget: "
                     f"{result.reference.text()}")
    lines.append(f"  {'candidate':<28} {'peak':>9}  {'lost':>13}  {'reference':>13}  "
                 f"{'gap':>6}  fits")
    shown = list(result.rows[:top])
    extra = [r for r in (result.current, result.best) if r is not None]
    for row in extra + shown:
        o = row.outcome
        lost = f"{o.lost}/{o.wanted} {o.lost_share:4.0%}"
        ref, points = "-", "-"
        if row.reference is not None:
            r = row.reference
            ref = f"{r.lost}/{r.wanted} {r.lost_share:4.0%}"
            points = f"{gap(o.lost_share, r):g}"
        lines.append(f"  {row.name:<28} {format_size(o.peak):>9}  {lost:>13}  {ref:>13}  "
                     f"{points:>6}  {'yes' if row.fits else 'NO'}")
    if len(result.rows) > top:
        lines.append(f"  ... {len(result.rows) - top} more (--top N shows more)")
    for row, checked in result.rejected:
        lines.append(f"rejected {row.name}: {_check_text(result, checked)}")
    if result.best is None:
        if result.rejected:
            lines.append("no candidate passes the self-check (the emergency rule modelled, "
                         f"{CHECK_TIMES}x as long): raise --limit, or add smaller values to "
                         "the grid (--jobs, --ages)")
        else:
            lines.append("no candidate keeps the modelled peak under the budget: raise "
                         "--limit, or add smaller values to the grid (--jobs, --ages)")
    else:
        if result.check is not None:
            lines.append(f"checked {result.best.name}: {_check_text(result, result.check)}")
        lines.append("recommended, per store (max_jobs/max_age, order " +
                     next(iter(result.best.bounds.values())).order + "):")
        for name, bounds in result.best.bounds.items():
            lines.append(f"  {name:<20} {bounds.text()}")
    return "\n".join(lines)


def _check_text(result: TuneResult, checked: CheckedOutcome) -> str:
    """``replayed 4x as long with the emergency rule modelled: peak 430MB (ceiling 475MB,
    the hysteresis margin under emergency 500MB), 0 emergencies, 80 of 950 lost``."""
    emergency = result.emergency
    assert emergency is not None
    o = checked.outcome
    return (f"replayed {checked.times}x as long with the emergency rule modelled: peak "
            f"{format_size(o.peak)} (ceiling {format_size(emergency_ceiling(emergency))}, the "
            f"hysteresis margin under emergency {format_size(emergency.threshold)}), "
            f"{checked.emergencies} emergencies, {o.lost} of {o.wanted} lost")


def _check_json(checked: Optional[CheckedOutcome]) -> Optional[dict[str, Any]]:
    if checked is None:
        return None
    o = checked.outcome
    return {"times": checked.times, "emergencies": checked.emergencies, "peak": o.peak,
            "wanted": o.wanted, "lost": o.lost, "evicted": o.evicted}


def to_json(result: TuneResult) -> dict[str, Any]:
    """The table as JSON-safe data: the budget, the reference at the whole budget, and each
    candidate (current and recommended first) with its bounds, outcome and reference."""
    return {
        "budget": result.budget,
        "base": result.base,
        "reference": None if result.reference is None else result.reference.to_dict(),
        "current": None if result.current is None else _row_json(result.current),
        "recommended": None if result.best is None else _row_json(result.best),
        "check": None if result.emergency is None else {
            "emergency": result.emergency.threshold,
            "emergency_target": result.emergency.target,
            "emergency_order": result.emergency.order,
            "ceiling": emergency_ceiling(result.emergency),
            "recommended": _check_json(result.check),
            "rejected": [dict(name=row.name, **(_check_json(checked) or {}))
                         for row, checked in result.rejected],
        },
        "candidates": [_row_json(row) for row in result.rows],
    }


def _row_json(row: Row) -> dict[str, Any]:
    o = row.outcome
    ref = row.reference
    return {
        "name": row.name,
        "fits": row.fits,
        "peak": o.peak, "wanted": o.wanted, "lost": o.lost, "lost_share": o.lost_share,
        "evicted": o.evicted,
        "reference": None if ref is None else ref.to_dict(),
        "reference_gap": None if ref is None else gap(o.lost_share, ref),
        "bounds": {name: {"max_jobs": b.max_jobs, "max_age": b.max_age, "order": b.order}
                   for name, b in row.bounds.items()},
    }


def to_toml(result: TuneResult, policy: Policy, limit: int, source: str) -> str:
    """The recommendation as a policy file: `policy`'s memory thresholds at `limit` (in
    bytes), the order for the stores and the emergency rule, and each store's bounds."""
    best = result.best
    if best is None:
        raise ValueError("no recommendation to write: no candidate fits the budget")
    order = next(iter(best.bounds.values())).order if best.bounds else "lru"
    memory = policy.memory
    thresholds = memory.resolve(limit)
    o = best.outcome
    lines = [
        f"# written by memguard tune from {source}: modelled peak {format_size(o.peak)}, "
        f"{o.lost} of {o.wanted} results lost",
        "",
        "[memory]",
        f'scope = "{memory.scope}"',
        f"limit = {_size_text(limit)}",
    ]
    for name in ("warning", "warning_heap", "emergency", "emergency_target", "critical"):
        value = getattr(thresholds, name)
        if value is not None:
            lines.append(f"{name} = {_size_text(value)}")
    lines += [f"check_interval = {memory.check_interval!r}",
              f"gc_interval = {memory.gc_interval!r}",
              f'emergency_order = "{order}"', "", "[defaults]", f'order = "{order}"']
    active = policy.store_policy("_").active
    if isinstance(active, ActiveWhen):
        statuses = ", ".join(json.dumps(s) for s in sorted(active.values))
        lines.append(f'active = {{ field = {json.dumps(active.field)}, in = [{statuses}] }}')
    lines.append("")
    for name, bounds in best.bounds.items():
        lines.append(f"[stores.{json.dumps(name) if not name.isidentifier() else name}]")
        if bounds.max_jobs is not None:
            lines.append(f"max_jobs = {bounds.max_jobs}")
        if bounds.max_age is not None:
            lines.append(f'max_age = "{format_duration(bounds.max_age)}"')
        lines.append("")
    return "\n".join(lines)


def _size_text(value: int) -> str:
    """A size as policies write it: ``"400MB"`` when it is whole MiB, else bytes."""
    mib = 1024 * 1024
    return f'"{value // mib}MB"' if value % mib == 0 else str(value)
