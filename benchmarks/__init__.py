"""memguard's benchmark suite: memguard against its peers, measured side by side in one run.

Run it with ``python -m benchmarks [--quick] [--json FILE]``; docs/benchmarks.md explains each
case and the figures of a run on the reference machine.

This module is the harness every ``bench_*`` module shares:

- A *time function* follows pyperf's ``bench_time_func`` convention: ``func(loops) -> seconds``
  runs the operation ``loops`` times and returns the time it took (setup excluded).
  `timeit_func` makes one from a statement with `timeit.Timer` (the stdlib's compiled loop, with
  the garbage collector off while it times).
- `compare` calibrates each contender's loop count (as `timeit.Timer.autorange` does, to a
  target sample duration), runs a warmup, then takes *interleaved* rounds: every round times
  each contender once, starting from a different contender each round. A peer's sample is
  thus taken within milliseconds of the subject's, so drift (CPU frequency, a noisy
  neighbour) hits both, and a ratio is taken per round (paired) before the median.
- Statistics come from pyperf: every contender's samples become a `pyperf.Benchmark`
  (mean, standard deviation, median, median absolute deviation, pyperf's formatting), and
  ``--pyperf FILE`` writes them as a pyperf suite (``python -m pyperf stats FILE``).
- Every case module exposes ``run(quick: bool) -> dict`` returning a `case` dict: rows
  (a figure, its unit, and ratios against peers from the same run), targets (met or not,
  with the figure) and notes. `__main__` prints them as a table and writes them as JSON.
"""

from __future__ import annotations

import statistics
import timeit
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import pyperf

SCHEMA_VERSION = 1

TimeFunc = Callable[[int], float]
"""pyperf's convention: run the operation `loops` times, return the seconds it took."""

#: Every pyperf.Benchmark built by `compare` in this process, for ``--pyperf FILE``.
PYPERF_BENCHMARKS: list[pyperf.Benchmark] = []


@dataclass(frozen=True)
class Settings:
    """How hard `compare` measures: interleaved rounds and the duration of one sample."""

    rounds: int
    sample_seconds: float
    warmups: int = 1

    @classmethod
    def for_mode(cls, quick: bool) -> Settings:
        """`--quick`: fewer, shorter samples (CI); otherwise enough for stable medians."""
        if quick:
            return cls(rounds=9, sample_seconds=0.003)
        return cls(rounds=30, sample_seconds=0.01)


@dataclass
class Timing:
    """Samples of one contender: seconds per operation, one value per interleaved round."""

    name: str
    values: list[float]
    loops: int
    inner: int = 1
    warmups: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def best(self) -> float:
        return min(self.values)

    def benchmark(self, name: Optional[str] = None) -> pyperf.Benchmark:
        """The samples as a pyperf benchmark (values are already per operation)."""
        run = pyperf.Run(
            self.values,
            warmups=[(self.loops, value) for value in self.warmups] or None,
            metadata={"name": name or self.name, "unit": "second", "loops": self.loops,
                      "inner_loops": self.inner},
            collect_metadata=False,
        )
        return pyperf.Benchmark([run])

    def stats(self) -> dict[str, Any]:
        """pyperf-style statistics, JSON-safe: seconds per operation."""
        bench = self.benchmark()
        nvalue = bench.get_nvalue()
        return {
            "median": bench.median(),
            "mean": bench.mean(),
            "stdev": bench.stdev() if nvalue > 1 else 0.0,
            "median_abs_dev": bench.median_abs_dev(),
            "min": min(self.values),
            "max": max(self.values),
            "values": nvalue,
            "loops": self.loops,
            "inner_loops": self.inner,
            "text": f"{bench.format_value(bench.median())} +- "
                    f"{bench.format_value(bench.stdev() if nvalue > 1 else 0.0)}",
        }


def timeit_func(stmt: str, namespace: Mapping[str, Any], *, setup: str = "") -> TimeFunc:
    """A time function running `stmt` with `timeit.Timer` (GC off while timing).

    Every name of `namespace` is bound to a local of the timing function (`setup` runs
    inside it), so the statement pays a fast local lookup, the same for every contender.
    """
    bind = "\n".join(f"{name} = __ns[{name!r}]" for name in namespace)
    timer = timeit.Timer(stmt, setup=bind + ("\n" + setup if setup else ""),
                         globals={"__ns": dict(namespace)})
    return timer.timeit


def calibrate(func: TimeFunc, sample_seconds: float) -> int:
    """Loops needed for one sample to last about `sample_seconds` (1, 2, 5, 10, 20, ...)."""
    loops = 1
    while True:
        for multiplier in (1, 2, 5):
            number = loops * multiplier
            if func(number) >= sample_seconds:
                return number
        loops *= 10


def compare(funcs: Mapping[str, TimeFunc], settings: Settings, *, group: str,
            inner: Optional[Mapping[str, int]] = None, loops: Optional[Mapping[str, int]] = None,
            ) -> dict[str, Timing]:
    """Time every contender in interleaved rounds; returns seconds per operation each.

    `group` prefixes the names in the pyperf suite; `inner[name]` is the number of
    operations one loop performs (an unrolled statement); `loops[name]` skips calibration
    (one-shot operations with expensive setup).
    """
    inner = inner or {}
    names = list(funcs)
    counts = {name: (loops or {}).get(name) or calibrate(funcs[name], settings.sample_seconds)
              for name in names}
    timings = {name: Timing(name, [], counts[name], inner.get(name, 1)) for name in names}
    for _ in range(settings.warmups):
        for name in names:
            timing = timings[name]
            timing.warmups.append(funcs[name](timing.loops) / (timing.loops * timing.inner))
    for round_ in range(settings.rounds):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            timing = timings[name]
            timing.values.append(funcs[name](timing.loops) / (timing.loops * timing.inner))
    PYPERF_BENCHMARKS.extend(timing.benchmark(f"{group}: {timing.name}")
                             for timing in timings.values())
    return timings


def ratio(subject: Timing, peer: Timing) -> float:
    """The headline ratio: best of N of the subject over best of N of the peer.

    Noise on a shared machine only ever adds time, so each contender's fastest sample is
    the least disturbed estimate of its cost (timeit's advice); `paired_ratio` is kept
    alongside as a cross-check.
    """
    return subject.best / peer.best


def difference(subject: Timing, peer: Timing) -> float:
    """Best of N of the subject minus best of N of the peer (seconds per operation)."""
    return subject.best - peer.best


def paired_ratio(subject: Timing, peer: Timing) -> float:
    """Median over rounds of subject/peer, each pair taken in the same round."""
    return statistics.median(s / p for s, p in zip(subject.values, peer.values))


def paired_difference(subject: Timing, peer: Timing) -> float:
    """Median over rounds of subject - peer (seconds per operation)."""
    return statistics.median(s - p for s, p in zip(subject.values, peer.values))


# -- result records (plain dicts, so that they go to JSON as they are) ------------------------

def row(name: str, value: float, unit: str, *, stats: Optional[Mapping[str, Any]] = None,
        ratios: Iterable[tuple[str, float]] = (), note: str = "") -> dict[str, Any]:
    """One line of a case's table: a figure (`unit`: s, bytes, %, x) and its ratios to peers."""
    return {
        "name": name,
        "value": value,
        "unit": unit,
        "stats": dict(stats) if stats else None,
        "ratios": [{"peer": peer, "ratio": ratio} for peer, ratio in ratios],
        "note": note,
    }


def timing_row(timing: Timing, peers: Iterable[Timing] = (), *, note: str = "",
               name: Optional[str] = None) -> dict[str, Any]:
    """A row for a timed contender: its best time per operation and its ratios to `peers`."""
    peers = list(peers)
    result = row(name or timing.name, timing.best, "s", stats=timing.stats(),
                 ratios=[(peer.name, ratio(timing, peer)) for peer in peers], note=note)
    for item, peer in zip(result["ratios"], peers):
        item["paired_median"] = paired_ratio(timing, peer)
    return result


_OPS = {"<=": lambda a, b: a <= b, ">=": lambda a, b: a >= b}


def target(name: str, figure: Optional[float], op: str, limit: float, unit: str, *,
           detail: str = "") -> dict[str, Any]:
    """A target stated as `figure op limit`; `met` is None when the figure could not be taken."""
    met = None if figure is None else bool(_OPS[op](figure, limit))
    return {"name": name, "figure": figure, "op": op, "limit": limit, "unit": unit, "met": met,
            "detail": detail}


def case(case_id: str, title: str, *, rows: list[dict[str, Any]],
         targets: Iterable[dict[str, Any]] = (), notes: Iterable[str] = (),
         params: Optional[Mapping[str, Any]] = None, skipped: str = "") -> dict[str, Any]:
    """What a `run(quick)` returns: the case's rows, targets, notes and parameters."""
    return {
        "id": case_id,
        "title": title,
        "params": dict(params or {}),
        "rows": rows,
        "targets": list(targets),
        "notes": list(notes),
        "skipped": skipped,
    }


__all__ = [
    "PYPERF_BENCHMARKS",
    "SCHEMA_VERSION",
    "Settings",
    "TimeFunc",
    "Timing",
    "calibrate",
    "case",
    "compare",
    "difference",
    "paired_difference",
    "paired_ratio",
    "ratio",
    "row",
    "target",
    "timeit_func",
    "timing_row",
]
