"""The probe's cap measurement: three dependent steps, each pure (no I/O).

A result cap hides itself: a listing that stops at 100 studies may be a cap or the
whole archive.  :func:`cap_guard_request` asks whether a study is reachable at
offset 10000; :func:`cap_listing_request` lists the studies (bounded);
:func:`cap_followups` asks what is past the listing and, for a typical cap size,
splits it by StudyDate; :func:`interpret_caps` reads the cap fields from all of
it.  The public names are re-exported by :mod:`aqido.probe`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from aqido._probe_model import (
    STUDY_DATE,
    Answer,
    Finding,
    ProbeRequest,
    add_days,
    first_value,
    studies_request,
    undecided,
    usable_date,
)

#: Result caps seen in the field; a listing of exactly this many (or one more) is suspect.
TYPICAL_CAPS = (10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)
#: The largest archive (studies reachable by ``offset``) the probe lists without a limit.
UNLIMITED_LISTING_MAX = 10000


def cap_guard_request() -> ProbeRequest:
    """Step 1 of the cap check: is a study reachable at offset 10000?"""
    return studies_request(f"offset={UNLIMITED_LISTING_MAX}&limit=1")


def cap_listing_request(paging_ok: bool, guard: Answer) -> ProbeRequest | None:
    """Step 2: the listing that may hit a cap (``None``: the cap cannot be measured).

    Without a limit when the guard shows at most 10000 studies (or a cap before
    the offset); with ``limit=10001`` otherwise, so the answer stays bounded.
    """
    if not paging_ok or not guard.ok:
        return None
    if guard.items:
        return studies_request(f"limit={UNLIMITED_LISTING_MAX + 1}")
    return studies_request("")


def _suspect(n: int) -> bool:
    return n in TYPICAL_CAPS or n - 1 in TYPICAL_CAPS


def cap_followups(listing: Answer) -> list[ProbeRequest]:
    """Step 3: what more to ask after the listing of ``n`` studies.

    ``offset=n&limit=1`` (is there anything past the listing?) and, when ``n`` is a
    typical cap size, the listing split in two by StudyDate (do the halves hold more
    than ``n`` between them?  That shows a cap applied before the offset).  After the
    bounded listing (``limit=10001``) the halves are bounded too (``limit=n+1``: more
    than ``n`` between them is all they must show), not two halves of a large archive.
    """
    if not listing.ok:
        return []
    n = len(listing.items or ())
    requests = [studies_request(f"offset={n}&limit=1")]
    if _suspect(n):
        values = (first_value(i, STUDY_DATE) for i in listing.items or ())
        dates = sorted(d for d in values if d is not None and usable_date(d))
        if dates:
            middle = dates[len(dates) // 2]
            bound = f"&limit={n + 1}" if n > UNLIMITED_LISTING_MAX else ""
            requests += [
                studies_request(f"StudyDate=-{middle}{bound}"),
                studies_request(f"StudyDate={add_days(middle, 1)}-{bound}"),
            ]
    return requests


def interpret_caps(
    listing_request: ProbeRequest, listing: Answer, followups: Sequence[Answer]
) -> list[Finding]:
    """The cap fields from the listing and its follow-ups (pure)."""
    where = str(listing_request)
    if not listing.ok or not followups:
        return [undecided("max_results", f"the listing answered {listing.status}", where)]
    n = len(listing.items or ())
    if n == 0:  # no cap stops at nothing: the server would not list (it wants a key?)
        why = f"the listing answered {listing.status} with no study, though studies exist"
        return [undecided("max_results", why, where)]
    truncation = bool(
        re.search(r"additional\s+results|more\s+results|maximum", listing.warning, re.I)
    )
    past = followups[0]
    limited = "limit" in listing_request.query
    if limited and n > UNLIMITED_LISTING_MAX and past.ok and past.items:
        # the listing stopped at the probe's own limit=10001 and more lie past it: no cap
        # up to that (10001 is 10000 + 1 only when nothing is past it: Orthanc's cap)
        said = f"limit={UNLIMITED_LISTING_MAX + 1} gave {n} studies and more are past them"
        return [Finding("max_results", f"{said}: no cap up to that", where, None)]
    split_total = None
    if len(followups) == 3 and followups[1].ok and followups[2].ok:
        split_total = len(followups[1].items or ()) + len(followups[2].items or ())
    if past.ok and past.items:  # more studies exist past the listing: a cap after the offset
        before_offset = False
    elif split_total is not None and split_total > n:
        before_offset = True  # the halves hold more than the whole: capped, offset cannot pass it
    elif _suspect(n) and (split_total is None or split_total < n):
        why = (
            f"{n} studies is a typical cap and nothing is past them, but splitting the "
            "listing by StudyDate did not work, so a cap before the offset cannot be ruled out"
        )
        return [undecided("max_results", why, where)]
    else:
        said = f"{n} studies in one listing and nothing past them: no cap"
        if limited:
            said = f"limit={UNLIMITED_LISTING_MAX + 1} gave {n} studies: no cap up to that"
        return [
            Finding("max_results", said, where, None if limited else "none"),
        ]
    plus_one = n - 1 in TYPICAL_CAPS and n not in TYPICAL_CAPS
    cap = n - 1 if plus_one else n
    shown = str(studies_request(f"offset={n}&limit=1")) if not before_offset else "StudyDate split"
    return [
        Finding("max_results", f"a listing stops at {n} studies", where, cap),
        Finding("cap_plus_one", f"{n} = cap + {1 if plus_one else 0}", where, plus_one),
        Finding(
            "cap_before_offset",
            "paging cannot pass the cap" if before_offset else "offset reaches past the cap",
            shown,
            before_offset,
        ),
        Finding(
            "cap_warning",
            "the capped listing has a truncation Warning"
            if truncation
            else "no Warning on the capped listing",
            where,
            truncation,
        ),
    ]
