"""Allocator detection and reclaim's hook, in real interpreters started with each allocator.

Each case runs a fresh ``python`` with the environment that selects the allocator
(``PYTHONMALLOC``, ``LD_PRELOAD`` of Debian's libjemalloc2) and asks `detect_allocator()` and
`reclaim()` what they see and do. The jemalloc case also frees ~300 MB of small objects with
jemalloc's own decay switched off, so only the purge `reclaim()` calls can give them back.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Optional

import attrs
import pytest
from system_packages import jemalloc, missing

from memguard.memory.allocators import (
    MALLOCS,
    NO_HOOK,
    SMALL_OBJECT_ALLOCATORS,
    TRIMS,
    Allocator,
    detect_allocator,
)
from memguard.memory.reclaim import Reclaim, reclaim

MiB = 2**20
ROOT = Path(__file__).resolve().parents[2]
JEMALLOC = jemalloc() or "/usr/lib/<arch>/libjemalloc.so.2"


@pytest.fixture
def needs_jemalloc() -> None:
    """Debian's libjemalloc2, preloaded by the test's interpreters."""
    if not sys.platform.startswith("linux"):
        pytest.skip("LD_PRELOAD of libjemalloc.so.2: Linux only")
    if jemalloc() is None:
        missing("Debian's libjemalloc2 (/usr/lib/*/libjemalloc.so.2)", "libjemalloc2")

CHILD = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, sys.argv[1])
    from memguard.memory import ProcessProbe, reclaim
    from memguard.memory.allocators import detect_allocator, heap_bytes

    count = int(sys.argv[2])
    probe = ProcessProbe(swap=False, heap=False)
    reclaim()
    base, heap_base = probe().rss, heap_bytes()
    # Small objects only: dicts, short strings and small lists (all under 512 bytes).
    data = [{"id": i, "name": "item-%d" % i, "tags": ["a", "t%d" % i]} for i in range(count)]
    peak, heap_peak = probe().rss, heap_bytes()
    del data
    import gc
    gc.collect()
    freed = probe().rss
    outcome = reclaim()
    after, heap_after = probe().rss, heap_bytes()
    print(json.dumps({"allocator": detect_allocator().to_dict(), "reclaim": outcome.to_dict(),
                      "base": base, "peak": peak, "freed": freed, "after": after,
                      "heap_base": heap_base, "heap_peak": heap_peak, "heap_after": heap_after}))
    """
)


def run_child(env: dict[str, str], *, count: int = 1000,
              flags: tuple[str, ...] = ()) -> dict[str, Any]:
    """Run CHILD in a fresh interpreter whose allocator `env` selects; its JSON report."""
    clean = {k: v for k, v in os.environ.items()
             if k not in ("PYTHONMALLOC", "LD_PRELOAD", "MALLOC_CONF", "PYTHONDEVMODE")}
    done = subprocess.run([sys.executable, *flags, "-c", CHILD, str(ROOT), str(count)],
                          env={**clean, **env}, capture_output=True, text=True, timeout=180,
                          check=False)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def figures(r: dict[str, Any]) -> str:
    return ", ".join(f"{name} {r[name] / MiB:.0f} MiB" for name in ("base", "peak", "freed",
                                                                     "after"))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc")
def test_default_is_pymalloc_over_glibc_with_malloc_trim() -> None:
    r = run_child({})
    assert r["allocator"]["small_objects"] == "pymalloc"
    assert r["allocator"]["malloc"] == "glibc"
    assert r["allocator"]["trim"] == "malloc_trim"
    assert r["allocator"]["malloc_version"][:2] == "2."
    assert os.path.basename(r["allocator"]["library"]).startswith("libc.")
    assert r["reclaim"]["mechanism"] == "malloc_trim"
    assert r["reclaim"]["trimmed"] is True
    assert r["allocator"]["summary"].startswith("pymalloc over glibc 2.")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc")
def test_pythonmalloc_malloc_is_detected() -> None:
    r = run_child({"PYTHONMALLOC": "malloc"})
    assert r["allocator"]["small_objects"] == "malloc"
    assert r["allocator"]["malloc"] == "glibc"
    assert r["reclaim"]["mechanism"] == "malloc_trim"
    # PYTHONMALLOC=malloc_debug: the debug hooks over malloc, still malloc underneath.
    assert run_child({"PYTHONMALLOC": "malloc_debug"})["allocator"]["small_objects"] == "malloc"


def test_ignored_environment_is_not_believed() -> None:
    """With -E the interpreter ignores PYTHONMALLOC, and so does the detection."""
    r = run_child({"PYTHONMALLOC": "malloc"}, flags=("-E",))
    assert r["allocator"]["small_objects"] == "pymalloc"


def _interpreter_has_mimalloc() -> bool:
    done = subprocess.run([sys.executable, "-c", "pass"], capture_output=True, timeout=60,
                          env={**os.environ, "PYTHONMALLOC": "mimalloc"}, check=False)
    return done.returncode == 0


def test_mimalloc_where_the_interpreter_has_it() -> None:
    if not _interpreter_has_mimalloc():
        # This interpreter refuses PYTHONMALLOC=mimalloc at startup (CPython < 3.13), so no
        # running process can be under it: the detection never has to tell it apart.
        pytest.skip(f"Python {sys.version_info[:2]} has no mimalloc")
    r = run_child({"PYTHONMALLOC": "mimalloc"})
    assert r["allocator"]["small_objects"] == "mimalloc"


@pytest.mark.usefixtures("needs_jemalloc")
def test_jemalloc_preloaded_is_detected_and_purged() -> None:
    r = run_child({"LD_PRELOAD": JEMALLOC})
    assert r["allocator"]["small_objects"] == "pymalloc"
    assert r["allocator"]["malloc"] == "jemalloc"
    assert r["allocator"]["library"] == JEMALLOC
    assert r["allocator"]["malloc_version"].startswith("5.")
    assert r["allocator"]["trim"] == "jemalloc_purge"
    assert r["reclaim"] == {**r["reclaim"], "mechanism": "jemalloc_purge", "trimmed": True}


@pytest.mark.slow
@pytest.mark.usefixtures("needs_jemalloc")
def test_jemalloc_purge_gives_small_objects_back() -> None:
    """Small objects from jemalloc (PYTHONMALLOC=malloc), its decay off: only the purge frees.

    ``dirty_decay_ms:-1,muzzy_decay_ms:-1`` makes jemalloc keep freed pages forever on its
    own, so RSS after ``del`` + ``gc.collect()`` stays up, and what falls after `reclaim()` is
    the purge's doing (glibc's malloc_trim, which memguard used to call here, touches only
    glibc's unused heap).
    """
    r = run_child({"LD_PRELOAD": JEMALLOC, "PYTHONMALLOC": "malloc",
                   "MALLOC_CONF": "dirty_decay_ms:-1,muzzy_decay_ms:-1"}, count=600_000)
    assert r["allocator"]["small_objects"] == "malloc"
    assert r["allocator"]["malloc"] == "jemalloc"
    assert r["reclaim"]["mechanism"] == "jemalloc_purge"
    growth = r["peak"] - r["base"]
    assert growth >= 200 * MiB, "the objects did not make RSS grow: " + figures(r)
    assert r["peak"] - r["freed"] < 0.25 * growth, "jemalloc returned memory by itself, so " \
        "this test cannot tell what the purge did: " + figures(r)
    assert r["peak"] - r["after"] >= 0.8 * growth, "the purge gave back too little: " + \
        figures(r)
    # The heap figure is jemalloc's stats.allocated there: it follows the objects both ways
    # (glibc's mallinfo2 would have stayed near zero, describing glibc's unused heap).
    heap = (r["heap_base"], r["heap_peak"], r["heap_after"])
    assert heap[1] - heap[0] >= 0.6 * growth, f"heap {heap} did not follow the objects"
    assert heap[1] - heap[2] >= 0.9 * (heap[1] - heap[0]), f"heap {heap} did not fall"


def test_this_process_and_reclaim_agree() -> None:
    found = detect_allocator()
    assert detect_allocator() is found  # detected once per process
    assert found.small_objects in SMALL_OBJECT_ALLOCATORS
    assert found.malloc in MALLOCS
    assert found.trim in TRIMS
    outcome = reclaim(full=False)
    assert outcome.mechanism == found.trim
    assert outcome.trimmed == (found.trim != NO_HOOK)
    assert json.loads(json.dumps(found.to_dict())) == found.to_dict()


@pytest.mark.parametrize(("field", "value"), [("small_objects", "tcmalloc"),
                                              ("malloc", "musl"), ("trim", "madvise")])
def test_allocator_rejects_unknown_names(field: str, value: str) -> None:
    good = Allocator(small_objects="pymalloc", malloc="glibc", trim="malloc_trim")
    with pytest.raises(ValueError, match=f"{field} must be one of .*'{value}'"):
        attrs.evolve(good, **{field: value})


@pytest.mark.parametrize(("allocator", "line"), [
    (Allocator("pymalloc", "glibc", "malloc_trim", "2.36"),
     "pymalloc over glibc 2.36 malloc; reclaim: malloc_trim(0); small objects: empty arenas "
     "only"),
    (Allocator("malloc", "jemalloc", "jemalloc_purge", "5.3.0-0-g54eaed1d8b56"),
     "malloc over jemalloc 5.3.0 malloc; reclaim: mallctl arena.<all>.purge"),
    (Allocator("pymalloc", "other", NO_HOOK, None),
     "pymalloc over other malloc; reclaim: no hook; small objects: empty arenas only"),
    (Allocator("mimalloc", "glibc", "malloc_trim", "2.36"),
     "mimalloc over glibc 2.36 malloc; reclaim: malloc_trim(0); Python objects: no hook"),
])
def test_describe_says_the_hook_plainly(allocator: Allocator, line: Optional[str]) -> None:
    assert allocator.describe() == line
    assert allocator.to_dict()["summary"] == line


def test_reclaim_without_mechanism_keeps_its_old_constructor() -> None:
    assert Reclaim(collected=1, trimmed=False, seconds=0.0).mechanism == NO_HOOK


SERVER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, sys.argv[1])
    from wsgiref.simple_server import WSGIRequestHandler, make_server
    from memguard import MemoryManager
    from memguard.web import wsgi_app

    class Quiet(WSGIRequestHandler):
        def log_message(self, *args):
            pass

    server = make_server("127.0.0.1", 0, wsgi_app(MemoryManager()), handler_class=Quiet)
    print(server.server_port, flush=True)
    server.handle_request()  # GET /memory from the first memguard health
    server.handle_request()  # and from the second (--json)
    """
)


@pytest.mark.usefixtures("needs_jemalloc")
def test_memory_endpoint_and_health_show_the_apps_allocator() -> None:
    """An app under jemalloc with PYTHONMALLOC=malloc; the CLI (plain glibc) reports the app's."""
    clean = {k: v for k, v in os.environ.items()
             if k not in ("PYTHONMALLOC", "LD_PRELOAD", "MALLOC_CONF")
             and not k.startswith("MEMGUARD_")}
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(ROOT)], stdout=subprocess.PIPE, text=True,
        env={**clean, "LD_PRELOAD": JEMALLOC, "PYTHONMALLOC": "malloc"})
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        url = f"http://127.0.0.1:{port}/memory"
        expected = re.compile(r"allocator: malloc over jemalloc 5\.\d+\.\d+ malloc; "
                              r"reclaim: mallctl arena\.<all>\.purge")

        def health(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-m", "memguard.tools.cli", "health",
                                   "--url", url,
                                   *args], capture_output=True, text=True, timeout=60,
                                  env=clean, cwd=ROOT, check=False)

        text = health()
        assert text.returncode == 0, text.stderr
        assert any(expected.fullmatch(line) for line in text.stdout.splitlines()), text.stdout
        as_json = health("--json")
        assert as_json.returncode == 0, as_json.stderr
        assert expected.fullmatch(json.loads(as_json.stdout)["note"])
        assert server.wait(timeout=30) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=30)


def test_memory_payload_carries_the_detection() -> None:
    from memguard import MemoryManager
    from memguard.web.payloads import memory_payload

    payload = memory_payload(MemoryManager())
    assert payload["allocator"] == detect_allocator().to_dict()
    assert json.loads(json.dumps(payload))["allocator"]["trim"] in TRIMS
