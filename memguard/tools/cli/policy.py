"""`memguard policy check|show`."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any, Optional, TextIO

from memguard.errors import PolicyError
from memguard.policy.files import (
    bundled_policy_names,
    load_policy,
    policy_from_environment,
)
from memguard.policy.options import STORE_FIELDS, ActiveWhen, _any_duration
from memguard.policy.policy import Policy
from memguard.policy.schema import _MEMORY_KEYS, _STORE_KEYS
from memguard.policy.units import Percent, format_duration, format_size, positive_duration
from memguard.tools.cli.common import EXIT_FAILED, EXIT_OK, one_line, policy_file, usage_error


def add_policy_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `memguard policy check FILE...` and `memguard policy show [FILE]`."""
    policy = commands.add_parser(
        "policy",
        help="check or explain TOML policy files",
        description="Check policy files, or show the effective values and where each came from.",
    )
    actions = policy.add_subparsers(dest="policy_action", metavar="ACTION")
    policy.set_defaults(run=lambda args: usage_error(policy, "check or show is required"))

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


def _policy_check(args: argparse.Namespace) -> int:
    """Validate each file on its own; one line per file; 1 when any is invalid."""
    failed = False
    for argument in args.files:
        try:
            policy = load_policy(policy_file(argument), environ={})
        except PolicyError as error:
            failed = True
            print(one_line(str(error)), file=sys.stderr)
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
        policy = load_policy(policy_file(args.file), environ=environ)
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

#: Keys shown as durations (`1s`, `2m`): every key the schema reads as one, so no interval
#: prints as a bare number beside the others.
_DURATIONS = frozenset(
    key for keys in (_MEMORY_KEYS, _STORE_KEYS) for key, parse in keys.items()
    if parse in (positive_duration, _any_duration))
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
