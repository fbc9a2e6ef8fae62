"""Deterministic synthetic DICOM archives, for tests and benchmarks.

``SyntheticArchive(seed, studies, series_per_study, instances_per_series)``
builds lightweight records (``.studies``, ``.series``, ``.instances``) from
the seed, so a test can compute the expected answer to any query from the
records instead of copying it from a server.  The same arguments give the
same records, UIDs and bytes on every machine and Python version.

The content is deliberately tricky: person names with ``^`` components (all
five in one), mixed case variants of one name (``Doe^John``, ``DOE^JOHNNY``,
``doe^jane``), non-ASCII names with Ideographic and Phonetic groups, about 5 %
empty birth dates, PatientIDs containing ``/`` and ``-``, studies that mix
modalities, StudyDate between 2005 and 2024, StudyTime as ``HHMMSS``,
``HHMM`` and ``HHMMSS.ffffff``, and IS/DS values (single and multi-valued).

Three outputs, all describing the same data:

- DICOM JSON split by level (``study_json``, ``series_json``,
  ``instance_json``) or whole (``dataset_json``).  This is the fast path, no
  pydicom involved: 100,000 instances take a couple of seconds.  IS and DS are
  JSON numbers, as Orthanc sends them; empty attributes have no ``Value``.
- pydicom ``FileDataset`` objects with file meta and 8x8 pixels
  (``iter_pydicom``, ``study_datasets``, ``to_pydicom_datasets``), for
  uploading to a real server.  pydicom is imported on first use.
- Part-10 bytes: ``encode_dicom(ds)``.

UIDs come from :func:`generate_uid`, which computes exactly what
``pydicom.uid.generate_uid(prefix, entropy_srcs=[...])`` does (SHA-512 of the
joined sources, as a decimal integer, after the prefix, cut to 64 characters)
without importing pydicom.

This module is the archive and its views; the records, the value pools and the
generator are in :mod:`aqido.testing._synthetic_records` (re-exported here).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterable, Iterator
from typing import Any

from aqido.testing._synthetic_records import MODALITY_INFO as MODALITY_INFO
from aqido.testing._synthetic_records import PATIENT_NAMES as PATIENT_NAMES
from aqido.testing._synthetic_records import UID_PREFIX as UID_PREFIX
from aqido.testing._synthetic_records import RecordGenerator
from aqido.testing._synthetic_records import SyntheticInstance as SyntheticInstance
from aqido.testing._synthetic_records import SyntheticSeries as SyntheticSeries
from aqido.testing._synthetic_records import SyntheticStudy as SyntheticStudy
from aqido.testing._synthetic_records import generate_uid as generate_uid

# The values every synthetic dataset has, in both views.
_CHARSET = "ISO_IR 192"
_MANUFACTURER = "SyntheticCo"
_INSTITUTION = "Hôpital Général Test"


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector while building many small dicts (3-6x faster)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _number(text: str) -> int | float:
    """DS/IS text → the JSON number a server such as Orthanc sends."""
    value = float(text)
    return int(value) if value.is_integer() else value


def pn_json(name: str) -> dict[str, str]:
    """Return the DICOM JSON form of a PN string: ``{"Alphabetic": ..., "Ideographic": ...}``."""
    groups = name.split("=")
    out: dict[str, str] = {}
    for key, group in zip(("Alphabetic", "Ideographic", "Phonetic"), groups[:3], strict=False):
        if group:
            out[key] = group
    return out


def _elem(vr: str, value: str) -> dict[str, Any]:
    """A single-valued DICOM JSON element; an empty value has no ``Value`` (PS3.18 F.2.5)."""
    return {"vr": vr, "Value": [value]} if value else {"vr": vr}


def _pn(name: str) -> dict[str, Any]:
    return {"vr": "PN", "Value": [pn_json(name)]} if name else {"vr": "PN"}


# --- the archive ---------------------------------------------------------------------------


class SyntheticArchive:
    """A deterministic synthetic archive: records plus DICOM JSON and pydicom views of them.

    ``SyntheticArchive(seed=42, studies=10, series_per_study=3, instances_per_series=2)``
    generates the records eagerly (fast: no JSON, no pydicom).  About two
    studies per patient.  ``uid_prefix`` defaults to pydicom's root.

    Records: ``.studies``, ``.series`` (all, flat), ``.instances`` (all,
    flat); look-ups ``study(uid)``, ``series_by_uid(uid)``,
    ``instance(uid)``.  JSON: ``study_json``, ``series_json``,
    ``instance_json`` (one level's attributes each, with the aggregates
    ModalitiesInStudy / NumberOfStudyRelated* / NumberOfSeriesRelatedInstances
    included at study and series level), ``dataset_json`` (the whole instance,
    as a file would hold it: no aggregates) and ``iter_json``.
    """

    def __init__(
        self,
        seed: int = 42,
        studies: int = 10,
        series_per_study: int = 3,
        instances_per_series: int = 2,
        *,
        uid_prefix: str = UID_PREFIX,
    ) -> None:
        if studies < 0 or series_per_study < 1 or instances_per_series < 1:
            raise ValueError("studies >= 0, series_per_study >= 1, instances_per_series >= 1")
        self.seed = seed
        self.n_series_per_study = series_per_study
        self.n_instances_per_series = instances_per_series
        self.uid_prefix = uid_prefix
        self._generator = RecordGenerator(seed, series_per_study, instances_per_series, uid_prefix)
        with paused_gc():
            self.studies: tuple[SyntheticStudy, ...] = tuple(
                self._generator.build_study(k) for k in range(studies)
            )
        self.series: tuple[SyntheticSeries, ...] = tuple(
            se for st in self.studies for se in st.series
        )
        self.instances: tuple[SyntheticInstance, ...] = tuple(
            i for se in self.series for i in se.instances
        )
        self._study_by_uid = {s.study_instance_uid: s for s in self.studies}
        self._series_by_uid = {s.series_instance_uid: s for s in self.series}
        self._instance_by_uid: dict[str, SyntheticInstance] | None = None

    def __repr__(self) -> str:
        return (
            f"SyntheticArchive(seed={self.seed}, studies={len(self.studies)}, "
            f"series_per_study={self.n_series_per_study}, "
            f"instances_per_series={self.n_instances_per_series})"
        )

    # --- generation ---

    def uid(self, *parts: object) -> str:
        """The UID for ``parts`` (e.g. ``("study", 3)``): ``generate_uid`` of seed and parts."""
        return self._generator.uid(*parts)

    # --- look-ups ---

    def study(self, uid: str) -> SyntheticStudy:
        """The study with StudyInstanceUID ``uid`` (``KeyError`` if none)."""
        return self._study_by_uid[uid]

    def series_by_uid(self, uid: str) -> SyntheticSeries:
        """The series with SeriesInstanceUID ``uid`` (``KeyError`` if none)."""
        return self._series_by_uid[uid]

    def instance(self, uid: str) -> SyntheticInstance:
        """The instance with SOPInstanceUID ``uid`` (``KeyError`` if none)."""
        if self._instance_by_uid is None:
            self._instance_by_uid = {i.sop_instance_uid: i for i in self.instances}
        return self._instance_by_uid[uid]

    def study_of(self, item: SyntheticSeries | SyntheticInstance) -> SyntheticStudy:
        """The study a series or an instance belongs to."""
        return self.studies[item.study_index]

    def series_of(self, instance: SyntheticInstance) -> SyntheticSeries:
        """The series an instance belongs to."""
        return self.studies[instance.study_index].series[instance.series_index]

    # --- DICOM JSON (fast path) ---

    def study_json(self, study: SyntheticStudy, *, aggregates: bool = True) -> dict[str, Any]:
        """Patient- and study-level attributes of ``study`` as DICOM JSON (sorted keys).

        With ``aggregates`` (the default) it includes ModalitiesInStudy,
        NumberOfStudyRelatedSeries and NumberOfStudyRelatedInstances, as a
        server computes them.
        """
        out: dict[str, Any] = {
            "00080005": {"vr": "CS", "Value": [_CHARSET]},
            "00080020": _elem("DA", study.study_date),
            "00080030": _elem("TM", study.study_time),
            "00080050": _elem("SH", study.accession_number),
        }
        if aggregates:
            out["00080061"] = {"vr": "CS", "Value": list(study.modalities_in_study)}
        out["00080090"] = _pn(study.referring_physician_name)
        out["00081030"] = _elem("LO", study.study_description)
        out["00081032"] = {
            "vr": "SQ",
            "Value": [
                {
                    "00080100": {"vr": "SH", "Value": [study.procedure_code]},
                    "00080102": {"vr": "SH", "Value": ["LOCAL"]},
                    "00080104": {"vr": "LO", "Value": [study.study_description or "Unspecified"]},
                }
            ],
        }
        out["00100010"] = _pn(study.patient_name)
        out["00100020"] = _elem("LO", study.patient_id)
        out["00100030"] = _elem("DA", study.patient_birth_date)
        out["00100040"] = _elem("CS", study.patient_sex)
        out["00101010"] = _elem("AS", study.patient_age)
        out["00101030"] = {"vr": "DS", "Value": [_number(study.patient_weight)]}
        out["0020000D"] = {"vr": "UI", "Value": [study.study_instance_uid]}
        out["00200010"] = _elem("SH", study.study_id)
        if aggregates:
            out["00201206"] = {"vr": "IS", "Value": [study.number_of_study_related_series]}
            out["00201208"] = {"vr": "IS", "Value": [study.number_of_study_related_instances]}
        return out

    def series_json(self, series: SyntheticSeries, *, aggregates: bool = True) -> dict[str, Any]:
        """Series-level attributes of ``series`` as DICOM JSON (sorted keys).

        With ``aggregates`` it includes NumberOfSeriesRelatedInstances.
        """
        study = self.studies[series.study_index]
        out: dict[str, Any] = {
            "00080005": {"vr": "CS", "Value": [_CHARSET]},
            "00080021": _elem("DA", study.study_date),
            "00080031": _elem("TM", study.study_time),
            "00080060": {"vr": "CS", "Value": [series.modality]},
            "00080070": {"vr": "LO", "Value": [_MANUFACTURER]},
            "00080080": {"vr": "LO", "Value": [_INSTITUTION]},
            "0008103E": _elem("LO", series.series_description),
            "00180015": _elem("CS", series.body_part_examined),
            "0020000D": {"vr": "UI", "Value": [series.study_instance_uid]},
            "0020000E": {"vr": "UI", "Value": [series.series_instance_uid]},
            "00200011": {"vr": "IS", "Value": [series.series_number]},
        }
        if aggregates:
            out["00201209"] = {"vr": "IS", "Value": [len(series.instances)]}
        return out

    def instance_json(self, instance: SyntheticInstance) -> dict[str, Any]:
        """Instance-level attributes of ``instance`` as DICOM JSON (sorted keys)."""
        study = self.studies[instance.study_index]
        series = study.series[instance.series_index]
        return self._instance_json(study, series, instance)

    def _instance_json(
        self, study: SyntheticStudy, series: SyntheticSeries, instance: SyntheticInstance
    ) -> dict[str, Any]:
        modality = series.modality
        thickness = series.slice_thickness
        spacing = _number(series.pixel_spacing)
        image_type = ["ORIGINAL", "PRIMARY"]
        if modality in ("CT", "MR", "PT"):
            image_type.append("AXIAL")
        return {
            "00080005": {"vr": "CS", "Value": [_CHARSET]},
            "00080008": {"vr": "CS", "Value": image_type},
            "00080016": {"vr": "UI", "Value": [instance.sop_class_uid]},
            "00080018": {"vr": "UI", "Value": [instance.sop_instance_uid]},
            "00080023": _elem("DA", study.study_date),
            "00080033": _elem("TM", study.study_time),
            "00180050": {"vr": "DS", "Value": [_number(thickness)]},
            "0020000D": {"vr": "UI", "Value": [instance.study_instance_uid]},
            "0020000E": {"vr": "UI", "Value": [instance.series_instance_uid]},
            "00200013": {"vr": "IS", "Value": [instance.instance_number]},
            "00200032": {
                "vr": "DS",
                "Value": [-125, -125, _number(f"{instance.index * float(thickness):.3f}")],
            },
            "00200037": {"vr": "DS", "Value": [1, 0, 0, 0, 1, 0]},
            "00280002": {"vr": "US", "Value": [1]},
            "00280004": {"vr": "CS", "Value": ["MONOCHROME2"]},
            "00280010": {"vr": "US", "Value": [8]},
            "00280011": {"vr": "US", "Value": [8]},
            "00280030": {"vr": "DS", "Value": [spacing, spacing]},
            "00280100": {"vr": "US", "Value": [16]},
            "00280101": {"vr": "US", "Value": [12]},
            "00280102": {"vr": "US", "Value": [11]},
            "00280103": {"vr": "US", "Value": [0]},
            "00281050": {"vr": "DS", "Value": [40]},
            "00281051": {"vr": "DS", "Value": [400]},
            "00281052": {"vr": "DS", "Value": [-1024 if modality == "CT" else 0]},
            "00281053": {"vr": "DS", "Value": [1]},
        }

    def dataset_json(self, instance: SyntheticInstance) -> dict[str, Any]:
        """The whole instance (all levels, no aggregates, no pixels) as DICOM JSON, sorted keys."""
        study = self.studies[instance.study_index]
        series = study.series[instance.series_index]
        merged = self.study_json(study, aggregates=False)
        merged.update(self.series_json(series, aggregates=False))
        merged.update(self._instance_json(study, series, instance))
        return dict(sorted(merged.items()))

    def iter_json(self) -> Iterator[dict[str, Any]]:
        """Every instance as :meth:`dataset_json`, study by study, series by series."""
        for instance in self.instances:
            yield self.dataset_json(instance)

    # --- pydicom (slow path, for real servers) ---

    def study_datasets(self, study: SyntheticStudy) -> Iterator[Any]:
        """Yield pydicom ``FileDataset`` objects (file meta, 8x8 pixels) for one study."""
        for series in study.series:
            for instance in series.instances:
                yield self._pydicom(study, series, instance)

    def iter_pydicom(self, studies: Iterable[SyntheticStudy] | None = None) -> Iterator[Any]:
        """Yield pydicom ``FileDataset`` objects for ``studies`` (default: all), in order."""
        for study in self.studies if studies is None else studies:
            yield from self.study_datasets(study)

    def to_pydicom_datasets(self) -> list[Any]:
        """Every instance as a pydicom ``FileDataset`` (a list; see :meth:`iter_pydicom`)."""
        return list(self.iter_pydicom())

    def _pydicom(
        self, study: SyntheticStudy, series: SyntheticSeries, instance: SyntheticInstance
    ) -> Any:
        from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
        from pydicom.sequence import Sequence as PydicomSequence
        from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

        modality = series.modality
        thickness = series.slice_thickness
        spacing = series.pixel_spacing
        meta: Any = FileMetaDataset()
        meta.MediaStorageSOPClassUID = instance.sop_class_uid
        meta.MediaStorageSOPInstanceUID = instance.sop_instance_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds = FileDataset("", Dataset(), file_meta=meta, preamble=b"\0" * 128)
        ds.SpecificCharacterSet = _CHARSET
        ds.ImageType = (
            ["ORIGINAL", "PRIMARY", "AXIAL"]
            if modality in ("CT", "MR", "PT")
            else ["ORIGINAL", "PRIMARY"]
        )
        ds.SOPClassUID = instance.sop_class_uid
        ds.SOPInstanceUID = instance.sop_instance_uid
        ds.StudyDate = study.study_date
        ds.SeriesDate = study.study_date
        ds.ContentDate = study.study_date
        ds.StudyTime = study.study_time
        ds.SeriesTime = study.study_time
        ds.ContentTime = study.study_time
        ds.AccessionNumber = study.accession_number
        ds.Modality = modality
        ds.Manufacturer = _MANUFACTURER
        ds.InstitutionName = _INSTITUTION
        ds.ReferringPhysicianName = study.referring_physician_name
        ds.StudyDescription = study.study_description
        ds.SeriesDescription = series.series_description
        ds.BodyPartExamined = series.body_part_examined
        code = Dataset()
        code.CodeValue = study.procedure_code
        code.CodingSchemeDesignator = "LOCAL"
        code.CodeMeaning = study.study_description or "Unspecified"
        ds.ProcedureCodeSequence = PydicomSequence([code])
        ds.PatientName = study.patient_name
        ds.PatientID = study.patient_id
        ds.PatientBirthDate = study.patient_birth_date
        ds.PatientSex = study.patient_sex
        ds.PatientAge = study.patient_age
        ds.PatientWeight = study.patient_weight
        ds.StudyInstanceUID = study.study_instance_uid
        ds.SeriesInstanceUID = series.series_instance_uid
        ds.StudyID = study.study_id
        ds.SeriesNumber = series.series_number
        ds.InstanceNumber = instance.instance_number
        ds.SliceThickness = thickness
        ds.ImagePositionPatient = ["-125", "-125", f"{instance.index * float(thickness):.3f}"]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.PixelSpacing = [spacing, spacing]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = 8
        ds.Columns = 8
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        ds.WindowCenter = "40"
        ds.WindowWidth = "400"
        ds.RescaleIntercept = "-1024" if modality == "CT" else "0"
        ds.RescaleSlope = "1"
        base = (study.index * 31 + series.index * 7 + instance.index) % 4000
        pixels = b"".join(((base + k * 17) % 4096).to_bytes(2, "little") for k in range(64))
        ds.add_new(0x7FE00010, "OW", pixels)
        return ds


def encode_dicom(ds: Any) -> bytes:
    """Encode a pydicom dataset with file meta (e.g. from ``iter_pydicom``) as Part-10 bytes."""
    import io

    buf = io.BytesIO()
    try:
        ds.save_as(buf, enforce_file_format=True)
    except TypeError:  # pydicom < 3
        ds.save_as(buf, write_like_original=False)
    return buf.getvalue()
