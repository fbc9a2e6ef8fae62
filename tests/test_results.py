"""Typed results: structuring DICOM JSON into Study/Series/Instance, errors, round trips, trees."""

from __future__ import annotations

import datetime
import gc
import json
from typing import Any

import attrs
import pydicom
import pytest

from aqido import InvalidResponseError, QueryLevel
from aqido.results import (
    Dataset,
    Instance,
    Series,
    Study,
    build_tree,
    decode_json,
    make_converter,
    parse_results,
    structure,
)
from aqido.values import BulkDataURI, InlineBinary, InvalidValue, PersonName, Tag

# An Orthanc study item, as the DICOMweb plugin sends it (FINDINGS.md "JSON shapes").
ORTHANC_STUDY: dict[str, Any] = {
    "00080005": {"Value": ["ISO_IR 192"], "vr": "CS"},
    "00080020": {"Value": ["20071106"], "vr": "DA"},
    "00080030": {"Value": ["194920.212513"], "vr": "TM"},
    "00080050": {"Value": ["ACC0001"], "vr": "SH"},
    "00080061": {"Value": ["CT", "MR"], "vr": "CS"},
    "00080090": {"vr": "PN"},
    "00081030": {"Value": ["CT HEAD"], "vr": "LO"},
    "00081190": {"Value": ["http://127.0.0.1:8042/dicom-web/studies/1.2.3"], "vr": "UR"},
    "00100010": {
        "Value": [
            {"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎", "Phonetic": "やまだ^たろう"}
        ],
        "vr": "PN",
    },
    "00100020": {"Value": ["PID000001"], "vr": "LO"},
    "00100030": {"vr": "DA"},
    "00100040": {"Value": ["M"], "vr": "CS"},
    "0020000D": {"Value": ["1.2.3"], "vr": "UI"},
    "00200010": {"Value": ["STUDY1"], "vr": "SH"},
    "00201206": {"Value": [3], "vr": "IS"},
    "00201208": {"Value": [6], "vr": "IS"},
}


def study(**elements: Any) -> Study:
    item = {**ORTHANC_STUDY, **elements}
    [result] = structure([item], QueryLevel.STUDY)
    assert isinstance(result, Study)
    return result


def test_study_typed_fields() -> None:
    s = study()
    assert s.StudyInstanceUID == "1.2.3"
    assert s.StudyDate == datetime.date(2007, 11, 6)
    assert s.StudyTime == datetime.time(19, 49, 20, 212513)
    assert s.AccessionNumber == "ACC0001"
    assert s.ModalitiesInStudy == ("CT", "MR")
    assert s.ReferringPhysicianName is None
    assert s.PatientName == PersonName("Yamada^Tarou", "山田^太郎", "やまだ^たろう")
    assert s.PatientID == "PID000001"
    assert s.PatientBirthDate is None
    assert s.PatientSex == "M"
    assert s.StudyID == "STUDY1"
    assert s.StudyDescription == "CT HEAD"
    assert s.NumberOfStudyRelatedSeries == 3
    assert s.NumberOfStudyRelatedInstances == 6
    assert s.SpecificCharacterSet == ("ISO_IR 192",)
    assert s.RetrieveURL == "http://127.0.0.1:8042/dicom-web/studies/1.2.3"
    assert s.InstanceAvailability is None
    assert s.series == ()


def test_missing_attributes_are_none_or_empty_tuple() -> None:
    [s] = structure([{}], "STUDY")
    assert isinstance(s, Study)
    for field in attrs.fields(Study):
        if field.name == "_raw":
            continue
        value = getattr(s, field.name)
        assert value in (None, ()), field.name
    assert s.ModalitiesInStudy == ()
    assert len(s) == 0
    assert s.to_json() == {}


def test_models_are_real_attrs_classes() -> None:
    names = {f.name for f in attrs.fields(Study)}
    assert {"StudyInstanceUID", "StudyDescription", "series", "PatientName"} <= names
    assert {"SeriesInstanceUID", "StudyInstanceUID", "instances"} <= {
        f.name for f in attrs.fields(Series)
    }
    assert {"SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID", "Rows"} <= {
        f.name for f in attrs.fields(Instance)
    }
    s = study()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        s.PatientID = "X"  # type: ignore[misc]


def test_mapping_access_by_keyword_tag_key_and_int() -> None:
    s = study(**{"00091001": {"vr": "LO", "Value": ["private"]}})
    assert s["PatientID"] == s["00100020"] == s[0x00100020] == "PID000001"
    assert s["00091001"] == s[0x00091001] == "private"
    assert "PatientName" in s
    assert "00100010" in s
    assert 0x00100010 in s
    assert "SeriesInstanceUID" not in s
    assert "NotAKeyword" not in s
    assert s.get("SeriesInstanceUID") is None
    assert s.get("Modality", "x") == "x"
    with pytest.raises(KeyError):
        s["SeriesInstanceUID"]
    with pytest.raises(KeyError):
        s["NotAKeyword"]
    names = list(s)
    assert names[0] == "SpecificCharacterSet"
    assert "PatientName" in names
    assert names[-1] == "00091001"
    assert len(s) == len(ORTHANC_STUDY) + 1
    assert dict(s.items())["ModalitiesInStudy"] == ("CT", "MR")


def test_element_gives_the_raw_json() -> None:
    s = study(**{"00201206": {"vr": "IS", "Value": ["N/A"]}})
    element = s.element("NumberOfStudyRelatedSeries")
    assert element.key == "00201206"
    assert element.tag == Tag(0x00201206)
    assert element.keyword == "NumberOfStudyRelatedSeries"
    assert element.vr == "IS"
    assert element.values == ("N/A",)
    assert element.bulk_data_uri is None
    assert element.inline_binary is None


def test_evolve_attaches_children_and_keeps_every_attribute() -> None:
    s = study(**{"00091001": {"vr": "LO", "Value": ["private"]}})
    [series] = structure(
        [{"0020000E": {"vr": "UI", "Value": ["1.2.3.4"]}, "0020000D": ORTHANC_STUDY["0020000D"]}],
        QueryLevel.SERIES,
    )
    assert isinstance(series, Series)
    with_children = attrs.evolve(s, series=[series])
    assert with_children.series == (series,)
    assert with_children["00091001"] == "private"
    assert with_children.to_json() == s.to_json()
    assert with_children != s
    assert attrs.evolve(with_children, series=()) == s


def test_evolve_or_init_with_a_new_value_updates_the_json() -> None:
    s = study()
    changed = attrs.evolve(s, PatientID="NEW", StudyDate=datetime.date(2024, 2, 29))
    assert changed["PatientID"] == "NEW"
    assert changed.to_json()["00100020"] == {"vr": "LO", "Value": ["NEW"]}
    assert changed.to_json()["00080020"] == {"vr": "DA", "Value": ["20240229"]}
    assert s.PatientID == "PID000001"
    built = Study(
        StudyInstanceUID="1.2",
        ModalitiesInStudy=("CT",),
        PatientName=PersonName("Doe^John"),
        StudyTime=datetime.time(10, 30),
    )
    assert built.to_json() == {
        "00080030": {"vr": "TM", "Value": ["103000"]},
        "00080061": {"vr": "CS", "Value": ["CT"]},
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^John"}]},
        "0020000D": {"vr": "UI", "Value": ["1.2"]},
    }
    assert structure([built.to_json()], "STUDY") == [built]
    cleared = attrs.evolve(s, PatientID=None)
    assert "PatientID" not in cleared


def test_equality_and_hash() -> None:
    a, b = study(), study()
    assert a == b
    assert hash(a) == hash(b)
    assert a != study(**{"00081030": {"vr": "LO", "Value": ["other"]}})
    assert len({a, b}) == 1


def test_equal_results_hash_equal() -> None:
    # Found by review: __eq__ compared the stored values with == (72 == 72.0, 1 == True,
    # 0.0 == -0.0) and __hash__ their JSON text, so equal objects hashed differently.
    # Equality is now that text too: values that differ in the JSON received differ.
    def series(*weights: Any) -> Series:
        sq = [{"00101030": {"vr": "DS", "Value": [w]}} for w in weights]
        [result] = structure(
            [{**_uid("s", "1", "1.1"), "00400275": {"vr": "SQ", "Value": sq}}], "SERIES"
        )
        assert isinstance(result, Series)
        return result

    for first, second in ((72, 72.0), (1, True), (0.0, -0.0)):
        elem_a = {"00091001": {"vr": "DS", "Value": [first]}}
        elem_b = {"00091001": {"vr": "DS", "Value": [second]}}
        pairs = [
            (Dataset(elem_a), Dataset(elem_b)),
            (series(first), series(second)),
            (study(**elem_a), study(**elem_b)),
            (Instance(raw=elem_a), Instance(raw=elem_b)),
        ]
        for a, b in pairs:
            assert a != b
            assert len({a, b}) == 2
            again = type(a).from_json(a.to_json())
            assert a == again
            assert hash(a) == hash(again)
    # equal JSON, keys in another order or case: equal, same hash
    a = Dataset({"00091001": {"vr": "DS", "Value": [72]}, "00100020": {"Value": ["P"], "vr": "LO"}})
    b = Dataset({"00100020": {"vr": "LO", "Value": ["P"]}, "00091001": {"Value": [72], "vr": "DS"}})
    assert a == b
    assert hash(a) == hash(b)
    assert series(72, 73) == series(72, 73)
    assert hash(series(72, 73)) == hash(series(72, 73))
    assert series(72, 73) != series(73, 72)
    item = {"0009100A": {"vr": "SQ", "Value": [{"0009100B": {"vr": "IS", "Value": [1]}}]}}
    lower = {"0009100a": {"vr": "SQ", "Value": [{"0009100b": {"vr": "IS", "Value": [1]}}]}}
    s1, s2 = study(**item), study(**lower)
    assert s1 == s2
    assert hash(s1) == hash(s2)
    assert s1.with_series([series(1)]) != s1
    assert s1.with_series([series(1)]) == s2.with_series([series(1)])
    assert hash(s1.with_series([series(1)])) == hash(s2.with_series([series(1)]))


@pytest.mark.parametrize("loads", ["default", "stdlib"])
def test_a_json_integer_beyond_64_bits_is_invalid_not_rounded(loads: str) -> None:
    # Found by review: 99999999999999999999 is decoded as the float 1e20 (orjson, and
    # decode_json without it), which InstanceNumber read as 100000000000000000000.
    from aqido._json import strict_loads

    body = (
        b'[{"00080018": {"vr": "UI", "Value": ["1"]},'
        b' "00200013": {"vr": "IS", "Value": [99999999999999999999]}}]'
    )
    items = decode_json(body) if loads == "default" else strict_loads(body)
    [instance] = structure(items, "INSTANCE")
    assert instance.InstanceNumber is None
    assert instance["InstanceNumber"] is None
    [bad] = instance.invalid
    assert bad.keyword == "InstanceNumber"
    assert isinstance(bad.raw, float)


@pytest.mark.parametrize(
    ("key", "vr", "number", "valid"),
    [
        ("00280010", "US", -1, False),  # Rows
        ("00280010", "US", 70000, False),
        ("00280010", "US", 40000, True),  # beyond the typed hook's quick range, still valid
        ("00280010", "US", 65535, True),
        ("00200013", "IS", 2**31, False),  # InstanceNumber
        ("00200013", "IS", -(2**31), True),
        ("00200013", "IS", -1, True),
        ("00200013", "IS", 2**31 - 1, True),
    ],
)
def test_typed_integer_fields_check_their_vrs_range(
    key: str, vr: str, number: int, valid: bool
) -> None:
    # Found by review: integers were never checked against their VR's range.
    [instance] = structure([{key: {"vr": vr, "Value": [number]}}], "INSTANCE")
    field = {"00280010": "Rows", "00200013": "InstanceNumber"}[key]
    expected = number if valid else None
    assert getattr(instance, field) == expected
    assert instance[field] == expected
    assert make_converter().structure({"vr": vr, "Value": [number]}, int) == expected
    assert len(instance.invalid) == (0 if valid else 1)


# ------------------------------------------------------------------ entry points


def test_decode_json_empty_bodies() -> None:
    assert decode_json(b"") == []
    assert decode_json(b"  \n\t") == []
    assert decode_json("") == []
    assert decode_json(b"[]") == []
    assert parse_results(b"", QueryLevel.STUDY) == []


def test_parse_results_from_bytes_str_and_items() -> None:
    body = json.dumps([ORTHANC_STUDY], indent="\t")
    from_bytes = parse_results(body.encode(), QueryLevel.STUDY)
    from_str = parse_results(body, QueryLevel.STUDY)
    from_items = parse_results([ORTHANC_STUDY], QueryLevel.STUDY)
    assert from_bytes == from_str == from_items
    assert from_bytes[0].to_json() == ORTHANC_STUDY


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"<html><body>Login</body></html>", "not JSON (it looks like HTML or XML)"),
        (
            b'--b1\r\nContent-Type: application/dicom+xml\r\n\r\n<?xml version="1.0"?>',
            "multipart",
        ),
        (b'{"HttpError":"Bad Request","HttpStatus":400}', "JSON object, not an array"),
        (b'"text"', "JSON string, not an array"),
        (b"[1]", "item 0 of the response is a JSON number"),
        (b'[{}, ["x"]]', "item 1 of the response is a JSON array"),
        (b"[{", "not JSON"),
        (b"\xff\xfe[]", "not JSON"),
    ],
)
def test_decode_json_rejects_what_is_not_an_array_of_objects(body: bytes, message: str) -> None:
    with pytest.raises(InvalidResponseError, match="body starts") as info:
        decode_json(body)
    assert message in str(info.value)
    assert info.value.body_excerpt


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ({"0010001G": {"vr": "LO"}}, "item 1 .*malformed tag key '0010001G'"),
        ({"001000100": {"vr": "LO"}}, "malformed tag key"),
        ({"PatientID": {"vr": "LO"}}, "malformed tag key 'PatientID'"),
        ({"00100020": {"vr": "XX", "Value": ["a"]}}, "item 1 .*tag 00100020: unknown VR 'XX'"),
        ({"00100020": {"Value": ["a"]}}, "tag 00100020: element has no 'vr'"),
        ({"00100020": {"vr": ["LO"]}}, r"tag 00100020: unknown VR \['LO'\]"),
        ({"00100020": {"vr": None, "Value": ["a"]}}, "tag 00100020: unknown VR None"),
        ({"00100020": ["a"]}, "tag 00100020: element is not a JSON object"),
        ({"00100020": {"vr": "LO", "Value": "a"}}, "'Value' must be a JSON array"),
        (
            {"00100020": {"vr": "LO", "Value": ["a"], "InlineBinary": "AA=="}},
            "more than one of Value / InlineBinary",
        ),
        (
            {"7FE00010": {"vr": "OB", "BulkDataURI": "x", "InlineBinary": "AA=="}},
            "more than one of BulkDataURI / InlineBinary",
        ),
        ({"7FE00010": {"vr": "OB", "BulkDataURI": 3}}, "BulkDataURI must be a string"),
        ({"00081032": {"vr": "SQ", "Value": ["x"]}}, "tag 00081032: sequence item 0 is not"),
        (
            {"00081032": {"vr": "SQ", "Value": [{}, {"00080100": {"vr": "ZZ"}}]}},
            "tag 00081032, sequence item 1: tag 00080100: unknown VR 'ZZ'",
        ),
        ({"0020000d": {"vr": "UI"}, "0020000D": {"vr": "UI"}}, "0020000D appears twice"),
    ],
)
def test_structure_errors_name_the_item_and_the_tag(item: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidResponseError, match=message) as info:
        structure([ORTHANC_STUDY, item], QueryLevel.STUDY)
    assert str(info.value).startswith("item 1 ")
    assert info.value.body_excerpt


def test_an_error_deep_in_nested_sequences_has_a_short_message() -> None:
    """339 levels of SQ (as deep as the decoder goes) made an 11 KB message (found by review):
    it names the three outermost and innermost levels and counts the others."""
    text = '{"00100010": {"vr": "ZZ"}}'
    for _ in range(339):
        text = '{"00081115": {"vr": "SQ", "Value": [' + text + "]}}"
    items = decode_json(f"[{text}]".encode())
    with pytest.raises(InvalidResponseError) as info:
        structure(items, QueryLevel.STUDY)
    level = "tag 00081115, sequence item 0: "
    assert str(info.value).startswith(
        f"item 0 is not a valid DICOM JSON object: {level * 3}… (333 more sequence levels): "
        f"{level * 3}tag 00100010: unknown VR 'ZZ'; body starts: "
    )
    assert len(str(info.value)) < 1000


@pytest.mark.parametrize(
    "item",
    [
        {"A" * 100_000: {"vr": "PN"}},
        {"00100010": {"vr": "Z" * 100_000}},
        {"00100010": {"vr": [1] * 50_000}},
    ],
)
def test_a_huge_tag_key_or_vr_is_cut_in_the_message(item: dict[str, Any]) -> None:
    with pytest.raises(InvalidResponseError) as info:
        structure([item], QueryLevel.STUDY)
    assert len(str(info.value)) < 1000


@pytest.mark.parametrize("item", [[], "x", 3, None])
def test_structure_rejects_items_that_are_not_objects(item: Any) -> None:
    with pytest.raises(InvalidResponseError, match=r"item 0 .*DICOM JSON object was expected"):
        structure([item], QueryLevel.SERIES)


@pytest.mark.parametrize(
    ("decoded", "kind"),
    [({"error": "Unauthorized"}, "object"), ({}, "object"), (None, "null"), (3, "number")],
)
def test_decoded_results_that_are_not_an_array_raise_invalid_response_error(
    decoded: Any, kind: str
) -> None:
    # what json.loads gives for an error body: as parse_results(body) raises, not KeyError 0
    with pytest.raises(InvalidResponseError, match=f"are a JSON {kind}, not an array") as info:
        parse_results(decoded, QueryLevel.STUDY, url="http://pacs.example/studies", status=200)
    assert info.value.status == 200


@pytest.mark.parametrize("item", [[1, 2], "ab", None, 5])
def test_from_json_of_what_is_not_an_object_raises_invalid_response_error(item: Any) -> None:
    for cls in (Dataset, Study, Instance):
        with pytest.raises(InvalidResponseError, match="DICOM JSON object was expected"):
            cls.from_json(item)


def test_one_decoded_dataset_is_taken_as_decode_json_takes_it() -> None:
    item = {"0020000D": {"vr": "UI", "Value": ["1.2.3"]}}
    assert parse_results(item, "STUDY") == parse_results(json.dumps(item), "STUDY")
    assert [s.StudyInstanceUID for s in structure(item, QueryLevel.STUDY)] == ["1.2.3"]


def test_converter_hooks_raise_invalid_response_error_not_cattrs_errors() -> None:
    converter = make_converter()
    with pytest.raises(InvalidResponseError, match="unknown VR"):
        converter.structure({"00100020": {"vr": "??"}}, Study)
    assert structure([ORTHANC_STUDY], "STUDY", converter=converter) == [study()]
    with pytest.raises(InvalidResponseError, match=r"item 0 .*unknown VR"):
        structure([{"00100020": {"vr": "??"}}], "STUDY", converter=converter)


def _tracked_containers(root: object) -> int:
    """How many objects the cyclic GC tracks among ``root`` and all it holds (not classes)."""
    seen: set[int] = set()
    stack = [root]
    count = 0
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, type):
            continue
        seen.add(id(obj))
        count += gc.is_tracked(obj)
        stack.extend(gc.get_referents(obj))
    return count


def test_results_keep_few_containers_for_the_collector() -> None:
    # A crawl holds thousands of results while their studies complete; every container
    # they hold that the GC tracks is rescanned at each collection.  Elements with a
    # Value array are stored as tuples, which the collector stops tracking.
    items = [json.loads(json.dumps(ORTHANC_STUDY)) for _ in range(3)]
    results = structure(items, QueryLevel.STUDY)
    del items  # the decoded JSON goes with the caller's reference
    gc.collect()
    for result in results:
        # the result, its __dict__, its element dict and its PatientName element (a
        # tuple holding a dict stays tracked); nothing for the other 15 elements
        assert _tracked_containers(result) <= 4
        assert result.to_json() == ORTHANC_STUDY
    first = results[0]
    assert first.PatientName is not None  # read: the values are cached
    assert first.StudyDate is not None
    gc.collect()
    assert _tracked_containers(first) <= 7  # + the value cache, its PersonName and date


def test_sequence_items_and_bulk_data_stay_json_and_round_trip() -> None:
    item = {
        **ORTHANC_STUDY,
        "00400275": {"vr": "SQ", "Value": [{"00401001": {"vr": "SH", "Value": ["RP1"]}}]},
        "7FE00010": {"vr": "OB", "BulkDataURI": "http://x/bulk"},
        "00091010": {"vr": "OB", "InlineBinary": "AAEC"},
        "00081010": {"vr": "SH", "Value": []},
        "00181030": {"vr": "LO", "Value": [None, "", "P"]},
    }
    s = study(**{k: v for k, v in item.items() if k not in ORTHANC_STUDY})
    assert s.to_json() == item
    assert s.element("00081010").json == {"vr": "SH", "Value": []}
    assert s.element("00181030").values == (None, "", "P")
    assert s["00181030"] == (None, None, "P")
    assert s["00081010"] is None
    assert s["00400275"][0]["00401001"] == "RP1"
    assert s["7FE00010"] == "http://x/bulk"
    assert s["00091010"].to_bytes() == b"\x00\x01\x02"
    assert s == study(**{k: v for k, v in item.items() if k not in ORTHANC_STUDY})
    assert hash(s) == hash(study(**{k: v for k, v in item.items() if k not in ORTHANC_STUDY}))


def test_the_deepest_nesting_the_decoder_accepts_is_structured() -> None:
    # orjson (and decode_json without it) accept 1,024 levels of JSON: 341 levels of SQ,
    # each an element object, its Value array and an item.  Validating them must not
    # reach Python's recursion limit (the pytest frames below this test included).
    depth = 340
    text = '{"00100020": {"vr": "LO", "Value": ["x"]}}'
    for _ in range(depth):
        text = '{"00400275": {"vr": "SQ", "Value": [' + text + "]}}"
    [s] = parse_results("[" + text + "]", QueryLevel.STUDY)
    item = s
    for _ in range(depth):
        [item] = item["00400275"]
    assert item["PatientID"] == "x"
    node = s.to_json()
    for _ in range(depth):
        assert list(node) == ["00400275"]
        assert node["00400275"]["vr"] == "SQ"
        [node] = node["00400275"]["Value"]
    assert node == {"00100020": {"vr": "LO", "Value": ["x"]}}
    with pytest.raises(InvalidResponseError, match="JSON"):  # one more level: refused
        parse_results('[{"00400275": {"vr": "SQ", "Value": [' + text + "]}}]", QueryLevel.STUDY)


def test_datasets_nested_as_deep_as_decoding_allows_compare_hash_and_fail_cleanly() -> None:
    # Equality and the hash compare the elements as JSON text (canonical), and an item's
    # error excerpt is its JSON: json.dumps raised a raw RecursionError past ~330 levels.
    depth = 340
    text = '{"00100020": {"vr": "LO", "Value": ["x"]}}'
    for _ in range(depth):
        text = '{"00400275": {"vr": "SQ", "Value": [' + text + "]}}"
    [a] = parse_results("[" + text + "]", QueryLevel.STUDY)
    [b] = parse_results("[" + text + "]", QueryLevel.STUDY)
    assert a == b
    assert hash(a) == hash(b)
    [other] = parse_results("[" + text.replace('"x"', '"y"') + "]", QueryLevel.STUDY)
    assert a != other
    bad = text.replace('"00100020"', '"ZZZZ"')  # a malformed tag key at the deepest level
    with pytest.raises(InvalidResponseError, match="malformed tag key") as info:
        parse_results("[" + bad + "]", QueryLevel.STUDY)
    assert info.value.body_excerpt.startswith('{"00400275": {"vr": "SQ", "Value": [{')


def test_a_hook_a_user_registers_is_given_the_json_element() -> None:
    converter = make_converter()
    given: list[Any] = []

    def shout(elem: Any, _: Any) -> str:
        given.append(elem)
        return str(elem["Value"][0]).upper()

    converter.register_structure_hook(str, shout)
    [s] = structure([ORTHANC_STUDY], "STUDY", converter=converter)
    assert s.StudyDescription == "CT HEAD"
    assert s.AccessionNumber == "ACC0001".upper()
    assert given[-1] == {"vr": "SH", "Value": ["ACC0001"]}
    assert all(type(elem) is dict for elem in given)


def test_a_cattrs_error_of_a_given_converter_is_an_invalid_response_other_errors_pass() -> None:
    import cattrs

    converter = make_converter()

    def refuse(obj: Any, cls: Any) -> Any:
        raise cattrs.ClassValidationError("refused", [ValueError("no")], cls)

    converter.register_structure_hook(Study, refuse)
    with pytest.raises(InvalidResponseError, match=r"^item 0: refused"):
        structure([ORTHANC_STUDY], "STUDY", converter=converter)

    def fail(obj: Any, cls: Any) -> Any:
        raise KeyError("a bug in a user's hook")

    converter.register_structure_hook(Study, fail)
    with pytest.raises(KeyError, match="a bug in a user's hook"):
        structure([ORTHANC_STUDY], "STUDY", converter=converter)


def test_a_large_response_is_structured_with_the_collector_paused_and_then_resumed() -> None:
    items = [ORTHANC_STUDY] * 300 + [{"00100020": {"vr": "??"}}]
    assert gc.isenabled()
    with pytest.raises(InvalidResponseError, match="item 300 "):
        structure(items, QueryLevel.STUDY)
    assert gc.isenabled()
    assert len(structure(items[:300], QueryLevel.STUDY)) == 300
    assert gc.isenabled()
    gc.disable()  # a caller's own pause is left alone
    try:
        structure(items[:300], QueryLevel.STUDY)
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_structure_levels() -> None:
    item = {"0020000D": {"vr": "UI", "Value": ["1.2"]}}
    assert type(structure([item], QueryLevel.STUDY)[0]) is Study
    assert type(structure([item], "SERIES")[0]) is Series
    assert type(structure([item], QueryLevel.INSTANCE)[0]) is Instance


# ------------------------------------------------------------------ tricky cases (spec §9)


def test_pn_as_a_bare_string_is_alphabetic() -> None:  # case 11
    s = study(**{"00100010": {"vr": "PN", "Value": ["Doe^John"]}})
    assert s.PatientName == PersonName(alphabetic="Doe^John")
    assert s.PatientName is not None
    assert s.PatientName.family == "Doe"
    assert s.PatientName.given == "John"


def test_pn_with_three_groups_and_ideographic_only() -> None:  # case 12
    s = study()
    assert str(s.PatientName) == "Yamada^Tarou=山田^太郎=やまだ^たろう"
    only = study(**{"00100010": {"vr": "PN", "Value": [{"Ideographic": "山田^太郎"}]}})
    assert only.PatientName == PersonName(ideographic="山田^太郎")
    assert str(only.PatientName) == "=山田^太郎"
    assert only.PatientName is not None
    assert only.PatientName.family == "山田"


@pytest.mark.parametrize(
    "element",
    [
        {"vr": "LO"},
        {"vr": "LO", "Value": []},
        {"vr": "LO", "Value": [""]},
        {"vr": "LO", "Value": [None]},
        {"vr": "LO", "Value": ["\x00 "]},
    ],
)
def test_every_kind_of_empty_means_empty_and_round_trips(element: dict[str, Any]) -> None:
    s = study(**{"00081030": element, "00080061": {**element, "vr": "CS"}})  # case 13
    assert s.StudyDescription is None
    assert s["StudyDescription"] is None
    assert s.ModalitiesInStudy == ()
    assert s.to_json()["00081030"] == element
    assert "StudyDescription" in s


def test_null_inside_a_multi_valued_array() -> None:  # case 14
    s = study(**{"00080061": {"vr": "CS", "Value": ["CT", None, "MR"]}})
    assert s.ModalitiesInStudy == ("CT", None, "MR")
    assert s["ModalitiesInStudy"] == ("CT", None, "MR")


def test_is_and_ds_as_numbers_strings_and_junk() -> None:  # case 15
    s = study(
        **{
            "00201206": {"vr": "IS", "Value": ["12"]},
            "00201208": {"vr": "IS", "Value": ["N/A"]},
            "00101030": {"vr": "DS", "Value": [72.5, "1e3", " 72.50 ", "N/A"]},
        }
    )
    assert s.NumberOfStudyRelatedSeries == 12
    assert s.NumberOfStudyRelatedInstances is None
    weights = s["PatientWeight"]
    assert weights[:3] == (72.5, 1000.0, 72.5)
    assert weights[3] is None
    assert [w.text for w in weights[:3]] == ["72.5", "1e3", "72.50"]
    assert s.invalid == (
        InvalidValue(
            "00201208", "NumberOfStudyRelatedInstances", "IS", "N/A", "'N/A' is not an integer"
        ),
        InvalidValue("00101030", "PatientWeight", "DS", "N/A", "'N/A' is not a decimal number"),
    )
    assert s.element("PatientWeight").values == (72.5, "1e3", " 72.50 ", "N/A")


def test_uid_padding_is_stripped() -> None:  # case 16
    s = study(**{"0020000D": {"vr": "UI", "Value": ["1.2.3\x00"]}})
    assert s.StudyInstanceUID == "1.2.3"
    assert s["StudyInstanceUID"] == "1.2.3"
    assert s.to_json()["0020000D"] == {"vr": "UI", "Value": ["1.2.3\x00"]}
    spaced = study(**{"0020000D": {"vr": "UI", "Value": ["1.2.3 "]}})
    assert spaced.StudyInstanceUID == "1.2.3"


def test_sequences_with_empty_items_and_two_levels() -> None:  # case 18
    inner = {"00080100": {"vr": "SH", "Value": ["12345"]}}
    item = {
        "00400275": {
            "vr": "SQ",
            "Value": [
                {
                    "00400009": {"vr": "SH", "Value": ["SPS1"]},
                    "00401001": {"vr": "SH", "Value": ["RP1"]},
                    "00081032": {"vr": "SQ", "Value": [inner, {}]},
                },
                {},
            ],
        },
        "0020000E": {"vr": "UI", "Value": ["1.2.3.4"]},
    }
    [series] = structure([item], "SERIES")
    assert isinstance(series, Series)
    first, empty = series.RequestAttributesSequence
    assert isinstance(first, Dataset)
    assert first["ScheduledProcedureStepID"] == "SPS1"
    assert first["RequestedProcedureID"] == "RP1"
    nested = first["ProcedureCodeSequence"]
    assert len(nested) == 2
    assert nested[0]["CodeValue"] == "12345"
    assert len(nested[1]) == 0
    assert len(empty) == 0
    assert series["RequestAttributesSequence"] == series.RequestAttributesSequence
    assert series.to_json() == item
    empty_sq = study(**{"00081032": {"vr": "SQ"}})
    assert empty_sq["ProcedureCodeSequence"] == ()


def test_bulk_data_uri_and_inline_binary() -> None:  # case 19
    s = study(
        **{
            "7FE00010": {"vr": "OW", "BulkDataURI": "https://h/studies/1/bulk/7FE00010"},
            "00091010": {"vr": "OB", "BulkDataURI": "bulk/00091010"},
            "00420011": {"vr": "OB", "InlineBinary": "AAECAw=="},
            "00420012": {"vr": "OB", "InlineBinary": "not base64!"},
        }
    )
    assert s["PixelData"] == BulkDataURI("https://h/studies/1/bulk/7FE00010")
    assert isinstance(s["PixelData"], BulkDataURI)
    assert s["00091010"] == "bulk/00091010"
    assert isinstance(s["EncapsulatedDocument"], InlineBinary)
    assert s["EncapsulatedDocument"].to_bytes() == b"\x00\x01\x02\x03"
    assert s.element("EncapsulatedDocument").inline_binary == b"\x00\x01\x02\x03"
    assert s.element("PixelData").bulk_data_uri == "https://h/studies/1/bulk/7FE00010"
    assert [bad.key for bad in s.invalid] == ["00420012"]


def test_lowercase_tag_keys_are_normalised() -> None:  # case 20
    item = {
        "0020000d": {"vr": "UI", "Value": ["1.2.3"]},
        "00400275": {"vr": "SQ", "Value": [{"0040a123": {"vr": "PN", "Value": ["Doe"]}}]},
    }
    [s] = structure([item], "SERIES")
    assert s.StudyInstanceUID == "1.2.3"
    assert "0020000D" in s
    assert s.to_json() == {
        "0020000D": {"vr": "UI", "Value": ["1.2.3"]},
        "00400275": {"vr": "SQ", "Value": [{"0040A123": {"vr": "PN", "Value": ["Doe"]}}]},
    }
    assert s["RequestAttributesSequence"][0]["PersonName"] == PersonName("Doe")


def test_keys_in_any_order_and_unknown_private_tags() -> None:  # case 21
    item = dict(reversed(list(ORTHANC_STUDY.items())))
    item["00291010"] = {"vr": "OB", "InlineBinary": "AA=="}
    item["00290010"] = {"vr": "LO", "Value": ["SIEMENS CSA HEADER"]}
    item["00099999"] = {"vr": "UN", "InlineBinary": "AAAA"}
    [s] = structure([item], "STUDY")
    assert s.PatientID == "PID000001"
    assert s["00290010"] == "SIEMENS CSA HEADER"
    assert "00099999" in list(s)
    assert s.to_json() == item


def test_unknown_extra_members_of_an_element_are_tolerated() -> None:
    element = {"vr": "LO", "Value": ["x"], "comment": "vendor"}
    s = study(**{"00081030": element})
    assert s.StudyDescription == "x"
    assert s.to_json()["00081030"] == element


# ------------------------------------------------------------------ pydicom


def _pydicom_item() -> dict[str, Any]:
    item = dict(ORTHANC_STUDY)
    item["00400275"] = {"vr": "SQ", "Value": [{"00400009": {"vr": "SH", "Value": ["S1"]}}, {}]}
    item["00101030"] = {"vr": "DS", "Value": [72.5]}
    item["00209165"] = {"vr": "AT", "Value": ["00100010", "0020000D"]}
    item["00091001"] = {"vr": "LO", "Value": ["private"]}
    item["00420011"] = {"vr": "OB", "InlineBinary": "AAECAw=="}
    return item


def test_to_pydicom_equals_from_json() -> None:
    item = _pydicom_item()
    [s] = structure([json.loads(json.dumps(item))], "STUDY")
    converted = s.to_pydicom()
    assert isinstance(converted, pydicom.Dataset)
    assert converted == pydicom.Dataset.from_json(item)
    assert converted.PatientName == "Yamada^Tarou=山田^太郎=やまだ^たろう"
    assert str(converted.PatientName) == str(s.PatientName)


def test_from_pydicom() -> None:
    ds = pydicom.Dataset()
    ds.PatientName = "Doe^John^^Dr"
    ds.StudyInstanceUID = "1.2.3"
    ds.StudyDate = "20240131"
    ds.ModalitiesInStudy = ["CT", "PT"]
    ds.NumberOfStudyRelatedInstances = 5
    s = Study.from_pydicom(ds)
    assert s.PatientName is not None
    assert s.PatientName.prefix == "Dr"
    assert s.StudyDate == datetime.date(2024, 1, 31)
    assert s.ModalitiesInStudy == ("CT", "PT")
    assert s.NumberOfStudyRelatedInstances == 5
    assert s.to_pydicom() == ds
    assert Dataset.from_pydicom(ds)["StudyInstanceUID"] == "1.2.3"


def test_import_results_does_not_import_pydicom() -> None:
    import subprocess
    import sys

    code = "import sys, aqido.results; print('pydicom' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_models_tag_keys_are_the_dictionarys() -> None:
    """``_models._KEYS`` (written out, so defining the models loads no dictionary) is right."""
    from aqido import dictionary
    from aqido._models import _KEYS, _MODELS

    fields = {f.name for cls in _MODELS.values() for f in attrs.fields(cls)}
    assert set(_KEYS) == fields - {"_raw", "series", "instances"}
    for keyword, key in _KEYS.items():
        assert dictionary.resolve(keyword)[0] == int(key, 16), keyword
        assert key == key.upper()


# ------------------------------------------------------------------ build_tree


def _uid(level: str, *uids: str) -> dict[str, Any]:
    keys = {"study": "0020000D", "series": "0020000E", "instance": "00080018"}
    out = {}
    for name, uid in zip(("study", "series", "instance"), uids, strict=False):
        out[keys[name]] = {"vr": "UI", "Value": [uid]}
    return out


def test_build_tree_from_relational_instances() -> None:
    items = [
        {**_uid("i", "1", "1.1", "1.1.1"), "00100020": {"vr": "LO", "Value": ["P1"]}},
        {**_uid("i", "1", "1.1", "1.1.2"), "00100020": {"vr": "LO", "Value": ["P1"]}},
        {**_uid("i", "1", "1.2", "1.2.1"), "00080060": {"vr": "CS", "Value": ["MR"]}},
        {**_uid("i", "2", "2.1", "2.1.1")},
        {**_uid("i", "1", "1.1", "1.1.1")},  # a duplicate (Azure paging) is dropped
    ]
    tree = build_tree(structure(items, QueryLevel.INSTANCE))
    assert [s.StudyInstanceUID for s in tree] == ["1", "2"]
    first = tree[0]
    assert first.PatientID == "P1"
    assert "SOPInstanceUID" not in first
    assert [se.SeriesInstanceUID for se in first.series] == ["1.1", "1.2"]
    assert first.series[1].Modality == "MR"
    assert [i.SOPInstanceUID for i in first.series[0].instances] == ["1.1.1", "1.1.2"]
    assert [i.SOPInstanceUID for i in tree[1].series[0].instances] == ["2.1.1"]


def test_build_tree_never_gives_a_parent_its_childs_retrieve_url() -> None:
    # Found against Orthanc: placeholder parents used to copy the instance's RetrieveURL.
    base = "http://pacs/dicom-web/studies/1"
    url = {"vr": "UR", "Value": [f"{base}/series/1.1/instances/1.1.1"]}
    items = [
        {**_uid("i", "1", "1.1", "1.1.1"), "00081190": url},
        {**_uid("i", "2", "2.1", "2.1.1"), "00081190": {"vr": "UR", "Value": ["http://x/wado?1"]}},
    ]
    first, second = build_tree(structure(items, QueryLevel.INSTANCE))
    assert first.RetrieveURL == base
    assert first.series[0].RetrieveURL == f"{base}/series/1.1"
    assert first.series[0].instances[0].RetrieveURL == url["Value"][0]
    assert second.RetrieveURL is None  # not a PS3.18 path: nothing to derive
    assert second.series[0].RetrieveURL is None
    [series] = structure(
        [
            {
                **_uid("s", "3", "3.1"),
                "00081190": {"vr": "UR", "Value": ["http://pacs/dicom-web/studies/3/series/3.1"]},
            }
        ],
        QueryLevel.SERIES,
    )
    [study] = build_tree([series])
    assert study.RetrieveURL == "http://pacs/dicom-web/studies/3"
    assert study.series[0] is series


def test_build_tree_never_gives_a_parent_its_childs_availability() -> None:
    # A study's InstanceAvailability is not one of its instances' (some may be offline);
    # the dataset-wide attributes describe the parent's copied values too and are kept.
    item = {
        **_uid("i", "1", "1.1", "1.1.1"),
        "00080056": {"vr": "CS", "Value": ["NEARLINE"]},
        "00080005": {"vr": "CS", "Value": ["ISO_IR 192"]},
        "00080201": {"vr": "SH", "Value": ["+0100"]},
        "00100020": {"vr": "LO", "Value": ["P1"]},
    }
    [study] = build_tree(structure([item], QueryLevel.INSTANCE))
    [series] = study.series
    assert series.instances[0].InstanceAvailability == "NEARLINE"
    assert study.InstanceAvailability is None
    for parent in (study, series):
        assert "InstanceAvailability" not in parent
        assert parent.SpecificCharacterSet == ("ISO_IR 192",)
        assert parent.TimezoneOffsetFromUTC == "+0100"
    assert study.PatientID == "P1"


def test_build_tree_mixes_levels_and_prefers_real_parents() -> None:
    series = structure([_uid("s", "1", "1.1"), _uid("s", "1", "1.2")], "SERIES")
    studies = structure(
        [{**_uid("st", "1"), "00081030": {"vr": "LO", "Value": ["real"]}}, _uid("st", "3")],
        "STUDY",
    )
    instances = structure([_uid("i", "1", "1.1", "1.1.9")], "INSTANCE")
    tree = build_tree([*series, *instances, *studies])
    assert [s.StudyInstanceUID for s in tree] == ["1", "3"]
    assert tree[0].StudyDescription == "real"
    assert [se.SeriesInstanceUID for se in tree[0].series] == ["1.1", "1.2"]
    assert tree[0].series[0].instances[0].SOPInstanceUID == "1.1.9"
    assert tree[1].series == ()


def test_build_tree_matches_dicomtrolley() -> None:
    from dicomtrolley.qido_rs import QidoRS

    items = [
        _uid("i", "1", "1.1", "1.1.1"),
        _uid("i", "1", "1.1", "1.1.2"),
        _uid("i", "1", "1.2", "1.2.1"),
        _uid("i", "2", "2.1", "2.1.1"),
    ]
    theirs = QidoRS.parse_qido_response(json.loads(json.dumps(items)))
    ours = build_tree(structure(items, "INSTANCE"))

    def shape_theirs() -> list[Any]:
        return [
            (st.uid, [(se.uid, [i.uid for i in se.instances]) for se in st.series]) for st in theirs
        ]

    shape_ours = [
        (
            st.StudyInstanceUID,
            [(se.SeriesInstanceUID, [i.SOPInstanceUID for i in se.instances]) for se in st.series],
        )
        for st in ours
    ]
    assert shape_ours == shape_theirs()


def test_build_tree_adds_flat_instances_to_a_series_already_attached() -> None:
    # Found by review: the flat instances of a series the study already had attached
    # were skipped, and vanished from the tree.
    [study_] = structure([_uid("st", "1")], "STUDY")
    [series] = structure([_uid("s", "1", "1.1")], "SERIES")
    one, two, three = structure([_uid("i", "1", "1.1", f"1.1.{n}") for n in (1, 2, 3)], "INSTANCE")
    attached = study_.with_series([series.with_instances([one])])
    [tree] = build_tree([attached, two, one, three])
    [got] = tree.series
    assert [i.SOPInstanceUID for i in got.instances] == ["1.1.1", "1.1.2", "1.1.3"]
    assert got.instances[0] is one  # the attached one is kept, its duplicate dropped
    # a flat Series of that series: the attached one is kept, the instances of both join
    [tree] = build_tree([attached, series.with_instances([two]), three])
    [got] = tree.series
    assert [i.SOPInstanceUID for i in got.instances] == ["1.1.1", "1.1.2", "1.1.3"]
    # nothing to add: the study comes back as given
    [tree] = build_tree([attached, one])
    assert tree.series == attached.series


def test_build_tree_without_parent_uids() -> None:
    [series] = structure([{"0020000E": {"vr": "UI", "Value": ["9.9"]}}], "SERIES")
    [root] = build_tree([series])
    assert root.StudyInstanceUID is None
    assert root.series == (series,)
    with pytest.raises(TypeError, match="build_tree"):
        build_tree([Dataset()])  # type: ignore[list-item]


def test_build_tree_keeps_every_result_without_a_uid() -> None:
    # Found by review: results were keyed by their UID, so a second study, series or
    # instance without one was taken for a duplicate of the first, and dropped.
    def lo(key: str, value: str) -> dict[str, Any]:
        return {key: {"vr": "LO", "Value": [value]}}

    studies = structure([lo("00100020", "A"), lo("00100020", "B")], "STUDY")
    assert [s.PatientID for s in build_tree(studies)] == ["A", "B"]
    series = structure([{**_uid("s", "1"), **lo("0008103E", d)} for d in ("CT", "MR")], "SERIES")
    [tree] = build_tree(series)
    assert [s.SeriesDescription for s in tree.series] == ["CT", "MR"]
    instances = structure(
        [{**_uid("i", "1", "1.1"), **lo("00100020", p)} for p in ("A", "B")], "INSTANCE"
    )
    [tree] = build_tree(instances)
    [got] = tree.series
    assert [i.get("PatientID") for i in got.instances] == ["A", "B"]
    # children without a parent UID still join the first parent without one
    orphans = structure([_uid("i", "1"), _uid("i", "1")], "INSTANCE")
    [tree] = build_tree([*series, *orphans])
    assert [len(s.instances) for s in tree.series] == [2, 0]
    # an attached instance without a UID is not added twice, one like it is added
    [study_] = structure([_uid("st", "1")], "STUDY")
    one, two = instances
    attached = study_.with_series([got.with_instances([one])])
    [tree] = build_tree([attached, one, two])
    assert [i.get("PatientID") for i in tree.series[0].instances] == ["A", "B"]


def test_decode_json_leaves_the_garbage_collector_as_it_found_it() -> None:
    import gc

    big = json.dumps([ORTHANC_STUDY] * 200).encode()
    assert len(big) > 64 * 1024
    assert gc.isenabled()
    assert len(decode_json(big)) == 200
    assert gc.isenabled()
    with pytest.raises(InvalidResponseError):
        decode_json(big[:-1])
    assert gc.isenabled()
    gc.disable()
    try:
        decode_json(big)
        assert not gc.isenabled()
    finally:
        gc.enable()


# ------------------------------------------------------------------ synthetic archive


def test_synthetic_archive_all_levels() -> None:
    from aqido.testing.synthetic import SyntheticArchive

    archive = SyntheticArchive(seed=7, studies=4, series_per_study=2, instances_per_series=2)
    studies = parse_results(
        json.dumps([archive.study_json(s) for s in archive.studies]).encode(), QueryLevel.STUDY
    )
    for parsed, record in zip(studies, archive.studies, strict=True):
        assert parsed.StudyInstanceUID == record.study_instance_uid
        assert parsed.PatientID == record.patient_id
        assert parsed.ModalitiesInStudy == record.modalities_in_study
        assert parsed.NumberOfStudyRelatedInstances == record.number_of_study_related_instances
        assert str(parsed.PatientName or "") == record.patient_name
        assert parsed["ProcedureCodeSequence"][0]["CodeValue"] == record.procedure_code
        assert parsed.invalid == ()
    series = structure([archive.series_json(s) for s in archive.series], QueryLevel.SERIES)
    instances = structure(
        [
            {**archive.study_json(archive.study_of(i)), **archive.instance_json(i)}
            for i in archive.instances
        ],
        QueryLevel.INSTANCE,
    )
    tree = build_tree([*studies, *series, *instances])
    assert [s.StudyInstanceUID for s in tree] == [s.study_instance_uid for s in archive.studies]
    for study_, record in zip(tree, archive.studies, strict=True):
        assert study_.StudyDescription == (record.study_description or None)
        assert [se.SeriesInstanceUID for se in study_.series] == [
            se.series_instance_uid for se in record.series
        ]
        for se, se_record in zip(study_.series, record.series, strict=True):
            assert se.Modality == se_record.modality
            assert [i.SOPInstanceUID for i in se.instances] == [
                i.sop_instance_uid for i in se_record.instances
            ]
            assert [i.InstanceNumber for i in se.instances] == [
                i.instance_number for i in se_record.instances
            ]
    full = archive.dataset_json(archive.instances[0])
    assert Instance.from_json(full).to_pydicom() == pydicom.Dataset.from_json(full)


def test_init_with_raw_reads_the_fields_from_it() -> None:
    s = Study(raw=ORTHANC_STUDY)
    assert s == study()
    assert s.PatientID == "PID000001"
    overridden = Study(raw=ORTHANC_STUDY, PatientID="P2", ModalitiesInStudy=["SR"])
    assert overridden.PatientID == "P2"
    assert overridden.ModalitiesInStudy == ("SR",)
    assert overridden.to_json()["00080061"] == {"vr": "CS", "Value": ["SR"]}
    assert overridden["AccessionNumber"] == "ACC0001"
    with pytest.raises(InvalidResponseError, match="unknown VR"):
        Study(raw={"00100020": {"vr": "??"}})


def test_contains_with_odd_keys() -> None:
    s = study()
    assert ["PatientID"] not in s
    assert None not in s
    assert "0020000d" in s


def test_results_pickle_and_copy() -> None:
    import copy
    import pickle

    s = study()
    s.PatientName  # noqa: B018 - a cached value must survive too
    s["StudyDate"]
    for clone in (pickle.loads(pickle.dumps(s)), copy.deepcopy(s), copy.copy(s)):
        assert clone == s
        assert clone.PatientName == s.PatientName
        assert clone["00080020"] == s.StudyDate


def test_decode_json_without_orjson_uses_the_standard_library(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import aqido._json

    monkeypatch.setattr(aqido._json, "_loads", json.loads)
    body = json.dumps([ORTHANC_STUDY], ensure_ascii=False).encode()
    assert decode_json(body) == [ORTHANC_STUDY]
    assert parse_results(body, "STUDY") == [study()]
    with pytest.raises(InvalidResponseError, match=r"not JSON .*HTML"):
        decode_json(b"<!DOCTYPE html><html>")
    with pytest.raises(InvalidResponseError, match="not JSON"):
        decode_json(b"\xff[]")


def test_errors_carry_the_url_and_status_when_given() -> None:
    url = "https://user:secret@pacs.example/dicom-web/studies"
    with pytest.raises(InvalidResponseError) as info:
        parse_results(b"<html>", "STUDY", url=url, status=200)
    assert info.value.url == "https://pacs.example/dicom-web/studies"
    assert info.value.status == 200
    assert "secret" not in str(info.value)
    with pytest.raises(InvalidResponseError) as info:
        parse_results(b'[{"00100020": {"vr": "??"}}]', "STUDY", url=url, status=200)
    assert info.value.url == "https://pacs.example/dicom-web/studies"
    assert "item 0" in str(info.value)
    with pytest.raises(InvalidResponseError) as info:
        parse_results(b"{}", "STUDY", url=url, status=200)
    assert info.value.status == 200


# ------------------------------------------------------------ typed fields of another VR


def test_a_typed_field_of_another_vr_is_listed_as_invalid_not_dropped_unseen() -> None:
    study = Study.from_json(
        {
            "00080020": {"vr": "LO", "Value": ["20240101"]},  # StudyDate as an LO
            "00100020": {"vr": "PN", "Value": [{"Alphabetic": "ID123"}]},  # PatientID as a PN
            "00201206": {"vr": "DS", "Value": ["3.5"]},  # a count as a DS
            "00081030": {"vr": "LO", "Value": ["Fine"]},
        }
    )
    assert study.StudyDate is None
    assert study["StudyDate"] == "20240101"  # the mapping API reads it for its VR
    assert study.PatientID is None
    assert study.NumberOfStudyRelatedSeries is None
    assert [(bad.keyword, bad.vr, bad.raw) for bad in study.invalid] == [
        ("StudyDate", "LO", "20240101"),
        ("PatientID", "PN", {"Alphabetic": "ID123"}),
        ("NumberOfStudyRelatedSeries", "DS", "3.5"),
    ]
    assert study.invalid[0].reason == "StudyDate takes a date, which VR LO does not give"
    assert study.invalid[2].reason.startswith("NumberOfStudyRelatedSeries takes an int")


def test_a_value_invalid_for_its_own_vr_is_listed_once() -> None:
    study = Study.from_json({"00080020": {"vr": "DA", "Value": ["2024-01-01"]}})
    assert study.StudyDate is None
    assert [bad.keyword for bad in study.invalid] == ["StudyDate"]
    assert "not a DICOM date" in study.invalid[0].reason


def test_several_values_for_a_single_valued_field_are_listed_not_cut_to_the_first() -> None:
    item = {
        "0020000D": {"vr": "UI", "Value": ["1.2.3", "1.2.4"]},
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "A"}, {"Alphabetic": "B"}]},
        "00201206": {"vr": "IS", "Value": [1, 2], "extra": 1},  # kept as its JSON object
        "00080020": {"vr": "DA", "Value": ["20240101", ""]},  # one value and an empty one
        "00080061": {"vr": "CS", "Value": ["CT", "MR"]},  # a tuple field: fine
    }
    study = Study.from_json(item)
    assert study.StudyInstanceUID is None  # not "1.2.3": its children would miss 1.2.4's
    assert study.PatientName is None
    assert study.NumberOfStudyRelatedSeries is None
    assert study["StudyInstanceUID"] == ("1.2.3", "1.2.4")  # the mapping API has both
    assert study.StudyDate == datetime.date(2024, 1, 1)
    assert study.ModalitiesInStudy == ("CT", "MR")
    assert [(bad.keyword, bad.raw, bad.reason) for bad in study.invalid] == [
        (
            "PatientName",
            ({"Alphabetic": "A"}, {"Alphabetic": "B"}),
            "PatientName takes one value, 2 were sent",
        ),
        ("StudyInstanceUID", ("1.2.3", "1.2.4"), "StudyInstanceUID takes one value, 2 were sent"),
        (
            "NumberOfStudyRelatedSeries",
            (1, 2),
            "NumberOfStudyRelatedSeries takes one value, 2 were sent",
        ),
    ]
    again = attrs.evolve(study, StudyDescription="d")  # evolve keeps the elements
    assert again.to_json()["0020000D"] == item["0020000D"]
    assert again.StudyInstanceUID is None
    assert attrs.evolve(study, StudyInstanceUID="1.2.3").to_json()["0020000D"]["Value"] == ["1.2.3"]


def test_a_single_valued_field_reads_its_one_value_after_empty_ones() -> None:
    study = Study.from_json(
        {
            "0020000D": {"vr": "UI", "Value": [None, "1.2.3"]},
            "00080020": {"vr": "DA", "Value": ["", "20240101"]},
            "00100010": {"vr": "PN", "Value": [{}, {"Alphabetic": "Doe"}]},
            "00201206": {"vr": "IS", "Value": [None, 3], "extra": 1},
        }
    )
    assert study.StudyInstanceUID == "1.2.3"  # not None, listed as "UI does not give a str"
    assert study.StudyDate == datetime.date(2024, 1, 1)
    assert study.PatientName == PersonName("Doe")
    assert study.NumberOfStudyRelatedSeries == 3
    assert study.invalid == ()
    assert Study.from_json({"00201206": {"vr": "IS", "Value": ["", "x"]}}).invalid[0].raw == "x"


def test_empty_values_of_another_vr_are_not_invalid() -> None:
    study = Study.from_json({"00080020": {"vr": "LO", "Value": ["", None]}})
    assert study.StudyDate is None
    assert study.invalid == ()


def test_a_date_field_sent_as_dt_reads_its_day() -> None:
    study = Study.from_json({"00080020": {"vr": "DT", "Value": ["20240131235959+0100"]}})
    assert study.StudyDate == datetime.date(2024, 1, 31)
    assert type(study.StudyDate) is datetime.date  # not a datetime: it compares with dates
    assert study.invalid == ()


def test_a_typed_field_sent_as_bulk_data_reads_none_not_the_uri() -> None:
    uri = "http://pacs.example/bulk/1"
    study = Study.from_json({"00081030": {"vr": "LO", "BulkDataURI": uri}})
    assert study.StudyDescription is None  # not the URI as a description
    assert study["StudyDescription"] == BulkDataURI(uri)  # the mapping API gives it
