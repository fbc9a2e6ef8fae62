"""The data-dictionary wrapper agrees with pydicom and stays cheap to import."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydicom import datadict

from aqido import dictionary


@pytest.mark.parametrize(
    "keyword",
    ["PatientName", "StudyInstanceUID", "ModalitiesInStudy", "RetrieveURL", "PixelData"],
)
def test_matches_pydicom(keyword: str) -> None:
    tag = datadict.tag_for_keyword(keyword)
    assert dictionary.tag_for_keyword(keyword) == tag
    assert dictionary.keyword_for(tag) == keyword
    assert dictionary.vr_for(tag) == datadict.dictionary_VR(tag)


def test_repeater_tags_resolve() -> None:
    # (60xx,3000) OverlayData is a repeating-group element.
    assert dictionary.keyword_for(0x60023000) == "OverlayData"
    assert dictionary.vr_for(0x60023000) == datadict.dictionary_VR(0x60023000)


@pytest.mark.parametrize("tag", [0x60451302, 0x60013000, 0x501F3000, 0x60FF0010, 0x00290010])
def test_private_tags_are_not_repeaters(tag: int) -> None:
    # An odd group is private even where an even one would be a repeating group
    # ((6045,1302) is not (60xx,1302) ROIMean): no keyword, no VR, as pydicom says.
    assert dictionary.is_private(tag)
    assert dictionary.keyword_for(tag) == datadict.keyword_for_tag(tag) == ""
    assert dictionary.vr_for(tag) is None
    with pytest.raises(KeyError):
        datadict.dictionary_VR(tag)
    assert dictionary.resolve(dictionary.tag_key(tag)) == (tag, "")


def test_unknown_and_private() -> None:
    assert dictionary.tag_for_keyword("PatientNmae") is None
    assert dictionary.keyword_for(0x00091001) == ""
    assert dictionary.vr_for(0x00091001) is None
    assert dictionary.is_private(0x00091001)
    assert not dictionary.is_private(0x00100010)


def test_resolve() -> None:
    assert dictionary.resolve("PatientName") == (0x00100010, "PatientName")
    assert dictionary.resolve("0020000d") == (0x0020000D, "StudyInstanceUID")
    assert dictionary.resolve(0x0020000D) == (0x0020000D, "StudyInstanceUID")
    assert dictionary.resolve("00091001") == (0x00091001, "")
    for bad in ("PatientNmae", "0010001", "0010001G", "", -1, 1 << 32):
        with pytest.raises(ValueError, match="DICOM"):
            dictionary.resolve(bad)


def test_tag_keys() -> None:
    assert dictionary.tag_key(0x0020000D) == "0020000D"
    assert dictionary.parse_tag_key("0020000d") == 0x0020000D
    with pytest.raises(ValueError, match="8 hex digits"):
        dictionary.parse_tag_key("PatientName")


def test_name_for() -> None:
    assert dictionary.name_for(0x00100010) == "PatientName"
    assert dictionary.name_for(0x00091001) == "00091001"  # private
    assert dictionary.keyword_for(0x60023000) == "OverlayData"  # a repeating group
    assert dictionary.name_for(0x60023000) == "60023000"


def test_is_tag_key() -> None:
    assert dictionary.is_tag_key("0020000D")
    assert dictionary.is_tag_key("0020000d")
    for not_a_key in ("PatientName", "0020000", "0020000D0", " 0020000D", "0020000G", 0x0020000D):
        assert not dictionary.is_tag_key(not_a_key)


def test_lookup_does_not_import_pydicom() -> None:
    code = (
        "import sys; from aqido import dictionary; "
        "assert dictionary.keyword_for(0x00100010) == 'PatientName'; "
        "print('pydicom' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
