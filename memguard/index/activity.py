"""Which jobs of a store are active, and which are pinned: the index's two lists of jobs
that must not be evicted, each with the bookkeeping that keeps it cheap.

- `ActiveJobs`: the jobs seen active (or pinned) at their last look, with `rotation`, the
  round-robin order in which they are looked at again in bounded batches (a few per insert,
  more per pass; finished ones found do not count against a batch). Its size is the
  `active` figure of `stats()`, kept without a scan.
- `Pins`: how many pins each key holds (a pin of a job not stored yet waits for it), and how
  many stored jobs are pinned.

A `JobIndex` owns one of each and calls them with its lock held.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from typing import Any, Callable, Optional

Key = Hashable


class ActiveJobs:
    """The jobs known active, and the round robin that looks at them again."""

    __slots__ = ("known", "rotation")

    def __init__(self) -> None:
        self.known: dict[Key, None] = {}
        self.rotation: deque[Key] = deque()

    def clear(self) -> None:
        self.known.clear()
        self.rotation.clear()

    def mark(self, key: Key) -> None:
        """`key` was seen active: it joins the round robin, if it is not in it already."""
        if key not in self.known:
            self.known[key] = None
            self.rotation.append(key)
            if len(self.rotation) > 2 * len(self.known) + 64:
                self.rotation = deque(self.known)  # stale entries of jobs gone or finished

    def recheck(self, job_of: Callable[[Key], Any], is_active: Callable[[Key, Any], bool],
                finished: Callable[[Key, Any], None], active: Optional[int],
                most: Optional[int]) -> None:
        """Look again at the known-active jobs, round robin, for one lap at most; call
        `finished(key, job)` for each no longer active (it takes the key out of `known`).

        `job_of(key)` returns the job, or `ABSENT` for a job gone. The lap stops after
        `active` jobs found still active (None: no limit) or `most` looks in all. Finished
        jobs do not count against `active`: each is found finished once in its life
        (amortized O(1) a job), so a pass after many jobs finished weighs them all, as the
        first pass after they finish always did, while a store of long-running jobs costs a
        bounded batch per pass, not a look at every one of them.
        """
        if len(self.rotation) > 2 * len(self.known) + 64:
            self.rotation = deque(self.known)  # stale entries: rebuild (amortized O(1))
        rotation, known = self.rotation, self.known
        lap = len(rotation) if most is None else min(most, len(rotation))
        still = 0
        for _ in range(lap):
            if active is not None and still >= active:
                return
            key = rotation.popleft()
            if key not in known:
                continue  # stale: removed or seen finished since
            job = job_of(key)
            if job is ABSENT:
                continue
            if is_active(key, job):
                rotation.append(key)
                still += 1
            else:
                finished(key, job)


class Pins:
    """Pin counts by key; `jobs` counts the stored jobs among them.

    `counts` keeps its identity (the index reads it on every write): when deletions have
    left it much larger than its keys need, it is rebuilt in place.
    """

    __slots__ = ("churn", "counts", "jobs")

    def __init__(self) -> None:
        self.counts: dict[Key, int] = {}
        self.jobs = 0  # stored jobs with a pin (pins of absent keys do not count)
        self.churn = 0

    def clear(self) -> None:
        self.counts.clear()
        self.jobs = self.churn = 0

    def add(self, key: Key) -> bool:
        """One more pin on `key`; True for its first."""
        count = self.counts.get(key, 0)
        self.counts[key] = count + 1
        return not count

    def drop(self, key: Key) -> bool:
        """One pin less on `key`; True when that was its last."""
        count = self.counts.get(key, 0)
        if count > 1:
            self.counts[key] = count - 1
            return False
        if self.counts.pop(key, None) is None:
            return False
        self.churned()
        return True

    def forget(self, key: Key) -> bool:
        """Every pin of `key` goes (its job left the store); True if it had any."""
        if self.counts.pop(key, None) is None:
            return False
        self.churned()
        return True

    def churned(self) -> None:
        """Give the table's memory back now and then: a dict never shrinks by deletion."""
        self.churn += 1
        counts = self.counts
        if not counts:
            counts.clear()  # an empty dict's table is freed
            self.churn = 0
        elif self.churn > max(64, 2 * len(counts)):
            kept = dict(counts)
            counts.clear()
            counts.update(kept)
            self.churn = 0


class _Absent:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<absent>"


#: What a `job_of` given to `ActiveJobs.recheck` returns for a job that is gone.
ABSENT: Any = _Absent()
