"""Issue 23, item 10: values a store would change or could not read back. JSON refuses at
write what it would not give back equal; one corrupt job raises an error naming it on read
and never breaks iteration over the others; pickle is signed unless asked for as unsafe."""

from __future__ import annotations

import logging
import os
import pickle
from typing import Any

import pytest
import redis

from memguard import MemoryManager, Policy, managed_store
from memguard.redis import RedisConfigError, RedisStore, RedisStoreError

#: What the forged pickle below sets when it is unpickled (it must never be, when signed).
MARK = "MEMGUARD_TEST_FORGED_PICKLE_RAN"


class Forged:
    """A pickle that runs code when loaded: what someone who can write to Redis could plant."""

    def __reduce__(self) -> Any:
        return (exec, (f"import os; os.environ[{MARK!r}] = '1'",))


def jobs(url: str, **options: Any) -> Any:
    @managed_store(name="jobs", manager=MemoryManager(Policy()))
    class Jobs(RedisStore):
        pass

    return Jobs(url, **options)


@pytest.mark.parametrize(("value", "says"), [
    ((1, 2), "a tuple comes back as a list"),
    ({1: "a", "1": "b"}, "non-string key 1"),
    ({"rows": [{"at": (1, 2)}]}, "a tuple comes back as a list"),
    ({2: "x"}, "non-string key 2"),
    ("lone \ud800 surrogate", "surrogate"),
    (float("nan"), "Out of range float"),
])
def test_json_refuses_what_it_would_not_give_back(redis_url: str, value: Any,
                                                  says: str) -> None:
    store = jobs(redis_url)
    with pytest.raises(TypeError, match=rf"job 'a', field 'result'.*{says}"):
        store["a"] = {"status": "done", "result": value}
    assert "a" not in store  # nothing written
    store["a"] = {"status": "running", "result": None}
    job = store["a"]
    with pytest.raises(TypeError, match=says):
        job.update(status="done", result=value)
    assert store["a"] == {"status": "running", "result": None}  # not half of the update


def test_one_corrupt_job_is_named_and_never_hides_the_others(
        redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    store = jobs(redis_url)
    for key in ("a", "b", "c"):
        store[key] = {"status": "done", "result": key}
    with redis.Redis.from_url(redis_url) as client:
        client.hset("memguard:{jobs}:j:b", "status", b"\xff not json")
        client.hset("memguard:{jobs}:r:c", "result", b"{broken")
    with pytest.raises(RedisStoreError, match=r"job 'b' \(keys memguard:\{jobs\}:j:b.*'status'"):
        store["b"]
    with caplog.at_level(logging.WARNING, logger="memguard"):
        assert {key: job.copy() for key, job in store.items() if key != "c"} == {
            "a": {"status": "done", "result": "a"}}
        assert len(list(store.values())) == 2  # "a" and "c": their small fields read fine
    assert "job 'b'" in caplog.text and "skipped" in caplog.text
    with pytest.raises(RedisStoreError, match=r"job 'c'.*field 'result'"):
        store["c"]["result"]
    with pytest.raises(RedisStoreError, match="job 'b'"):
        store.pop("b")


def test_pickle_needs_a_key_or_the_unsafe_flag(redis_url: str) -> None:
    with pytest.raises(RedisConfigError, match=r"pickle_key=SECRET.*unsafe_pickle=True"):
        jobs(redis_url, serializer="pickle")
    with pytest.raises(RedisConfigError, match="at least 16 bytes"):
        jobs(redis_url, serializer="pickle", pickle_key=b"short")
    with pytest.raises(RedisConfigError, match="serializer='pickle' only"):
        jobs(redis_url, pickle_key=b"k" * 32)


def test_signed_pickle_never_unpickles_what_a_keyless_writer_planted(
        redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MARK, raising=False)
    store = jobs(redis_url, serializer="pickle", pickle_key=b"the app's secret key!")
    store["a"] = {"status": "done", "result": {1, 2}}
    assert store["a"]["result"] == {1, 2}
    with redis.Redis.from_url(redis_url) as client:
        client.hset("memguard:{jobs}:r:a", "result", pickle.dumps(Forged()))
    with pytest.raises(RedisStoreError, match="signature does not match"):
        store["a"]["result"]
    other = jobs(redis_url, serializer="pickle", pickle_key=b"another app's key....")
    with pytest.raises(RedisStoreError, match="signature does not match"):
        other["a"]
    assert MARK not in os.environ
    unsafe = jobs(redis_url, serializer="pickle", unsafe_pickle=True)  # what the docs warn of
    with redis.Redis.from_url(redis_url) as client:
        client.hset("memguard:{jobs}:j:a", "status", pickle.dumps("done"))
    unsafe["a"]["result"]
    assert os.environ.pop(MARK) == "1"
