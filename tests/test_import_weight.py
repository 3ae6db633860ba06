"""What `import memguard` costs a process: the modules it loads and the memory they take.

Measured in fresh interpreters, as a user's process would pay it: no web, async, TLS, mail or
plotting module is loaded by the import or by ordinary use (a managed store, a touched read,
a monitor sample); the RSS the import adds over `import psutil` (which memguard needs anyway)
stays within a budget.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import textwrap

#: Top-level modules a memory tool has no business loading on its own: web frameworks and
#: servers, asyncio and what it drags in (ssl, socket, email, zipfile through wrapt's
#: importer), plotting, and OpenSSL through hashlib.
HEAVY = frozenset({
    "asyncio", "ssl", "socket", "email", "http", "zipfile", "csv", "wrapt", "hashlib",
    "matplotlib", "numpy", "flask", "werkzeug", "fastapi", "starlette", "uvicorn", "django",
    "gunicorn", "prometheus_client", "rich", "httpx", "redis",
})
#: Loaded when first needed, not by the import: the TOML parser (a policy is read) and difflib
#: (an error message suggests a name).
DEFERRED = frozenset({"tomllib", "difflib"})

#: RSS `import memguard` may add over `python -c "import psutil"` (median of several runs).
#: The goal is 5 MB; the floor here is attrs (about 2.7 MB with the inspect module it loads),
#: logging and typing (about 1.1 MB) and memguard's own code (about 3 MB): 6.8 MiB measured on
#: Python 3.11, down from 17.1 MiB before wrapt, hashlib, socket, tomllib and difflib were
#: deferred to first use (RSS moves in steps of pymalloc's 1 MiB arenas). The budget leaves one
#: arena of room.
IMPORT_RSS_BUDGET = 8 * 2**20

USE = textwrap.dedent("""
    import json, sys
    before = set(sys.modules)
    import memguard
    after_import = set(sys.modules) - before

    @memguard.managed_store(name="jobs", mapping="jobs", max_jobs=10)
    class Jobs:
        def __init__(self):
            self.jobs = {}

        @memguard.touches
        def get(self, job_id):
            return self.jobs.get(job_id)

    store = Jobs()
    for number in range(20):
        store.jobs[number] = {"status": "done", "result": "x" * 1000}
    store.get(19)
    memguard.manager.run_cleanup()
    memguard.manager.start()
    memguard.manager.get_memory_stats()
    memguard.manager.stop()
    assert len(store.jobs) == 10, len(store.jobs)
    after_use = set(sys.modules) - before
    top = lambda names: sorted({name.split(".")[0] for name in names})
    print(json.dumps({"import": top(after_import), "use": top(after_use)}))
""")


def test_import_and_ordinary_use_load_no_heavy_module() -> None:
    done = subprocess.run([sys.executable, "-c", USE], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout)
    assert sorted((HEAVY | DEFERRED) & set(loaded["import"])) == []
    assert sorted(HEAVY & set(loaded["use"])) == []


def test_a_wrapt_served_accessor_still_touches_after_the_deferred_import() -> None:
    """`@touches` on a callable object goes through wrapt, imported at that first use."""
    script = textwrap.dedent("""
        import sys
        import memguard

        class Reader:
            def __call__(self, job_id):
                return job_id

        assert "wrapt" not in sys.modules
        read = memguard.touches(Reader(), store="nowhere")
        assert "wrapt" in sys.modules
        print(read(7))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "7"


def _rss_after(statement: str) -> int:
    code = f"import psutil\n{statement}\nprint(psutil.Process().memory_info().rss)"
    return int(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              check=True, timeout=60).stdout)


def test_import_adds_little_memory() -> None:
    deltas = [_rss_after("import memguard") - _rss_after("pass") for _ in range(5)]
    added = statistics.median(deltas)
    assert added <= IMPORT_RSS_BUDGET, (
        f"import memguard adds {added / 2**20:.2f} MiB of RSS (runs: "
        f"{[round(delta / 2**20, 2) for delta in deltas]}); budget "
        f"{IMPORT_RSS_BUDGET / 2**20:.0f} MiB")
