"""Trusted copies of queries: what the client derives from validated queries, unchecked.

A crawl derives one query per request from a validated parent and a UID the
server returned (a study's series, a series' instances, a page's
``limit``/``offset``).  ``attrs.evolve`` would run every converter and check
again for each (~10 µs); these copy the fields as they are.  Only for values
the client checked itself: queries a user builds keep every validation.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import attrs

from aqido.query import BaseQuery, QueryLevel, _query_field_names, is_permissive_uid, is_valid_uid

__all__ = ["_child_query", "_derive"]

_BQ = TypeVar("_BQ", bound=BaseQuery)


def _derive(parent: _BQ, /, **changes: Any) -> _BQ:
    """``attrs.evolve(parent, **changes)`` without converters and checks: the client's own.

    Only for changes the client validated itself (a page's ``limit``/``offset``,
    a UID checked by :func:`_child_query`) on a validated ``parent``; never for
    what a user passes, whose queries keep every validation.
    """
    new: _BQ = _copier()(parent, object.__new__(type(parent)))
    setattr_ = object.__setattr__
    for name, value in changes.items():
        setattr_(new, name, value)
    return new


@functools.cache
def _copier() -> Callable[[Any, Any], Any]:
    """``copy(parent, new)``: every query field of ``parent`` set on ``new``, returns ``new``.

    Generated once, as attrs generates its own methods: one slot descriptor
    call per field, a third of a ``getattr``/``object.__setattr__`` loop.
    """
    names = _query_field_names()
    namespace: dict[str, Any] = {
        f"set_{i}": BaseQuery.__dict__[name].__set__ for i, name in enumerate(names)
    }
    body = "".join(f"    set_{i}(new, parent.{name})\n" for i, name in enumerate(names))
    exec(f"def copy(parent, new):\n{body}    return new\n", namespace)
    copy: Callable[[Any, Any], Any] = namespace["copy"]
    return copy


def _child_query(parent: _BQ, /, query_level: QueryLevel, **uids: str) -> _BQ:
    """``attrs.evolve(parent, query_level=query_level, **uids)`` for UIDs a server returned.

    A single valid UID (as ``permissive_uid`` wants it, no padding) takes the
    trusted path (:func:`_derive`); anything else goes through the full
    constructor, which normalises it or raises the same error as ever.  The
    caller keeps the hierarchy rules (it adds the UID the new level needs).
    """
    check = is_permissive_uid if parent.permissive_uid else is_valid_uid
    changes: dict[str, Any] = dict(uids, query_level=query_level)
    for uid in uids.values():
        if not check(uid):
            return attrs.evolve(parent, **changes)
    return _derive(parent, **changes)
