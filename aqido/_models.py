"""``Study``, ``Series`` and ``Instance``: frozen attrs models whose typed fields are lazy views.

Pure: no I/O.  Each model is a :class:`~aqido._dataset.Dataset` with one typed
field per default return attribute of its level.  A field reads its raw
element on first access, through the converter that built the object
(:class:`_LazyField`); a field given to ``__init__``/``attrs.evolve`` rewrites
its element, so the typed view and the raw DICOM JSON always agree.
"""

# No ``from __future__ import annotations`` here: the fields' annotations are then objects
# at once, with no strings to compile (about 50: ~2 ms at start) and nothing to resolve.

import datetime
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, get_args, get_origin

import attrs

from aqido import dictionary
from aqido._dataset import (
    Dataset,
    _Context,
    _ItemError,
    _stored,
    _validated,
)
from aqido._elements import _El, _is_sequence, _json_of
from aqido.query import QueryLevel
from aqido.values import PersonName, is_empty

if TYPE_CHECKING:  # pragma: no cover - annotations only (cattrs is imported on first use)
    import cattrs

    from aqido._invalid import InvalidValue

_M = TypeVar("_M", bound="_Model")


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
                if ctx is Dataset._ctx:
                    self.ctx, self.hook = ctx, hook
            value = hook(elem, self.type)
            if self.default is None and (type(elem) is not _El or len(elem.Value or ()) > 1):
                value = _one_value(elem, value, hook, self.type)
        obj.__dict__[self.name] = value
        return value


def _sent(elem: Any) -> list[Any]:
    """The non-empty values of a stored element (or its JSON object), as received."""
    values = elem.Value or () if type(elem) is _El else _json_of(elem).get("Value") or ()
    return [v for v in values if not is_empty(v)]


def _one_value(elem: Any, value: Any, hook: Callable[[Any, Any], Any], type_: Any) -> Any:
    """The value of a typed field that takes one, from an element that may hold several.

    ``value`` is what ``hook`` read (the first value).  Several non-empty values
    give ``None`` (keeping one and dropping the others would be a wrong answer;
    ``.invalid`` lists them); one non-empty value after empty ones
    (``[null, "1.2.3"]``) gives that value.
    """
    sent = _sent(elem)
    if len(sent) > 1:
        return None
    if value is None and sent and not _is_sequence(elem):
        return hook(_El(_json_of(elem)["vr"], (sent[0],)), type_)
    return value


def _field_value(ctx: _Context, elem: Any, type_: Any, default: Any) -> Any:
    """What a typed field reads from its element, as :class:`_LazyField` reads it."""
    if elem is None:
        return default
    hook = ctx.hook(type_)
    value = hook(elem, type_)
    if default is None and (type(elem) is not tuple or len(elem) > 2):
        value = _one_value(elem, value, hook, type_)
    return value


class _Model(Dataset):
    """Shared behaviour of Study/Series/Instance: typed fields mirror raw elements."""

    def _with(self: _M, field: str, children: Iterable[Any]) -> _M:
        """A new object equal to ``attrs.evolve(self, **{field: tuple(children)})``, built cheaply.

        ``evolve`` reads every typed field (converting each lazily parsed
        value) and passes them all back through ``__init__``, which compares
        each with the raw element again: about a third of a crawl's CPU time
        went there.  Only the children change here, so the new object is
        built like :meth:`_lazy` builds one, sharing the raw elements and the
        values already converted (all immutable); ``self`` is not changed.
        """
        new = object.__new__(type(self))
        state = new.__dict__
        state.update(self.__dict__)
        state[field] = tuple(children)
        return new

    def __repr__(self) -> str:
        """Short: the identifying attributes and the number of children (:mod:`aqido.display`)."""
        from aqido.display import short_repr

        return short_repr(self)

    @property
    def invalid(self) -> "tuple[InvalidValue, ...]":
        """:attr:`Dataset.invalid`, and the typed fields that read ``None`` although sent a value.

        A value of another VR than the field's type needs (``StudyDate`` sent as
        an LO, ``NumberOfStudyRelatedSeries`` as a DS of ``"3.5"``) is readable
        for its VR, so the mapping API gives it, but the typed field cannot hold
        it: listed here, so that no value goes missing unseen.  So are several
        values for a field that takes one (``StudyInstanceUID`` sent as
        ``["1.2.3", "1.2.4"]``): keeping one and dropping the others would be a
        wrong answer, so the field reads ``None`` (``raw``: the values sent).
        """
        from aqido._invalid import InvalidValue

        bad = list(super().invalid)
        listed = {value.key for value in bad}
        raw = self._raw
        for name, key, type_, default in self._typed:
            elem = raw.get(key)
            if elem is None or key in listed or getattr(self, name) not in (None, ()):
                continue
            sent = _sent(elem)
            if sent:
                vr = str(_json_of(elem).get("vr", ""))
                if default is None and len(sent) > 1:
                    reason = f"{name} takes one value, {len(sent)} were sent"
                    bad.append(InvalidValue(key, name, vr, tuple(sent), reason))
                    continue
                reason = f"{name} takes {_type_name(type_)}, which VR {vr} does not give"
                bad.append(InvalidValue(key, name, vr, sent[0], reason))
        return tuple(bad)

    #: (field name, tag key, type, default) of the typed fields, filled by _install.
    _typed: ClassVar[tuple[tuple[str, str, Any, Any], ...]] = ()
    #: The field holding the children (``series``, ``instances``), if any.
    _children: ClassVar[str | None] = None

    # Equality and the hash are written here once, not generated by attrs for each model
    # (compiling them was about 1 ms at import).  The typed fields are views of the raw
    # elements, so the raw elements (compared by their canonical text, as
    # Dataset.__eq__ does: 72 and 72.0 differ there) and the children decide.
    def __eq__(self, other: object) -> bool:
        """Equal when of the same class, with the same elements (:func:`canonical`) and children."""
        if type(other) is not type(self):
            return NotImplemented
        children = self._children
        if children is not None and getattr(self, children) != getattr(other, children):
            return False
        return super().__eq__(other)

    def __hash__(self) -> int:
        children = self._children
        return hash((super().__hash__(), getattr(self, children) if children else ()))

    def __attrs_post_init__(self) -> None:
        """Make the raw elements agree with the typed fields given to ``__init__``/``evolve``.

        The raw DICOM JSON is the one source of truth: a field given a value
        that differs from what the raw element reads as rewrites that element;
        a field not given at all is read from ``raw``.  Afterwards every typed
        field is a (lazily converted) view of the raw elements again.
        """
        d = self.__dict__
        raw = _validated(d["_raw"])  # the elements of an existing result (evolve) as they are
        ctx = self._ctx
        changed: dict[str, Any] | None = None
        for name, key, type_, default in self._typed:
            given = d.pop(name)
            if given is _FROM_RAW:
                continue
            current = _field_value(ctx, raw.get(key), type_, default)
            if given == current and type(given) is type(current):
                continue
            if changed is None:
                changed = {k: _json_of(e) for k, e in raw.items()}
            encoded = _encode_field(ctx.converter, key, given)
            if encoded is None:
                changed.pop(key, None)
            else:
                changed[key] = encoded
        if changed is not None:
            try:
                raw = _stored(dict(sorted(changed.items())))
            except _ItemError as exc:
                raise ValueError(f"cannot encode the given fields as DICOM JSON: {exc}") from None
        object.__setattr__(self, "_raw", raw)


class _FromRaw:
    """Default of the typed fields: "not given, read it from ``raw``"."""

    def __repr__(self) -> str:
        return "<read from raw>"


_FROM_RAW: Any = _FromRaw()


def _type_name(type_: Any) -> str:
    """``str | None`` → ``"a str"``, ``int | None`` → ``"an int"``, ``tuple[Dataset, ...]``
    → ``"Dataset values"``."""
    args = [a for a in get_args(type_) if a is not type(None) and a is not Ellipsis]
    inner = args[0] if args else type_
    name = getattr(inner, "__name__", str(inner))
    if get_origin(type_) is tuple:
        return f"{name} values"
    return f"{'an' if name[:1] in 'aeiouAEIOU' else 'a'} {name}"


def _encode_field(converter: "cattrs.Converter", key: str, value: Any) -> dict[str, Any] | None:
    """DICOM JSON element for a typed field value (``None`` when the value is empty)."""
    vr = dictionary.vr_for(int(key, 16)) or "UN"
    if value is None or (isinstance(value, tuple | list) and not value):
        return None
    values = value if isinstance(value, tuple | list) else (value,)
    return {"vr": vr, "Value": [converter.unstructure(v) for v in values]}


def _as_tuple(children: Iterable[Any]) -> tuple[Any, ...]:
    return tuple(children)


# Equality and the hash: _Model's (the raw elements and the children).
@attrs.frozen(kw_only=True, slots=False, eq=False, repr=False)
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
    _raw: dict[str, Any] = attrs.field(factory=dict, repr=False, alias="raw")


@attrs.frozen(kw_only=True, slots=False, eq=False, repr=False)
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
    _raw: dict[str, Any] = attrs.field(factory=dict, repr=False, alias="raw")

    _children = "instances"

    def with_instances(self, instances: Iterable[Instance]) -> "Series":
        """This series with ``instances`` attached: like ``attrs.evolve``, but cheap."""
        return self._with("instances", instances)


@attrs.frozen(kw_only=True, slots=False, eq=False, repr=False)
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
    _raw: dict[str, Any] = attrs.field(factory=dict, repr=False, alias="raw")

    _children = "series"

    def with_series(self, series: Iterable[Series]) -> "Study":
        """This study with ``series`` attached: ``attrs.evolve(study, series=...)``, but cheap."""
        return self._with("series", series)


#: The tag keys of the typed fields (``tests/test_results.py`` checks them against the
#: dictionary): written out, so that defining the models does not load the data dictionary.
_KEYS = {
    "AccessionNumber": "00080050",
    "BitsAllocated": "00280100",
    "Columns": "00280011",
    "InstanceAvailability": "00080056",
    "InstanceNumber": "00200013",
    "ModalitiesInStudy": "00080061",
    "Modality": "00080060",
    "NumberOfFrames": "00280008",
    "NumberOfSeriesRelatedInstances": "00201209",
    "NumberOfStudyRelatedInstances": "00201208",
    "NumberOfStudyRelatedSeries": "00201206",
    "PatientBirthDate": "00100030",
    "PatientID": "00100020",
    "PatientName": "00100010",
    "PatientSex": "00100040",
    "PerformedProcedureStepStartDate": "00400244",
    "PerformedProcedureStepStartTime": "00400245",
    "ReferringPhysicianName": "00080090",
    "RequestAttributesSequence": "00400275",
    "RetrieveURL": "00081190",
    "Rows": "00280010",
    "SOPClassUID": "00080016",
    "SOPInstanceUID": "00080018",
    "SeriesDescription": "0008103E",
    "SeriesInstanceUID": "0020000E",
    "SeriesNumber": "00200011",
    "SpecificCharacterSet": "00080005",
    "StudyDate": "00080020",
    "StudyDescription": "00081030",
    "StudyID": "00200010",
    "StudyInstanceUID": "0020000D",
    "StudyTime": "00080030",
    "TimezoneOffsetFromUTC": "00080201",
}

_MODELS: dict[QueryLevel, type[_Model]] = {
    QueryLevel.STUDY: Study,
    QueryLevel.SERIES: Series,
    QueryLevel.INSTANCE: Instance,
}


def _install(cls: Any) -> None:
    """Put the lazy descriptors on ``cls`` (after attrs built it), from its fields' types.

    The annotations are objects (no postponed evaluation in this module), so the
    fields' types need no ``attrs.resolve_types`` (~0.3 ms a class at start); a
    string annotation would be a bug here, and is refused.
    """
    typed = []
    for field in attrs.fields(cls):
        if isinstance(field.type, str):  # pragma: no cover - a guard for future edits
            raise TypeError(f"{cls.__name__}.{field.name}: annotation {field.type!r} is a string")
        if field.name == "_raw":
            continue
        default = () if get_origin(field.type) is tuple else None  # when the element is missing
        if field.name in ("series", "instances"):
            setattr(cls, field.name, _LazyField(field.name, "", None, ()))
            continue
        key = _KEYS[field.name]
        setattr(cls, field.name, _LazyField(field.name, key, field.type, default))
        typed.append((field.name, key, field.type, default))
    cls._typed = tuple(typed)


for _cls in _MODELS.values():
    _install(_cls)
