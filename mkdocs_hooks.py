"""mkdocs hooks for the aqido docs site (wired in by ``hooks:`` in mkdocs.yml).

aqido's docstrings cross-reference in Sphinx's style (``:class:`~aqido.retry.Timeout```),
which mkdocstrings renders as text; this turns each such role into the plain code name it
stands for (``Timeout``, or the full path when written without ``~``).
"""

from __future__ import annotations

import re
from typing import Any

#: A Sphinx role as mkdocstrings renders it: the role name, then the target as inline code.
ROLE = re.compile(r":(?:class|meth|func|mod|attr|data|exc|obj):<code>(~?)([^<]+)</code>")


def _plain(match: re.Match[str]) -> str:
    short, target = match.group(1), match.group(2)
    return f"<code>{target.rsplit('.', 1)[-1] if short else target}</code>"


def on_page_content(html: str, **_: Any) -> str:
    """Replace the Sphinx roles left in a rendered page by inline code."""
    return ROLE.sub(_plain, html)
