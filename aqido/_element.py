"""``Element``: one raw DICOM JSON element, as :meth:`aqido.results.Dataset.element` gives it.

Pure: no I/O.  Imported on first use (:mod:`aqido.results` re-exports it): a
plain search never builds one, nor pays for building the class at import.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from aqido import dictionary
from aqido.values import InlineBinary, Tag


@attrs.frozen
class Element:
    """One raw DICOM JSON element: its tag key and the JSON object (``vr`` + value member).

    Attributes:
        key: the uppercase tag key (``"00100010"``).
        json: the element exactly as received.
    """

    key: str
    json: Mapping[str, Any]

    @property
    def tag(self) -> Tag:
        """The tag as an int (:class:`~aqido.values.Tag`)."""
        return Tag(self.key)

    @property
    def keyword(self) -> str:
        """The PS3.6 keyword, ``""`` for private and unknown tags."""
        return dictionary.keyword_for(int(self.key, 16))

    @property
    def vr(self) -> str:
        """The VR the server gave."""
        return str(self.json["vr"])

    @property
    def values(self) -> tuple[Any, ...]:
        """The raw JSON ``Value`` array as a tuple (``()`` without ``Value``)."""
        return tuple(self.json.get("Value") or ())

    @property
    def bulk_data_uri(self) -> str | None:
        """The ``BulkDataURI`` member, if any."""
        value = self.json.get("BulkDataURI")
        return None if value is None else str(value)

    @property
    def inline_binary(self) -> bytes | None:
        """The ``InlineBinary`` member decoded to bytes, if any (``ValueError`` if not base64)."""
        value = self.json.get("InlineBinary")
        return None if value is None else InlineBinary(value).to_bytes()
