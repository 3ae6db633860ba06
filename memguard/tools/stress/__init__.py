"""The stress workload: the seed's six stores under AI-sized results, on a simulated clock."""

from memguard.tools.stress.config import (
    DEFAULT_MINUTES,
    DEFAULT_RATE,
    DEFAULT_SEED,
    SEED_STORES,
    StoreProfile,
    StressConfig,
)
from memguard.tools.stress.results import Mark, Sample, StressResult
from memguard.tools.stress.run import run

__all__ = [
    "DEFAULT_MINUTES",
    "DEFAULT_RATE",
    "DEFAULT_SEED",
    "SEED_STORES",
    "Mark",
    "Sample",
    "StoreProfile",
    "StressConfig",
    "StressResult",
    "run",
]
