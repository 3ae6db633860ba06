"""The traffic of a run, drawn up front from its seed."""

from __future__ import annotations

import math
import random

import attrs

from memguard.tools.reference import Demand
from memguard.tools.stress.config import (
    KB,
    MAX_RESULT,
    MIN_RESULT,
    SIZE_SIGMA,
    StoreProfile,
    StressConfig,
)


@attrs.frozen
class _Plan:
    """Everything random about one job, drawn before the run so both modes see the same."""

    id: str
    store: int
    arrive: float
    start: float
    finish: float
    size: int
    fails: bool
    poll_every: float
    returns: tuple[float, ...]
    content_seed: int
    polled: bool = True


def _plan_traffic(config: StressConfig, profiles: tuple[StoreProfile, ...]) -> list[_Plan]:
    rng = random.Random(config.seed)
    unpolled_rng = random.Random(f"unpolled-{config.seed}")
    weights = [p.weight for p in profiles]
    horizon = config.minutes * 60.0
    low = max(1 * KB, round(MIN_RESULT * config.scale))
    high = max(low, round(MAX_RESULT * config.scale))
    plans: list[_Plan] = []
    t = 0.0
    while True:
        t += rng.expovariate(config.rate / 60.0)
        if t >= horizon:
            return plans
        burst = 1 if rng.random() >= 0.15 else rng.randint(2, 4)  # a user submits several
        for _ in range(burst):
            index = rng.choices(range(len(profiles)), weights)[0]
            profile = profiles[index]
            median = profile.median * config.scale
            size = round(rng.lognormvariate(math.log(median), SIZE_SIGMA))
            queued = rng.expovariate(1 / 4.0)  # seconds pending before a worker picks it up
            running = min(300.0, max(3.0, rng.lognormvariate(math.log(30.0), 0.6)))
            returns = []
            if rng.random() < 0.4:  # the user comes back later for the result
                back = running
                for _ in range(rng.randint(1, 2)):
                    back += min(5400.0, max(60.0, rng.lognormvariate(math.log(600.0), 0.9)))
                    returns.append(back)
            polled = True
            if config.unpolled and unpolled_rng.random() < config.unpolled:
                polled = False
                if not returns:
                    returns = [running + min(5400.0, max(60.0, unpolled_rng.lognormvariate(
                        math.log(600.0), 0.9)))]
            plans.append(_Plan(
                id=f"{profile.name}-{len(plans):06d}",
                store=index,
                arrive=t,
                start=t + queued,
                finish=t + queued + running,
                size=min(high, max(low, size)),
                fails=rng.random() < 0.03,
                poll_every=rng.choice((2.0, 2.0, 3.0, 5.0)),
                returns=tuple(t + queued + r for r in returns),
                content_seed=rng.getrandbits(32),
                polled=polled,
            ))


def _demands(plans: list[_Plan], horizon: float) -> list[Demand]:
    """What the clients of `plans` ask of the stores up to `horizon`, for the clairvoyant
    reference (`memguard.tools.reference`): each finished job's result (its nominal size;
    a failed job's holds nothing), read by the poll that first sees it finished (when its
    client polls) and at each later visit; a later visit makes it wanted, as the run counts."""
    out = []
    for plan in plans:
        if plan.finish > horizon:
            continue
        reads = []
        if plan.polled:
            poll = plan.arrive + plan.poll_every
            while poll < plan.finish:  # the run's polls of the active job, to the one after
                poll += plan.poll_every
            if poll <= horizon:
                reads.append(poll)
        visits = [when for when in plan.returns if when <= horizon]
        reads += visits
        out.append(Demand(key=plan.id, ready=plan.finish, size=0 if plan.fails else plan.size,
                          reads=tuple(sorted(reads)), wanted=bool(visits)))
    return out
