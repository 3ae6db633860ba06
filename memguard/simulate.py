"""The seed workload: six job stores under AI-sized traffic, on a simulated clock.

This is what ``memguard stress``, ``python -m memguard.demo`` and the end-to-end benchmark
run. It models the application memguard was written for: a web process whose controllers
start background jobs (diagrams, infrastructure-as-code, deployments, generated apps), keep
each job's state and its large AI result in an in-process dict, and let browsers poll for it.

What happens in one run (see docs/stress.md for the numbers and why they were chosen):

- Jobs arrive as a Poisson process (`StressConfig.rate` per simulated minute, some in small
  bursts) and go to the six seed stores in fixed proportions.
- Each job is ``pending`` for a few seconds, ``running`` for an AI-call-like duration, then
  ``completed`` with a result (or, rarely, ``failed`` with a small error). Results are text
  (generated code, diagrams, prose) or parsed-JSON shapes (dicts of lists of dicts with a few
  big strings), with heavy-tailed (lognormal) sizes clipped to 5 KB - 4 MB.
- The client that submitted a job polls it every few seconds until it is done, reads the result,
  and some clients come back minutes later to read it again. Reads go through ``store.get``
  or a ``@touches`` accessor, so a guarded store sees them as touches.
- Guarded runs (`StressConfig.guard`) declare the stores with ``@managed_store`` on a fresh
  `MemoryManager` whose clock is a `memguard.testing.FakeClock` and whose probe is a *real*
  `memguard.memory.ProcessProbe`. The monitor's `tick` runs as its thread would, on
  simulated time: a sample every ``sample_interval`` (or sooner when usage grows fast, see
  `Monitor.next_wait`), the periodic pipeline pass every ``check_interval``, emergency
  cleanups decided on the real resident memory of this process. Baseline runs put the same
  jobs in plain dicts.

Everything random is drawn up front from one seeded `random.Random`, so a seed fixes the
traffic exactly; only the real memory figures (and what the emergency path does about them)
vary from run to run. An hour of simulated traffic takes seconds of wall time.
"""

from __future__ import annotations

import heapq
import math
import random
import resource
import sys
import time
from collections import Counter
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any, Callable, Final, Optional, Union

import attrs

from memguard._manager import MemoryManager
from memguard._units import format_size, parse_size
from memguard.events import CleanupReport, EvictionEvent
from memguard.memory import ProcessProbe
from memguard.monitor import LEVELS, Monitor, raw_level
from memguard.policy import MemoryPolicy, Policy, bundled_policy
from memguard.testing import FakeClock
from memguard.trace import Recorder

__all__ = [
    "DEFAULT_MINUTES",
    "DEFAULT_RATE",
    "DEFAULT_SEED",
    "LEVELS",
    "SEED_STORES",
    "Mark",
    "Sample",
    "StoreProfile",
    "StressConfig",
    "StressResult",
    "default_policy",
    "run",
    "scaled_policy",
]

KB: Final = 1024
MB: Final = 1024 * KB

#: Simulated minutes of traffic in a default run.
DEFAULT_MINUTES: Final = 60.0
#: Jobs per simulated minute, all stores together, in a default run (see docs/stress.md).
DEFAULT_RATE: Final = 9.0
#: The seed of a default run.
DEFAULT_SEED: Final = 1

#: Smallest and largest result at scale 1 (AI responses: a short answer to a generated app).
MIN_RESULT: Final = 5 * KB
MAX_RESULT: Final = 4 * MB
#: Spread (sigma of the underlying normal) of the lognormal result sizes: heavy-tailed.
SIZE_SIGMA: Final = 1.0

_ACTIVE: Final = frozenset({"pending", "running"})


@attrs.frozen
class StoreProfile:
    """One seed store: its share of the traffic and the results its jobs produce.

    `shape` is ``"text"`` (one big string) or ``"json"`` (a parsed-JSON tree whose bulk is a
    few big strings); `median` the median result size at scale 1; `accessor` says how the
    application holds it: ``"dict"`` (a dict subclass read with ``get``) or ``"attr"`` (a class
    holding a ``jobs`` dict, read through a ``@touches`` accessor).
    """

    name: str
    weight: float
    shape: str
    median: int
    accessor: str


#: The six stores of the seed application, from its three controllers (AI, deploy, "magic").
SEED_STORES: Final = (
    StoreProfile("diagram", 0.22, "text", 512 * KB, "dict"),
    StoreProfile("iac", 0.20, "json", 1024 * KB, "attr"),
    StoreProfile("infrastructure", 0.13, "json", 768 * KB, "dict"),
    StoreProfile("application", 0.13, "text", 1536 * KB, "attr"),
    StoreProfile("concept", 0.20, "text", 640 * KB, "dict"),
    StoreProfile("app_creation", 0.12, "json", 2048 * KB, "attr"),
)


# --------------------------------------------------------------------------------------------
# Configuration


def default_policy() -> Policy:
    """The bundled ``policies/default.toml`` (the seed's numbers), without environment overrides.

    The environment is ignored so that a stress run on a developer's machine means the same
    as anywhere else; pass a policy explicitly to run under other settings.
    """
    path = bundled_policy("default")
    return Policy.from_toml(path.read_text(encoding="utf-8"), source=str(path), environ={})


def scaled_policy(policy: Policy, limit: Union[int, str]) -> Policy:
    """`policy` with its memory limit set to `limit` and its byte thresholds scaled alike.

    A policy written for 512 MB says "warn at 400 MB"; run at a 160 MB limit that becomes
    125 MB, so a small, fast configuration keeps the shape of the real one. Percentages of the
    limit need no scaling. Raises ValueError when the policy has no numeric limit to scale from.
    """
    new_limit = parse_size(limit)
    if not isinstance(new_limit, int) or new_limit <= 0:
        raise ValueError(f"expected a positive size such as 512MB for the limit; got {limit!r}")
    memory = policy.memory
    old = memory.limit
    if not isinstance(old, int):
        return attrs.evolve(policy, memory=attrs.evolve(memory, limit=new_limit))
    factor = new_limit / old
    changes: dict[str, Any] = {"limit": new_limit}
    for name in ("warning", "warning_heap", "emergency", "emergency_target", "critical"):
        value = getattr(memory, name)
        if isinstance(value, int):
            changes[name] = max(1, round(value * factor))
    return attrs.evolve(policy, memory=attrs.evolve(memory, **changes))


def _positive(instance: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"{attribute.name} must be a positive number, not {value!r}")


@attrs.frozen
class StressConfig:
    """What to run: how much simulated traffic, how big its results, under which policy.

    `minutes` of simulated time; `rate` jobs per simulated minute (all stores); `scale`
    multiplies every result size (and its 5 KB - 4 MB clip), so ``scale=0.25`` is a quarter
    of the memory for the same traffic; `policy` defaults to `default_policy()`; `limit`, when
    given, resizes the policy with `scaled_policy`. `guard=False` is the baseline: plain dicts,
    no manager. `sample_every` is the simulated seconds between two memory samples.
    """

    minutes: float = attrs.field(default=DEFAULT_MINUTES, validator=_positive)
    rate: float = attrs.field(default=DEFAULT_RATE, validator=_positive)
    seed: int = DEFAULT_SEED
    scale: float = attrs.field(default=1.0, validator=_positive)
    guard: bool = True
    policy: Optional[Policy] = None
    limit: Optional[int] = None
    sample_every: float = attrs.field(default=10.0, validator=_positive)
    #: A file to record the guarded run's trace to (`memguard.trace`), for `memguard tune`.
    record: Optional[str] = None
    #: The share of clients that do not poll: they submit, leave, and come back once later
    #: (a link in an e-mail), so their result is first read at that visit. Drawn from a
    #: generator of its own: 0 keeps the seed traffic exactly as it was.
    unpolled: float = attrs.field(default=0.0, validator=attrs.validators.and_(
        attrs.validators.ge(0.0), attrs.validators.le(1.0)))

    def resolved_policy(self) -> Policy:
        """The policy the run uses: given or default, resized to `limit` when one is given.

        Raises ValueError when it has no memory limit in bytes (``limit = "auto"``): a run is
        judged against a limit, and the machine's RAM would make every run pass.
        """
        policy = self.policy if self.policy is not None else default_policy()
        if self.limit is not None:
            policy = scaled_policy(policy, self.limit)
        if not isinstance(policy.memory.limit, int):
            raise ValueError(
                f"the stress run needs a memory limit in bytes; {policy.source} has "
                f"limit = {policy.memory.limit!r} (give one, e.g. --limit 512MB)")
        return policy


# --------------------------------------------------------------------------------------------
# Results


@attrs.frozen
class Sample:
    """One memory reading during a run: simulated seconds, bytes used, level, jobs held, and
    jobs evicted (by any rule, at insert or in a cleanup) since the previous reading."""

    t: float
    usage: int
    level: str
    jobs: int
    evicted: int = 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict of the fields."""
        return {"t": self.t, "usage": self.usage, "level": self.level, "jobs": self.jobs,
                "evicted": self.evicted}


@attrs.frozen
class Mark:
    """A cleanup during a guarded run, for charts: simulated seconds, its kind (``periodic`` or
    ``emergency``), the jobs it evicted and what it measurably reclaimed (None: not measured)."""

    t: float
    kind: str
    evicted: int
    reclaimed: Optional[int]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict of the fields."""
        return {"t": self.t, "kind": self.kind, "evicted": self.evicted,
                "reclaimed": self.reclaimed}


@attrs.frozen
class StressResult:
    """What a run measured. Sizes in bytes, times in simulated seconds unless named `wall`.

    `passed` is the verdict: the peak stayed under the limit and no active job was lost; the
    verdict line also gives `results_lost`, the finished results evicted before a client came
    back for them, out of `results_wanted`, those a client came back for: a later visit, or
    a poll that found the job finished and already evicted (a result read at the poll that
    saw it finish was delivered, and counts in neither).
    `jobs` counts ``submitted``, ``completed``, ``failed``, ``active_lost`` (pending or
    running jobs that disappeared: must be 0), ``held`` (in the stores at the end),
    ``results_read`` (clients that polled until done and read the result), ``poll_misses``
    (a polling client found its job gone: it finished and was evicted before the next poll),
    ``return_hits`` / ``return_misses`` (clients coming back later found their job, or found
    it cleaned up), ``results_wanted`` / ``results_lost`` (finished jobs a client came back
    for, and those of them a client found evicted). `evictions` counts by cause,
    `evicted_bytes` is the estimated size of what was evicted, `reclaimed_bytes` what cleanups
    (periodic passes and emergencies alike) measurably gave back to the system, `cleanups` the
    number of emergency cleanups, `marks` every cleanup that evicted something or was an
    emergency, and `time_at_level` the simulated seconds spent at each level.
    """

    guard: bool
    params: Mapping[str, Any]
    limit: int
    thresholds: Mapping[str, Optional[int]]
    start_usage: int
    peak_usage: int
    peak_at: float
    final_usage: int
    high_water_mark: Optional[int]
    time_at_level: Mapping[str, float]
    evictions: Mapping[str, int]
    evicted_bytes: int
    reclaimed_bytes: int
    cleanups: int
    jobs: Mapping[str, int]
    samples: tuple[Sample, ...]
    wall_seconds: float
    marks: tuple[Mark, ...] = ()

    @property
    def results_lost(self) -> int:
        """Finished results a client came back for and found evicted (one per job)."""
        return self.jobs.get("results_lost", 0)

    @property
    def results_wanted(self) -> int:
        """Finished results a client came back for at least once (one per job)."""
        return self.jobs.get("results_wanted", 0)

    @property
    def lost_share(self) -> Optional[float]:
        """`results_lost` / `results_wanted`; None when no client came back for a result."""
        return self.results_lost / self.results_wanted if self.results_wanted else None

    def lost_text(self) -> str:
        """``84 of 318 results lost before their client came back (26%)``."""
        share = "" if self.lost_share is None else f" ({self.lost_share:.0%})"
        return (f"{self.results_lost} of {self.results_wanted} results lost before their "
                f"client came back{share}")

    @property
    def active_lost(self) -> int:
        """Pending or running jobs that disappeared from a store (a guarded run must show 0)."""
        return self.jobs.get("active_lost", 0)

    @property
    def under_limit(self) -> bool:
        """The highest sampled usage stayed below the limit."""
        return self.peak_usage < self.limit

    @property
    def passed(self) -> bool:
        """The verdict: under the limit at every sample, and no active job lost."""
        return self.under_limit and self.active_lost == 0

    def verdict(self) -> str:
        """One line for people: what happened against the limit."""
        peak = f"peak {format_size(self.peak_usage)} of {format_size(self.limit)} limit"
        name = "guarded" if self.guard else "baseline (no guard)"
        if self.passed:
            return (f"PASS {name}: {peak}, {self.active_lost} active jobs lost, "
                    f"{self.lost_text()}")
        reasons = []
        if not self.under_limit:
            over = next((s for s in self.samples if s.usage >= self.limit), None)
            when = f" from minute {over.t / 60:.0f}" if over is not None else ""
            reasons.append(f"{peak}: over the limit{when}")
        if self.active_lost:
            reasons.append(f"{self.active_lost} active jobs lost")
        return f"FAIL {name}: " + "; ".join(reasons) + f"; {self.lost_text()}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict: every field, the samples as a list of dicts, and the verdict."""
        return {
            "guard": self.guard,
            "passed": self.passed,
            "verdict": self.verdict(),
            "params": dict(self.params),
            "limit": self.limit,
            "thresholds": dict(self.thresholds),
            "start_usage": self.start_usage,
            "peak_usage": self.peak_usage,
            "peak_at": self.peak_at,
            "final_usage": self.final_usage,
            "high_water_mark": self.high_water_mark,
            "time_at_level": dict(self.time_at_level),
            "evictions": dict(self.evictions),
            "evicted_bytes": self.evicted_bytes,
            "reclaimed_bytes": self.reclaimed_bytes,
            "cleanups": self.cleanups,
            "jobs": dict(self.jobs),
            "results_lost": self.results_lost,
            "results_wanted": self.results_wanted,
            "lost_share": self.lost_share,
            "samples": [sample.to_dict() for sample in self.samples],
            "marks": [mark.to_dict() for mark in self.marks],
            "wall_seconds": self.wall_seconds,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StressResult:
        """Rebuild a result from `to_dict()` output (the demo reads its children's JSON)."""
        return cls(
            guard=bool(data["guard"]),
            params=dict(data["params"]),
            limit=int(data["limit"]),
            thresholds=dict(data["thresholds"]),
            start_usage=int(data["start_usage"]),
            peak_usage=int(data["peak_usage"]),
            peak_at=float(data["peak_at"]),
            final_usage=int(data["final_usage"]),
            high_water_mark=data.get("high_water_mark"),
            time_at_level={k: float(v) for k, v in data["time_at_level"].items()},
            evictions={k: int(v) for k, v in data["evictions"].items()},
            evicted_bytes=int(data["evicted_bytes"]),
            reclaimed_bytes=int(data["reclaimed_bytes"]),
            cleanups=int(data["cleanups"]),
            jobs={k: int(v) for k, v in data["jobs"].items()},
            samples=tuple(Sample(float(s["t"]), int(s["usage"]), str(s["level"]), int(s["jobs"]),
                                 int(s.get("evicted", 0)))
                          for s in data["samples"]),
            wall_seconds=float(data["wall_seconds"]),
            marks=tuple(Mark(float(m["t"]), str(m["kind"]), int(m["evicted"]),
                             None if m.get("reclaimed") is None else int(m["reclaimed"]))
                        for m in data.get("marks", ())),
        )


# --------------------------------------------------------------------------------------------
# The traffic, drawn up front


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


# --------------------------------------------------------------------------------------------
# AI-shaped results


_WORDS = (
    "resource", "module", "output", "variable", "provider", "region", "instance", "bucket",
    "cluster", "service", "deploy", "container", "network", "subnet", "gateway", "policy",
    "role", "function", "handler", "request", "response", "model", "prompt", "token",
    "diagram", "node", "edge", "flow", "sequence", "class", "entity", "relation", "schema",
    "table", "index", "query", "cache", "queue", "worker", "job", "status", "result", "error",
    "retry", "timeout", "config", "secret", "value",
)
_corpus_text: Optional[str] = None


def _corpus() -> str:
    """64 KB of deterministic pseudo-text that results are cut from."""
    global _corpus_text
    if _corpus_text is None:
        rng = random.Random(0)
        words: list[str] = []
        length = 0
        while length < 64 * KB:
            word = rng.choice(_WORDS)
            words.append(word)
            length += len(word) + 1
        _corpus_text = " ".join(words)[: 64 * KB]
    return _corpus_text


def _text(size: int, rng: random.Random) -> str:
    """A fresh string of `size` characters (ASCII, so `size` bytes of payload).

    Built by repeating a rotation of the corpus: a new object each time (memory really used,
    never shared with another result) at memcpy speed.
    """
    corpus = _corpus()
    start = rng.randrange(len(corpus))
    rotated = corpus[start:] + corpus[:start]
    repeats, rest = divmod(max(size, 1), len(rotated))
    return rotated * repeats + rotated[:rest]


_RESOURCE_TYPES = ("aws_s3_bucket", "aws_lambda_function", "aws_iam_role", "aws_vpc",
                   "aws_ecs_service", "aws_rds_instance", "aws_sqs_queue", "aws_cloudfront")


def _json_result(size: int, rng: random.Random) -> dict[str, Any]:
    """A parsed-JSON-shaped result of about `size` bytes: the bulk in a few file contents,
    the rest a list of small resource dicts (what ``json.loads`` of an IaC answer gives)."""
    n_resources = min(200, 1 + size // (16 * KB))
    resources = [
        {
            "type": rng.choice(_RESOURCE_TYPES),
            "name": f"resource_{i}",
            "properties": {"region": "eu-west-1", "count": i,
                           "tags": {"app": "generated", "env": rng.choice(("dev", "prod"))}},
            "depends_on": [f"resource_{j}" for j in range(max(0, i - 2), i)],
        }
        for i in range(n_resources)
    ]
    n_files = min(16, 1 + size // (256 * KB))
    summary = _text(min(2 * KB, size // 10), rng)
    body = max(1, size - len(summary) - n_resources * 600)
    files = [{"path": f"modules/m{i}/main.tf", "content": _text(body // n_files, rng)}
             for i in range(n_files)]
    return {
        "summary": summary,
        "model": "gpt-4o",
        "usage": {"prompt_tokens": rng.randint(200, 4000), "completion_tokens": size // 4},
        "resources": resources,
        "files": files,
    }


def _result(plan: _Plan, profile: StoreProfile) -> Any:
    rng = random.Random(plan.content_seed)
    if profile.shape == "json":
        return _json_result(plan.size, rng)
    return _text(plan.size, rng)


# --------------------------------------------------------------------------------------------
# The stores, declared per run


class _PlainJobStore:
    """How the seed held some stores: an object with a ``jobs`` dict and an accessor."""

    def __init__(self) -> None:
        self.jobs: dict[str, Any] = {}

    def get_job(self, job_id: str) -> Optional[dict[str, Any]]:
        return self.jobs.get(job_id)


_Bound = tuple[Any, MutableMapping[str, Any], Callable[[str], Optional[dict[str, Any]]]]
"""A store of a run: the store object, the mapping holding its jobs, its read accessor."""


def _build_stores(profiles: Iterable[StoreProfile],
                  manager: Optional[MemoryManager]) -> list[_Bound]:
    """(store, its job mapping, its read accessor) per profile; managed when `manager` is set.

    Each guarded run declares fresh classes bound to its own manager, so runs never share a
    registry, and the classes go away with the run.
    """
    from memguard import managed_store, touches

    out: list[_Bound] = []
    for profile in profiles:
        store: Any
        if profile.accessor == "attr":
            if manager is None:
                store = _PlainJobStore()
            else:
                @managed_store(name=profile.name, mapping="jobs", manager=manager)
                class AttrJobStore:
                    def __init__(self) -> None:
                        self.jobs: dict[str, Any] = {}

                    @touches
                    def get_job(self, job_id: str) -> Optional[dict[str, Any]]:
                        return self.jobs.get(job_id)

                store = AttrJobStore()
            out.append((store, store.jobs, store.get_job))
        else:
            if manager is None:
                store = {}
            else:
                @managed_store(name=profile.name, manager=manager)
                class DictJobStore(dict):  # type: ignore[type-arg]
                    pass

                store = DictJobStore()
            out.append((store, store, store.get))
    return out


# --------------------------------------------------------------------------------------------
# The run

_ARRIVE, _START, _FINISH, _POLL, _RETURN, _TICK, _SAMPLE = range(7)

Progress = Callable[[float, Sample], object]


class _Run:
    """The state of one run; `execute` is the event loop."""

    def __init__(self, config: StressConfig, progress: Optional[Progress]) -> None:
        self.config = config
        self.progress = progress
        self.policy = config.resolved_policy()
        memory: MemoryPolicy = self.policy.memory
        assert isinstance(memory.limit, int)  # resolved_policy made sure
        self.limit: int = memory.limit
        self.thresholds = memory.resolve(self.limit)
        self.profiles = SEED_STORES
        self.plans = _plan_traffic(config, self.profiles)
        self.clock = FakeClock(0.0)
        self.probe = ProcessProbe(self.limit, heap=False)
        self.manager: Optional[MemoryManager] = None
        self.monitor: Optional[Monitor] = None
        self.emergencies: list[CleanupReport] = []
        self.marks: list[Mark] = []
        self.state: dict[str, str] = {}
        self.lost: set[str] = set()
        self.wanted: set[str] = set()  # finished jobs a client came back for (not delivered)
        self.results_lost: set[str] = set()  # ... and found evicted
        self.evicted_since_sample = 0
        self.counts: Counter[str] = Counter()
        self.evictions: Counter[str] = Counter()
        self.evicted_bytes = 0
        self.samples: list[Sample] = []
        self.stores: list[_Bound] = []
        self.events: list[tuple[float, int, int, int]] = []
        self._seq = 0
        self.recorder: Optional[Recorder] = None

    # -- set-up --------------------------------------------------------------------------------

    def _guard(self) -> None:
        """A manager of its own on the simulated clock and a real probe; its monitor is driven
        by hand (`_tick`), never as a thread, so decisions follow simulated time."""
        manager = MemoryManager(self.policy, clock=self.clock, probe=ProcessProbe(self.limit))
        manager.on_evict(self._evicted)
        manager.monitor = self.monitor = Monitor(manager)
        self.manager = manager
        if self.config.record is not None:
            self.recorder = manager.record(self.config.record)

    def _evicted(self, event: EvictionEvent) -> None:
        self.evictions[event.cause.value] += 1
        self.evicted_bytes += event.size or 0
        self.evicted_since_sample += 1
        if self.state.get(str(event.key)) in _ACTIVE:
            self.lost.add(str(event.key))

    def _at(self, when: float, kind: int, job: int = -1) -> None:
        self._seq += 1
        heapq.heappush(self.events, (when, self._seq, kind, job))

    # -- the loop ------------------------------------------------------------------------------

    def execute(self) -> StressResult:
        started = time.perf_counter()
        if self.config.guard:
            self._guard()
        self.stores = _build_stores(self.profiles, self.manager)
        horizon = self.config.minutes * 60.0
        for i, plan in enumerate(self.plans):
            self._at(plan.arrive, _ARRIVE, i)
        every = self.config.sample_every
        for k in range(int(horizon // every) + 1):
            self._at(k * every, _SAMPLE)
        if self.monitor is not None:  # it samples as the thread would; passes when due
            self._at(self.monitor.sample_interval, _TICK)
        start_usage = self.probe().usage
        handlers = (self._arrive, self._start, self._finish, self._poll, self._return,
                    self._tick, self._sample)
        while self.events:
            when, _, kind, job = heapq.heappop(self.events)
            if when > horizon:
                break
            if when > self.clock.now:
                self.clock.advance(when - self.clock.now)
            handlers[kind](job)
        if not self.samples or self.samples[-1].t < horizon:
            self.clock.advance(max(0.0, horizon - self.clock.now))
            self._sample(-1)
        if self.recorder is not None:
            self.recorder.close()
        if self.evicted_since_sample:  # evicted at the last instant, after its sample
            last = self.samples[-1]
            self.samples[-1] = attrs.evolve(last, evicted=last.evicted + self.evicted_since_sample)
        return self._result(start_usage, time.perf_counter() - started)

    # -- events ----------------------------------------------------------------------------

    def _arrive(self, i: int) -> None:
        plan = self.plans[i]
        _, jobs, _ = self.stores[plan.store]
        jobs[plan.id] = {"id": plan.id, "kind": self.profiles[plan.store].name,
                         "status": "pending", "created_at": plan.arrive, "progress": 0,
                         "result": None, "error": None}
        self.state[plan.id] = "pending"
        self.counts["submitted"] += 1
        self._at(plan.start, _START, i)
        if plan.polled:
            self._at(plan.arrive + plan.poll_every, _POLL, i)

    def _present(self, plan: _Plan) -> Optional[dict[str, Any]]:
        """The job as its worker reads it; records an active job that disappeared."""
        _, jobs, _ = self.stores[plan.store]
        job: Optional[dict[str, Any]] = jobs.get(plan.id)
        if job is None and self.state.get(plan.id) in _ACTIVE:
            self.lost.add(plan.id)
        return job

    def _start(self, i: int) -> None:
        plan = self.plans[i]
        job = self._present(plan)
        if job is None:
            return
        job["status"] = "running"
        job["progress"] = 10
        self.state[plan.id] = "running"
        self._at(plan.finish, _FINISH, i)

    def _finish(self, i: int) -> None:
        plan = self.plans[i]
        job = self._present(plan)
        if job is None:
            return
        if plan.fails:
            job.update(status="failed", error="upstream model timed out", progress=100)
            self.counts["failed"] += 1
        else:
            job.update(status="completed", result=_result(plan, self.profiles[plan.store]),
                       progress=100, finished_at=self.clock.now)
            self.counts["completed"] += 1
        self.state[plan.id] = str(job["status"])
        _, jobs, _ = self.stores[plan.store]
        jobs[plan.id] = job  # stored again with its result, as the seed's workers did
        for when in plan.returns:
            self._at(when, _RETURN, i)

    def _poll(self, i: int) -> None:
        plan = self.plans[i]
        _, _, read = self.stores[plan.store]
        job = read(plan.id)
        if job is None:
            self._missed(plan)
            self.counts["poll_misses"] += 1
            if self.state.get(plan.id) not in _ACTIVE:  # finished, then evicted before read
                self.wanted.add(plan.id)
                self.results_lost.add(plan.id)
        elif job["status"] in _ACTIVE:
            self._at(self.clock.now + plan.poll_every, _POLL, i)
        else:
            self.counts["results_read"] += 1  # delivered: its client did not come back

    def _return(self, i: int) -> None:
        plan = self.plans[i]
        _, _, read = self.stores[plan.store]
        job = read(plan.id)
        self.counts["return_hits" if job is not None else "return_misses"] += 1
        self.wanted.add(plan.id)
        if job is None:
            self._missed(plan)
            self.results_lost.add(plan.id)

    def _missed(self, plan: _Plan) -> None:
        """A client found nothing: the trace must know (the store never sees such a read)."""
        if self.recorder is not None:
            self.recorder.missed(self.profiles[plan.store].name, plan.id)

    def _tick(self, _: int) -> None:
        assert self.monitor is not None
        result = self.monitor.tick()
        for report in (result.cleanup, result.emergency):
            if report is not None and (report.evicted or report.kind == "emergency"):
                self.marks.append(Mark(self.clock.now, report.kind, report.evicted,
                                       report.reclaimed))
        if result.emergency is not None:
            self.emergencies.append(result.emergency)
        self._at(self.clock.now + self.monitor.next_wait(), _TICK)

    def _sample(self, _: int) -> None:
        usage = self.probe().usage
        held = sum(len(jobs) for _, jobs, _ in self.stores)
        sample = Sample(self.clock.now, usage, raw_level(usage, self.thresholds), held,
                        self.evicted_since_sample)
        self.evicted_since_sample = 0
        self.samples.append(sample)
        if self.progress is not None:
            self.progress(min(1.0, self.clock.now / (self.config.minutes * 60.0)), sample)

    # -- the result -------------------------------------------------------------------------

    def _result(self, start_usage: int, wall: float) -> StressResult:
        samples = self.samples
        peak = max(samples, key=lambda s: s.usage)
        at_level = dict.fromkeys(LEVELS, 0.0)
        for before, after in zip(samples, samples[1:]):
            at_level[before.level] += after.t - before.t
        jobs = {
            "submitted": self.counts["submitted"],
            "completed": self.counts["completed"],
            "failed": self.counts["failed"],
            "active_lost": len(self.lost),
            "held": samples[-1].jobs,
            "results_read": self.counts["results_read"],
            "poll_misses": self.counts["poll_misses"],
            "return_hits": self.counts["return_hits"],
            "return_misses": self.counts["return_misses"],
            "results_wanted": len(self.wanted),
            "results_lost": len(self.results_lost),
        }
        # Every cleanup that measured a reclaim (periodic passes, emergencies, trims), as the
        # monitor totals them; none in a baseline run.
        reclaimed = 0 if self.monitor is None else int(self.monitor.totals["reclaimed_bytes"])
        config = self.config
        return StressResult(
            guard=config.guard,
            params={
                "seed": config.seed, "minutes": config.minutes, "rate": config.rate,
                "scale": config.scale, "guard": config.guard, "policy": self.policy.source,
                "limit": self.limit, "check_interval": self.policy.memory.check_interval,
                "sample_every": config.sample_every, "python": sys.version.split()[0],
                "unpolled": config.unpolled,
            },
            limit=self.limit,
            thresholds={
                "warning": self.thresholds.warning,
                "emergency": self.thresholds.emergency,
                "emergency_target": self.thresholds.emergency_target,
                "critical": self.thresholds.critical,
            },
            start_usage=start_usage,
            peak_usage=peak.usage,
            peak_at=peak.t,
            final_usage=samples[-1].usage,
            high_water_mark=_high_water_mark(),
            time_at_level=at_level,
            evictions=dict(sorted(self.evictions.items())),
            evicted_bytes=self.evicted_bytes,
            reclaimed_bytes=reclaimed,
            cleanups=len(self.emergencies),
            jobs=jobs,
            samples=tuple(samples),
            wall_seconds=round(wall, 3),
            marks=tuple(self.marks),
        )


def _high_water_mark() -> Optional[int]:
    """The process's peak RSS since it started (``ru_maxrss``), in bytes; None if unknown.

    Only meaningful when the run had the process to itself (``memguard stress``, the demo's
    children); the sampled peak is what the verdict uses.
    """
    try:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    except (OSError, ValueError):  # pragma: no cover - getrusage always works on Linux
        return None
    return int(peak) * (1 if sys.platform == "darwin" else 1024)


def run(config: Optional[StressConfig] = None, *,
        progress: Optional[Progress] = None) -> StressResult:
    """Run the workload once (default: `StressConfig()`) and report what it measured.

    `progress(fraction_done, sample)` is called at every memory sample. Raises ValueError
    when the policy has no numeric memory limit (``limit = "auto"``) and none was given.
    """
    return _Run(config or StressConfig(), progress).execute()

