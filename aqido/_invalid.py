"""``InvalidValue``: an element value aqido could not read, as ``Dataset.invalid`` lists it.

Pure: no I/O.  Imported on first use (:mod:`aqido.values` re-exports it): most
results hold none, and a plain search does not pay for building the class at import.
"""

from __future__ import annotations

from typing import Any

import attrs

from aqido.errors import EXCERPT_LENGTH
from aqido.values import _cut, _reason


@attrs.frozen
class InvalidValue:
    """An element value aqido could not read: the raw text is kept, the typed value is ``None``.

    Listed by ``Dataset.invalid``; never raised.  Hashable whatever ``raw`` is (its
    hash leaves ``raw`` out); its repr shows ``raw`` cut to 200 characters.

    Attributes:
        key: the tag key (``"00080020"``).
        keyword: the PS3.6 keyword (``""`` for private or unknown tags).
        vr: the VR the server gave.
        raw: the value exactly as received (a JSON string, number, object...).
        reason: why it could not be read (at most 400 characters: a value it quotes is cut).
    """

    key: str
    keyword: str
    vr: str
    raw: Any = attrs.field(hash=False)
    reason: str = attrs.field(converter=_reason)

    def __repr__(self) -> str:
        raw = _cut(repr(self.raw), EXCERPT_LENGTH)
        return (
            f"InvalidValue(key={self.key!r}, keyword={self.keyword!r}, vr={self.vr!r},"
            f" raw={raw}, reason={self.reason!r})"
        )
