"""The types of the ``aqido`` options' values: each reads one option's text.

A value that is not one raises :class:`argparse.ArgumentTypeError`, which the
parser (:func:`aqido._cli.args.build_parser`) reports as a one-line usage error.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import math
import re
from contextlib import suppress


def date(text: str) -> _dt.date:
    """``--date-from``, ``--date-to``: ``YYYY-MM-DD`` or ``YYYYMMDD``."""
    for fmt in ("%Y-%m-%d", "%Y%m%d"):
        with suppress(ValueError):
            return _dt.datetime.strptime(text, fmt).date()
    raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD or YYYYMMDD): {text!r}")


def positive(text: str) -> int:
    """A count: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


#: The most studies ``aqido demo --studies`` builds: 120,000 instances, crawled in about a minute
#: (each study is generated in memory before the archive starts, 50,000 took 9 s).
MAX_DEMO_STUDIES = 10_000


def demo_studies(text: str) -> int:
    """``demo --studies``: 1 to :data:`MAX_DEMO_STUDIES` (more: minutes, or for ever)."""
    value = positive(text)
    if value > MAX_DEMO_STUDIES:
        raise argparse.ArgumentTypeError(f"must be from 1 to {MAX_DEMO_STUDIES:,}, not {text!r}")
    return value


def concurrency(text: str) -> int | str:
    """``--concurrency``: a positive int, or ``auto`` (adaptive, see docs/concurrency.md)."""
    if text.strip().lower() == "auto":
        return "auto"
    return positive(text)


def finite(text: str) -> float:
    """A number that is not ``inf`` or ``nan``."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, not {text!r}")
    return value


def probability(text: str) -> float:
    """``demo --fault-rate``: a share of requests, from 0 to 1."""
    value = finite(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be from 0 to 1, not {text!r}")
    return value


def latency(text: str) -> float:
    """``demo --latency``: 0 to 10 s (slower answers time out the demo's client, at 30 s)."""
    value = finite(text)
    if not 0 <= value <= 10:
        raise argparse.ArgumentTypeError(f"must be from 0 to 10 seconds, not {text!r}")
    return value


def seconds(text: str) -> float:
    """A timeout: a finite number of seconds above 0 (``inf``, ``nan``, 0 and less are refused)."""
    value = finite(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, not {text!r}")
    return value


#: The binary units of a size, by their letter.
_SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def byte_size(text: str) -> int:
    """``512M``, ``1G``, ``1.5GiB`` or a number of bytes (binary units) -> bytes."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*", text.upper())
    value = float(match.group(1)) * _SIZE_UNITS[match.group(2)] if match else 0.0
    if not match or value < 1 or value > 2**62:
        raise argparse.ArgumentTypeError(f"not a size (e.g. 512M, 1G or bytes): {text!r}")
    return int(value)
