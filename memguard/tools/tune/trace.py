"""Reading a recorded trace (`memguard.stores.trace`) for the tuner."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Union

import attrs

from memguard.errors import TraceError
from memguard.stores.trace import TRACE_VERSION

Record = tuple[Any, ...]
"""One trace record: its kind letter, then its fields."""


@attrs.frozen
class Trace:
    """A parsed trace: its header, its store names, and its records in file order (each
    ``(kind, time, store, hash, *extra)``; the recorded run's evictions are marked ``E``
    instead of ``d`` so a replay can skip them)."""

    header: Mapping[str, Any]
    stores: tuple[str, ...]
    records: tuple[Record, ...]

    @property
    def base(self) -> int:
        """Memory the process used besides its stores when recording started (0: unknown)."""
        base = self.header.get("base")
        return int(base) if isinstance(base, (int, float)) else 0

    @property
    def check_interval(self) -> float:
        value = self.header.get("check_interval")
        return float(value) if isinstance(value, (int, float)) and value > 0 else 120.0

    @property
    def duration(self) -> float:
        return float(self.records[-1][1]) if self.records else 0.0


def read_trace(path: Union[str, Path]) -> Trace:
    """Read a trace written by `memguard.stores.trace.Recorder`; raises TraceError on bad input."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise TraceError(f"{path}: cannot read the trace: {error}") from None
    if not lines:
        raise TraceError(f"{path}: empty file; expected a trace written by memguard "
                         "(MemoryManager.record or memguard stress --record)")
    header = _json(path, 1, lines[0])
    if not isinstance(header, dict) or header.get("memguard_trace") != TRACE_VERSION:
        raise TraceError(f"{path}, line 1: not a memguard trace header (expected "
                         f'{{"memguard_trace": {TRACE_VERSION}, ...}}), got {lines[0][:80]!r}')
    stores: dict[int, str] = {}
    records: list[Record] = []
    last_removal: dict[tuple[int, str], int] = {}
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        record = _json(path, number, line)
        if not isinstance(record, list) or not record or record[0] not in _ARITY:
            raise TraceError(f"{path}, line {number}: expected a record such as "
                             f'["r", 12.5, 0, "9f3a..."], got {line[:80]!r}')
        kind = record[0]
        if len(record) != _ARITY[kind]:
            raise TraceError(f"{path}, line {number}: a {kind!r} record has {_ARITY[kind]} "
                             f"fields, this one {len(record)}: {line[:80]!r}")
        if kind == "s":
            stores[int(record[1])] = str(record[2])
            continue
        if record[2] not in stores:
            raise TraceError(f"{path}, line {number}: store {record[2]!r} was never "
                             "declared by an 's' record")
        if kind == "d":
            last_removal[(record[2], record[3])] = len(records)
        elif kind == "e":
            at = last_removal.pop((record[2], record[3]), None)
            if at is not None:
                records[at] = ("E", *records[at][1:])  # the recorded policy's eviction
            continue
        records.append(tuple(record))
    names = tuple(stores.get(i, f"store{i}") for i in range(max(stores, default=-1) + 1))
    return Trace(header=header, stores=names, records=tuple(records))


_ARITY = {"s": 3, "i": 5, "w": 5, "f": 5, "r": 4, "m": 4, "d": 4, "e": 6}


def _json(path: Path, number: int, line: str) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError as error:
        raise TraceError(f"{path}, line {number}: not JSON ({error.msg}): {line[:80]!r}") from None
