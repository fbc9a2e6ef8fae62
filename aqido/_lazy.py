"""Lazy re-exports for a package ``__init__``: names resolved on first attribute access.

``import aqido`` and ``import aqido.testing`` stay fast because the modules
behind their public names (aiohttp, pydicom's dictionary, pandas...) are only
imported when a name is first used.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from typing import Any


def lazy_exports(
    package: str,
    namespace: MutableMapping[str, Any],
    lazy: Mapping[str, str],
    public: Sequence[str],
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Return the module ``__getattr__`` and ``__dir__`` for ``package``.

    ``lazy`` maps a public name to the module that defines it; the first
    access imports that module and caches the value in ``namespace`` (the
    package's ``globals()``), so later accesses are plain look-ups.
    """

    def __getattr__(name: str) -> Any:
        module = lazy.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(public))

    return __getattr__, __dir__
