"""The query model: fields, normalisation, validation rules, paths, parameters and encoding."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from types import SimpleNamespace
from typing import Any

import attrs
import pytest

import aqido
from aqido import (
    BaseQuery,
    HierarchicalQuery,
    InvalidQueryError,
    QueryLevel,
    QueryTypeError,
    RelationalQuery,
    encode_query_value,
    ensure_query_type,
    is_valid_uid,
)
from aqido._temporal import dt_in_range, dt_keys
from aqido.matching import MatchOptions, compile_value

STUDY = "1.2.840.113619.2.1"
SERIES = "1.2.840.113619.2.1.2"
SOP = "1.2.840.113619.2.1.2.3"


# --------------------------------------------------------------------------- paths


@pytest.mark.parametrize(
    ("query", "path"),
    [
        (HierarchicalQuery(), "/studies"),
        (
            HierarchicalQuery(query_level=QueryLevel.SERIES, StudyInstanceUID=STUDY),
            f"/studies/{STUDY}/series",
        ),
        (
            HierarchicalQuery(
                query_level=QueryLevel.INSTANCE, StudyInstanceUID=STUDY, SeriesInstanceUID=SERIES
            ),
            f"/studies/{STUDY}/series/{SERIES}/instances",
        ),
        (RelationalQuery(query_level=QueryLevel.SERIES), "/series"),
        (RelationalQuery(query_level=QueryLevel.INSTANCE), "/instances"),
        (
            RelationalQuery(query_level=QueryLevel.INSTANCE, StudyInstanceUID=STUDY),
            f"/studies/{STUDY}/instances",
        ),
    ],
)
def test_uri_base(query: BaseQuery, path: str) -> None:
    assert query.uri_base() == path
    assert query.relative_url() == path
    assert query.query_string() == ""
    assert query.uri_search_params() == {}


def test_path_uids_are_not_repeated_as_parameters() -> None:
    series = HierarchicalQuery(query_level="SERIES", StudyInstanceUID=STUDY, PatientID="P1")
    assert series.uri_search_params() == {"PatientID": "P1"}
    instances = HierarchicalQuery(
        query_level="INSTANCE", StudyInstanceUID=STUDY, SeriesInstanceUID=SERIES, SOPInstanceUID=SOP
    )
    assert instances.uri_search_params() == {"SOPInstanceUID": SOP}
    relational = RelationalQuery(query_level="INSTANCE", StudyInstanceUID=STUDY, Modality="CT")
    assert relational.uri_search_params() == {"Modality": "CT"}


def test_uids_that_are_not_in_the_path_are_parameters() -> None:
    query = HierarchicalQuery(StudyInstanceUID=STUDY, SeriesInstanceUID=SERIES)
    assert query.uri_base() == "/studies"
    assert query.uri_search_params() == {"StudyInstanceUID": STUDY, "SeriesInstanceUID": SERIES}
    relational = RelationalQuery(query_level="SERIES", StudyInstanceUID=STUDY)
    assert relational.relative_url() == f"/series?StudyInstanceUID={STUDY}"


def test_relational_instances_of_several_studies_use_the_instances_resource() -> None:
    query = RelationalQuery(query_level="INSTANCE", StudyInstanceUID=[STUDY, "1.3"])
    assert query.StudyInstanceUID == f"{STUDY},1.3"
    assert query.relative_url() == f"/instances?StudyInstanceUID={STUDY},1.3"


# --------------------------------------------------------------------------- parameters


def test_every_field_renders_in_a_fixed_order() -> None:
    query = HierarchicalQuery(
        offset=5,
        limit=10,
        fuzzymatching=True,
        include_fields=["StudyDescription"],
        filters={"PatientSex": "F", "PatientBirthDate": "19700101-"},
        max_study_date=dt.date(2024, 1, 31),
        min_study_date=dt.date(2024, 1, 1),
        SeriesDescription="AX*",
        StudyDescription="CHEST",
        Modality="CT",
        ModalitiesInStudy=["CT", "MR"],
        AccessionNumber="A1",
        PatientID="P1",
        PatientName="Doe^J*",
        SOPInstanceUID=SOP,
        SeriesInstanceUID=SERIES,
        StudyInstanceUID=STUDY,
    )
    assert list(query.uri_search_params().items()) == [
        ("StudyInstanceUID", STUDY),
        ("SeriesInstanceUID", SERIES),
        ("SOPInstanceUID", SOP),
        ("PatientName", "Doe^J*"),
        ("PatientID", "P1"),
        ("AccessionNumber", "A1"),
        ("ModalitiesInStudy", "CT,MR"),
        ("Modality", "CT"),
        ("StudyDescription", "CHEST"),
        ("SeriesDescription", "AX*"),
        ("StudyDate", "20240101-20240131"),
        ("PatientBirthDate", "19700101-"),  # filters sorted by tag: (0010,0030)
        ("PatientSex", "F"),  # (0010,0040)
        ("includefield", ["StudyDescription"]),
        ("fuzzymatching", "true"),
        ("limit", "10"),
        ("offset", "5"),
    ]
    assert query.query_string() == (
        f"StudyInstanceUID={STUDY}&SeriesInstanceUID={SERIES}&SOPInstanceUID={SOP}"
        "&PatientName=Doe^J*&PatientID=P1&AccessionNumber=A1&ModalitiesInStudy=CT,MR"
        "&Modality=CT&StudyDescription=CHEST&SeriesDescription=AX*"
        "&StudyDate=20240101-20240131&PatientBirthDate=19700101-&PatientSex=F"
        "&includefield=StudyDescription&fuzzymatching=true&limit=10&offset=5"
    )


def test_empty_and_zero_values_are_not_sent() -> None:
    query = HierarchicalQuery(
        PatientName="", PatientID=None, limit=0, offset=0, fuzzymatching=False
    )
    assert query.uri_search_params() == {}
    assert query == HierarchicalQuery()


def test_include_fields_are_repeated_parameters() -> None:
    query = HierarchicalQuery(include_fields=["PatientBirthDate", "00081030", "00081030"])
    assert query.include_fields == ("PatientBirthDate", "00081030")
    assert query.query_string() == "includefield=PatientBirthDate&includefield=00081030"


def test_include_fields_all() -> None:
    assert HierarchicalQuery(include_fields="all").include_fields == ("all",)
    assert HierarchicalQuery(include_fields=["ALL"]).query_string() == "includefield=all"


def test_include_fields_string_is_one_attribute_not_characters() -> None:
    assert HierarchicalQuery(include_fields="PatientAge").include_fields == ("PatientAge",)


def test_include_fields_keyword_and_its_tag_are_the_same_attribute() -> None:
    query = HierarchicalQuery(include_fields=["PatientAge", "00101010"])
    assert query.include_fields == ("PatientAge",)


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [
        (dt.date(2024, 1, 1), dt.date(2024, 1, 31), "20240101-20240131"),
        (dt.date(2024, 1, 1), dt.date(2024, 1, 1), "20240101-20240101"),  # no collapse
        (dt.date(2024, 1, 1), None, "20240101-"),
        (None, dt.date(2024, 1, 31), "-20240131"),
        (dt.datetime(2024, 1, 1, 23, 59), dt.datetime(2024, 1, 2, 0, 1), "20240101-20240102"),
        ("2024-01-01", "20240131", "20240101-20240131"),
    ],
)
def test_study_date_ranges(low: Any, high: Any, expected: str) -> None:
    query = HierarchicalQuery(min_study_date=low, max_study_date=high)
    assert query.uri_search_params() == {"StudyDate": expected}
    assert query.query_string() == f"StudyDate={expected}"


def test_dates_are_stored_as_dates() -> None:
    query = HierarchicalQuery(min_study_date=dt.datetime(2024, 1, 1, 12, 0))
    assert query.min_study_date == dt.date(2024, 1, 1)
    assert type(query.min_study_date) is dt.date


def test_filters_are_normalised_sorted_and_hashable() -> None:
    c = HierarchicalQuery(filters={"00100040": "F", "PatientBirthDate": "1970"})
    d = HierarchicalQuery(filters=[("PatientBirthDate", "1970"), ("00100040", "F")])
    assert c.filters == d.filters == (("PatientBirthDate", "1970"), ("00100040", "F"))
    assert c == d
    assert hash(c) == hash(d)
    assert attrs.evolve(c, filters=c.filters) == c


def test_filter_tags_are_uppercased() -> None:
    query = HierarchicalQuery(filters={"0040a027": "ACME*"})
    assert query.filters == (("0040A027", "ACME*"),)
    assert query.query_string() == "0040A027=ACME*"


def test_filter_lists_are_comma_joined() -> None:
    query = RelationalQuery(query_level="SERIES", filters={"BodyPartExamined": ["CHEST", "HEAD"]})
    assert query.uri_search_params() == {"BodyPartExamined": "CHEST,HEAD"}


def test_filter_sequence_paths() -> None:
    query = RelationalQuery(
        query_level="SERIES",
        filters={"RequestAttributesSequence.ScheduledProcedureStepID": "SPS1"},
    )
    assert query.query_string() == "RequestAttributesSequence.ScheduledProcedureStepID=SPS1"
    tagged = RelationalQuery(query_level="SERIES", filters={"00400275.00400009": "SPS1"})
    assert tagged.query_string() == "00400275.00400009=SPS1"


def test_filters_accept_private_tags() -> None:
    query = HierarchicalQuery(filters={"00090010": "ACME", "00091001": "x"})
    assert query.query_string() == "00090010=ACME&00091001=x"


def test_filter_uid_lists() -> None:
    query = RelationalQuery(query_level="INSTANCE", filters={"SOPClassUID": ["1.2.3", "1.2.4"]})
    assert query.query_string() == "SOPClassUID=1.2.3,1.2.4"


def test_fuzzymatching() -> None:
    assert HierarchicalQuery(fuzzymatching=True).query_string() == "fuzzymatching=true"
    assert HierarchicalQuery(fuzzymatching=False).query_string() == ""


def test_query_level_accepts_names_in_any_case() -> None:
    assert HierarchicalQuery(query_level="study").query_level is QueryLevel.STUDY
    assert RelationalQuery(query_level="Series").query_level is QueryLevel.SERIES


def test_uid_padding_is_stripped() -> None:
    query = HierarchicalQuery(StudyInstanceUID="1.2.3\x00")
    assert query.StudyInstanceUID == "1.2.3"
    assert HierarchicalQuery(StudyInstanceUID="1.2.3 ").StudyInstanceUID == "1.2.3"
    assert HierarchicalQuery(StudyInstanceUID=["1.2.3\x00", "1.4"]).StudyInstanceUID == "1.2.3,1.4"


# --------------------------------------------------------------------------- encoding


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        ("Doe^John", "Doe^John"),
        ("D?e*", "D?e*"),
        ("a,b-c.d/e:f", "a,b-c.d/e:f"),
        ("O'Brien^Mary & Co", "O'Brien^Mary%20%26%20Co"),
        ("a=b", "a%3Db"),
        ("a+b", "a%2Bb"),
        ("a#b", "a%23b"),
        ("100%", "100%25"),
        ("%41", "%2541"),
        ("x&PatientID=1", "x%26PatientID%3D1"),
        ("Müller*", "M%C3%BCller*"),
        ("山田^太郎", "%E5%B1%B1%E7%94%B0^%E5%A4%AA%E9%83%8E"),
        ("😀", "%F0%9F%98%80"),
        ("", ""),
    ],
)
def test_encode_query_value(value: str, encoded: str) -> None:
    assert encode_query_value(value) == encoded


@pytest.mark.parametrize("value", ["a\rb", "a\nb", "\r\n", "a\x00", "\t", "\x7f", "\x85", "\x9b"])
def test_encode_query_value_rejects_control_characters(value: str) -> None:
    with pytest.raises(InvalidQueryError, match="control character"):
        encode_query_value(value)


@pytest.mark.parametrize("value", [5, None, b"CT", ["CT"]])
def test_encode_query_value_rejects_what_is_not_text(value: Any) -> None:
    with pytest.raises(InvalidQueryError, match="is not a str"):
        encode_query_value(value)


def test_none_filters_include_fields_and_extra_params_are_none_given() -> None:
    query = HierarchicalQuery(filters=None, include_fields=None, extra_params=None)
    assert (query.filters, query.include_fields, query.extra_params) == ((), (), ())
    assert query.query_string() == ""


def test_encode_query_value_rejects_lone_surrogates() -> None:
    with pytest.raises(InvalidQueryError, match="surrogate"):
        encode_query_value("a\ud800")


def test_hostile_values_stay_inside_their_parameter() -> None:
    query = HierarchicalQuery(PatientName="x&PatientID=1", PatientID="a#b", AccessionNumber="%41")
    assert query.query_string() == (
        "PatientName=x%26PatientID%3D1&PatientID=a%23b&AccessionNumber=%2541"
    )


# --------------------------------------------------------------------------- validation


def _rejects(cls: type[BaseQuery], match: str, **kwargs: Any) -> InvalidQueryError:
    with pytest.raises(InvalidQueryError, match=match) as info:
        cls(**kwargs)
    assert isinstance(info.value, ValueError)
    return info.value


def test_hierarchy_series_needs_study() -> None:
    _rejects(
        HierarchicalQuery,
        r"SeriesInstanceUID=.* needs a StudyInstanceUID; add it, or use a Rel",
        SeriesInstanceUID=SERIES,
    )


def test_hierarchy_sop_needs_study_and_series() -> None:
    _rejects(
        HierarchicalQuery,
        "SOPInstanceUID=.* needs a StudyInstanceUID and a SeriesInstanceUID",
        StudyInstanceUID=STUDY,
        SOPInstanceUID=SOP,
    )


def test_level_series_needs_study() -> None:
    _rejects(HierarchicalQuery, "query_level SERIES needs a StudyInstanceUID", query_level="SERIES")


def test_level_instance_needs_study_and_series() -> None:
    _rejects(
        HierarchicalQuery,
        "query_level INSTANCE needs",
        query_level="INSTANCE",
        StudyInstanceUID=STUDY,
    )


def test_relational_query_cannot_be_study_level() -> None:
    _rejects(
        RelationalQuery,
        "query_level STUDY is not relational; use HierarchicalQuery",
        query_level="STUDY",
    )
    _rejects(RelationalQuery, "query_level STUDY", PatientID="x")


def test_relational_query_has_no_hierarchy_rules() -> None:
    query = RelationalQuery(query_level="INSTANCE", SOPInstanceUID=SOP)
    assert query.relative_url() == f"/instances?SOPInstanceUID={SOP}"


def test_base_query_is_abstract() -> None:
    with pytest.raises(TypeError, match="abstract"):
        BaseQuery()


@pytest.mark.parametrize(
    "uid",
    [
        "1.02.3",  # leading zero
        "1..2",
        ".1.2",
        "1.2.",
        "1.2.*",
        "1.2.?",
        "1.2.a",
        "1.2.3-4",
        "1 .2",
        "1" * 65,
        "1.2\x00.3",
        "١.٢",  # Arabic-Indic digits are digits to str.isdigit but not UID digits
        "1.2,1.3",  # in the path (see below) - here as the series UID of a series-level query
    ],
)
def test_bad_uids_are_rejected(uid: str) -> None:
    with pytest.raises(InvalidQueryError, match="SeriesInstanceUID"):
        HierarchicalQuery(query_level="INSTANCE", StudyInstanceUID=STUDY, SeriesInstanceUID=uid)


def test_uid_lists_are_rejected_in_the_path() -> None:
    err = _rejects(
        HierarchicalQuery,
        "StudyInstanceUID goes in the URL path",
        query_level="SERIES",
        StudyInstanceUID=[STUDY, "1.3"],
    )
    assert "one UID" in str(err)


def test_uid_lists_are_allowed_as_parameters() -> None:
    query = HierarchicalQuery(StudyInstanceUID=f"{STUDY},1.3")
    assert query.query_string() == f"StudyInstanceUID={STUDY},1.3"


def test_uid_list_items_must_not_be_empty() -> None:
    _rejects(HierarchicalQuery, "StudyInstanceUID", StudyInstanceUID=f"{STUDY},")
    _rejects(HierarchicalQuery, "StudyInstanceUID", StudyInstanceUID=[STUDY, ""])


def test_is_valid_uid() -> None:
    assert is_valid_uid("0")
    assert is_valid_uid("1.2.840.10008.1.2.1")
    assert is_valid_uid("2.25." + "1" * 59)  # exactly 64
    assert not is_valid_uid("2.25." + "1" * 60)
    assert not is_valid_uid("")
    assert not is_valid_uid("00")
    assert not is_valid_uid("1.2.3\x00")  # no stripping here
    assert not is_valid_uid(None)
    assert not is_valid_uid(123)


@pytest.mark.parametrize(
    "field",
    [
        "PatientName",
        "PatientID",
        "AccessionNumber",
        "ModalitiesInStudy",
        "Modality",
        "StudyDescription",
        "SeriesDescription",
        "StudyInstanceUID",
    ],
)
@pytest.mark.parametrize("bad", ["a\r\nb", "a\nb", "\x00x", "a\x1bb"])
def test_control_characters_are_rejected_in_every_field(field: str, bad: str) -> None:
    with pytest.raises(InvalidQueryError, match=field):
        HierarchicalQuery(**{field: bad})


def test_control_characters_are_rejected_in_filters() -> None:
    _rejects(
        HierarchicalQuery,
        r"filters\['PatientSex'\]: control character",
        filters={"PatientSex": "F\r\nX-Injected: 1"},
    )


def test_non_string_values_are_rejected() -> None:
    _rejects(HierarchicalQuery, "PatientID: 12 is not a str", PatientID=12)
    _rejects(HierarchicalQuery, "PatientName: .* is not a str", PatientName=["a", "b"])
    _rejects(HierarchicalQuery, "Modality: list item 3", Modality=["CT", 3])


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("include_fields", 5),
        ("include_fields", b"PatientID"),  # bytes iterate as ints
        ("filters", 5),
        ("filters", True),
        ("filters", b"ab"),
        ("extra_params", 5),
        ("extra_params", True),
    ],
)
def test_a_collection_field_of_another_type_is_a_query_type_error(field: str, value: Any) -> None:
    # was an untyped TypeError ('int' object is not iterable) naming no field
    with pytest.raises(QueryTypeError, match=f"^{field}: .* is not a"):
        HierarchicalQuery(**{field: value})


def test_list_items_must_not_contain_commas() -> None:
    _rejects(HierarchicalQuery, "ModalitiesInStudy: list item 'CT,MR'", ModalitiesInStudy=["CT,MR"])


@pytest.mark.parametrize(
    ("key", "match"),
    [
        ("PatientNmae", "'PatientNmae' is not a DICOM keyword.*spelling"),
        ("patientname", "not a DICOM keyword"),
        ("0010001", "tags are exactly 8 hex digits"),
        ("001000100", "tags are exactly 8 hex digits"),
        ("0010001G", "not a DICOM keyword"),
        ("includefield", "not a DICOM keyword"),
        ("limit", "not a DICOM keyword"),
        ("", "not an attribute name"),
        ("PatientName.PatientID", "'PatientName' in 'PatientName.PatientID' is not a sequence"),
        ("RequestAttributesSequence.Nope", "'Nope' in"),
    ],
)
def test_unknown_filter_keys_are_rejected(key: str, match: str) -> None:
    _rejects(HierarchicalQuery, match, filters={key: "x"})


@pytest.mark.parametrize("key", ["PatientNmae", "0010001", "x&y=1", 42])
def test_unknown_include_fields_are_rejected(key: Any) -> None:
    _rejects(HierarchicalQuery, "include_fields", include_fields=[key])


def test_include_fields_all_cannot_be_mixed() -> None:
    _rejects(
        HierarchicalQuery,
        "include_fields: 'all' cannot be combined with other attributes \\(PatientAge\\)",
        include_fields=["all", "PatientAge"],
    )


def test_filters_must_not_duplicate_fields() -> None:
    _rejects(
        HierarchicalQuery,
        r"filters\['PatientName'\] duplicates a query field; use PatientName=",
        filters={"PatientName": "x"},
    )
    _rejects(HierarchicalQuery, "use StudyInstanceUID=", filters={"0020000D": STUDY})
    _rejects(HierarchicalQuery, "same attribute", filters={"PatientSex": "F", "00100040": "M"})


def test_study_date_filter_conflicts_with_date_fields() -> None:
    _rejects(
        HierarchicalQuery,
        "conflicts with min_study_date",
        min_study_date=dt.date(2024, 1, 1),
        filters={"StudyDate": "2024"},
    )
    query = HierarchicalQuery(filters={"StudyDate": "20240101-20240131"})
    assert query.query_string() == "StudyDate=20240101-20240131"


def test_empty_filter_values_are_rejected() -> None:
    _rejects(HierarchicalQuery, "list it in include_fields", filters={"PatientSex": ""})


def test_filters_must_be_a_mapping() -> None:
    _rejects(HierarchicalQuery, "not a mapping", filters="PatientSex=F")
    _rejects(HierarchicalQuery, "not a \\(key, value\\) pair", filters=["PatientSex"])


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("StudyDate", "-"),
        ("PatientBirthDate", ".-."),  # no digits at all
        ("PatientBirthDate", "..."),
        ("StudyTime", ":"),
        ("AcquisitionDateTime", "+"),
        ("StudyTime", "220000-0200"),  # crosses midnight, bounds of different lengths
        ("StudyTime", "23-0130"),
        ("AcquisitionDateTime", "20240201-20240101"),  # DT starts after it ends
        # a single DT with a negative offset reads as a range to the year 0500
        ("AcquisitionDateTime", "20240101120000-0500"),
        ("StudyDate", "2024*"),
        ("StudyDate", "20240101-20240131-20240201"),
        ("StudyDate", "20240201-20240101"),
        ("StudyDate", "2024-01-01"),
        ("StudyTime", "-"),
        ("StudyTime", "12?0"),
        ("StudyTime", "2200-0200"),  # crosses midnight
        ("AcquisitionDateTime", "-"),
        ("AcquisitionDateTime", "20240101120000-0500-20240102"),
        ("SOPClassUID", "1.2.*"),
        ("SOPClassUID", "1.02"),
        # not values of the VR (refused when built, not by the server or the local matcher)
        ("PatientBirthDate", "20241345"),  # month 13
        ("PatientBirthDate", "2024134"),
        ("StudyDate", "202400-"),  # month 0
        ("PatientBirthDate", "19700101.5"),
        ("StudyTime", "2500"),  # hour 25
        ("StudyTime", "126-"),  # three digits
        ("StudyTime", "12.5.5"),
        ("AcquisitionDateTime", "2024133"),
        ("AcquisitionDateTime", "2024+0100+0100"),
        # a UTC offset PS3.5 does not allow (-1200 to +1400): a server may read it as UTC
        ("AcquisitionDateTime", "2024+2400"),
        ("AcquisitionDateTime", "20240101+0099"),  # minute 99
        ("AcquisitionDateTime", "20240101+0160"),  # minute 60
        ("StudyDate", "2024.02.01-20240101"),  # the retired DA form, after the high bound
        ("AcquisitionDateTime", "20240101120000+1401-"),
        ("AcquisitionDateTime", "-20240101+9999"),
        # numbers are matched numerically: anything else is refused when built
        ("SeriesNumber", "abc"),
        ("SeriesNumber", "*"),
        ("InstanceNumber", "1_000"),
        ("InstanceNumber", "1,x"),
        ("PatientWeight", "nan"),
        ("PatientWeight", "inf"),
        # an age has no wildcards (PS3.4 C.2.2.2.4): the matcher reads them as characters
        ("PatientAge", "04*"),
        ("PatientAge", "045Y,04?Y"),
    ],
)
def test_bad_range_and_uid_filter_values_are_rejected(key: str, value: str) -> None:
    _rejects(RelationalQuery, rf"filters\['{key}'\]", query_level="INSTANCE", filters={key: value})


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("StudyDate", "20240101"),
        ("StudyDate", "20240101-"),
        ("StudyDate", "-20240131"),
        ("StudyDate", "2010-"),
        ("StudyTime", "1200-1300"),
        ("StudyTime", "12:00-13:00"),
        ("StudyTime", "120000.5-"),
        ("AcquisitionDateTime", "20240101120000+0100-20240102"),
        ("AcquisitionDateTime", "2024-2024"),
        ("AcquisitionDateTime", "20240101120000+0100-20240101110000+0000"),  # offsets differ
        ("StudyTime", "1200-12"),  # 12:00 to 12:59:59.999999
        ("StudyTime", "12-12"),
        # a shorter bound covers its whole span: the low one from its start, the high one
        # to its end (PS3.4 C.2.2.2.5.1), so these ranges are not empty
        ("StudyTime", "120030-12"),
        ("StudyDate", "2024-20240101"),
        ("StudyDate", "20241231-2024"),
        ("StudyDate", "2024.01.01-20240101"),  # the retired DA form
        ("TimezoneOffsetFromUTC", "+0100"),
        ("SeriesNumber", "3"),
        ("InstanceNumber", "1,2"),
        ("PatientWeight", "72.5"),
        ("PatientWeight", "-1e3"),
        ("StudyDate", "2024"),  # the whole year, as the local matcher reads it too
        ("StudyDate", "202402-2025"),
        ("AcquisitionDateTime", "00010101000000+0100"),  # the year 0 in UTC
        ("AcquisitionDateTime", "20240101+1400-20240102+0000"),  # the widest offset
        ("AcquisitionDateTime", "20240101+0545"),
        ("PatientAge", "045Y"),
    ],
)
def test_good_range_filter_values_are_accepted(key: str, value: str) -> None:
    query = RelationalQuery(query_level="INSTANCE", filters={key: value})
    assert query.uri_search_params() == {key: value}


@pytest.mark.parametrize(
    ("key", "value", "hint", "not_hint"),
    [
        ("StudyDate", "20240201-20240101", "swap the bounds", "UTC"),
        ("StudyTime", "2200-0200", "cannot cross midnight", "swap"),
        ("AcquisitionDateTime", "20240201-20240101", "swap the bounds; give DT values in UTC", ""),
        ("AcquisitionDateTime", "2024-01-01", "give DT values in UTC", ""),
        ("StudyDate", "2024-01-01", "not a DA range", "UTC"),
    ],
)
def test_a_range_error_says_how_to_fix_it_for_its_vr(
    key: str, value: str, hint: str, not_hint: str
) -> None:
    # a TM range cannot be swapped (it crosses midnight); only DT reads '-' as an offset too
    error = _rejects(
        RelationalQuery, rf"filters\['{key}'\]", query_level="INSTANCE", filters={key: value}
    )
    assert hint in str(error)
    assert not not_hint or not_hint not in str(error)


@pytest.mark.parametrize(
    ("value", "utc"),
    [
        ("20100315103000-0500", "20100315153000+0000"),
        ("20100315103000.25-0530", "20100315160000.25+0000"),
        ("201003152330-1200", "201003161130+0000"),  # the next day in UTC
        ("2010031510-0500", "2010031515+0000"),
        ("2010031510-0530", None),  # 15:30 to 16:29 UTC: no single DT
        ("20100315-0500", None),  # a day at UTC-05:00 runs over two UTC days
        ("2010-0000", None),
        ("20100315103000-1400", None),  # past PS3.5's -1200: no UTC to suggest
        ("20100315103000+0100-0500", None),  # two offsets: no value at all
    ],
)
def test_a_dt_value_with_a_negative_offset_is_refused_as_ambiguous(
    value: str, utc: str | None
) -> None:
    # '-' is the range separator: to a server 20100315103000-0500 is the range from 2010
    # to the year 0500, which holds nothing (the matcher reads it so, as servers do).  It
    # was refused as a range to swap; the message now says what was meant and what to write.
    lenient = MatchOptions(strict_values=False)
    for stored in ("20100315103000-0500", "20100315103000.25-0530", "201003161130+0000"):
        matches = compile_value(value, "DT", lenient)
        assert matches is not None
        assert not matches({"vr": "DT", "Value": [stored]})
    filters = {"AcquisitionDateTime": value}
    error = str(_rejects(HierarchicalQuery, "AcquisitionDateTime", filters=filters))
    if "+" in value:  # a '+' offset and a '-' one: a range that starts after it ends
        assert "starts after it ends" in error
        return
    assert "is ambiguous: '-' is also the DT range separator" in error
    assert f"at the UTC offset -{value[-4:]}" in error
    assert "to the year" in error
    assert "in UTC" in error
    assert "'+' offset" in error
    assert "swap the bounds" not in error
    if utc is None:
        assert "+0000" not in error
        return
    assert f"({utc!r})" in error
    # the value suggested is taken, and finds what the negative offset meant
    query = HierarchicalQuery(filters={"AcquisitionDateTime": utc})
    assert query.query_string() == "AcquisitionDateTime=" + utc.replace("+", "%2B")
    meant = (dt_keys(value, upper=False), dt_keys(value, upper=True))
    found = compile_value(utc, "DT")
    assert found is not None
    for stored in ("20100315103000-0500", "20100315103000.25-0530", "201003161130+0000"):
        is_meant = dt_in_range(stored, *meant)
        assert found({"vr": "DT", "Value": [stored]}) is is_meant
    if value in ("20100315103000-0500", "2010031510-0500"):  # proves something
        assert found({"vr": "DT", "Value": ["20100315103000-0500"]})


@pytest.mark.parametrize(
    "value",
    [
        "20100315103000-0500-20100316",
        "-20100316-0500",
        "20100315-0500-",
        "20100315103000-0500-20100316103000-0500",
    ],
)
def test_a_dt_range_with_a_negative_offset_is_refused_as_ambiguous(value: str) -> None:
    filters = {"AcquisitionDateTime": value}
    error = str(_rejects(HierarchicalQuery, "AcquisitionDateTime", filters=filters))
    assert "is ambiguous: '-' is also the DT range separator" in error
    assert "a DT range has no room for a negative offset" in error
    assert "at the UTC offset -0500" in error
    if value.startswith("20100315103000-0500"):
        assert "('20100315153000+0000')" in error


@pytest.mark.parametrize(
    "value",
    [
        "2010-2011",
        "0400-0500",  # years 400 to 500: a range that holds something
        "20100315103000-2010",  # 2010 is no offset (hour 20)
        "20100315103000-",
        "20100316+0100-20100315",  # one offset: 2010-03-15 20:00-05:00 is within
        "20100315+0100-20100315+0100",
        "20100315120000+0500-20100315080000+0000",  # 07:00 to 08:00 UTC
    ],
)
def test_dt_ranges_that_hold_instants_are_taken(value: str) -> None:
    query = HierarchicalQuery(filters={"AcquisitionDateTime": value})
    assert query.filters == (("AcquisitionDateTime", value),)


@pytest.mark.parametrize(
    "value",
    [
        "20100316+0100-20100315+0200",  # different offsets: compared in UTC
        "20100315090000+0000-20100315120000+0500",  # 09:00 to 07:00 UTC
        "20100318+0100-20100315",  # one offset: days apart
    ],
)
def test_dt_ranges_that_hold_nothing_with_offsets_are_refused(value: str) -> None:
    # bounds with different offsets were not compared at all: the range went out and
    # found nothing, in silence
    error = _rejects(
        HierarchicalQuery, "starts after it ends", filters={"AcquisitionDateTime": value}
    )
    assert "ambiguous" not in str(error)


@pytest.mark.parametrize("value", [-1, True, False, 1.0, "10", None])
@pytest.mark.parametrize("field", ["limit", "offset"])
def test_limit_and_offset_must_be_non_negative_ints(field: str, value: Any) -> None:
    _rejects(HierarchicalQuery, f"{field}: .* is not a non-negative int", **{field: value})


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (2**63, r"a 64-bit int is more than a server reads; pass at most 9223372036854775807"),
        (10**5000, "a 16610-bit int is more than a server reads"),
        (-(10**5000), "a 16610-bit int is not a non-negative int"),
    ],
    ids=["2**63", "10**5000", "-10**5000"],
)
@pytest.mark.parametrize("field", ["limit", "offset"])
def test_limit_and_offset_must_fit_in_64_bits(field: str, value: int, match: str) -> None:
    # 10**5000 was accepted, then query_string() and repr() raised ValueError (Python writes
    # no int of more than 4300 digits); 2**63 overflows the servers' 64-bit counts
    _rejects(HierarchicalQuery, f"{field}: {match}", **{field: value})
    assert HierarchicalQuery(**{field: 2**63 - 1}).query_string() == f"{field}={2**63 - 1}"


@pytest.mark.parametrize("value", [1, 0, "true", None])
def test_fuzzymatching_must_be_a_bool(value: Any) -> None:
    _rejects(
        HierarchicalQuery,
        "fuzzymatching: .* is not a bool; pass True or False",
        fuzzymatching=value,
    )


def test_min_date_after_max_date_is_rejected() -> None:
    _rejects(
        HierarchicalQuery,
        "min_study_date \\(2024-02-01\\) is after max_study_date",
        min_study_date=dt.date(2024, 2, 1),
        max_study_date=dt.date(2024, 1, 1),
    )


@pytest.mark.parametrize(
    "value",
    [
        "yesterday",
        "2024-13-01",
        20240101,
        dt.time(12, 0),
        # strptime alone reads these as some date: not the one meant
        "202411",
        "2024111",
        "2024131",
        "2024-1-1",
        "\u0662\u0660\u0662\u0664\u0660\u0661\u0660\u0661",  # Arabic-Indic digits
    ],
)
def test_bad_dates_are_rejected(value: Any) -> None:
    _rejects(HierarchicalQuery, "min_study_date: .* is not a date", min_study_date=value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("20240131", dt.date(2024, 1, 31)),
        (" 2024-01-31 ", dt.date(2024, 1, 31)),
        ("2024-01-31T23:30:00+01:00", dt.date(2024, 1, 31)),
        ("2024-01-31 10:00", dt.date(2024, 1, 31)),
    ],
)
def test_date_strings(value: str, expected: dt.date) -> None:
    assert HierarchicalQuery(min_study_date=value).min_study_date == expected


def test_years_before_1000_are_written_with_four_digits() -> None:
    query = HierarchicalQuery(min_study_date=dt.date.min, max_study_date=dt.date(999, 12, 31))
    assert query.query_string() == "StudyDate=00010101-09991231"


def test_bad_query_level_is_rejected() -> None:
    _rejects(
        HierarchicalQuery, "query_level: 'PATIENT' is not a query level", query_level="PATIENT"
    )
    _rejects(HierarchicalQuery, "query_level", query_level=2)


def test_evolve_validates_again() -> None:
    query = HierarchicalQuery(query_level="SERIES", StudyInstanceUID=STUDY)
    with pytest.raises(InvalidQueryError, match="SERIES needs a StudyInstanceUID"):
        attrs.evolve(query, StudyInstanceUID="")
    with pytest.raises(InvalidQueryError, match="limit"):
        attrs.evolve(query, limit=-1)


# --------------------------------------------------------------------------- model behaviour


def test_queries_are_frozen_keyword_only_and_hashable() -> None:
    query = HierarchicalQuery(
        PatientID="P1", include_fields=["PatientAge"], filters={"PatientSex": "F"}
    )
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        query.PatientID = "P2"  # type: ignore[misc]
    with pytest.raises(TypeError):
        HierarchicalQuery("STUDY")  # type: ignore[misc]
    assert {
        query,
        HierarchicalQuery(
            PatientID="P1", include_fields=("PatientAge",), filters={"PatientSex": "F"}
        ),
    } == {query}


def test_evolve_pages() -> None:
    query = HierarchicalQuery(PatientID="P1", filters={"PatientSex": "F"})
    page = attrs.evolve(query, limit=100, offset=200)
    assert page.relative_url() == "/studies?PatientID=P1&PatientSex=F&limit=100&offset=200"
    assert query.limit == 0


def test_hierarchical_and_relational_queries_are_not_equal() -> None:
    kwargs: dict[str, Any] = {"query_level": "SERIES", "StudyInstanceUID": STUDY}
    assert HierarchicalQuery(**kwargs) != RelationalQuery(**kwargs)


def test_repr_is_short_and_shows_only_what_is_set() -> None:
    query = HierarchicalQuery(PatientID="P1", limit=10)
    assert (
        repr(query) == "HierarchicalQuery(query_level=QueryLevel.STUDY, PatientID='P1', limit=10)"
    )
    assert (
        eval(repr(query), {"HierarchicalQuery": HierarchicalQuery, "QueryLevel": QueryLevel})
        == query
    )


def test_repr_round_trips_for_every_field() -> None:
    query = RelationalQuery(
        query_level="INSTANCE",
        StudyInstanceUID=STUDY,
        min_study_date=dt.date(2024, 1, 1),
        include_fields=["all"],
        filters={"PatientSex": "F"},
        fuzzymatching=True,
    )
    namespace = {"RelationalQuery": RelationalQuery, "QueryLevel": QueryLevel, "datetime": dt}
    assert eval(repr(query), namespace) == query


def test_str_is_the_relative_url() -> None:
    query = HierarchicalQuery(PatientName="Doe^J*")
    assert str(query) == "/studies?PatientName=Doe^J*"
    assert f"{query}" == query.relative_url()


# --------------------------------------------------------------------------- ensure_query_type


def test_ensure_query_type_returns_aqido_queries_unchanged() -> None:
    query = RelationalQuery(query_level="SERIES")
    assert ensure_query_type(query) is query


def test_ensure_query_type_prefers_hierarchical() -> None:
    query = ensure_query_type({"query_level": "SERIES", "StudyInstanceUID": STUDY})
    assert type(query) is HierarchicalQuery
    assert query.uri_base() == f"/studies/{STUDY}/series"


def test_ensure_query_type_falls_back_to_relational() -> None:
    query = ensure_query_type({"query_level": QueryLevel.SERIES, "PatientID": "P1"})
    assert type(query) is RelationalQuery
    assert query.relative_url() == "/series?PatientID=P1"


def test_ensure_query_type_raises_when_neither_kind_fits() -> None:
    with pytest.raises(InvalidQueryError, match="RelationalQuery: query_level STUDY"):
        ensure_query_type({"SeriesInstanceUID": SERIES})


class _FakePydanticQuery:
    """Something shaped like a dicomtrolley query (pydantic v2 ``model_dump``)."""

    def __init__(self, **fields: Any) -> None:
        self._fields = fields

    def model_dump(self) -> dict[str, Any]:
        return dict(self._fields)


class RelationalQueryLike(_FakePydanticQuery):
    pass


RelationalQueryLike.__name__ = "RelationalQuery"


class HierarchicalQueryLike(_FakePydanticQuery):
    pass


HierarchicalQueryLike.__name__ = "HierarchicalQuery"


def test_ensure_query_type_keeps_the_kind_of_a_hierarchical_query() -> None:
    # a series listing without its study is no hierarchical query: it is refused, not
    # turned into a relational one (the dict form falls back, a dicomtrolley kind never does)
    fields = {"query_level": "SERIES", "PatientID": "P1"}
    with pytest.raises(InvalidQueryError, match="HierarchicalQuery"):
        ensure_query_type(HierarchicalQueryLike(**fields))
    assert type(ensure_query_type(fields)) is RelationalQuery


def test_ensure_query_type_duck_types_pydantic_models() -> None:
    generic = _FakePydanticQuery(
        StudyInstanceUID="",
        PatientID="P1",
        query_level=SimpleNamespace(value="STUDY"),
        min_study_date=dt.datetime(2024, 1, 1),
        max_study_date=None,
        include_fields=[],
        PatientBirthDate=dt.date(1970, 1, 2),
        InstitutionName="",
    )
    query = ensure_query_type(generic)
    assert query == HierarchicalQuery(
        PatientID="P1",
        min_study_date=dt.date(2024, 1, 1),
        filters={"PatientBirthDate": "19700102"},
    )


@pytest.mark.parametrize(
    ("keyword", "value", "expected"),
    [
        ("PatientBirthDate", dt.date(900, 1, 2), "09000102"),  # DA: 8 digits
        ("PatientBirthDate", dt.datetime(1970, 1, 2, 23, 59), "19700102"),  # its day
        ("AcquisitionDateTime", dt.datetime(2024, 1, 1, 12, 30, 15), "20240101123015"),
        ("AcquisitionDateTime", dt.datetime(2024, 1, 1, 12, 0, 0, 500), "20240101120000.000500"),
        # an aware DT goes in UTC: a '-0500' would read as a range to the year 0500
        (
            "AcquisitionDateTime",
            dt.datetime(2024, 1, 1, 23, 30, tzinfo=dt.timezone(dt.timedelta(hours=-5))),
            "20240102043000+0000",
        ),
        ("AcquisitionDateTime", dt.date(2024, 1, 1), "20240101"),
        ("StudyTime", dt.time(9, 5), "090500"),
        ("StudyTime", dt.time(9, 5, 1, 250000), "090501.250000"),
    ],
)
def test_ensure_query_type_writes_dates_and_times_in_the_attributes_vr(
    keyword: str, value: Any, expected: str
) -> None:
    query = ensure_query_type({keyword: value})
    assert query.filters == ((keyword, expected),)


@pytest.mark.parametrize(
    ("keyword", "value"),
    [
        ("StudyTime", dt.datetime(2024, 1, 1, 12, 0)),  # TM takes a time, not a date
        ("StudyTime", dt.date(2024, 1, 1)),
        ("PatientBirthDate", dt.time(12, 0)),
        ("InstitutionName", dt.date(2024, 1, 1)),  # LO: not a date at all
    ],
)
def test_ensure_query_type_refuses_a_date_or_time_of_another_vr(keyword: str, value: Any) -> None:
    with pytest.raises(InvalidQueryError, match=f"{keyword}=.* but {keyword} has VR"):
        ensure_query_type({keyword: value})


def test_ensure_query_type_refuses_a_time_with_an_offset() -> None:
    # TM has no UTC offset: dropping it would send another time
    aware = dt.time(10, 0, tzinfo=dt.timezone(dt.timedelta(hours=5)))
    with pytest.raises(InvalidQueryError, match=r"StudyTime: .* has a UTC offset"):
        ensure_query_type({"StudyTime": aware})


def test_ensure_query_type_refuses_a_datetime_outside_the_years_in_utc() -> None:
    # astimezone() raised OverflowError: the value is in the year 10000 (or 0) in UTC
    late = dt.datetime(9999, 12, 31, 23, tzinfo=dt.timezone(dt.timedelta(hours=-5)))
    early = dt.datetime(1, 1, 1, 0, tzinfo=dt.timezone(dt.timedelta(hours=5)))
    for value in (late, early):
        with pytest.raises(InvalidQueryError, match=r"AcquisitionDateTime: .* years 1-9999"):
            ensure_query_type({"AcquisitionDateTime": value})


@pytest.mark.parametrize("filters", [5, "PatientSex=F", [["PatientSex", "F"]]])
def test_ensure_query_type_refuses_filters_that_are_not_a_mapping(filters: Any) -> None:
    # dict(filters) raised TypeError or ValueError
    with pytest.raises(InvalidQueryError, match=r"^filters: "):
        ensure_query_type({"filters": filters})


def test_ensure_query_type_refuses_an_attribute_also_in_filters() -> None:
    # the attribute's value replaced the filter's silently: PatientBirthDate=2021 was sent
    with pytest.raises(InvalidQueryError, match="PatientBirthDate given twice"):
        ensure_query_type({"filters": {"PatientBirthDate": "2020"}, "PatientBirthDate": "2021"})
    query = ensure_query_type({"filters": [("PatientBirthDate", "2020")], "PatientSex": "F"})
    assert query.filters == (("PatientBirthDate", "2020"), ("PatientSex", "F"))


def test_ensure_query_type_reads_an_iterator_once_for_both_kinds() -> None:
    # The hierarchical attempt consumed the iterators; the relational query built next got
    # empty ones, so the criteria were dropped silently: /series instead of /series?Modality=...
    query = ensure_query_type(
        {
            "query_level": "SERIES",
            "Modality": iter(["CT", "MR"]),
            "include_fields": (k for k in ["PatientAge"]),
            "extra_params": iter([("tenant", "A")]),
            "SeriesInstanceUID": iter(["1.2", "1.3"]),
        }
    )
    assert type(query) is RelationalQuery
    assert str(query) == (
        "/series?SeriesInstanceUID=1.2,1.3&Modality=CT,MR&includefield=PatientAge&tenant=A"
    )


def test_ensure_query_type_keeps_the_relational_kind() -> None:
    query = ensure_query_type(RelationalQueryLike(query_level="SERIES", StudyInstanceUID=STUDY))
    assert type(query) is RelationalQuery


def test_ensure_query_type_refuses_to_drop_fields() -> None:
    with pytest.raises(InvalidQueryError, match="has no field for"):
        ensure_query_type({"not_a_field": "x"})


def test_ensure_query_type_rejects_non_queries() -> None:
    with pytest.raises(InvalidQueryError, match="is not a query"):
        ensure_query_type(42)


# --------------------------------------------------------------------------- packaging


def test_public_names_are_exported() -> None:
    for name in (
        "BaseQuery",
        "HierarchicalQuery",
        "RelationalQuery",
        "QueryLevel",
        "encode_query_value",
        "ensure_query_type",
        "is_valid_uid",
    ):
        assert name in aqido.__all__
        assert getattr(aqido, name) is getattr(aqido.query, name)


def test_building_a_query_does_not_import_pydicom() -> None:
    code = (
        "import sys, aqido; "
        "q = aqido.HierarchicalQuery(PatientName='x', include_fields=['PatientAge'], "
        "filters={'PatientSex': 'F'}); q.query_string(); "
        "print('pydicom' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_attribute_values_reads_every_attribute_field_in_order() -> None:
    # uri_search_params zips ATTRIBUTE_FIELDS with attribute_values(query) without strict=.
    from aqido._query_values import ATTRIBUTE_FIELDS, attribute_values

    query = HierarchicalQuery(
        **{
            field: f"1.2.{n}" if field.endswith("UID") else f"V{n}"
            for n, field in enumerate(ATTRIBUTE_FIELDS)
        }
    )
    values = attribute_values(query)
    assert len(values) == len(ATTRIBUTE_FIELDS)
    assert values == tuple(getattr(query, field) for field in ATTRIBUTE_FIELDS)
