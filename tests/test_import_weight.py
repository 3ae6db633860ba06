"""What `import memguard` costs a process: the modules it loads and the memory they take.

Measured in fresh interpreters, as a user's process would pay it: `import memguard` loads only
the package's own `__init__`, its module class and the version (every public name is imported
on first access); no web, async, TLS, mail or plotting module is loaded by the import or by
ordinary use (a managed store, a touched read, a cleanup pass, a monitor sample); and the RSS
each adds over `import psutil` (which memguard needs anyway) stays within a budget.
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
#: Loaded when first needed, neither by the import nor by ordinary use: the TOML parser (a
#: policy file is read), difflib (an error message suggests a name), json (an error message
#: quotes a value, or a policy file quotes a key) and sysconfig (only where ``sys.abiflags``
#: is missing).
DEFERRED = frozenset({"tomllib", "difflib", "json", "sysconfig"})

#: RSS `import memguard` may add over `python -c "import psutil"` (median of several runs):
#: the goal. Measured 0.46 MiB on Python 3.11 (typing, importlib and memguard's `__init__`).
IMPORT_RSS_BUDGET = 5 * 2**20

#: RSS the USE script below may add over `import psutil`: 7.1 MiB measured on Python 3.11
#: (median of 11 runs, 7.0-7.4), down from 8.5 MiB when the TOML parser, json and sysconfig
#: still loaded on this path. The floor is attrs with the inspect module it loads (about
#: 2.7 MB), logging and typing (about 1.1 MB), pathlib (about 0.5 MB), ctypes (0.3 MB, read at
#: every sample for the heap figure) and memguard's own code (about 2.6 MB, mostly code
#: objects). RSS moves in steps of pymalloc's 1 MiB arenas, and on a loaded machine the
#: median read 8.2-8.3 MiB twice (the monitor's thread runs a sample more or less before the
#: figure is taken): the budget leaves two arenas.
USE_RSS_BUDGET = 9 * 2**20

#: What `import memguard` itself may load of memguard: everything else waits for first use.
AT_IMPORT = frozenset({"memguard", "memguard._package", "memguard._version"})

USE = textwrap.dedent("""
    import sys
    before = set(sys.modules)
    import memguard
    after_import = set(sys.modules) - before
    own_at_import = sorted(name for name in after_import if name.startswith("memguard"))

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
    import json  # only now: json is in DEFERRED, which ordinary use must not load
    top = lambda names: sorted({name.split(".")[0] for name in names})
    print(json.dumps({"import": top(after_import), "use": top(after_use),
                      "own_at_import": own_at_import}))
""")


def test_import_and_ordinary_use_load_no_heavy_module() -> None:
    done = subprocess.run([sys.executable, "-c", USE], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    loaded = json.loads(done.stdout)
    assert sorted((HEAVY | DEFERRED | {"attrs", "logging"}) & set(loaded["import"])) == []
    assert loaded["own_at_import"] == sorted(AT_IMPORT)
    assert sorted((HEAVY | DEFERRED) & set(loaded["use"])) == []


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
                              check=True, timeout=60).stdout.splitlines()[-1])


def _median_added(statement: str) -> tuple[float, list[float]]:
    deltas = [_rss_after(statement) - _rss_after("pass") for _ in range(5)]
    return statistics.median(deltas), [round(delta / 2**20, 2) for delta in deltas]


def test_import_adds_little_memory() -> None:
    added, runs = _median_added("import memguard")
    assert added <= IMPORT_RSS_BUDGET, (
        f"import memguard adds {added / 2**20:.2f} MiB of RSS (runs: {runs}); budget "
        f"{IMPORT_RSS_BUDGET / 2**20:.0f} MiB")


def test_ordinary_use_adds_a_bounded_amount_of_memory() -> None:
    added, runs = _median_added(USE)
    assert added <= USE_RSS_BUDGET, (
        f"ordinary use adds {added / 2**20:.2f} MiB of RSS (runs: {runs}); budget "
        f"{USE_RSS_BUDGET / 2**20:.0f} MiB")
