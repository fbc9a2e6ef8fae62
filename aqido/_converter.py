"""The cattrs converter that structures DICOM JSON into aqido's results: the one structuring path.

Pure: no I/O.  :func:`make_converter` builds a converter whose structure hooks
turn a DICOM JSON object into a validated :class:`~aqido._dataset.Dataset`,
``Study``, ``Series`` or ``Instance`` (values converted lazily, through the
same converter's scalar hooks), and whose unstructure hooks turn Python
values back into DICOM JSON values.  :func:`structure` and
:func:`parse_results` always go through the converter's hooks.
"""

from __future__ import annotations

import datetime
import gc
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, Union, get_args, get_origin

import cattrs

from aqido import dictionary
from aqido._dataset import (
    Dataset,
    _Context,
    _ItemError,
    _parse_values,
    _stored,
    _ValuesOf,
)
from aqido._elements import StoredElement, _El, _Elements, _is_sequence, fast_stored
from aqido._json import _json_type, decode_json, dumps
from aqido._models import _MODELS
from aqido.errors import InvalidResponseError, excerpt
from aqido.query import QueryLevel
from aqido.values import (
    INT_VRS,
    PARSERS,
    STRIP,
    DSFloat,
    PersonName,
    Tag,
    format_da,
    format_dt,
    format_tm,
    parse_da,
    parse_tm,
)

_D = TypeVar("_D", bound=Dataset)

#: Responses with more items than this are structured with the cyclic GC paused.
_GC_PAUSE_ITEMS = 256


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
        if type(obj) is _Elements:  # stored by fast_stored: validated
            return cls._lazy(obj, context)
        if type(obj) is not dict:
            raise InvalidResponseError(
                f"a DICOM JSON object was expected, not {type(obj).__name__}"
            )
        try:
            raw = _stored(obj)
        except _ItemError as exc:
            raise InvalidResponseError(str(exc)) from None
        return cls._lazy(raw, context)

    for cls in (Dataset, *_MODELS.values()):
        converter.register_structure_hook(cls, model_hook)

    native = context.native.add  # hooks that take stored elements (see _Context.hook)

    def values_hook(elem: StoredElement, _: Any) -> tuple[Any, ...]:
        return _parse_values(elem, None)

    native(values_hook)
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
        def hook(elem: StoredElement, _: Any) -> Any:
            values = _parse_values(elem, type_)
            return values[0] if values else None

        native(hook)
        return hook

    for type_ in scalar_types:
        converter.register_structure_hook(type_, scalar_factory(type_))

    # Fast paths for the shapes QIDO-RS servers send for default attributes; they
    # give the same results as the generic hooks above, which handle the rest.  Each
    # takes a JSON object (``converter.structure(elem, str)``) or a stored element:
    # an ``_El`` (see aqido._elements).
    generic_str = scalar_factory(str)
    generic_int = scalar_factory(int)
    generic_date = scalar_factory(datetime.date)
    generic_time = scalar_factory(datetime.time)
    generic_pn = scalar_factory(PersonName)

    def str_hook(elem: StoredElement, _: Any) -> Any:
        values: Any
        if type(elem) is _El:
            values = elem.Value
            if values and type(values[0]) is str and elem.vr not in PARSERS:
                return values[0].strip(STRIP) or None
        else:
            values = elem.get("Value")
            if values and type(values[0]) is str and elem["vr"] not in PARSERS:
                return values[0].strip(STRIP) or None
        return generic_str(elem, str)

    # 0 to 32767 fits every integer VR (SS, US, IS...): a value outside it has its
    # VR's range checked by the generic path (parse_is).
    def int_hook(elem: StoredElement, _: Any) -> Any:
        values: Any
        if type(elem) is _El:
            values = elem.Value
            first = values[0] if values else None
            if type(first) is int and 0 <= first <= 32767 and elem.vr in INT_VRS:
                return first
        else:
            values = elem.get("Value")
            first = values[0] if values else None
            if type(first) is int and 0 <= first <= 32767 and elem["vr"] in INT_VRS:
                return first
        return generic_int(elem, int)

    def parsed_hook(
        vr: str, parse: Callable[[str], Any], generic: Callable[[Any, Any], Any]
    ) -> Callable[[Any, Any], Any]:
        def hook(elem: StoredElement, type_: Any) -> Any:
            if type(elem) is _El:
                first = elem.Value[0] if elem.Value and elem.vr == vr else None
            else:
                values = elem.get("Value")
                first = values[0] if values and elem["vr"] == vr else None
            if type(first) is str:
                try:
                    return parse(first)
                except ValueError:
                    return None
            return generic(elem, type_)

        native(hook)
        return hook

    def pn_hook(elem: StoredElement, _: Any) -> Any:
        if type(elem) is _El:
            first = elem.Value[0] if elem.Value and elem.vr == "PN" else None
        else:
            values = elem.get("Value")
            first = values[0] if values and elem["vr"] == "PN" else None
        if type(first) is dict:
            try:
                return PersonName.from_json(first) or None
            except ValueError:
                return None
        return generic_pn(elem, PersonName)

    def str_tuple_hook(elem: StoredElement, _: Any) -> tuple[Any, ...]:
        if type(elem) is _El:
            vr: Any = elem.vr
            values: Any = elem.Value
        else:
            vr, values = elem["vr"], elem.get("Value")
        if values and vr not in PARSERS and all(type(v) is str for v in values):
            out = tuple(v.strip(STRIP) or None for v in values)
            return out if any(out) else ()
        return _parse_values(elem, str)

    for hook in (str_hook, int_hook, pn_hook, str_tuple_hook):
        native(hook)
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

    def sequence_hook(elem: StoredElement, _: Any) -> tuple[Dataset, ...]:
        if not _is_sequence(elem):
            return ()
        return tuple(model_hook(item, Dataset) for item in elem.get("Value") or ())

    native(sequence_hook)

    def tuple_factory(type_: Any) -> Callable[[Any, Any], Any]:
        inner = get_args(type_)[0]
        if isinstance(inner, type) and issubclass(inner, Dataset):
            return sequence_hook
        if inner is str:
            return str_tuple_hook

        def hook(elem: StoredElement, _: Any) -> tuple[Any, ...]:
            return _parse_values(elem, inner)

        native(hook)
        return hook

    converter.register_structure_hook_factory(_is_tuple_of, tuple_factory)

    converter.register_unstructure_hook(datetime.date, format_da)
    converter.register_unstructure_hook(datetime.time, format_tm)
    converter.register_unstructure_hook(datetime.datetime, format_dt)
    converter.register_unstructure_hook(PersonName, lambda p: p.to_json())
    converter.register_unstructure_hook(Tag, lambda t: t.key)
    converter.register_unstructure_hook(DSFloat, lambda d: d.text)
    converter.register_unstructure_hook_func(
        lambda t: isinstance(t, type) and issubclass(t, Dataset), lambda d: d.to_json()
    )
    return converter


def _context_of(converter: cattrs.Converter) -> _Context:
    if not isinstance(converter, DicomJSONConverter):
        raise TypeError("the converter must come from aqido.results.make_converter()")
    return converter.context


_DEFAULT_CONVERTER = make_converter()
_DEFAULT_CONTEXT = _context_of(_DEFAULT_CONVERTER)
Dataset._ctx = _DEFAULT_CONTEXT


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
    (with ``url`` and ``status`` when given), also when ``items`` is not an array
    (a decoded error object); one dataset instead of an array of one is taken,
    as :func:`~aqido.results.decode_json` takes it.
    """
    cls = _MODELS[level if type(level) is QueryLevel else QueryLevel(level)]
    given: Any = items  # decoded JSON: whatever the server sent
    if type(given) is not list and (  # a list nearly always: no ABC check
        not isinstance(given, Sequence) or isinstance(given, str | bytes | bytearray)
    ):
        if type(given) is dict and given and all(map(dictionary.is_tag_key, given)):
            items = [given]  # one dataset instead of an array of one, as decode_json takes it
        else:
            raise InvalidResponseError(
                f"the results are a JSON {_json_type(given)}, not an array of DICOM JSON objects",
                body=_excerpt_item(given),
                url=url,
                status=status,
            )
    converter = converter or _DEFAULT_CONVERTER
    _context_of(converter)  # only converters from make_converter() know the models
    hook = converter.get_structure_hook(cls)
    out: list[Any] = []
    append = out.append
    index = 0
    # Structuring allocates a few containers per item while the decoded JSON (many
    # more, alive until the caller drops it) is in the young generations: on a
    # large response the collector would rescan all of it every few hundred items.
    paused = len(items) > _GC_PAUSE_ITEMS and gc.isenabled()
    if paused:
        gc.disable()
    try:
        for index, item in enumerate(items):  # noqa: B007 - index is reported on error
            append(hook(item, cls))
    except InvalidResponseError as exc:
        message = str(exc).split("; body starts:")[0]
        raise InvalidResponseError(
            f"item {index} is not a valid DICOM JSON object: {message}",
            body=_excerpt_item(items[index]),
            url=url,
            status=status,
        ) from None
    except cattrs.BaseValidationError as exc:  # pragma: no cover - defensive
        raise InvalidResponseError(f"item {index}: {exc}", url=url, status=status) from None
    finally:
        if paused:
            gc.enable()
    return out


def _excerpt_item(item: Any) -> str:
    try:
        return excerpt(dumps(item, ensure_ascii=False, default=repr))
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
    stored = fast_stored(body_or_items) if type(body_or_items) is bytes else None
    if stored is not None:  # decoded and checked in one pass (aqido._elements)
        items: Sequence[Any] = stored
    elif isinstance(body_or_items, bytes | bytearray | str):
        items = decode_json(
            bytes(body_or_items) if isinstance(body_or_items, bytearray) else body_or_items,
            url=url,
            status=status,
        )
    else:
        items = body_or_items
    return structure(items, level, converter=converter, url=url, status=status)
