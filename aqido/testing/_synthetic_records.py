"""The records of a :class:`~aqido.testing.synthetic.SyntheticArchive` and their generator.

:class:`RecordGenerator` builds :class:`SyntheticStudy` records (with their
:class:`SyntheticSeries` and :class:`SyntheticInstance`) from a seed, drawing
from the value pools below; the same arguments give the same records and UIDs
on every machine and Python version (:func:`generate_uid` is pydicom's algorithm,
without pydicom).  The DICOM JSON and pydicom views of the records, and the
public names, are in :mod:`aqido.testing.synthetic`.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import random
import re
import secrets
import uuid
from collections.abc import Iterable

import attrs

#: pydicom's UID root, the default prefix of :func:`generate_uid`.
UID_PREFIX = "1.2.826.0.1.3680043.8.498."

_VALID_PREFIX = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*\.$")


def generate_uid(prefix: str | None = UID_PREFIX, entropy_srcs: Iterable[str] | None = None) -> str:
    """Return a UID, the same one ``pydicom.uid.generate_uid`` gives for the same arguments.

    With ``entropy_srcs`` the UID is deterministic: the SHA-512 of the joined
    sources, as a decimal integer, appended to ``prefix`` and cut to 64
    characters.  Without them it is random.  ``prefix=None`` gives a random
    ``2.25.`` UUID-derived UID (as pydicom does, ignoring ``entropy_srcs``).
    Raises ``ValueError`` for a prefix longer than 54 characters or not ending in ``.``.
    """
    if prefix is None:
        return f"2.25.{uuid.uuid4().int}"
    if len(prefix) > 54:
        raise ValueError("The 'prefix' should be no more than 54 characters long")
    if not _VALID_PREFIX.match(prefix):
        raise ValueError(
            "The 'prefix' is not valid for use with a UID, see Part 5, Section 9.1 of the "
            "DICOM Standard"
        )
    if entropy_srcs is None:
        return f"{prefix}{secrets.randbelow(10 ** (64 - len(prefix)))}"[:64]
    digest = hashlib.sha512("".join(entropy_srcs).encode("utf-8")).hexdigest()
    return f"{prefix}{int(digest, 16)}"[:64]


# --- value pools: components, non-ASCII, case variants -----------------------------------

#: Patient names used, in order (patient number modulo the length picks one).
PATIENT_NAMES: tuple[str, ...] = (
    "Doe^John",
    "Doe^Jane",
    "Doe^John^Q^Dr^Jr",  # all five components
    "DOE^JOHNNY",  # upper-case variant
    "doe^jane",  # lower-case variant
    "Doe-Smith^Mary",
    "Smith^Anna^Maria",
    "Smith",  # family name only
    "van der Berg^Pieter",  # spaces inside a component
    "O'Brien^Seán",
    "Müller^Jürgen",
    "García^José Luis",
    "Øvergård^Åse",
    "Łukasiewicz^Zbigniew",
    "Ivanov^Ivan=Иванов^Иван",  # alphabetic + ideographic group
    "Yamada^Tarou=山田^太郎=やまだ^たろう",  # all three component groups
    "Wang^Xiaoming=王^小明",
    "Nguyễn^Văn An",
    "Brown^Charlie^^Mr",  # empty middle component
    "Lee^Ji-hoon",
)
_SEXES = ("M", "F", "O", "")

#: modality → (SOP Class UID, body parts, series descriptions)
MODALITY_INFO: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "CT": ("1.2.840.10008.5.1.4.1.1.2", ("CHEST", "ABDOMEN", "HEAD"), ("Axial 5mm", "Coronal MPR", "Scout", "Thorax KM")),  # noqa: E501
    "MR": ("1.2.840.10008.5.1.4.1.1.4", ("BRAIN", "KNEE", "SPINE"), ("T1 SE sag", "T2 FSE ax", "FLAIR", "DWI b1000")),  # noqa: E501
    "US": ("1.2.840.10008.5.1.4.1.1.6.1", ("ABDOMEN", "THYROID"), ("Abdomen survey", "Doppler")),
    "CR": ("1.2.840.10008.5.1.4.1.1.1", ("CHEST", "HAND"), ("PA", "LAT")),
    "DX": ("1.2.840.10008.5.1.4.1.1.1.1", ("CHEST", "PELVIS"), ("AP", "Pelvis AP")),
    "MG": ("1.2.840.10008.5.1.4.1.1.1.2", ("BREAST",), ("L CC", "R MLO")),
    "PT": ("1.2.840.10008.5.1.4.1.1.128", ("WHOLEBODY",), ("PET AC", "PET NAC")),
    "NM": ("1.2.840.10008.5.1.4.1.1.20", ("THYROID", "BONE"), ("Bone scan", "Static")),
    "XA": ("1.2.840.10008.5.1.4.1.1.12.1", ("HEART",), ("LCA", "RCA")),
    "OT": ("1.2.840.10008.5.1.4.1.1.7", ("UNKNOWN",), ("Secondary capture", "Screenshot")),
}  # fmt: skip
_MODALITIES = tuple(MODALITY_INFO)
_MODALITY_CUM_WEIGHTS = (30, 55, 65, 75, 83, 88, 92, 95, 98, 100)
_STUDY_DESCRIPTIONS = (
    "CT Thorax",
    "MRI Brain w/o contrast",
    "Abdomen US",
    "Chest X-ray",
    "Knee MRI (left)",
    "Thorax – Übersicht",
    "Crâne sans injection",
    "PET-CT whole body",
    "Mammography screening",
    "Follow-up 3 months",
    "",
    "Bone scan",
    "Coronary angiography",
    "頭部CT",
)
_REFERRING = ("House^Gregory^^Dr", "Grey^Meredith", "", "Schäfer^Ulrike^^Dr. med.")
_THICKNESS = ("0.625", "1.25", "2.5", "5", "10")
_SPACING = ("0.390625", "0.5", "0.7421875", "1")
_DAY0_STUDY = _dt.date(2005, 1, 1).toordinal()
_DAYS_STUDY = _dt.date(2024, 12, 31).toordinal() - _DAY0_STUDY
_DAY0_BIRTH = _dt.date(1930, 1, 1).toordinal()
_DAYS_BIRTH = _dt.date(2015, 12, 31).toordinal() - _DAY0_BIRTH


def _date(rng: random.Random, day0: int, days: int) -> str:
    return _dt.date.fromordinal(day0 + rng.randint(0, days)).strftime("%Y%m%d")


def _time(rng: random.Random) -> str:
    t = f"{rng.randint(0, 23):02d}{rng.randint(0, 59):02d}{rng.randint(0, 59):02d}"
    r = rng.random()
    if r < 0.2:
        t += f".{rng.randint(0, 999999):06d}"  # fractional seconds
    elif r < 0.3:
        t = t[:4]  # HHMM only (valid TM)
    return t


# --- records -------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class SyntheticInstance:
    """One synthetic instance: its UIDs and the instance-level values that vary."""

    study_index: int
    series_index: int
    index: int
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    instance_number: int


@attrs.frozen(kw_only=True)
class SyntheticSeries:
    """One synthetic series: series-level values and its instances."""

    study_index: int
    index: int
    study_instance_uid: str
    series_instance_uid: str
    modality: str
    sop_class_uid: str
    series_number: int
    series_description: str
    body_part_examined: str
    slice_thickness: str
    pixel_spacing: str
    instances: tuple[SyntheticInstance, ...]

    @property
    def number_of_series_related_instances(self) -> int:
        """NumberOfSeriesRelatedInstances (0020,1209)."""
        return len(self.instances)


@attrs.frozen(kw_only=True)
class SyntheticStudy:
    """One synthetic study: patient and study values, aggregates and its series."""

    index: int
    study_instance_uid: str
    patient_name: str
    patient_id: str
    patient_birth_date: str
    patient_sex: str
    patient_age: str
    patient_weight: str
    study_date: str
    study_time: str
    accession_number: str
    study_description: str
    referring_physician_name: str
    study_id: str
    procedure_code: str
    series: tuple[SyntheticSeries, ...]

    @property
    def modalities_in_study(self) -> tuple[str, ...]:
        """ModalitiesInStudy (0008,0061): the distinct series modalities, sorted."""
        return tuple(sorted({s.modality for s in self.series}))

    @property
    def number_of_study_related_series(self) -> int:
        """NumberOfStudyRelatedSeries (0020,1206)."""
        return len(self.series)

    @property
    def number_of_study_related_instances(self) -> int:
        """NumberOfStudyRelatedInstances (0020,1208)."""
        return sum(len(s.instances) for s in self.series)

    @property
    def instances(self) -> tuple[SyntheticInstance, ...]:
        """Every instance of the study, series by series."""
        return tuple(i for s in self.series for i in s.instances)


# --- the generator -------------------------------------------------------------------------


def _index_parts(first: int, *rest: int) -> list[str]:
    """The UID entropy parts of (study, series[, instance]) indexes, unambiguous once joined.

    :func:`generate_uid` joins its parts without a separator, so study 1's series 11
    and study 11's series 1 would share one UID.  While every index after the first
    is one digit, the parts are the bare numbers (the UIDs of every archive of up to
    ten series and ten instances stay as they were); past that they get a ``/``.
    """
    if all(index <= 9 for index in rest):
        return [str(first), *map(str, rest)]
    return [str(first), *(f"/{index}" for index in rest)]


class RecordGenerator:
    """Builds the records of one synthetic archive, study by study, from the seed."""

    def __init__(
        self, seed: int, series_per_study: int, instances_per_series: int, uid_prefix: str
    ) -> None:
        self.seed = seed
        self.n_series_per_study = series_per_study
        self.n_instances_per_series = instances_per_series
        self.uid_prefix = uid_prefix
        self._patients: dict[int, tuple[str, str, str, str]] = {}

    def uid(self, *parts: object) -> str:
        """The UID for ``parts`` (e.g. ``("study", 3)``): ``generate_uid`` of seed and parts."""
        return generate_uid(self.uid_prefix, [f"seed={self.seed}", *map(str, parts)])

    def _patient(self, study_index: int) -> tuple[str, str, str, str]:
        """(name, id, birth date, sex): about two studies per patient."""
        pnum = random.Random(f"{self.seed}:pmap:{study_index}").randint(0, study_index // 2)
        found = self._patients.get(pnum)
        if found is None:
            prng = random.Random(f"{self.seed}:patient:{pnum}")
            birth = "" if prng.random() < 0.05 else _date(prng, _DAY0_BIRTH, _DAYS_BIRTH)
            found = (
                PATIENT_NAMES[pnum % len(PATIENT_NAMES)],
                f"PID{pnum:06d}" if pnum % 17 else f"PID-{pnum:06d}/X",
                birth,
                _SEXES[pnum % len(_SEXES)],
            )
            self._patients[pnum] = found
        return found

    def build_study(self, k: int) -> SyntheticStudy:
        """The ``k``-th study (0-based) with its series and instances."""
        seed = self.seed
        rng = random.Random(f"{seed}:study:{k}")
        name, pid, birth, sex = self._patient(k)
        study_uid = self.uid("study", k)
        study_date = _date(rng, _DAY0_STUDY, _DAYS_STUDY)
        study_time = _time(rng)
        accession = "" if rng.random() < 0.05 else f"ACC{seed % 1000:03d}{k:07d}"
        description = rng.choice(_STUDY_DESCRIPTIONS)
        referring = rng.choice(_REFERRING)
        weight = f"{rng.uniform(3, 120):.1f}"
        primary = rng.choices(_MODALITIES, cum_weights=_MODALITY_CUM_WEIGHTS)[0]
        series: list[SyntheticSeries] = []
        prefix = self.uid_prefix
        for s in range(self.n_series_per_study):
            if s == 0 or rng.random() < 0.6:
                modality = primary
            else:
                modality = rng.choices(_MODALITIES, cum_weights=_MODALITY_CUM_WEIGHTS)[0]
            sop_class, parts, descs = MODALITY_INFO[modality]
            series_uid = self.uid("series", *_index_parts(k, s))
            instances = tuple(
                SyntheticInstance(
                    study_index=k,
                    series_index=s,
                    index=i,
                    study_instance_uid=study_uid,
                    series_instance_uid=series_uid,
                    sop_instance_uid=generate_uid(
                        prefix, [f"seed={seed}", "instance", *_index_parts(k, s, i)]
                    ),
                    sop_class_uid=sop_class,
                    instance_number=i + 1,
                )
                for i in range(self.n_instances_per_series)
            )
            series.append(
                SyntheticSeries(
                    study_index=k,
                    index=s,
                    study_instance_uid=study_uid,
                    series_instance_uid=series_uid,
                    modality=modality,
                    sop_class_uid=sop_class,
                    series_number=s + 1,
                    series_description=rng.choice(descs),
                    body_part_examined=rng.choice(parts),
                    slice_thickness=rng.choice(_THICKNESS),
                    pixel_spacing=rng.choice(_SPACING),
                    instances=instances,
                )
            )
        age = f"{max(0, int(study_date[:4]) - int(birth[:4])):03d}Y" if birth else ""
        return SyntheticStudy(
            index=k,
            study_instance_uid=study_uid,
            patient_name=name,
            patient_id=pid,
            patient_birth_date=birth,
            patient_sex=sex,
            patient_age=age,
            patient_weight=weight,
            study_date=study_date,
            study_time=study_time,
            accession_number=accession,
            study_description=description,
            referring_physician_name=referring,
            study_id=f"S{k}",
            procedure_code=f"P{k % 50:03d}",
            series=tuple(series),
        )
