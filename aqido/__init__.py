"""aqido: an asynchronous client for QIDO-RS, the DICOMweb search service.

The public API is re-exported here.  Modules that pull in heavy dependencies
(aiohttp for the client, pydicom's data dictionary, pandas) are imported
lazily, on first attribute access, so ``import aqido`` stays fast.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from aqido._lazy import lazy_exports
from aqido.errors import (
    BadRequestError,
    CheckpointError,
    ClientClosedError,
    CrawlFailure,
    CrawlIncompleteError,
    HTTPStatusError,
    InvalidQueryError,
    InvalidResponseError,
    NotFoundError,
    PayloadTooLargeError,
    ProxyConfigError,
    QidoError,
    QueryTypeError,
    RateLimitedError,
    RedirectError,
    RequestTimeoutError,
    ResponseTooLargeError,
    ResultsTruncatedError,
    ServerError,
    TLSError,
    TransportError,
    UnanswerableQueryError,
    UnauthorizedError,
    UnknownFieldError,
)
from aqido.query import (
    BaseQuery,
    HierarchicalQuery,
    QueryLevel,
    RelationalQuery,
    encode_query_value,
    ensure_query_type,
    is_permissive_uid,
    is_valid_uid,
)

if TYPE_CHECKING:  # pragma: no cover - lazily resolved names, imported here for type checkers
    from aqido._arrow import to_arrow as to_arrow
    from aqido._invalid import InvalidValue as InvalidValue
    from aqido._warning_headers import QidoWarning as QidoWarning
    from aqido.blocking import QidoRS as QidoRS
    from aqido.checkpoint import CrawlCheckpoint as CrawlCheckpoint
    from aqido.client import AsyncQidoRS as AsyncQidoRS
    from aqido.client import SearchResults as SearchResults
    from aqido.profile import ServerProfile as ServerProfile
    from aqido.progress import CrawlProgress as CrawlProgress
    from aqido.protocol import QidoResponse as QidoResponse
    from aqido.results import Dataset as Dataset
    from aqido.results import Instance as Instance
    from aqido.results import Series as Series
    from aqido.results import Study as Study
    from aqido.results import build_tree as build_tree
    from aqido.results import decode_json as decode_json
    from aqido.results import parse_results as parse_results
    from aqido.retry import Retry as Retry
    from aqido.retry import Timeout as Timeout
    from aqido.stats import CrawlStats as CrawlStats
    from aqido.tables import to_dataframe as to_dataframe
    from aqido.tables import to_records as to_records
    from aqido.values import PersonName as PersonName

__version__ = "0.1.0"

# A library's logger stays silent unless the application configures logging: without this,
# Python's last-resort handler would print aqido's warnings (a crawl's failed parts, server
# Warning headers) on stderr of programs that never asked for them.
logging.getLogger("aqido").addHandler(logging.NullHandler())

#: Public names provided by submodules that are imported on first use.
_LAZY: dict[str, str] = {
    "AsyncQidoRS": "aqido.client",
    "CrawlProgress": "aqido.progress",
    "CrawlCheckpoint": "aqido.checkpoint",
    "CrawlStats": "aqido.stats",
    "Dataset": "aqido.results",
    "Instance": "aqido.results",
    "InvalidValue": "aqido._invalid",
    "PersonName": "aqido.values",
    "QidoRS": "aqido.blocking",
    "QidoResponse": "aqido.protocol",
    "QidoWarning": "aqido._warning_headers",
    "Retry": "aqido.retry",
    "SearchResults": "aqido.client",
    "Series": "aqido.results",
    "ServerProfile": "aqido.profile",
    "Study": "aqido.results",
    "Timeout": "aqido.retry",
    "build_tree": "aqido.results",
    "decode_json": "aqido.results",
    "parse_results": "aqido.results",
    "to_arrow": "aqido._arrow",
    "to_dataframe": "aqido.tables",
    "to_records": "aqido.tables",
}

__all__ = [
    "AsyncQidoRS",
    "BadRequestError",
    "BaseQuery",
    "CheckpointError",
    "ClientClosedError",
    "CrawlCheckpoint",
    "CrawlFailure",
    "CrawlIncompleteError",
    "CrawlProgress",
    "CrawlStats",
    "Dataset",
    "HTTPStatusError",
    "HierarchicalQuery",
    "Instance",
    "InvalidQueryError",
    "InvalidResponseError",
    "InvalidValue",
    "NotFoundError",
    "PayloadTooLargeError",
    "PersonName",
    "ProxyConfigError",
    "QidoError",
    "QidoRS",
    "QidoResponse",
    "QidoWarning",
    "QueryLevel",
    "QueryTypeError",
    "RateLimitedError",
    "RedirectError",
    "RelationalQuery",
    "RequestTimeoutError",
    "ResponseTooLargeError",
    "ResultsTruncatedError",
    "Retry",
    "SearchResults",
    "Series",
    "ServerError",
    "ServerProfile",
    "Study",
    "TLSError",
    "Timeout",
    "TransportError",
    "UnanswerableQueryError",
    "UnauthorizedError",
    "UnknownFieldError",
    "__version__",
    "build_tree",
    "decode_json",
    "encode_query_value",
    "ensure_query_type",
    "is_permissive_uid",
    "is_valid_uid",
    "parse_results",
    "to_arrow",
    "to_dataframe",
    "to_records",
]


if not TYPE_CHECKING:
    # Hidden from type checkers: they see the names imported above, and a module
    # __getattr__ would make any other name (a misspelled one) an unchecked Any.
    __getattr__, __dir__ = lazy_exports("aqido", globals(), _LAZY, __all__)
