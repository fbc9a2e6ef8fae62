"""dicomweb-client's own QIDO-RS tests, run against aqido.

Ported from ``tests/test_web.py`` of dicomweb-client 0.61.2 (the sdist on PyPI,
https://pypi.org/project/dicomweb-client/0.61.2/), Copyright 2020 MGH Computational
Pathology, under the MIT license (``data/dicomweb_client/LICENSE.dicomweb-client``; the
canned answers in ``data/dicomweb_client`` come from the same sdist).

Ported: every test of ``search_for_studies``, ``search_for_series`` and
``search_for_instances``, ``test_set_http_retry_params`` and the three UID validation tests
(strict, permissive pass, permissive fail).  Not ported, as they are not QIDO-RS: WADO, STOW
and delete tests, URL parsing attributes (``test_url*``: aqido takes the service base URL
as is), ``test_proxies``, ``test_headers`` (it stores instances), tag lookups, JSON and XML
dataset loading (pydicom's).

Inputs and expectations are unchanged apart from these renames (docs/parity.md lists them):

- ``DICOMwebClient(url, permissive_uid=...)`` → ``aqido.QidoRS(url, permissive_uid=...)``,
  the blocking client (closed when each test ends); the ``client`` fixture is
  ``QidoRS(httpserver.url)``.
- ``search_for_*`` return typed ``Study``/``Series``/``Instance`` objects, not dicts: the
  DICOM JSON the server sent is ``[result.to_json() for result in results]`` (``as_json``).
- ``client.set_http_retry_params(retry, max_attempts, wait_exponential_multiplier,
  retriable_error_codes)`` → ``QidoRS(url, retries=set_http_retry_params(...))``, which maps
  the same arguments (and defaults: 429, 408, 503, 504) to an ``aqido.Retry``; the private
  attributes it set are read back from ``client.async_client.retry``.
- ``client.qido_url_prefix = 'qidors'`` → ``QidoRS(httpserver.url + '/qidors')``.
- ``requests.exceptions.HTTPError`` and ``retrying.RetryError`` (retries exhausted) →
  ``aqido.HTTPStatusError`` (the last answer's error, with its status).
- pytest-localserver's ``httpserver`` → a real HTTP server on 127.0.0.1 with the same API
  (``conftest.py``).

What still differs is a strict xfail with its reason.
"""

from __future__ import annotations

import json
from http import HTTPStatus

import pytest

from aqido import HTTPStatusError as HTTPError
from aqido import HTTPStatusError as RetryError
from aqido import InvalidQueryError, QidoRS, Retry

_opened: list[QidoRS] = []


def DICOMwebClient(url, **options):
    """``DICOMwebClient(url, ...)`` → ``aqido.QidoRS(url, ...)``, closed when the test ends."""
    client = QidoRS(url, **options)
    _opened.append(client)
    return client


@pytest.fixture(autouse=True)
def _close_clients():
    """Close the clients a test made (the peer's tests leave that to the garbage collector)."""
    yield
    while _opened:
        _opened.pop().close()


def as_json(results):
    """The DICOM JSON of typed results, as the server sent it (dicomweb-client returns that)."""
    return [result.to_json() for result in results]


def set_http_retry_params(
    retry=True,
    max_attempts=5,
    wait_exponential_multiplier=1000,
    retriable_error_codes=(
        HTTPStatus.TOO_MANY_REQUESTS,
        HTTPStatus.REQUEST_TIMEOUT,
        HTTPStatus.SERVICE_UNAVAILABLE,
        HTTPStatus.GATEWAY_TIMEOUT,
    ),
):
    """dicomweb-client's retry settings (same arguments and defaults) as an aqido ``Retry``."""
    if not retry:
        return None
    return Retry(
        max_attempts=max_attempts,
        backoff_base=wait_exponential_multiplier / 1000,  # milliseconds → seconds
        statuses=set(retriable_error_codes),
    )


def test_set_http_retry_params(httpserver, client):
    retry = True
    retriable_error_codes = (HTTPStatus.TOO_MANY_REQUESTS, HTTPStatus.SERVICE_UNAVAILABLE)
    max_attempts = 10
    wait_exponential_multiplier = 100
    client = DICOMwebClient(
        httpserver.url,
        retries=set_http_retry_params(
            retry, max_attempts, wait_exponential_multiplier, retriable_error_codes
        ),
    )
    assert (client.async_client.retry.max_attempts > 1) == retry
    assert client.async_client.retry.statuses == set(retriable_error_codes)
    assert client.async_client.retry.max_attempts == max_attempts
    assert client.async_client.retry.backoff_base * 1000 == wait_exponential_multiplier


def test_search_for_studies(httpserver, client, cache_dir):
    cache_filename = str(cache_dir.joinpath("search_for_studies.json"))
    with open(cache_filename) as f:
        content = f.read()
    parsed_content = json.loads(content)
    headers = {"content-type": "application/dicom+json"}
    httpserver.serve_content(content=content, code=200, headers=headers)
    assert as_json(client.search_for_studies()) == parsed_content
    request = httpserver.requests[0]
    assert request.path == "/studies"
    assert all(
        mime[0] in ("application/json", "application/dicom+json")
        for mime in request.accept_mimetypes
    )


def test_search_for_studies_with_additional_params(httpserver, client, cache_dir):
    cache_filename = str(cache_dir.joinpath("search_for_studies.json"))
    with open(cache_filename) as f:
        content = f.read()
    parsed_content = json.loads(content)
    headers = {"content-type": "application/dicom+json"}
    httpserver.serve_content(content=content, code=200, headers=headers)
    params = {"key1": ["value1", "value2"], "key2": "value3"}
    assert as_json(client.search_for_studies(additional_params=params)) == parsed_content
    request = httpserver.requests[0]
    assert request.path == "/studies"
    assert request.query_string.decode() == ("key1=value1&key1=value2&key2=value3")
    assert all(
        mime[0] in ("application/json", "application/dicom+json")
        for mime in request.accept_mimetypes
    )


def test_search_for_studies_with_retries(httpserver, client, cache_dir):
    headers = {"content-type": "application/dicom+json"}
    max_attempts = 3
    client = DICOMwebClient(
        httpserver.url,
        retries=set_http_retry_params(
            retry=True, max_attempts=max_attempts, wait_exponential_multiplier=10
        ),
    )
    httpserver.serve_content(content="", code=HTTPStatus.REQUEST_TIMEOUT, headers=headers)
    with pytest.raises(RetryError):
        client.search_for_studies()
    assert len(httpserver.requests) == max_attempts


def test_search_for_studies_with_no_retries(httpserver, client, cache_dir):
    client = DICOMwebClient(httpserver.url, retries=set_http_retry_params(retry=False))
    headers = {"content-type": "application/dicom+json"}
    httpserver.serve_content(content="", code=HTTPStatus.REQUEST_TIMEOUT, headers=headers)
    with pytest.raises(HTTPError):
        client.search_for_studies()
    assert len(httpserver.requests) == 1


def test_search_for_studies_qido_prefix(httpserver, client, cache_dir):
    client = DICOMwebClient(httpserver.url + "/qidors")
    cache_filename = str(cache_dir.joinpath("search_for_studies.json"))
    with open(cache_filename) as f:
        content = f.read()
    headers = {"content-type": "application/dicom+json"}
    httpserver.serve_content(content=content, code=200, headers=headers)
    client.search_for_studies()
    request = httpserver.requests[0]
    assert request.path == "/qidors/studies"


def test_search_for_studies_limit_offset(httpserver, client, cache_dir):
    cache_filename = str(cache_dir.joinpath("search_for_studies.json"))
    with open(cache_filename) as f:
        data = json.loads(f.read())
    # We will limit the search to 2 studies starting with the 2nd.
    content = json.dumps(data[1:3])
    parsed_content = json.loads(content)
    headers = {"content-type": "application/dicom+json"}
    httpserver.serve_content(content=content, code=200, headers=headers)
    assert as_json(client.search_for_studies(limit=2, offset=1)) == parsed_content
    request = httpserver.requests[0]
    assert (
        request.query_string.decode() == "limit=2&offset=1"
        or request.query_string.decode() == "offset=1&limit=2"
    )
    assert request.path == "/studies"
    assert all(
        mime[0] in ("application/json", "application/dicom+json")
        for mime in request.accept_mimetypes
    )


def test_search_for_series(httpserver, client, cache_dir):
    cache_filename = str(cache_dir.joinpath("search_for_series.json"))
    with open(cache_filename) as f:
        content = f.read()
    parsed_content = json.loads(content)
    headers = {"content-type": "application/dicom+json"}
    httpserver.serve_content(content=content, code=200, headers=headers)
    assert as_json(client.search_for_series()) == parsed_content
    request = httpserver.requests[0]
    assert request.path == "/series"
    assert all(
        mime[0] in ("application/json", "application/dicom+json")
        for mime in request.accept_mimetypes
    )


def test_search_for_series_with_additional_params(httpserver, client, cache_dir):
    cache_filename = str(cache_dir.joinpath("search_for_series.json"))
    with open(cache_filename) as f:
        content = f.read()
    parsed_content = json.loads(content)
    headers = {"content-type": "application/dicom+json"}
    httpserver.serve_content(content=content, code=200, headers=headers)
    params = {"key1": ["value1", "value2"], "key2": "value3"}
    assert as_json(client.search_for_series(additional_params=params)) == parsed_content
    request = httpserver.requests[0]
    assert request.path == "/series"
    assert request.query_string.decode() == ("key1=value1&key1=value2&key2=value3")
    assert all(
        mime[0] in ("application/json", "application/dicom+json")
        for mime in request.accept_mimetypes
    )


def test_search_for_series_filter_modality(httpserver, client, cache_dir):
    cache_filename = str(cache_dir.joinpath("search_for_series.json"))
    with open(cache_filename) as f:
        content = f.read()
    headers = {"content-type": "application/dicom+json"}
    httpserver.serve_content(content=content, code=200, headers=headers)
    client.search_for_series(search_filters={"Modality": "SM"})
    request = httpserver.requests[0]
    assert request.path == "/series"
    assert request.query_string.decode() == "Modality=SM"


def test_search_for_series_of_study(httpserver, client, cache_dir):
    cache_filename = str(cache_dir.joinpath("search_for_series.json"))
    with open(cache_filename) as f:
        content = f.read()
    study_uid = "1.2.3.4"
    headers = {"content-type": "application/dicom+json"}
    httpserver.serve_content(content=content, code=200, headers=headers)
    client.search_for_series(study_instance_uid=study_uid)
    request = httpserver.requests[0]
    assert request.path == f"/studies/{study_uid}/series"


def test_search_for_series_wrong_uid_type(httpserver, client, cache_dir):
    with pytest.raises(TypeError):
        client.search_for_series(study_instance_uid=["1.2.3.4"])


def test_search_for_series_wrong_uid_value(httpserver, client, cache_dir):
    with pytest.raises(ValueError):
        client.search_for_series(study_instance_uid="1_2_3_4")


def test_search_for_series_limit_offset(httpserver, client, cache_dir):
    cache_filename = str(cache_dir.joinpath("search_for_series.json"))
    with open(cache_filename) as f:
        data = json.loads(f.read())
    content = json.dumps(data[1:3])
    parsed_content = json.loads(content)
    headers = {"content-type": "application/dicom+json"}
    httpserver.serve_content(content=content, code=200, headers=headers)
    assert as_json(client.search_for_studies(limit=2, offset=1)) == parsed_content
    request = httpserver.requests[0]
    assert (
        request.query_string.decode() == "limit=2&offset=1"
        or request.query_string.decode() == "offset=1&limit=2"
    )
    assert request.path == "/studies"
    assert all(
        mime[0] in ("application/json", "application/dicom+json")
        for mime in request.accept_mimetypes
    )


def test_search_for_instances(httpserver, client, cache_dir):
    cache_filename = str(cache_dir.joinpath("search_for_instances.json"))
    with open(cache_filename) as f:
        content = f.read()
    parsed_content = json.loads(content)
    headers = {"content-type": "application/dicom+json"}
    httpserver.serve_content(content=content, code=200, headers=headers)
    assert as_json(client.search_for_instances()) == parsed_content
    request = httpserver.requests[0]
    assert request.path == "/instances"
    assert all(
        mime[0] in ("application/json", "application/dicom+json")
        for mime in request.accept_mimetypes
    )


def test_search_for_instances_with_additional_params(httpserver, client, cache_dir):
    cache_filename = str(cache_dir.joinpath("search_for_instances.json"))
    with open(cache_filename) as f:
        content = f.read()
    parsed_content = json.loads(content)
    headers = {"content-type": "application/dicom+json"}
    httpserver.serve_content(content=content, code=200, headers=headers)
    params = {"key1": ["value1", "value2"], "key2": "value3"}
    assert as_json(client.search_for_instances(additional_params=params)) == parsed_content
    request = httpserver.requests[0]
    assert request.path == "/instances"
    assert request.query_string.decode() == ("key1=value1&key1=value2&key2=value3")
    assert all(
        mime[0] in ("application/json", "application/dicom+json")
        for mime in request.accept_mimetypes
    )


def test_search_for_instances_of_series(httpserver, client, cache_dir):
    cache_filename = str(cache_dir.joinpath("search_for_instances.json"))
    with open(cache_filename) as f:
        content = f.read()
    headers = {"content-type": "application/dicom+json"}
    httpserver.serve_content(content=content, code=200, headers=headers)
    study_uid = "1.2.3.4"
    series_uid = "5.6.7.8"
    client.search_for_instances(study_uid, series_uid)
    request = httpserver.requests[0]
    assert request.path == f"/studies/{study_uid}/series/{series_uid}/instances"


def test_search_for_instances_of_study(httpserver, client, cache_dir):
    cache_filename = str(cache_dir.joinpath("search_for_instances.json"))
    with open(cache_filename) as f:
        content = f.read()
    headers = {"content-type": "application/dicom+json"}
    httpserver.serve_content(content=content, code=200, headers=headers)
    study_uid = "1.2.3.4"
    client.search_for_instances(study_uid)
    request = httpserver.requests[0]
    assert request.path == f"/studies/{study_uid}/instances"


def test_search_for_instances_limit_offset(httpserver, client, cache_dir):
    cache_filename = str(cache_dir.joinpath("search_for_instances.json"))
    with open(cache_filename) as f:
        content = f.read()
    parsed_content = json.loads(content)
    headers = {"content-type": "application/dicom+json"}
    httpserver.serve_content(content=content, code=200, headers=headers)
    assert as_json(client.search_for_instances(limit=2, offset=1)) == parsed_content
    request = httpserver.requests[0]
    assert (
        request.query_string.decode() == "limit=2&offset=1"
        or request.query_string.decode() == "offset=1&limit=2"
    )
    assert request.path == "/instances"
    assert all(
        mime[0] in ("application/json", "application/dicom+json")
        for mime in request.accept_mimetypes
    )


def test_search_for_instances_includefields(httpserver, client, cache_dir):
    headers = {"content-type": "application/dicom+json"}
    httpserver.serve_content(content="", code=200, headers=headers)
    f1 = "StudyInstanceUID"
    f2 = "SeriesInstanceUID"
    client.search_for_instances(fields={f1, f2})
    request = httpserver.requests[0]
    query_string_opt_1 = f"includefield={f1}&includefield={f2}"
    query_string_opt_2 = f"includefield={f2}&includefield={f1}"
    assert (
        request.query_string.decode() == query_string_opt_1
        or request.query_string.decode() == query_string_opt_2
    )
    assert request.path == "/instances"
    assert all(
        mime[0] in ("application/json", "application/dicom+json")
        for mime in request.accept_mimetypes
    )


@pytest.mark.parametrize(
    "invalid_uid", ["1.2/3.4", "1.2@3.4", "1.2.a.4", "1.2.A.4", ".23.4", "1.2..4", "1.2.", "."]
)
def test_uid_strict_validation_fail(httpserver, invalid_uid):
    client = DICOMwebClient(httpserver.url, permissive_uid=False)
    with pytest.raises(ValueError, match=f"UID {invalid_uid!r} must match regex"):
        client.search_for_series(study_instance_uid=invalid_uid)


SPACES_ARE_NOT_SAFE = pytest.mark.xfail(
    strict=True,
    raises=InvalidQueryError,
    reason="aqido's permissive UIDs are what needs no encoding in a URL path segment and a "
    "query value (letters, digits, '.', '-', '_', '~'): a space (and an apostrophe) is refused",
)


@pytest.mark.parametrize(
    "uid",
    [
        "13-abc",
        "hello",
        pytest.param("is it", marks=SPACES_ARE_NOT_SAFE),
        pytest.param("you're me", marks=SPACES_ARE_NOT_SAFE),
    ],
)
def test_uid_permissive_validation_pass(httpserver, uid):
    client_strict = DICOMwebClient(httpserver.url, permissive_uid=False)
    client_permissive = DICOMwebClient(httpserver.url, permissive_uid=True)

    # Should fail in strict mode
    with pytest.raises(ValueError, match=f"UID {uid!r} must match regex"):
        client_strict.search_for_series(study_instance_uid=uid)

    # Should not raise exception in permissive mode
    resp = client_permissive.search_for_series(study_instance_uid=uid)
    assert isinstance(resp, list)


@pytest.mark.parametrize("uid", ["1.23.5@", "1/23.4"])
def test_uid_permissive_validation_fail(httpserver, uid):
    client = DICOMwebClient(httpserver.url, permissive_uid=True)
    with pytest.raises(ValueError, match=f"UID {uid!r} must match regex"):
        client.search_for_series(study_instance_uid=uid)
