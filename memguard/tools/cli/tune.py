"""`memguard tune`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from memguard.errors import CheckFailed, TraceError
from memguard.policy.files import load_policy
from memguard.tools.cli.common import EXIT_FAILED, EXIT_OK, one_line, policy_file, size, usage_error


def add_tune_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `memguard tune`: replay a trace against store bounds, recommend a policy."""
    tune = commands.add_parser(
        "tune", help="replay a recorded trace against candidate bounds and recommend a policy",
        description=(
            "Replay a trace (MemoryManager.record, memguard stress --record) on a simulated "
            "clock against per-store max_jobs/max_age grids and the orders lru and delivered; "
            "print each candidate's modelled peak and lost-result share and recommend the "
            "policy losing the fewest results clients came back for while the peak stays "
            "under the budget (the emergency threshold at --limit). Exit 1 when nothing "
            "fits. See docs/tune.md."))
    tune.add_argument("trace", metavar="TRACE", help="the trace file")
    tune.add_argument("--limit", type=size, required=True, metavar="SIZE",
                      help="the memory limit to fit (e.g. 512MB)")
    tune.add_argument("--policy", metavar="FILE",
                      help="the policy whose thresholds (scaled to --limit) set the budget and "
                           "go into --write, shown as 'current policy' (default: the bundled "
                           "default)")
    tune.add_argument("--budget", type=size, metavar="SIZE",
                      help="the peak to stay under (default: the policy's emergency threshold)")
    tune.add_argument("--jobs", metavar="LIST", help="max_jobs grid, e.g. 10,20,50,none")
    tune.add_argument("--ages", metavar="LIST", help="max_age grid, e.g. 10m,30m,1h,none")
    tune.add_argument("--top", type=int, default=15, metavar="N",
                      help="candidates shown (default 15)")
    tune.add_argument("--write", metavar="FILE", help="write the recommended policy as TOML")
    tune.add_argument("--json", metavar="FILE",
                      help="write the candidates, the recommendation and the clairvoyant "
                           "reference as JSON; - for stdout (the table then goes to stderr)")
    tune.set_defaults(run=_tune, parser=tune)


def _tune(args: argparse.Namespace) -> int:
    from memguard.policy.units import parse_duration
    from memguard.tools import tune
    from memguard.tools.stress.config import default_policy, scaled_policy

    parser: argparse.ArgumentParser = args.parser
    try:
        jobs = tune.JOBS_GRID if args.jobs is None else tune.parse_grid(args.jobs, int)
        ages = tune.AGE_GRID if args.ages is None else tune.parse_grid(args.ages, parse_duration)
    except ValueError as error:
        return usage_error(parser, f"--jobs/--ages: {one_line(str(error))}")
    if any(j is not None and j < 1 for j in jobs):
        return usage_error(parser, f"--jobs: counts must be 1 or more; got {args.jobs!r}")
    for option, value in (("--write", args.write), ("--json", args.json)):
        if value not in (None, "-") and not Path(value).resolve().parent.is_dir():
            return usage_error(parser, f"{option}: no directory for {value!r}")
    base = default_policy() if args.policy is None else load_policy(policy_file(args.policy))
    policy = scaled_policy(base, args.limit)
    budget = args.budget or policy.memory.resolve(args.limit).emergency or args.limit
    try:
        trace = tune.read_trace(args.trace)
    except TraceError as error:
        raise CheckFailed(one_line(str(error))) from None
    thresholds = policy.memory.resolve(args.limit)
    emergency = None
    if thresholds.emergency is not None:
        target = thresholds.emergency_target or int(thresholds.emergency * 0.8)
        emergency = tune.EmergencyModel(thresholds.emergency, target,
                                        policy.memory.emergency_order)
    result = tune.tune(trace, budget, current=tune.current_bounds(policy, trace.stores),
                       jobs_grid=jobs, age_grid=ages, emergency=emergency)
    out = sys.stderr if args.json == "-" else sys.stdout
    print(f"trace {args.trace}: {len(trace.records)} events, {len(trace.stores)} stores, "
          f"{trace.duration / 60:.0f} minutes", file=out)
    print(tune.table(result, top=args.top), file=out)
    if args.json is not None:
        text = json.dumps(tune.to_json(result), indent=None if args.json == "-" else 1)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text + "\n", encoding="utf-8")
    if result.best is None:
        return EXIT_FAILED
    if args.write is not None:
        Path(args.write).write_text(tune.to_toml(result, policy, args.limit, args.trace),
                                    encoding="utf-8")
        print(f"written: {args.write} (check it with: memguard policy check {args.write})")
    return EXIT_OK

