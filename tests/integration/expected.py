"""Expected answers for the client tests, computed from the synthetic seed (never the server).

``check_study`` / ``check_series`` / ``check_instance`` compare a typed result
from :class:`~aqido.client.AsyncQidoRS` with the record it was seeded from,
field by field (UIDs, counts, modality, dates, times, names, RetrieveURL).
The expected Python values are derived from the seed's DICOM strings here,
independently of aqido's value parsers.  ``matches`` models how Orthanc
matches a value (case-insensitive, against the whole stored value).

``omits`` names attributes the server never returns (tiny_pacs:
``support.TINYPACS_OMITS``): each must then be absent, instead of equal.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from typing import Any

from aqido.results import Dataset, Instance, Series, Study
from aqido.testing.synthetic import SyntheticArchive, SyntheticInstance, SyntheticSeries
from aqido.testing.synthetic import SyntheticStudy as Record
from aqido.values import PersonName

#: SpecificCharacterSet of every seeded instance.
CHARSET = ("ISO_IR 192",)


def date_of(text: str) -> dt.date | None:
    """DA text (``YYYYMMDD``) as a date; ``None`` for an empty value."""
    return dt.date(int(text[:4]), int(text[4:6]), int(text[6:8])) if text else None


def time_of(text: str) -> dt.time:
    """TM text (``HHMM``, ``HHMMSS``, ``HHMMSS.ffffff``) as a time."""
    whole, _, fraction = text.partition(".")
    return dt.time(
        int(whole[:2]),
        int(whole[2:4] or 0),
        int(whole[4:6] or 0),
        int(fraction.ljust(6, "0")) if fraction else 0,
    )


def check_name(name: object, expected: str) -> None:
    """A PN value is a PersonName with the seed's groups (``None`` when the seed is empty)."""
    if not expected:
        assert name is None
        return
    assert isinstance(name, PersonName), name
    groups = [*expected.split("="), "", ""][:3]
    assert (name.alphabetic, name.ideographic, name.phonetic) == tuple(groups)
    assert str(name) == expected


def _study_url(base: str, uid: str) -> str:
    return f"{base}/studies/{uid}"


NONE: frozenset[str] = frozenset()


def _equal(ds: Dataset, keyword: str, expected: object, omits: frozenset[str]) -> None:
    """``ds.keyword == expected``, or ``keyword`` absent when the server omits it."""
    if keyword in omits:
        assert keyword not in ds, (keyword, ds)
    else:
        value = getattr(ds, keyword) if hasattr(type(ds), keyword) else ds[keyword]
        assert value == expected, (keyword, value, expected)


def _may_be_empty(ds: Dataset, keyword: str, seeded: str) -> Any:
    """``ds[keyword]``; an attribute seeded empty may also be left out (tiny_pacs does)."""
    return ds.get(keyword) if not seeded else ds[keyword]


def check_patient_and_study(ds: Dataset, record: Record, omits: frozenset[str] = NONE) -> None:
    """Patient and study attributes (both servers return them at every level), by keyword."""
    assert ds["StudyInstanceUID"] == record.study_instance_uid
    assert ds["StudyDate"] == date_of(record.study_date)
    assert ds["StudyTime"] == time_of(record.study_time)
    assert _may_be_empty(ds, "AccessionNumber", record.accession_number) == (
        record.accession_number or None
    )
    check_name(ds["PatientName"], record.patient_name)
    referring = record.referring_physician_name
    check_name(_may_be_empty(ds, "ReferringPhysicianName", referring), referring)
    assert ds["PatientID"] == record.patient_id
    birth = record.patient_birth_date
    assert _may_be_empty(ds, "PatientBirthDate", birth) == date_of(birth)
    assert _may_be_empty(ds, "PatientSex", record.patient_sex) == (record.patient_sex or None)
    assert ds["StudyID"] == record.study_id
    if "SpecificCharacterSet" in omits:
        assert "SpecificCharacterSet" not in ds
    else:
        assert ds["SpecificCharacterSet"] == CHARSET[0]


def check_study(study: Study, record: Record, base: str, omits: frozenset[str] = NONE) -> None:
    """A ``Study`` from a study-level search against its seed record, typed field by field."""
    assert type(study) is Study
    check_patient_and_study(study, record, omits)
    assert study.StudyInstanceUID == record.study_instance_uid
    assert study.StudyDate == date_of(record.study_date)
    assert study.StudyTime == time_of(record.study_time)
    assert study.AccessionNumber == (record.accession_number or None)
    if "ModalitiesInStudy" in omits:
        assert "ModalitiesInStudy" not in study
    else:
        assert sorted(study.ModalitiesInStudy) == list(record.modalities_in_study)
    check_name(study.PatientName, record.patient_name)
    check_name(study.ReferringPhysicianName, record.referring_physician_name)
    assert study.PatientID == record.patient_id
    assert study.PatientBirthDate == date_of(record.patient_birth_date)
    assert study.PatientSex == (record.patient_sex or None)
    assert study.StudyID == record.study_id
    _equal(study, "SpecificCharacterSet", CHARSET, omits)
    _equal(study, "RetrieveURL", _study_url(base, record.study_instance_uid), omits)
    for keyword, expected in (
        ("NumberOfStudyRelatedSeries", record.number_of_study_related_series),
        ("NumberOfStudyRelatedInstances", record.number_of_study_related_instances),
    ):
        _equal(study, keyword, expected, omits)
        if keyword not in omits:
            assert type(getattr(study, keyword)) is int
    assert study.invalid == ()


def check_series(
    series: Series, record: SyntheticSeries, base: str, omits: frozenset[str] = NONE
) -> None:
    """A ``Series`` against its seed record (and its study's, which the servers add)."""
    assert type(series) is Series
    study_uid = record.study_instance_uid
    assert series.StudyInstanceUID == study_uid
    assert series.SeriesInstanceUID == record.series_instance_uid
    assert series.Modality == record.modality
    _equal(series, "SeriesDescription", record.series_description or None, omits)
    assert series.SeriesNumber == record.series_number
    assert type(series.SeriesNumber) is int
    count = record.number_of_series_related_instances
    _equal(series, "NumberOfSeriesRelatedInstances", count, omits)
    if "NumberOfSeriesRelatedInstances" not in omits:
        assert type(series.NumberOfSeriesRelatedInstances) is int
    _equal(series, "SpecificCharacterSet", CHARSET, omits)
    url = f"{_study_url(base, study_uid)}/series/{record.series_instance_uid}"
    _equal(series, "RetrieveURL", url, omits)
    assert series.invalid == ()


def check_instance(
    instance: Instance, record: SyntheticInstance, base: str, omits: frozenset[str] = NONE
) -> None:
    """An ``Instance`` against its seed record (the servers add series and study attributes)."""
    assert type(instance) is Instance
    assert instance.StudyInstanceUID == record.study_instance_uid
    assert instance.SeriesInstanceUID == record.series_instance_uid
    assert instance.SOPInstanceUID == record.sop_instance_uid
    assert instance.SOPClassUID == record.sop_class_uid
    assert instance.InstanceNumber == record.instance_number
    assert type(instance.InstanceNumber) is int
    for keyword, expected in (("Rows", 8), ("Columns", 8), ("BitsAllocated", 16)):
        _equal(instance, keyword, expected, omits)
    _equal(instance, "SpecificCharacterSet", CHARSET, omits)
    url = (
        f"{_study_url(base, record.study_instance_uid)}/series/"
        f"{record.series_instance_uid}/instances/{record.sop_instance_uid}"
    )
    _equal(instance, "RetrieveURL", url, omits)
    assert instance.invalid == ()


#: Patient and study attributes Orthanc adds to series and instance results.
STUDY_EXTRAS = ("PatientName", "PatientID", "StudyDate", "AccessionNumber")
#: Series attributes Orthanc adds to instance results.
SERIES_EXTRAS = ("Modality", "SeriesNumber", "SeriesDescription")


def check_series_results(
    found: Iterable[Series],
    expected: Iterable[SyntheticSeries],
    seed: SyntheticArchive,
    base: str,
    *,
    study_level: bool = True,
    omits: frozenset[str] = NONE,
) -> None:
    """Series results are exactly ``expected`` (once each), each checked with its study.

    ``study_level=False``: the search named StudyInstanceUID as a query key, so
    Orthanc leaves the patient and study attributes out (docs/servers.md).
    """
    records = {s.series_instance_uid: s for s in expected}
    seen = []
    for series in found:
        record = records[series.SeriesInstanceUID]
        check_series(series, record, base, omits)
        if study_level:
            check_patient_and_study(series, seed.study_of(record), omits)
        else:
            assert not any(k in series for k in STUDY_EXTRAS), series
        seen.append(series.SeriesInstanceUID)
    assert sorted(seen) == sorted(records)


def check_instance_results(
    found: Iterable[Instance],
    expected: Iterable[SyntheticInstance],
    seed: SyntheticArchive,
    base: str,
    *,
    study_level: bool = True,
    series_level: bool = True,
    omits: frozenset[str] = NONE,
) -> None:
    """Instance results are exactly ``expected`` (once each), each checked with its parents.

    ``study_level=False`` / ``series_level=False``: the search named
    StudyInstanceUID / SeriesInstanceUID as a query key, so Orthanc leaves
    that level's attributes out (docs/servers.md).
    """
    records = {i.sop_instance_uid: i for i in expected}
    seen = []
    for instance in found:
        record = records[instance.SOPInstanceUID]
        check_instance(instance, record, base, omits)
        series = seed.series_of(record)
        if series_level:
            assert instance["Modality"] == series.modality
            assert instance["SeriesNumber"] == series.series_number
            _equal(instance, "SeriesDescription", series.series_description, omits)
        else:
            assert not any(k in instance for k in SERIES_EXTRAS), instance
        if study_level:
            check_patient_and_study(instance, seed.study_of(record), omits)
        else:
            assert not any(k in instance for k in STUDY_EXTRAS), instance
        seen.append(instance.SOPInstanceUID)
    assert sorted(seen) == sorted(records)


def matches(pattern: str, value: str) -> bool:
    """Whether Orthanc matches ``value`` with ``pattern``: ``*``/``?`` wildcards, any case.

    A person name is matched as its whole stored string (all component groups).
    Good for ASCII patterns over ASCII stretches of values: Orthanc's ``?`` does
    not stand for a non-ASCII character (see docs/servers.md).
    """
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, re.IGNORECASE | re.DOTALL) is not None


def uids(results: Iterable[Any], keyword: str) -> list[str]:
    """The ``keyword`` UID of every result, in order."""
    return [getattr(r, keyword) for r in results]


def tinypacs_matches(pattern: str, value: str) -> bool:
    """Whether tiny_pacs 0.4 matches ``value`` with a PatientName ``pattern`` sent by aqido.

    A case-insensitive (ASCII only) substring of the whole stored value; ``*``
    and ``?`` are literal characters; non-ASCII text arrives Latin-1-decoded
    from its UTF-8 escapes and never matches (docs/tinypacs.md).
    """
    if not pattern.isascii():
        return False
    return pattern.strip().lower() in value.lower()
