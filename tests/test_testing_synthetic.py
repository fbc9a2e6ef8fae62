"""aqido.testing.synthetic: deterministic, tricky, and the same data in JSON and pydicom form."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydicom.uid import generate_uid as pydicom_generate_uid

from aqido.testing.synthetic import (
    PATIENT_NAMES,
    UID_PREFIX,
    SyntheticArchive,
    encode_dicom,
    generate_uid,
    pn_json,
)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def archive() -> SyntheticArchive:
    return SyntheticArchive(seed=7, studies=60, series_per_study=3, instances_per_series=2)


@pytest.mark.parametrize(
    ("prefix", "sources"),
    [
        (UID_PREFIX, ["seed=1", "study", "0"]),
        (UID_PREFIX, ["lorem", "ipsum"]),
        ("1.2.3.", ["x"]),
        ("1.2.840.113619.2.55.3.604688119.969.", ["a" * 100]),
        (UID_PREFIX, ["é", "山田"]),
    ],
)
def test_generate_uid_equals_pydicom(prefix: str, sources: list[str]) -> None:
    ours = generate_uid(prefix, entropy_srcs=sources)
    assert ours == pydicom_generate_uid(prefix, entropy_srcs=sources)
    assert len(ours) <= 64


def test_generate_uid_random_and_invalid_prefix() -> None:
    assert generate_uid() != generate_uid()
    assert generate_uid().startswith(UID_PREFIX)
    assert generate_uid(None).startswith("2.25.")
    with pytest.raises(ValueError, match="not valid"):
        generate_uid("1.02.")
    with pytest.raises(ValueError, match="54"):
        generate_uid("1." * 30)


def test_same_arguments_same_archive() -> None:
    a = SyntheticArchive(seed=5, studies=20, series_per_study=2, instances_per_series=3)
    b = SyntheticArchive(seed=5, studies=20, series_per_study=2, instances_per_series=3)
    assert a.studies == b.studies
    assert list(a.iter_json()) == list(b.iter_json())
    c = SyntheticArchive(seed=6, studies=20, series_per_study=2, instances_per_series=3)
    assert {s.study_instance_uid for s in a.studies}.isdisjoint(
        s.study_instance_uid for s in c.studies
    )


def test_determinism_across_processes() -> None:
    code = (
        "from aqido.testing.synthetic import SyntheticArchive as S; "
        "a = S(seed=11, studies=5); "
        "print(a.studies[4].study_instance_uid, a.studies[4].study_time, "
        "a.instances[-1].sop_instance_uid)"
    )
    run = [sys.executable, "-c", code]
    env = {"PYTHONHASHSEED": "1"}
    first = subprocess.run(run, capture_output=True, text=True, check=True, env=env, cwd=ROOT)
    env2 = {"PYTHONHASHSEED": "2"}
    second = subprocess.run(run, capture_output=True, text=True, check=True, env=env2, cwd=ROOT)
    a = SyntheticArchive(seed=11, studies=5)
    expected = (
        f"{a.studies[4].study_instance_uid} {a.studies[4].study_time} "
        f"{a.instances[-1].sop_instance_uid}"
    )
    assert first.stdout.strip() == second.stdout.strip() == expected


def test_uids_follow_the_documented_recipe(archive: SyntheticArchive) -> None:
    study = archive.studies[3]
    assert study.study_instance_uid == pydicom_generate_uid(
        UID_PREFIX, entropy_srcs=["seed=7", "study", "3"]
    )
    instance = study.series[1].instances[1]
    assert instance.sop_instance_uid == archive.uid("instance", 3, 1, 1)
    all_uids = [i.sop_instance_uid for i in archive.instances]
    assert len(set(all_uids)) == len(all_uids) == 60 * 3 * 2


def test_uids_are_unique_past_ten_series_or_instances() -> None:
    # the entropy parts were joined bare: study 1's series 11 was study 11's series 1, and
    # 200 studies x 4 series x 50 instances held 2,280 duplicate SOPInstanceUIDs (which a
    # FakeArchive serving them silently dropped)
    for studies, series, instances in ((12, 12, 1), (11, 2, 11), (200, 4, 50)):
        synthetic = SyntheticArchive(
            seed=1, studies=studies, series_per_study=series, instances_per_series=instances
        )
        assert len({s.series_instance_uid for s in synthetic.series}) == studies * series
        assert len({i.sop_instance_uid for i in synthetic.instances}) == (
            studies * series * instances
        )
    # up to ten series and instances, the UIDs are as they always were
    synthetic = SyntheticArchive(seed=7, studies=12, series_per_study=10, instances_per_series=10)
    instance = synthetic.studies[11].series[9].instances[9]
    assert instance.sop_instance_uid == synthetic.uid("instance", 11, 9, 9)
    assert instance.series_instance_uid == synthetic.uid("series", 11, 9)


def test_counts_and_lookups(archive: SyntheticArchive) -> None:
    assert len(archive.studies) == 60
    assert len(archive.series) == 180
    assert len(archive.instances) == 360
    study = archive.studies[10]
    assert archive.study(study.study_instance_uid) is study
    series = study.series[2]
    assert archive.series_by_uid(series.series_instance_uid) is series
    instance = series.instances[0]
    assert archive.instance(instance.sop_instance_uid) is instance
    assert archive.study_of(instance) is study
    assert archive.series_of(instance) is series
    assert study.number_of_study_related_series == 3
    assert study.number_of_study_related_instances == 6
    assert series.number_of_series_related_instances == 2
    assert study.instances == tuple(i for s in study.series for i in s.instances)
    with pytest.raises(KeyError):
        archive.study("1.2.3")


def test_content_is_tricky(archive: SyntheticArchive) -> None:
    big = SyntheticArchive(seed=7, studies=400, series_per_study=3, instances_per_series=1)
    names = {s.patient_name for s in big.studies}
    assert {"Doe^John", "DOE^JOHNNY", "doe^jane", "Doe^John^Q^Dr^Jr"} <= names
    assert any("=" in n for n in names)
    assert any(not s.patient_birth_date for s in big.studies)
    empty_birth = sum(not s.patient_birth_date for s in big.studies)
    assert empty_birth < len(big.studies) * 0.2
    assert any("/" in s.patient_id and "-" in s.patient_id for s in big.studies)
    assert any(len(s.modalities_in_study) > 1 for s in big.studies)
    years = {int(s.study_date[:4]) for s in big.studies}
    assert min(years) >= 2005
    assert max(years) <= 2024
    assert len(years) > 10
    times = {len(s.study_time) for s in big.studies}
    assert {4, 6, 13} <= times
    assert len({s.patient_id for s in big.studies}) < len(big.studies)  # patients repeat
    assert set(names) <= set(PATIENT_NAMES)


def test_aggregates_in_json(archive: SyntheticArchive) -> None:
    study = next(s for s in archive.studies if len(s.modalities_in_study) > 1)
    js = archive.study_json(study)
    assert js["00080061"] == {"vr": "CS", "Value": sorted({se.modality for se in study.series})}
    assert js["00201206"]["Value"] == [3]
    assert js["00201208"]["Value"] == [6]
    assert "00080061" not in archive.study_json(study, aggregates=False)
    sjs = archive.series_json(study.series[0])
    assert sjs["00201209"] == {"vr": "IS", "Value": [2]}
    assert list(js) == sorted(js)
    assert list(sjs) == sorted(sjs)


def test_pn_json_groups() -> None:
    assert pn_json("Yamada^Tarou=山田^太郎=やまだ^たろう") == {
        "Alphabetic": "Yamada^Tarou",
        "Ideographic": "山田^太郎",
        "Phonetic": "やまだ^たろう",
    }
    assert pn_json("=王^小明") == {"Ideographic": "王^小明"}


def test_empty_values_have_no_value_key() -> None:
    big = SyntheticArchive(seed=7, studies=200, series_per_study=1, instances_per_series=1)
    study = next(s for s in big.studies if not s.patient_birth_date)
    assert big.study_json(study)["00100030"] == {"vr": "DA"}
    study = next(s for s in big.studies if not s.referring_physician_name)
    assert big.study_json(study)["00080090"] == {"vr": "PN"}


def test_json_equals_pydicom_to_json_dict() -> None:
    a = SyntheticArchive(seed=3, studies=12, series_per_study=2, instances_per_series=2)
    datasets = a.to_pydicom_datasets()
    assert len(datasets) == len(a.instances)
    for ds, instance in zip(datasets, a.instances, strict=True):
        from_pydicom = ds.to_json_dict()
        pixels = from_pydicom.pop("7FE00010")
        assert pixels["vr"] == "OW"
        assert from_pydicom == a.dataset_json(instance)


def test_pydicom_datasets_are_valid_part10() -> None:
    from pydicom import dcmread
    from pydicom.filebase import DicomBytesIO

    a = SyntheticArchive(seed=3, studies=2, series_per_study=1, instances_per_series=2)
    study = a.studies[1]
    datasets = list(a.study_datasets(study))
    assert [d.SOPInstanceUID for d in datasets] == [i.sop_instance_uid for i in study.instances]
    raw = encode_dicom(datasets[0])
    assert raw[128:132] == b"DICM"
    back = dcmread(DicomBytesIO(raw))
    assert back.PatientName == study.patient_name
    assert back.Rows == back.Columns == 8
    assert len(back.PixelData) == 128
    assert back.file_meta.MediaStorageSOPInstanceUID == datasets[0].SOPInstanceUID


def test_iter_pydicom_subset() -> None:
    a = SyntheticArchive(seed=3, studies=3, series_per_study=1, instances_per_series=1)
    got = [d.StudyInstanceUID for d in a.iter_pydicom(a.studies[1:2])]
    assert got == [a.studies[1].study_instance_uid]


def test_invalid_sizes() -> None:
    with pytest.raises(ValueError, match="series_per_study"):
        SyntheticArchive(seed=1, studies=1, series_per_study=0)
    assert SyntheticArchive(seed=1, studies=0).instances == ()


def test_generation_does_not_import_pydicom() -> None:
    code = (
        "import sys; from aqido.testing.synthetic import SyntheticArchive as S; "
        "a = S(seed=1, studies=3); list(a.iter_json()); print('pydicom' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == "False"
