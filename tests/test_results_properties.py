"""Property tests: for generated DICOM JSON, parsing never loses or breaks anything."""

from __future__ import annotations

import base64
import copy
import warnings
from typing import Any

import attrs
import pydicom
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aqido.results import Instance, Series, Study, structure

HEX = set("0123456789ABCDEF")
STRING_VRS = ["AE", "AS", "CS", "LO", "LT", "SH", "ST", "UC", "UI", "UR", "UT"]
INT_VRS = ["IS", "SL", "SS", "UL", "US", "SV", "UV"]
FLOAT_VRS = ["FL", "FD", "DS"]
BINARY_VRS = ["OB", "OD", "OF", "OL", "OV", "OW", "UN"]

# Default-attribute tags are drawn often, so typed fields see junk too.
KNOWN_KEYS = [
    "00080005", "00080020", "00080030", "00080050", "00080061", "00080090", "00081030",
    "00081190", "00100010", "00100020", "00100030", "0020000D", "0020000E", "00200011",
    "00201206", "00080018", "00280010", "00400275", "00400244", "00400245",
]  # fmt: skip

keys = st.one_of(
    st.sampled_from(KNOWN_KEYS),
    st.text(alphabet="0123456789ABCDEF", min_size=8, max_size=8),
)
text = st.text(max_size=12)
maybe_empty = st.sampled_from([None, ""])


def value_list(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[list[Any]]:
    return st.lists(st.one_of(inner, maybe_empty), max_size=3)


def element(items: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    pn_group = st.text(alphabet="abcXYZ^山田やまだ홍 ", max_size=10)
    pn_value = st.one_of(
        st.fixed_dictionaries(
            {},
            optional={"Alphabetic": pn_group, "Ideographic": pn_group, "Phonetic": pn_group},
        ),
        pn_group,
    )
    choices = [
        st.tuples(st.sampled_from(STRING_VRS), value_list(text)),
        st.tuples(st.just("PN"), value_list(pn_value)),
        st.tuples(
            st.sampled_from(INT_VRS),
            value_list(st.one_of(st.integers(-(2**40), 2**40), text)),
        ),
        st.tuples(
            st.sampled_from(FLOAT_VRS),
            value_list(st.one_of(st.floats(allow_nan=False, allow_infinity=False), text)),
        ),
        st.tuples(
            st.just("DA"),
            value_list(st.one_of(st.dates().map(lambda d: d.strftime("%Y%m%d")), text)),
        ),
        st.tuples(st.sampled_from(["TM", "DT"]), value_list(st.text("0123456789.+-", max_size=20))),
        st.tuples(st.just("AT"), value_list(st.text("0123456789ABCDEF", min_size=8, max_size=8))),
        st.tuples(st.just("SQ"), st.lists(items, max_size=2)),
    ]
    with_value = st.one_of(*choices).map(lambda t: {"vr": t[0], "Value": t[1]})
    no_value = st.sampled_from(["LO", "PN", "DA", "IS", "SQ", "UI"]).map(lambda vr: {"vr": vr})
    bulk = st.tuples(
        st.sampled_from(BINARY_VRS),
        st.one_of(
            st.binary(max_size=8).map(lambda b: {"InlineBinary": base64.b64encode(b).decode()}),
            st.text(max_size=20).map(lambda u: {"BulkDataURI": u}),
        ),
    ).map(lambda t: {"vr": t[0], **t[1]})
    return st.one_of(with_value, no_value, bulk)


dicom_json = st.recursive(
    st.just({}),
    lambda items: st.dictionaries(keys, element(items), max_size=6),
    max_leaves=12,
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(item=dicom_json, model=st.sampled_from([Study, Series, Instance]))
def test_round_trip_and_every_value_readable(item: dict[str, Any], model: type[Study]) -> None:
    original = copy.deepcopy(item)
    [result] = structure([item], model.__name__.upper())
    assert result.to_json() == original
    assert item == original  # parsing does not modify its input
    for name in result:  # the mapping API never raises, whatever the values
        result[name]
        assert name in result
    for field in attrs.fields(model):
        getattr(result, field.name)
    bad = result.invalid
    assert all(b.key in original for b in bad)
    assert len(result) == len(original)


@settings(max_examples=100, deadline=None)
@given(item=dicom_json)
def test_lowercase_keys_are_uppercased_and_nothing_else_changes(item: dict[str, Any]) -> None:
    def lower(x: Any) -> Any:
        if isinstance(x, dict):
            return {(k.lower() if set(k) <= HEX else k): lower(v) for k, v in x.items()}
        if isinstance(x, list):
            return [lower(v) for v in x]
        return x

    [result] = structure([lower(item)], "STUDY")
    assert result.to_json() == item


@settings(max_examples=30, deadline=None)
@given(item=dicom_json)
def test_to_pydicom_equals_from_json_whenever_pydicom_can_read_it(item: dict[str, Any]) -> None:
    [result] = structure([copy.deepcopy(item)], "STUDY")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            expected = pydicom.Dataset.from_json(copy.deepcopy(item))
        except Exception:  # pydicom refuses some junk values; nothing to compare then
            return
        assert result.to_pydicom() == expected


def _as_floats(value: Any) -> Any:
    """Every exact int (not bool) in a JSON value as a float: equal in Python, not in JSON."""
    if isinstance(value, dict):
        return {k: _as_floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_floats(v) for v in value]
    if type(value) is int and abs(value) <= 2**53:
        return float(value)
    return value


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(item=dicom_json, model=st.sampled_from([Study, Series, Instance]))
def test_equal_results_hash_equal(item: dict[str, Any], model: type[Study]) -> None:
    # Found by review: 72 == 72.0 made results equal whose hashes (of the JSON text) differed.
    level = model.__name__.upper()
    [a] = structure([copy.deepcopy(item)], level)
    [same] = structure([copy.deepcopy(item)], level)
    [floats] = structure([_as_floats(copy.deepcopy(item))], level)
    assert a == same
    assert hash(a) == hash(same)
    if a == floats:
        assert hash(a) == hash(floats)
    assert (a == floats) == (json_text(a) == json_text(floats))


def json_text(result: Study) -> str:
    """The JSON text of a result: what tells 72 from 72.0."""
    import json

    return json.dumps(result.to_json(), sort_keys=True)
