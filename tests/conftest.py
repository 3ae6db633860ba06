"""Shared fixtures: an isolated manager on a fake clock, so tests never touch the default."""

from __future__ import annotations

import pytest

from memguard import MemoryManager
from memguard.policy.options import ENVIRONMENT_KNOBS
from memguard.testing import FakeClock


@pytest.fixture(autouse=True)
def _no_policy_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests see the built-in policy, whatever the shell running them exports."""
    for name in ENVIRONMENT_KNOBS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1000.0)


@pytest.fixture
def manager(clock: FakeClock) -> MemoryManager:
    return MemoryManager(clock=clock)
