"""Regression tests for issue 12: forks, hostile stores, hostile input, work under locks.

Each test names the numbered item of the issue it guards. Work is asserted by counting
calls (of the active predicate, of a container's iterator), never by timing.
"""

from __future__ import annotations

import collections
import copy
import gc
import http.client
import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any, Callable
from wsgiref.simple_server import WSGIRequestHandler, make_server

import hypothesis.strategies as st
import pytest
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from memguard import MemoryManager, Policy, PolicyError, handle, load_policy, managed_store
from memguard.errors import StoreDefinitionError
from memguard.index import job_index as tracking
from memguard.index.estimate import MAX_OBJECTS, estimate_size
from memguard.index.job_index import PARK_AFTER, RECHECK_PER_PASS
from memguard.index.orders import Epoch
from memguard.testing import FakeClock, capture_evictions
from memguard.web.wsgi import wsgi_app

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def manager() -> MemoryManager:
    return MemoryManager(Policy(), clock=FakeClock(0.0))


class Counting:
    """The default active predicate (a `status` of queued/running...), counting its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, job: Any) -> bool:
        self.calls += 1
        return job.get("status") in ("queued", "running")


def counted_store(manager: MemoryManager, **options: Any) -> tuple[Any, Counting]:
    active = Counting()

    @managed_store(manager=manager, active=active, **options)
    class Jobs(dict):  # type: ignore[type-arg]
        pass

    return Jobs(), active


# -- 1. fork ---------------------------------------------------------------------------------

FORK_SCRIPT = textwrap.dedent(
    """
    import json, os, signal, sys, threading, time
    sys.path.insert(0, sys.argv[1])
    from memguard import MemoryManager, Policy, handle, managed_store

    manager = MemoryManager(Policy())

    @managed_store(manager=manager, max_jobs=50)
    class Jobs(dict):
        pass

    store = Jobs()
    h = handle(store)
    stop = threading.Event()

    def inserter():
        i = 0
        while not stop.is_set():
            store[f"job{i % 500}"] = {"status": "done" if i % 3 else "running", "result": "x"}
            i += 1

    def cleaner():
        while not stop.is_set():
            h.cleanup()

    def holder():  # a user's `with handle.lock` around some work
        while not stop.is_set():
            with h.lock:
                time.sleep(0.001)

    def registrar():  # new stores register with the manager under its lock
        while not stop.is_set():
            Jobs()

    threads = [threading.Thread(target=t, daemon=True)
               for t in (inserter, inserter, cleaner, holder, registrar)]
    for thread in threads:
        thread.start()
    time.sleep(0.05)
    children = []
    for n in range(20):
        time.sleep(0.005)
        if n % 5 == 4:  # also fork from inside a held store lock
            with h.lock:
                pid = os.fork()
        else:
            pid = os.fork()
        if pid == 0:
            signal.alarm(10)  # a hung child dies (SIGALRM) instead of hanging the test
            store[f"child{n}"] = {"status": "done", "result": "y"}
            written = f"child{n}" in store and f"child{n}" in h.index
            h.cleanup()
            h.stats()
            Jobs()["x"] = {"status": "done"}
            os._exit(0 if written else 2)
        children.append(pid)
    stop.set()
    results = {}
    deadline = time.monotonic() + 30
    pending = set(children)
    while pending and time.monotonic() < deadline:
        for pid in list(pending):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                results[pid] = os.waitstatus_to_exitcode(status)
                pending.discard(pid)
        time.sleep(0.01)
    for pid in pending:  # overran: kill and reap
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        results[pid] = "hung"
    print(json.dumps(sorted(results.values(), key=str)))
    """
)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_item1_children_forked_while_threads_hold_store_locks_can_write(tmp_path: Path) -> None:
    script = tmp_path / "fork_child.py"
    script.write_text(FORK_SCRIPT)
    result = subprocess.run([sys.executable, str(script), str(ROOT)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == [0] * 20


# -- 3. inserts and passes with many active jobs ---------------------------------------------


def test_item3_inserts_into_a_store_full_of_active_jobs_do_bounded_work(
        manager: MemoryManager) -> None:
    per_insert = []
    for count in (1000, 4000):
        store, active = counted_store(manager, max_jobs=10)
        for i in range(count):
            store[i] = {"status": "queued"}
        per_insert.append(active.calls / count)
        assert len(store) == count  # nothing evictable: every job is active
    # the work per insert does not grow with the number of active jobs ...
    assert per_insert[1] <= per_insert[0] + 1
    # ... and is bounded by the jobs a scan steps over before parking the others
    assert per_insert[1] <= PARK_AFTER + 8


def test_item3_passes_over_active_jobs_look_at_a_bounded_batch(manager: MemoryManager) -> None:
    store, active = counted_store(manager, max_jobs=10, max_age="1m")
    for i in range(4000):
        store[i] = {"status": "running"}
    manager.clock.advance(3600)  # type: ignore[attr-defined]
    active.calls = 0
    handle(store).cleanup()
    assert active.calls <= RECHECK_PER_PASS + 2 * PARK_AFTER + 8
    assert len(store) == 4000


def test_item3_jobs_that_finish_in_place_are_evicted_within_bounded_passes(
        manager: MemoryManager) -> None:
    store, _ = counted_store(manager, max_jobs=10)
    for i in range(4000):
        store[i] = {"status": "queued"}
    for job in store.values():
        job["status"] = "done"  # in place, as apps do: no write memguard sees
    handle(store).cleanup()  # finished jobs do not count against the pass's batch
    assert len(store) == 10
    assert handle(store).stats().active == 0


def test_item3_a_small_store_keeps_its_exact_lru_order(manager: MemoryManager) -> None:
    store, _ = counted_store(manager, max_jobs=3)
    running = {"status": "running"}
    store["run"] = running
    store["a"] = {"status": "done"}
    store["b"] = {"status": "done"}
    running["status"] = "done"  # finished in place, least recently used
    store["c"] = {"status": "done"}
    assert sorted(store) == ["a", "b", "c"]


def test_item3_the_recheck_order_does_not_grow_without_passes(manager: MemoryManager) -> None:
    store, _ = counted_store(manager)  # no bound, no pass: nothing ever re-checks
    for i in range(10_000):
        store[i] = {"status": "running"}
        store[i] = {"status": "done"}  # finished by a rewrite
    index = handle(store).index
    assert len(index.known_active) == 0
    assert len(index.rotation) <= 64


# -- 4. stats without a scan -----------------------------------------------------------------


def test_item4_stats_call_no_predicate(manager: MemoryManager) -> None:
    store, active = counted_store(manager)
    for i in range(5000):
        store[i] = {"status": "running" if i % 10 else "done", "result": "x"}
    handle(store).pin(1)
    handle(store).pin("absent")
    active.calls = 0
    stats = handle(store).stats()
    assert active.calls == 0
    assert (stats.jobs, stats.active, stats.pinned) == (5000, 4500, 1)


def test_item4_the_http_endpoints_call_no_predicate(manager: MemoryManager) -> None:
    from memguard.testing import FakeProbe

    probed = MemoryManager(Policy(), clock=FakeClock(0.0), probe=FakeProbe("300MB", "512MB"))
    store, active = counted_store(probed)
    for i in range(2000):
        store[i] = {"status": "running" if i % 2 else "done", "result": "x"}
    app = wsgi_app(probed)
    active.calls = 0
    statuses: list[str] = []
    for path in ("/memory", "/metrics", "/health"):
        body = b"".join(app({"PATH_INFO": path, "REQUEST_METHOD": "GET"},
                            lambda status, headers: statuses.append(status)))
        assert statuses[-1].startswith("200"), (path, statuses, body[:200])
    assert active.calls == 0


def test_item4_stats_of_an_adopted_plain_dict_do_not_walk_it(manager: MemoryManager) -> None:
    jobs: dict[str, Any] = {"a": {"status": "done"}}
    store_handle = manager.setup_job_store_cleanup(jobs, "plain")
    jobs.update({f"k{i}": {"status": "done"} for i in range(100)})
    assert store_handle.stats().jobs == 101  # the dict's own length, no reconcile


# -- 5. a status that raises ----------------------------------------------------------------


class Broken(dict):  # type: ignore[type-arg]
    def get(self, key: Any, default: Any = None) -> Any:
        raise RuntimeError("status service down")


def test_item5_a_raising_status_warns_once_per_job_and_does_not_pin_it(
        manager: MemoryManager, caplog: pytest.LogCaptureFixture) -> None:
    @managed_store(manager=manager, max_jobs=10)
    class Jobs(dict):  # type: ignore[type-arg]
        pass

    store = Jobs()
    caplog.set_level(logging.WARNING, logger="memguard")
    for i in range(300):
        store[f"broken{i}"] = Broken(result="x")
    for i in range(300):
        store[f"ok{i}"] = {"status": "done"}
    handle(store).stats()
    handle(store).cleanup()
    records = [r for r in caplog.records if "active predicate raised" in r.getMessage()]
    assert len(records) == 300  # one per job, not one per look
    assert all(r.exc_info is None for r in records)  # no traceback
    assert len(store) == 10  # they count as not active: the bound holds


# -- 6. the index follows what the class stored --------------------------------------------


def test_item6_a_class_that_normalises_keys_is_indexed_and_bounded(
        manager: MemoryManager) -> None:
    @managed_store(manager=manager, max_jobs=5)
    class Lower(dict):  # type: ignore[type-arg]
        def __setitem__(self, key: str, value: Any) -> None:
            super().__setitem__(key.lower(), value)

    store = Lower()
    for i in range(50):
        store[f"JOB{i}"] = {"status": "done"}
    assert len(store) == 5
    assert sorted(handle(store).index.keys()) == sorted(store)


def test_item6_a_refused_write_leaves_no_ghost(manager: MemoryManager) -> None:
    @managed_store(manager=manager, max_jobs=2)
    class Picky(dict):  # type: ignore[type-arg]
        def __setitem__(self, key: str, value: Any) -> None:
            if not key.startswith("spam"):
                super().__setitem__(key, value)

    store = Picky()
    store["a"] = {"status": "done"}
    store["spam"] = {"status": "done"}
    store["b"] = {"status": "done"}
    assert sorted(store) == ["a", "b"]  # the ghost did not push "a" out
    assert sorted(handle(store).index.keys()) == ["a", "b"]


def test_item6_an_undecorated_subclass_writing_through_dict_is_followed(
        manager: MemoryManager) -> None:
    @managed_store(manager=manager, max_jobs=3)
    class Base(dict):  # type: ignore[type-arg]
        pass

    class Sub(Base):
        def update(self, *args: Any, **kwargs: Any) -> None:
            dict.update(self, *args, **kwargs)

        def __setitem__(self, key: Any, value: Any) -> None:
            dict.__setitem__(self, key, value)

    store = Sub()
    store.update({f"u{i}": {"status": "done"} for i in range(10)})
    for i in range(10):
        store[f"s{i}"] = {"status": "done"}
    assert len(store) == 3
    assert sorted(handle(store).index.keys()) == sorted(store)


def test_item6_a_mapping_class_that_refuses_leaves_no_ghost(manager: MemoryManager) -> None:
    @managed_store(manager=manager, max_jobs=2)
    class Picky(MutableMapping):  # type: ignore[type-arg]
        def __init__(self) -> None:
            self.data: dict[Any, Any] = {}

        def __getitem__(self, key: Any) -> Any:
            return self.data[key]

        def __setitem__(self, key: Any, value: Any) -> None:
            if key != "spam":
                self.data[key] = value

        def __delitem__(self, key: Any) -> None:
            del self.data[key]

        def __iter__(self) -> Iterator[Any]:
            return iter(list(self.data))

        def __len__(self) -> int:
            return len(self.data)

    store = Picky()
    store["a"] = {"status": "done"}
    store["spam"] = {"status": "done"}
    store["b"] = {"status": "done"}
    assert sorted(store) == ["a", "b"]
    assert sorted(handle(store).index.keys()) == ["a", "b"]


# -- 7. OrderedDict and UserDict bases --------------------------------------------------------


def test_item7_an_ordered_dict_store(manager: MemoryManager) -> None:
    @managed_store(manager=manager, max_jobs=2)
    class Ordered(collections.OrderedDict):  # type: ignore[type-arg]
        pass

    store = Ordered()
    for key in "abc":
        store[key] = {"status": "done"}
    assert list(store) == ["b", "c"]
    store.move_to_end("b")
    assert store.popitem(last=False)[0] == "c"
    assert handle(store).index.keys() == ["b"]


def test_item7_copies_of_a_user_dict_store_are_stores_of_their_own(
        manager: MemoryManager) -> None:
    @managed_store(manager=manager, max_jobs=5)
    class Jobs(collections.UserDict):  # type: ignore[type-arg]
        pass

    store = Jobs()
    store["a"] = {"status": "done"}
    for made in (store.copy(), copy.copy(store)):
        assert dict(made) == {"a": {"status": "done"}}
        assert handle(made) is not handle(store)
        made["b"] = {"status": "done"}
        assert sorted(handle(made).index.keys()) == ["a", "b"]
        assert list(store) == ["a"] and handle(store).index.keys() == ["a"]


# -- 8. adopted plain dicts -----------------------------------------------------------------


def test_item8_forget_unregisters_an_adopted_dict(manager: MemoryManager) -> None:
    jobs: dict[str, Any] = {}
    manager.setup_job_store_cleanup(jobs, "plain")
    assert [h.name for h in manager.handles()] == ["plain"]
    assert manager.forget(jobs) is True
    assert manager.handles() == [] and manager.stores == {}
    assert manager.forget(jobs) is False
    with pytest.raises(TypeError):
        handle(jobs)


def test_item8_dropped_plain_dicts_do_not_pile_up(manager: MemoryManager) -> None:
    for i in range(2000):
        manager.setup_job_store_cleanup({"k": {"status": "done"}}, f"plain{i % 7}")
    kept: dict[str, Any] = {}
    manager.setup_job_store_cleanup(kept, "kept")
    gc.collect()
    manager.run_cleanup()
    assert [h.name for h in manager.handles()] == ["kept"]
    assert len(manager._plain) == 1


# -- 9. hostile policy input ------------------------------------------------------------------

HUGE = str(10**400)


@pytest.mark.parametrize(("text", "key", "line"), [
    (f"[defaults]\nmax_age = {HUGE}\n", "defaults.max_age", 2),
    (f"[memory]\nlimit = {HUGE}\n", "memory.limit", 2),
    (f"[memory]\ncheck_interval = {HUGE}\n", "memory.check_interval", 2),
    ("[memory]\nlimit = " + "1" + "0" * 30 + "\n", "memory.limit", 2),
    ("[defaults]\nmax_age = 1e300\n", "defaults.max_age", 2),
    ("[defaults]\nmax_jobs = " + "9" * 5000 + "\n", "defaults.max_jobs", 2),
    ("[defaults]\nmax_jobs = " + "9" * 40 + "\n", "defaults.max_jobs", 2),
    ("[defaults]\nrelease = " + "[" * 3000 + "]" * 3000 + "\n", "defaults.release", 2),
    ("[defaults]\nactive = " + "{a = " * 3000 + "1" + "}" * 3000 + "\n", "defaults.active", 2),
    ("[defaults]\n\nmax_age = '\u0663\u0660m'\n", "defaults.max_age", 3),
    ("[memory]\nlimit = '\uff15\uff11\uff12MB'\n", "memory.limit", 2),
    ('[memory]\nwarning = "99999999999999999999999999999999999999999%"\nlimit = "1GB"\n',
     "memory.warning", 2),
])  # fmt: skip
def test_item9_hostile_values_are_one_policy_error(text: str, key: str, line: int) -> None:
    with pytest.raises(PolicyError) as caught:
        load_policy(text, environ={})
    error = caught.value
    assert (error.source, error.line, error.key) == ("<string>", line, key)
    assert len(str(error)) < 500 and "\n" not in str(error)


@pytest.mark.parametrize("environ", [
    {"MEMGUARD_MEMORY_LIMIT": HUGE}, {"MEMGUARD_CHECK_INTERVAL": HUGE},
    {"JOB_RETENTION_MINUTES": "\u0663\u0660"}, {"JOB_RETENTION_MINUTES": "1e300"},
    {"MAX_JOBS_PER_STORE": "9" * 5000}, {"MAX_JOBS_PER_STORE": "\uff15\uff10"},
    {"MAX_JOBS_PER_STORE": "1_000"},
])  # fmt: skip
def test_item9_hostile_environment_is_one_policy_error(environ: dict[str, str]) -> None:
    with pytest.raises(PolicyError) as caught:
        Policy.default(environ)
    assert caught.value.source == "environment"
    assert caught.value.key == next(iter(environ))


def test_item9_decorator_values_out_of_range_are_store_definition_errors() -> None:
    for options in ({"max_age": 10**400}, {"max_bytes": 10**400}, {"max_jobs": 10**5000}):
        with pytest.raises(StoreDefinitionError, match="too large"):
            managed_store(**options)(type("Jobs", (dict,), {}))


def test_item9_a_policy_accepted_with_the_largest_values_works(manager: MemoryManager) -> None:
    policy = load_policy('[memory]\nlimit = "1048576TB"\ncheck_interval = "36500d"\n'
                         '[defaults]\nmax_jobs = 1000000000000\nmax_age = "36500d"\n',
                         environ={})
    manager.apply_policy(policy)
    assert policy.memory.resolve().emergency == round(2**60 * 0.9)

    @managed_store(manager=manager)
    class Jobs(dict):  # type: ignore[type-arg]
        pass

    store = Jobs()
    store["a"] = {"status": "done"}
    assert manager.run_cleanup().evicted == 0


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_item9_a_fifo_named_toml_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "policy.toml"
    os.mkfifo(fifo)
    outcome: list[BaseException] = []

    def load() -> None:
        try:
            load_policy(fifo)
        except BaseException as error:  # collected and asserted below
            outcome.append(error)

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    thread.join(timeout=30)
    if thread.is_alive():  # unblock the reader before failing
        with open(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK), "w"):
            pass
    assert not thread.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], PolicyError)
    assert "not a regular file" in str(outcome[0]) and str(fifo) in str(outcome[0])


# -- 10. smaller ones -----------------------------------------------------------------------


class SnapshotMapping(MutableMapping):  # type: ignore[type-arg]
    """A MutableMapping whose iteration lists its keys first, as thread-safe ones do."""

    def __init__(self) -> None:
        self.data: dict[Any, Any] = {}

    def __getitem__(self, key: Any) -> Any:
        return self.data[key]

    def __setitem__(self, key: Any, value: Any) -> None:
        self.data[key] = value

    def __delitem__(self, key: Any) -> None:
        del self.data[key]

    def __iter__(self) -> Iterator[Any]:
        return iter(list(self.data))

    def __len__(self) -> int:
        return len(self.data)


def test_item10_views_of_a_mapping_store_skip_jobs_evicted_meanwhile(
        manager: MemoryManager) -> None:
    store = managed_store(manager=manager)(SnapshotMapping)()
    for key in "abcd":
        store[key] = {"status": "done"}
    seen = []
    for key, _job in store.items():
        seen.append(key)
        if key == "a":
            handle(store).evict("c")  # what the monitor does from its thread
    assert seen == ["a", "b", "d"]
    values = iter(store.values())
    next(values)
    handle(store).evict("d")
    assert len(list(values)) == 1


class PausingMapping(SnapshotMapping):
    """Its next read pauses (bounded) after reading, so another thread can act in between."""

    pause: Any = None

    def __getitem__(self, key: Any) -> Any:
        value = self.data[key]
        pause, self.pause = self.pause, None
        if pause is not None:
            entered, resume = pause
            entered.set()
            resume.wait(timeout=2.0)  # with the fix the evictor waits for the lock instead
        return value


@pytest.mark.parametrize("operation", ["pop", "popitem"])
def test_item10_pop_of_a_mapping_store_lets_no_eviction_in_between(
        manager: MemoryManager, operation: str) -> None:
    store = managed_store(manager=manager)(PausingMapping)()
    store["a"] = {"status": "done"}
    entered, resume = threading.Event(), threading.Event()
    store.pause = (entered, resume)
    outcome: list[Any] = []

    def evictor() -> None:  # the monitor's thread, evicting "a" while pop is half-way
        if entered.wait(timeout=30):
            outcome.append(handle(store).evict("a"))
        resume.set()

    thread = threading.Thread(target=evictor)
    thread.start()
    try:
        popped = store.pop("a", None) if operation == "pop" else store.popitem()
    finally:
        resume.set()
        thread.join(timeout=30)
    assert not thread.is_alive()
    assert popped is not None
    assert outcome == [None]  # the eviction came after the pop: nothing left to evict
    assert len(store) == 0 and handle(store).index.keys() == []


def test_item10_pins_of_absent_keys_are_not_counted_and_the_table_shrinks(
        manager: MemoryManager) -> None:
    store, _ = counted_store(manager)
    store["a"] = {"status": "done"}
    h = handle(store)
    h.pin("nobody")
    h.pin("a")
    assert h.stats().pinned == 1
    h.unpin("nobody")
    h.unpin("a")
    before = sys.getsizeof(h.index.pins)
    for i in range(50_000):
        h.pin(i)
    for i in range(50_000):
        h.unpin(i)
    assert h.stats().pinned == 0
    assert sys.getsizeof(h.index.pins) <= before


class CountingList(list):  # type: ignore[type-arg]
    """A container that counts how many of its items were taken."""

    taken = 0

    def __iter__(self) -> Iterator[Any]:
        for item in super().__iter__():
            CountingList.taken += 1
            yield item


def test_item10_the_size_estimate_walks_no_container_whole() -> None:
    CountingList.taken = 0
    big = CountingList(range(2_000_000))
    estimate_size({"result": big})
    assert CountingList.taken <= MAX_OBJECTS + 1
    CountingList.taken = 0
    shared = CountingList(range(1000))  # the same big child under many parents
    estimate_size([[shared] * 1000 for _ in range(1000)])
    assert CountingList.taken <= MAX_OBJECTS + 1


def test_item10_a_negative_size_counts_zero_with_a_warning(
        manager: MemoryManager, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="memguard")
    sizes: Callable[[Any], int] = lambda job: job["size"]  # noqa: E731
    store, _ = counted_store(manager, size=sizes, max_bytes=100)
    store["neg"] = {"status": "done", "size": -10_000}
    store["a"] = {"status": "done", "size": 60}
    store["b"] = {"status": "done", "size": 60}  # over 100: a negative size cannot hide it
    assert handle(store).index.total_bytes == 60
    assert "cannot be negative" in caplog.text
    assert "b" in store and "a" not in store


@pytest.mark.parametrize("token", ["pässwörd-€", "ascii-token"])
def test_item10_a_non_ascii_token_matches_over_real_http(manager: MemoryManager,
                                                         token: str) -> None:
    class Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = make_server("127.0.0.1", 0, wsgi_app(manager, token=token), handler_class=Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        def post(secret: bytes) -> int:
            connection = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=30)
            try:
                connection.putrequest("POST", "/memory/cleanup")
                connection.putheader("Authorization", b"Bearer " + secret)
                connection.putheader("Content-Length", "0")
                connection.endheaders()
                return connection.getresponse().status
            finally:
                connection.close()

        assert post(token.encode("utf-8")) != 403
        assert post(token.encode("utf-8") + b"x") == 403
        if not token.isascii():
            assert post(token.encode("latin-1", "replace")) == 403
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=30)


# -- 3/4. parking and re-checks, driven by hypothesis -------------------------------------------

PARK_KEYS = st.integers(min_value=0, max_value=15)


class ParkingMachine(RuleBasedStateMachine):
    """A store where scans park after stepping over one active job, against a plain model:
    the index stays exact, no active job is ever evicted, and a pass (which re-checks every
    known-active job of a small store) restores the count bound and the active count."""

    MAX_JOBS = 4
    most_parked = 0  # over every example: the machine must have parked something

    def __init__(self) -> None:
        super().__init__()
        self.manager = MemoryManager(Policy(), clock=FakeClock(0.0))

        @managed_store(manager=self.manager, max_jobs=self.MAX_JOBS)
        class Jobs(dict):  # type: ignore[type-arg]
            pass

        self.store = Jobs()
        self.handle = handle(self.store)
        self.model: dict[int, dict[str, Any]] = {}
        self.pins: dict[int, int] = {}
        self.capture = capture_evictions(self.manager)
        self.events = self.capture.__enter__()
        self.seen = 0

    def teardown(self) -> None:
        self.capture.__exit__(None, None, None)

    def active(self, key: int) -> bool:
        return key in self.pins or self.model[key]["status"] == "running"

    def absorb(self) -> None:
        for event in self.events[self.seen:]:
            assert event.key in self.model and not self.active(event.key), event
            del self.model[event.key]
        self.seen = len(self.events)

    @rule(key=PARK_KEYS, running=st.booleans())
    def insert(self, key: int, running: bool) -> None:
        job = {"status": "running" if running else "done", "result": "x" * 50}
        self.store[key] = job
        self.model[key] = job
        self.absorb()

    @rule(key=PARK_KEYS)
    def finish(self, key: int) -> None:
        if key in self.model:
            self.model[key]["status"] = "done"  # in place

    @rule(key=PARK_KEYS)
    def read(self, key: int) -> None:
        self.store.get(key)

    @rule(key=PARK_KEYS)
    def delete(self, key: int) -> None:
        if self.store.pop(key, None) is not None:
            del self.model[key]
            self.pins.pop(key, None)

    @rule(key=PARK_KEYS)
    def pin(self, key: int) -> None:
        if key in self.model:
            self.handle.pin(key)
            self.pins[key] = self.pins.get(key, 0) + 1

    @rule(key=PARK_KEYS)
    def unpin(self, key: int) -> None:
        if key in self.pins:
            self.handle.unpin(key)
            self.pins[key] -= 1
            if not self.pins[key]:
                del self.pins[key]

    @rule()
    def cleanup(self) -> None:
        self.handle.cleanup()
        self.absorb()
        evictable = [k for k in self.model if not self.active(k)]
        assert len(self.model) <= self.MAX_JOBS or not evictable
        assert self.handle.stats().active == sum(map(self.active, self.model))
        parked = self.handle.index.parked
        assert all(self.active(k) for k in parked), "a finished job stayed parked after a pass"

    @invariant()
    def index_is_exact(self) -> None:
        index = self.handle.index
        ParkingMachine.most_parked = max(ParkingMachine.most_parked, len(index.parked))
        assert dict(self.store) == self.model
        assert set(index.keys()) == set(self.model)
        in_order = [k for k in index.lru if not isinstance(k, Epoch)]
        assert sorted(in_order + list(index.parked)) == sorted(self.model)
        assert set(index.aged) == set(self.model) - set(index.parked)
        assert index.total_bytes == sum(index.size_of(k) or 0 for k in self.model)
        assert set(index.known_active) <= set(self.model)
        assert index.pinned_jobs == len(self.pins)
        assert self.handle.stats().pinned == len(self.pins)


def test_parking_and_rechecks_keep_the_index_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracking, "PARK_AFTER", 1)
    run = ParkingMachine.TestCase
    run.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
    run().runTest()
    assert ParkingMachine.most_parked >= 2
