"""Profiles drive the client, on the live Orthanc: the standard's answer where Orthanc differs.

Orthanc 1.10 matches strings without regard to case, does not percent-decode
query values (so a name with a space or non-ASCII text matches nothing) and
reads a comma in any value as a list.  With ``ServerProfile.orthanc()`` (or
``profile="auto"``, which probes it) the client returns what PS3.4 defines.
The expected answers come from a FakeArchive in standard mode holding the
same synthetic studies, never from Orthanc.
"""

from __future__ import annotations

from typing import Any

import pytest

from aqido.client import AsyncQidoRS
from aqido.profile import ServerProfile
from aqido.query import BaseQuery, HierarchicalQuery, QueryLevel, RelationalQuery
from aqido.testing import FakeArchive
from aqido.testing.orthanc import OrthancServer
from tests.integration.support import SEEDED

pytestmark = pytest.mark.integration

UIDS = [s.study_instance_uid for s in SEEDED.studies]

QUERIES = {
    "exact PatientName": HierarchicalQuery(PatientName="Doe^Jane"),
    "PatientName wildcard": HierarchicalQuery(PatientName="Doe^J*"),
    "ModalitiesInStudy list": HierarchicalQuery(ModalitiesInStudy=["CT", "MR"]),
    "StudyInstanceUID list": HierarchicalQuery(StudyInstanceUID=[UIDS[7], UIDS[2], UIDS[200]]),
    "PatientName with a space": HierarchicalQuery(PatientName="van der Berg^Pieter"),
    "non-ASCII PatientName": HierarchicalQuery(PatientName="Müller^Jürgen"),
    "relational series": RelationalQuery(
        query_level=QueryLevel.SERIES, PatientName="doe^jane", Modality="CT"
    ),
}


def uids(results: list[Any], level: QueryLevel) -> list[str]:
    if level is QueryLevel.SERIES:
        return [str(r.SeriesInstanceUID) for r in results]
    return [str(r.StudyInstanceUID) for r in results]


async def standard_answer(query: BaseQuery) -> list[str]:
    async with FakeArchive(SEEDED) as archive, AsyncQidoRS(archive.url) as qido:
        return sorted(uids(await qido.search(query), query.query_level))


@pytest.mark.anyio
@pytest.mark.parametrize("what", QUERIES)
async def test_orthanc_with_its_profile_gives_the_standard_answer(
    orthanc: OrthancServer, what: str
) -> None:
    query = QUERIES[what]
    expected = await standard_answer(query)
    assert expected, "a case must match something to prove anything"
    async with AsyncQidoRS(orthanc.dicomweb_url, profile=ServerProfile.orthanc()) as qido:
        found = await qido.search(query)
        paged = [r async for r in qido.iter_search(query)]
    assert sorted(uids(found, query.query_level)) == expected
    assert sorted(uids(paged, query.query_level)) == expected
    assert not [w.text for w in found.warnings if w.agent == "aqido"]


@pytest.mark.anyio
async def test_orthanc_differs_without_a_profile_and_auto_probes_it(
    orthanc: OrthancServer,
) -> None:
    differs = []
    async with AsyncQidoRS(orthanc.dicomweb_url) as raw:
        for what, query in QUERIES.items():
            as_is = sorted(uids(await raw.search(query), query.query_level))
            if as_is != await standard_answer(query):
                differs.append(what)
    assert {"exact PatientName", "non-ASCII PatientName", "PatientName with a space"} <= set(
        differs
    )
    async with AsyncQidoRS(orthanc.dicomweb_url, profile="auto") as qido:
        for what in differs:
            query = QUERIES[what]
            found = sorted(uids(await qido.search(query), query.query_level))
            assert found == await standard_answer(query), what
        assert qido.profile == ServerProfile.orthanc()
