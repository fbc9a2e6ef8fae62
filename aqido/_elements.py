"""Stored elements (:class:`_El`) and the one-pass decoding of the common responses.

Pure: no I/O.  A dataset keeps its elements by uppercase tag key in an
:class:`_Elements`; an element of a VR other than SQ that holds a ``Value``
array, or nothing but its ``vr``, by far the most common shapes, is kept as an
:class:`_El` (its ``vr`` and the values as a tuple, ``UNSET`` without
``Value``); every other element (SQ, ``BulkDataURI``, ``InlineBinary``) as its
JSON object.  An ``_El`` is never tracked by the cyclic garbage collector: a
crawl keeps thousands of results alive while their studies complete, and the
collector would rescan every container they hold at each collection.
:func:`_json_of` gives any stored element back as its JSON object.

:func:`fast_stored` decodes a response body made only of such elements, with
uppercase tag keys, straight into stored datasets: msgspec decodes and
checks the shape in one C pass.  Anything else (an SQ, bulk data, an escape,
a key not made of 8 uppercase hex digits, a value of another type, malformed JSON) returns
``None``, and the body takes the general path (decode, then validate each
item), which words every error.
"""

from __future__ import annotations

import gc
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeGuard, final

import msgspec
from msgspec import UNSET, UnsetType

from aqido._json import _GC_PAUSE_BYTES
from aqido.values import VRS

if TYPE_CHECKING:  # pragma: no cover
    _FlatVR = str
    _Value = Any
else:
    _FlatVR = Literal[tuple(sorted(frozenset(VRS) - {"SQ"}))]
    # What the JSON decoders give alike: an int within 64 bits (orjson makes larger ones
    # floats), a float, a string, null, a PN object of strings; bools, nested arrays and
    # anything else take the general path.
    _Value = (
        str
        | Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
        | float
        | dict[str, str | None]
        | None
    )


@final
class _El(msgspec.Struct, gc=False, forbid_unknown_fields=True, frozen=True):
    """A stored element of a VR other than SQ: ``{"vr": vr, "Value": [...]}`` or ``{"vr": vr}``."""

    vr: _FlatVR
    Value: tuple[_Value, ...] | UnsetType = UNSET


#: A stored element (see the module docstring): an ``_El`` or a JSON object.
StoredElement = _El | Mapping[str, Any]


class _Elements(dict[str, Any]):
    """The elements of one dataset by uppercase tag key, validated, in stored form.

    A plain dict in all but its type, which marks it as already validated (and
    stored as the module docstring says): ``attrs.evolve`` passes it back to
    ``__init__``, which then takes it as it is.
    """

    __slots__ = ()


#: Uppercase tag keys already checked (at most 65,536).
_GOOD_KEYS: set[str] = set()
_GOOD_KEYS_MAX = 65536
_UPPER_HEX = frozenset("0123456789ABCDEF")


def _learn_keys(item: dict[str, Any]) -> bool:
    """Whether every key of ``item`` is an uppercase tag key (8 hex digits); remembers them.

    For :func:`fast_stored`'s keys not seen before (a new process's first answer, a
    server's private tags): a lowercase one (to be normalised) or anything else sends
    the body to the general path, which words the error.
    """
    good = _GOOD_KEYS
    new = [key for key in item if key not in good]
    for key in new:
        if len(key) != 8 or not _UPPER_HEX.issuperset(key):
            return False
    if len(good) + len(new) <= _GOOD_KEYS_MAX:
        good.update(new)
    return True


def _json_of(elem: StoredElement) -> Mapping[str, Any]:
    """The DICOM JSON object of a stored element (a new one for an ``_El``, else ``elem``)."""
    if type(elem) is _El:
        if elem.Value is UNSET:
            return {"vr": elem.vr}
        return {"vr": elem.vr, "Value": list(elem.Value)}
    return elem


def _is_sequence(elem: StoredElement) -> TypeGuard[Mapping[str, Any]]:
    """Whether an element is an SQ (always a JSON object: SQ is never an ``_El``)."""
    return type(elem) is not _El and elem.get("vr") == "SQ"


def json_item(stored: Mapping[str, Any]) -> dict[str, Any]:
    """The DICOM JSON object of stored elements (new objects for the ``_El``)."""
    return {key: _json_of(elem) for key, elem in stored.items()}


def raw_items(items: list[Any]) -> list[dict[str, Any]]:
    """``items`` as DICOM JSON objects: stored datasets (:class:`_Elements`) converted."""
    return [json_item(item) if type(item) is _Elements else item for item in items]


def _canonical_default(value: Any) -> Any:
    """``default`` of :func:`aqido._dataset.canonical`: an ``_El`` as its JSON object."""
    return _json_of(value) if type(value) is _El else str(value)


#: Refuses an SQ (not a ``_FlatVR``), ``BulkDataURI`` and ``InlineBinary`` (unknown fields)
#: itself, where it meets them: a body with one is not scanned for them first (a scan of
#: every body cost about as much as one decoding in ten), and fails at its first (in the
#: first item, for a study listing whose studies carry one).
_DECODER = msgspec.json.Decoder(list[dict[str, _El]])


def fast_stored(body: bytes) -> list[_Elements] | None:
    """The items of ``body`` as stored datasets, or ``None`` when it needs the general path."""
    if type(body) is not bytes:
        return None
    # As in decode_json: the cyclic GC is paused while a large body is decoded.
    paused = len(body) > _GC_PAUSE_BYTES and gc.isenabled()
    if paused:
        gc.disable()
    try:
        data = _DECODER.decode(body)
    except (msgspec.MsgspecError, ValueError):  # bad UTF-8: a UnicodeDecodeError in 0.19
        return None
    finally:
        if paused:
            gc.enable()
    good = _GOOD_KEYS
    out: list[_Elements] = []
    for item in data:
        if not good.issuperset(item) and not _learn_keys(item):
            return None
        out.append(_Elements(item))
    return out


def _copy_element(elem: StoredElement) -> dict[str, Any]:
    """A new DICOM JSON object for a stored element (nothing shared with it)."""
    if type(elem) is _El:
        if elem.Value is UNSET:
            return {"vr": elem.vr}
        return {"vr": elem.vr, "Value": [_copy_json(v) for v in elem.Value]}
    return _copy_json(elem)  # type: ignore[no-any-return]


def _copy_json(value: Any) -> Any:
    """A deep copy of a JSON value (dicts, lists, scalars), without recursion.

    Iterative: the deepest sequence nesting the decoder accepts (341 levels of SQ)
    would otherwise reach Python's recursion limit.
    """
    if type(value) is dict:
        root: Any = {}
    elif type(value) is list:
        root = []
    else:
        return value
    stack = [(value, root)]
    while stack:
        source, copy = stack.pop()
        pairs = source.items() if type(source) is dict else enumerate(source)
        for key, item in pairs:
            kind = type(item)
            if kind is dict or kind is list:
                new: Any = {} if kind is dict else []
                stack.append((item, new))
                item = new
            if type(copy) is dict:
                copy[key] = item
            else:
                copy.append(item)
    return root
