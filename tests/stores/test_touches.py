"""@touches: each binding case touches the right job in the right store."""

from __future__ import annotations

import asyncio
import functools
import inspect
import sys
from typing import Any, Optional

import pytest

from memguard import MemoryManager, StoreDefinitionError, handle, managed_store, touches


def done() -> dict[str, Any]:
    return {"status": "done", "result": "r"}


@pytest.fixture
def iac_class(manager: MemoryManager) -> Any:
    @managed_store(name="iac", mapping="jobs", manager=manager)
    class IacJobStore:
        def __init__(self) -> None:
            self.jobs: dict[str, Any] = {}

        @touches
        def get_job(self, job_id: str) -> Optional[dict[str, Any]]:
            return self.jobs.get(job_id)

        @touches(key="job_id")
        def status(self, *, job_id: str) -> Any:
            job = self.jobs.get(job_id)
            return job and job["status"]

        @touches(key="job_id")
        def describe(self, prefix: str, job_id: str) -> str:
            return f"{prefix}{job_id}"

        @touches(key=lambda job: job["id"])
        def newest(self) -> Optional[dict[str, Any]]:
            return dict.get(self.jobs, max(self.jobs), None) if self.jobs else None

        @touches
        async def poll(self, job_id: str) -> Any:
            await asyncio.sleep(0)
            return self.jobs.get(job_id)

        @touches(key="job_id")
        async def poll_keyword(self, *, job_id: str) -> Any:
            return self.jobs.get(job_id)

    return IacJobStore


@pytest.fixture
def iac(iac_class: Any) -> Any:
    store = iac_class()
    for key in ("a", "b", "c"):
        store.jobs[key] = {**done(), "id": key}
    return store


def recency(store: Any) -> list[Any]:
    return list(handle(store).recency())


def test_method_first_argument(iac: Any) -> None:
    iac.get_job("a")
    assert recency(iac)[-1] == "a"


def test_method_keyword_only_key(iac: Any) -> None:
    iac.status(job_id="a")
    assert recency(iac)[-1] == "a"


def test_named_key_given_positionally_or_by_keyword(iac: Any) -> None:
    assert iac.describe("job:", "a") == "job:a"
    assert recency(iac)[-1] == "a"
    iac.describe(prefix="x", job_id="b")
    assert recency(iac)[-1] == "b"


def test_key_from_result(iac: Any) -> None:
    iac.jobs.pop("c")
    iac.jobs["c"] = {**done(), "id": "c"}
    iac.get_job("a")
    assert iac.newest()["id"] == "c"
    assert recency(iac)[-1] == "c"


def test_async_methods_stay_coroutine_functions(iac: Any) -> None:
    assert inspect.iscoroutinefunction(iac.poll)
    asyncio.run(iac.poll("a"))
    assert recency(iac)[-1] == "a"
    asyncio.run(iac.poll_keyword(job_id="b"))
    assert recency(iac)[-1] == "b"


def test_unknown_job_id_is_not_an_error(iac: Any) -> None:
    before = recency(iac)
    assert iac.get_job("nope") is None
    assert recency(iac) == before


def test_exception_means_no_touch(manager: MemoryManager) -> None:
    @managed_store(manager=manager)
    class Jobs(dict):  # type: ignore[type-arg]
        @touches
        def explode(self, job_id: str) -> None:
            raise LookupError(job_id)

    store = Jobs(a=done(), b=done())
    with pytest.raises(LookupError):
        store.explode("a")
    assert recency(store) == ["a", "b"]


def test_dict_store_methods(manager: MemoryManager) -> None:
    @managed_store(manager=manager)
    class Jobs(dict):  # type: ignore[type-arg]
        @touches
        def result(self, job_id: str) -> Any:
            return dict.get(self, job_id, {}).get("result")

    store = Jobs(a=done(), b=done())
    assert store.result("a") == "r"
    assert recency(store) == ["b", "a"]


def test_module_function_names_its_store(manager: MemoryManager) -> None:
    @managed_store(manager=manager)
    class Jobs(dict):  # type: ignore[type-arg]
        pass

    store = Jobs(a=done(), b=done())

    @touches(store=store)
    def read(job_id: str) -> Any:
        return dict.get(store, job_id)

    @touches(store=lambda: handle(store), key="job_id")
    async def read_async(*, job_id: str) -> Any:
        return dict.get(store, job_id)

    read("a")
    assert recency(store) == ["b", "a"]
    asyncio.run(read_async(job_id="b"))
    assert recency(store) == ["a", "b"]


def test_classmethod_and_staticmethod(manager: MemoryManager) -> None:
    @managed_store(manager=manager)
    class Jobs(dict):  # type: ignore[type-arg]
        pass

    store = Jobs(a=done(), b=done(), c=done())

    class Service:
        @touches(store=store)
        @classmethod
        def lookup(cls, job_id: str) -> Any:
            assert cls is Service
            return dict.get(store, job_id)

        @touches(store=store)
        @staticmethod
        def peek(job_id: str) -> Any:
            return dict.get(store, job_id)

    Service.lookup("a")
    assert recency(store)[-1] == "a"
    Service().peek("b")
    assert recency(store)[-1] == "b"
    Service.peek("c")
    assert recency(store)[-1] == "c"


def test_plain_dict_store_by_handle(manager: MemoryManager) -> None:
    jobs = {"a": done(), "b": done()}
    manager.setup_job_store_cleanup(jobs, "plain")

    @touches(store=jobs)
    def read(job_id: str) -> Any:
        return jobs.get(job_id)

    read("a")
    assert handle(jobs).recency() == ["b", "a"]


def test_bad_key_fails_at_decoration_time() -> None:
    with pytest.raises(StoreDefinitionError, match=r"fetch.*'job'.*job_id"):
        @touches(key="job")
        def fetch(job_id: str) -> None: ...

    with pytest.raises(StoreDefinitionError, match="key must be"):
        touches(key=42)(lambda job_id: None)  # type: ignore[arg-type]


def test_method_on_an_unmanaged_class_says_what_to_do() -> None:
    class Plain:
        @touches
        def get(self, job_id: str) -> None: ...

    with pytest.raises(StoreDefinitionError, match="store="):
        Plain().get("a")


def test_wrapped_function_keeps_its_metadata(iac_class: Any) -> None:
    assert iac_class.get_job.__name__ == "get_job"
    assert list(inspect.signature(iac_class.get_job).parameters) == ["self", "job_id"]


# -- the generated accessor: same calls, same errors, one touch -----------------------------------

def pops_of(reads: dict[Any, None], call: Any) -> int:
    """How many times `call()` pops from `reads` (each touch pops once, then inserts)."""
    count = 0

    def profile(frame: Any, event: str, arg: Any) -> None:
        nonlocal count
        if event == "c_call" and getattr(arg, "__self__", None) is reads and (
                arg.__name__ == "pop"):
            count += 1

    sys.setprofile(profile)
    try:
        call()
    finally:
        sys.setprofile(None)
    return count


def test_an_accessor_that_reads_through_the_mapping_touches_once(iac: Any) -> None:
    reads = handle(iac).index.reads
    assert pops_of(reads, lambda: iac.get_job("a")) == 1  # self.jobs.get's touch, no other
    assert recency(iac)[-1] == "a"
    assert pops_of(reads, lambda: iac.describe("x", "b")) == 1  # reads nothing: its own touch
    assert recency(iac)[-1] == "b"
    assert pops_of(reads, lambda: iac.get_job("nope")) == 0


def test_the_plain_reader_is_the_undecorated_method(iac_class: Any) -> None:
    assert iac_class.get_job is iac_class.__wrapped__.get_job.__wrapped__
    assert iac_class.describe is iac_class.__wrapped__.describe  # the wrapper stays


def test_recency_follows_the_order_of_accessor_calls(iac: Any) -> None:
    iac.jobs["d"] = {**done(), "id": "d"}
    for key in ("b", "d", "a", "c"):
        iac.describe("", key) if key in "bc" else iac.get_job(key)
    assert recency(iac) == ["b", "d", "a", "c"]


def test_generated_accessor_takes_and_refuses_what_the_method_does(
        manager: MemoryManager) -> None:
    def fetch(self: Any, job_id: str, /, scale: int = 2, *extra: Any, tag: str = "t",
              **options: Any) -> tuple[Any, ...]:
        return job_id, scale, extra, tag, options

    @managed_store(manager=manager)
    class Jobs(dict):  # type: ignore[type-arg]
        decorated = touches(fetch)
        undecorated = fetch

    store = Jobs(a=done(), b=done())
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
        (("a",), {}), (("b", 3, 4, 5), {"tag": "u", "more": 1}), (("a",), {"scale": 7}),
        ((), {}), (("a",), {"job_id": "b"}), (("a", 1), {"scale": 2}), (("a",), {"tag": 1}),
    ]
    for args, kwargs in calls:
        try:
            expected: Any = store.undecorated(*args, **kwargs)
        except TypeError as error:  # the same message: the wrapper has fetch's name
            with pytest.raises(TypeError) as raised:
                store.decorated(*args, **kwargs)
            assert str(raised.value) == str(error)
            continue
        assert store.decorated(*args, **kwargs) == expected
        assert recency(store)[-1] == args[0]
    assert inspect.signature(Jobs.decorated) == inspect.signature(fetch)


def test_a_key_left_to_its_default_is_not_touched(manager: MemoryManager) -> None:
    @managed_store(manager=manager, mapping="jobs")
    class Store:
        def __init__(self) -> None:
            self.jobs: dict[Any, Any] = {}

        @touches
        def latest(self, job_id: Any = None) -> Any:
            return dict.get(self.jobs, job_id)

    store = Store()
    store.jobs[None] = done()  # a job under the default value itself
    store.jobs["a"] = done()
    store.latest()
    assert recency(store) == [None, "a"]
    store.latest(None)  # given explicitly (equal to the default): a use, touched
    assert recency(store) == ["a", None]


def test_a_key_taken_through_kwargs_and_a_callable_object(manager: MemoryManager) -> None:
    @managed_store(manager=manager)
    class Jobs(dict):  # type: ignore[type-arg]
        @touches(key="job_id")
        def lookup(self, **query: Any) -> Any:
            return dict.get(self, query["job_id"])

    store = Jobs(a=done(), b=done(), c=done())
    assert store.lookup(job_id="a") == done()
    assert recency(store)[-1] == "a"

    class Reader:
        def __call__(self, job_id: str) -> Any:
            return dict.get(store, job_id)

    read = touches(Reader(), store=store)
    read("b")
    assert recency(store)[-1] == "b"


def test_generated_class_and_static_methods_bind_as_before(manager: MemoryManager) -> None:
    @managed_store(manager=manager)
    class Jobs(dict):  # type: ignore[type-arg]
        pass

    store = Jobs(a=done(), b=done())

    class Service:
        @touches(store=lambda: store)
        @classmethod
        def lookup(cls, job_id: str, default: Any = None) -> Any:
            return cls, dict.get(store, job_id, default)

        @touches(store=store, key=lambda job: "a" if job else None)
        @staticmethod
        async def newest() -> Any:
            return dict.get(store, "a")

    class Child(Service):
        pass

    assert isinstance(vars(Service)["lookup"], classmethod)
    assert Child.lookup("a") == (Child, done())
    assert recency(store)[-1] == "a"
    assert Child().lookup("b", default=1) == (Child, done())
    assert recency(store)[-1] == "b"
    assert inspect.iscoroutinefunction(Service.newest)
    asyncio.run(Service().newest())
    assert recency(store)[-1] == "a"


def test_a_method_under_another_decorator_keeps_that_decorators_parameters(
        manager: MemoryManager) -> None:
    def with_db(method: Any) -> Any:
        @functools.wraps(method)  # reports method's signature, takes fewer arguments
        def wrapper(self: Any, job_id: str) -> Any:
            return method(self, job_id, db="db")
        return wrapper

    @managed_store(manager=manager)
    class Jobs(dict):  # type: ignore[type-arg]
        @touches
        @with_db
        def fetch(self, job_id: str, db: str) -> Any:
            return dict.get(self, job_id), db

    store = Jobs(a=done(), b=done())
    assert store.fetch("a") == (done(), "db")
    assert recency(store) == ["b", "a"]


def test_a_decorator_outside_touches_keeps_its_place_on_a_mapping_store() -> None:
    calls: list[str] = []

    def logged(function: Any) -> Any:
        @functools.wraps(function)  # copies the accessor's attributes onto this wrapper
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            calls.append(function.__name__)
            return function(*args, **kwargs)

        return wrapper

    @managed_store(mapping="jobs", manager=MemoryManager())
    class Store:
        def __init__(self) -> None:
            self.jobs: dict[Any, Any] = {}

        @logged
        @touches
        def get_job(self, job_id: Any) -> Any:
            return self.jobs.get(job_id)

    store = Store()
    store.jobs[0] = done()
    assert store.get_job(0) == done() and calls == ["get_job"]


def test_a_method_whose_instance_is_not_named_self_touches() -> None:
    @managed_store(manager=MemoryManager())
    class Jobs(dict):  # type: ignore[type-arg]
        @touches
        def result_of(this, job_id: Any) -> Any:  # `this`, not `self`: the point of the test
            return dict.get(this, job_id)

    jobs = Jobs()
    jobs[0], jobs[1] = done(), done()
    assert jobs.result_of(0) == done()
    assert handle(jobs).recency() == [1, 0]


def test_a_job_id_passed_with_the_defaults_value_is_touched() -> None:
    @managed_store(manager=MemoryManager())
    class Jobs(dict):  # type: ignore[type-arg]
        @touches
        def result_of(self, job_id: Any = 0) -> Any:
            return dict.get(self, job_id)

    jobs = Jobs()
    jobs[0], jobs[1] = done(), done()
    jobs.result_of()  # not given: no job id, no touch
    assert handle(jobs).recency() == [0, 1]
    jobs.result_of(0)  # given, equal to the default: a touch
    assert handle(jobs).recency() == [1, 0]
