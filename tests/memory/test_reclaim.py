"""Real memory, in a fresh interpreter: `reclaim()` gives freed results back to the system.

The child fills ~200 MB with AI-sized strings (20 KB to 2 MB, log-uniform, so about 40% of
them live in malloc's heap below the 128 KB mmap threshold) with a small survivor allocated
after each string, as a web app's bookkeeping would be. Freeing the strings leaves holes between
the survivors that glibc does not return by itself; `reclaim()` (gc + malloc_trim) must.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

MiB = 2**20
ROOT = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent(
    """
    import json, math, random, sys
    sys.path.insert(0, sys.argv[1])
    from memguard.memory import ProcessProbe, reclaim
    from memguard.memory.allocators import heap_bytes

    probe = ProcessProbe(swap=False)
    reclaim()
    base = probe()
    rng = random.Random(20240501)
    results, survivors, total = [], [], 0
    while total < 200 * 2**20:
        size = int(math.exp(rng.uniform(math.log(20 * 2**10), math.log(2 * 2**20))))
        tag = "%08d" % len(results)
        results.append(tag * (size // 8))          # a str of `size` characters
        survivors.append(("job-%06d" % len(results)).encode() * 100)  # 1 KB, kept
        total += size
    peak = probe()
    del results
    freed = probe()
    outcome = reclaim()
    after = probe()
    print(json.dumps({
        "strings_bytes": total,
        "base_rss": base.rss, "peak_rss": peak.rss, "freed_rss": freed.rss,
        "after_rss": after.rss,
        "base_heap": base.heap, "peak_heap": peak.heap, "after_heap": after.heap,
        "heap_now": heap_bytes(), "trimmed": outcome.trimmed, "seconds": outcome.seconds,
        "survivors": len(survivors),
    }))
    """
)


@pytest.mark.slow
def test_reclaim_gives_back_freed_strings() -> None:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(ROOT)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    r = json.loads(done.stdout)
    growth = r["peak_rss"] - r["base_rss"]
    fell = r["peak_rss"] - r["after_rss"]
    numbers = (
        f"strings {r['strings_bytes'] / MiB:.1f} MiB; rss base {r['base_rss'] / MiB:.1f}, "
        f"peak {r['peak_rss'] / MiB:.1f}, after del {r['freed_rss'] / MiB:.1f}, "
        f"after reclaim {r['after_rss'] / MiB:.1f} MiB; growth {growth / MiB:.1f}, "
        f"fell {fell / MiB:.1f} MiB ({fell / growth:.0%}); trimmed={r['trimmed']} "
        f"in {r['seconds'] * 1000:.1f} ms"
    )
    assert growth >= 180 * MiB, "the strings did not make RSS grow: " + numbers
    assert fell >= 0.8 * growth, "reclaim gave back too little: " + numbers
    if r["peak_heap"] is not None:  # glibc: the heap figure tracks the strings both ways
        heap_growth = r["peak_heap"] - r["base_heap"]
        heap_fell = r["peak_heap"] - r["after_heap"]
        heap_numbers = (
            f"heap base {r['base_heap'] / MiB:.1f}, peak {r['peak_heap'] / MiB:.1f}, "
            f"after {r['after_heap'] / MiB:.1f} MiB; " + numbers
        )
        assert heap_growth >= 0.95 * r["strings_bytes"], heap_numbers
        assert heap_fell >= 0.95 * r["strings_bytes"], heap_numbers
