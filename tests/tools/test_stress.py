"""The stress workload: its traffic, its results, its verdict, and its guarantees.

In-process runs here check structure and the guarantees that do not depend on how much memory
this (pytest) process happens to hold: determinism, job accounting, active jobs never lost.
The verdict against a real limit is checked in fresh subprocesses, where RSS is the run's own.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memguard import Cause
from memguard.index.estimate import estimate_size
from memguard.monitor.levels import LEVELS
from memguard.policy.files import load_policy
from memguard.policy.policy import Policy
from memguard.tools.stress.config import (
    MAX_RESULT,
    MIN_RESULT,
    SEED_STORES,
    StressConfig,
    default_policy,
    scaled_policy,
)
from memguard.tools.stress.payloads import _json_result, _text
from memguard.tools.stress.results import Sample, StressResult
from memguard.tools.stress.run import run
from memguard.tools.stress.traffic import _plan_traffic

#: A small run: 20 simulated minutes of results at 5% of their size; well under a second.
#: The limit is far above any test process, so only the policy's rules (on simulated time)
#: evict, never the emergency path (on this pytest process's real, unpredictable memory).
SMALL = {"minutes": 20.0, "scale": 0.05, "limit": 64 * 2**30}


def small(**changes: Any) -> StressConfig:
    return StressConfig(**{**SMALL, **changes})


# -- traffic ---------------------------------------------------------------------------------


def test_traffic_is_fixed_by_the_seed() -> None:
    config = small(seed=7)
    first = _plan_traffic(config, SEED_STORES)
    assert first == _plan_traffic(config, SEED_STORES)
    assert first != _plan_traffic(small(seed=8), SEED_STORES)


def test_traffic_follows_rate_and_minutes() -> None:
    plans = _plan_traffic(StressConfig(minutes=60, rate=9.0, seed=3), SEED_STORES)
    # 9 arrivals a minute, 15% of them bursts of 2-4 jobs: about 9 * 60 * 1.3 jobs.
    assert 500 <= len(plans) <= 900
    assert all(0 <= p.arrive < 3600 for p in plans)
    assert all(p.arrive <= p.start < p.finish for p in plans)
    assert {SEED_STORES[p.store].name for p in plans} == {s.name for s in SEED_STORES}
    assert any(p.returns for p in plans) and not all(p.returns for p in plans)


def test_result_sizes_are_heavy_tailed_and_clipped() -> None:
    plans = _plan_traffic(StressConfig(minutes=240, seed=5), SEED_STORES)
    sizes = sorted(p.size for p in plans)
    assert sizes[0] >= MIN_RESULT and sizes[-1] <= MAX_RESULT
    median, p95 = sizes[len(sizes) // 2], sizes[int(len(sizes) * 0.95)]
    assert p95 > 3 * median  # a long tail, not a bell
    assert sizes.count(MAX_RESULT) > 0  # the clip is reached


def test_scale_shrinks_sizes_and_their_clip() -> None:
    plans = _plan_traffic(StressConfig(minutes=240, seed=5, scale=0.25), SEED_STORES)
    assert max(p.size for p in plans) <= MAX_RESULT // 4


# -- results -----------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 5_000, 70_000, 1_000_000])
def test_text_results_are_fresh_strings_of_the_size(size: int) -> None:
    import random

    a, b = _text(size, random.Random(1)), _text(size, random.Random(1))
    assert len(a) == size and a == b and (size < 2 or a is not b)


@pytest.mark.parametrize("size", [5_000, 300_000, 2_000_000])
def test_json_results_are_parsed_json_shapes_of_about_the_size(size: int) -> None:
    import random

    result = _json_result(size, random.Random(2))
    assert json.loads(json.dumps(result)) == result
    assert {"summary", "resources", "files"} <= result.keys()
    assert 0.7 * size <= estimate_size(result) <= 1.6 * size + 20_000


# -- policy ------------------------------------------------------------------------------------


def test_default_policy_is_the_bundled_seed_policy() -> None:
    policy = default_policy()
    assert policy.memory.limit == 512 * 2**20
    assert {name: policy.store_policy(name).max_jobs for name in policy.stores} == {
        "diagram": 50, "iac": 50, "infrastructure": 30, "application": 30, "concept": 25,
        "app_creation": 20,
    }
    assert {s.name for s in SEED_STORES} == set(policy.stores)


def test_scaled_policy_keeps_the_shape_of_the_thresholds() -> None:
    policy = scaled_policy(default_policy(), "128MB")
    thresholds = policy.memory.resolve()
    assert thresholds.limit == 128 * 2**20
    assert thresholds.warning == 100 * 2**20  # 400/512 of the limit
    assert thresholds.emergency == 125 * 2**20
    assert thresholds.critical == 150 * 2**20
    assert policy.stores == default_policy().stores


def test_scaled_policy_leaves_percentages_alone() -> None:
    policy = Policy.from_toml('[memory]\nlimit = "1GB"\nwarning = "50%"\n', environ={})
    scaled = scaled_policy(policy, "100MB")
    assert scaled.memory.resolve().warning == 50 * 2**20


def test_a_policy_without_a_numeric_limit_is_refused() -> None:
    policy = Policy.from_toml('[memory]\nlimit = "auto"\n', environ={})
    with pytest.raises(ValueError, match="limit"):
        run(small(policy=policy, limit=None))


@pytest.mark.parametrize("field", ["minutes", "rate", "scale", "sample_every"])
@pytest.mark.parametrize("value", [0, -1.0, float("nan")])
def test_config_rejects_non_positive_numbers(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        StressConfig(**{field: value})


# -- runs ----------------------------------------------------------------------------------------


def test_baseline_keeps_every_job_and_evicts_nothing() -> None:
    result = run(small(guard=False))
    jobs = result.jobs
    assert jobs["held"] == jobs["submitted"] > 100
    assert result.evictions == {} and result.cleanups == 0
    assert jobs["return_misses"] == 0 and jobs["active_lost"] == 0


def test_guarded_run_bounds_the_stores_by_the_policy() -> None:
    result = run(small())
    assert result.jobs["held"] <= sum(
        default_policy().store_policy(s.name).max_jobs or 0 for s in SEED_STORES)
    assert result.evictions.get("count", 0) > 0
    assert result.active_lost == 0
    assert result.jobs["submitted"] == run(small(guard=False)).jobs["submitted"]


def test_same_seed_same_traffic_in_both_modes() -> None:
    guarded, baseline = run(small(seed=11)), run(small(seed=11, guard=False))
    for key in ("submitted", "completed", "failed", "results_read"):
        assert guarded.jobs[key] == baseline.jobs[key]
    # Clients that come back later find their job in the baseline, sometimes not when guarded.
    assert (guarded.jobs["return_hits"] + guarded.jobs["return_misses"]
            == baseline.jobs["return_hits"])


@pytest.mark.slow  # ~12 s: eight stress runs, each guarded and not
@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), rate=st.floats(4.0, 20.0))
def test_results_lost_are_counted_once_per_job_and_only_when_guarded(seed: int,
                                                                      rate: float) -> None:
    """A result is lost when a client comes back for it (a later visit, or a poll after the
    job finished) and finds it evicted; the baseline, which evicts nothing, loses none of the
    same results wanted."""
    guarded = run(small(seed=seed, rate=rate))
    baseline = run(small(seed=seed, rate=rate, guard=False))
    assert baseline.results_lost == 0
    assert guarded.results_wanted == baseline.results_wanted
    misses = guarded.jobs["return_misses"] + guarded.jobs["poll_misses"]
    assert (guarded.results_lost > 0) == (misses > 0)
    assert guarded.results_lost <= min(misses, guarded.results_wanted)  # once per job
    if guarded.results_wanted:
        assert guarded.lost_share == guarded.results_lost / guarded.results_wanted
    else:
        assert guarded.lost_share is None
    assert guarded.lost_share == guarded.results_lost / guarded.results_wanted
    assert guarded.lost_text() in guarded.verdict()
    assert guarded.lost_text().startswith(
        f"{guarded.results_lost} of {guarded.results_wanted} results lost before their client "
        f"came back")


@pytest.mark.slow  # ~5 s: an hour of simulated traffic
def test_every_eviction_lands_in_one_sample_and_cleanups_are_marked() -> None:
    result = run(small(minutes=60.0))  # long enough for the age rule to evict at passes
    assert sum(s.evicted for s in result.samples) == sum(result.evictions.values()) > 0
    assert result.marks and all(m.kind in ("periodic", "emergency") for m in result.marks)
    assert [m.t for m in result.marks] == sorted(m.t for m in result.marks)
    assert sum(m.kind == "emergency" for m in result.marks) == result.cleanups
    # Reclaim is counted for every cleanup that measured one, not only emergencies.
    measured = sum(m.reclaimed for m in result.marks if m.reclaimed and m.reclaimed > 0)
    assert result.reclaimed_bytes >= measured


def test_samples_cover_the_run_and_levels_add_up() -> None:
    result = run(small(sample_every=30.0))
    assert [s.t for s in result.samples] == [30.0 * k for k in range(41)]
    assert set(result.time_at_level) == set(LEVELS)
    assert sum(result.time_at_level.values()) == pytest.approx(20 * 60)
    assert result.peak_usage == max(s.usage for s in result.samples)
    assert result.final_usage == result.samples[-1].usage


def test_progress_is_reported_at_every_sample() -> None:
    seen: list[tuple[float, Sample]] = []
    result = run(small(sample_every=60.0), progress=lambda f, s: seen.append((f, s)))
    assert [s for _, s in seen] == list(result.samples)
    assert seen[0][0] == 0.0 and seen[-1][0] == 1.0
    assert [f for f, _ in seen] == sorted(f for f, _ in seen)


@pytest.mark.slow  # ~4-7 s: half an hour of simulated traffic, an emergency every check
def test_emergency_pressure_never_loses_an_active_job(tmp_path: Any) -> None:
    """Thresholds far below what any Python process uses: every tick is an emergency that
    evicts all it can, with no count or age rule to help. Active jobs must all survive."""
    text = default_policy_text().replace('rules = ["age", "idle", "count", "bytes", "emergency"]',
                                         'rules = ["emergency"]')
    path = tmp_path / "pressure.toml"
    path.write_text(text)
    policy = scaled_policy(load_policy(path, environ={}), "2MB")
    policy = attrs.evolve(policy, memory=attrs.evolve(policy.memory, cooldown=0))
    result = run(StressConfig(minutes=30, scale=0.02, policy=policy, rate=20.0))
    assert result.cleanups >= 14  # every two-minute check
    assert set(result.evictions) == {Cause.EMERGENCY.value}
    assert result.evictions["emergency"] > 100
    assert result.active_lost == 0


def default_policy_text() -> str:
    from memguard.policy.files import bundled_policy

    return bundled_policy("default").read_text()


def test_result_round_trips_through_json() -> None:
    result = run(small())
    data = json.loads(json.dumps(result.to_dict()))
    assert StressResult.from_dict(data) == result
    assert data["passed"] == result.passed and data["verdict"] == result.verdict()
    assert data["params"]["seed"] == 1 and data["params"]["guard"] is True


def test_verdict_names_what_failed() -> None:
    result = run(small())
    over = attrs.evolve(result, limit=1)
    assert not over.passed and over.verdict().startswith("FAIL guarded: peak")
    assert "over the limit from minute 0" in over.verdict()
    lost = attrs.evolve(result, limit=2**40, jobs={**result.jobs, "active_lost": 2})
    assert not lost.passed and "2 active jobs lost" in lost.verdict()
    ok = attrs.evolve(result, limit=2**40)
    assert ok.passed and ok.verdict().startswith("PASS guarded")
    assert over.lost_text() in over.verdict() and ok.lost_text() in ok.verdict()


# -- the verdict, on real memory, in fresh processes -------------------------------------------

_CHILD = """
import json, sys
from memguard.tools.stress import StressConfig, run
result = run(StressConfig(minutes=60, scale=0.25, limit=160 * 2**20, seed=4,
                          guard=sys.argv[1] == "guard"))
print(json.dumps(result.to_dict()))
"""


def _child(mode: str) -> StressResult:
    done = subprocess.run([sys.executable, "-c", _CHILD, mode], capture_output=True, text=True,
                          timeout=120, check=True)
    return StressResult.from_dict(json.loads(done.stdout))


@pytest.mark.slow
def test_guard_keeps_a_run_under_the_limit_that_the_baseline_exceeds() -> None:
    guarded, baseline = _child("guard"), _child("baseline")
    assert guarded.passed, guarded.verdict()
    assert guarded.active_lost == 0
    assert guarded.peak_usage < guarded.limit
    assert not baseline.passed, baseline.verdict()
    assert baseline.peak_usage > baseline.limit
    assert guarded.jobs["submitted"] == baseline.jobs["submitted"]
