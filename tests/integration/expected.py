"""Expected answers for the client tests, computed from the synthetic seed (never the server).

``check_study`` / ``check_series`` / ``check_instance`` compare a typed result
from :class:`~aqido.client.AsyncQidoRS` with the record it was seeded from,
field by field (UIDs, counts, modality, dates, times, names, RetrieveURL).
The expected Python values are derived from the seed's DICOM strings here,
independently of aqido's value parsers.  ``matches`` models how Orthanc
matches a value (case-insensitive, against the whole stored value).
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


def check_patient_and_study(ds: Dataset, record: Record) -> None:
    """Patient and study attributes (Orthanc returns them at every level), by keyword."""
    assert ds["StudyInstanceUID"] == record.study_instance_uid
    assert ds["StudyDate"] == date_of(record.study_date)
    assert ds["StudyTime"] == time_of(record.study_time)
    assert ds["AccessionNumber"] == (record.accession_number or None)
    check_name(ds["PatientName"], record.patient_name)
    check_name(ds["ReferringPhysicianName"], record.referring_physician_name)
    assert ds["PatientID"] == record.patient_id
    assert ds["PatientBirthDate"] == date_of(record.patient_birth_date)
    assert ds["PatientSex"] == (record.patient_sex or None)
    assert ds["StudyID"] == record.study_id
    assert ds["SpecificCharacterSet"] == CHARSET[0]


def check_study(study: Study, record: Record, base: str) -> None:
    """A ``Study`` from a study-level search against its seed record, typed field by field."""
    assert type(study) is Study
    check_patient_and_study(study, record)
    assert study.StudyInstanceUID == record.study_instance_uid
    assert study.StudyDate == date_of(record.study_date)
    assert study.StudyTime == time_of(record.study_time)
    assert study.AccessionNumber == (record.accession_number or None)
    assert sorted(study.ModalitiesInStudy) == list(record.modalities_in_study)
    check_name(study.PatientName, record.patient_name)
    check_name(study.ReferringPhysicianName, record.referring_physician_name)
    assert study.PatientID == record.patient_id
    assert study.PatientBirthDate == date_of(record.patient_birth_date)
    assert study.PatientSex == (record.patient_sex or None)
    assert study.StudyID == record.study_id
    assert study.SpecificCharacterSet == CHARSET
    assert study.RetrieveURL == _study_url(base, record.study_instance_uid)
    count = study.NumberOfStudyRelatedSeries
    assert type(count) is int
    assert count == record.number_of_study_related_series
    count = study.NumberOfStudyRelatedInstances
    assert type(count) is int
    assert count == record.number_of_study_related_instances
    assert study.invalid == ()


def check_series(series: Series, record: SyntheticSeries, base: str) -> None:
    """A ``Series`` against its seed record (and its study's, which Orthanc adds)."""
    assert type(series) is Series
    study_uid = record.study_instance_uid
    assert series.StudyInstanceUID == study_uid
    assert series.SeriesInstanceUID == record.series_instance_uid
    assert series.Modality == record.modality
    assert series.SeriesDescription == (record.series_description or None)
    assert series.SeriesNumber == record.series_number
    assert type(series.SeriesNumber) is int
    assert series.NumberOfSeriesRelatedInstances == record.number_of_series_related_instances
    assert type(series.NumberOfSeriesRelatedInstances) is int
    assert series.SpecificCharacterSet == CHARSET
    assert series.RetrieveURL == (
        f"{_study_url(base, study_uid)}/series/{record.series_instance_uid}"
    )
    assert series.invalid == ()


def check_instance(instance: Instance, record: SyntheticInstance, base: str) -> None:
    """An ``Instance`` against its seed record (Orthanc adds series and study attributes)."""
    assert type(instance) is Instance
    assert instance.StudyInstanceUID == record.study_instance_uid
    assert instance.SeriesInstanceUID == record.series_instance_uid
    assert instance.SOPInstanceUID == record.sop_instance_uid
    assert instance.SOPClassUID == record.sop_class_uid
    assert instance.InstanceNumber == record.instance_number
    assert type(instance.InstanceNumber) is int
    assert (instance.Rows, instance.Columns, instance.BitsAllocated) == (8, 8, 16)
    assert instance.SpecificCharacterSet == CHARSET
    assert instance.RetrieveURL == (
        f"{_study_url(base, record.study_instance_uid)}/series/"
        f"{record.series_instance_uid}/instances/{record.sop_instance_uid}"
    )
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
) -> None:
    """Series results are exactly ``expected`` (once each), each checked with its study.

    ``study_level=False``: the search named StudyInstanceUID as a query key, so
    Orthanc leaves the patient and study attributes out (docs/servers.md).
    """
    records = {s.series_instance_uid: s for s in expected}
    seen = []
    for series in found:
        record = records[series.SeriesInstanceUID]
        check_series(series, record, base)
        if study_level:
            check_patient_and_study(series, seed.study_of(record))
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
        check_instance(instance, record, base)
        series = seed.series_of(record)
        if series_level:
            assert instance["Modality"] == series.modality
            assert instance["SeriesNumber"] == series.series_number
            assert instance["SeriesDescription"] == series.series_description
        else:
            assert not any(k in instance for k in SERIES_EXTRAS), instance
        if study_level:
            check_patient_and_study(instance, seed.study_of(record))
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
