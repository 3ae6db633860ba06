"""`memguard monitor`."""

from __future__ import annotations

import argparse
import sys
from typing import Any, Optional

from memguard.errors import CheckFailed
from memguard.tools.cli.common import EXIT_OK, add_target_options, duration, read_target


def add_monitor_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `memguard monitor [--pid|--url] [--interval] [--duration] [--logfmt]`."""
    monitor = commands.add_parser(
        "monitor",
        help="live view of memory against the thresholds (or logfmt lines)",
        description=(
            "Watch memory live: usage against the limit and each threshold, a chart of recent "
            "samples coloured by level, and the stores' counts when --url reports them. "
            "With --logfmt, or when stdout is not a terminal, or without rich installed, "
            "prints one logfmt line per sample instead. Stops after --duration or on Ctrl-C."
        ),
    )
    add_target_options(monitor)
    monitor.add_argument("--interval", type=duration, default=2.0, metavar="DURATION",
                         help="time between samples (default 2s)")
    monitor.add_argument("--duration", type=duration, metavar="DURATION",
                         help="stop after this long (default: until Ctrl-C)")
    monitor.add_argument("--logfmt", action="store_true",
                         help="plain logfmt lines, one per sample, instead of the live view")
    monitor.set_defaults(run=_monitor)


def _monitor(args: argparse.Namespace) -> int:
    import time

    from memguard.tools.cli.views import have_rich

    first = read_target(args)  # a target that cannot be read at all is an error at once
    deadline = None if args.duration is None else time.monotonic() + args.duration
    live = not args.logfmt and sys.stdout.isatty() and have_rich()
    try:
        if live:
            _monitor_live(args, first, deadline)
        else:
            _monitor_lines(args, first, deadline)
    except KeyboardInterrupt:
        pass
    return EXIT_OK


def _next_reading(args: argparse.Namespace, last: Any) -> Any:
    """A fresh reading, or the last one marked unreachable (the monitor keeps going)."""
    import attrs

    try:
        return read_target(args)
    except CheckFailed as error:
        import time

        return attrs.evolve(last, level="unknown", status="", note=str(error), at=time.time())


def _sleep_until(moment: float, deadline: Optional[float]) -> bool:
    """Sleep until `moment` (monotonic), not past `deadline`; False once the deadline is hit."""
    import time

    end = moment if deadline is None else min(moment, deadline)
    pause = end - time.monotonic()
    if pause > 0:
        time.sleep(pause)
    return deadline is None or time.monotonic() < deadline


def _monitor_lines(args: argparse.Namespace, reading: Any, deadline: Optional[float]) -> None:
    import time

    from memguard.tools.cli.views import logfmt_line

    while True:
        line = logfmt_line(reading)
        if reading.level == "unknown" and reading.note:
            line += f' error="{reading.note}"'
        print(line, flush=True)
        if not _sleep_until(time.monotonic() + args.interval, deadline):
            return
        reading = _next_reading(args, reading)


def _monitor_live(args: argparse.Namespace, reading: Any, deadline: Optional[float]) -> None:
    import time

    import attrs
    from rich.console import Console
    from rich.live import Live

    from memguard.monitor.readings import window_growth
    from memguard.tools.cli.views import monitor_view

    console = Console()
    history: list[tuple[float, int, str]] = []

    def view(current: Any) -> Any:
        history.append((current.at, current.usage, current.level))
        del history[:-400]
        if current.growth_per_minute is None and current.level != "unknown":
            growth = window_growth([(t, u) for t, u, _ in history], current.at)
            current = attrs.evolve(current, growth_per_minute=growth)
        return monitor_view(current, history, interval=args.interval, width=console.width)

    with Live(view(reading), console=console, auto_refresh=False, transient=False) as screen:
        while _sleep_until(time.monotonic() + args.interval, deadline):
            reading = _next_reading(args, reading)
            screen.update(view(reading), refresh=True)
