"""aqido: an asynchronous client for QIDO-RS, the DICOMweb search service.

The public API is re-exported here.  Modules that pull in heavy dependencies
(aiohttp for the client, pydicom's data dictionary, pandas) are imported
lazily, on first attribute access, so ``import aqido`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from aqido.errors import (
    BadRequestError,
    CrawlIncompleteError,
    HTTPStatusError,
    InvalidQueryError,
    InvalidResponseError,
    NotFoundError,
    PayloadTooLargeError,
    QidoError,
    RateLimitedError,
    RequestTimeoutError,
    ServerError,
    TransportError,
    UnauthorizedError,
)
from aqido.query import (
    BaseQuery,
    HierarchicalQuery,
    QueryLevel,
    RelationalQuery,
    encode_query_value,
    ensure_query_type,
    is_valid_uid,
)

if TYPE_CHECKING:  # pragma: no cover - lazily resolved names, imported here for type checkers
    pass

__version__ = "0.1.0"

#: Public names provided by submodules that are imported on first use.
_LAZY: dict[str, str] = {}

__all__ = [
    "BadRequestError",
    "BaseQuery",
    "CrawlIncompleteError",
    "HTTPStatusError",
    "HierarchicalQuery",
    "InvalidQueryError",
    "InvalidResponseError",
    "NotFoundError",
    "PayloadTooLargeError",
    "QidoError",
    "QueryLevel",
    "RateLimitedError",
    "RelationalQuery",
    "RequestTimeoutError",
    "ServerError",
    "TransportError",
    "UnauthorizedError",
    "__version__",
    "encode_query_value",
    "ensure_query_type",
    "is_valid_uid",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'aqido' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
