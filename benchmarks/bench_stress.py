"""Case 6, end to end: the stress workload's peak memory against its limit, guarded vs baseline.

The workload is `memguard.tools.stress` (what ``memguard stress`` runs): six seed stores under
AI-sized traffic on a simulated clock, with the real resident memory of the process deciding
emergencies. The guarded run declares the stores with ``@managed_store`` under the bundled
default policy (512 MB limit); the baseline keeps the same jobs, drawn from the same seed, in
plain dicts. Each run is a fresh interpreter (``python -m benchmarks.bench_stress --worker
...``), because the figure is that process's RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from typing import Any, Optional

from benchmarks import case, row, target

MB = 1 << 20


def worker(guard: bool, minutes: float, seed: int) -> dict[str, Any]:
    """One run of the workload in this process; its result without the sample series."""
    from memguard.tools import stress as simulate

    result = simulate.run(simulate.StressConfig(guard=guard, minutes=minutes, seed=seed))
    data = result.to_dict()
    samples = data.pop("samples")
    data["samples_taken"] = len(samples)
    return data


def measure(guard: bool, minutes: float, seed: int) -> dict[str, Any]:
    """Run `worker` in a fresh interpreter and return its figures."""
    command = [sys.executable, "-m", "benchmarks.bench_stress", "--worker",
               "guarded" if guard else "baseline", str(minutes), str(seed)]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run(command, capture_output=True, text=True, cwd=root, timeout=900,
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def run(quick: bool, *, minutes: Optional[float] = None,
        seeds: Optional[Sequence[int]] = None) -> dict[str, Any]:
    """Measure case 6: guarded and baseline runs of the same traffic, per seed."""
    try:
        import memguard.tools.stress  # noqa: F401
    except ImportError as error:  # the workload has not landed in this checkout
        return case("stress", "6. end to end: stress workload peak vs limit", rows=[],
                    skipped=f"memguard.tools.stress is not importable ({error})")
    minutes = minutes or (60.0 if quick else 120.0)
    seeds = tuple(seeds or ((1,) if quick else (1, 2, 3)))
    rows = []
    worst_share = 0.0
    lost = 0
    for seed in seeds:
        guarded, baseline = measure(True, minutes, seed), measure(False, minutes, seed)
        limit = guarded["limit"]
        for name, got in (("guarded", guarded), ("baseline", baseline)):
            share = 100.0 * got["peak_usage"] / limit
            ratios = [("baseline peak", guarded["peak_usage"] / baseline["peak_usage"])] if (
                name == "guarded") else []
            jobs = got["jobs"]
            note = (f"peak {got['peak_usage'] / MB:.0f} MiB of {limit / MB:.0f} MiB at minute "
                    f"{got['peak_at'] / 60:.0f}; {jobs.get('active_lost', 0)} active lost, "
                    f"{sum(got['evictions'].values())} evicted "
                    f"({', '.join(f'{k}={v}' for k, v in sorted(got['evictions'].items()))}), "
                    f"{jobs.get('return_misses', 0)} late readers missed; "
                    f"{got['wall_seconds']:.1f} s wall")
            rows.append(row(f"seed {seed}: {name} peak / limit", share, "%", ratios=ratios,
                            note=note))
        worst_share = max(worst_share, 100.0 * guarded["peak_usage"] / limit)
        lost += guarded["jobs"].get("active_lost", 0)
    targets = [
        target("guarded peak usage / limit (highest over seeds)", worst_share, "<=", 100.0, "%",
               detail=f"{len(seeds)} seed(s), {minutes:g} simulated minutes each"),
        target("active jobs lost by the guarded runs", float(lost), "<=", 0.0, "jobs"),
    ]
    notes = [
        "The workload's own verdict: under the limit at every sample and no active job lost "
        "(docs/stress.md describes the traffic).",
        "Ratio: guarded peak over baseline peak, same seed, same traffic.",
    ]
    return case("stress", "6. end to end: stress workload peak vs limit", rows=rows,
                targets=targets, notes=notes, params={"minutes": minutes, "seeds": list(seeds)})


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``--worker guarded|baseline MINUTES SEED``: one run, printed as JSON."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_stress")
    parser.add_argument("--worker", nargs=3, required=True, metavar=("MODE", "MINUTES", "SEED"))
    args = parser.parse_args(argv)
    mode, minutes, seed = args.worker
    if mode not in ("guarded", "baseline"):
        parser.error("MODE is guarded or baseline")
    print(json.dumps(worker(mode == "guarded", float(minutes), int(seed))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
