"""The DICOM JSON ``Dataset`` mapping, and the validation every structured object passes.

Pure: no I/O.  :class:`Dataset` is a read-only mapping by keyword, tag key or
int tag over one validated DICOM JSON object; values are converted on first
access through the cattrs converter that built it (its :class:`_Context`).
The default converter's context (:mod:`aqido._structure`, which builds that
converter on first use) is set as ``Dataset._ctx`` when that module is
imported, which :mod:`aqido.results` always does.

The rules (values, empty values, invalid values, round trips, structural
errors, lazy conversion) are listed once, in :mod:`aqido.results`.

How a dataset stores its elements (:class:`_Elements`): see :mod:`aqido._elements`
(an :class:`~aqido._elements._El` for a VR other than SQ with a ``Value`` array or
nothing but its ``vr``, else the JSON object).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from aqido import dictionary
from aqido._elements import (
    _GOOD_KEYS,
    _GOOD_KEYS_MAX,
    StoredElement,
    _canonical_default,
    _copy_element,
    _El,
    _Elements,
    _is_sequence,
    _json_of,
)
from aqido._json import dumps
from aqido.errors import InvalidResponseError, excerpt
from aqido.values import (
    VRS,
    BulkDataURI,
    InlineBinary,
    is_empty,
    parse_value,
)

if TYPE_CHECKING:  # pragma: no cover
    import cattrs
    import pydicom

    from aqido._element import Element
    from aqido._invalid import InvalidValue

_VALUE_KEYS = ("Value", "BulkDataURI", "InlineBinary")

_MISSING: Any = object()


# --------------------------------------------------------------------------- validation


#: Most sequence levels (the outermost and innermost half each), and longest ``repr`` of a
#: server's value (a tag key, a VR), in characters, an error's message shows.
_SHOWN_LEVELS, _SHOWN_VALUE = 6, 60


class _ItemError(Exception):
    """Internal: a structural problem in one DICOM JSON object (message without the index).

    ``levels``: the sequence items it is in, innermost first (``tag X, sequence item N``);
    the message names at most :data:`_SHOWN_LEVELS` (340 levels of nesting made it 11 KB).
    """

    levels: tuple[str, ...] = ()

    def __str__(self) -> str:
        levels, half = self.levels[::-1], _SHOWN_LEVELS // 2
        if len(levels) > _SHOWN_LEVELS:
            hidden = f"… ({len(levels) - 2 * half} more sequence levels)"
            levels = (*levels[:half], hidden, *levels[-half:])
        return ": ".join([*levels, str(self.args[0])])


_FLAT_VRS = frozenset(VRS) - {"SQ"}
_HEX = frozenset("0123456789ABCDEFabcdef")


def _check_key(key: object) -> str:
    """Return the uppercase form of a tag key, or raise ``_ItemError``."""
    if not isinstance(key, str) or len(key) != 8 or not _HEX.issuperset(key):
        shown = excerpt(repr(key), _SHOWN_VALUE)
        raise _ItemError(f"malformed tag key {shown} (expected 8 hex digits such as '00100010')")
    upper = key.upper()
    if upper == key and len(_GOOD_KEYS) < _GOOD_KEYS_MAX:
        _GOOD_KEYS.add(key)
    return upper


def _check_element(key: str, elem: object) -> dict[str, Any]:
    """Validate one element of any shape; return it (an SQ one with its items normalised)."""
    if type(elem) is not dict:
        raise _ItemError(f"tag {key}: element is not a JSON object ({type(elem).__name__})")
    vr = elem.get("vr", _MISSING)
    if type(vr) is not str or vr not in VRS:
        if vr is _MISSING:
            raise _ItemError(f"tag {key}: element has no 'vr'")
        raise _ItemError(f"tag {key}: unknown VR {excerpt(repr(vr), _SHOWN_VALUE)}")
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
    # A sequence item is checked as a dataset is (_stored), and kept as JSON with
    # uppercase keys inside its SQ element: its dataset, built on first access, stores
    # it.  Two frames per level of nesting (this and _stored), no more: the decoder
    # accepts 341 levels of SQ (1,024 of JSON), which must not reach the recursion limit.
    items: list[dict[str, Any]] = []
    for i, item in enumerate(value):
        if type(item) is not dict:
            raise _ItemError(f"tag {key}: sequence item {i} is not a JSON object")
        try:
            stored = _stored(item)
        except _ItemError as exc:
            exc.levels = (*exc.levels, f"tag {key}, sequence item {i}")
            raise
        items.append({k: _json_of(e) for k, e in stored.items()})
    return {**elem, "Value": items}


def _store(elem: dict[str, Any]) -> Any:
    """The stored form of one validated element: an ``_El`` when it is not SQ and has
    a ``Value`` array or nothing but its ``vr``."""
    vr = elem["vr"]
    if vr == "SQ" or len(elem) > 2:
        return elem
    if len(elem) == 1:
        return _El(vr)
    value = elem.get("Value")
    return _El(vr, tuple(value)) if type(value) is list else elem


def _stored(item: dict[str, Any]) -> _Elements:
    """Validate one DICOM JSON object and return its elements in stored form.

    Raises ``_ItemError``.  One pass: tag keys are checked and uppercased, every
    element is checked (the common shapes here, the rest by :func:`_check_element`),
    and stored as it goes; the JSON objects of the common elements are not kept.
    """
    out = _Elements()
    good = _GOOD_KEYS
    flat = _FLAT_VRS
    for key, elem in item.items():
        if key not in good:
            key = _check_key(key)
        # Fast path for the common shapes ({"vr", "Value": [...]} of a non-SQ VR, or a
        # lone "vr"); anything else (SQ, BulkDataURI, a bad shape) goes through
        # _check_element.  Subscripts, not .get(): a missing key is rare (KeyError).
        if type(elem) is dict:
            try:
                vr = elem["vr"]
                if vr in flat:
                    size = len(elem)
                    if size == 2:
                        value = elem["Value"]
                        if type(value) is list:
                            out[key] = _El(vr, tuple(value))
                            continue
                    elif size == 1:
                        out[key] = _El(vr)
                        continue
            except (KeyError, TypeError):  # no "vr" / no "Value" / an unhashable VR
                pass
        out[key] = _store(_check_element(key, elem))
    if len(out) != len(item):  # two keys that differ only in case
        seen: set[str] = set()
        for key in item:
            upper = key.upper()
            if upper in seen:
                raise _ItemError(f"tag {upper} appears twice (keys differ only in case)")
            seen.add(upper)
    return out


def _validated(raw: dict[str, Any]) -> _Elements:
    """:func:`_stored`, raising ``InvalidResponseError``; an ``_Elements`` is returned as is."""
    if type(raw) is _Elements:
        return raw
    try:
        return _stored(raw)
    except _ItemError as exc:
        raise InvalidResponseError(f"invalid DICOM JSON object: {exc}") from None


# --------------------------------------------------------------------------- values


def _parse_values(elem: StoredElement, expected: type | None) -> tuple[Any, ...]:
    """All values of a non-SQ element, parsed for its VR: ``None`` for empty or unreadable ones.

    Returns ``()`` when every value is empty.  ``expected`` (a Python type) turns
    values of another type into ``None`` too.  ``elem`` is a JSON object or a
    stored element.
    """
    if type(elem) is _El:
        vr = elem.vr
        values: Any = elem.Value
        if not values:
            return ()
    else:
        values = elem.get("Value")
        if not values:
            if expected is not None and expected not in (BulkDataURI, InlineBinary):
                return ()  # a typed field (str, date...): a bulk data URI is no description
            if "BulkDataURI" in elem:
                return (BulkDataURI(elem["BulkDataURI"]),)
            if "InlineBinary" in elem:
                inline = InlineBinary(elem["InlineBinary"])
                try:  # unreadable (listed by .invalid): no value, as for any VR
                    inline.to_bytes()
                except ValueError:
                    return ()
                return (inline,)
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
            elif expected is datetime.date and type(parsed) is datetime.datetime:
                parsed = parsed.date()  # a DT where a date is expected: its day, not a datetime
        seen = seen or parsed is not None
        out.append(parsed)
    return tuple(out) if seen else ()


def _invalid_values(key: str, elem: StoredElement) -> list[InvalidValue]:
    """The values of one element that cannot be read, as ``InvalidValue`` records."""
    elem = _json_of(elem)
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
    from aqido._invalid import InvalidValue

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


def name_for_key(key: str) -> str:
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

    def __init__(self, converter: cattrs.Converter | None = None) -> None:
        self._converter = converter
        self._hooks: dict[Any, Callable[[Any, Any], Any]] = {}
        #: The converter's own element hooks, which take stored elements as they are.
        self.native: set[Callable[[Any, Any], Any]] = set()
        #: The converter's hook for a type, known without the converter (``None``: ask it).
        self.known: Callable[[Any], Callable[[Any, Any], Any] | None] = _unknown
        #: Builds the converter on first use, when it was not given (the default one's).
        self.build: Callable[[], cattrs.Converter] | None = None

    @property
    def converter(self) -> cattrs.Converter:
        """The converter (the default one is built, and cattrs imported, on first use)."""
        converter = self._converter
        if converter is None:
            if self.build is None:  # pragma: no cover - every context has one or the other
                raise RuntimeError("a context without a converter")
            converter = self._converter = self.build()
        return converter

    def hook(self, type_: Any) -> Callable[[Any, Any], Any]:
        """The converter's structure hook for ``type_``, taking a stored element.

        A hook the converter did not make itself (one a user registered) is
        given the element's JSON object, as the converter's documentation says.
        """
        try:
            return self._hooks[type_]
        except KeyError:
            pass
        hook = self.known(type_)
        if hook is None:
            hook = self.converter.get_structure_hook(type_)
        if hook not in self.native:
            hook = _given_json(hook)
        self._hooks[type_] = hook
        return hook

    def value(self, elem: StoredElement) -> Any:
        """The mapping-API value of an element: None, one value, a tuple; SQ → tuple."""
        if _is_sequence(elem):
            return self.hook(tuple[Dataset, ...])(elem, tuple[Dataset, ...])
        values = self.hook(_ValuesOf)(elem, _ValuesOf)
        if not values:
            return None
        return values[0] if len(values) == 1 else values


def _unknown(type_: Any) -> None:
    """No hook is known without the converter (a converter given to the context)."""


def _given_json(hook: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    def given_json(elem: StoredElement, type_: Any) -> Any:
        return hook(_json_of(elem), type_)

    return given_json


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

    _raw: dict[str, Any]  # an _Elements
    _ctx: ClassVar[_Context]

    def __init__(self, raw: Mapping[str, Any] | None = None) -> None:
        object.__setattr__(self, "_raw", _validated(dict(raw or {})))

    @classmethod
    def _lazy(cls: type[_D], raw: dict[str, Any], ctx: _Context | None = None) -> _D:
        """Build without running ``__init__`` from elements already validated and stored."""
        obj = object.__new__(cls)
        d = obj.__dict__
        d["_raw"] = raw
        if ctx is not None and ctx is not cls._ctx:
            d["_ctx"] = ctx
        return obj

    @classmethod
    def from_json(cls: type[_D], item: Mapping[str, Any]) -> _D:
        """Build from one DICOM JSON object; raise ``InvalidResponseError`` if malformed."""
        raw = dict(item) if isinstance(item, Mapping) else item  # else InvalidResponseError
        return cls._ctx.converter.structure(raw, cls)

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
        return (name_for_key(key) for key in self._raw)

    def __len__(self) -> int:
        return len(self._raw)

    def element(self, name: str | int) -> Element:
        """The raw element for ``name``: tag, keyword, VR and the JSON it came from."""
        from aqido._element import Element

        key = _key_for(name)
        return Element(key=key, json=_json_of(self._raw[key]))

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
        return {key: _copy_element(elem) for key, elem in self._raw.items()}

    def to_pydicom(
        self, bulk_data_uri_handler: Callable[..., bytes | None] | None = None
    ) -> pydicom.Dataset:
        """Return ``pydicom.Dataset.from_json(self.to_json())`` (imports pydicom on first use)."""
        import pydicom

        return pydicom.Dataset.from_json(self.to_json(), bulk_data_uri_handler)

    def __eq__(self, other: object) -> bool:
        """Equal when of the same class with the same elements as received (:func:`canonical`)."""
        if type(other) is not type(self):
            return NotImplemented
        assert isinstance(other, Dataset)
        return self._raw is other._raw or canonical(self._raw) == canonical(other._raw)

    def __hash__(self) -> int:
        return hash(canonical(self._raw))

    def __repr__(self) -> str:
        from aqido.display import dataset_repr  # the first attributes, each value cut

        return dataset_repr(self)

    def _repr_html_(self) -> str:
        """Jupyter's rich display: see :mod:`aqido.display`."""
        from aqido.display import dataset_html

        return dataset_html(self)


_D = TypeVar("_D", bound=Dataset)


def canonical(raw: Mapping[str, Any]) -> str:
    """The text by which datasets are compared and hashed: their stored elements as JSON.

    Keys sorted, an ``_El`` written as its JSON object.  Equality and the hash use
    this one text, so equal datasets hash equal; values equal in Python but not
    in the JSON received (``72`` and ``72.0``, ``1`` and ``true``, ``0.0`` and
    ``-0.0``) make datasets that differ, as their ``to_json()`` and values do.
    """
    # at any nesting the decoders accept
    return dumps(raw, sort_keys=True, default=_canonical_default)
