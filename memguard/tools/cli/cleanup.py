"""`memguard cleanup`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Optional

from memguard.errors import CheckFailed
from memguard.policy.options import ENV_TOKEN as TOKEN_ENV
from memguard.policy.units import format_duration, format_size
from memguard.tools.cli.common import (
    EXIT_OK,
    duration,
    endpoint_url,
    http,
    one_line,
    pid,
    url,
    usage_error,
)

#: Environment variable holding the cleanup token when --token is not given.


def add_cleanup_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `memguard cleanup --url URL --token T | --pid PID`."""
    cleanup = commands.add_parser(
        "cleanup",
        help="ask a running app for an emergency cleanup (HTTP, or by pid)",
        description=(
            "Trigger an emergency cleanup in a running app and print its report: --url POSTs "
            "to its /memory/cleanup endpoint with a bearer token; --pid hands a request to "
            "that process through memguard's run directory and waits for its report (the "
            "app's policy must say signal_cleanup = true; works under gunicorn and uvicorn "
            "workers). Exit 1 when nothing there acts on the request."
        ),
    )
    target = cleanup.add_mutually_exclusive_group(required=True)
    target.add_argument("--url", type=url, metavar="URL",
                        help="the app's /memory/cleanup endpoint or memguard's base URL")
    target.add_argument("--pid", type=pid, metavar="PID",
                        help="a process running memguard with signal_cleanup = true")
    cleanup.add_argument("--token", metavar="TOKEN",
                         help=f"the bearer token for --url (default: ${TOKEN_ENV})")
    cleanup.add_argument("--timeout", type=duration, default=30.0, metavar="DURATION",
                         help="how long to wait for the report (default 30s: a cleanup may "
                              "take a moment)")
    cleanup.add_argument("--json", action="store_true", help="print the cleanup report as JSON")
    cleanup.set_defaults(run=_cleanup, parser=cleanup)


def _cleanup(args: argparse.Namespace) -> int:
    if args.pid is not None:
        return _cleanup_pid(args)
    import os

    token = args.token if args.token is not None else os.environ.get(TOKEN_ENV, "")
    if not token.strip():
        return usage_error(args.parser, f"--url needs --token (or {TOKEN_ENV})")
    endpoint = endpoint_url(args.url, "/memory/cleanup")
    status, body = http("POST", endpoint, timeout=args.timeout,
                         headers={"Authorization": f"Bearer {token.strip()}"})
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if status != 200 or not isinstance(data, dict):
        reason = data.get("error") if isinstance(data, dict) else None
        raise CheckFailed(f"{endpoint}: cleanup refused: HTTP {status}"
                          + (f": {one_line(str(reason))}" if reason else ""))
    if args.json:
        json.dump(data, sys.stdout, indent=2)
        print()
    else:
        print(_cleanup_summary(endpoint, data))
    return EXIT_OK


def _cleanup_summary(endpoint: str, report: dict[str, Any]) -> str:
    causes = ", ".join(f"{k} {v}" for k, v in sorted((report.get("by_cause") or {}).items()))
    text = (f"cleanup at {endpoint}: evicted {report.get('evicted', 0)} jobs"
            + (f" ({causes})" if causes else "")
            + f", freed ~{format_size(report.get('freed_estimate_bytes') or 0)}")
    before, after = report.get("usage_before_bytes"), report.get("usage_after_bytes")
    if before is not None and after is not None:
        text += (f", usage {format_size(before)} -> {format_size(after)}"
                 f" (reclaimed {format_size(before - after)})")
    if report.get("note"):
        text += f"; {report['note']}"
    return text


def _uid_of(pid: int) -> Optional[int]:
    from memguard.memory.reclaim import process_facts

    try:
        return process_facts(pid).uid
    except (ProcessLookupError, PermissionError):  # our own run directory is the best guess
        return None


def _listening(directory: Path, pid: int) -> bool:
    """Whether `pid` left a beacon in `directory` that is its own (not a reused pid's)."""
    from memguard.monitor.triggers import beacon_path, process_start_time

    try:
        beacon = json.loads(beacon_path(directory, pid).read_text())
    except (OSError, ValueError):
        return False
    started, actual = beacon.get("started"), process_start_time(pid)
    if not isinstance(started, (int, float)) or actual is None:
        return actual is None and beacon.get("pid") == pid  # cannot tell: trust the pid
    return abs(started - actual) < 1.0


def _listening_children(directory: Path, pid: int) -> list[int]:
    from memguard.memory.reclaim import process_facts

    try:
        children = process_facts(pid).children
    except (ProcessLookupError, PermissionError):
        return []
    return [child for child in children if _listening(directory, child)]


def _cleanup_pid(args: argparse.Namespace) -> int:
    import os
    import secrets
    import time

    from memguard.monitor.triggers import run_dir

    pid: int = args.pid
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        raise CheckFailed(f"no process with pid {pid}") from None
    except PermissionError:
        raise CheckFailed(f"not allowed to reach pid {pid} (another user's process)") from None
    directory = run_dir(_uid_of(pid))
    if not _listening(directory, pid):
        children = _listening_children(directory, pid)
        hint = (f"; its child processes {', '.join(map(str, children))} listen: name one of "
                "them (a gunicorn master holds no job stores)" if children else "")
        raise CheckFailed(
            f"pid {pid}: nothing there acts on cleanup requests (no memguard listener "
            f"registered in {directory}){hint}. A process listens while its memguard monitor "
            "runs with signal_cleanup = true under [memory] in its policy; or use --url")
    nonce = secrets.token_hex(8)
    request = directory / f"{pid}.{nonce}.request"
    report_path = directory / f"{pid}.{nonce}.report"
    temporary = directory / f".{pid}.{nonce}.request.tmp"
    try:
        temporary.write_text(json.dumps({"from": os.getpid()}))
        os.replace(temporary, request)
    except OSError as error:
        raise CheckFailed(f"cannot write a request in {directory}: "
                          f"{error.strerror or error}") from None
    deadline = time.monotonic() + args.timeout
    answer: Any = None
    while time.monotonic() < deadline:  # bounded by --timeout
        try:
            answer = json.loads(report_path.read_text())
            report_path.unlink()
            break
        except (OSError, ValueError):
            pass
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    if answer is None:
        taken = not request.exists()
        try:
            request.unlink()
        except OSError:
            pass
        raise CheckFailed(
            f"pid {pid} did not answer within {format_duration(args.timeout)}"
            + (" (it took the request: the cleanup may still be running; see its log)"
               if taken else " (the request was not taken: is its monitor still running?)"))
    if not isinstance(answer, dict) or "report" not in answer:
        reason = answer.get("error") if isinstance(answer, dict) else answer
        raise CheckFailed(f"pid {pid}: the cleanup failed: {one_line(str(reason))}")
    if args.json:
        json.dump(answer["report"], sys.stdout, indent=2)
        print()
    else:
        print(_cleanup_summary(f"pid {pid}", answer["report"]))
    return EXIT_OK
