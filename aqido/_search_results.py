"""``SearchResults``: the list a search returns, with what the response headers said."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, TypeVar

from aqido.protocol import QidoResponse
from aqido.results import Dataset

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow

    from aqido._warning_headers import QidoWarning
    from aqido.query import QueryLevel

T = TypeVar("T")


class SearchResults(list[T]):
    """The results of one search: a plain ``list``, plus what the response headers said.

    Attributes:
        warnings: every ``Warning`` header the server sent (:class:`~aqido.protocol.QidoWarning`).
        headers: the response headers.
        truncated: whether the server said more results exist (use
            :meth:`AsyncQidoRS.iter_search` to get them all).
        additional_results: how many more, when the server gave a count.
        possibly_truncated: whether more results may exist, the server saying so or
            not.  For one answer (:meth:`AsyncQidoRS.search`, ``find_studies``): it
            was ``truncated`` (unless the server counted 0 more), or is a full page
            (as many results as the ``limit`` sent, or more), or holds at least the
            server's known cap (``server_limit``, or one learned earlier; and at
            least the largest answer seen at that level), or, no cap being known,
            its size looks like a silent cap (a multiple of 50 or a power of two
            from 100 on, one more than either, or anything from 10,000 on), with
            no ``limit`` sent or short of the one sent (a page size above the
            cap; see :meth:`~aqido.partition.Caps.suspect`).  ``search`` never
            sends a request to find out; paging does (:meth:`AsyncQidoRS.iter_search`,
            ``search_for_*(get_remaining=True)``), and the results of a search
            that pages are ``possibly_truncated`` only where paging could not
            rule a silent cap out (a warning is logged).
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

    def to_arrow(
        self,
        *,
        level: str | QueryLevel | None = None,
        columns: Sequence[str | int] | None = None,
    ) -> pyarrow.Table:
        """These results as a typed ``pyarrow.Table`` (:func:`aqido.to_arrow`; needs pyarrow)."""
        from aqido._arrow import to_arrow

        results = (item for item in self if isinstance(item, Dataset))
        return to_arrow(results, level=level, columns=columns)

    def _repr_html_(self) -> str:
        """Jupyter's rich display: a compact table, one row per result (:mod:`aqido.display`)."""
        from aqido.display import html_table

        return html_table(item for item in self if isinstance(item, Dataset))
