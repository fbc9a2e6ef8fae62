"""Safe terminal output: server-provided text made harmless before a terminal shows it.

A QIDO-RS server controls every string in its answers (names, descriptions,
error bodies, HTTP reason phrases).  Printed raw, ``\\x1b]0;...\\x07`` retitles
the window, ``\\x1b[2J`` clears the screen, a newline forges a table row and a
bidi override reorders what is shown.  :func:`printable` is the one function
the command line passes such text through before display: it replaces

- C0 controls (U+0000-U+001F), DEL (U+007F) and C1 controls (U+0080-U+009F)
  by backslash escapes: ``\\n``, ``\\r``, ``\\t`` and ``\\xHH`` for the rest
  (ESC is ``\\x1b``);
- the Unicode line and paragraph separators (U+2028, U+2029) and every format
  character (Unicode category Cf): the bidi embedding, override and isolate
  controls (U+202A-U+202E, U+2066-U+2069), the bidi marks (U+200E, U+200F,
  U+061C), the zero-width characters (U+200B-U+200D, U+2060, U+FEFF), the soft
  hyphen and the invisible tags (U+E0000 block) by ``\\uHHHH`` (``\\xHH``,
  ``\\UHHHHHHHH``): invisible, they would let two different values look alike.

Everything else, including backslashes, is kept: DICOM separates values with
``\\``, and the escapes are for reading, not for parsing back (the ``json``,
``jsonl`` and ``csv`` formats carry the exact data).

:func:`encodable` makes text fit a stream's encoding, writing what the encoding
cannot hold as the same kind of escape (``\\xe9``, ``\\u4e2d``);
:class:`SafeStream` applies it to every write, so a display never fails with
``UnicodeEncodeError`` on an ASCII or Latin-1 terminal.

Pure string functions and one small stream wrapper; no third-party imports.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterable
from typing import IO, Any

__all__ = ["SafeStream", "encodable", "printable", "unicode_safe"]

_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u2028\u2029"
    # format characters (Unicode category Cf, as of Unicode 15)
    "\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f"
    "\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb"
    "\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3"
    "\U0001d173-\U0001d17a\U000e0001\U000e0020-\U000e007f]"
)
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable(text: object) -> str:
    """Return ``str(text)`` with control characters escaped visibly (see the module docstring).

    The result has no C0/C1 control character, no DEL, no line break and no
    format character (bidi controls and marks, zero-width characters), so it
    is one line that shows exactly as many characters as it says.  Text
    without any of these is returned unchanged.
    """
    text = text if isinstance(text, str) else str(text)
    return _UNSAFE.sub(_escape, text)


_UNICODE = frozenset({"utf-8", "utf-16", "utf-32", "utf-8-sig", "utf-16-le", "utf-16-be"})


def unicode_safe(encoding: str | None) -> bool:
    """Whether a stream with this encoding can hold any text (``None``: an in-memory stream)."""
    if encoding is None:
        return True
    try:
        name = codecs.lookup(encoding).name
    except LookupError:
        return False
    return name in _UNICODE or name.startswith(("utf-16", "utf-32"))


def encodable(text: str, encoding: str | None) -> str:
    """Return ``text`` with what ``encoding`` cannot encode written as backslash escapes.

    ``é`` becomes ``\\xe9`` in ASCII, ``中`` ``\\u4e2d``; a lone surrogate
    (never encodable) ``\\ud800``.  ``encoding=None`` (an in-memory stream)
    only escapes lone surrogates.
    """
    if text.isascii():  # every encoding aqido meets holds ASCII: the common case, fast
        return text
    target = encoding or "utf-8"
    try:
        text.encode(target)
    except UnicodeEncodeError:
        return text.encode(target, "backslashreplace").decode(target)
    except LookupError:  # an encoding Python does not know: keep to ASCII
        return text.encode("ascii", "backslashreplace").decode("ascii")
    return text


class SafeStream:
    """A text stream wrapper whose writes never fail on characters its encoding lacks.

    Each write (``write``, ``writelines``) goes through :func:`encodable` for the
    wrapped stream's encoding; everything else (``flush``, ``isatty``, ``fileno``...) is the
    wrapped stream's.  :attr:`replaced` tells whether any text was escaped.
    """

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.encoding: str | None = getattr(stream, "encoding", None)
        self.replaced = False

    @property
    def unicode(self) -> bool:
        """Whether the wrapped stream can hold any text (see :func:`unicode_safe`)."""
        return unicode_safe(self.encoding)

    def write(self, text: str) -> int:
        """Write ``text``, escaping what the stream's encoding cannot hold."""
        safe = encodable(text, self.encoding)
        if safe is not text:
            self.replaced = True
        return self.stream.write(safe)

    def writelines(self, lines: Iterable[str]) -> None:
        """Write each of ``lines`` as :meth:`write` does (no line ends are added)."""
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)
