"""`memguard tune`: replay a recorded trace against candidate policies, pick the best."""

from memguard.tools.tune.replay import Bounds, Outcome, replay
from memguard.tools.tune.report import table, to_json, to_toml
from memguard.tools.tune.search import (
    AGE_GRID,
    JOBS_GRID,
    ORDERS,
    TuneResult,
    current_bounds,
    parse_grid,
    tune,
)
from memguard.tools.tune.trace import Trace, read_trace

__all__ = [
    "AGE_GRID",
    "JOBS_GRID",
    "ORDERS",
    "Bounds",
    "Outcome",
    "Trace",
    "TuneResult",
    "current_bounds",
    "parse_grid",
    "read_trace",
    "replay",
    "table",
    "to_json",
    "to_toml",
    "tune",
]
