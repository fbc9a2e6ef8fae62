"""The ``aqido`` command line against live servers: search, crawl and resume (Orthanc and
tiny_pacs), basic auth (Orthanc).

Expected answers come from the synthetic seed, never from the server.
"""

from __future__ import annotations

import io
import json
import pathlib

import pytest

from aqido.checkpoint import CrawlCheckpoint
from aqido.cli import EXIT_ERROR, EXIT_OK, main
from aqido.testing.orthanc import OrthancServer
from tests.integration.support import AUTH_PASSWORD, AUTH_USER, AUTHED, SEEDED, Served

pytestmark = pytest.mark.integration


def run(*argv: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    status = main(list(argv), stdout=out, stderr=err, environ=env or {})
    return status, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("server", ["orthanc", "tinypacs"], indirect=True)
def test_search_by_patient_id(server: Served) -> None:
    study = SEEDED.studies[7]
    status, out, err = run("search", server.dicomweb_url, "--PatientID", study.patient_id)
    assert (status, err) == (EXIT_OK, "")
    found = {json.loads(line)["0020000D"]["Value"][0] for line in out.splitlines()}
    # Orthanc matches PatientID case-insensitively, tiny_pacs exactly: no seeded ID differs by case
    assert found == {
        s.study_instance_uid
        for s in SEEDED.studies
        if s.patient_id.lower() == study.patient_id.lower()
    }


@pytest.mark.parametrize("server", ["orthanc", "tinypacs"], indirect=True)
def test_crawl_everything_then_resume_a_cut_file(server: Served, tmp_path: pathlib.Path) -> None:
    path = tmp_path / f"{server.name}.jsonl"
    status, _, err = run("crawl", server.dicomweb_url, "--out", str(path), "--concurrency", "4")
    assert (status, err) == (EXIT_OK, "")
    studies = list(CrawlCheckpoint.read_studies(path))
    assert sorted(s.StudyInstanceUID or "" for s in studies) == sorted(
        s.study_instance_uid for s in SEEDED.studies
    )
    assert sum(len(se.instances) for st in studies for se in st.series) == len(SEEDED.instances)
    complete = path.read_text(encoding="utf-8").splitlines()  # header, 300 studies, end
    # an interrupted crawl: the header, 100 complete study lines and half of the next one
    path.write_text("\n".join(complete[:101]) + "\n" + complete[101][:500], encoding="utf-8")
    status, out, err = run("crawl", server.dicomweb_url, "--out", str(path), "--resume")
    assert status == EXIT_OK
    assert "dropped an incomplete last line" in err
    assert "studies already in the file" in out
    resumed = path.read_text(encoding="utf-8").splitlines()
    assert resumed[0] == complete[0]
    assert sorted(resumed[1:-1]) == sorted(complete[1:-1])  # the same study lines, once each
    assert json.loads(resumed[-1])["end"]["complete"] is True


def test_basic_auth(orthanc_auth: OrthancServer) -> None:
    url = orthanc_auth.dicomweb_url
    status, out, err = run(
        "search", url, "--user", AUTH_USER, env={"AQIDO_PASSWORD": AUTH_PASSWORD}
    )
    assert (status, err) == (EXIT_OK, "")
    assert len(out.splitlines()) == len(AUTHED.studies)
    status, out, err = run("search", url, "--retries", "0")
    assert status == EXIT_ERROR
    assert err.count("\n") == 1
    assert "HTTP 401" in err
    assert AUTH_PASSWORD not in out + err
