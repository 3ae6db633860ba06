"""The fragmentation diagnosis tells "still referenced elsewhere" from "allocator arenas"
(issue 22), in a real process with the real probe: results of many small strings, evicted by
an emergency cleanup, either still held by the app (a list of them) or freed among small live
objects that pin pymalloc's arenas. Only the second gets the PYTHONMALLOC=malloc advice."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from typing import Any

import pytest

from memguard.memory.allocators import heap_bytes

pytestmark = pytest.mark.skipif(heap_bytes() is None,
                                reason="needs malloc's heap figure (glibc mallinfo2)")

SCRIPT = textwrap.dedent('''
    import gc, json, sys
    import psutil
    from memguard import MemoryManager, managed_store

    mode = sys.argv[1]
    manager = MemoryManager()

    @managed_store(name="results", manager=manager)
    class Results(dict):
        pass

    store, keep = Results(), []
    for n in range(40):  # 40 results of 5000 strings of ~230 bytes (pymalloc's): ~45 MB
        result = []
        for i in range(5000):
            result.append(f"{n:04d}-{i:06d}-" + "r" * 180)
            if mode == "arenas":  # a small live object beside each: no pool ever empties
                keep.append(f"{n:04d}-{i:06d}-" + "k" * 180)
        store[f"job-{n}"] = {"status": "done", "result": result}
    held = [job["result"] for job in store.values()] if mode == "kept" else []
    gc.collect()
    usage = psutil.Process().memory_info().rss // 2**20
    manager.load_policy(
        f'[memory]\\nscope = "process"\\nlimit = "{usage + 200}MB"\\n'
        f'warning = "{usage - 20}MB"\\nemergency = "{usage - 10}MB"\\n'
        f'emergency_target = "{usage - 40}MB"\\ncritical = "{usage + 100}MB"\\n')
    report = manager.emergency_cleanup()
    print(json.dumps({"note": report.note, "evicted": report.evicted, "jobs": len(store)}))
''')


def cleanup(mode: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONMALLOC", "MEMGUARD_POLICY")}
    done = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True,
                          text=True, timeout=120, env=env, check=True)
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


def test_results_still_held_by_the_app_are_not_called_fragmentation() -> None:
    result = cleanup("kept")
    note = result["note"]
    assert result["evicted"] >= 20, result
    assert note.startswith("stopped: evicting ~"), note
    assert "still referenced elsewhere" in note
    assert "not freed" in note
    assert "PYTHONMALLOC=malloc lets" not in note and "arenas" not in note


def test_results_freed_among_live_objects_are_pymallocs_arenas() -> None:
    result = cleanup("arenas")
    note = result["note"]
    assert result["evicted"] >= 20, result
    assert note.startswith("stopped: evicting ~"), note
    assert "pymalloc's arenas" in note and "PYTHONMALLOC=malloc lets" in note
    assert "still referenced elsewhere" not in note


def test_results_freed_and_returned_need_no_diagnosis() -> None:
    result = cleanup("freed")
    assert result["evicted"] >= 20 and result["note"] == "", result
