"""The stress workload's configuration: the seed's six stores and their results."""

from __future__ import annotations

import math
from typing import Any, Final, Optional, Union

import attrs

from memguard.policy.files import bundled_policy
from memguard.policy.policy import Policy
from memguard.policy.units import parse_size

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
    #: A file to record the guarded run's trace to (`memguard.stores.trace`), for `memguard tune`.
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
