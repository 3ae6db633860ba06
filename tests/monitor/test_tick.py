"""`memguard.monitor.tick.Schedule`: when the monitor's steps are due and how long it waits between
samples, driven by hand with plain clock values (no thread, no probe)."""

from __future__ import annotations

from typing import Optional

import pytest
from hypothesis import given
from hypothesis import strategies as st

from memguard.memory.samples import MemorySample
from memguard.monitor.tick import MIN_WAIT, PRESSURE_SPEEDUP, TRIM_AFTER, Schedule
from memguard.policy.options import MemoryPolicy

MB = 2**20


def schedule(evicted: Optional[list[int]] = None, **memory: object) -> Schedule:
    policy = MemoryPolicy(**{"sample_interval": "1s", "check_interval": "2m",
                             "gc_interval": "5m", "summary_interval": "10m", **memory})
    counter = evicted if evicted is not None else [0]
    return Schedule(lambda: policy, lambda: counter[0])


def sample(usage: int) -> MemorySample:
    return MemorySample(usage=usage, rss=usage, swap=0, heap=None, limit=512 * MB,
                        scope="process")


def test_the_pass_is_due_at_once_then_every_interval_and_set_interval_overrides() -> None:
    s = schedule()
    assert s.pass_due(0.0)
    assert not s.pass_due(119.0)
    assert s.pass_due(120.0)
    s.set_pass_interval("30s")
    assert s.pass_interval == 30.0 and not s.pass_due(149.0) and s.pass_due(150.0)
    s.set_pass_interval(None)
    assert s.pass_interval == 120.0


@pytest.mark.parametrize("bad", [0, -1, "0s"])
def test_a_pass_interval_not_above_zero_is_refused(bad: object) -> None:
    s = schedule()
    with pytest.raises(ValueError, match=r"above zero|must not be negative"):
        s.set_pass_interval(bad)  # type: ignore[arg-type]
    assert s.pass_override is None


def test_gc_counts_from_the_first_tick_and_a_reclaims_collection_stands_for_it() -> None:
    s = schedule()
    assert not s.gc_due(10.0)  # the first look starts the count
    assert not s.gc_due(309.0)
    assert s.gc_due(310.0)
    s.collected(400.0)  # a reclaim ran a full collection
    assert not s.gc_due(699.0) and s.gc_due(700.0)


def test_the_summary_is_due_on_the_first_sample_then_every_interval() -> None:
    s = schedule()
    assert s.summary_due(5.0) and not s.summary_due(604.0) and s.summary_due(605.0)


def test_a_reclaim_is_due_once_enough_was_evicted_since_the_last() -> None:
    evicted = [0]
    s = schedule(evicted)
    evicted[0] = TRIM_AFTER - 1
    assert not s.reclaim_due()
    evicted[0] = TRIM_AFTER
    assert s.reclaim_due() and not s.reclaim_due()  # asking marks it done
    evicted[0] = 2 * TRIM_AFTER - 1
    assert not s.reclaim_due()
    s.reclaimed()  # an emergency cleanup reclaimed: count from here
    evicted[0] = 3 * TRIM_AFTER - 2
    assert not s.reclaim_due()


def test_samples_come_faster_under_pressure_but_never_slower_than_passes() -> None:
    s = schedule()
    assert s.sample_interval("ok") == 1.0
    assert s.sample_interval("warning") == s.sample_interval("critical") == 1 / PRESSURE_SPEEDUP
    s.set_pass_interval(0.1)
    assert s.sample_interval("ok") == 0.1


@given(usage=st.integers(0, 600 * MB), growth=st.one_of(st.none(), st.floats(-1e9, 1e10)),
       bound=st.one_of(st.none(), st.integers(1, 600 * MB)),
       level=st.sampled_from(["ok", "warning", "emergency", "critical"]))
def test_the_wait_is_the_interval_or_half_the_time_to_emergency(
        usage: int, growth: Optional[float], bound: Optional[int], level: str) -> None:
    s = schedule()
    every = s.sample_interval(level)
    wait = s.next_wait(level, sample(usage), growth, lambda _: bound)
    assert MIN_WAIT <= wait <= every or wait == every
    crossing = (growth is not None and growth > 0 and bound is not None and usage < bound)
    if not crossing:
        assert wait == every
    else:
        assert growth is not None and bound is not None
        assert wait == max(MIN_WAIT, min(every, (bound - usage) / growth / 2))
        assert wait <= every and (wait == MIN_WAIT or usage + growth * wait * 2 <= bound + 1)
    assert s.next_wait(level, None, growth, lambda _: bound) == every
