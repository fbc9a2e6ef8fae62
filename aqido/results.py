"""Typed QIDO-RS results: DICOM JSON (PS3.18 Annex F) structured by cattrs.

Pure: no I/O.  The entry points are :func:`decode_json` (bytes → list of
DICOM JSON objects), :func:`structure` (objects + query level → ``Study`` /
``Series`` / ``Instance``), :func:`parse_results` (both) and
:func:`build_tree` (flat results → study → series → instance tree).

Every result is a :class:`Dataset`: a read-only mapping addressable by keyword
(``ds["PatientName"]``), tag key (``ds["00100010"]``) or int tag
(``ds[0x00100010]``), iterating over keywords (tag keys for private and
unknown tags).  ``Study``/``Series``/``Instance`` are frozen attrs classes
that also have one typed field per default return attribute of their level.

Rules
-----
* **Values.** ``ds[key]`` gives ``None`` for an empty attribute, the value
  when there is one, a tuple when there are several (as pydicom does); SQ
  always gives a tuple of nested :class:`Dataset`.  Typed fields declared as
  tuples (``ModalitiesInStudy``) always give tuples.  Types by VR are listed
  in :mod:`aqido.values`.
* **Empty.** No ``Value``, ``"Value": []``, ``[""]`` and ``[null]`` all mean
  empty (``None``, or ``()`` for tuple fields).  Inside a multi-valued
  attribute an empty or ``null`` entry is ``None``: ``("CT", None, "MR")``.
* **Invalid values never raise.**  A value that cannot be read for its VR (DA
  ``"2023-01-01"``, IS ``"abc"``, a PN that is a number) reads as ``None``; the
  raw text stays in the element (``ds.element(key).values``) and the problem
  is listed in ``ds.invalid`` as :class:`~aqido.values.InvalidValue`
  (key, keyword, VR, raw value, reason).
* **Round trip.** ``to_json()`` returns the elements exactly as received
  (same ``Value`` arrays, including ``[]``/``[""]``/``[null]`` and trailing NUL
  padding), except that tag keys are uppercased.  ``to_pydicom()`` is
  ``pydicom.Dataset.from_json`` of that (so it raises what pydicom raises for
  values pydicom cannot read, such as an IS of ``"N/A"``).
* **Typed fields are views of the raw elements.**  ``Study(raw=item)`` reads
  every field from ``item``; a field given to ``__init__`` or
  ``attrs.evolve`` (``evolve(series, StudyInstanceUID=uid_from_the_path)``)
  rewrites its element, so ``to_json()``, the mapping API and the fields
  always agree.  ``attrs.evolve(study, series=...)`` keeps every attribute.
* **Structural errors raise.**  :class:`~aqido.errors.InvalidResponseError`
  (naming the item index and tag) when the body is not JSON, not an array of
  objects, or an item has a malformed tag key, a missing or unknown VR, an
  element that is not an object, a ``Value`` that is not an array, more than
  one of ``Value``/``BulkDataURI``/``InlineBinary``, or an SQ item that is
  not an object.  Unknown extra members of an element are tolerated.
* **Lazy conversion.** Structuring validates every element but converts
  values only on first access (then caches them), so parsing stays close to
  the cost of decoding the JSON.  The objects keep a reference to the
  decoded items (no copy is made): do not modify items after structuring
  them.
"""

from __future__ import annotations

import datetime
import gc
import json
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, Union, get_args, get_origin

import attrs
import cattrs

from aqido import dictionary
from aqido.errors import InvalidResponseError, excerpt
from aqido.query import QueryLevel
from aqido.values import (
    _STRIP,
    INT_VRS,
    PARSERS,
    VRS,
    BulkDataURI,
    DSFloat,
    InlineBinary,
    InvalidValue,
    PersonName,
    Tag,
    is_empty,
    parse_da,
    parse_tm,
    parse_value,
)

if TYPE_CHECKING:  # pragma: no cover
    import pydicom


#: Text that may hold what orjson refuses and the standard library accepts: a surrogate
#: escape (lone or paired), a raw surrogate (``str`` input), a number of 19+ digits
#: or with a 3-digit exponent (out of range).  Only then are the slower checks made.
_SUSPECT = re.compile(r"\\u[dD][89a-fA-F]|[\ud800-\udfff]|[0-9]{19}|[eE][+-]?[0-9]{3}")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _checked_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number out of range: {text[:40]}")
    return value


def _checked_int(text: str) -> int | float:
    value = int(text)  # more than 4300 digits: ValueError
    if -(2**63) <= value < 2**64:
        return value
    try:  # as orjson: an integer beyond 64 bits becomes a float, unless that overflows
        return float(value)
    except OverflowError:
        raise ValueError(f"number out of range: {text[:40]}") from None


def _check_strings(data: Any) -> None:
    """Raise ValueError if a string (or key) in ``data`` holds a lone surrogate."""
    stack = [data]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            strings: Iterable[Any] = (value,)
        elif isinstance(value, dict):
            strings = value.keys()
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
            continue
        else:
            continue
        for text in strings:
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError("lone surrogate in a JSON string") from None


def _stdlib_loads(body: bytes | str) -> Any:
    """``json.loads`` refusing what orjson refuses: deep nesting, out-of-range numbers,
    NaN/Infinity, lone surrogates and invalid UTF-8 (all as ``ValueError``)."""
    text = body.decode("utf-8") if isinstance(body, bytes | bytearray) else body
    suspect = _SUSPECT.search(text) is not None
    try:
        if not suspect:
            return json.loads(text, parse_constant=_reject_constant)
        data = json.loads(
            text,
            parse_constant=_reject_constant,
            parse_float=_checked_float,
            parse_int=_checked_int,
        )
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    _check_strings(data)
    return data


try:
    import orjson

    _loads: Callable[[bytes | str], Any] = orjson.loads
except ImportError:  # pragma: no cover - exercised only without the "fast" extra
    _loads = _stdlib_loads

__all__ = [
    "Dataset",
    "Element",
    "Instance",
    "Series",
    "Study",
    "build_tree",
    "decode_json",
    "make_converter",
    "parse_results",
    "structure",
]

_VALUE_KEYS = ("Value", "BulkDataURI", "InlineBinary")
#: Bodies larger than this are decoded with the cyclic GC paused (see decode_json).
_GC_PAUSE_BYTES = 64 * 1024
_MISSING: Any = object()
_T = TypeVar("_T")


# --------------------------------------------------------------------------- validation


class _ItemError(Exception):
    """Internal: a structural problem in one DICOM JSON object (message without the index)."""


_GOOD_KEYS: set[str] = set()
_HEX = frozenset("0123456789ABCDEFabcdef")


def _check_key(key: object) -> str:
    """Return the uppercase form of a tag key, or raise ``_ItemError``."""
    if not isinstance(key, str) or len(key) != 8 or not _HEX.issuperset(key):
        raise _ItemError(f"malformed tag key {key!r} (expected 8 hex digits such as '00100010')")
    upper = key.upper()
    if upper == key and len(_GOOD_KEYS) < 65536:
        _GOOD_KEYS.add(key)
    return upper


def _check_element(key: str, elem: object) -> object:
    """Validate one element; return it, or a replacement when nested items were normalised."""
    if type(elem) is not dict:
        raise _ItemError(f"tag {key}: element is not a JSON object ({type(elem).__name__})")
    vr = elem.get("vr", _MISSING)
    if vr not in VRS:
        if vr is _MISSING:
            raise _ItemError(f"tag {key}: element has no 'vr'")
        raise _ItemError(f"tag {key}: unknown VR {vr!r}")
    if len(elem) == 1:
        return elem
    present = [k for k in _VALUE_KEYS if k in elem]
    if len(present) > 1:
        raise _ItemError(f"tag {key}: element has more than one of {' / '.join(present)}")
    if not present:
        return elem
    value = elem[present[0]]
    if present[0] != "Value":
        if not isinstance(value, str):
            raise _ItemError(f"tag {key}: {present[0]} must be a string")
        return elem
    if type(value) is not list:
        raise _ItemError(f"tag {key}: 'Value' must be a JSON array, not {type(value).__name__}")
    if vr != "SQ":
        return elem
    items = value
    for i, item in enumerate(value):
        if type(item) is not dict:
            raise _ItemError(f"tag {key}: sequence item {i} is not a JSON object")
        try:
            checked = _check_item(item)
        except _ItemError as exc:
            raise _ItemError(f"tag {key}, sequence item {i}: {exc}") from None
        if checked is not item:
            if items is value:
                items = list(value)
            items[i] = checked
    if items is value:
        return elem
    return {**elem, "Value": items}


def _check_item(item: dict[str, Any]) -> dict[str, Any]:
    """Validate one DICOM JSON object; return it, or a normalised copy (uppercase keys)."""
    replaced: dict[str, Any] | None = None
    good = _GOOD_KEYS
    for key, elem in item.items():
        if key not in good:
            upper = _check_key(key)
            if upper != key:
                replaced = replaced if replaced is not None else {}
                replaced[key] = _MISSING
                key = upper  # checked below under its normalised name
        # Fast path for the common shapes; anything else goes through _check_element.
        if type(elem) is dict and len(elem) == 2 and type(elem.get("Value")) is list:
            vr = elem.get("vr")
            if vr in VRS and vr != "SQ":
                continue
        elif type(elem) is dict and len(elem) == 1 and elem.get("vr") in VRS:
            continue
        checked = _check_element(key, elem)
        if checked is not elem:
            replaced = replaced if replaced is not None else {}
            replaced[key] = checked
    if replaced is None:
        return item
    out: dict[str, Any] = {}
    for key, elem in item.items():
        upper = key.upper()
        if upper in out:
            raise _ItemError(f"tag {upper} appears twice (keys differ only in case)")
        out[upper] = replaced.get(upper, elem)
    return out


# --------------------------------------------------------------------------- values


def _parse_values(elem: Mapping[str, Any], expected: type | None) -> tuple[Any, ...]:
    """All values of a non-SQ element, parsed for its VR: ``None`` for empty or unreadable ones.

    Returns ``()`` when every value is empty.  ``expected`` (a Python type) turns
    values of another type into ``None`` too.
    """
    values = elem.get("Value")
    if not values:
        if "BulkDataURI" in elem:
            return (BulkDataURI(elem["BulkDataURI"]),)
        if "InlineBinary" in elem:
            return (InlineBinary(elem["InlineBinary"]),)
        return ()
    vr = elem["vr"]
    out: list[Any] = []
    seen = False
    for value in values:
        if is_empty(value):
            out.append(None)
            continue
        try:
            parsed = parse_value(value, vr)
        except (ValueError, TypeError, OverflowError):
            parsed = None
        else:
            if expected is not None and not isinstance(parsed, expected):
                parsed = None
        seen = seen or parsed is not None
        out.append(parsed)
    return tuple(out) if seen else ()


def _invalid_values(key: str, elem: Mapping[str, Any]) -> list[InvalidValue]:
    """The values of one element that cannot be read, as ``InvalidValue`` records."""
    values = elem.get("Value")
    vr = elem["vr"]
    bad: list[InvalidValue] = []
    if vr == "SQ" or not values:
        if "InlineBinary" in elem:
            try:
                InlineBinary(elem["InlineBinary"]).to_bytes()
            except ValueError as exc:
                bad.append(_invalid(key, vr, elem["InlineBinary"], str(exc)))
        return bad
    for value in values:
        if is_empty(value):
            continue
        try:
            parse_value(value, vr)
        except (ValueError, TypeError, OverflowError) as exc:
            bad.append(_invalid(key, vr, value, str(exc)))
    return bad


def _invalid(key: str, vr: str, raw: Any, reason: str) -> InvalidValue:
    return InvalidValue(key, dictionary.keyword_for(int(key, 16)), vr, raw, reason)


# --------------------------------------------------------------------------- keys

_NAME_CACHE: dict[str | int, str] = {}


def _key_for(name: str | int) -> str:
    """Turn a keyword, tag key or int tag into the uppercase tag key; ``KeyError`` if unknown."""
    try:
        return _NAME_CACHE[name]
    except (KeyError, TypeError):
        pass
    try:
        tag, _ = dictionary.resolve(name)
    except ValueError as exc:
        raise KeyError(name) from exc
    key = dictionary.tag_key(tag)
    if len(_NAME_CACHE) < 65536 and isinstance(name, str | int):
        _NAME_CACHE[name] = key
    return key


_KEYWORD_CACHE: dict[str, str] = {}


def _key_for_or_none(name: str | int) -> str | None:
    try:
        return _key_for(name)
    except KeyError:
        return None


def _name_for(key: str) -> str:
    """The name iteration yields for a tag key: its keyword, or the key itself."""
    try:
        return _KEYWORD_CACHE[key]
    except KeyError:
        pass
    name = dictionary.name_for(int(key, 16))
    if len(_KEYWORD_CACHE) < 65536:
        _KEYWORD_CACHE[key] = name
    return name


# --------------------------------------------------------------------------- context


class _Context:
    """What a converter gives the objects it built: the hooks used for lazy conversion."""

    def __init__(self, converter: cattrs.Converter) -> None:
        self.converter = converter
        self._hooks: dict[Any, Callable[[Any, Any], Any]] = {}

    def hook(self, type_: Any) -> Callable[[Any, Any], Any]:
        try:
            return self._hooks[type_]
        except KeyError:
            hook = self._hooks[type_] = self.converter.get_structure_hook(type_)
            return hook

    def value(self, elem: Mapping[str, Any]) -> Any:
        """The mapping-API value of an element: None, one value, a tuple; SQ → tuple."""
        vr = elem["vr"]
        if vr == "SQ":
            return self.hook(tuple[Dataset, ...])(elem, tuple[Dataset, ...])
        values = self.hook(_ValuesOf)(elem, _ValuesOf)
        if not values:
            return None
        return values[0] if len(values) == 1 else values


class _ValuesOf:
    """Marker type: structure an element into the tuple of its parsed values (any VR)."""


# --------------------------------------------------------------------------- Dataset


class Dataset(Mapping[str, Any]):
    """A DICOM dataset from DICOM JSON: a read-only mapping by keyword, tag key or int tag.

    ``ds["PatientName"]``, ``ds["00100010"]`` and ``ds[0x00100010]`` return the
    Python value (see the module docstring for the rules); ``ds.element(key)``
    gives the raw element (VR and JSON values).  Iteration yields keywords, or
    tag keys for private and unknown tags.  Build one with
    :meth:`from_json` or :meth:`from_pydicom`.
    """

    _raw: dict[str, Any]
    _ctx: ClassVar[_Context]

    def __init__(self, raw: Mapping[str, Any] | None = None) -> None:
        object.__setattr__(self, "_raw", _validated(dict(raw or {})))

    @classmethod
    def _lazy(cls: type[_D], raw: dict[str, Any], ctx: _Context | None = None) -> _D:
        """Build without running ``__init__``: ``raw`` must already be validated."""
        obj = object.__new__(cls)
        d = obj.__dict__
        d["_raw"] = raw
        if ctx is not None and ctx is not _DEFAULT_CONTEXT:
            d["_ctx"] = ctx
        return obj

    @classmethod
    def from_json(cls: type[_D], item: Mapping[str, Any]) -> _D:
        """Build from one DICOM JSON object; raise ``InvalidResponseError`` if malformed."""
        return _structure_one(_DEFAULT_CONTEXT.converter, dict(item), cls)

    @classmethod
    def from_pydicom(cls: type[_D], ds: pydicom.Dataset) -> _D:
        """Build from a ``pydicom.Dataset`` (through its ``to_json_dict()``)."""
        return cls.from_json(ds.to_json_dict())

    # -- mapping API
    def __getitem__(self, name: str | int) -> Any:
        key = name if name in self._raw else _key_for(name)
        try:
            cache: dict[str, Any] = self.__dict__["_values"]
        except KeyError:
            cache = self.__dict__["_values"] = {}
        try:
            return cache[key]
        except KeyError:
            pass
        elem = self._raw[key]
        value = cache[key] = self._ctx.value(elem)
        return value

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str | int):
            return False
        return name in self._raw or _key_for_or_none(name) in self._raw

    def __iter__(self) -> Iterator[str]:
        return (_name_for(key) for key in self._raw)

    def __len__(self) -> int:
        return len(self._raw)

    def element(self, name: str | int) -> Element:
        """The raw element for ``name``: tag, keyword, VR and the JSON it came from."""
        key = _key_for(name)
        return Element(key=key, json=self._raw[key])

    @property
    def invalid(self) -> tuple[InvalidValue, ...]:
        """Values that could not be read for their VR (typed value ``None``, raw text kept).

        Covers this dataset's own elements; nested sequence items have their own ``.invalid``.
        """
        bad: list[InvalidValue] = []
        for key, elem in self._raw.items():
            bad += _invalid_values(key, elem)
        return tuple(bad)

    # -- conversion
    def to_json(self) -> dict[str, Any]:
        """Return the DICOM JSON object (a deep copy of the elements as received)."""
        return _copy_json(self._raw)  # type: ignore[no-any-return]

    def to_pydicom(
        self, bulk_data_uri_handler: Callable[..., bytes | None] | None = None
    ) -> pydicom.Dataset:
        """Return ``pydicom.Dataset.from_json(self.to_json())`` (imports pydicom on first use)."""
        import pydicom

        return pydicom.Dataset.from_json(self.to_json(), bulk_data_uri_handler)

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, Dataset)
        return self._raw == other._raw

    def __hash__(self) -> int:
        return hash(json.dumps(self._raw, sort_keys=True, default=str))

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={self[name]!r}" for name in list(self)[:6])
        more = ", ..." if len(self) > 6 else ""
        return f"{type(self).__name__}({shown}{more})"

    def _repr_html_(self) -> str:
        """Jupyter's rich display: see :mod:`aqido.display`."""
        from aqido.display import dataset_html

        return dataset_html(self)


_D = TypeVar("_D", bound=Dataset)


def _copy_json(value: Any) -> Any:
    if type(value) is dict:
        return {k: _copy_json(v) for k, v in value.items()}
    if type(value) is list:
        return [_copy_json(v) for v in value]
    return value


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


# --------------------------------------------------------------------------- models


class _LazyField:
    """Non-data descriptor computing a typed field from the raw element on first access.

    Values set by ``__init__`` live in the instance ``__dict__`` and shadow it.
    """

    __slots__ = ("ctx", "default", "hook", "key", "name", "type")

    def __init__(self, name: str, key: str, type_: Any, default: Any) -> None:
        self.name = name
        self.key = key
        self.type = type_
        self.default = default
        self.ctx: _Context | None = None
        self.hook: Callable[[Any, Any], Any] | None = None

    def __get__(self, obj: Dataset | None, owner: type | None = None) -> Any:
        if obj is None:
            return self
        elem = obj._raw.get(self.key)
        if elem is None:
            value = self.default
        else:
            ctx = obj._ctx
            hook = self.hook
            if ctx is not self.ctx or hook is None:
                hook = ctx.hook(self.type)
                if ctx is _DEFAULT_CONTEXT:
                    self.ctx, self.hook = ctx, hook
            value = hook(elem, self.type)
        obj.__dict__[self.name] = value
        return value


class _Model(Dataset):
    """Shared behaviour of Study/Series/Instance: typed fields mirror raw elements."""

    def __repr__(self) -> str:
        """Short: the identifying attributes and the number of children (:mod:`aqido.display`)."""
        from aqido.display import short_repr

        return short_repr(self)

    #: (field name, tag key, type, default) of the typed fields, filled by _install.
    _typed: ClassVar[tuple[tuple[str, str, Any, Any], ...]] = ()

    def __attrs_post_init__(self) -> None:
        """Make the raw elements agree with the typed fields given to ``__init__``/``evolve``.

        The raw DICOM JSON is the one source of truth: a field given a value
        that differs from what the raw element reads as rewrites that element;
        a field not given at all is read from ``raw``.  Afterwards every typed
        field is a (lazily converted) view of the raw elements again.
        """
        d = self.__dict__
        raw = _validated(d["_raw"])
        ctx = self._ctx
        changed: dict[str, Any] | None = None
        for name, key, type_, default in self._typed:
            given = d.pop(name)
            if given is _FROM_RAW:
                continue
            elem = raw.get(key)
            current = default if elem is None else ctx.hook(type_)(elem, type_)
            if given == current and type(given) is type(current):
                continue
            if changed is None:
                changed = dict(raw)
            encoded = _encode_field(ctx.converter, key, given)
            if encoded is None:
                changed.pop(key, None)
            else:
                changed[key] = encoded
        if changed is not None:
            try:
                raw = _check_item(dict(sorted(changed.items())))
            except _ItemError as exc:
                raise ValueError(f"cannot encode the given fields as DICOM JSON: {exc}") from None
        object.__setattr__(self, "_raw", raw)


class _FromRaw:
    """Default of the typed fields: "not given, read it from ``raw``"."""

    def __repr__(self) -> str:
        return "<read from raw>"


_FROM_RAW: Any = _FromRaw()


def _validated(raw: dict[str, Any]) -> dict[str, Any]:
    try:
        return _check_item(raw)
    except _ItemError as exc:
        raise InvalidResponseError(f"invalid DICOM JSON object: {exc}") from None


def _encode_field(converter: cattrs.Converter, key: str, value: Any) -> dict[str, Any] | None:
    """DICOM JSON element for a typed field value (``None`` when the value is empty)."""
    vr = dictionary.vr_for(int(key, 16)) or "UN"
    if value is None or (isinstance(value, tuple | list) and not value):
        return None
    values = value if isinstance(value, tuple | list) else (value,)
    return {"vr": vr, "Value": [converter.unstructure(v) for v in values]}


def _as_tuple(children: Iterable[Any]) -> tuple[Any, ...]:
    return tuple(children)


@attrs.frozen(kw_only=True, slots=False, eq=True, hash=True, repr=False)
class Instance(_Model):
    """One instance (image) from a QIDO-RS instance search: the default return attributes.

    Missing attributes are ``None``; every other returned attribute (includefield,
    private tags, the study/series attributes of a relational search) is
    available through the mapping API (``instance["PatientName"]``).
    """

    SpecificCharacterSet: tuple[str, ...] = _FROM_RAW
    SOPClassUID: str | None = _FROM_RAW
    SOPInstanceUID: str | None = _FROM_RAW
    InstanceAvailability: str | None = _FROM_RAW
    TimezoneOffsetFromUTC: str | None = _FROM_RAW
    RetrieveURL: str | None = _FROM_RAW
    InstanceNumber: int | None = _FROM_RAW
    Rows: int | None = _FROM_RAW
    Columns: int | None = _FROM_RAW
    BitsAllocated: int | None = _FROM_RAW
    NumberOfFrames: int | None = _FROM_RAW
    StudyInstanceUID: str | None = _FROM_RAW
    SeriesInstanceUID: str | None = _FROM_RAW
    _raw: dict[str, Any] = attrs.field(factory=dict, hash=False, repr=False, alias="raw")


@attrs.frozen(kw_only=True, slots=False, eq=True, hash=True, repr=False)
class Series(_Model):
    """One series from a QIDO-RS series search; ``instances`` is filled by crawls and build_tree."""

    SpecificCharacterSet: tuple[str, ...] = _FROM_RAW
    Modality: str | None = _FROM_RAW
    TimezoneOffsetFromUTC: str | None = _FROM_RAW
    SeriesDescription: str | None = _FROM_RAW
    RetrieveURL: str | None = _FROM_RAW
    SeriesInstanceUID: str | None = _FROM_RAW
    SeriesNumber: int | None = _FROM_RAW
    NumberOfSeriesRelatedInstances: int | None = _FROM_RAW
    PerformedProcedureStepStartDate: datetime.date | None = _FROM_RAW
    PerformedProcedureStepStartTime: datetime.time | None = _FROM_RAW
    RequestAttributesSequence: tuple[Dataset, ...] = _FROM_RAW
    StudyInstanceUID: str | None = _FROM_RAW
    instances: tuple[Instance, ...] = attrs.field(default=(), converter=_as_tuple, repr=False)
    _raw: dict[str, Any] = attrs.field(factory=dict, hash=False, repr=False, alias="raw")


@attrs.frozen(kw_only=True, slots=False, eq=True, hash=True, repr=False)
class Study(_Model):
    """One study from a QIDO-RS study search; ``series`` is filled by crawls and build_tree."""

    SpecificCharacterSet: tuple[str, ...] = _FROM_RAW
    StudyDate: datetime.date | None = _FROM_RAW
    StudyTime: datetime.time | None = _FROM_RAW
    AccessionNumber: str | None = _FROM_RAW
    InstanceAvailability: str | None = _FROM_RAW
    ModalitiesInStudy: tuple[str, ...] = _FROM_RAW
    ReferringPhysicianName: PersonName | None = _FROM_RAW
    TimezoneOffsetFromUTC: str | None = _FROM_RAW
    RetrieveURL: str | None = _FROM_RAW
    PatientName: PersonName | None = _FROM_RAW
    PatientID: str | None = _FROM_RAW
    PatientBirthDate: datetime.date | None = _FROM_RAW
    PatientSex: str | None = _FROM_RAW
    StudyInstanceUID: str | None = _FROM_RAW
    StudyID: str | None = _FROM_RAW
    StudyDescription: str | None = _FROM_RAW
    NumberOfStudyRelatedSeries: int | None = _FROM_RAW
    NumberOfStudyRelatedInstances: int | None = _FROM_RAW
    series: tuple[Series, ...] = attrs.field(default=(), converter=_as_tuple, repr=False)
    _raw: dict[str, Any] = attrs.field(factory=dict, hash=False, repr=False, alias="raw")


_MODELS: dict[QueryLevel, type[_Model]] = {
    QueryLevel.STUDY: Study,
    QueryLevel.SERIES: Series,
    QueryLevel.INSTANCE: Instance,
}


def _install(cls: Any) -> None:
    """Resolve field types and put the lazy descriptors on ``cls`` (after attrs built it)."""
    attrs.resolve_types(cls, globalns=globals())
    typed = []
    for field in attrs.fields(cls):
        if field.name == "_raw":
            continue
        default = () if get_origin(field.type) is tuple else None  # when the element is missing
        if field.name in ("series", "instances"):
            setattr(cls, field.name, _LazyField(field.name, "", None, ()))
            continue
        tag = dictionary.tag_for_keyword(field.name)
        assert tag is not None, field.name
        key = dictionary.tag_key(tag)
        setattr(cls, field.name, _LazyField(field.name, key, field.type, default))
        typed.append((field.name, key, field.type, default))
    cls._typed = tuple(typed)


for _cls in _MODELS.values():
    _install(_cls)


# --------------------------------------------------------------------------- converter


def _is_tuple_of(type_: Any) -> bool:
    args = get_args(type_)
    return get_origin(type_) is tuple and len(args) == 2 and args[1] is Ellipsis


def _optional_inner(type_: Any) -> Any:
    args = [a for a in get_args(type_) if a is not type(None)]
    return args[0] if get_origin(type_) is Union or len(args) == 1 else None


class DicomJSONConverter(cattrs.Converter):
    """A cattrs converter carrying the context its results use for lazy conversion."""

    def __init__(self) -> None:
        super().__init__()
        self.context = _Context(self)


def make_converter() -> DicomJSONConverter:
    """Return a cattrs converter that structures DICOM JSON into aqido's result types.

    Structure hooks:

    * ``Dataset``, ``Study``, ``Series``, ``Instance``: a DICOM JSON object →
      validated object whose values are converted lazily, through this converter.
    * ``T | None`` for each value type (``str``, ``int``, ``float``, ``DSFloat``,
      ``date``, ``time``, ``datetime``, ``PersonName``, ``Tag``): a DICOM JSON
      *element* → its first value (``None`` if empty or unreadable).
    * ``tuple[T, ...]``: an element → all its values; ``tuple[Dataset, ...]``:
      an SQ element → its items.

    Unstructure hooks turn Python values back into DICOM JSON values.
    """
    converter = DicomJSONConverter()
    context = converter.context

    def model_hook(obj: Any, cls: type[_D]) -> _D:
        if type(obj) is not dict:
            raise InvalidResponseError(
                f"a DICOM JSON object was expected, not {type(obj).__name__}"
            )
        try:
            raw = _check_item(obj)
        except _ItemError as exc:
            raise InvalidResponseError(str(exc)) from None
        return cls._lazy(raw, context)

    for cls in (Dataset, *_MODELS.values()):
        converter.register_structure_hook(cls, model_hook)

    def values_hook(elem: Mapping[str, Any], _: Any) -> tuple[Any, ...]:
        return _parse_values(elem, None)

    converter.register_structure_hook(_ValuesOf, values_hook)

    scalar_types: tuple[type, ...] = (
        str,
        int,
        float,
        DSFloat,
        datetime.date,
        datetime.time,
        datetime.datetime,
        PersonName,
        Tag,
    )

    def scalar_factory(type_: Any) -> Callable[[Any, Any], Any]:
        def hook(elem: Mapping[str, Any], _: Any) -> Any:
            values = _parse_values(elem, type_)
            return values[0] if values else None

        return hook

    for type_ in scalar_types:
        converter.register_structure_hook(type_, scalar_factory(type_))

    # Fast paths for the shapes QIDO-RS servers send for default attributes; they
    # give the same results as the generic hooks above, which handle the rest.
    generic_str = scalar_factory(str)
    generic_int = scalar_factory(int)
    generic_date = scalar_factory(datetime.date)
    generic_time = scalar_factory(datetime.time)
    generic_pn = scalar_factory(PersonName)

    def str_hook(elem: Mapping[str, Any], _: Any) -> Any:
        values = elem.get("Value")
        if values and type(values[0]) is str and elem["vr"] not in PARSERS:
            return values[0].strip(_STRIP) or None
        return generic_str(elem, str)

    def int_hook(elem: Mapping[str, Any], _: Any) -> Any:
        values = elem.get("Value")
        if values and type(values[0]) is int and elem["vr"] in INT_VRS:
            return values[0]
        return generic_int(elem, int)

    def parsed_hook(
        vr: str, parse: Callable[[str], Any], generic: Callable[[Any, Any], Any]
    ) -> Callable[[Any, Any], Any]:
        def hook(elem: Mapping[str, Any], type_: Any) -> Any:
            values = elem.get("Value")
            if values and type(values[0]) is str and elem["vr"] == vr:
                try:
                    return parse(values[0])
                except ValueError:
                    return None
            return generic(elem, type_)

        return hook

    def pn_hook(elem: Mapping[str, Any], _: Any) -> Any:
        values = elem.get("Value")
        if values and type(values[0]) is dict and elem["vr"] == "PN":
            try:
                return PersonName.from_json(values[0]) or None
            except ValueError:
                return None
        return generic_pn(elem, PersonName)

    def str_tuple_hook(elem: Mapping[str, Any], _: Any) -> tuple[Any, ...]:
        values = elem.get("Value")
        if values and elem["vr"] not in PARSERS and all(type(v) is str for v in values):
            out = tuple(v.strip(_STRIP) or None for v in values)
            return out if any(out) else ()
        return _parse_values(elem, str)

    converter.register_structure_hook(str, str_hook)
    converter.register_structure_hook(int, int_hook)
    converter.register_structure_hook(datetime.date, parsed_hook("DA", parse_da, generic_date))
    converter.register_structure_hook(datetime.time, parsed_hook("TM", parse_tm, generic_time))
    converter.register_structure_hook(PersonName, pn_hook)

    def optional_factory(type_: Any) -> Callable[[Any, Any], Any]:
        return converter.get_structure_hook(_optional_inner(type_))

    converter.register_structure_hook_factory(
        lambda t: _optional_inner(t) in scalar_types and type(None) in get_args(t),
        optional_factory,
    )

    def sequence_hook(elem: Mapping[str, Any], _: Any) -> tuple[Dataset, ...]:
        if elem.get("vr") != "SQ":
            return ()
        return tuple(model_hook(item, Dataset) for item in elem.get("Value") or ())

    def tuple_factory(type_: Any) -> Callable[[Any, Any], Any]:
        inner = get_args(type_)[0]
        if isinstance(inner, type) and issubclass(inner, Dataset):
            return sequence_hook
        if inner is str:
            return str_tuple_hook

        def hook(elem: Mapping[str, Any], _: Any) -> tuple[Any, ...]:
            return _parse_values(elem, inner)

        return hook

    converter.register_structure_hook_factory(_is_tuple_of, tuple_factory)

    converter.register_unstructure_hook(datetime.date, lambda d: d.strftime("%Y%m%d"))
    converter.register_unstructure_hook(datetime.time, _format_tm)
    converter.register_unstructure_hook(datetime.datetime, _format_dt)
    converter.register_unstructure_hook(PersonName, lambda p: p.to_json())
    converter.register_unstructure_hook(Tag, lambda t: t.key)
    converter.register_unstructure_hook(DSFloat, lambda d: d.text)
    converter.register_unstructure_hook_func(
        lambda t: isinstance(t, type) and issubclass(t, Dataset), lambda d: d.to_json()
    )
    return converter


def _format_tm(t: datetime.time) -> str:
    text = t.strftime("%H%M%S")
    return f"{text}.{t.microsecond:06d}" if t.microsecond else text


def _format_dt(dt: datetime.datetime) -> str:
    text = dt.strftime("%Y%m%d%H%M%S")
    if dt.microsecond:
        text += f".{dt.microsecond:06d}"
    if dt.utcoffset() is not None:
        text += dt.strftime("%z")
    return text


def _context_of(converter: cattrs.Converter) -> _Context:
    if not isinstance(converter, DicomJSONConverter):
        raise TypeError("the converter must come from aqido.results.make_converter()")
    return converter.context


_DEFAULT_CONVERTER = make_converter()
_DEFAULT_CONTEXT = _context_of(_DEFAULT_CONVERTER)
Dataset._ctx = _DEFAULT_CONTEXT


# --------------------------------------------------------------------------- entry points


def _describe(body: bytes | str) -> str:
    head = body[:64].lstrip()
    head_text = head.decode("utf-8", "replace") if isinstance(head, bytes) else head
    if head_text.startswith("--"):
        return " (it looks like a multipart body: was application/dicom+json accepted?)"
    if head_text.startswith("<"):
        return " (it looks like HTML or XML)"
    return ""


def decode_json(
    body: bytes | str, *, url: object = None, status: int | None = None
) -> list[dict[str, Any]]:
    """Decode a QIDO-RS response body into its list of DICOM JSON objects.

    Uses orjson when installed (the ``fast`` extra), the standard library
    otherwise.  An empty or whitespace-only body (a 204) gives ``[]``.  Raises
    :class:`~aqido.errors.InvalidResponseError` (with an excerpt) when the body
    is not JSON or not an array of objects; ``url`` and ``status`` (optional)
    are put on that error.
    """
    if not body or body.isspace():
        return []
    if body[:3] == b"\xef\xbb\xbf" or body[:1] == "\ufeff":  # a UTF-8 byte order mark
        body = body[3:] if isinstance(body, bytes) else body[1:]
    # Decoding builds a large tree of live containers, never garbage nor cycles, yet
    # every few hundred allocations make the cyclic GC rescan it (doubling the time
    # of a 10 MB body).  The GC is paused for this one C call, which holds the GIL.
    paused = len(body) > _GC_PAUSE_BYTES and gc.isenabled()
    if paused:
        gc.disable()
    try:
        data = _loads(body)
    except ValueError as exc:  # json/orjson decode errors and bad UTF-8 are ValueErrors
        raise InvalidResponseError(
            f"response body is not JSON{_describe(body)}: {exc}", body=body, url=url, status=status
        ) from exc
    finally:
        if paused:
            gc.enable()
    if type(data) is dict and data and all(dictionary.is_tag_key(key) for key in data):
        # One dataset instead of an array of one (some servers; dicomweb-client accepts it).
        return [data]
    if type(data) is not list:
        raise InvalidResponseError(
            f"response body is a JSON {_json_type(data)}, not an array of DICOM JSON objects",
            body=body,
            url=url,
            status=status,
        )
    for index, item in enumerate(data):
        if type(item) is not dict:
            raise InvalidResponseError(
                f"item {index} of the response is a JSON {_json_type(item)}, "
                "not a DICOM JSON object",
                body=body,
                url=url,
                status=status,
            )
    return data


def _json_type(value: object) -> str:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    return "number"


def _structure_one(converter: cattrs.Converter, item: Any, cls: type[_D]) -> _D:
    try:
        return converter.structure(item, cls)
    except cattrs.BaseValidationError as exc:  # pragma: no cover - our hooks raise no cattrs errors
        raise InvalidResponseError(f"cannot structure {cls.__name__}: {exc}") from None


def structure(
    items: Sequence[Any],
    level: QueryLevel | str,
    *,
    converter: cattrs.Converter | None = None,
    url: object = None,
    status: int | None = None,
) -> list[Any]:
    """Structure decoded DICOM JSON objects into ``Study``, ``Series`` or ``Instance`` objects.

    ``level`` is the query level (``QueryLevel.STUDY`` → ``Study`` ...).  Every
    element is validated now; values are converted on first access.  Raises
    :class:`~aqido.errors.InvalidResponseError` naming the item index and tag
    (with ``url`` and ``status`` when given).
    """
    cls = _MODELS[QueryLevel(level)]
    converter = converter or _DEFAULT_CONVERTER
    context = _context_of(converter)
    out: list[Any] = []
    append = out.append
    lazy = cls._lazy
    check = _check_item
    # The converter's own hook (registered by make_converter) is used when the
    # converter was customised; the default one is inlined for speed (same code).
    hook = converter.get_structure_hook(cls)
    inline = converter is _DEFAULT_CONVERTER
    index = 0
    try:
        for index, item in enumerate(items):  # noqa: B007 - index is reported on error
            if inline and type(item) is dict:
                append(lazy(check(item), context))
            else:
                append(hook(item, cls))
    except (_ItemError, InvalidResponseError) as exc:
        message = str(exc).split("; body starts:")[0]
        raise InvalidResponseError(
            f"item {index} is not a valid DICOM JSON object: {message}",
            body=_excerpt_item(items[index]),
            url=url,
            status=status,
        ) from None
    except cattrs.BaseValidationError as exc:  # pragma: no cover - defensive
        raise InvalidResponseError(f"item {index}: {exc}", url=url, status=status) from None
    return out


def _excerpt_item(item: Any) -> str:
    try:
        return excerpt(json.dumps(item, ensure_ascii=False, default=repr))
    except (TypeError, ValueError):  # pragma: no cover - defensive
        return excerpt(repr(item))


def parse_results(
    body_or_items: bytes | str | Sequence[Any],
    level: QueryLevel | str,
    *,
    converter: cattrs.Converter | None = None,
    url: object = None,
    status: int | None = None,
) -> list[Any]:
    """Decode (bytes or str) and structure a QIDO-RS response: ``structure(decode_json(body))``.

    ``url`` and ``status`` (optional) are put on any ``InvalidResponseError``.
    """
    if isinstance(body_or_items, bytes | bytearray | str):
        items: Sequence[Any] = decode_json(
            bytes(body_or_items) if isinstance(body_or_items, bytearray) else body_or_items,
            url=url,
            status=status,
        )
    else:
        items = body_or_items
    return structure(items, level, converter=converter, url=url, status=status)


# --------------------------------------------------------------------------- tree

_RETRIEVE_URL = "00081190"
# A child's RetrieveURL names the child, not its parent: it is never copied (see _parent).
_STUDY_KEYS = tuple(key for _, key, _, _ in Study._typed if key != _RETRIEVE_URL)
_SERIES_KEYS = tuple(key for _, key, _, _ in Series._typed if key != _RETRIEVE_URL)
_PATH_SEGMENTS = {Study: ("studies", "0020000D"), Series: ("series", "0020000E")}


def _parent(cls: type[_D], child: Dataset, keys: Iterable[str]) -> _D:
    """A placeholder parent made from a child's parent-level attributes.

    Its RetrieveURL is the child's cut after ``/studies/{uid}`` (``/series/{uid}``
    for a series), as PS3.18 builds them; ``None`` if the child's has no such part.
    """
    raw = child._raw
    out = {k: raw[k] for k in keys if k in raw}
    segment, uid_key = _PATH_SEGMENTS[cls]
    url, uid = child.get("RetrieveURL"), child.get(uid_key)
    if isinstance(url, str) and isinstance(uid, str):
        head, found, _ = url.partition(f"/{segment}/{uid}/")
        if found:
            out[_RETRIEVE_URL] = {"vr": "UR", "Value": [f"{head}/{segment}/{uid}"]}
    return cls._lazy(out, child._ctx)


def build_tree(results: Iterable[Study | Series | Instance]) -> list[Study]:
    """Group flat results into a study → series → instance tree, by UID.

    Like dicomtrolley's ``QidoRS.parse_qido_response``: series and instances are
    attached under their parents (``Study.series``, ``Series.instances``).  A
    parent that is not itself in ``results`` is made from the child's
    parent-level default attributes (a relational result carries them), with
    a RetrieveURL derived from the child's, never copied.  The
    first result with a given UID wins (later duplicates are dropped); order of
    first appearance is kept.  Children already attached are kept.  Results with
    no parent UID are grouped under a parent whose UID is ``None``.
    """
    studies: dict[str | None, Study] = {}
    real_studies: set[str | None] = set()
    series: dict[tuple[str | None, str | None], Series] = {}
    real_series: set[tuple[str | None, str | None]] = set()
    series_of: dict[str | None, list[tuple[str | None, str | None]]] = {}
    instances: dict[tuple[str | None, str | None], dict[str | None, Instance]] = {}

    def add_study(study: Study, placeholder: bool) -> None:
        uid = study.StudyInstanceUID
        if uid in studies and (placeholder or uid in real_studies):
            return
        studies[uid] = study
        series_of.setdefault(uid, [])
        if not placeholder:
            real_studies.add(uid)

    def add_series(item: Series, placeholder: bool) -> tuple[str | None, str | None]:
        key = (item.StudyInstanceUID, item.SeriesInstanceUID)
        add_study(_parent(Study, item, _STUDY_KEYS), True)
        if key in series and (placeholder or key in real_series):
            return key
        if key not in series:
            series_of[key[0]].append(key)
        series[key] = item
        if not placeholder:
            real_series.add(key)
        return key

    for result in results:
        if isinstance(result, Study):
            add_study(result, False)
        elif isinstance(result, Series):
            add_series(result, False)
        elif isinstance(result, Instance):
            key = add_series(_parent(Series, result, (*_SERIES_KEYS, *_STUDY_KEYS)), True)
            instances.setdefault(key, {}).setdefault(result.SOPInstanceUID, result)
        else:
            raise TypeError(f"build_tree() takes Study/Series/Instance, not {type(result)!r}")

    tree: list[Study] = []
    for uid, study in studies.items():
        children = list(study.series)
        known = {s.SeriesInstanceUID for s in children}
        for key in series_of[uid]:
            item = series[key]
            if item.SeriesInstanceUID in known:
                continue
            extra = instances.get(key, {})
            if extra:
                have = {i.SOPInstanceUID for i in item.instances}
                new = [i for uid_, i in extra.items() if uid_ not in have]
                item = attrs.evolve(item, instances=(*item.instances, *new))
            children.append(item)
        tree.append(attrs.evolve(study, series=tuple(children)) if children else study)
    return tree
