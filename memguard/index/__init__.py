"""The job index: recency orders, active jobs, pins and sizes beside each store.

Imports nothing else of memguard.
"""

from memguard.index.estimate import estimate_size
from memguard.index.job_index import JobIndex, Key

__all__ = [
    "JobIndex",
    "Key",
    "estimate_size",
]
