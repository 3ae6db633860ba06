"""Shared by the commands: exit codes, argument types, targets (pid, url), HTTP."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Optional

from memguard.errors import CheckFailed
from memguard.monitor.levels import LEVEL_STATUS
from memguard.policy.files import (
    bundled_policy,
    bundled_policy_names,
    load_policy,
    policy_from_environment,
)
from memguard.policy.policy import Policy

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def one_line(text: str) -> str:
    """`text` on one line, so that each failure is one greppable line."""
    return " ".join(text.split())


def usage_error(parser: argparse.ArgumentParser, message: str) -> int:
    parser.print_usage(sys.stderr)
    print(f"{parser.prog}: error: {message}", file=sys.stderr)
    return EXIT_USAGE



#: Seconds an HTTP request to a running app may take (`--timeout`).
DEFAULT_TIMEOUT = 5.0




def duration(text: str) -> float:
    """argparse type: a positive duration (`2`, `"500ms"`, `"1m30s"`) in seconds."""
    from memguard.policy.units import positive_duration

    try:
        return positive_duration(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(one_line(str(error))) from None


def positive_number(text: str) -> float:
    """argparse type: a finite number above zero."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number above zero; got {text!r}") from None
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"expected a number above zero; got {text!r}")
    return value


def pid(text: str) -> int:
    """argparse type: a process id (a whole number above zero)."""
    try:
        pid = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a process id; got {text!r}") from None
    if pid <= 0:
        raise argparse.ArgumentTypeError(f"expected a process id above zero; got {text!r}")
    return pid


def url(text: str) -> str:
    """argparse type: an http(s) URL with a host."""
    from urllib.parse import urlsplit

    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise argparse.ArgumentTypeError(
            f"expected an http:// or https:// URL such as http://127.0.0.1:8000/memory; "
            f"got {text!r}")
    return text


def size(text: str) -> int:
    """argparse type: a size above zero (`"512MB"`, `"1.5GiB"`, bytes)."""
    from memguard.policy.units import parse_size

    try:
        size = parse_size(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(one_line(str(error))) from None
    if not isinstance(size, int) or size <= 0:
        raise argparse.ArgumentTypeError(f"expected a size above zero; got {text!r}")
    return size


def add_target_options(parser: argparse.ArgumentParser) -> None:
    """--pid / --url (one at most; neither = this machine), --policy, --timeout."""
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--pid", type=pid, metavar="PID",
                        help="check this process's resident memory against the policy")
    target.add_argument("--url", type=url, metavar="URL",
                        help="ask a running app: its /memory or /health endpoint, or the base "
                             "URL where memguard's web app is mounted (then /memory is read)")
    parser.add_argument("--policy", metavar="FILE",
                        help="thresholds for --pid and this machine: a TOML file or a bundled "
                             "name (default: MEMGUARD_POLICY, else the built-in policy)")
    parser.add_argument("--timeout", type=duration, default=DEFAULT_TIMEOUT, metavar="DURATION",
                        help=f"HTTP timeout for --url (default {DEFAULT_TIMEOUT:g}s)")


def _local_policy(argument: Optional[str]) -> Policy:
    """The policy judging local targets: `--policy`, else what the environment says."""
    if argument is not None:
        return load_policy(policy_file(argument))
    return policy_from_environment()


def read_target(args: argparse.Namespace) -> Any:
    """A `Reading` of the target the arguments name; raises CheckFailed when unreachable."""
    if args.url is not None:
        return _read_url(args.url, args.timeout)
    policy = _local_policy(args.policy)
    if args.pid is not None:
        return _read_pid(args.pid, policy)
    return _read_machine(policy)


def _judge(policy: Policy, usage: int, limit: Optional[int]) -> tuple[str, dict[str, Any]]:
    """(level, thresholds in bytes) of `usage` under `policy`, percentages of `limit`."""
    from memguard.monitor.levels import raw_level

    thresholds = policy.memory.resolve(limit)
    names = ("warning", "emergency", "emergency_target", "critical")
    as_dict = {name: getattr(thresholds, name) for name in names}
    if all(as_dict[name] is None for name in ("warning", "emergency", "critical")):
        return "unknown", as_dict
    return raw_level(usage, thresholds), as_dict


def _read_pid(pid: int, policy: Policy) -> Any:
    """Resident memory of `pid` against `policy` (its numeric limit, else the detected one)."""
    from memguard.memory.probes import detect_limit
    from memguard.memory.reclaim import process_facts, read_rss
    from memguard.tools.cli.views import Reading

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
                   limit=limit, level=level, thresholds=thresholds,
                   warnings=() if limit is not None else (_NO_LIMIT,))


_NO_LIMIT = ("no memory limit known: the policy's limit is \"auto\" and no container limit "
             "was found, so thresholds given as percentages are off; give --policy a limit, "
             "or set MEMGUARD_MEMORY_LIMIT")


def _read_machine(policy: Policy) -> Any:
    """This machine: the container's cgroup when it has a memory limit, else the whole RAM."""
    from memguard.errors import ProbeError
    from memguard.memory.probes import CgroupProbe
    from memguard.memory.reclaim import machine_memory
    from memguard.tools.cli.views import Reading

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


def http(method: str, url: str, *, timeout: float,
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
        raise CheckFailed(f"cannot reach {url}: {one_line(str(reason))}") from None
    except (socket.timeout, TimeoutError):
        raise CheckFailed(f"cannot reach {url}: no answer within {timeout:g}s") from None
    except (OSError, ValueError) as error:
        raise CheckFailed(f"cannot reach {url}: {one_line(str(error))}") from None


def endpoint_url(url: str, path: str) -> str:
    """`url` itself when it already names `path` (or another memguard route), else url+path."""
    from urllib.parse import urlsplit

    route = urlsplit(url).path.rstrip("/")
    if route.endswith(("/memory", "/health", "/health/ready", "/memory/cleanup")):
        return url
    return url.rstrip("/") + path


def _read_url(url: str, timeout: float) -> Any:
    """A `Reading` from a running app's ``/memory`` (or ``/health``) payload."""
    endpoint = endpoint_url(url, "/memory")
    status, body = http("GET", endpoint, timeout=timeout)
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
    from memguard.tools.cli.views import LEVEL_STYLES, Reading

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
    status, warnings = _memory_health(data, level, limit, stores)
    return Reading(
        target=_answered_by(endpoint, data), scope=str(sample.get("scope", "remote")),
        usage=int(sample["usage"]),
        rss=_int_or_none(sample.get("rss")), limit=limit, level=level,
        thresholds={name: _int_or_none(thresholds.get(name))
                    for name in ("warning", "emergency", "emergency_target", "critical")},
        stores=stores, status=status,
        growth_per_minute=None if growth is None else float(growth),
        time_to_limit=None if ttl is None else float(ttl),
        monitoring=data.get("monitoring"),
        note=_allocator_note(data.get("allocator")), warnings=warnings,
    )


def _memory_health(data: dict[str, Any], level: str, limit: Optional[int],
                   stores: tuple[dict[str, Any], ...]) -> tuple[str, tuple[str, ...]]:
    """(status, warnings) of a ``/memory`` payload: its ``health`` section, or, from an app
    that predates it, the same judgement made here from the fields it has."""
    health = data.get("health")
    if isinstance(health, dict) and isinstance(health.get("status"), str):
        return health["status"], tuple(str(note) for note in health.get("notes") or ())
    warnings: list[str] = []
    if limit is None:
        warnings.append("no memory limit known")
    if data.get("monitoring") is False:
        warnings.append("monitor not running")
    warnings += [f"store {store.get('name')!r} unreachable: {store.get('error')}"
                 for store in stores if store.get("reachable") is False]
    status = LEVEL_STATUS.get(level, "")
    return ("warn" if warnings and status == "pass" else status), tuple(warnings)


def _answered_by(endpoint: str, data: dict[str, Any]) -> str:
    """The endpoint and the pid that answered (a worker, under a multi-worker server)."""
    pid = data.get("pid")
    return f"{endpoint} (pid {pid})" if isinstance(pid, int) else endpoint


def _allocator_note(allocator: Any) -> str:
    """``allocator: pymalloc over glibc 2.36 malloc; reclaim: malloc_trim(0)`` from /memory."""
    summary = allocator.get("summary") if isinstance(allocator, dict) else None
    return f"allocator: {summary}" if isinstance(summary, str) else ""




def _health_reading(endpoint: str, data: dict[str, Any]) -> Any:
    from memguard.tools.cli.views import LEVEL_STYLES, Reading

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
    notes = [str(note) for note in data.get("notes") or ()]
    return Reading(
        # the scope the app measured (an app that predates the field: "remote")
        target=_answered_by(endpoint, data), scope=str(usage_check.get("scope") or "remote"),
        usage=int(usage), limit=_int_or_none(thresholds.get("limit")), level=level,
        thresholds={name: _int_or_none(thresholds.get(name))
                    for name in ("warning", "emergency", "emergency_target", "critical")},
        # the notes are the level's line, which the summary already says in this format, and
        # the warnings, printed one a line; an output without notes is a failure's own text
        status=status, note="" if notes else str(data.get("output") or ""),
        # notes: the level's line, then each reason the status is not pass besides the level
        warnings=tuple(notes[1:]),
    )


def quiet_memguard_logs(verbose: bool) -> None:
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


def policy_file(argument: str) -> Path:
    """The file `argument` names: a path, else the bundled policy of that name."""
    path = Path(argument)
    if path.is_file() or path.suffix == ".toml" or argument not in bundled_policy_names():
        return path
    return bundled_policy(argument)
