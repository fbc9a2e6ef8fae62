"""Parquet output and sharded crawls in one process: what reaches the files, and what may not.

Values, the files a run leaves, and what a run over an existing output
directory does.  No Dask here (``tests/test_dask.py`` has the cluster);
expected answers come from the DICOM JSON the tests build.
"""

from __future__ import annotations

import datetime as dt
import inspect
import io
import json
import os
import pathlib
from collections.abc import Iterator, Sequence
from typing import Any

import attrs
import pytest

from aqido import HierarchicalQuery, SearchResults
from aqido.cli import EXIT_INCOMPLETE, EXIT_OK, EXIT_USAGE, main
from aqido.profile import ServerProfile
from aqido.results import Study
from aqido.testing import FakeArchive, SyntheticArchive

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from aqido._arrow import (  # noqa: E402 - after the importorskips
    NULLED_KEY,
    to_arrow,
    write_parquet,
)


def study(uid: str, **elements: tuple[str, list[Any]]) -> Study:
    """A Study from its UID and ``Keyword=(vr, values)`` elements."""
    from aqido import dictionary

    raw: dict[str, Any] = {"0020000D": {"vr": "UI", "Value": [uid]}}
    for keyword, (vr, values) in elements.items():
        raw[dictionary.tag_key(dictionary.resolve(keyword)[0])] = {"vr": vr, "Value": values}
    return Study.from_json(raw)


SYNTH = SyntheticArchive(seed=41, studies=8, series_per_study=2, instances_per_series=1)
OTHER = SyntheticArchive(seed=42, studies=5, series_per_study=1, instances_per_series=2)


def run(*argv: str, environ: dict[str, str] | None = None) -> tuple[int, str, str]:
    """``aqido ARGV``: exit status, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    status = main(list(argv), stdout=out, stderr=err, environ=environ or {})
    return status, out.getvalue(), err.getvalue()


def crawl(url: str, out: pathlib.Path, *more: str) -> tuple[int, str, str]:
    """``aqido crawl URL --out OUT --format parquet MORE...``."""
    return run("crawl", url, "--out", str(out), "--format", "parquet", *more)


def parts(out: pathlib.Path) -> list[pathlib.Path]:
    return sorted(out.glob("archive=*/part-*.parquet"))


STUDIES = [study(f"1.2.3.{n}", StudyDate=("DA", ["20240102"])) for n in range(6)]


# --- values -------------------------------------------------------------------------------------


def test_several_values_in_a_single_valued_column_are_all_kept_or_null_not_the_first() -> None:
    studies = [
        study(
            "1.1",
            StudyDescription=("LO", ["Head", "Neck"]),
            StudyDate=("DA", ["20240102", "20240103"]),
        ),
        study("1.2", StudyDescription=("LO", ["Chest"]), StudyDate=("DA", ["20240104"])),
        study("1.3", StudyDescription=("LO", ["Knee", ""])),  # an empty second value: no data lost
    ]
    with pytest.warns(UserWarning, match=r"^to_arrow: 1 value null, .*: StudyDate 1$"):
        table = to_arrow(studies, level="study")
    assert table.column("StudyDescription").to_pylist() == ["Head\\Neck", "Chest", "Knee"]
    assert table.column("StudyDate").to_pylist() == [None, dt.date(2024, 1, 4), None]


def test_an_empty_value_between_several_keeps_its_place_in_a_string_column() -> None:
    # Found by review: the empty values were dropped before joining, so a StudyDescription of
    # "Head", "" and "Neck" was written "Head\\Neck", two values, as if it had been sent so.
    studies = [
        study("1.1", StudyDescription=("LO", ["Head", "", "Neck"])),
        study("1.2", StudyDescription=("LO", ["Head", "Neck", ""])),
    ]
    table = to_arrow(studies, level="study")
    assert table.column("StudyDescription").to_pylist() == ["Head\\\\Neck", "Head\\Neck\\"]


def test_a_number_the_column_cannot_hold_is_null_not_an_untyped_crash() -> None:
    studies = [
        study("1.1", NumberOfStudyRelatedInstances=("IS", ["9" * 20])),  # beyond IS: invalid
        study("1.2", NumberOfStudyRelatedInstances=("IS", [str(2**31 - 1)])),
        study("1.3", NumberOfStudyRelatedInstances=("IS", [str(-(2**31))])),
    ]
    with pytest.warns(UserWarning, match=r": NumberOfStudyRelatedInstances 1$"):
        table = to_arrow(studies, level="study")
    assert table.column("NumberOfStudyRelatedInstances").to_pylist() == [None, 2**31 - 1, -(2**31)]
    lengths = [  # FileLengthInContainer, UV: valid beyond int64
        Study.from_json({"0008040D": {"vr": "UV", "Value": [n]}}) for n in (2**64 - 1, 2**63 - 1)
    ]
    with pytest.warns(UserWarning, match=r": FileLengthInContainer 1$"):
        table = to_arrow(lengths, level="study", columns=["FileLengthInContainer"])
    assert table.column("FileLengthInContainer").to_pylist() == [None, 2**63 - 1]
    huge = Study.from_json(
        {"00181050": {"vr": "IS", "Value": ["9" * 400]}}
    )  # SpatialResolution, DS
    with pytest.warns(UserWarning, match=r": SpatialResolution 1$"):
        table = to_arrow([huge], level="study", columns=["SpatialResolution"])
    assert table.to_pylist() == [{"SpatialResolution": None}]


def test_an_integer_a_float_column_would_round_is_null_and_counted() -> None:
    # Found by review: SliceThickness (DS, a float64 column) sent as an SV of 2**53 + 1 was
    # written as 9007199254740992.0, another number, without a warning.
    def sliced(vr: str, number: int) -> Study:
        return Study.from_json({"00180050": {"vr": vr, "Value": [number]}})

    big = 2**53 + 1
    with pytest.warns(UserWarning, match=r": SliceThickness 2$"):
        table = to_arrow(
            [sliced("SV", big), sliced("SV", -big), sliced("SV", 2**53), sliced("IS", 5)],
            level="study",
            columns=["SliceThickness"],
        )
    assert table.column("SliceThickness").to_pylist() == [None, None, 2.0**53, 5.0]


def test_a_value_given_by_reference_or_as_base64_is_null_not_taken_for_the_value() -> None:
    given = Study.from_json(
        {
            "0020000D": {"vr": "UI", "Value": ["1.1"]},
            "00081030": {"vr": "LO", "BulkDataURI": "http://pacs/bulk/1"},  # StudyDescription
            "00100010": {"vr": "PN", "InlineBinary": "RG9lXkpvaG4="},  # PatientName
        }
    )
    with pytest.warns(UserWarning, match=r": PatientName 1, StudyDescription 1$"):
        row = to_arrow([given], level="study").to_pylist()[0]
    assert row["StudyDescription"] is None
    assert row["PatientName"] is None


def test_an_instance_row_has_its_own_retrieve_url_never_its_studys() -> None:
    from aqido.results import Instance, Series

    def instance(uid: str, **more: Any) -> Instance:
        return Instance.from_json({"00080018": {"vr": "UI", "Value": [uid]}, **more})

    url = "http://x/studies/1.1/series/1.1.1/instances/1.1.1.2"
    series = Series.from_json({"0020000E": {"vr": "UI", "Value": ["1.1.1"]}}).with_instances(
        [
            instance("1.1.1.1"),
            instance("1.1.1.2", **{"00081190": {"vr": "UR", "Value": [url]}}),
        ]
    )
    tree = study(
        "1.1",
        RetrieveURL=("UR", ["http://x/studies/1.1"]),
        InstanceAvailability=("CS", ["NEARLINE"]),
        TimezoneOffsetFromUTC=("SH", ["+0100"]),
        SpecificCharacterSet=("CS", ["ISO_IR 100"]),
        PatientID=("LO", ["P1"]),
    ).with_series([series])
    table = to_arrow([tree])
    assert table.column("RetrieveURL").to_pylist() == [None, url]
    assert table.column("InstanceAvailability").to_pylist() == [None, None]
    assert table.column("TimezoneOffsetFromUTC").to_pylist() == [None, None]
    assert table.column("SpecificCharacterSet").to_pylist() == [None, None]
    assert table.column("PatientID").to_pylist() == ["P1", "P1"]  # a parent's, carried along
    assert table.column("StudyInstanceUID").to_pylist() == ["1.1", "1.1"]
    by_study = to_arrow([tree], level="study")
    assert by_study.column("RetrieveURL").to_pylist() == ["http://x/studies/1.1"]


def test_search_results_to_arrow_takes_the_options_of_to_arrow() -> None:
    """Named and typed as ``aqido.to_arrow``'s, so a type checker catches a misspelt one."""
    own = inspect.signature(SearchResults.to_arrow).parameters
    of_function = inspect.signature(to_arrow).parameters
    assert list(own) == ["self", *list(of_function)[1:]]
    for name in list(of_function)[1:]:
        assert own[name] == of_function[name], name
    found = SearchResults([study("1.1", PatientID=("LO", ["P1"]))])
    table = found.to_arrow(level="study", columns=["StudyInstanceUID", "PatientID"])
    assert table.column_names == ["StudyInstanceUID", "PatientID"]
    assert table.to_pylist() == [{"StudyInstanceUID": "1.1", "PatientID": "P1"}]


JUNK = study(
    "1.9",
    StudyDate=("DA", ["2024-01-02"]),  # not DICOM's DA: unreadable
    StudyTime=("TM", ["morning"]),
    NumberOfStudyRelatedSeries=("IS", ["two"]),
    PatientBirthDate=("LO", ["19700101"]),  # a string where a date belongs: a type clash
    StudyDescription=("LO", ["fine"]),
)


def test_values_that_do_not_fit_their_column_are_counted_not_silently_null() -> None:
    clean = study("1.8", StudyDate=("DA", ["20240102"]), NumberOfStudyRelatedSeries=("IS", ["2"]))
    with pytest.warns(UserWarning, match="^to_arrow: ") as caught:
        table = to_arrow([clean, JUNK], level="study")
    (warning,) = caught
    assert str(warning.message) == (
        "to_arrow: 4 values null, not readable as one value of their column's type: "
        "StudyDate 1, StudyTime 1, PatientBirthDate 1, NumberOfStudyRelatedSeries 1"
    )
    assert warning.filename == __file__  # the caller's line, not aqido's
    row = table.to_pylist()[1]
    assert [row[k] for k in ("StudyDate", "StudyTime", "PatientBirthDate")] == [None] * 3
    assert row["NumberOfStudyRelatedSeries"] is None
    assert row["StudyDescription"] == "fine"
    to_arrow([clean], level="study")  # nothing nulled: no warning (warnings are errors here)


def test_a_value_sent_as_a_sequence_is_counted_not_silently_null(tmp_path: pathlib.Path) -> None:
    odd = Study.from_json(
        {
            "0020000D": {"vr": "UI", "Value": ["1.9"]},
            "00080020": {"vr": "SQ", "Value": [{"00100020": {"vr": "LO", "Value": ["x"]}}]},
            "00081030": {"vr": "SQ", "Value": []},  # no item: no value, nothing lost
        }
    )
    with pytest.warns(UserWarning, match="not readable as one value of their column's type: "):
        table = to_arrow([odd], level="study")
    assert table.column("StudyDate").to_pylist() == [None]
    written = write_parquet([[odd]], tmp_path / "p.parquet", level="study")
    assert written.nulled == {"StudyDate": 1}


def test_an_unreadable_value_beside_a_readable_one_is_not_dropped_in_silence() -> None:
    # two StudyDates, one unreadable: the readable one is not kept as if it were the only one
    both = study("1.1", StudyDate=("DA", ["20240102", "junk"]))
    with pytest.warns(UserWarning, match=r": StudyDate 1$"):
        assert to_arrow([both], level="study").column("StudyDate").to_pylist() == [None]
    # in a list column the readable values stay, the unreadable one is a null item, counted
    spacing = Study.from_json({"00280030": {"vr": "DS", "Value": ["0.5", "wide"]}})  # PixelSpacing
    with pytest.warns(UserWarning, match=r": PixelSpacing 1$"):
        table = to_arrow([spacing], level="study", columns=["PixelSpacing"])
    assert table.column("PixelSpacing").to_pylist() == [[0.5, None]]


def test_a_string_with_a_lone_surrogate_is_null_and_counted_not_a_unicode_error(
    tmp_path: pathlib.Path,
) -> None:
    # Found by review: a study built by hand with a lone surrogate ("\ud800", which has no
    # UTF-8 form; a server's answer with one is refused) failed to_arrow and write_parquet
    # with an untyped UnicodeEncodeError, the whole table or part lost for one value.
    odd = Study.from_json(
        {
            "0020000D": {"vr": "UI", "Value": ["1.9"]},
            "00100020": {"vr": "LO", "Value": ["ab\ud800c"]},
            "00080061": {"vr": "CS", "Value": ["CT", "M\udc00R"]},
            "00081030": {"vr": "LO", "Value": ["fine"]},
        }
    )
    with pytest.warns(UserWarning, match=r": ModalitiesInStudy 1, PatientID 1$"):
        table = to_arrow([odd], level="study")
    assert table.column("PatientID").to_pylist() == [None]
    assert table.column("ModalitiesInStudy").to_pylist() == [["CT", None]]
    assert table.column("StudyDescription").to_pylist() == ["fine"]
    written = write_parquet([[odd]], tmp_path / "p.parquet", level="study")
    assert written == (1, {"ModalitiesInStudy": 1, "PatientID": 1})
    assert pq.read_table(tmp_path / "p.parquet").column("PatientID").to_pylist() == [None]


def _acquired(value: str) -> Any:
    """An instance with one AcquisitionDateTime (DT)."""
    from aqido.results import Instance

    return Instance.from_json({"0008002A": {"vr": "DT", "Value": [value]}})


def test_a_timestamp_column_holds_local_times_only_never_some_converted_to_utc() -> None:
    given = [_acquired("20240101120000+0100"), _acquired("20240101120000.5")]
    with pytest.warns(UserWarning, match=r": AcquisitionDateTime 1$"):
        table = to_arrow(given, columns=["AcquisitionDateTime"])
    assert table.schema.field("AcquisitionDateTime").type == pa.timestamp("us")  # no zone
    # the local time as written; the value with an offset is null, not 11:00 UTC among them
    assert table.column("AcquisitionDateTime").to_pylist() == [
        None,
        dt.datetime(2024, 1, 1, 12, 0, 0, 500000),
    ]
    aware = [_acquired("20240101120000+0000"), _acquired("20240101235959-0500")]
    with pytest.warns(UserWarning, match=r": AcquisitionDateTime 2$"):
        assert (
            to_arrow(aware, columns=["AcquisitionDateTime"]).to_pylist()
            == [{"AcquisitionDateTime": None}] * 2
        )


def test_a_parquet_file_of_mixed_timestamps_counts_those_with_an_offset(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "part.parquet"
    batches = [[_acquired("20240101120000")], [_acquired("20240101120000+0100")]]
    written = write_parquet(batches, path, level="instance", columns=["AcquisitionDateTime"])
    assert written.nulled == {"AcquisitionDateTime": 1}
    table = pq.read_table(path)
    assert table.schema.field("AcquisitionDateTime").type == pa.timestamp("us")
    assert table.column("AcquisitionDateTime").to_pylist() == [dt.datetime(2024, 1, 1, 12), None]


def test_a_parquet_file_holds_its_nulled_values_per_column(tmp_path: pathlib.Path) -> None:
    import json

    path = tmp_path / "part.parquet"
    written = write_parquet([[JUNK], STUDIES[:1], [JUNK]], path, level="study")  # no warning
    expected = {
        "StudyDate": 2,
        "StudyTime": 2,
        "PatientBirthDate": 2,
        "NumberOfStudyRelatedSeries": 2,
    }
    assert written.rows == 3
    assert written.nulled == expected
    stored = pq.read_metadata(path).metadata[NULLED_KEY.encode()]
    assert json.loads(stored) == expected
    assert list(json.loads(stored)) == list(expected)  # in the schema's order
    clean = tmp_path / "clean.parquet"
    assert write_parquet([STUDIES], clean, level="study").nulled == {}
    assert pq.read_metadata(clean).metadata[NULLED_KEY.encode()] == b"{}"


def test_the_cli_names_the_nulled_values_per_shard_and_in_its_summary(
    tmp_path: pathlib.Path,
) -> None:
    content = [_instance("1.2.9.1", "20240102"), _instance("1.2.9.2", "20240305")]
    content[0]["00280010"] = {"vr": "US", "Value": ["tall"]}  # Rows
    content[0]["00100030"] = {"vr": "DA", "Value": ["1970-01-01"]}  # PatientBirthDate
    content[1]["00280010"] = {"vr": "US", "Value": ["wide"]}
    with FakeArchive(content).run_in_thread() as archive:
        status, out, err = crawl(archive.url, tmp_path, "--shards", "2")
    assert status == EXIT_OK, err
    lines = [line for line in err.splitlines() if line.startswith("shard ")]
    assert len(lines) == 2
    assert lines[0].endswith(
        ": 1 study, 1 row; 2 values null, not readable as one value of their column's type: "
        "PatientBirthDate 1, Rows 1"
    )
    assert lines[1].endswith(
        "; 1 value null, not readable as one value of their column's type: Rows 1"
    )
    assert out.rstrip("\n").endswith(
        "; 3 values null, not readable as one value of their column's type: "
        "PatientBirthDate 1, Rows 2"
    )


@pytest.mark.parametrize("columns", [None, ["PatientName"]])
def test_a_bad_level_is_the_message_of_to_records_before_any_row(
    tmp_path: pathlib.Path, columns: list[str] | None
) -> None:
    from aqido._arrow import arrow_schema

    message = "level must be 'study', 'series' or 'instance' (or a QueryLevel), not '\\x1bstudies'"
    studies = [study("1.2.3")]
    for call in (
        lambda: to_arrow(studies, level="\x1bstudies", columns=columns),
        lambda: arrow_schema("\x1bstudies", columns),
        lambda: write_parquet([studies], tmp_path / "p.parquet", level="\x1bstudies"),
    ):
        with pytest.raises(ValueError, match=r"^level must be") as info:
            call()
        assert str(info.value) == message
    assert list(tmp_path.iterdir()) == []


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
    ],
)
def test_a_column_named_twice_is_refused_not_a_table_of_two_columns_of_one_name(
    tmp_path: pathlib.Path, columns: list[str | int], message: str
) -> None:
    from aqido._arrow import arrow_schema

    studies = [study("1.2.3", PatientName=("PN", ["Doe"]))]
    for call in (
        lambda: to_arrow(studies, columns=columns),
        lambda: arrow_schema("study", columns),
        lambda: write_parquet([studies], tmp_path / "p.parquet", level="study", columns=columns),
    ):
        with pytest.raises(ValueError, match=r"^columns lists") as info:
            call()
        assert str(info.value) == message + ": list each column once"
    assert list(tmp_path.iterdir()) == []


def test_a_sequence_column_is_refused_not_always_null() -> None:
    given = Study.from_json(
        {
            "0020000D": {"vr": "UI", "Value": ["1.1"]},
            "00081032": {"vr": "SQ", "Value": [{"00080100": {"vr": "SH", "Value": ["X"]}}]},
        }
    )
    with pytest.raises(ValueError, match=r"ProcedureCodeSequence.*sequence"):
        to_arrow([given], level="study", columns=["StudyInstanceUID", "ProcedureCodeSequence"])


# --- files --------------------------------------------------------------------------------------


def test_two_writers_racing_for_one_part_leave_a_complete_file(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "part.parquet"

    def first() -> Iterator[Sequence[Study]]:
        yield STUDIES[:2]
        # a second writer of the same part (a Dask task run twice) starts and finishes meanwhile
        assert write_parquet([STUDIES[2:3]], path, level="study").rows == 1
        yield STUDIES[3:]

    assert write_parquet(first(), path, level="study").rows == 5
    table = pq.read_table(path)
    assert table.column("StudyInstanceUID").to_pylist() == [
        s.StudyInstanceUID for s in STUDIES[:2] + STUDIES[3:]
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["part.parquet"]


def test_a_failed_write_leaves_no_file(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "part.parquet"

    def broken() -> Iterator[Sequence[Study]]:
        yield STUDIES[:2]
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_parquet(broken(), path, level="study")
    assert list(tmp_path.iterdir()) == []


def test_a_rerun_at_another_depth_does_not_keep_the_old_parts(tmp_path: pathlib.Path) -> None:
    with FakeArchive(SYNTH).run_in_thread() as archive:
        assert crawl(archive.url, tmp_path, "--depth", "study", "--shards", "2")[0] == EXIT_OK
        status, _, err = crawl(archive.url, tmp_path, "--depth", "instance", "--shards", "2")
    assert status == EXIT_INCOMPLETE
    assert "already written" not in err
    assert err.count("other columns than a crawl at depth INSTANCE") == 2
    for part in parts(tmp_path):  # the study-level parts are left as they were, not mixed
        assert "SOPInstanceUID" not in pq.read_schema(part).names


def test_a_damaged_part_is_not_kept_as_finished(tmp_path: pathlib.Path) -> None:
    with FakeArchive(SYNTH).run_in_thread() as archive:
        assert crawl(archive.url, tmp_path)[0] == EXIT_OK
        (part,) = parts(tmp_path)
        part.write_bytes(part.read_bytes()[:100])  # cut short (a disk, a copy)
        status, _, err = crawl(archive.url, tmp_path)
        assert status == EXIT_INCOMPLETE
        assert "not a readable Parquet part" in err
        part.unlink()  # as the message says: written again from the checkpoint
        archive.reset_stats()
        assert crawl(archive.url, tmp_path)[0] == EXIT_OK
    assert pq.read_table(part).num_rows == 8 * 2


def test_another_archive_of_the_same_directory_name_is_not_taken_for_done(
    tmp_path: pathlib.Path,
) -> None:
    with FakeArchive(SYNTH, prefix="/a/b").run_in_thread() as archive:
        assert crawl(archive.url, tmp_path)[0] == EXIT_OK
        other = f"http://127.0.0.1:{archive.port}/a_b"  # archive=127.0.0.1_PORT_a_b as well
        status, _, err = crawl(other, tmp_path)
    assert status == EXIT_USAGE
    assert "holds the plan of another archive" in err
    assert "already written" not in err


def test_two_urls_of_one_directory_name_in_one_run_are_refused(tmp_path: pathlib.Path) -> None:
    with FakeArchive(SYNTH, prefix="/a/b").run_in_thread() as archive:
        other = f"http://127.0.0.1:{archive.port}/a_b"
        status, _, err = run(
            "crawl", archive.url, other, "--out", str(tmp_path), "--format", "parquet"
        )
        assert archive.requests == []
    assert status == EXIT_USAGE
    assert "same archive directory" in err


def test_an_archive_whose_planning_fails_is_named_and_the_others_are_crawled(
    tmp_path: pathlib.Path,
) -> None:
    from aqido._shards import archive_dirname

    with FakeArchive(SYNTH).run_in_thread() as one, FakeArchive(OTHER).run_in_thread() as two:
        one.fail("/studies", "500")  # its study listing, so its plan, fails
        status, _, err = run(
            "crawl", one.url, two.url, "--out", str(tmp_path), "--format", "parquet",
            "--retries", "0",
        )  # fmt: skip
        url_one = one.url
        name_two = archive_dirname(two.url)
    assert status == EXIT_INCOMPLETE
    assert f"could not fetch: {url_one} (planning its shards)" in err
    (part,) = (tmp_path / name_two).glob("part-*.parquet")
    assert pq.read_table(part).num_rows == 5 * 2


def test_an_undated_study_whose_uid_no_query_takes_fails_its_archive_not_the_run(
    tmp_path: pathlib.Path,
) -> None:
    from aqido._shards import archive_dirname

    content = [_instance("1.02.3", None), _instance("1.2.4", "20240101")]
    content.append(_instance("1.2.5", "20240301"))
    with FakeArchive(content).run_in_thread() as one, FakeArchive(OTHER).run_in_thread() as two:
        status, _, err = run(
            "crawl", one.url, two.url, "--out", str(tmp_path), "--format", "parquet",
            "--shards", "2",
        )  # fmt: skip
        url_one = one.url
        name_two = archive_dirname(two.url)
    assert status == EXIT_INCOMPLETE, err  # not a usage error that stops every archive
    assert f"could not fetch: {url_one} (planning its shards)" in err
    assert "'1.02.3' is not a valid DICOM UID" in err
    written = (tmp_path / name_two).glob("part-*.parquet")
    assert sum(pq.read_table(part).num_rows for part in written) == 5 * 2


@pytest.mark.parametrize("shards", ["1", "2"])
def test_a_listed_study_outside_the_querys_date_range_fails_its_archive_not_the_run(
    tmp_path: pathlib.Path, shards: str
) -> None:
    from aqido._shards import archive_dirname

    # a server that does not match StudyDate (it ignores the key, as Orthanc does an
    # attribute it does not know) lists 1.2.5 of 20240201 for a range of January
    content = [_instance(uid, date) for uid, date in (("1.2.4", "20240105"), ("1.2.5", "20240201"))]
    content.append(_instance("1.2.6", "20240120"))
    ignores_dates = ServerProfile(matched_keys=["PatientID"], unsupported_keys="ignore")
    with (
        FakeArchive(content, profile=ignores_dates).run_in_thread() as one,
        FakeArchive(OTHER).run_in_thread() as two,
    ):
        status, _, err = run(
            "crawl", one.url, two.url, "--out", str(tmp_path), "--format", "parquet",
            "--shards", shards, "--date-from", "2024-01-01", "--date-to", "2024-01-31",
        )  # fmt: skip
        url_one = one.url
        name_two = archive_dirname(two.url)
    assert status == EXIT_INCOMPLETE, err  # not a usage error ("swap them") stopping every archive
    assert f"could not fetch: {url_one} (planning its shards)" in err
    assert "holds '1.2.5' of StudyDate 20240201, outside the query's range 20240101-20240131" in err
    assert list((tmp_path / archive_dirname(url_one)).glob("part-*.parquet")) == []
    assert list((tmp_path / name_two).glob("part-*.parquet"))  # the other archive was crawled


def test_the_attributes_a_crawl_includes_are_columns_of_its_parts(tmp_path: pathlib.Path) -> None:
    found = _instance("1.2.4", "20240105")
    found["00101010"] = {"vr": "AS", "Value": ["042Y"]}  # PatientAge: not a default column
    include = ("--include", "PatientAge", "--include", "00091001", "--include", "00081110")
    with FakeArchive([found]).run_in_thread() as archive:
        status, _, err = crawl(archive.url, tmp_path, "--depth", "series", *include)
        assert status == EXIT_OK, err
        (part,) = parts(tmp_path)
        table = pq.read_table(part)
        assert table.column_names[-2:] == ["PatientAge", "00091001"]  # no SQ (00081110) column
        assert table.column("PatientAge").to_pylist() == ["042Y"]  # fetched, and kept
        status, _, err = crawl(archive.url, tmp_path, "--depth", "series", *include)
    assert status == EXIT_OK, err  # a re-run with the same fields keeps its parts
    assert "already written" in err


def test_an_undated_uid_with_a_comma_is_not_taken_for_a_list_of_other_studies(
    tmp_path: pathlib.Path,
) -> None:
    # '9.9,1.2.4' in a UID list asks for 1.2.4 (another shard's study): a duplicate row, and
    # the study itself missing, in a crawl that said it was complete
    content = [_instance("9.9,1.2.4", None), _instance("1.2.4", "20240105")]
    content.append(_instance("1.2.5", "20240301"))
    with FakeArchive(content).run_in_thread() as archive:
        status, _, err = crawl(
            archive.url, tmp_path, "--shards", "2", "--depth", "study", "--permissive-uids"
        )
    assert status == EXIT_INCOMPLETE, err
    assert "StudyInstanceUID '9.9,1.2.4': a list of UIDs would not hold it as one UID" in err
    uids = [u for p in parts(tmp_path) for u in pq.read_table(p)["StudyInstanceUID"].to_pylist()]
    assert len(uids) == len(set(uids))


def _truncated(text: str) -> str:
    return text[: len(text) // 2]


def _renamed(text: str) -> str:  # a shard name that climbs out of the output directory
    record = json.loads(text)
    record["plan"][0]["name"] = "../../../evil"
    return json.dumps(record)


@pytest.mark.parametrize("damage", [_truncated, _renamed, lambda _: "[]"])
def test_a_damaged_plan_is_a_named_failure(tmp_path: pathlib.Path, damage: Any) -> None:
    from aqido._shards import plan_path

    out = tmp_path / "out"
    with FakeArchive(SYNTH).run_in_thread() as archive:
        assert crawl(archive.url, out, "--shards", "2")[0] == EXIT_OK
        plan = plan_path(out, archive.url)
        plan.write_text(damage(plan.read_text(encoding="utf-8")), encoding="utf-8")
        for part in parts(out):
            part.unlink()
        status, _, err = crawl(archive.url, out, "--shards", "2")
    assert status == EXIT_INCOMPLETE
    assert "not a shard plan" in err
    assert parts(out) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # nothing written outside


def test_a_plan_that_cannot_be_read_is_a_named_failure_of_its_archive(
    tmp_path: pathlib.Path,
) -> None:
    # Found by review: an OSError reading the plan (here: it is a directory; an I/O error,
    # no permission) escaped untyped, and the CLI stopped every archive with exit status 1.
    from aqido._shards import plan_path

    with FakeArchive(SYNTH).run_in_thread() as one, FakeArchive(OTHER).run_in_thread() as two:
        plan_path(tmp_path, one.url).mkdir(parents=True)
        status, _, err = run(
            "crawl", one.url, two.url, "--out", str(tmp_path), "--format", "parquet"
        )  # fmt: skip
    assert status == EXIT_INCOMPLETE
    assert "_plan.json: could not read it: " in err
    assert len(parts(tmp_path)) == 1  # the other archive's


def test_the_output_directory_reads_as_one_dataset(tmp_path: pathlib.Path) -> None:
    import pyarrow.dataset

    with FakeArchive(SYNTH).run_in_thread() as archive:
        status, _, err = crawl(archive.url, tmp_path, "--shards", "2", "--depth", "series")
    assert status == EXIT_OK, err
    (tmp_path / "archive=x").mkdir()  # a part being written elsewhere: hidden
    (tmp_path / "archive=x" / ".part-y.parquet.0123456789ab.tmp").write_bytes(b"PAR1")
    table = pyarrow.dataset.dataset(tmp_path, partitioning="hive").to_table()
    assert table.num_rows == 8 * 2
    assert len(set(table.column("SeriesInstanceUID").to_pylist())) == 8 * 2


def test_an_older_layout_is_renamed_not_planned_again(tmp_path: pathlib.Path) -> None:
    from aqido._shards import plan_path

    with FakeArchive(SYNTH).run_in_thread() as archive:
        assert crawl(archive.url, tmp_path, "--shards", "2")[0] == EXIT_OK
        directory = plan_path(tmp_path, archive.url).parent
        (directory / "_plan.json").rename(directory / "plan.json")
        (directory / "_checkpoints").rename(directory / "checkpoints")
        archive.reset_stats()
        status, _, err = crawl(archive.url, tmp_path, "--shards", "2")
        assert archive.requests == []  # the old plan was found: nothing listed again
    assert status == EXIT_OK
    assert err.count("already written") == 2
    assert sorted(p.name for p in directory.iterdir() if not p.name.startswith("part-")) == [
        "_checkpoints",
        "_plan.json",
    ]


@pytest.mark.parametrize(
    "url", ["http://user:S3cret@\u2100.example/x", "http://user:S3cret@xn--a.example/x"]
)
def test_an_archive_url_that_does_not_parse_is_a_value_error_without_its_password(
    url: str,
) -> None:
    # Found by review: archive_dirname (crawl_to_parquet's first step) let yarl's ValueError
    # through, which quotes the netloc: the password with it.
    from aqido._shards import archive_dirname

    with pytest.raises(ValueError, match="url is not a valid URL") as caught:
        archive_dirname(url)
    assert "S3cret" not in str(caught.value)


def test_two_first_runs_into_one_directory_do_not_both_plan(tmp_path: pathlib.Path) -> None:
    # Found by review: two first runs into one empty directory each planned shards of their
    # own (here of another --shards), overwrote each other's plan, and both wrote their
    # parts: 16 rows for 8 studies, each study in two overlapping parts, and no error.
    import asyncio

    from aqido._shards import plan, plan_path, run_shard
    from aqido.errors import CheckpointError
    from aqido.query import QueryLevel

    with FakeArchive(SYNTH, latency=0.05).run_in_thread() as archive:
        directory = plan_path(tmp_path, archive.url).parent

        async def one_run(shards: int) -> list[str]:
            planned = await plan(
                archive.url, HierarchicalQuery(), out=tmp_path, shards=shards, client_options={}
            )
            for shard in planned:
                await run_shard(
                    archive.url, shard, out=tmp_path, depth=QueryLevel.STUDY, client_options={}
                )
            return [shard.name for shard in planned]

        async def both() -> list[Any]:
            return await asyncio.gather(one_run(4), one_run(2), return_exceptions=True)

        first, second = asyncio.run(both())
        again = asyncio.run(one_run(2))  # a run after them re-uses the plan
    assert isinstance(second, CheckpointError)
    assert "being planned by another crawl" in str(second)
    saved = json.loads((directory / "_plan.json").read_text(encoding="utf-8"))
    assert [shard["name"] for shard in saved["plan"]] == first == again
    assert sum(pq.read_metadata(part).num_rows for part in parts(tmp_path)) == 8
    assert not (directory / "_plan.json.lock").exists()  # the plan alone, once planned


def test_a_planning_in_this_process_is_named_as_the_holder_of_its_lock(
    tmp_path: pathlib.Path,
) -> None:
    """Not "another aqido run": a planning of this very process, still listing the studies."""
    import asyncio

    from aqido._files import _HELD_HERE
    from aqido._shards import Shard, plan, plan_path
    from aqido.errors import CheckpointError

    with FakeArchive(SYNTH, latency=0.05).run_in_thread() as archive:
        lock = plan_path(tmp_path, archive.url).with_name("_plan.json.lock")

        async def one() -> list[Shard]:
            return await plan(
                archive.url, HierarchicalQuery(), out=tmp_path, shards=2, client_options={}
            )

        async def while_planning() -> tuple[list[Shard], CheckpointError]:
            first = asyncio.create_task(one())
            await asyncio.sleep(0)  # its first step takes the lock, then awaits the archive
            assert lock.exists()
            with pytest.raises(CheckpointError) as info:
                await one()
            return await first, info.value

        planned, refused = asyncio.run(while_planning())
        again = asyncio.run(one())  # released: the plan is re-used
    message = str(refused)
    assert "being planned by another crawl in this process, which holds its lock" in message
    assert "another aqido run" not in message
    assert "crawl_to_parquet" in message
    assert "cancel it" in message
    assert str(lock) in message
    assert again == planned
    assert not lock.exists()
    assert os.path.realpath(lock) not in _HELD_HERE


def test_a_planning_another_process_holds_is_still_said_to_be_anothers(
    tmp_path: pathlib.Path,
) -> None:
    import subprocess
    import sys

    import anyio

    from aqido._shards import plan, plan_path
    from aqido.errors import CheckpointError

    url = "http://127.0.0.1:9/dicom-web"  # never asked: the lock is refused first
    path = plan_path(tmp_path, url)
    path.parent.mkdir(parents=True)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, pathlib; from aqido._shards import _plan_lock; "
            "lock = _plan_lock(pathlib.Path(sys.argv[1])); print('held', flush=True); "
            "sys.stdin.read(); lock.release()",
            str(path),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(CheckpointError, match="another aqido run holds its lock"):
            anyio.run(
                lambda: plan(url, HierarchicalQuery(), out=tmp_path, shards=2, client_options={})
            )
    finally:
        holder.communicate("", timeout=30)


def test_a_plan_of_a_query_with_extra_params_is_read_back_and_re_used(
    tmp_path: pathlib.Path,
) -> None:
    import anyio

    from aqido._shards import Shard, plan

    query = HierarchicalQuery(extra_params={"emptyvaluematching": ["false"]})
    with FakeArchive(SYNTH).run_in_thread() as archive:

        async def twice() -> tuple[list[Shard], list[Shard]]:
            first = await plan(archive.url, query, out=tmp_path, shards=2, client_options={})
            again = await plan(archive.url, query, out=tmp_path, shards=2, client_options={})
            return first, again

        first, again = anyio.run(twice)
    assert again == first  # read back from the file, the same query (no "not a shard plan")
    assert again[0].query.extra_params == (("emptyvaluematching", ("false",)),)
    for shard in first:  # a Dask task's argument, and a plan line: the same shard again
        assert Shard.from_json(shard.to_json()) == shard
        assert Shard.from_json(json.loads(json.dumps(shard.to_json()))) == shard


def _instance(study_uid: str, date: str | None) -> dict[str, Any]:
    found = {
        "0020000D": {"vr": "UI", "Value": [study_uid]},
        "0020000E": {"vr": "UI", "Value": [study_uid + ".1"]},
        "00080018": {"vr": "UI", "Value": [study_uid + ".1.1"]},
        "00080016": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.7"]},
        "00080060": {"vr": "CS", "Value": ["OT"]},
    }
    if date is not None:
        found["00080020"] = {"vr": "DA", "Value": [date]}
    return found


@pytest.mark.parametrize("shards", ["1", "3"])
def test_undated_studies_are_written_once(tmp_path: pathlib.Path, shards: str) -> None:
    dates = (None, "20240102", "20240305")
    content = [_instance(f"1.2.9.{n}", dates[n % 3]) for n in range(6)]
    with FakeArchive(content).run_in_thread() as archive:
        status, _, err = crawl(archive.url, tmp_path, "--shards", shards)
    assert status == EXIT_OK, err
    uids = [
        row["StudyInstanceUID"]
        for part in parts(tmp_path)
        for row in pq.read_table(part).to_pylist()
    ]
    assert sorted(uids) == [f"1.2.9.{n}" for n in range(6)]


def test_a_server_that_matches_no_date_range_is_not_an_empty_complete_crawl(
    tmp_path: pathlib.Path,
) -> None:
    from aqido.profile import ServerProfile

    # a server taking '-20240304' for a value, not a range: 200 and no match
    literal = ServerProfile(date_ranges=False, open_date_ranges=False, bad_request_status=200)
    content = [_instance(f"1.2.9.{n}", ("20240102", "20240305")[n % 2]) for n in range(6)]
    with FakeArchive(content, profile=literal).run_in_thread() as archive:
        status, _, err = crawl(archive.url, tmp_path, "--shards", "2")
    assert status == EXIT_INCOMPLETE
    assert err.count("found 0 of the 3 studies the planning listing put in it") == 2
    assert parts(tmp_path) == []


def test_studies_of_other_shards_are_left_out_of_a_shard() -> None:
    from aqido._shards import Shard, _batches, plan_shards

    dated = [study(f"1.2.{n}", StudyDate=("DA", [f"2024010{n}"])) for n in range(1, 5)]
    undated = [study("1.3.1"), study("1.3.2", StudyDate=("DA", ["2024-01-02"]))]  # unreadable
    listing = [(s.StudyInstanceUID, s.StudyDate) for s in dated + undated]
    first, second, rest = plan_shards(HierarchicalQuery(), listing, shards=2)
    assert (first.name, second.name, rest.studies) == ("date--20240102", "date-20240103-", 2)
    everything = dated + undated  # what a server ignoring the range or UID list answers
    kept: dict[str, list[str]] = {}
    for shard in (first, second, rest):
        counted = [0]
        batches = _batches(shard, iter(everything), counted)
        kept[shard.name] = [s.StudyInstanceUID for batch in batches for s in batch]
        assert counted[0] == len(kept[shard.name]) == shard.studies
    assert sorted(uid for uids in kept.values() for uid in uids) == sorted(
        s.StudyInstanceUID for s in everything
    )
    assert Shard.from_json(first.to_json()) == first


def test_a_date_shard_of_a_query_with_uids_checks_both() -> None:
    from aqido._shards import Shard, plan_shards

    uids = HierarchicalQuery(StudyInstanceUID="1.2.1,1.2.3")
    (own,) = plan_shards(
        uids, [("1.2.1", dt.date(2024, 1, 1)), ("1.2.3", dt.date(2024, 1, 3))], shards=1
    )
    ranged = Shard("r", attrs.evolve(own.query, max_study_date=dt.date(2024, 1, 2)))
    assert [
        ranged.holds(u, dt.date(2024, 1, d)) for u, d in [("1.2.1", 1), ("1.2.3", 3), ("1.2.2", 2)]
    ] == [True, False, False]


def test_no_credential_reaches_the_output_directory_or_the_messages(
    tmp_path: pathlib.Path,
) -> None:
    secret = "s3cret-Pw-4711"
    broken = SYNTH.studies[0].study_instance_uid
    with FakeArchive(SYNTH, basic_auth=("reader", secret)).run_in_thread() as archive:
        archive.fail(f"/studies/{broken}/series", "500")  # a failure message too
        status, out, err = run(
            "crawl", archive.url, "--out", str(tmp_path), "--format", "parquet", "--shards", "2",
            "--user", "reader", "--retries", "0", environ={"AQIDO_PASSWORD": secret},
        )  # fmt: skip
    assert status == EXIT_INCOMPLETE
    assert len(parts(tmp_path)) == 1
    for text in (out, err):
        assert secret not in text
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
    for part in parts(tmp_path):  # Parquet metadata: the schema and the nulled counts, no URL
        metadata = pq.read_metadata(part).metadata
        assert set(metadata) == {b"ARROW:schema", NULLED_KEY.encode()}
        assert metadata[NULLED_KEY.encode()] == b"{}"


def test_the_studies_several_parts_hold_are_named(tmp_path: pathlib.Path) -> None:
    from aqido._arrow import disjoint_failure

    def part(name: str, uids: list[str | None]) -> pathlib.Path:
        path = tmp_path / f"part-{name}.parquet"
        pq.write_table(pa.table({"StudyInstanceUID": uids, "Rows": list(range(len(uids)))}), path)
        return path

    a = part("a", ["1.1", "1.1", "1.2", None])  # one row per instance: a study's UID repeats
    b = part("b", ["1.3", None])
    assert disjoint_failure("x", [a, b]) is None  # repeats within a part, and nulls, are fine
    c = part("c", ["1.2", "1.4", "1.5", "1.6", "1.7"])
    d = part("d", ["1.4", "1.5", "1.6", "1.7", "1.1"])
    failure = disjoint_failure("archive=x", [a, b, c, d])
    assert failure is not None
    assert failure.query == "archive=x (its parts together)"
    message = str(failure.error)
    assert message.startswith(
        "6 studies are in more than one part ('1.1' in part-a.parquet, part-d.parquet; "
        "'1.2' in part-a.parquet, part-c.parquet; '1.4' in part-c.parquet, part-d.parquet; ...)"
    )
    assert str(tmp_path) not in message  # the parts' names, not the user's directories
