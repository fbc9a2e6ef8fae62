"""The cattrs converter of aqido's results: :func:`make_converter`, imported on first use.

Pure: no I/O.  :func:`make_converter` builds a converter whose structure hooks
(:class:`~aqido._hooks.ElementHooks`) turn a DICOM JSON object into a
validated :class:`~aqido._dataset.Dataset`, ``Study``, ``Series`` or
``Instance`` (values converted lazily, through the same converter's scalar
hooks), and whose unstructure hooks turn Python values back into DICOM JSON
values.  Structuring goes through :mod:`aqido._structure`, which uses the
default converter's hooks without building it: this module, and cattrs
(~17 ms), are imported when a converter is first needed (issue 18).
"""

from __future__ import annotations

import datetime
from typing import Any

import cattrs

from aqido._dataset import Dataset, _Context, _ValuesOf
from aqido._hooks import ElementHooks, is_optional_scalar, is_tuple_of, optional_inner
from aqido._models import _MODELS
from aqido.values import DSFloat, PersonName, Tag, format_da, format_dt, format_tm


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
    _register(converter, ElementHooks(converter.context))
    return converter


def converter_for(context: _Context, hooks: ElementHooks) -> DicomJSONConverter:
    """The converter of ``context`` whose hooks (made for it) are ``hooks``: the default one."""
    converter = DicomJSONConverter()
    converter.context = context
    _register(converter, hooks)
    return converter


def _register(converter: DicomJSONConverter, hooks: ElementHooks) -> None:
    """Register ``hooks`` and the unstructure hooks on ``converter`` (see make_converter)."""
    for cls in (Dataset, *_MODELS.values()):
        converter.register_structure_hook(cls, hooks.model)
    converter.register_structure_hook(_ValuesOf, hooks.values)
    for type_, hook in hooks.scalars.items():
        converter.register_structure_hook(type_, hook)

    def optional_factory(type_: Any) -> Any:
        return converter.get_structure_hook(optional_inner(type_))

    converter.register_structure_hook_factory(is_optional_scalar, optional_factory)
    converter.register_structure_hook_factory(is_tuple_of, hooks.tuple_hook)

    converter.register_unstructure_hook(datetime.date, format_da)
    converter.register_unstructure_hook(datetime.time, format_tm)
    converter.register_unstructure_hook(datetime.datetime, format_dt)
    converter.register_unstructure_hook(PersonName, lambda p: p.to_json())
    converter.register_unstructure_hook(Tag, lambda t: t.key)
    converter.register_unstructure_hook(DSFloat, lambda d: d.text)
    converter.register_unstructure_hook_func(
        lambda t: isinstance(t, type) and issubclass(t, Dataset), lambda d: d.to_json()
    )


def _context_of(converter: cattrs.Converter) -> _Context:
    if not isinstance(converter, DicomJSONConverter):
        raise TypeError("the converter must come from aqido.results.make_converter()")
    return converter.context
