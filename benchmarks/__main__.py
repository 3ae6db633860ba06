"""``python -m benchmarks [--quick] [--json FILE] [--only CASE ...] [--markdown FILE]
[--pyperf FILE]``.

Runs every case of the suite in order, prints one table per case and a summary of the
targets (met / not met, with the figure), and writes everything as JSON (default
``benchmarks/results/latest.json``). The exit status is 0 whether or not targets are met:
the suite measures, CI decides what to do with the figures.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import math
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Callable, Optional

import pyperf

from benchmarks import PYPERF_BENCHMARKS, SCHEMA_VERSION

ROOT = Path(__file__).resolve().parent
DEFAULT_JSON = ROOT / "results" / "latest.json"

#: Case id -> module, in the order they run. bench_monitor is a colleague's module with the
#: same `run(quick) -> dict` entry point; it (and bench_stress's workload) may be absent.
CASES: dict[str, str] = {
    "access": "benchmarks.bench_access",
    "insert": "benchmarks.bench_insert",
    "pass": "benchmarks.bench_pass",
    "bookkeeping": "benchmarks.bench_bookkeeping",
    "reclaim": "benchmarks.bench_reclaim",
    "stress": "benchmarks.bench_stress",
    "threads": "benchmarks.bench_threads",  # a writer and 4 readers in real threads
    "monitor": "benchmarks.bench_monitor",
    "redis": "benchmarks.bench_redis",  # starts its own redis-server; skipped without one
    "guard": "benchmarks.bench_guard",  # real gunicorn under sustained load (issue 10)
    "results": "benchmarks.bench_results",  # results lost vs the clairvoyant reference (21)
}
OPTIONAL = {"monitor"}


# -- formatting ------------------------------------------------------------------------------

def format_value(value: Optional[float], unit: str) -> str:
    """A figure with its unit: times scaled to ns/us/ms/s, bytes to B/KiB/MiB."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if unit == "s":
        for scale, suffix in ((1e-6, "ns"), (1e-3, "us"), (1.0, "ms")):
            if abs(value) < scale:
                return f"{value / scale * 1e3:.4g} {suffix}"
        return f"{value:.4g} s"
    if unit == "bytes":
        for scale, suffix in ((1 << 10, "B"), (1 << 20, "KiB"), (1 << 30, "MiB")):
            if abs(value) < scale:
                return f"{value / (scale >> 10):.4g} {suffix}"
        return f"{value / (1 << 30):.4g} GiB"
    if unit == "%":
        return f"{value:.1f}%" if abs(value) >= 1 else f"{value:.3g}%"
    if unit == "x":
        return f"{value:.3g}x"
    if unit == "ns":
        return f"{value:.0f} ns"
    return f"{value:.4g} {unit}".rstrip()


def _spread(row: Mapping[str, Any]) -> str:
    stats = row.get("stats")
    if not stats or row.get("unit") != "s":
        return ""
    return "med " + format_value(stats.get("median"), "s")


def _ratios(row: Mapping[str, Any]) -> str:
    """`0.74x peer, ...`; a qualifier the row and a peer share (", capacity 1e+03") is shown
    once, in the row's name."""
    name = str(row.get("name", ""))
    shared = ", " + name.rsplit(", ", 1)[-1] if ", " in name else None
    parts = []
    for item in row.get("ratios", ()):
        peer = str(item["peer"])
        if shared and peer.endswith(shared):
            peer = peer[: -len(shared)]
        parts.append(f"{item['ratio']:.3g}x {peer}")
    return ", ".join(parts)


def render_case(result: Mapping[str, Any]) -> str:
    """One case as a table: figure, spread, ratios against its peers; targets; notes."""
    lines = [f"== {result.get('title', result.get('id', '?'))} =="]
    if result.get("skipped"):
        lines.append(f"   skipped: {result['skipped']}")
    rows = result.get("rows")
    if isinstance(rows, list) and rows:
        width = max(len(str(r.get("name", ""))) for r in rows)
        for r in rows:
            figure = format_value(r.get("value"), str(r.get("unit", "")))
            line = f"   {r.get('name', '')!s:<{width}}  {figure:>11} {_spread(r):<15}"
            ratios = _ratios(r)
            if ratios:
                line += f" | {ratios}"
            if r.get("note"):
                line += f"  ({r['note']})"
            lines.append(line.rstrip())
    elif not result.get("skipped"):  # a module that returned its own shape: show it flat
        for key, value in result.items():
            if key not in ("id", "title", "targets", "notes"):
                lines.append(f"   {key}: {json.dumps(value, default=str)[:200]}")
    for t in result.get("targets", ()):
        lines.append("   target: " + render_target(t))
    for note in result.get("notes", ()):
        lines.append(f"   note: {note}")
    return "\n".join(lines)


def render_target(t: Mapping[str, Any]) -> str:
    """`MET     store[k] vs ... = 0.91x (<= 1x; 110 ns vs 121 ns)`."""
    met = t.get("met")
    verdict = "MET    " if met else ("NOT MET" if met is False else "N/A    ")
    unit = str(t.get("unit", ""))
    figure = format_value(t.get("figure"), unit)
    limit = format_value(t.get("limit"), unit)
    text = f"{verdict} {t.get('name')}: {figure} ({t.get('op')} {limit}"
    if t.get("detail"):
        text += f"; {t['detail']}"
    return text + ")"


# -- running -----------------------------------------------------------------------------------

def environment() -> dict[str, Any]:
    """Where and with what the figures were taken."""
    from importlib.metadata import version

    import memguard

    # memguard's own (its distribution is memguard-jobs; "memguard" on PyPI is another project)
    versions: dict[str, Optional[str]] = {"memguard": memguard.__version__}
    for name in ("cachetools", "cachebox", "pyperf", "psutil", "wrapt"):
        try:
            versions[name] = version(name)
        except Exception:  # not installed
            versions[name] = None
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "versions": versions,
        "git_commit": commit,
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def load_case(module_name: str) -> Optional[Callable[..., dict[str, Any]]]:
    """The `run` function of a case module, or None when the module does not exist."""
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name == module_name:
            return None
        raise
    run: Callable[..., dict[str, Any]] = module.run
    return run


def run_suite(case_ids: Sequence[str], *, quick: bool,
              echo: Callable[[str], object] = print) -> dict[str, Any]:
    """Run `case_ids` in order; a case that fails is reported as such and the suite goes on."""
    results = []
    started = time.perf_counter()
    for case_id in case_ids:
        module_name = CASES[case_id]
        case_start = time.perf_counter()
        try:
            run = load_case(module_name)
            if run is None:
                if case_id in OPTIONAL:
                    continue
                raise ModuleNotFoundError(module_name)
            result = dict(run(quick))
        except Exception as error:
            result = {"id": case_id, "title": case_id, "rows": [], "targets": [], "notes": [],
                      "skipped": f"failed: {type(error).__name__}: {error}",
                      "traceback": traceback.format_exc()}
        result.setdefault("id", case_id)
        result["seconds"] = round(time.perf_counter() - case_start, 2)
        results.append(result)
        echo(render_case(result) + f"\n   ({result['seconds']:.1f} s)\n")
    targets = [dict(t, case=r.get("id")) for r in results for t in r.get("targets", ())]
    return {
        "schema": SCHEMA_VERSION,
        "quick": quick,
        "environment": environment(),
        "seconds": round(time.perf_counter() - started, 2),
        "cases": results,
        "targets": targets,
    }


def render_summary(report: Mapping[str, Any]) -> str:
    """Every target of the run, met or not, with its figure."""
    targets: Iterable[Mapping[str, Any]] = report.get("targets", ())
    lines = ["== targets =="]
    lines += [f"   [{t.get('case')}] " + render_target(t) for t in targets]
    met = sum(1 for t in report.get("targets", ()) if t.get("met"))
    lines.append(f"   {met} of {len(report.get('targets', ()))} met; "
                 f"suite took {report.get('seconds', 0):.0f} s")
    return "\n".join(lines)


def _cell(text: str) -> str:
    """Text safe in a Markdown table cell: pipes, underscores and brackets escaped (so
    `store[k]["status"]` is not read as a reference link)."""
    return (text.replace("|", "\\|").replace("_", "\\_").replace("[", "\\[")
            .replace("]", "\\]"))


def render_markdown(report: Mapping[str, Any]) -> str:
    """The run as Markdown tables (docs/benchmarks.md pastes this): targets, then each case."""
    env = report.get("environment", {})
    versions = env.get("versions", {})
    lines = [
        f"Run of {env.get('date', '?')} ({'quick' if report.get('quick') else 'full'}, "
        f"{report.get('seconds', 0):.0f} s): CPython {env.get('python', '?')} on "
        f"{env.get('cpu', '?')} x {env.get('cpu_count', '?')}, {env.get('platform', '?')}; "
        + ", ".join(f"{name} {v}" for name, v in versions.items() if v)
        + f"; commit {env.get('git_commit', '?')}.",
        "",
        "| case | target | figure | limit | verdict |",
        "|---|---|---|---|---|",
    ]
    for t in report.get("targets", ()):
        unit = str(t.get("unit", ""))
        verdict = {True: "met", False: "**not met**", None: "n/a"}[t.get("met")]
        figure = format_value(t.get("figure"), unit)
        if t.get("detail"):
            figure += f" ({t['detail']})"
        lines.append(f"| {t.get('case')} | {_cell(str(t.get('name')))} | {_cell(figure)} | "
                     f"{t.get('op')} {format_value(t.get('limit'), unit)} | {verdict} |")
    for result in report.get("cases", ()):
        lines += ["", f"#### {result.get('title', result.get('id'))}", ""]
        if result.get("skipped"):
            lines.append(f"Skipped: {result['skipped']}")
            continue
        lines += ["| contender | best | median | ratios (same run) | note |",
                  "|---|---|---|---|---|"]
        for r in result.get("rows", ()):
            unit = str(r.get("unit", ""))
            stats = r.get("stats") or {}
            median = format_value(stats.get("median"), unit) if stats else ""
            lines.append(f"| {_cell(str(r.get('name')))} | {format_value(r.get('value'), unit)} "
                         f"| {median} | {_cell(_ratios(r))} | {_cell(str(r.get('note', '')))} |")
    return "\n".join(lines) + "\n"


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parse arguments, run the suite, print the tables and write the JSON."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="fewer rounds and smaller sizes: under two minutes (CI)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, metavar="FILE",
                        help="where to write the results "
                             f"(default {DEFAULT_JSON.relative_to(ROOT.parent)})")
    parser.add_argument("--only", nargs="+", choices=list(CASES), metavar="CASE",
                        help=f"run only these cases ({', '.join(CASES)})")
    parser.add_argument("--markdown", type=Path, metavar="FILE",
                        help="also write the results as Markdown tables (docs/benchmarks.md)")
    parser.add_argument("--pyperf", type=Path, metavar="FILE",
                        help="also write every timing as a pyperf suite (pyperf stats FILE)")
    args = parser.parse_args(argv)
    print(f"memguard benchmarks ({'quick' if args.quick else 'full'}), "
          f"Python {sys.version.split()[0]}\n", flush=True)
    report = run_suite(args.only or list(CASES), quick=args.quick,
                       echo=lambda text: print(text, flush=True))
    print(render_summary(report))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"\nresults written to {args.json}")
    if args.markdown is not None:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(render_markdown(report))
        print(f"Markdown tables written to {args.markdown}")
    if args.pyperf is not None and PYPERF_BENCHMARKS:
        pyperf.BenchmarkSuite(PYPERF_BENCHMARKS).dump(str(args.pyperf), replace=True)
        print(f"pyperf suite written to {args.pyperf}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
