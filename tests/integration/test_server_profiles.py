"""Profiles drive the client, on the live servers: the standard's answer where they differ.

Orthanc 1.10 matches strings without regard to case and does not percent-decode
query values (a name with a space or non-ASCII text matches nothing); tiny_pacs
has no wildcards, no lists, no relational paths, matches names as
case-insensitive substrings and reads non-ASCII values as Latin-1.  With the
server's preset (or ``profile="auto"``, which probes it) the client returns
what PS3.4 defines.  The expected answers come from a FakeArchive in standard
mode holding the same synthetic studies, never from the servers.
"""

from __future__ import annotations

from typing import Any

import pytest

from aqido.client import AsyncQidoRS
from aqido.profile import ServerProfile
from aqido.query import BaseQuery, HierarchicalQuery, QueryLevel, RelationalQuery
from aqido.testing import FakeArchive
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


PRESETS = {"orthanc": ServerProfile.orthanc(), "tinypacs": ServerProfile.tiny_pacs()}
#: What each server answers differently from the standard without a profile.
DIFFERS = {
    "orthanc": {"exact PatientName", "non-ASCII PatientName", "PatientName with a space"},
    "tinypacs": {
        "exact PatientName",
        "PatientName wildcard",
        "ModalitiesInStudy list",
        "StudyInstanceUID list",
        "non-ASCII PatientName",
    },
}


def url_of(request: pytest.FixtureRequest, name: str) -> str:
    url: str = request.getfixturevalue(name).dicomweb_url
    return url


@pytest.mark.anyio
@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize("what", QUERIES)
async def test_the_servers_preset_gives_the_standard_answer(
    request: pytest.FixtureRequest, name: str, what: str
) -> None:
    query = QUERIES[what]
    expected = await standard_answer(query)
    assert expected, "a case must match something to prove anything"
    async with AsyncQidoRS(url_of(request, name), profile=PRESETS[name]) as qido:
        found = await qido.search(query)
        paged = [r async for r in qido.iter_search(query)]
    assert sorted(uids(found, query.query_level)) == expected
    assert sorted(uids(paged, query.query_level)) == expected
    warnings = [w.text for w in found.warnings if w.agent == "aqido"]
    if (name, what) == ("tinypacs", "ModalitiesInStudy list"):
        # The preset's single_value_matching="substring" was measured on PatientName but
        # covers every string VR, and tiny_pacs never returns ModalitiesInStudy: aqido
        # cannot check the per-modality answers, and says so (they are exact in fact).
        assert len(warnings) == 1
        assert warnings[0].startswith("ModalitiesInStudy: the server returned no")
    else:
        assert warnings == []


@pytest.mark.anyio
@pytest.mark.parametrize("name", PRESETS)
async def test_the_server_differs_without_a_profile_and_auto_probes_it(
    request: pytest.FixtureRequest, name: str
) -> None:
    url = url_of(request, name)
    differs = set()
    async with AsyncQidoRS(url) as raw:
        for what, query in QUERIES.items():
            if query.query_level is QueryLevel.SERIES and name == "tinypacs":
                continue  # no /series there: a 404, not an answer
            as_is = sorted(uids(await raw.search(query), query.query_level))
            if as_is != await standard_answer(query):
                differs.add(what)
    assert DIFFERS[name] <= differs
    async with AsyncQidoRS(url, profile="auto") as qido:
        for what in sorted(differs):
            query = QUERIES[what]
            found = sorted(uids(await qido.search(query), query.query_level))
            assert found == await standard_answer(query), what
        assert qido.profile is not None
