"""The `memguard` command.

One `argparse` parser with a subcommand per concern; each subcommand lives in its own
`add_*_command(commands)` function that registers its parser and sets `run` to the function
that carries it out. Exit codes: 0 ok, 1 a check failed, 2 usage error. Errors a user can
cause print one line, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, TextIO

from memguard._units import Percent, format_duration, format_size
from memguard.errors import MemguardError, PolicyError
from memguard.levels import LEVEL_STATUS
from memguard.options import ENV_TOKEN as TOKEN_ENV
from memguard.policy import (
    STORE_FIELDS,
    ActiveWhen,
    Policy,
    bundled_policy,
    bundled_policy_names,
    load_policy,
    policy_from_environment,
)

if TYPE_CHECKING:
    import subprocess

__all__ = ["build_parser", "main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


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
        print(f"memguard: {_one_line(str(error))}", file=sys.stderr)
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


def _one_line(text: str) -> str:
    """`text` on one line, so that each failure is one greppable line."""
    return " ".join(text.split())


def _usage_error(parser: argparse.ArgumentParser, message: str) -> int:
    parser.print_usage(sys.stderr)
    print(f"{parser.prog}: error: {message}", file=sys.stderr)
    return EXIT_USAGE


# --------------------------------------------------------------------------------------------
# memguard policy check|show
# --------------------------------------------------------------------------------------------


def add_policy_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `memguard policy check FILE...` and `memguard policy show [FILE]`."""
    policy = commands.add_parser(
        "policy",
        help="check or explain TOML policy files",
        description="Check policy files, or show the effective values and where each came from.",
    )
    actions = policy.add_subparsers(dest="policy_action", metavar="ACTION")
    policy.set_defaults(run=lambda args: _usage_error(policy, "check or show is required"))

    names = ", ".join(bundled_policy_names()) or "none"
    check = actions.add_parser(
        "check",
        help="validate policy files (exit 0 all valid, 1 any invalid)",
        description=(
            "Validate each FILE as a whole, without the environment: print 'ok' or the one "
            f"error per file. A FILE may also name a bundled policy ({names})."
        ),
    )
    check.add_argument("files", nargs="+", metavar="FILE", help="a TOML policy file")
    check.set_defaults(run=_policy_check)

    show = actions.add_parser(
        "show",
        help="show effective values and where each came from",
        description=(
            "Show the memory thresholds and each store's effective rules, with where each "
            "value came from (built-in, FILE:line, env VARIABLE). Without FILE, shows what "
            f"the default manager runs (MEMGUARD_POLICY, else built-in). Bundled: {names}."
        ),
    )
    show.add_argument("file", nargs="?", metavar="FILE", help="a TOML policy file")
    show.add_argument(
        "--store",
        action="append",
        metavar="NAME",
        help="show only this store (repeatable; any name, declared in the file or not)",
    )
    show.add_argument("--json", action="store_true", help="print JSON instead of a table")
    show.add_argument("--no-env", action="store_true", help="ignore the environment's overrides")
    show.set_defaults(run=_policy_show)


def _policy_file(argument: str) -> Path:
    """The file `argument` names: a path, else the bundled policy of that name."""
    path = Path(argument)
    if path.is_file() or path.suffix == ".toml" or argument not in bundled_policy_names():
        return path
    return bundled_policy(argument)


def _policy_check(args: argparse.Namespace) -> int:
    """Validate each file on its own; one line per file; 1 when any is invalid."""
    failed = False
    for argument in args.files:
        try:
            policy = load_policy(_policy_file(argument), environ={})
        except PolicyError as error:
            failed = True
            print(_one_line(str(error)), file=sys.stderr)
            continue
        stores = len(policy.stores)
        print(f"{argument}: ok ({stores} store{'s' if stores != 1 else ''})")
    return EXIT_FAILED if failed else EXIT_OK


def _policy_show(args: argparse.Namespace) -> int:
    """Print the effective policy of a file (or of the environment), with provenance."""
    environ: Optional[dict[str, str]] = {} if args.no_env else None
    if args.file is None:
        policy = policy_from_environment(environ)
    else:
        policy = load_policy(_policy_file(args.file), environ=environ)
    stores = args.store if args.store else list(policy.stores)
    report = _policy_report(policy, stores)
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        print()
    else:
        _print_policy_report(report, sys.stdout)
    return EXIT_OK


#: The name under which `policy show` lists what a store not named in the file gets.
OTHER_STORES = "*"

_DURATIONS = frozenset(
    {"max_age", "max_idle", "check_interval", "gc_interval", "cooldown", "summary_interval"}
)
_SIZES = frozenset(
    {"max_bytes", "limit", "warning", "warning_heap", "emergency", "emergency_target", "critical"}
)


def _policy_report(policy: Policy, stores: Sequence[str]) -> dict[str, Any]:
    """The JSON-safe report `policy show` prints: values in seconds and bytes, with origins."""
    limit = policy.memory.limit if isinstance(policy.memory.limit, int) else None
    thresholds = policy.memory.resolve(limit)

    def entries(explained: dict[str, tuple[Any, str]]) -> dict[str, dict[str, Any]]:
        return {
            key: {"value": _json_value(value), "source": origin}
            for key, (value, origin) in explained.items()
        }

    memory = entries(policy.explain_memory())
    for name, entry in memory.items():
        resolved = getattr(thresholds, name, None)
        if isinstance(getattr(policy.memory, name, None), Percent) and resolved is not None:
            entry["bytes"] = resolved
    report_stores = {name: entries(policy.explain(name)) for name in stores}
    report_stores[OTHER_STORES] = entries(policy.explain(OTHER_STORES))
    return {"source": policy.source, "memory": memory, "stores": report_stores}


def _json_value(value: Any) -> Any:
    """`value` as JSON: Percent as "78%", ActiveWhen as its table, callables by name."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Percent):
        return str(value)
    if isinstance(value, ActiveWhen):
        return {"field": value.field, "in": sorted(value.values)}
    if isinstance(value, (tuple, list)):
        return [_json_value(item) for item in value]
    if callable(value):
        return getattr(value, "__qualname__", repr(value))
    return repr(value)


def _show_value(key: str, entry: dict[str, Any]) -> str:
    """One value of the report for people: `20m`, `512.0MB`, `78% (399.4MB)`, `-`."""
    value = entry["value"]
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if key in _DURATIONS and isinstance(value, (int, float)):
        return format_duration(value)
    if key in _SIZES and isinstance(value, int):
        return format_size(value)
    if isinstance(value, dict):  # an active table
        return f"{value['field']} in [{', '.join(value['in'])}]"
    if isinstance(value, list):
        return ", ".join(str(item) for item in value) or "(none)"
    if "bytes" in entry:
        return f"{value} ({format_size(entry['bytes'])})"
    return str(value)


def _print_policy_report(report: dict[str, Any], out: TextIO) -> None:
    print(f"policy: {report['source']}", file=out)
    print("\n[memory]", file=out)
    _print_entries(report["memory"], out, indent="  ")
    for name, entries in report["stores"].items():
        title = "any other store" if name == OTHER_STORES else f"[stores.{name}]"
        print(f"\n{title}", file=out)
        ordered = {key: entries[key] for key in STORE_FIELDS if key in entries}
        _print_entries(ordered, out, indent="  ")


def _print_entries(entries: dict[str, dict[str, Any]], out: TextIO, indent: str) -> None:
    shown = {key: _show_value(key, entry) for key, entry in entries.items()}
    key_width = max(map(len, shown), default=0)
    value_width = max(map(len, shown.values()), default=0)
    for key, text in shown.items():
        source = entries[key]["source"]
        print(f"{indent}{key:<{key_width}}  {text:<{value_width}}  {source}".rstrip(), file=out)


# --------------------------------------------------------------------------------------------
# Shared by health, monitor, stress and cleanup: argument types, targets, HTTP
# --------------------------------------------------------------------------------------------

#: Seconds an HTTP request to a running app may take (`--timeout`).
DEFAULT_TIMEOUT = 5.0


class CheckFailed(MemguardError):
    """A target could not be checked (unreachable URL, missing process, refused request).

    `main` prints it as one line and exits 1, like any failed check.
    """


def _duration(text: str) -> float:
    """argparse type: a positive duration (`2`, `"500ms"`, `"1m30s"`) in seconds."""
    from memguard._units import positive_duration

    try:
        return positive_duration(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(_one_line(str(error))) from None


def _positive_number(text: str) -> float:
    """argparse type: a finite number above zero."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number above zero; got {text!r}") from None
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"expected a number above zero; got {text!r}")
    return value


def _pid(text: str) -> int:
    """argparse type: a process id (a whole number above zero)."""
    try:
        pid = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a process id; got {text!r}") from None
    if pid <= 0:
        raise argparse.ArgumentTypeError(f"expected a process id above zero; got {text!r}")
    return pid


def _url(text: str) -> str:
    """argparse type: an http(s) URL with a host."""
    from urllib.parse import urlsplit

    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise argparse.ArgumentTypeError(
            f"expected an http:// or https:// URL such as http://127.0.0.1:8000/memory; "
            f"got {text!r}")
    return text


def _size(text: str) -> int:
    """argparse type: a size above zero (`"512MB"`, `"1.5GiB"`, bytes)."""
    from memguard._units import parse_size

    try:
        size = parse_size(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(_one_line(str(error))) from None
    if not isinstance(size, int) or size <= 0:
        raise argparse.ArgumentTypeError(f"expected a size above zero; got {text!r}")
    return size


def _add_target_options(parser: argparse.ArgumentParser) -> None:
    """--pid / --url (one at most; neither = this machine), --policy, --timeout."""
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--pid", type=_pid, metavar="PID",
                        help="check this process's resident memory against the policy")
    target.add_argument("--url", type=_url, metavar="URL",
                        help="ask a running app: its /memory or /health endpoint, or the base "
                             "URL where memguard's web app is mounted (then /memory is read)")
    parser.add_argument("--policy", metavar="FILE",
                        help="thresholds for --pid and this machine: a TOML file or a bundled "
                             "name (default: MEMGUARD_POLICY, else the built-in policy)")
    parser.add_argument("--timeout", type=_duration, default=DEFAULT_TIMEOUT, metavar="DURATION",
                        help=f"HTTP timeout for --url (default {DEFAULT_TIMEOUT:g}s)")


def _local_policy(argument: Optional[str]) -> Policy:
    """The policy judging local targets: `--policy`, else what the environment says."""
    if argument is not None:
        return load_policy(_policy_file(argument))
    return policy_from_environment()


def _read_target(args: argparse.Namespace) -> Any:
    """A `Reading` of the target the arguments name; raises CheckFailed when unreachable."""
    if args.url is not None:
        return _read_url(args.url, args.timeout)
    policy = _local_policy(args.policy)
    if args.pid is not None:
        return _read_pid(args.pid, policy)
    return _read_machine(policy)


def _judge(policy: Policy, usage: int, limit: Optional[int]) -> tuple[str, dict[str, Any]]:
    """(level, thresholds in bytes) of `usage` under `policy`, percentages of `limit`."""
    from memguard.monitor import raw_level

    thresholds = policy.memory.resolve(limit)
    names = ("warning", "emergency", "emergency_target", "critical")
    as_dict = {name: getattr(thresholds, name) for name in names}
    if all(as_dict[name] is None for name in ("warning", "emergency", "critical")):
        return "unknown", as_dict
    return raw_level(usage, thresholds), as_dict


def _read_pid(pid: int, policy: Policy) -> Any:
    """Resident memory of `pid` against `policy` (its numeric limit, else the detected one)."""
    from memguard._cli_view import Reading
    from memguard.memory import detect_limit, process_facts, read_rss

    try:
        rss = read_rss(pid)
        name = process_facts(pid).name
    except ProcessLookupError:
        raise CheckFailed(f"no process with pid {pid}") from None
    except PermissionError:
        raise CheckFailed(f"not allowed to read the memory of pid {pid}") from None
    limit = policy.memory.limit if isinstance(policy.memory.limit, int) else detect_limit()
    level, thresholds = _judge(policy, rss, limit)
    return Reading(target=f"pid {pid} ({name})", scope="process", usage=rss, rss=rss,
                   limit=limit, level=level, thresholds=thresholds)


def _read_machine(policy: Policy) -> Any:
    """This machine: the container's cgroup when it has a memory limit, else the whole RAM."""
    from memguard._cli_view import Reading
    from memguard.memory import CgroupProbe, ProbeError, machine_memory

    numeric = policy.memory.limit if isinstance(policy.memory.limit, int) else None
    try:
        probe = CgroupProbe(heap=False)
        try:
            cgroup_limit = probe.read_limit()
            sample = probe() if cgroup_limit is not None else None
        finally:
            probe.close()
    except (ValueError, ProbeError):
        sample, cgroup_limit = None, None
    if sample is not None:
        limit = numeric or cgroup_limit
        level, thresholds = _judge(policy, sample.usage, limit)
        return Reading(target="this container", scope="cgroup", usage=sample.usage,
                       limit=limit, level=level, thresholds=thresholds)
    used, total = machine_memory()
    limit = numeric or total
    level, thresholds = _judge(policy, used, limit)
    return Reading(target="this machine", scope="machine", usage=used, limit=limit,
                   level=level, thresholds=thresholds,
                   note="machine usage = total RAM minus what is available (page cache excluded)")


def _http(method: str, url: str, *, timeout: float,
          headers: Optional[dict[str, str]] = None) -> tuple[int, bytes]:
    """(status, body) of one request; HTTP errors are answers, not exceptions.

    Loopback addresses bypass any configured proxy. Raises CheckFailed when the server
    cannot be reached.
    """
    import socket
    import urllib.error
    import urllib.request
    from urllib.parse import urlsplit

    host = urlsplit(url).hostname or ""
    handlers: list[Any] = []
    if host in ("localhost", "127.0.0.1", "::1") or host.startswith("127."):
        handlers.append(urllib.request.ProxyHandler({}))
    opener = urllib.request.build_opener(*handlers)
    request = urllib.request.Request(url, method=method, headers={
        "Accept": "application/json, application/health+json", "User-Agent": "memguard-cli",
        **(headers or {})}, data=b"" if method == "POST" else None)
    try:
        with opener.open(request, timeout=timeout) as response:
            return int(response.status), response.read(4 * 2**20)
    except urllib.error.HTTPError as error:
        return int(error.code), error.read(4 * 2**20)
    except urllib.error.URLError as error:
        reason = error.reason
        raise CheckFailed(f"cannot reach {url}: {_one_line(str(reason))}") from None
    except (socket.timeout, TimeoutError):
        raise CheckFailed(f"cannot reach {url}: no answer within {timeout:g}s") from None
    except (OSError, ValueError) as error:
        raise CheckFailed(f"cannot reach {url}: {_one_line(str(error))}") from None


def _endpoint(url: str, path: str) -> str:
    """`url` itself when it already names `path` (or another memguard route), else url+path."""
    from urllib.parse import urlsplit

    route = urlsplit(url).path.rstrip("/")
    if route.endswith(("/memory", "/health", "/health/ready", "/memory/cleanup")):
        return url
    return url.rstrip("/") + path


def _read_url(url: str, timeout: float) -> Any:
    """A `Reading` from a running app's ``/memory`` (or ``/health``) payload."""
    endpoint = _endpoint(url, "/memory")
    status, body = _http("GET", endpoint, timeout=timeout)
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if status == 404:
        raise CheckFailed(f"{endpoint}: HTTP 404: no memguard endpoint there (give the URL of "
                          "/memory, /health, or where memguard's web app is mounted)")
    if not isinstance(data, dict):
        raise CheckFailed(f"{endpoint}: HTTP {status}, and the answer is not JSON")
    try:
        if "sample" in data:
            return _memory_reading(endpoint, data)
        if "checks" in data:
            return _health_reading(endpoint, data)
    except (KeyError, TypeError, ValueError, IndexError):
        pass
    raise CheckFailed(f"{endpoint}: HTTP {status}: not a memguard /memory or /health payload")


def _int_or_none(value: Any) -> Optional[int]:
    return None if value is None else int(value)


def _memory_reading(endpoint: str, data: dict[str, Any]) -> Any:
    from memguard._cli_view import LEVEL_STYLES, Reading

    sample = data["sample"]
    thresholds = data.get("thresholds") or {}
    level = str(data.get("level", "unknown"))
    if level not in LEVEL_STYLES:
        raise ValueError(level)
    limit = _int_or_none(sample.get("limit") if sample.get("limit") is not None
                         else thresholds.get("limit"))
    stores = tuple(dict(store) for store in data.get("stores") or () if isinstance(store, dict))
    growth = data.get("growth_per_minute")
    ttl = data.get("time_to_limit")
    return Reading(
        target=_answered_by(endpoint, data), scope=str(sample.get("scope", "remote")),
        usage=int(sample["usage"]),
        rss=_int_or_none(sample.get("rss")), limit=limit, level=level,
        thresholds={name: _int_or_none(thresholds.get(name))
                    for name in ("warning", "emergency", "emergency_target", "critical")},
        stores=stores, status=LEVEL_STATUS.get(level, ""),
        growth_per_minute=None if growth is None else float(growth),
        time_to_limit=None if ttl is None else float(ttl),
        monitoring=data.get("monitoring"),
        note=_allocator_note(data.get("allocator")),
    )


def _answered_by(endpoint: str, data: dict[str, Any]) -> str:
    """The endpoint and the pid that answered (a worker, under a multi-worker server)."""
    pid = data.get("pid")
    return f"{endpoint} (pid {pid})" if isinstance(pid, int) else endpoint


def _allocator_note(allocator: Any) -> str:
    """``allocator: pymalloc over glibc 2.36 malloc; reclaim: malloc_trim(0)`` from /memory."""
    summary = allocator.get("summary") if isinstance(allocator, dict) else None
    return f"allocator: {summary}" if isinstance(summary, str) else ""




def _health_reading(endpoint: str, data: dict[str, Any]) -> Any:
    from memguard._cli_view import LEVEL_STYLES, Reading

    status = str(data["status"])
    checks = data["checks"]
    utilization = checks["memory:utilization"][0]
    level = str(utilization.get("level", "unknown"))
    if level not in LEVEL_STYLES:
        level = "unknown"
    usage_check = (checks.get("memory:usage") or [{}])[0]
    thresholds = usage_check.get("thresholds") or {}
    usage = usage_check.get("observedValue")
    if usage is None:
        raise ValueError("no usage")
    return Reading(
        target=_answered_by(endpoint, data), scope="remote", usage=int(usage),
        limit=_int_or_none(thresholds.get("limit")), level=level,
        thresholds={name: _int_or_none(thresholds.get(name))
                    for name in ("warning", "emergency", "emergency_target", "critical")},
        status=status, note=str(data.get("output") or " ".join(data.get("notes") or ())),
    )


def _quiet_memguard_logs(verbose: bool) -> None:
    """Show memguard's own log lines on stderr with -v; else only its errors (a step that
    raised), not the level changes and cleanups the final table reports anyway."""
    import logging

    logger = logging.getLogger("memguard")
    if verbose:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    else:
        logger.setLevel(logging.ERROR)
        logger.addFilter(lambda record: record.levelno == logging.ERROR)


# --------------------------------------------------------------------------------------------
# memguard health
# --------------------------------------------------------------------------------------------


def add_health_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `memguard health [--pid PID | --url URL] [--json]`."""
    health = commands.add_parser(
        "health",
        help="one memory check of this machine, a process, or a running app (exit 1 at "
             "emergency or critical)",
        description=(
            "Check memory once and print the level (ok, warning, emergency, critical). Without "
            "--pid or --url, checks this machine: the container's cgroup when it has a memory "
            "limit, else the whole RAM. Exit 0 ok or warning, 1 at emergency or critical, when "
            "the app reports fail, or when the target cannot be read, 2 on usage errors."
        ),
    )
    _add_target_options(health)
    health.add_argument("--json", action="store_true", help="print the reading as JSON")
    health.set_defaults(run=_health)


def _health(args: argparse.Namespace) -> int:
    from memguard._cli_view import health_lines

    reading = _read_target(args)
    if args.json:
        json.dump(reading.to_dict(), sys.stdout, indent=2)
        print()
    else:
        for line in health_lines(reading):
            print(line)
    return EXIT_FAILED if reading.failing else EXIT_OK


# --------------------------------------------------------------------------------------------
# memguard monitor
# --------------------------------------------------------------------------------------------


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
    _add_target_options(monitor)
    monitor.add_argument("--interval", type=_duration, default=2.0, metavar="DURATION",
                         help="time between samples (default 2s)")
    monitor.add_argument("--duration", type=_duration, metavar="DURATION",
                         help="stop after this long (default: until Ctrl-C)")
    monitor.add_argument("--logfmt", action="store_true",
                         help="plain logfmt lines, one per sample, instead of the live view")
    monitor.set_defaults(run=_monitor)


def _monitor(args: argparse.Namespace) -> int:
    import time

    from memguard._cli_view import have_rich

    first = _read_target(args)  # a target that cannot be read at all is an error at once
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
        return _read_target(args)
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

    from memguard._cli_view import logfmt_line

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

    from memguard._cli_view import monitor_view
    from memguard.monitor import growth_rate

    console = Console()
    history: list[tuple[float, int, str]] = []

    def view(current: Any) -> Any:
        history.append((current.at, current.usage, current.level))
        del history[:-400]
        if current.growth_per_minute is None and current.level != "unknown":
            growth = growth_rate([(t, u) for t, u, _ in history[-30:]])
            current = attrs.evolve(current, growth_per_minute=growth)
        return monitor_view(current, history, interval=args.interval, width=console.width)

    with Live(view(reading), console=console, auto_refresh=False, transient=False) as screen:
        while _sleep_until(time.monotonic() + args.interval, deadline):
            reading = _next_reading(args, reading)
            screen.update(view(reading), refresh=True)


# --------------------------------------------------------------------------------------------
# memguard stress
# --------------------------------------------------------------------------------------------


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
    stress.add_argument("--minutes", type=_positive_number, default=60.0, metavar="N",
                        help="simulated minutes of traffic (default 60)")
    stress.add_argument("--seed", type=int, default=1, metavar="N",
                        help="the traffic's random seed (default 1)")
    stress.add_argument("--rate", type=_positive_number, metavar="JOBS",
                        help="jobs per simulated minute (default 9)")
    stress.add_argument("--scale", type=_positive_number, default=1.0, metavar="X",
                        help="multiply every result size (default 1)")
    stress.add_argument("--limit", type=_size, metavar="SIZE",
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
    from memguard import simulate

    parser: argparse.ArgumentParser = args.parser
    if args.record is not None and args.no_guard:
        return _usage_error(parser, "--record needs a guarded run (a baseline has no stores "
                                    "to record): drop --no-guard")
    for option, value in (("--json", args.json), ("--plot", args.plot),
                          ("--record", args.record)):
        if value not in (None, "-") and not Path(value).resolve().parent.is_dir():
            return _usage_error(parser, f"{option}: no directory for {value!r}")
    if args.plot is not None:
        import importlib.util

        # Found, not imported: importing it here would add ~30MB to the memory measured.
        if importlib.util.find_spec("matplotlib") is None:
            return _usage_error(parser, "--plot needs matplotlib: pip install 'memguard[cli]'")
    policy = None if args.policy is None else load_policy(_policy_file(args.policy))
    try:
        config = simulate.StressConfig(
            minutes=args.minutes, rate=args.rate or simulate.DEFAULT_RATE, seed=args.seed,
            scale=args.scale, guard=not args.no_guard, policy=policy, limit=args.limit,
            record=args.record, unpolled=args.unpolled)
        config.resolved_policy()
    except ValueError as error:
        return _usage_error(parser, _one_line(str(error)))
    _quiet_memguard_logs(args.verbose)
    to_stdout = args.json == "-"
    try:
        result = _run_stress(config, progress=not (args.quiet or to_stdout))
    except ValueError as error:
        raise CheckFailed(_one_line(str(error))) from None
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
    (`memguard._cli_view.plot_main`) from the results' JSON, so neither matplotlib nor the
    baseline's memory ever shows in this process's figures. Raises CheckFailed when no PNG
    could be written.
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
            [sys.executable, "-m", "memguard.cli", "stress", "--quiet", "--no-guard",
             "--json", str(baseline), *_stress_options(args)],
            capture_output=True, text=True, timeout=PLOT_TIMEOUT, check=False)
        if baseline.is_file():
            files.append(baseline)
        else:
            last = (child.stderr.strip().splitlines() or ["no output"])[-1]
            print(f"memguard stress: --plot: no baseline curve (exit {child.returncode}: "
                  f"{last})", file=sys.stderr)
    return subprocess.run(
        [sys.executable, "-m", "memguard._cli_view", args.plot, *map(str, files)],
        capture_output=True, text=True, timeout=PLOT_TIMEOUT, check=False)


def _run_stress(config: Any, *, progress: bool) -> Any:
    """Run the workload, with a progress bar on a terminal's stderr."""
    from memguard import simulate
    from memguard._cli_view import have_rich

    if not (progress and sys.stderr.isatty() and have_rich()):
        return simulate.run(config)
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from memguard._units import format_size

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
    from memguard._cli_view import print_table, stress_charts, stress_rows

    params = result.params
    mode = "guarded" if result.guard else "baseline (no guard)"
    title = (f"memguard stress: {mode}, {params['minutes']:g} simulated minutes, "
             f"{params['rate']:g} jobs/min, seed {params['seed']}, policy {params['policy']}")
    print_table(title, ["", "guarded" if result.guard else "baseline"], stress_rows([result]),
                out=out)
    for name, line in stress_charts([result]):
        print(f"usage over time ({name}, full height = max(limit, peak)): {line}", file=out)


# --------------------------------------------------------------------------------------------
# memguard cleanup
# --------------------------------------------------------------------------------------------

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
    target.add_argument("--url", type=_url, metavar="URL",
                        help="the app's /memory/cleanup endpoint or memguard's base URL")
    target.add_argument("--pid", type=_pid, metavar="PID",
                        help="a process running memguard with signal_cleanup = true")
    cleanup.add_argument("--token", metavar="TOKEN",
                         help=f"the bearer token for --url (default: ${TOKEN_ENV})")
    cleanup.add_argument("--timeout", type=_duration, default=30.0, metavar="DURATION",
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
        return _usage_error(args.parser, f"--url needs --token (or {TOKEN_ENV})")
    endpoint = _endpoint(args.url, "/memory/cleanup")
    status, body = _http("POST", endpoint, timeout=args.timeout,
                         headers={"Authorization": f"Bearer {token.strip()}"})
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if status != 200 or not isinstance(data, dict):
        reason = data.get("error") if isinstance(data, dict) else None
        raise CheckFailed(f"{endpoint}: cleanup refused: HTTP {status}"
                          + (f": {_one_line(str(reason))}" if reason else ""))
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
    from memguard.memory import process_facts

    try:
        return process_facts(pid).uid
    except (ProcessLookupError, PermissionError):  # our own run directory is the best guess
        return None


def _listening(directory: Path, pid: int) -> bool:
    """Whether `pid` left a beacon in `directory` that is its own (not a reused pid's)."""
    from memguard.trigger import beacon_path, process_start_time

    try:
        beacon = json.loads(beacon_path(directory, pid).read_text())
    except (OSError, ValueError):
        return False
    started, actual = beacon.get("started"), process_start_time(pid)
    if not isinstance(started, (int, float)) or actual is None:
        return actual is None and beacon.get("pid") == pid  # cannot tell: trust the pid
    return abs(started - actual) < 1.0


def _listening_children(directory: Path, pid: int) -> list[int]:
    from memguard.memory import process_facts

    try:
        children = process_facts(pid).children
    except (ProcessLookupError, PermissionError):
        return []
    return [child for child in children if _listening(directory, child)]


def _cleanup_pid(args: argparse.Namespace) -> int:
    import os
    import secrets
    import time

    from memguard.trigger import run_dir

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
        raise CheckFailed(f"pid {pid}: the cleanup failed: {_one_line(str(reason))}")
    if args.json:
        json.dump(answer["report"], sys.stdout, indent=2)
        print()
    else:
        print(_cleanup_summary(f"pid {pid}", answer["report"]))
    return EXIT_OK


# --------------------------------------------------------------------------------------------
# memguard tune


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
    tune.add_argument("--limit", type=_size, required=True, metavar="SIZE",
                      help="the memory limit to fit (e.g. 512MB)")
    tune.add_argument("--policy", metavar="FILE",
                      help="the policy whose thresholds (scaled to --limit) set the budget and "
                           "go into --write, shown as 'current policy' (default: the bundled "
                           "default)")
    tune.add_argument("--budget", type=_size, metavar="SIZE",
                      help="the peak to stay under (default: the policy's emergency threshold)")
    tune.add_argument("--jobs", metavar="LIST", help="max_jobs grid, e.g. 10,20,50,none")
    tune.add_argument("--ages", metavar="LIST", help="max_age grid, e.g. 10m,30m,1h,none")
    tune.add_argument("--top", type=int, default=15, metavar="N",
                      help="candidates shown (default 15)")
    tune.add_argument("--write", metavar="FILE", help="write the recommended policy as TOML")
    tune.set_defaults(run=_tune, parser=tune)


def _tune(args: argparse.Namespace) -> int:
    from memguard import tune
    from memguard._units import parse_duration
    from memguard.simulate import default_policy, scaled_policy

    parser: argparse.ArgumentParser = args.parser
    try:
        jobs = tune.JOBS_GRID if args.jobs is None else tune.parse_grid(args.jobs, int)
        ages = tune.AGE_GRID if args.ages is None else tune.parse_grid(args.ages, parse_duration)
    except ValueError as error:
        return _usage_error(parser, f"--jobs/--ages: {_one_line(str(error))}")
    if any(j is not None and j < 1 for j in jobs):
        return _usage_error(parser, f"--jobs: counts must be 1 or more; got {args.jobs!r}")
    if args.write is not None and not Path(args.write).resolve().parent.is_dir():
        return _usage_error(parser, f"--write: no directory for {args.write!r}")
    base = default_policy() if args.policy is None else load_policy(_policy_file(args.policy))
    policy = scaled_policy(base, args.limit)
    budget = args.budget or policy.memory.resolve(args.limit).emergency or args.limit
    try:
        trace = tune.read_trace(args.trace)
    except tune.TraceError as error:
        raise CheckFailed(_one_line(str(error))) from None
    result = tune.tune(trace, budget, current=tune.current_bounds(policy, trace.stores),
                       jobs_grid=jobs, age_grid=ages)
    print(f"trace {args.trace}: {len(trace.records)} events, {len(trace.stores)} stores, "
          f"{trace.duration / 60:.0f} minutes")
    print(tune.table(result, top=args.top))
    if result.best is None:
        return EXIT_FAILED
    if args.write is not None:
        Path(args.write).write_text(tune.to_toml(result, policy, args.limit, args.trace),
                                    encoding="utf-8")
        print(f"written: {args.write} (check it with: memguard policy check {args.write})")
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
