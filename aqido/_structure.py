"""Structuring DICOM JSON into aqido's results, with the default converter's hooks or a given one.

Pure: no I/O.  :func:`structure` and :func:`parse_results` go through the
structure hooks of a converter from :func:`~aqido._converter.make_converter`:
the one given, else the default converter's, used here without that converter
(:class:`~aqido._hooks.ElementHooks`).  The default cattrs converter is built,
and cattrs imported, only when something asks for it (``Dataset.from_json``,
``attrs.evolve`` of a model, a type its hooks do not know): a plain search
needs neither (issue 18).
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from aqido import dictionary
from aqido._dataset import Dataset, _Context
from aqido._elements import fast_stored
from aqido._hooks import ElementHooks
from aqido._json import _json_type, decode_json, dumps
from aqido._models import _MODELS
from aqido.errors import InvalidResponseError, excerpt
from aqido.query import QueryLevel

if TYPE_CHECKING:  # pragma: no cover - annotations only (cattrs is imported on first use)
    import cattrs

#: Responses with more items than this are structured with the cyclic GC paused.
_GC_PAUSE_ITEMS = 256


def _build_default() -> cattrs.Converter:
    """The default converter, built on first use with the hooks already in use."""
    from aqido._converter import converter_for

    return converter_for(_DEFAULT_CONTEXT, DEFAULT_HOOKS)


_DEFAULT_CONTEXT = _Context()
#: The default converter's structure hooks.
DEFAULT_HOOKS = ElementHooks(_DEFAULT_CONTEXT)
_DEFAULT_CONTEXT.known = DEFAULT_HOOKS.resolve
_DEFAULT_CONTEXT.build = _build_default
Dataset._ctx = _DEFAULT_CONTEXT


def _is_validation_error(exc: Exception) -> bool:
    """Whether ``exc`` is a cattrs validation error (none can be before cattrs is imported)."""
    cattrs = sys.modules.get("cattrs")
    return cattrs is not None and isinstance(exc, cattrs.BaseValidationError)


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
    hook: Callable[[Any, type[Any]], Any]
    if converter:
        from aqido._converter import _context_of

        _context_of(converter)  # only converters from make_converter() know the models
        hook = converter.get_structure_hook(cls)
    else:
        hook = DEFAULT_HOOKS.model  # what the default converter gives, without building it
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
    except Exception as exc:  # a given converter's cattrs error: words it as ours
        if not _is_validation_error(exc):
            raise
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
