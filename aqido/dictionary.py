"""The DICOM data dictionary (PS3.6): keyword ↔ tag ↔ VR lookups.

aqido uses pydicom's dictionary, the well-kept one, but not through
``import pydicom`` (which costs about 200 ms): the dictionary is a plain data
module inside pydicom, loaded on first use on its own (about 3 ms).  When that
file cannot be found (a future pydicom layout), it falls back to
``pydicom.datadict``.

Vocabulary (as in pydicom): a *keyword* is ``"PatientID"``, a *tag* is the int
``0x00100020``, a *tag key* is the DICOM JSON form ``"00100020"`` (8 uppercase
hex digits).

Pure: no I/O besides reading the dictionary module once.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from typing import Any

from aqido._lazy import lazy_pattern

_TAG_KEY = lazy_pattern(globals(), "_TAG_KEY", r"[0-9A-Fa-f]{8}")

# One entry: (VR, VM, name, retired, keyword)
_Entry = tuple[str, str, str, str, str]


@functools.cache
def _tables() -> tuple[dict[int, _Entry], dict[str, int], list[tuple[int, int, _Entry]]]:
    """Load the dictionary once: (tag → entry, keyword → tag, repeater masks)."""
    module: Any = None
    spec = importlib.util.find_spec("pydicom")
    if spec is not None and spec.origin:
        path = os.path.join(os.path.dirname(spec.origin), "_dicom_dict.py")
        if os.path.exists(path):
            file_spec = importlib.util.spec_from_file_location("_aqido_pydicom_dict", path)
            if file_spec is not None and file_spec.loader is not None:
                module = importlib.util.module_from_spec(file_spec)
                file_spec.loader.exec_module(module)
    if module is None:  # pragma: no cover - only with an unusual pydicom layout
        from pydicom import datadict as module
    by_tag: dict[int, _Entry] = dict(module.DicomDictionary)
    by_keyword = {entry[4]: tag for tag, entry in by_tag.items() if entry[4]}
    repeaters: list[tuple[int, int, _Entry]] = []
    for pattern, entry in module.RepeatersDictionary.items():
        mask = int("".join("0" if c == "x" else "F" for c in pattern), 16)
        value = int(pattern.replace("x", "0"), 16)
        repeaters.append((mask, value, entry))
    return by_tag, by_keyword, repeaters


def _entry(tag: int) -> _Entry | None:
    by_tag, _, repeaters = _tables()
    entry = by_tag.get(tag)
    if entry is not None:
        return entry
    if is_private(tag):  # (6045,1302) is private, not the overlay repeater (60xx,1302)
        return None
    for mask, value, rep in repeaters:
        if tag & mask == value:
            return rep
    return None


def tag_key(tag: int) -> str:
    """Return the DICOM JSON key of ``tag``: 8 uppercase hex digits (``"0020000D"``)."""
    return f"{tag:08X}"


def is_tag_key(key: object) -> bool:
    """Return whether ``key`` is a tag key: a ``str`` of exactly 8 hex digits (any case)."""
    return isinstance(key, str) and _TAG_KEY.fullmatch(key) is not None


def parse_tag_key(key: str) -> int:
    """Parse an 8-hex-digit tag key (any case) into an int; raise ``ValueError`` otherwise."""
    if not is_tag_key(key):
        raise ValueError(f"{key!r} is not a DICOM tag (expected 8 hex digits such as '00100010')")
    return int(key, 16)


@functools.lru_cache(maxsize=4096)
def tag_for_keyword(keyword: str) -> int | None:
    """Return the tag of a PS3.6 keyword (``"PatientName"`` → ``0x00100010``), or ``None``."""
    return _tables()[1].get(keyword)


@functools.lru_cache(maxsize=4096)
def keyword_for(tag: int) -> str:
    """Return the keyword of ``tag``, or ``""`` for unknown and private tags."""
    entry = _entry(tag)
    return entry[4] if entry is not None else ""


def name_for(tag: int) -> str:
    """Return the name results use for ``tag``: its keyword, or its tag key if it has none.

    Repeating groups (50xx, 60xx) share keywords: only the tag a keyword
    resolves to is named by it, the others by their tag key (``0x60023000``
    is ``"60023000"``, though its keyword is ``"OverlayData"``).
    """
    keyword = keyword_for(tag)
    return keyword if keyword and tag_for_keyword(keyword) == tag else tag_key(tag)


@functools.lru_cache(maxsize=4096)
def vr_for(tag: int) -> str | None:
    """Return the dictionary VR of ``tag`` (e.g. ``"PN"``; may be ``"US or SS"``), or ``None``."""
    entry = _entry(tag)
    return entry[0] if entry is not None else None


@functools.lru_cache(maxsize=4096)
def vm_for(tag: int) -> str | None:
    """Return the dictionary value multiplicity of ``tag`` (``"1"``, ``"1-n"``...), or ``None``."""
    entry = _entry(tag)
    return entry[1] if entry is not None else None


def is_private(tag: int) -> bool:
    """Return whether ``tag`` is in a private group (odd group number)."""
    return bool((tag >> 16) & 1)


def resolve(name: str | int) -> tuple[int, str]:
    """Resolve a keyword, a tag key or an int tag into ``(tag, keyword)``.

    The keyword is ``""`` for private or unknown-but-well-formed tags.  Raises
    ``ValueError`` with a readable message for an unknown keyword or a
    malformed tag.
    """
    if isinstance(name, int) and not isinstance(name, bool):
        if not 0 <= name <= 0xFFFFFFFF:
            raise ValueError(f"{name!r} is not a DICOM tag (must fit in 32 bits)")
        return name, keyword_for(name)
    if not isinstance(name, str):
        raise ValueError(f"{name!r} is not a DICOM keyword or tag")
    if is_tag_key(name):
        tag = int(name, 16)
        return tag, keyword_for(tag)
    found = tag_for_keyword(name)
    if found is None:
        raise ValueError(
            f"{name!r} is not a DICOM keyword (PS3.6) nor an 8-hex-digit tag such as '00100010'"
        )
    return found, name
