"""How stores find their manager: `memguard.stores.registry` and the default manager."""

from __future__ import annotations

from typing import Any

import memguard
from memguard import MemoryManager, Policy, handle, managed_store
from memguard.stores import registry
from memguard.testing import FakeClock


def test_the_default_manager_is_the_registrys_default() -> None:
    assert registry.default_host() is memguard.manager
    assert memguard.manager in registry.hosts()


def test_a_store_without_manager_registers_with_the_default_one() -> None:
    @managed_store(name="registry_default_probe")
    class Jobs(dict):  # type: ignore[type-arg]
        pass

    store = Jobs()
    assert handle(store).manager is memguard.manager
    assert handle(store) in memguard.manager.stores["registry_default_probe"]
    del store  # unregistered when collected
    assert "registry_default_probe" not in memguard.manager.stores


def test_every_manager_is_a_host_and_plain_dicts_are_found_through_it() -> None:
    manager = MemoryManager(Policy(), clock=FakeClock(0.0))
    assert manager in registry.hosts()
    plain: dict[str, Any] = {"a": {"status": "done"}}
    found = manager.setup_job_store_cleanup(plain, "plain_registry")
    assert handle(plain) is found and manager.plain_handle(plain) is found
    assert manager.forget(plain)
    assert manager.plain_handle(plain) is None
