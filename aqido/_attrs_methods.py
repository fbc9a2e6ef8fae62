"""``__repr__``, ``__eq__`` and ``__hash__`` shared by small frozen attrs classes.

attrs writes these methods as Python source for each class and compiles them
when the class is built: for ``Retry``, ``Timeout`` and ``PersonName``, which a
plain ``import aqido`` builds, that was about a third of their cost at import
(the compiler is the largest single cost of a cold start).  A class decorated
``@attrs.frozen(repr=False, eq=False)`` that derives from :class:`ValueMethods`
gets the same behaviour from these three functions instead:

- ``repr``: ``Name(field=value!r, ...)`` over the fields with ``repr=True``;
- ``==``: ``NotImplemented`` for another class, else every field with
  ``eq=True`` compared with ``==``, in order;
- ``hash``: the class and those fields' values (``hash=False`` leaves one out).

Their per-call cost is higher than attrs' generated code; none of these classes
is compared or hashed on a hot path.  ``tests/test_attrs_methods.py`` checks
each class against attrs' own methods.
"""

from __future__ import annotations

from typing import Any

import attrs


def _fields(cls: type) -> tuple[attrs.Attribute[Any], ...]:
    return cls.__attrs_attrs__  # type: ignore[attr-defined, no-any-return]


class ValueMethods:
    """Mixin: the methods of the module docstring, for an attrs class with ``repr``/``eq`` off."""

    __slots__ = ()

    def __repr__(self) -> str:
        cls = self.__class__
        shown = ", ".join(
            f"{field.name}={getattr(self, field.name)!r}" for field in _fields(cls) if field.repr
        )
        return f"{cls.__qualname__.rsplit('>.', 1)[-1]}({shown})"

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        for field in _fields(self.__class__):
            if field.eq and not getattr(self, field.name) == getattr(other, field.name):
                return False
        return True

    def __hash__(self) -> int:
        cls = self.__class__
        return hash(
            (
                cls,
                *(
                    getattr(self, field.name)
                    for field in _fields(cls)
                    if (field.eq if field.hash is None else field.hash)
                ),
            )
        )
