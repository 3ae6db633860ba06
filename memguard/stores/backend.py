"""Raw access to a store's data, bypassing its managed methods (and so the index): what a
`LocalHandle` reads, deletes and lists jobs through. A store that can be weakly referenced
is held weakly; a plain dict (which cannot) strongly, and is then orphaned once nothing but
its backend holds it.
"""

from __future__ import annotations

import sys
import weakref
from typing import Any, Callable

from memguard.index.job_index import Key

_MISSING: Any = object()


class Backend:
    """Raw access to a store's data, bypassing the managed methods (and so the index)."""

    needs_sync = False

    def __init__(self, store: Any, *, get: Callable[[Any, Key], Any],
                 delete: Callable[[Any, Key], None], keys: Callable[[Any], Any]) -> None:
        self._strong: Any = None
        try:
            self._ref: Callable[[], Any] = weakref.ref(store)
        except TypeError:  # plain dicts cannot be weakly referenced; they hold no handle either
            self._strong = store
            self._ref = self._held
        self._get, self._delete, self._keys = get, delete, keys

    def _held(self) -> Any:
        return self._strong

    def orphaned(self) -> bool:
        """True once nothing but this backend references the (plain dict) store: the app
        dropped it, so its manager may forget it. CPython reference counts; a weakly held
        store is never orphaned here (its finalizer unregisters it)."""
        return self._strong is not None and sys.getrefcount(self._strong) <= 2

    def get(self, key: Key) -> Any:
        store = self._ref()
        if store is None:
            raise KeyError(key)
        if self._get is dict_get:  # `dict_get`, inline: the index asks per job a scan looks at
            value = dict.get(store, key, _MISSING)
            if value is _MISSING:
                raise KeyError(key)
            return value
        return self._get(store, key)

    def delete(self, key: Key) -> None:
        store = self._ref()
        if store is not None:
            self._delete(store, key)

    def pop(self, key: Key) -> Any:
        """Get and delete `key` (KeyError if absent): one call for the eviction path."""
        store = self._ref()
        if store is None:
            raise KeyError(key)
        job = self._get(store, key)
        self._delete(store, key)
        return job

    def list_keys(self) -> list[Key]:
        store = self._ref()
        return [] if store is None else list(self._keys(store))

    def count(self) -> int:
        """How many jobs the store holds (O(1) for a dict)."""
        store = self._ref()
        return 0 if store is None else len(store)


def dict_get(store: Any, key: Key) -> Any:
    value = dict.get(store, key, _MISSING)  # dict.get never calls __missing__
    if value is _MISSING:
        raise KeyError(key)
    return value
