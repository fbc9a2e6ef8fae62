"""The one-pass decoding of common responses (:func:`aqido._elements.fast_stored`, issue 18).

A body made only of common elements (a VR other than SQ with a ``Value`` array of
strings, numbers, nulls or PN objects, or nothing but its ``vr``) under tag keys
already seen is decoded by msgspec straight into stored datasets; every other body
takes the general path (decode, then validate each item).  Both paths must give
the same responses and the same results: pinned here on a corpus, each body read
both ways.
"""

from __future__ import annotations

import gc
import json
from typing import Any

import attrs
import pytest

from aqido import _elements, protocol
from aqido._elements import _El, _Elements, fast_stored, json_item, raw_items
from aqido.protocol import QidoResponse, parse_response, rows
from aqido.results import Dataset, decode_json, parse_results, structure

HEADERS = {"Content-Type": "application/dicom+json"}
UID = "1.2.840.10008.5.1.4.1.1.4"


def _body(*items: dict[str, Any]) -> bytes:
    return json.dumps(list(items)).encode()


def _el(vr: str, *values: Any) -> dict[str, Any]:
    return {"vr": vr, "Value": list(values)}


#: Bodies the one pass reads (once their keys have been seen).
FAST_BODIES: dict[str, bytes] = {
    "instances": _body(
        {
            "00080016": _el("UI", UID),
            "00080018": _el("UI", "1.2.3.4"),
            "00200013": _el("IS", 1),
            "00200032": _el("DS", -125, -125.5, 0),
            "00280030": _el("DS", 0.5, 1e-300, 1.7976931348623157e308),
            "00280010": _el("US", 512),
            "00080020": _el("DA", "20130323"),
            "00080030": _el("TM", "150352.123"),
            "00081030": _el("LO", " padded \x00"),
        },
        {"00080016": _el("UI", UID), "00200013": _el("IS", 2)},
    ),
    "person names": _body(
        {
            "00100010": _el("PN", {"Alphabetic": "Doe^John", "Ideographic": "山田^太郎"}),
            "00080090": _el("PN", {"Alphabetic": None}, "Roe^Jane"),
        }
    ),
    "empty and null values": _body(
        {
            "00100010": {"vr": "PN"},
            "00100020": _el("LO"),
            "00100030": _el("DA", None, "20000101"),
            "00200013": _el("IS", None),
        }
    ),
    "integer bounds": _body(
        {"00200013": _el("IS", 2**63 - 1, -(2**63), 0, -1), "00280010": _el("US", 65535)}
    ),
    "invalid values": _body(
        {
            "00080020": _el("DA", "not a date"),
            "00200013": _el("IS", "x", 1.5),
            "00280010": _el("US", -5, 70000),
            "00080030": _el("TM", 12),
        }
    ),
    "several values": _body({"00080008": _el("CS", "ORIGINAL", "PRIMARY", "AXIAL")}),
    "escapes": b'[{"00100020": {"vr": "LO", "Value": ["Sch\\u00e4fer \\"x\\" \\/ \\u0000"]},'
    b' "00100010": {"vr": "PN", "Value": [{"Alphabetic": "\\ud83d\\ude00^Smile"}]}}]',
    "escaped names": b'[{"\\u0030\\u0030100020": {"\\u0076r": "LO", "V\\u0061lue": ["a"]}}]',
    "duplicate keys": b'[{"00100020": {"vr": "LO", "Value": ["first"]},'
    b' "00100020": {"vr": "SH", "Value": ["second"], "Value": ["third"]}}]',
    "no items": b"[]",
    "an empty item": b"[{}]",
    "whitespace": b' \n[ { "00100020" : { "vr" : "LO" , "Value" : [ "a" ] } } ]\n ',
}

#: Bodies that take the general path, whatever keys were seen.
GENERAL_BODIES: dict[str, bytes | str] = {
    "a sequence": _body({"00081032": _el("SQ", {"00080100": _el("SH", "P000")})}),
    "bulk data": _body({"7FE00010": {"vr": "OB", "BulkDataURI": "http://x/1"}}),
    "inline binary": _body({"7FE00010": {"vr": "OB", "InlineBinary": "AAAA"}}),
    "a lone SQ": _body({"00081032": {"vr": "SQ"}}),
    "a lowercase key": _body({"0020000d": _el("UI", "1.2")}),
    "a malformed key": _body({"0020000": _el("UI", "1.2")}),
    "an unknown VR": _body({"00100020": _el("XX", "a")}),
    "a VR that is not a string": _body({"00100020": {"vr": 5, "Value": ["a"]}}),
    "no VR": _body({"00100020": {"Value": ["a"]}}),
    "a null Value": _body({"00100020": {"vr": "LO", "Value": None}}),
    "a Value that is not an array": _body({"00100020": {"vr": "LO", "Value": "a"}}),
    "an unknown member": _body({"00100020": {"vr": "LO", "Value": ["a"], "x": 1}}),
    "a boolean": _body({"00200013": _el("IS", True)}),
    "a nested array": _body({"00200013": _el("IS", [1])}),
    "a nested object": _body({"00100010": _el("PN", {"Alphabetic": {"x": 1}})}),
    "an integer past int64": _body({"00280010": _el("UL", 2**63)}),
    "an integer past 64 bits": _body({"00280010": _el("UL", 2**70)}),
    "a huge integer": b'[{"00280010": {"vr": "UL", "Value": [' + b"9" * 400 + b"]}}]",
    "an element that is not an object": _body({"00100020": ["a"]}),
    "an item that is not an object": b'[{"00100020": {"vr": "LO"}}, 5]',
    "one dataset": b'{"00100020": {"vr": "LO", "Value": ["a"]}}',
    "not an array": b'"text"',
    "a lone surrogate": b'[{"00100020": {"vr": "LO", "Value": ["\\ud800"]}}]',
    "a lone low surrogate": b'[{"00100020": {"vr": "LO", "Value": ["x\\udc00"]}}]',
    "a lone surrogate in a key": b'[{"00100020": {"vr": "LO", "Value": [{"\\ud800": 1}]}}]',
    "invalid UTF-8": b'[{"00100020": {"vr": "LO", "Value": ["\xff"]}}]',
    "an encoded surrogate": b'[{"00100020": {"vr": "LO", "Value": ["\xed\xa0\x80"]}}]',
    "NaN": b'[{"00180050": {"vr": "DS", "Value": [NaN]}}]',
    "an infinite number": b'[{"00180050": {"vr": "DS", "Value": [1e400]}}]',
    "trailing text": b'[{"00100020": {"vr": "LO", "Value": ["a"]}}] x',
    "a trailing comma": b'[{"00100020": {"vr": "LO", "Value": ["a"]},}]',
    "a byte order mark": b'\xef\xbb\xbf[{"00100020": {"vr": "LO", "Value": ["a"]}}]',
    "keys differing in case": b'[{"0020000D": {"vr": "UI", "Value": ["1"]},'
    b' "0020000d": {"vr": "UI", "Value": ["2"]}}]',
    "a str body": '[{"00100020": {"vr": "LO", "Value": ["a"]}}]',
}


def _general(body: bytes | str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """``parse_response`` of ``body`` on the general path (or the error it raises)."""
    with monkeypatch.context() as m:
        m.setattr(protocol, "fast_stored", lambda body: None)
        return _outcome(body)


def _outcome(body: bytes | str) -> Any:
    try:
        response = parse_response(200, HEADERS, body)  # type: ignore[arg-type]
    except Exception as exc:
        return ("raised", type(exc), str(exc))
    try:
        results = structure(rows(response), "INSTANCE")
    except Exception as exc:
        return ("structure raised", type(exc), str(exc))
    return response, results


def _views(ds: Dataset) -> tuple[Any, ...]:
    """Everything a dataset shows: its JSON, values, elements, invalid values, typed fields."""
    fields = (
        {a.name: getattr(ds, a.name) for a in attrs.fields(type(ds))} if attrs.has(type(ds)) else {}
    )
    return (
        ds.to_json(),
        {name: ds[name] for name in ds},
        {name: ds.element(name) for name in ds},
        ds.invalid,
        fields,
        hash(ds),
    )


@pytest.mark.parametrize("name", FAST_BODIES)
def test_the_one_pass_gives_what_the_general_path_gives(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = FAST_BODIES[name]
    general = _general(body, monkeypatch)  # also checks (and so remembers) the tag keys
    stored = fast_stored(body)
    assert stored is not None, "the body should take the one pass"
    assert all(type(item) is _Elements for item in stored)
    fast = _outcome(body)
    response, results = fast
    assert response._items is None  # items not built yet
    assert [json_item(item) for item in stored] == decode_json(body)
    assert [_views(r) for r in results] == [_views(r) for r in general[1]]
    assert results == general[1]
    assert response == general[0]
    assert repr(response) == repr(general[0])
    assert response.items == decode_json(body)  # built on first access, then kept
    assert response.items is response.items
    assert rows(response) is response.items


@pytest.mark.parametrize("name", GENERAL_BODIES)
def test_every_other_body_takes_the_general_path(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = GENERAL_BODIES[name]
    general = _general(body, monkeypatch)
    assert fast_stored(body) is None  # type: ignore[arg-type]
    fast = _outcome(body)
    if isinstance(general, tuple) and general[0] in ("raised", "structure raised"):
        assert fast == general  # the same error, worded the same
    else:
        assert fast[0]._items is not None
        assert fast[0] == general[0]
        assert fast[1] == general[1]


def test_a_tag_key_not_seen_before_is_checked_and_remembered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A new process's first answer takes the one-pass decoding too: an uppercase tag key
    not seen before is checked there and remembered; anything else takes the general path
    (a lowercase key is normalised there, a malformed one refused with its error)."""
    good: set[str] = set()
    monkeypatch.setattr(_elements, "_GOOD_KEYS", good)
    body = _body({"00100020": _el("LO", "a"), "7FE10010": _el("LO", "b")})
    assert fast_stored(body) == [{"00100020": _El("LO", ("a",)), "7FE10010": _El("LO", ("b",))}]
    assert good == {"00100020", "7FE10010"}
    for key in ("0010002a", "0010002", "001000200", "0010002G", "+0010002", " 0010002"):
        assert fast_stored(_body({"00100020": _el("LO", "a"), key: _el("LO", "b")})) is None
    assert good == {"00100020", "7FE10010"}  # nothing of a refused item is remembered


def test_remembered_tag_keys_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    good = {f"0009{n:04X}" for n in range(4)}
    monkeypatch.setattr(_elements, "_GOOD_KEYS", good)
    monkeypatch.setattr(_elements, "_GOOD_KEYS_MAX", 5)
    # one new key fits (5), two more do not: still decoded (each was checked), not remembered
    assert fast_stored(_body({"00100020": _el("LO", "a")})) is not None
    assert len(good) == 5
    stored = fast_stored(_body({"00100030": _el("DA", "20240101"), "00100040": _el("CS", "F")}))
    assert stored is not None
    assert set(stored[0]) == {"00100030", "00100040"}
    assert len(good) == 5


def test_stored_elements_are_not_tracked_by_the_garbage_collector() -> None:
    body = FAST_BODIES["instances"]
    structure(decode_json(body), "INSTANCE")
    stored = fast_stored(body)
    assert stored is not None
    assert not any(gc.is_tracked(elem) for item in stored for elem in item.values())


def test_both_paths_store_the_same_form() -> None:
    body = FAST_BODIES["empty and null values"]
    general = structure(decode_json(body), "INSTANCE")[0]._raw
    stored = fast_stored(body)
    assert stored is not None
    assert stored[0] == general
    assert general["00100010"] == _El("PN")  # a lone vr
    assert general["00100020"] == _El("LO", ())  # an empty Value: not the same
    assert json_item(general) == json.loads(body)[0]


def test_raw_items_are_json() -> None:
    body = FAST_BODIES["several values"]
    stored = fast_stored(body)
    assert stored is not None
    assert raw_items([*stored, {"x": 1}]) == [*json.loads(body), {"x": 1}]


def test_a_response_built_with_items_reads_them() -> None:
    response = QidoResponse(200, "u", {}, [{"00100020": _el("LO", "a")}])
    assert rows(response) is response.items
    again = attrs.evolve(response, items=[])
    assert again.items == []
    assert rows(again) == []


def test_items_changed_after_first_access_are_what_the_crawl_reads() -> None:
    body = FAST_BODIES["several values"]
    structure(decode_json(body), "INSTANCE")
    response = parse_response(200, HEADERS, body)
    assert rows(response) is response._stored
    response.items.clear()
    assert rows(response) == []


@pytest.mark.parametrize("name", ["instances", "person names", "invalid values"])
def test_parse_results_of_a_body_takes_the_one_pass(name: str) -> None:
    body = FAST_BODIES[name]
    general = parse_results(decode_json(body), "SERIES")
    assert fast_stored(body) is not None
    assert parse_results(body, "SERIES") == general
