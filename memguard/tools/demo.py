"""``python -m memguard.tools.demo``: the stress workload guarded and unguarded, side by side.

What README's demo command runs. It starts ``memguard stress`` twice with the same seed, once
guarded by memguard under the bundled default policy and once on plain dicts (``--no-guard``),
in two separate processes so that each one's resident memory is its own, and runs them at the
same time. Then it prints both results in one table, a chart of memory over time for each, and
a verdict. It takes a few seconds.

Exit 0 when the demonstration holds (the guarded run stayed under the limit with no active
job lost and the baseline went over), 1 when it did not, 2 on usage errors. Works without
rich (plain text) and without matplotlib (no ``--plot``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

from memguard.errors import DemoError
from memguard.policy.units import format_size
from memguard.tools.stress.config import DEFAULT_MINUTES, DEFAULT_SEED
from memguard.tools.stress.results import StressResult

#: The longest either child may run before the demo gives up (seconds of wall time).
CHILD_TIMEOUT = 300.0




def run_side_by_side(*, minutes: float = DEFAULT_MINUTES, seed: int = DEFAULT_SEED,
                     extra: Sequence[str] = ()) -> tuple[StressResult, StressResult]:
    """(guarded, baseline): ``memguard stress`` with and without ``--no-guard``, concurrently.

    Each run is a fresh interpreter (``python -m memguard.tools.cli stress``), so neither one's
    memory shows in the other's measurements. `extra` arguments go to both. Raises
    DemoError when a run crashes or times out.
    """
    with tempfile.TemporaryDirectory(prefix="memguard-demo-") as tmp:
        children = []
        for mode in ("guarded", "baseline"):
            output = Path(tmp) / f"{mode}.json"
            command = [sys.executable, "-m", "memguard.tools.cli", "stress", "--quiet",
                       "--minutes", f"{minutes:g}", "--seed", str(seed), "--json", str(output),
                       *extra, *(["--no-guard"] if mode == "baseline" else [])]
            child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
            children.append((mode, output, child))
        results = []
        deadline = time.monotonic() + CHILD_TIMEOUT
        try:
            for mode, output, child in children:
                try:
                    _, err = child.communicate(timeout=max(1.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    raise DemoError(f"the {mode} run took over {CHILD_TIMEOUT:g}s") from None
                if child.returncode not in (0, 1) or not output.is_file():
                    last = (err.strip().splitlines() or ["no output"])[-1]
                    raise DemoError(f"the {mode} run failed (exit {child.returncode}): {last}")
                results.append(StressResult.from_dict(json.loads(output.read_text())))
        finally:
            for _, _, child in children:
                if child.poll() is None:
                    child.kill()
                    child.wait()
    return results[0], results[1]


def verdict(guarded: StressResult, baseline: StressResult) -> tuple[bool, str]:
    """(the demonstration holds, a paragraph saying what happened)."""
    limit = format_size(guarded.limit)
    held = guarded.passed and not baseline.under_limit
    over = next((s for s in baseline.samples if s.usage >= baseline.limit), None)
    if guarded.passed:
        first = (f"memguard kept the process under its {limit} limit: peak "
                 f"{format_size(guarded.peak_usage)}, {guarded.active_lost} active jobs lost, "
                 f"{guarded.jobs.get('held', 0)} jobs held at the end; the price: "
                 f"{guarded.lost_text()}.")
    else:
        first = f"memguard did NOT hold the line: {guarded.verdict()}."
    if baseline.under_limit:
        second = (f"Without it the same traffic peaked at {format_size(baseline.peak_usage)}, "
                  "still under the limit: this machine or configuration is too light to show "
                  "the difference (try --minutes 90).")
    else:
        when = "" if over is None else f", over the limit from minute {over.t / 60:.0f}"
        second = (f"Without it the same traffic reached {format_size(baseline.peak_usage)}"
                  f"{when}: a {limit} dyno would have been restarted.")
    return held, f"{'PASS' if held else 'FAIL'}: {first} {second}"


def _encodable(text: str) -> bool:
    try:
        text.encode(sys.stdout.encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def _print_report(guarded: StressResult, baseline: StressResult, wall: float) -> None:
    from memguard.tools.cli.stress_views import print_table, stress_charts, stress_rows

    out = sys.stdout
    params = guarded.params
    submitted = guarded.jobs.get("submitted", 0)
    print(f"\n{params['minutes']:g} simulated minutes of the seed app's traffic: {submitted} jobs "
          f"({params['rate']:g} a minute) with AI-sized results across six stores, policy "
          f"{Path(str(params['policy'])).name}, seed {params['seed']}; real memory of each "
          f"process, {wall:.1f}s of wall time for both.\n", file=out)
    print_table("memguard stress, guarded and baseline", ["", "guarded", "baseline (no guard)"],
                stress_rows([guarded, baseline]), out=out)
    charts = stress_charts([guarded, baseline], width=60)
    if all(_encodable(line) for _, line in charts):
        top = max(guarded.limit, baseline.peak_usage, guarded.peak_usage) * 1.02
        print(f"\nmemory over time (full height {format_size(top)}; limit "
              f"{format_size(guarded.limit)} at {guarded.limit / top:.0%} of it):", file=out)
        for name, line in charts:
            print(f"  {name:<9} {line}", file=out)
    print(file=out)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the demo; return the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m memguard.tools.demo",
        description="Run the stress workload with and without memguard, side by side.")
    parser.add_argument("--minutes", type=float, default=DEFAULT_MINUTES,
                        help=f"simulated minutes (default {DEFAULT_MINUTES:g})")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED,
                        help=f"traffic seed (default {DEFAULT_SEED})")
    parser.add_argument("--plot", metavar="FILE.png",
                        help="also draw both runs to a PNG (needs matplotlib)")
    parser.add_argument("--json", metavar="FILE", help="write both results as JSON")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 2
    if not args.minutes > 0 or args.minutes == float("inf"):
        parser.print_usage(sys.stderr)
        print(f"{parser.prog}: error: --minutes must be above zero", file=sys.stderr)
        return 2
    print("memguard demo: running `memguard stress` guarded and `memguard stress --no-guard` "
          "side by side...", flush=True)
    start = time.perf_counter()
    try:
        guarded, baseline = run_side_by_side(minutes=args.minutes, seed=args.seed)
    except DemoError as error:
        print(f"memguard demo: {error}", file=sys.stderr)
        return 1
    wall = time.perf_counter() - start
    _print_report(guarded, baseline, wall)
    held, text = verdict(guarded, baseline)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"guarded": guarded.to_dict(), "baseline": baseline.to_dict(), "wall_seconds": wall,
             "passed": held}) + "\n", encoding="utf-8")
    if args.plot:  # drawn here, in the parent: the measured runs were the children
        try:
            from memguard.tools.cli.stress_views import plot_stress

            plot_stress([guarded, baseline], args.plot)
            print(f"chart: {Path(args.plot).resolve()}")
        except ImportError:
            print("memguard demo: --plot needs matplotlib: pip install 'memguard-jobs[plot]'",
                  file=sys.stderr)
        except OSError as error:
            print(f"memguard demo: cannot write {args.plot}: {error}", file=sys.stderr)
    return 0 if held else 1


if __name__ == "__main__":
    raise SystemExit(main())
