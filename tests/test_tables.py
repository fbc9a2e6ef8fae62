"""to_records / to_dataframe: plain values, multi-values, tree flattening and DataFrame dtypes."""

from __future__ import annotations

import datetime
import subprocess
import sys
from typing import Any

import attrs
import pandas as pd
import pytest

from aqido.query import QueryLevel
from aqido.results import Dataset, Instance, Series, Study
from aqido.tables import to_dataframe, to_records
from aqido.testing import SyntheticArchive


def tree(synth: SyntheticArchive) -> list[Study]:
    """The synthetic archive as a crawl returns it: studies → series → instances."""
    studies = []
    for st in synth.studies:
        series = [
            attrs.evolve(
                Series.from_json(synth.series_json(se)),
                instances=[Instance.from_json(synth.instance_json(i)) for i in se.instances],
            )
            for se in st.series
        ]
        studies.append(attrs.evolve(Study.from_json(synth.study_json(st)), series=series))
    return studies


@pytest.fixture(scope="module")
def synth() -> SyntheticArchive:
    return SyntheticArchive(seed=7, studies=4, series_per_study=3, instances_per_series=2)


def study(**elements: Any) -> Study:
    return Study.from_json(elements)


UID = "1.2.3"
STUDY_A = {
    "0020000D": {"vr": "UI", "Value": ["1.2.3"]},
    "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^John"}]},
    "00080020": {"vr": "DA", "Value": ["20240131"]},
    "00080030": {"vr": "TM", "Value": ["101500"]},
    "00080061": {"vr": "CS", "Value": ["CT"]},
    "00201208": {"vr": "IS", "Value": [12]},
    "00101030": {"vr": "DS", "Value": ["72.50"]},
}
STUDY_B = {
    "0020000D": {"vr": "UI", "Value": ["1.2.4"]},
    "00100010": {"vr": "PN"},
    "00080020": {"vr": "DA", "Value": ["not a date"]},
    "00080061": {"vr": "CS", "Value": ["CT", "MR"]},
    "00201208": {"vr": "IS"},
    "00091001": {"vr": "LO", "Value": ["private"]},
}


def test_records_are_plain_python_values() -> None:
    record = to_records([Study.from_json(STUDY_A)])[0]
    assert record == {
        "StudyDate": datetime.date(2024, 1, 31),
        "StudyTime": datetime.time(10, 15),
        "ModalitiesInStudy": ("CT",),  # VM 1-n: always a tuple
        "PatientName": "Doe^John",
        "PatientWeight": 72.5,
        "StudyInstanceUID": "1.2.3",
        "NumberOfStudyRelatedInstances": 12,
    }
    assert type(record["PatientName"]) is str
    assert type(record["PatientWeight"]) is float


def test_records_share_columns_and_missing_values_are_none() -> None:
    a, b = to_records([Study.from_json(STUDY_A), Study.from_json(STUDY_B)])
    assert list(a) == list(b)
    assert b["PatientName"] is None
    assert b["StudyDate"] is None  # unreadable value: None, never an error
    assert b["NumberOfStudyRelatedInstances"] is None
    assert b["ModalitiesInStudy"] == ("CT", "MR")
    assert b["00091001"] == "private"  # private tags are keyed by tag key
    assert a["00091001"] is None


def test_multivalue_join_and_separator() -> None:
    a, b = to_records([Study.from_json(STUDY_A), Study.from_json(STUDY_B)], multivalue="join")
    assert a["ModalitiesInStudy"] == "CT"
    assert b["ModalitiesInStudy"] == "CT\\MR"
    (b,) = to_records([Study.from_json(STUDY_B)], multivalue="join", separator=",")
    assert b["ModalitiesInStudy"] == "CT,MR"


def test_a_column_multivalued_in_one_row_is_a_tuple_in_every_row() -> None:
    one = Dataset({"00091002": {"vr": "LO", "Value": ["x"]}})
    two = Dataset({"00091002": {"vr": "LO", "Value": ["x", "y"]}})
    assert [r["00091002"] for r in to_records([one, two])] == [("x",), ("x", "y")]


def test_columns_select_and_order_by_keyword_or_tag() -> None:
    records = to_records(
        [Study.from_json(STUDY_A)], columns=["PatientName", 0x0020000D, "00080020", "Modality"]
    )
    assert records == [
        {
            "PatientName": "Doe^John",
            "StudyInstanceUID": "1.2.3",
            "StudyDate": datetime.date(2024, 1, 31),
            "Modality": None,
        }
    ]


def test_sequences_are_dropped_or_kept() -> None:
    item = {
        "00081032": {
            "vr": "SQ",
            "Value": [{"00080100": {"vr": "SH", "Value": ["X1"]}}],
        },
        "0020000D": {"vr": "UI", "Value": ["1.2"]},
    }
    assert "ProcedureCodeSequence" not in to_records([Study.from_json(item)])[0]
    kept = to_records([Study.from_json(item)], sequences="keep")[0]
    assert kept["ProcedureCodeSequence"] == ({"CodeValue": "X1"},)


def test_crawl_tree_flattens_to_one_row_per_instance(synth: SyntheticArchive) -> None:
    records = to_records(tree(synth))
    assert len(records) == len(synth.instances)
    for record, inst in zip(records, synth.instances, strict=True):
        series = synth.series_of(inst)
        st = synth.study_of(inst)
        assert record["SOPInstanceUID"] == inst.sop_instance_uid
        assert record["SeriesInstanceUID"] == series.series_instance_uid
        assert record["StudyInstanceUID"] == st.study_instance_uid
        assert record["Modality"] == series.modality
        assert record["PatientID"] == st.patient_id
        assert record["StudyDate"].strftime("%Y%m%d") == st.study_date


def test_crawl_tree_per_series_and_per_study(synth: SyntheticArchive) -> None:
    studies = tree(synth)
    per_series = to_records(studies, level="series")
    assert [r["SeriesInstanceUID"] for r in per_series] == [
        s.series_instance_uid for s in synth.series
    ]
    assert "SOPInstanceUID" not in per_series[0]
    assert to_records(studies, level=QueryLevel.SERIES) == per_series
    per_study = to_records(studies, level="study")
    assert [r["StudyInstanceUID"] for r in per_study] == [
        s.study_instance_uid for s in synth.studies
    ]
    assert "Modality" not in per_study[0]


def test_prefix_parents_keeps_each_levels_value(synth: SyntheticArchive) -> None:
    studies = tree(synth)
    record = to_records(studies, level="series", prefix_parents=True)[0]
    assert record["study.StudyInstanceUID"] == synth.studies[0].study_instance_uid
    assert record["study.PatientID"] == synth.studies[0].patient_id
    assert record["Modality"] == synth.studies[0].series[0].modality
    assert "PatientID" not in record
    (picked,) = to_records(
        studies[:1], level="study", columns=["study.PatientID"], prefix_parents=True
    )
    assert picked == {"study.PatientID": None}  # own-level columns are not prefixed
    picked = to_records(
        studies[:1], level="series", columns=["study.PatientID"], prefix_parents=True
    )[0]
    assert picked == {"study.PatientID": synth.studies[0].patient_id}


def test_an_instances_own_value_wins_over_its_series_for_shared_keywords() -> None:
    inst = Instance.from_json(
        {
            "00080018": {"vr": "UI", "Value": ["1.2.3.4"]},
            "00081190": {"vr": "UR", "Value": ["http://x/instances/1.2.3.4"]},
        }
    )
    series = Series.from_json(
        {
            "0020000E": {"vr": "UI", "Value": ["1.2.3"]},
            "00081190": {"vr": "UR", "Value": ["http://x/series/1.2.3"]},
        }
    )
    (record,) = to_records([attrs.evolve(series, instances=[inst])])
    assert record["RetrieveURL"] == "http://x/instances/1.2.3.4"
    (record,) = to_records([attrs.evolve(series, instances=[inst])], prefix_parents=True)
    assert record["series.RetrieveURL"] == "http://x/series/1.2.3"


SHARED_STUDY = {
    "0020000D": {"vr": "UI", "Value": ["1.2.3"]},
    "00100020": {"vr": "LO", "Value": ["PID1"]},
    "00080005": {"vr": "CS", "Value": ["ISO_IR 192"]},
    "00081190": {"vr": "UR", "Value": ["http://x/studies/1.2.3"]},
    "00080056": {"vr": "CS", "Value": ["ONLINE"]},
    "00080201": {"vr": "SH", "Value": ["+0100"]},
}


def shared_tree() -> list[Study]:
    """A study and series with RetrieveURL, InstanceAvailability...; an instance without them."""
    inst = Instance.from_json({"00080018": {"vr": "UI", "Value": ["1.2.3.1.1"]}})
    series = Series.from_json(
        {
            "0020000E": {"vr": "UI", "Value": ["1.2.3.1"]},
            "00080060": {"vr": "CS", "Value": ["CT"]},
            "00081190": {"vr": "UR", "Value": ["http://x/studies/1.2.3/series/1.2.3.1"]},
        }
    )
    return [Study.from_json(SHARED_STUDY).with_series([series.with_instances([inst])])]


OWN = ["RetrieveURL", "InstanceAvailability", "SpecificCharacterSet", "TimezoneOffsetFromUTC"]


def test_a_rows_own_level_wins_and_a_parents_value_is_never_taken_for_it() -> None:
    (record,) = to_records(shared_tree())
    assert {k: record.get(k) for k in OWN} == dict.fromkeys(OWN)
    # the attributes of the parents a row belongs to are still carried along
    assert (record["StudyInstanceUID"], record["PatientID"]) == ("1.2.3", "PID1")
    assert (record["SeriesInstanceUID"], record["Modality"]) == ("1.2.3.1", "CT")
    (series_row,) = to_records(shared_tree(), level="series")
    assert series_row["RetrieveURL"] == "http://x/studies/1.2.3/series/1.2.3.1"
    assert "InstanceAvailability" not in series_row  # no row of that level has one
    (study_row,) = to_records(shared_tree(), level="study")
    assert study_row["RetrieveURL"] == "http://x/studies/1.2.3"
    assert study_row["SpecificCharacterSet"] == ("ISO_IR 192",)
    (picked,) = to_records(shared_tree(), columns=["RetrieveURL", "StudyInstanceUID"])
    assert picked == {"RetrieveURL": None, "StudyInstanceUID": "1.2.3"}
    (prefixed,) = to_records(shared_tree(), prefix_parents=True)  # every level's value kept
    assert prefixed["study.RetrieveURL"] == "http://x/studies/1.2.3"
    assert prefixed["series.RetrieveURL"] == "http://x/studies/1.2.3/series/1.2.3.1"
    assert "RetrieveURL" not in prefixed


def test_a_parent_without_children_gives_its_own_level_keywords_to_no_deeper_row() -> None:
    lonely = Study.from_json(SHARED_STUDY)
    (record,) = to_records([lonely], level="instance")
    assert record["StudyInstanceUID"] == "1.2.3"
    assert "RetrieveURL" not in record
    assert "InstanceAvailability" not in record
    (record,) = to_records([lonely])  # the deepest level present is its own
    assert record["RetrieveURL"] == "http://x/studies/1.2.3"
    lonely_row, full_row = to_records([lonely, *shared_tree()], prefix_parents=True)
    assert lonely_row["study.RetrieveURL"] == "http://x/studies/1.2.3"
    assert lonely_row["study.StudyInstanceUID"] == "1.2.3"  # a parent's column, as in full rows
    assert "RetrieveURL" not in lonely_row
    assert lonely_row["SOPInstanceUID"] is None
    assert full_row["study.StudyInstanceUID"] == "1.2.3"


def test_dataframe_rows_take_own_level_keywords_from_their_level_only() -> None:
    df = to_dataframe(shared_tree(), columns=[*OWN, "StudyInstanceUID", "Modality"])
    assert df[OWN].isna().all().all()
    assert df["StudyInstanceUID"].tolist() == ["1.2.3"]
    assert df["Modality"].tolist() == ["CT"]


def test_parents_without_children_keep_their_row() -> None:
    lonely = Study.from_json(STUDY_A)
    series = Series.from_json({"0020000E": {"vr": "UI", "Value": ["1.2.3.1"]}})
    inst = Instance.from_json({"00080018": {"vr": "UI", "Value": ["1.2.3.1.1"]}})
    full = attrs.evolve(
        Study.from_json(STUDY_B), series=[attrs.evolve(series, instances=[inst]), series]
    )
    records = to_records([lonely, full])
    assert [r["StudyInstanceUID"] for r in records] == ["1.2.3", "1.2.4", "1.2.4"]
    assert [r["SOPInstanceUID"] for r in records] == [None, "1.2.3.1.1", None]


def test_invalid_options_raise() -> None:
    with pytest.raises(ValueError, match="level"):
        to_records([], level="patient")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"multivalue must be 'tuple' or 'join', not 'list'$"):
        to_records([], multivalue="list")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"sequences must be 'drop' or 'keep', not 'flat'$"):
        to_records([], sequences="flat")  # type: ignore[arg-type]


LEVELS = "level must be 'study', 'series' or 'instance' (or a QueryLevel), not "


@pytest.mark.parametrize("convert", [to_records, to_dataframe])
@pytest.mark.parametrize(
    ("level", "shown"),
    [
        ("studies", "'studies'"),
        ("\x1b]0;pwned\x07\u202e", "'\\x1b]0;pwned\\x07\\u202e'"),  # escaped, one line
        (b"study", "b'study'"),  # not taken for the name it spells
        (["study"], "['study']"),  # nor a list's text taken for one
        (3, "3"),
    ],
)
def test_a_bad_level_names_the_levels_and_shows_the_value_escaped(
    synth: SyntheticArchive, convert: Any, level: Any, shown: str
) -> None:
    with pytest.raises(ValueError, match=r"^level must be") as info:
        convert(tree(synth), level=level)
    assert str(info.value) == LEVELS + shown
    assert type(info.value) is ValueError  # argument validation, as multivalue= and sequences=


@pytest.mark.parametrize("convert", [to_records, to_dataframe])
def test_a_long_bad_level_is_cut_short(convert: Any) -> None:
    with pytest.raises(ValueError, match=r"^level must be") as info:
        convert([], level="x" * 100_000)
    message = str(info.value)
    assert message.startswith(LEVELS + "'xxx")
    assert message.endswith("…")
    assert len(message) < len(LEVELS) + 80


@pytest.mark.parametrize("convert", [to_records, to_dataframe])
@pytest.mark.parametrize(
    ("columns", "message"),
    [
        (["PatientName", "PatientName"], "columns lists 'PatientName' twice"),
        (
            ["PatientID", "PatientName", "00100010"],
            "columns lists 'PatientName' and '00100010', both the column 'PatientName'",
        ),
        (
            ["PatientName", 0x00100010],
            "columns lists 'PatientName' and 1048592, both the column 'PatientName'",
        ),
        (
            ["study.PatientName", "study.00100010"],
            "columns lists 'study.PatientName' and 'study.00100010', both the column "
            "'study.PatientName'",
        ),
    ],
)
def test_a_column_named_twice_is_refused_naming_it(
    synth: SyntheticArchive, convert: Any, columns: list[str | int], message: str
) -> None:
    """Not one key in a record, two columns of one name in a DataFrame."""
    with pytest.raises(ValueError, match=r"^columns lists") as info:
        convert(tree(synth), columns=columns, prefix_parents=True)
    assert str(info.value) == message + ": list each column once"


def test_one_keyword_at_two_levels_is_two_columns(synth: SyntheticArchive) -> None:
    columns = ["study.StudyInstanceUID", "StudyInstanceUID"]
    frame = to_dataframe(tree(synth), level="series", columns=columns, prefix_parents=True)
    assert list(frame.columns) == columns
    assert frame["study.StudyInstanceUID"].notna().all()


@pytest.mark.parametrize("level", ["Study", "SERIES", QueryLevel.INSTANCE])
def test_a_level_in_any_case_or_as_a_query_level_is_taken(
    synth: SyntheticArchive, level: Any
) -> None:
    name = level.name.lower() if isinstance(level, QueryLevel) else level.lower()
    assert to_records(tree(synth), level=level) == to_records(tree(synth), level=name)


def test_dataframe_dtypes(synth: SyntheticArchive) -> None:
    df = to_dataframe(tree(synth))
    assert len(df) == len(synth.instances)
    assert df["StudyDate"].dtype.kind == "M"
    assert df["PatientBirthDate"].dtype.kind == "M"  # some synthetic birth dates are empty
    assert isinstance(df["PatientName"].dtype, pd.StringDtype)
    assert isinstance(df["StudyInstanceUID"].dtype, pd.StringDtype)
    assert df["NumberOfStudyRelatedSeries"].dtype == "int64"
    assert df["InstanceNumber"].dtype == "int64"
    assert df["SliceThickness"].dtype == "float64"
    assert df["ImageType"].dtype == object
    image_type = synth.instance_json(synth.instances[0])["00080008"]["Value"]
    assert df["ImageType"].iloc[0] == tuple(image_type)
    assert df["StudyTime"].dtype == object
    first = synth.studies[0]
    assert df["StudyDate"].iloc[0] == pd.Timestamp(first.study_date)
    assert df["PatientName"].iloc[0] == first.patient_name


def test_dataframe_missing_values_use_nullable_dtypes() -> None:
    df = to_dataframe([Study.from_json(STUDY_A), Study.from_json(STUDY_B)])
    assert str(df["NumberOfStudyRelatedInstances"].dtype) == "Int64"
    assert df["NumberOfStudyRelatedInstances"].tolist()[0] == 12
    assert df["NumberOfStudyRelatedInstances"].isna().tolist() == [False, True]
    assert df["PatientName"].isna().tolist() == [False, True]
    assert df["StudyDate"].isna().tolist() == [False, True]
    assert df["PatientWeight"].isna().tolist() == [False, True]


def test_dataframe_integers_beyond_int64() -> None:
    # Found by review: a valid UV above 2**63 - 1 (FileLengthInContainer) made to_dataframe
    # raise a raw OverflowError.
    def instance(key: str, vr: str, number: int | None) -> Instance:
        elem = {"vr": vr} if number is None else {"vr": vr, "Value": [number]}
        return Instance.from_json({"00080018": {"vr": "UI", "Value": ["1"]}, key: elem})

    big, small = 2**64 - 1, 2**63 - 1
    df = to_dataframe([instance("0008040D", "UV", big), instance("0008040D", "UV", 5)])
    assert df["FileLengthInContainer"].dtype == "uint64"
    assert df["FileLengthInContainer"].tolist() == [big, 5]
    df = to_dataframe([instance("0008040D", "UV", big), instance("0008040D", "UV", None)])
    assert str(df["FileLengthInContainer"].dtype) == "UInt64"
    assert df["FileLengthInContainer"].iloc[0] == big
    assert df["FileLengthInContainer"].isna().tolist() == [False, True]
    df = to_dataframe([instance("0008040D", "UV", small), instance("0008040D", "UV", 5)])
    assert df["FileLengthInContainer"].dtype == "int64"
    # a private tag that is an SV in one result and a UV in another: no integer dtype
    df = to_dataframe([instance("00091001", "SV", -1), instance("00091001", "UV", big)])
    assert df["00091001"].dtype == object
    assert df["00091001"].tolist() == [-1, big]


def test_dataframe_never_rounds_an_integer_into_a_float_column() -> None:
    # Found by review: a column mixing ints and floats was float64, which silently rounded
    # an integer above 2**53 (9007199254740993 became 9007199254740992.0).
    def instance(vr: str, number: float) -> Instance:
        return Instance.from_json(
            {"00080018": {"vr": "UI", "Value": ["1"]}, "00091001": {"vr": vr, "Value": [number]}}
        )

    big = 2**53 + 1
    df = to_dataframe([instance("SV", big), instance("FD", 0.5)])
    assert df["00091001"].dtype == object
    assert df["00091001"].tolist() == [big, 0.5]
    assert type(df["00091001"].iloc[0]) is int
    df = to_dataframe([instance("SV", 2**53), instance("FD", 0.5)])  # exact in a float64
    assert df["00091001"].dtype == "float64"
    assert df["00091001"].tolist() == [2.0**53, 0.5]


def test_dataframe_empty_columns_take_the_dtype_of_their_vr() -> None:
    df = to_dataframe(
        [Study.from_json(STUDY_B)],
        columns=["StudyDate", "NumberOfStudyRelatedSeries", "PatientWeight", "PatientID"],
    )
    assert df["StudyDate"].dtype.kind == "M"
    assert str(df["NumberOfStudyRelatedSeries"].dtype) == "Int64"
    assert df["PatientWeight"].dtype == "float64"
    assert isinstance(df["PatientID"].dtype, pd.StringDtype)


def test_dataframe_empty_columns_take_the_dtype_their_values_would_have() -> None:
    # Found by review: a DT column without a value was datetime64[s] (with values: [us]),
    # a multi-valued one string (with values: object, tuples): frames of two pages of one
    # search disagreed on a column's dtype, and the docstring's "DT at microseconds" was not so.
    empty = [Instance.from_json({"00080018": {"vr": "UI", "Value": ["1"]}})]
    full = [
        Instance.from_json(
            {
                "00080018": {"vr": "UI", "Value": ["2"]},
                "0008002A": {"vr": "DT", "Value": ["20240101120000"]},
                "00080061": {"vr": "CS", "Value": ["CT"]},
                "00280030": {"vr": "DS", "Value": ["0.5", "0.5"]},
            }
        )
    ]
    names = ["AcquisitionDateTime", "ModalitiesInStudy", "PixelSpacing"]
    for multivalue in ("tuple", "join"):
        dtypes = [
            [str(t) for t in to_dataframe(r, columns=names, multivalue=multivalue).dtypes]
            for r in (empty, full)
        ]
        assert dtypes[0] == dtypes[1], multivalue


def test_dataframe_keeps_a_string_with_a_lone_surrogate_not_a_unicode_error() -> None:
    # Found by review: pandas' string dtype (pyarrow) takes no lone surrogate: a study built
    # by hand with one ("\ud800") failed to_dataframe with an untyped UnicodeEncodeError.
    odd = {**STUDY_A, "00100020": {"vr": "LO", "Value": ["ab\ud800c"]}}
    df = to_dataframe([Study.from_json(odd), Study.from_json(STUDY_B)])
    # object where pandas' string dtype refuses it (pyarrow storage); older pandas keep
    # the python-storage string dtype, which holds it: either way the value as read
    first, second = df["PatientID"].tolist()
    assert first == "ab\ud800c"
    assert pd.isna(second)
    assert isinstance(df["StudyInstanceUID"].dtype, pd.StringDtype)  # the others as before


def test_dataframe_dates_outside_the_nanosecond_range() -> None:
    item = {**STUDY_A, "00100030": {"vr": "DA", "Value": ["16000101"]}}
    df = to_dataframe([Study.from_json(item)])
    assert df["PatientBirthDate"].iloc[0] == pd.Timestamp("1600-01-01")


def test_dataframe_datetimes() -> None:
    def inst(dt: str) -> Instance:
        return Instance.from_json({"0008002A": {"vr": "DT", "Value": [dt]}})

    aware = to_dataframe([inst("20240101120000+0100"), inst("20240101120000-0200")])
    assert str(aware["AcquisitionDateTime"].dt.tz) == "UTC"
    assert aware["AcquisitionDateTime"].iloc[0] == pd.Timestamp("2024-01-01 11:00", tz="UTC")
    naive = to_dataframe([inst("20240101120000.5")])
    assert naive["AcquisitionDateTime"].iloc[0] == pd.Timestamp("2024-01-01 12:00:00.5")
    mixed = to_dataframe([inst("20240101120000+0100"), inst("20240101120000")])
    assert mixed["AcquisitionDateTime"].dtype == object
    # each value as read: the aware one keeps its offset, the naive one stays local
    one_hour = datetime.timezone(datetime.timedelta(hours=1))
    assert mixed["AcquisitionDateTime"].tolist() == [
        datetime.datetime(2024, 1, 1, 12, tzinfo=one_hour),
        datetime.datetime(2024, 1, 1, 12),
    ]
    assert mixed["AcquisitionDateTime"].iloc[0].utcoffset() == datetime.timedelta(hours=1)
    assert mixed["AcquisitionDateTime"].iloc[1].tzinfo is None


@pytest.mark.parametrize("edge", ["00010101000000+0100", "99991231235959-0100"])
def test_dataframe_datetimes_beyond_the_years_of_utc_are_kept_not_an_overflow(edge: str) -> None:
    def inst(dt: str) -> Instance:
        return Instance.from_json({"0008002A": {"vr": "DT", "Value": [dt]}})

    df = to_dataframe([inst(edge), inst("20240101120000+0100")])  # no OverflowError
    column = df["AcquisitionDateTime"]
    assert column.dtype == object  # each value as read, none converted
    assert column.tolist() == [
        to_records([inst(edge)])[0]["AcquisitionDateTime"],
        datetime.datetime(2024, 1, 1, 12, tzinfo=datetime.timezone(datetime.timedelta(hours=1))),
    ]


def test_dataframe_join_mode_gives_string_columns() -> None:
    df = to_dataframe([Study.from_json(STUDY_A), Study.from_json(STUDY_B)], multivalue="join")
    assert isinstance(df["ModalitiesInStudy"].dtype, pd.StringDtype)
    assert df["ModalitiesInStudy"].tolist() == ["CT", "CT\\MR"]


def test_dataframe_of_nothing() -> None:
    df = to_dataframe([])
    assert df.empty
    assert list(to_dataframe([], columns=["PatientID"]).columns) == ["PatientID"]


def test_missing_pandas_gives_a_clear_error() -> None:
    code = (
        "import sys; sys.modules['pandas'] = None\n"
        "from aqido.tables import to_dataframe\n"
        "try:\n    to_dataframe([])\n"
        "except ImportError as exc:\n    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install 'aqido[pandas]'" in out.stdout


def test_tables_module_does_not_import_pandas() -> None:
    code = "import sys, aqido.tables; print('pandas' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
