"""Typed QIDO-RS results: DICOM JSON (PS3.18 Annex F) structured by cattrs.

This is the public module of the results layer; the implementation is split
by concern into private modules: :mod:`aqido._json` (bytes → DICOM JSON
objects), :mod:`aqido._dataset` (validation and the ``Dataset`` mapping),
:mod:`aqido._models` (``Study``/``Series``/``Instance``),
:mod:`aqido._hooks` (the converter's structure hooks: the one structuring path),
:mod:`aqido._structure` (structuring with them), :mod:`aqido._converter` (the
cattrs converter, imported with cattrs on first use of
:func:`make_converter`/``DicomJSONConverter``) and :mod:`aqido._tree` (``build_tree``,
imported on first use too).

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
  tuples (``ModalitiesInStudy``) always give tuples; any other typed field sent
  several values gives ``None`` (listed in ``.invalid``), never the first.  Types by VR are listed
  in :mod:`aqido.values`.
* **Empty.** No ``Value``, ``"Value": []``, ``[""]`` and ``[null]`` all mean
  empty (``None``, or ``()`` for tuple fields).  Inside a multi-valued
  attribute an empty or ``null`` entry is ``None``: ``("CT", None, "MR")``; a
  typed field that takes one value reads the one that is not empty.
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

from typing import TYPE_CHECKING

from aqido._dataset import Dataset
from aqido._json import decode_json
from aqido._lazy import lazy_exports
from aqido._models import Instance, Series, Study
from aqido._structure import parse_results, structure

if TYPE_CHECKING:  # pragma: no cover - lazily resolved names, imported here for type checkers
    from aqido._converter import DicomJSONConverter as DicomJSONConverter
    from aqido._converter import make_converter as make_converter
    from aqido._element import Element as Element
    from aqido._tree import build_tree as build_tree

#: Public names whose module is imported on first use (cattrs with the converter's).
_LAZY: dict[str, str] = {
    "DicomJSONConverter": "aqido._converter",
    "Element": "aqido._element",
    "build_tree": "aqido._tree",
    "make_converter": "aqido._converter",
}

__all__ = [
    "Dataset",
    "DicomJSONConverter",
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

if not TYPE_CHECKING:
    # Hidden from type checkers: they see the names imported above (as in aqido/__init__.py).
    __getattr__, __dir__ = lazy_exports("aqido.results", globals(), _LAZY, __all__)
