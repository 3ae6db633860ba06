"""`memguard stress`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from memguard.errors import CheckFailed
from memguard.policy.files import load_policy
from memguard.policy.units import format_size
from memguard.tools.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    one_line,
    policy_file,
    positive_number,
    quiet_memguard_logs,
    size,
    usage_error,
)

if TYPE_CHECKING:
    import subprocess




def add_stress_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `memguard stress`: the seed workload on a simulated clock, with a verdict."""
    stress = commands.add_parser(
        "stress",
        help="run the seed workload (six stores, AI-sized results) on a simulated clock",
        description=(
            "Run simulated traffic against the six seed stores under a policy, measuring this "
            "process's real memory, and report peak and final usage against the limit, time "
            "at each level, evictions, memory reclaimed and active jobs lost. Exit 0 when the "
            "peak stayed under the limit with no active job lost, 1 otherwise. See "
            "docs/stress.md."
        ),
    )
    stress.add_argument("--policy", metavar="FILE",
                        help="a TOML policy file or a bundled name (default: the bundled "
                             "default policy, environment ignored)")
    stress.add_argument("--minutes", type=positive_number, default=60.0, metavar="N",
                        help="simulated minutes of traffic (default 60)")
    stress.add_argument("--seed", type=int, default=1, metavar="N",
                        help="the traffic's random seed (default 1)")
    stress.add_argument("--rate", type=positive_number, metavar="JOBS",
                        help="jobs per simulated minute (default 9)")
    stress.add_argument("--scale", type=positive_number, default=1.0, metavar="X",
                        help="multiply every result size (default 1)")
    stress.add_argument("--limit", type=size, metavar="SIZE",
                        help="run at this memory limit, the policy's thresholds scaled alike")
    stress.add_argument("--no-guard", action="store_true",
                        help="baseline: the same traffic on plain dicts, nothing evicted")
    stress.add_argument("--json", metavar="FILE",
                        help="write the full result (samples included) as JSON; - for stdout")
    stress.add_argument("--plot", metavar="FILE.png",
                        help="draw usage over time with the thresholds, the verdict, the "
                             "evictions and (for a guarded run) the baseline of the same "
                             "traffic; drawn after the run in other processes, so it never "
                             "changes the figures (needs matplotlib)")
    stress.add_argument("--record", metavar="FILE",
                        help="record the guarded run's trace (no keys, no contents) for "
                             "`memguard tune`")
    stress.add_argument("--unpolled", type=float, default=0.0, metavar="SHARE",
                        help="share of clients that never poll and come back once later "
                             "(0-1, default 0: the seed traffic)")
    stress.add_argument("-q", "--quiet", action="store_true",
                        help="no progress bar and no table: only the verdict")
    stress.add_argument("-v", "--verbose", action="store_true",
                        help="show the monitor's log lines on stderr")
    stress.set_defaults(run=_stress, parser=stress)


def _stress(args: argparse.Namespace) -> int:
    from memguard.tools import stress as simulate

    parser: argparse.ArgumentParser = args.parser
    if args.record is not None and args.no_guard:
        return usage_error(parser, "--record needs a guarded run (a baseline has no stores "
                                    "to record): drop --no-guard")
    for option, value in (("--json", args.json), ("--plot", args.plot),
                          ("--record", args.record)):
        if value not in (None, "-") and not Path(value).resolve().parent.is_dir():
            return usage_error(parser, f"{option}: no directory for {value!r}")
    if args.plot is not None:
        import importlib.util

        # Found, not imported: importing it here would add ~30MB to the memory measured.
        if importlib.util.find_spec("matplotlib") is None:
            return usage_error(parser, "--plot needs matplotlib: pip install 'memguard-jobs[plot]'")
    policy = None if args.policy is None else load_policy(policy_file(args.policy))
    try:
        config = simulate.StressConfig(
            minutes=args.minutes, rate=args.rate or simulate.DEFAULT_RATE, seed=args.seed,
            scale=args.scale, guard=not args.no_guard, policy=policy, limit=args.limit,
            record=args.record, unpolled=args.unpolled)
        config.resolved_policy()
    except ValueError as error:
        return usage_error(parser, one_line(str(error)))
    quiet_memguard_logs(args.verbose)
    to_stdout = args.json == "-"
    try:
        result = _run_stress(config, progress=not (args.quiet or to_stdout))
    except ValueError as error:
        raise CheckFailed(one_line(str(error))) from None
    if args.json is not None:
        text = json.dumps(result.to_dict(), indent=None if to_stdout else 1)
        if to_stdout:
            print(text)
        else:
            Path(args.json).write_text(text + "\n", encoding="utf-8")
    out = sys.stderr if to_stdout else sys.stdout
    if not args.quiet and not to_stdout:
        _print_stress(result, out)
    print(result.verdict(), file=out)
    if args.record is not None:
        print(f"trace: {args.record}", file=out)
    if args.plot is not None:
        _draw_stress(args, result)
        print(f"chart: {args.plot}", file=out)
    return EXIT_OK if result.passed else EXIT_FAILED


#: The longest the baseline child or the drawing child of `--plot` may take (seconds).
PLOT_TIMEOUT = 600.0


def _stress_options(args: argparse.Namespace) -> list[str]:
    """The workload options of `args` as command-line arguments (for the baseline child)."""
    options = ["--minutes", repr(args.minutes), "--seed", str(args.seed),
               "--scale", repr(args.scale)]
    if args.rate is not None:
        options += ["--rate", repr(args.rate)]
    if args.limit is not None:
        options += ["--limit", f"{args.limit}B"]
    if args.policy is not None:
        options += ["--policy", args.policy]
    if args.unpolled:
        options += ["--unpolled", repr(args.unpolled)]
    return options


def _draw_stress(args: argparse.Namespace, result: Any) -> None:
    """Draw `result` to ``args.plot`` once the measurement is over, in other processes.

    A guarded run is drawn beside the baseline of the same traffic, run now with
    ``--no-guard`` in a fresh interpreter; the chart itself is drawn by a third one
    (`memguard.tools.cli.stress_views.plot_main`) from the results' JSON, so neither
    matplotlib nor the baseline's memory ever shows in this process's figures. Raises
    CheckFailed when no PNG could be written.
    """
    import subprocess
    import tempfile

    try:
        with tempfile.TemporaryDirectory(prefix="memguard-plot-") as tmp:
            drawn = _draw_in_children(args, result, Path(tmp))
    except subprocess.TimeoutExpired as error:
        raise CheckFailed(f"--plot: {' '.join(map(str, error.cmd[1:4]))} took over "
                          f"{error.timeout:g}s") from None
    if drawn.returncode != 0 or not Path(args.plot).is_file():
        last = (drawn.stderr.strip().splitlines() or ["no output"])[-1]
        raise CheckFailed(f"--plot: could not draw {args.plot}: {last}")


def _draw_in_children(args: argparse.Namespace, result: Any,
                      tmp: Path) -> subprocess.CompletedProcess[str]:
    """Write `result` to `tmp`, run the baseline child (guarded runs only), then the drawing
    child; return the latter. A baseline that fails leaves the chart without its curve."""
    import subprocess

    files = [tmp / "run.json"]
    files[0].write_text(json.dumps(result.to_dict()), encoding="utf-8")
    if result.guard:
        baseline = tmp / "baseline.json"
        child = subprocess.run(
            [sys.executable, "-m", "memguard.tools.cli", "stress", "--quiet", "--no-guard",
             "--json", str(baseline), *_stress_options(args)],
            capture_output=True, text=True, timeout=PLOT_TIMEOUT, check=False)
        if baseline.is_file():
            files.append(baseline)
        else:
            last = (child.stderr.strip().splitlines() or ["no output"])[-1]
            print(f"memguard stress: --plot: no baseline curve (exit {child.returncode}: "
                  f"{last})", file=sys.stderr)
    return subprocess.run(
        [sys.executable, "-m", "memguard.tools.cli.stress_views", args.plot, *map(str, files)],
        capture_output=True, text=True, timeout=PLOT_TIMEOUT, check=False)


def _run_stress(config: Any, *, progress: bool) -> Any:
    """Run the workload, with a progress bar on a terminal's stderr."""
    from memguard.tools import stress as simulate
    from memguard.tools.cli.views import have_rich

    if not (progress and sys.stderr.isatty() and have_rich()):
        return simulate.run(config)
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn


    mode = "guarded" if config.guard else "baseline"
    columns = (TextColumn(f"stress {mode}"), BarColumn(), TextColumn("{task.description}"),
               TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("", total=1.0)

        def update(done: float, sample: Any) -> None:
            bar.update(task, completed=done, description=(
                f"minute {sample.t / 60:4.0f}  {format_size(sample.usage):>8}  "
                f"{sample.level:<9} {sample.jobs} jobs"))

        return simulate.run(config, progress=update)


def _print_stress(result: Any, out: TextIO) -> None:
    from memguard.tools.cli.stress_views import print_table, stress_charts, stress_rows

    params = result.params
    mode = "guarded" if result.guard else "baseline (no guard)"
    title = (f"memguard stress: {mode}, {params['minutes']:g} simulated minutes, "
             f"{params['rate']:g} jobs/min, seed {params['seed']}, policy {params['policy']}")
    print_table(title, ["", "guarded" if result.guard else "baseline"], stress_rows([result]),
                out=out)
    for name, line in stress_charts([result]):
        print(f"usage over time ({name}, full height = max(limit, peak)): {line}", file=out)
