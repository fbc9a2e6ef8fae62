"""AsyncQidoRS on live Orthanc and tiny_pacs: paging, many searches, find_studies, search_for_*.

Expected answers come from the synthetic seed; the full-archive ``iter_search``
over studies is in ``test_orthanc_client.py``.  Scenarios that need what
tiny_pacs lacks (relational paths, wildcards) are strict xfails on plain
tiny_pacs and run on ``tinypacs-auto`` (a client with ``profile="auto"``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from aqido.client import AsyncQidoRS
from aqido.query import HierarchicalQuery, QueryLevel, RelationalQuery
from aqido.results import Instance, Series, Study
from aqido.testing.orthanc import OrthancServer
from tests.integration.expected import (
    check_instance,
    check_instance_results,
    check_name,
    check_series_results,
    check_study,
    date_of,
    matches,
    uids,
)
from tests.integration.support import SEEDED, Served, on_servers

pytestmark = pytest.mark.integration

SERIES, INSTANCE = QueryLevel.SERIES, QueryLevel.INSTANCE


RELATIONAL = "tiny_pacs has no /series, /instances or /studies/{uid}/instances (404)"
WILDCARD = "tiny_pacs matches PatientName as a substring with a literal *"


@pytest.fixture
async def qido(server: Served) -> AsyncIterator[AsyncQidoRS]:
    """A client of the seeded server (Orthanc or tiny_pacs)."""
    async with server.client() as client:
        yield client


@pytest.mark.anyio
@pytest.mark.parametrize("server", on_servers(tinypacs=RELATIONAL), indirect=True)
async def test_iter_search_pages_relational_queries(qido: AsyncQidoRS, server: Served) -> None:
    ct = [s for s in SEEDED.series if s.modality == "CT"]
    assert len(ct) > 3 * 25
    query = RelationalQuery(query_level=SERIES, Modality="CT")
    paged = [series async for series in qido.iter_search(query, page_size=25)]
    check_series_results(paged, ct, SEEDED, server.dicomweb_url, omits=server.omits)

    studies = SEEDED.studies[20:30]
    query = RelationalQuery(
        query_level=INSTANCE, StudyInstanceUID=[s.study_instance_uid for s in studies], limit=9
    )
    paged_instances = [i async for i in qido.iter_search(query)]  # the query's limit pages
    expected = [i for s in studies for i in s.instances]
    check_instance_results(
        paged_instances,
        expected,
        SEEDED,
        server.dicomweb_url,
        study_level=not server.drops_named_levels,
        omits=server.omits,
    )


@pytest.mark.anyio
@pytest.mark.parametrize("server", on_servers(tinypacs=RELATIONAL), indirect=True)
async def test_search_many_returns_results_in_query_order(
    qido: AsyncQidoRS, server: Served
) -> None:
    base, omits = server.dicomweb_url, server.omits
    studies = SEEDED.studies[100:112]
    queries = [
        HierarchicalQuery(query_level=SERIES, StudyInstanceUID=s.study_instance_uid)
        for s in studies
    ]
    queries.append(
        RelationalQuery(query_level=INSTANCE, StudyInstanceUID=studies[0].study_instance_uid)
    )
    queries.append(HierarchicalQuery(PatientID=studies[1].patient_id))
    results = await qido.search_many(queries, max_concurrency=3)
    assert len(results) == len(queries)
    for record, found in zip(studies, results, strict=False):
        check_series_results(found, record.series, SEEDED, base, omits=omits)
    check_instance_results(results[-2], studies[0].instances, SEEDED, base, omits=omits)
    same_patient = {
        s.study_instance_uid for s in SEEDED.studies if s.patient_id == studies[1].patient_id
    }
    assert set(uids(results[-1], "StudyInstanceUID")) == same_patient

    completed = {query: found async for query, found in qido.iter_search_many(queries[:6])}
    assert set(completed) == set(queries[:6])
    for record, query in zip(studies[:6], queries[:6], strict=True):
        check_series_results(completed[query], record.series, SEEDED, base, omits=omits)


@pytest.mark.anyio
async def test_find_studies_builds_the_tree(orthanc: OrthancServer) -> None:
    # Orthanc only: the includefield trick and RetrieveURLs are Orthanc's (docs/tinypacs.md).
    async with AsyncQidoRS(orthanc.dicomweb_url) as qido:
        await _find_studies(qido, orthanc.dicomweb_url)


async def _find_studies(qido: AsyncQidoRS, base: str) -> None:
    records = SEEDED.studies[40:43]
    query = RelationalQuery(
        query_level=INSTANCE,
        StudyInstanceUID=[s.study_instance_uid for s in records],
        include_fields=["PatientName", "StudyDate"],  # a StudyInstanceUID key drops them
    )
    studies = await qido.find_studies(query)
    assert all(type(s) is Study for s in studies)
    assert sorted(uids(studies, "StudyInstanceUID")) == sorted(
        s.study_instance_uid for s in records
    )
    for study in studies:
        record = SEEDED.study(study.StudyInstanceUID)
        check_name(study.PatientName, record.patient_name)
        assert study.StudyDate == date_of(record.study_date)
        assert study.RetrieveURL == f"{base}/studies/{record.study_instance_uid}"
        assert sorted(uids(study.series, "SeriesInstanceUID")) == sorted(
            s.series_instance_uid for s in record.series
        )
        for series in study.series:
            seeded = SEEDED.series_by_uid(series.SeriesInstanceUID)
            assert type(series) is Series
            assert (series.Modality, series.SeriesNumber) == (
                seeded.modality,
                seeded.series_number,
            )
            assert series.RetrieveURL == (
                f"{base}/studies/{record.study_instance_uid}/series/{seeded.series_instance_uid}"
            )
            assert sorted(uids(series.instances, "SOPInstanceUID")) == sorted(
                i.sop_instance_uid for i in seeded.instances
            )
            for instance in series.instances:
                check_instance(instance, SEEDED.instance(instance.SOPInstanceUID), base)
                assert str(instance["PatientName"]) == record.patient_name

    nm = [s for s in SEEDED.series if s.modality == "NM"]
    studies = await qido.find_studies(RelationalQuery(query_level=SERIES, Modality="NM"))
    assert sorted(uids(studies, "StudyInstanceUID")) == sorted({s.study_instance_uid for s in nm})
    for study in studies:
        record = SEEDED.study(study.StudyInstanceUID)
        check_name(study.PatientName, record.patient_name)
        assert study.RetrieveURL == f"{base}/studies/{record.study_instance_uid}"
    check_series_results([se for st in studies for se in st.series], nm, SEEDED, base)
    assert all(series.instances == () for study in studies for series in study.series)


@pytest.mark.anyio
@pytest.mark.parametrize("server", on_servers(tinypacs=WILDCARD), indirect=True)
async def test_search_for_studies(qido: AsyncQidoRS, server: Served) -> None:
    base, omits = server.dicomweb_url, server.omits
    page = await qido.search_for_studies(limit=10, offset=295)
    assert len(page) == 5
    first = await qido.search_for_studies(limit=10)
    assert len(first) == 10
    for study in [*page, *first]:
        check_study(study, SEEDED.study(study.StudyInstanceUID), base, omits)

    expected = {s.study_instance_uid: s for s in SEEDED.studies if matches("doe*", s.patient_name)}
    assert len(expected) > 3 * 16
    every = await qido.search_for_studies(
        search_filters={"PatientName": "doe*"},
        fields=["StudyDescription", "00101030"],
        limit=16,
        get_remaining=True,
    )
    assert sorted(uids(every, "StudyInstanceUID")) == sorted(expected)
    for study in every:
        record = expected[study.StudyInstanceUID]
        check_study(study, record, base, omits)
        assert study.StudyDescription == (record.study_description or None)
        assert study["PatientWeight"] == float(record.patient_weight)


@pytest.mark.anyio
@pytest.mark.parametrize("server", on_servers(tinypacs=RELATIONAL), indirect=True)
async def test_search_for_series_and_instances(qido: AsyncQidoRS, server: Served) -> None:
    base, omits = server.dicomweb_url, server.omits
    record = SEEDED.studies[77]
    series = record.series[2]

    found: list[Series] = await qido.search_for_series(record.study_instance_uid)
    check_series_results(found, record.series, SEEDED, base, omits=omits)

    xa = [s for s in SEEDED.series if s.modality == "XA"]
    assert len(xa) > 4
    found = await qido.search_for_series(
        search_filters={"00080060": "XA"}, limit=4, get_remaining=True
    )
    check_series_results(found, xa, SEEDED, base, omits=omits)
    one_page = await qido.search_for_series(search_filters={"Modality": "XA"}, limit=4)
    assert len(one_page) == 4

    instances: list[Instance] = await qido.search_for_instances(record.study_instance_uid)
    check_instance_results(instances, record.instances, SEEDED, base, omits=omits)
    instances = await qido.search_for_instances(
        record.study_instance_uid, series.series_instance_uid
    )
    check_instance_results(instances, series.instances, SEEDED, base, omits=omits)
    # Unlike dicomweb-client, a series UID alone is sent (on /instances), not dropped.
    instances = await qido.search_for_instances(series_instance_uid=series.series_instance_uid)
    check_instance_results(
        instances,
        series.instances,
        SEEDED,
        base,
        series_level=not server.drops_named_levels,
        omits=omits,
    )
    instances = await qido.search_for_instances(
        search_filters={"Modality": "XA", "SeriesNumber": 2}, limit=3, get_remaining=True
    )
    wanted = [i for s in xa if s.series_number == 2 for i in s.instances]
    assert wanted
    check_instance_results(instances, wanted, SEEDED, base, omits=omits)
