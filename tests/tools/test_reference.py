"""The clairvoyant reference (DESIGN section 10): hand-made demands, a brute-force check that
it is a real policy (never over its budget, never better than the exact optimum), and its
figures beside memguard's in `memguard stress` and `memguard tune`."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memguard.tools import stress, tune
from memguard.tools.reference import (
    METHOD,
    Demand,
    ReferenceOutcome,
    clairvoyant,
    demands_from_trace,
    lower_bound,
)

MB = 1024 * 1024


def test_everything_kept_when_the_budget_holds_it() -> None:
    demands = [Demand("a", 0.0, 10, (5.0, 100.0), wanted=True), Demand("b", 1.0, 10, (50.0,))]
    outcome = clairvoyant(demands, 20)
    assert (outcome.lost, outcome.wanted, outcome.evicted) == (0, 1, 0)
    assert outcome.held_peak == 20


def test_the_result_read_furthest_away_goes() -> None:
    demands = [Demand("soon", 0.0, 10, (5.0,), wanted=True),
               Demand("late", 1.0, 10, (500.0,), wanted=True),
               Demand("new", 2.0, 10, (20.0,), wanted=True)]
    outcome = clairvoyant(demands, 20)
    assert outcome.lost == 1 and outcome.evicted == 1  # "late", read last, was the victim
    # with "late" read before "new", "new" itself is the one to give up
    demands[1] = Demand("late", 1.0, 10, (10.0,), wanted=True)
    assert clairvoyant(demands, 20).lost == 1


def test_a_result_read_for_the_last_time_frees_its_bytes() -> None:
    demands = [Demand("a", 0.0, 10, (1.0,)), Demand("b", 2.0, 10, (3.0,), wanted=True)]
    outcome = clairvoyant(demands, 10)
    assert outcome.lost == 0 and outcome.held_peak == 10


def test_largest_first_among_results_read_at_the_same_time() -> None:
    demands = [Demand("small", 0.0, 4, (100.0,), wanted=True),
               Demand("big", 0.0, 8, (100.0,), wanted=True),
               Demand("now", 1.0, 4, (2.0,), wanted=True)]
    outcome = clairvoyant(demands, 12)
    assert outcome.lost == 1 and outcome.held_peak <= 12  # "big" went: 4 + 4 fit


def test_a_missed_delivery_counts_as_wanted_and_an_unread_result_as_neither() -> None:
    demands = [Demand("never read", 0.0, 100, ()), Demand("polled", 0.0, 100, (1.0,))]
    outcome = clairvoyant(demands, 50)
    assert (outcome.lost, outcome.wanted) == (1, 1)


def test_a_removed_result_is_no_longer_read_or_held() -> None:
    demands = [Demand("deleted", 0.0, 10, (1.0, 50.0), end=10.0, wanted=True),
               Demand("b", 20.0, 10, (30.0,), wanted=True)]
    assert clairvoyant(demands, 10).lost == 0


def test_the_lp_bound_on_hand_made_cases() -> None:
    same = [Demand("a", 0.0, 10, (5.0,), wanted=True), Demand("b", 0.0, 10, (5.0,), wanted=True)]
    assert lower_bound(same, 10) == 1 and lower_bound(same, 15) == 1  # half of one: still 1
    assert lower_bound(same, 20) == 0
    # one big result against three small ones over the same time: the LP keeps the smalls
    mixed = [Demand("big", 0.0, 30, (9.0,)), *(Demand(i, 0.0, 10, (9.0,)) for i in range(3))]
    assert lower_bound(mixed, 30) == 1 and clairvoyant(mixed, 30).lost == 1
    # intervals that follow each other share the budget: nothing need be lost
    chain = [Demand(i, float(i), 10, (i + 1.0,)) for i in range(5)]
    assert lower_bound(chain, 10) == 0 and clairvoyant(chain, 10).lost == 0


def test_the_lp_bound_solves_a_trace_sized_case_quickly() -> None:
    import random
    import time

    rng = random.Random(7)
    demands = []
    for n in range(600):
        ready = rng.uniform(0, 3600)
        reads = sorted(ready + rng.lognormvariate(5, 1.2) for _ in range(rng.randint(1, 3)))
        demands.append(Demand(n, ready, int(rng.lognormvariate(13.5, 1.0)), tuple(reads)))
    started = time.perf_counter()
    outcome = clairvoyant(demands, 40 * MB, bound=True)
    assert time.perf_counter() - started < 20
    assert outcome.lower_bound is not None and 0 < outcome.lower_bound <= outcome.lost


def test_bad_budget_is_refused() -> None:
    with pytest.raises(ValueError, match="budget of 0 bytes or more"):
        clairvoyant([], -1)


def test_the_outcome_round_trips_through_json() -> None:
    outcome = clairvoyant([Demand("a", 0.0, 10, (5.0,), wanted=True)], 5)
    again = ReferenceOutcome.from_dict(json.loads(json.dumps(outcome.to_dict())))
    assert again == outcome and again.method == METHOD


def _optimum(demands: list[Demand], budget: int) -> int:
    """Exact fewest results lost, by brute force: keep a set of results through their last
    read, such that the bytes kept never exceed `budget` (a result evicted is lost)."""
    read = [d for d in demands if d.reads]
    best = len(read)
    for keep in itertools.product((False, True), repeat=len(read)):
        kept = [d for d, k in zip(read, keep) if k]
        points = {d.ready for d in kept}
        # a read at the instant another result is ready comes first: half-open intervals
        if all(sum(d.size for d in kept if d.ready <= t < d.reads[-1]) <= budget
               for t in points):
            best = min(best, len(read) - len(kept))
    return best


demand_lists = st.lists(
    st.tuples(st.integers(0, 20), st.integers(1, 8),
              st.lists(st.integers(1, 30), min_size=0, max_size=3)),
    min_size=1, max_size=7)


@settings(max_examples=150, deadline=None)
@given(demand_lists, st.integers(0, 20))
def test_the_reference_is_a_policy_no_better_than_the_optimum(raw: list[tuple[int, int, list[int]]],
                                                              budget: int) -> None:
    demands = [Demand(n, float(ready), size, tuple(sorted(float(ready + r) for r in reads)),
                      wanted=True)
               for n, (ready, size, reads) in enumerate(raw)]
    outcome = clairvoyant(demands, budget, bound=True)
    optimum = _optimum(demands, budget)
    assert outcome.held_peak <= budget
    assert outcome.lower_bound is not None
    assert outcome.lower_bound <= optimum <= outcome.lost <= sum(1 for d in demands if d.reads)


def test_stress_prints_the_reference_beside_its_own_losses(tmp_path: Path) -> None:
    trace = tmp_path / "run.trace"
    result = stress.run(stress.StressConfig(minutes=20, seed=2, record=str(trace)))
    reference = result.reference
    assert reference is not None
    assert reference.budget > 0 and reference.held_peak <= reference.budget
    assert reference.lost <= result.results_lost  # the floor, at memguard's own peak
    assert "clairvoyant reference (greedy Belady with sizes)" in result.verdict()
    data = result.to_dict()
    assert data["reference"]["lost"] == reference.lost
    assert data["reference_gap"] == result.reference_gap
    assert stress.StressResult.from_dict(data).reference == reference
    # the recorded trace gives the tuner's reference the same results to count
    recorded = tune.read_trace(trace)
    demands = demands_from_trace(recorded)
    unbounded = tune.replay(recorded, {})
    assert clairvoyant(demands, 10**12).lost == 0
    assert clairvoyant(demands, 10**12).wanted == unbounded.wanted
    assert stress.run(stress.StressConfig(minutes=5, guard=False)).reference is None


def test_tune_prints_the_reference_beside_each_candidate(tmp_path: Path) -> None:
    trace = tmp_path / "run.trace"
    stress.run(stress.StressConfig(minutes=20, seed=1, record=str(trace)))
    result = tune.tune(tune.read_trace(trace), 400 * MB, jobs_grid=(10, 50, None),
                       age_grid=(600.0, None))
    assert result.reference is not None
    for row in result.rows:
        assert row.reference is not None
        assert row.reference.budget == max(0, row.outcome.peak - result.base)
    text = tune.table(result)
    assert "clairvoyant reference (greedy Belady with sizes) at the whole budget" in text
    data = tune.to_json(result)
    assert data["reference"]["method"] == METHOD
    assert all(c["reference"] is not None for c in data["candidates"])
