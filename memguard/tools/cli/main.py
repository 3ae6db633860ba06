"""`memguard`: the command line's parser and entry point."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Callable, Optional

from memguard.errors import MemguardError
from memguard.tools.cli.cleanup import add_cleanup_command
from memguard.tools.cli.common import EXIT_FAILED, EXIT_USAGE, one_line
from memguard.tools.cli.health import add_health_command
from memguard.tools.cli.monitor import add_monitor_command
from memguard.tools.cli.policy import add_policy_command
from memguard.tools.cli.stress import add_stress_command
from memguard.tools.cli.tune import add_tune_command


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the `memguard` command with `argv` (default `sys.argv[1:]`); return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse exits on --help (0) and on usage errors (2)
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    run: Optional[Callable[[argparse.Namespace], int]] = getattr(args, "run", None)
    if run is None:
        parser.print_usage(sys.stderr)
        print("memguard: error: a command is required", file=sys.stderr)
        return EXIT_USAGE
    try:
        return run(args)
    except MemguardError as error:
        print(f"memguard: {one_line(str(error))}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `memguard ... | head`: the reader left; say nothing more
        _silence_stdout()
        return EXIT_FAILED


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail again."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def build_parser() -> argparse.ArgumentParser:
    """The `memguard` parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="memguard",
        description="Keep a long-running Python web process under its memory limit.",
    )
    from memguard._version import version

    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_policy_command(commands)
    add_health_command(commands)
    add_monitor_command(commands)
    add_stress_command(commands)
    add_cleanup_command(commands)
    add_tune_command(commands)
    return parser
