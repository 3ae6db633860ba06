"""Shared fixtures: an isolated manager on a fake clock, so tests never touch the default."""

from __future__ import annotations

import pytest

from memguard import MemoryManager
from memguard.testing import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1000.0)


@pytest.fixture
def manager(clock: FakeClock) -> MemoryManager:
    return MemoryManager(clock=clock)
