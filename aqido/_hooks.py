"""The structure hooks of aqido's converters, and which hook a type gets: no cattrs needed.

Pure: no I/O.  :class:`ElementHooks` makes the hooks a converter from
:func:`~aqido._converter.make_converter` registers (a DICOM JSON object → a
``Dataset``/``Study``/``Series``/``Instance``; an element → its typed values),
and :meth:`ElementHooks.resolve` gives the hook that converter returns for a
type it registered them for.  The default converter's hooks are used without
the converter (:mod:`aqido._structure`): a plain search structures and reads
its results with no cattrs import (~17 ms) and no converter to build (issue 18).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any, TypeVar, Union, get_args, get_origin

from aqido._dataset import Dataset, _Context, _ItemError, _parse_values, _stored, _ValuesOf
from aqido._elements import StoredElement, _El, _Elements, _is_sequence
from aqido.errors import InvalidResponseError
from aqido.values import INT_VRS, PARSERS, STRIP, DSFloat, PersonName, Tag, parse_da, parse_tm

_D = TypeVar("_D", bound=Dataset)

Hook = Callable[[Any, Any], Any]

#: The value types with a structure hook of their own (and ``T | None`` for each).
SCALAR_TYPES: tuple[type, ...] = (
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


def is_tuple_of(type_: Any) -> bool:
    """Whether ``type_`` is ``tuple[T, ...]`` (the converter's tuple hook factory takes it)."""
    args = get_args(type_)
    return get_origin(type_) is tuple and len(args) == 2 and args[1] is Ellipsis


def optional_inner(type_: Any) -> Any:
    """``T`` of ``T | None`` (the first type of a ``Union``), else ``None``."""
    args = [a for a in get_args(type_) if a is not type(None)]
    return args[0] if get_origin(type_) is Union or len(args) == 1 else None


def is_optional_scalar(type_: Any) -> bool:
    """Whether ``type_`` is ``T | None`` of a scalar type (the converter's optional factory)."""
    return optional_inner(type_) in SCALAR_TYPES and type(None) in get_args(type_)


class ElementHooks:
    """The structure hooks of one converter (of one :class:`~aqido._dataset._Context`)."""

    def __init__(self, context: _Context) -> None:
        self.context = context
        native = context.native.add  # hooks that take stored elements (see _Context.hook)

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

        def values_hook(elem: StoredElement, _: Any) -> tuple[Any, ...]:
            return _parse_values(elem, None)

        native(values_hook)
        self.model: Callable[[Any, type[Any]], Any] = model_hook
        self.values: Hook = values_hook
        #: The hook registered for each of SCALAR_TYPES.
        self.scalars: dict[type, Hook] = {t: self._scalar(t) for t in SCALAR_TYPES}
        # Fast paths for the shapes QIDO-RS servers send for default attributes; they
        # give the same results as the generic hooks above, which handle the rest.  Each
        # takes a JSON object (``converter.structure(elem, str)``) or a stored element:
        # an ``_El`` (see aqido._elements).
        generic_str = self._scalar(str)
        generic_int = self._scalar(int)
        generic_pn = self._scalar(PersonName)

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

        def sequence_hook(elem: StoredElement, _: Any) -> tuple[Dataset, ...]:
            if not _is_sequence(elem):
                return ()
            return tuple(model_hook(item, Dataset) for item in elem.get("Value") or ())

        for hook in (str_hook, int_hook, pn_hook, str_tuple_hook, sequence_hook):
            native(hook)
        self.scalars[str] = str_hook
        self.scalars[int] = int_hook
        self.scalars[datetime.date] = self._parsed("DA", parse_da, self._scalar(datetime.date))
        self.scalars[datetime.time] = self._parsed("TM", parse_tm, self._scalar(datetime.time))
        self.scalars[PersonName] = pn_hook
        self.str_tuple: Hook = str_tuple_hook
        self.sequence: Hook = sequence_hook

    def _scalar(self, type_: Any) -> Hook:
        """The generic hook of a scalar type: the first parsed value, or ``None``."""

        def hook(elem: StoredElement, _: Any) -> Any:
            values = _parse_values(elem, type_)
            return values[0] if values else None

        self.context.native.add(hook)
        return hook

    def _parsed(self, vr: str, parse: Callable[[str], Any], generic: Hook) -> Hook:
        """The hook of a type one VR's parser gives (DA: ``date``, TM: ``time``)."""

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

        self.context.native.add(hook)
        return hook

    def tuple_hook(self, type_: Any) -> Hook:
        """The hook of ``tuple[T, ...]``: all of an element's values (an SQ's items)."""
        inner = get_args(type_)[0]
        if isinstance(inner, type) and issubclass(inner, Dataset):
            return self.sequence
        if inner is str:
            return self.str_tuple

        def hook(elem: StoredElement, _: Any) -> tuple[Any, ...]:
            return _parse_values(elem, inner)

        self.context.native.add(hook)
        return hook

    def resolve(self, type_: Any) -> Hook | None:
        """The element hook the converter gives ``type_``; ``None``: ask the converter."""
        if type_ is _ValuesOf:
            return self.values
        hook = self.scalars.get(type_)
        if hook is not None:
            return hook
        if is_optional_scalar(type_):
            return self.scalars[optional_inner(type_)]
        if is_tuple_of(type_):
            return self.tuple_hook(type_)
        return None
