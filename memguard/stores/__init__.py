"""Stores: `@managed_store`, `@touches`, the `StoreHandle` protocol and the in-process
handle, the registry and trace recording."""

from memguard.stores.building import handle
from memguard.stores.handle import LocalHandle
from memguard.stores.managed import managed_store
from memguard.stores.protocol import StoreHandle, StoreStats
from memguard.stores.touches import touches

__all__ = [
    "LocalHandle",
    "StoreHandle",
    "StoreStats",
    "handle",
    "managed_store",
    "touches",
]
