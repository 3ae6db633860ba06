"""Stores: `@managed_store`, `@touches`, the store handle, the registry and trace recording."""

from memguard.stores.building import handle
from memguard.stores.handle import StoreHandle, StoreStats
from memguard.stores.managed import managed_store
from memguard.stores.touches import touches

__all__ = [
    "StoreHandle",
    "StoreStats",
    "handle",
    "managed_store",
    "touches",
]
