"""`memguard tune`: replay a recorded trace against candidate policies, pick the best."""

from memguard.tools.tune.replay import (
    Bounds,
    CheckedOutcome,
    EmergencyModel,
    Outcome,
    replay,
    replay_checked,
)
from memguard.tools.tune.report import table, to_json, to_toml
from memguard.tools.tune.search import (
    AGE_GRID,
    CHECK_TIMES,
    JOBS_GRID,
    ORDERS,
    TuneResult,
    current_bounds,
    emergency_ceiling,
    parse_grid,
    tune,
)
from memguard.tools.tune.trace import Trace, read_trace

__all__ = [
    "AGE_GRID",
    "CHECK_TIMES",
    "JOBS_GRID",
    "ORDERS",
    "Bounds",
    "CheckedOutcome",
    "EmergencyModel",
    "Outcome",
    "Trace",
    "TuneResult",
    "current_bounds",
    "emergency_ceiling",
    "parse_grid",
    "read_trace",
    "replay",
    "replay_checked",
    "table",
    "to_json",
    "to_toml",
    "tune",
]
