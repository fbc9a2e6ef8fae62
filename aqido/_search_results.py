"""``SearchResults``: the list a search returns, with what the response headers said."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from aqido.protocol import QidoResponse, QidoWarning
from aqido.results import Dataset

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow

T = TypeVar("T")


class SearchResults(list[T]):
    """The results of one search: a plain ``list``, plus what the response headers said.

    Attributes:
        warnings: every ``Warning`` header the server sent (:class:`~aqido.protocol.QidoWarning`).
        headers: the response headers.
        truncated: whether the server said more results exist (use
            :meth:`AsyncQidoRS.iter_search` to get them all).
        additional_results: how many more, when the server gave a count.
        possibly_truncated: whether more results may exist although the server
            did not say so: ``truncated``, or a full page of the ``limit`` sent,
            or as many results as the server's known cap, or (no ``limit`` sent)
            a size that looks like a silent cap (100, 200, 500, 1000 ... items).
            :meth:`AsyncQidoRS.search` never sends a request to find out;
            :meth:`AsyncQidoRS.iter_search` does.
    """

    warnings: tuple[QidoWarning, ...]
    headers: Mapping[str, str]

    def __init__(self, items: Iterable[T] = (), *, response: QidoResponse | None = None) -> None:
        super().__init__(items)
        self.warnings = response.warnings if response is not None else ()
        self.headers = response.headers if response is not None else {}
        self.truncated = response.truncated if response is not None else False
        self.additional_results = response.additional_results if response is not None else None
        self.possibly_truncated = self.truncated

    def to_arrow(self, **options: Any) -> pyarrow.Table:
        """These results as a typed ``pyarrow.Table`` (:func:`aqido.to_arrow`; needs pyarrow)."""
        from aqido._arrow import to_arrow

        return to_arrow((item for item in self if isinstance(item, Dataset)), **options)

    def _repr_html_(self) -> str:
        """Jupyter's rich display: a compact table, one row per result (:mod:`aqido.display`)."""
        from aqido.display import html_table

        return html_table(item for item in self if isinstance(item, Dataset))
