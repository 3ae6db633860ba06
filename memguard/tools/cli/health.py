"""`memguard health`."""

from __future__ import annotations

import argparse
import json
import sys

from memguard.tools.cli.common import EXIT_FAILED, EXIT_OK, add_target_options, read_target


def add_health_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `memguard health [--pid PID | --url URL] [--json]`."""
    health = commands.add_parser(
        "health",
        help="one memory check of this machine, a process, or a running app (exit 1 at "
             "emergency or critical, or when the app reports fail)",
        description=(
            "Check memory once and print the level (ok, warning, emergency, critical). Without "
            "--pid or --url, checks this machine: the container's cgroup when it has a memory "
            "limit, else the whole RAM. Exit 0 ok or warning, 1 at emergency or critical, when "
            "the app reports fail, or when the target cannot be read, 2 on usage errors. A "
            "warn (the app's monitor not running, a store unreachable, no memory limit known) "
            "is printed as 'warn: ...' lines and exits 0."
        ),
    )
    add_target_options(health)
    health.add_argument("--json", action="store_true", help="print the reading as JSON")
    health.set_defaults(run=_health)


def _health(args: argparse.Namespace) -> int:
    from memguard.tools.cli.views import health_lines

    reading = read_target(args)
    if args.json:
        json.dump(reading.to_dict(), sys.stdout, indent=2)
        print()
    else:
        for line in health_lines(reading):
            print(line)
    return EXIT_FAILED if reading.failing else EXIT_OK
