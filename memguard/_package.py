"""The module class of the `memguard` package: public names load on first access and keep
their meaning once loaded.

`import memguard` imports only this and the version; each public name is imported from the
module that holds it when first reached (PEP 562 ``__getattr__`` in ``memguard/__init__.py``).
One name needs more than PEP 562: ``memguard.manager`` is the default `MemoryManager`, held by
the submodule ``memguard.manager``, and importing a submodule binds it on its package (the
import system's ``setattr(package, "manager", module)``), which would shadow the instance for
every later ``memguard.manager.start()``. This class keeps the public name instead.
"""

from __future__ import annotations

from types import ModuleType


class Package(ModuleType):
    """A package whose public names (its ``__all__``) win over same-named submodules."""

    def __setattr__(self, name: str, value: object) -> None:
        if (isinstance(value, ModuleType) and value.__name__ == f"{self.__name__}.{name}"
                and name in self.__dict__.get("__all__", ()) and hasattr(value, name)):
            value = getattr(value, name)  # memguard.manager: the instance, not its module
        super().__setattr__(name, value)
