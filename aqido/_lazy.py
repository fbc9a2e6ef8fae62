"""Work deferred from import time to first use: a package's re-exports, a module's regexes.

``import aqido`` and ``import aqido.testing`` stay fast because the modules
behind their public names (aiohttp, pydicom's dictionary, pandas...) are only
imported when a name is first used (:func:`lazy_exports`).  A module's
regular expressions are compiled when first used (:func:`lazy_pattern`): a
plain search uses almost none of them, and compiling them all took ~3 ms.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from typing import Any, cast


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


def lazy_pattern(
    namespace: MutableMapping[str, Any], name: str, pattern: str, flags: int = 0
) -> re.Pattern[str]:
    """``re.compile(pattern, flags)`` on first use, for the module global ``name``.

    ``_TM = lazy_pattern(globals(), "_TM", r"...")`` binds a stand-in that
    compiles the pattern when one of its attributes is first used and then
    puts the compiled pattern in ``namespace[name]``: from then on the
    module's code finds a plain compiled pattern (one global look-up, as
    before), so hot paths cost nothing more.  ``name`` must be the global's
    own name (``tests/test_cold_start.py`` checks every one).
    """
    return cast("re.Pattern[str]", _LazyPattern(namespace, name, pattern, flags))


class _LazyPattern:
    """The stand-in of :func:`lazy_pattern`: compiles on first attribute access, then steps aside.

    Every attribute of a pattern (``.pattern`` and ``.flags`` too) comes from the compiled one.
    """

    __slots__ = ("_compiled", "_flags", "_name", "_namespace", "_source")

    def __init__(
        self, namespace: MutableMapping[str, Any], name: str, source: str, flags: int
    ) -> None:
        self._namespace = namespace
        self._name = name
        self._source = source
        self._flags = flags
        self._compiled: re.Pattern[str] | None = None

    def __getattr__(self, attribute: str) -> Any:
        compiled = self._compiled
        if compiled is None:
            compiled = self._compiled = re.compile(self._source, self._flags)
            self._namespace[self._name] = compiled
        return getattr(compiled, attribute)

    def __repr__(self) -> str:
        return f"lazy_pattern({self._source!r}, {self._flags!r})"
