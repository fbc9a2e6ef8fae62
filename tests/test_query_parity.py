"""Query features for users of dicomtrolley and dicomweb-client (issue 16), pure layer.

- an unknown keyword raises ``UnknownFieldError`` (an ``InvalidQueryError``, so a
  ``ValueError``, and a ``TypeError``) naming the field and the closest one;
- ``extra_params``: vendor-specific parameters, repeated in order, validated;
- ``permissive_uid``: UIDs that are not PS3.5-conformant but safe in a URL.
"""

from __future__ import annotations

import re
import urllib.parse
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from aqido import (
    HierarchicalQuery,
    InvalidQueryError,
    QueryLevel,
    QueryTypeError,
    RelationalQuery,
    UnknownFieldError,
    dictionary,
    ensure_query_type,
    is_permissive_uid,
    is_valid_uid,
)
from aqido import query as query_module
from aqido._query_values import _keywords_by_lower
from aqido.query import PERMISSIVE_UID_MAX, RESERVED_PARAMS, BaseQuery

KINDS = [HierarchicalQuery, RelationalQuery]
SERIES = {"query_level": QueryLevel.SERIES}  # valid for both kinds with a study UID


def _valid(kind: type[BaseQuery], **extra: Any) -> dict[str, Any]:
    return {"query_level": QueryLevel.SERIES, "StudyInstanceUID": "1.2.3", **extra}


# --- unknown fields --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_a_misspelt_field_names_itself_and_the_closest_field(kind: type[BaseQuery]) -> None:
    with pytest.raises(UnknownFieldError) as info:
        kind(**_valid(kind, SOPClassInstanceUID="789"))
    error = info.value
    assert isinstance(error, InvalidQueryError)
    assert isinstance(error, ValueError)
    assert isinstance(error, TypeError)
    assert isinstance(error, QueryTypeError)
    assert error.field == "SOPClassInstanceUID"
    assert error.suggestion == "SOPInstanceUID"
    assert str(error).startswith(f"{kind.__name__}: unknown field 'SOPClassInstanceUID'")
    assert "did you mean SOPInstanceUID=...?" in str(error)
    assert "filters=" in str(error)


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [
        ("patientname", "PatientName"),
        ("PatientNmae", "PatientName"),
        ("min_studydate", "min_study_date"),
        ("include_field", "include_fields"),
        ("fields", "include_fields"),
        ("search_filters", "filters"),
        ("additional_params", "extra_params"),
        ("study_instance_uid", "StudyInstanceUID"),
        ("permissive_uids", "permissive_uid"),
        ("limt", "limit"),
    ],
)
def test_suggestions(name: str, suggestion: str) -> None:
    with pytest.raises(UnknownFieldError, match=rf"did you mean {suggestion}=") as info:
        HierarchicalQuery(**{name: "x"})
    assert info.value.suggestion == suggestion


def test_a_dicom_keyword_is_pointed_to_filters() -> None:
    with pytest.raises(UnknownFieldError) as info:
        HierarchicalQuery(PatientBirthDate="19700101")
    assert info.value.suggestion is None
    assert "filters={'PatientBirthDate': ...}" in str(info.value)


def test_a_name_like_nothing_lists_the_fields_and_every_unknown_name() -> None:
    with pytest.raises(UnknownFieldError) as info:
        RelationalQuery(query_level="SERIES", zzz=1, qqqqqqqq=2)
    message = str(info.value)
    assert info.value.field == "qqqqqqqq"
    assert "(and 'zzz')" in message
    assert "the fields are query_level, StudyInstanceUID" in message


@given(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,30}", fullmatch=True))
def test_any_name_that_is_not_a_field_raises_unknown_field_error(name: str) -> None:
    fields = {a.name for a in attrs.fields(HierarchicalQuery)}
    if name in fields:
        return
    with pytest.raises(UnknownFieldError) as info:
        HierarchicalQuery(**{name: "x"})
    assert info.value.field == name
    assert info.value.suggestion is None or info.value.suggestion in fields
    assert repr(name) in str(info.value)


def test_evolve_with_an_unknown_field_raises_the_same_error() -> None:
    with pytest.raises(UnknownFieldError, match="unknown field 'Limit'"):
        attrs.evolve(HierarchicalQuery(), Limit=3)


def test_base_query_too() -> None:
    with pytest.raises(UnknownFieldError, match="BaseQuery: unknown field 'nope'"):
        BaseQuery(nope=1)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="abstract"):
        BaseQuery()


def test_the_signature_still_shows_the_fields() -> None:
    """help() and IDEs see the real fields through the wrapper."""
    import inspect

    parameters = inspect.signature(HierarchicalQuery).parameters
    assert "extra_params" in parameters
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in parameters.values())


def test_a_subclass_gets_the_same_error() -> None:
    @query_module._reject_unknown_fields
    @attrs.frozen(kw_only=True, repr=False)
    class Wrapped(HierarchicalQuery):
        pass

    assert Wrapped(PatientID="P1").PatientID == "P1"
    with pytest.raises(UnknownFieldError, match="did you mean SOPInstanceUID"):
        Wrapped(SOPClassInstanceUID="1")  # type: ignore[call-arg]
    with pytest.raises(InvalidQueryError, match="not a valid DICOM UID"):
        Wrapped(StudyInstanceUID="x")


def test_ensure_query_type_refuses_unknown_keys_as_before() -> None:
    with pytest.raises(InvalidQueryError, match="no field for"):
        ensure_query_type({"SOPClassInstanceUID": "789"})


# --- extra_params ----------------------------------------------------------------------------


def test_extra_params_are_repeated_in_order_after_aqidos_own() -> None:
    query = HierarchicalQuery(
        PatientID="P1",
        limit=5,
        extra_params={"key1": ["value1", "value2"], "key2": "value3"},
    )
    assert query.extra_params == (("key1", ("value1", "value2")), ("key2", ("value3",)))
    assert query.query_string() == "PatientID=P1&limit=5&key1=value1&key1=value2&key2=value3"
    assert query.uri_search_params() == {
        "PatientID": "P1",
        "limit": "5",
        "key1": ["value1", "value2"],
        "key2": "value3",
    }


def test_extra_params_from_pairs_group_a_repeated_name_at_its_first_place() -> None:
    query = HierarchicalQuery(extra_params=[("a", "1"), ("b", "2"), ("a", ["3", "4"])])
    assert query.query_string() == "a=1&a=3&a=4&b=2"


def test_extra_params_values_are_encoded_as_other_values() -> None:
    query = HierarchicalQuery(extra_params={"q x": ["a&b=c", "Müller^*", ""]})
    assert query.query_string() == "q%20x=a%26b%3Dc&q%20x=M%C3%BCller^*&q%20x="
    parsed = urllib.parse.parse_qsl(query.query_string(), keep_blank_values=True)
    assert parsed == [("q x", "a&b=c"), ("q x", "Müller^*"), ("q x", "")]


def test_extra_params_survive_evolve_and_are_part_of_equality() -> None:
    query = HierarchicalQuery(extra_params={"tenant": "A"})
    paged = attrs.evolve(query, limit=10, offset=20)
    assert paged.query_string() == "limit=10&offset=20&tenant=A"
    assert query != HierarchicalQuery(extra_params={"tenant": "B"})
    assert hash(query) == hash(HierarchicalQuery(extra_params=[("tenant", "A")]))
    assert "extra_params=(('tenant', ('A',)),)" in repr(query)


@pytest.mark.parametrize("name", [*sorted(RESERVED_PARAMS), "LIMIT", "IncludeField"])
def test_names_aqido_sets_are_refused(name: str) -> None:
    with pytest.raises(InvalidQueryError, match="a parameter aqido sets itself"):
        HierarchicalQuery(extra_params={name: "1"})


@pytest.mark.parametrize(
    "name",
    [
        "PatientID",
        "00100020",
        "StudyDate",
        "StudyInstanceUID",
        # another case: a server that reads keywords in any case got the attribute twice
        # (PatientID=P1&patientid=x), or a StudyDate range overridden by the vendor one
        "patientid",
        "STUDYDATE",
        "modalitiesInStudy",
    ],
)
def test_attribute_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidQueryError, match=r"is a DICOM attribute; match it .* filters="):
        HierarchicalQuery(PatientID="P1", min_study_date="2024-01-01", extra_params={name: "x"})


def test_command_keywords_in_another_case_are_vendor_parameters() -> None:
    # group 0000 (Status, Priority) is never matched by a query: 'status' may be a vendor's
    query = HierarchicalQuery(extra_params={"status": "x", "priority": "y"})
    assert query.query_string() == "status=x&priority=y"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"k": "a\r\nInjected: 1"}, "control character"),
        ({"k\n": "a"}, "control character"),
        ({"k": ["a", "b\x00"]}, "control character"),
        ({"k": []}, "no value"),
        ({"": "a"}, "not a parameter name"),
        ("key=value", "not a mapping"),
        ([("k", "v", "w")], "not a \\(name, value\\) pair"),
    ],
)
def test_bad_extra_params_are_refused(params: Any, message: str) -> None:
    with pytest.raises(InvalidQueryError, match=message):
        HierarchicalQuery(extra_params=params)


@pytest.mark.parametrize("value", [5, ["a", 5], None, b"x"])
def test_extra_params_values_must_be_text(value: Any) -> None:
    with pytest.raises(QueryTypeError, match="is not a str"):
        HierarchicalQuery(extra_params={"k": value})


names = st.text(alphabet=st.characters(codec="ascii", categories=("L", "Nd")), min_size=1).filter(
    lambda n: n.lower() not in RESERVED_PARAMS and n.lower() not in {"all"}
)
values = st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs")), max_size=8)


@given(st.lists(st.tuples(names, st.lists(values, min_size=1, max_size=3)), max_size=4))
def test_extra_params_round_trip_through_a_query_string_parser(
    pairs: list[tuple[str, list[str]]],
) -> None:
    attribute = [
        name
        for name, _ in pairs
        if dictionary.tag_for_keyword(name) is not None
        or dictionary.is_tag_key(name)
        or name.lower() in _keywords_by_lower()
    ]
    if attribute:
        with pytest.raises(InvalidQueryError, match="is a DICOM attribute"):  # e.g. 'Rows'
            RelationalQuery(query_level="SERIES", extra_params=pairs)
        return
    query = RelationalQuery(query_level="SERIES", extra_params=pairs)
    expected: dict[str, list[str]] = {}
    for name, items in pairs:
        expected.setdefault(name, []).extend(items)
    sent = urllib.parse.parse_qsl(query.query_string(), keep_blank_values=True)
    assert sent == [(name, value) for name, items in expected.items() for value in items]


# --- permissive UIDs -------------------------------------------------------------------------

NON_CONFORMANT = ["01.2.3", "1.2.3.ABC", "13-abc", "hello", "1.2_3~4", "a" * PERMISSIVE_UID_MAX]
UNSAFE = [
    "1/23.4",
    "1.23.5@",
    "1.2?3",
    "1.2#3",
    "1.2%2E3",
    "is it",
    "you're me",
    "1.2*",
    "a&b",
    "a+b",
    "a=b",
    "a;b",
    "a\\b",
    "Müller",
    ".",
    "..",
    "...",
    "a" * (PERMISSIVE_UID_MAX + 1),
]


@pytest.mark.parametrize("uid", NON_CONFORMANT)
def test_permissive_accepts_non_conformant_uids_strict_does_not(uid: str) -> None:
    assert is_permissive_uid(uid)
    assert not is_valid_uid(uid)
    with pytest.raises(InvalidQueryError, match="pass permissive_uid=True"):
        HierarchicalQuery(query_level="SERIES", StudyInstanceUID=uid)
    query = HierarchicalQuery(query_level="SERIES", StudyInstanceUID=uid, permissive_uid=True)
    assert query.uri_base() == f"/studies/{uid}/series"


@pytest.mark.parametrize("uid", UNSAFE)
def test_permissive_still_refuses_what_is_unsafe_in_a_url(uid: str) -> None:
    assert not is_permissive_uid(uid)
    with pytest.raises(InvalidQueryError, match="even with permissive_uid=True"):
        HierarchicalQuery(query_level="SERIES", StudyInstanceUID=uid, permissive_uid=True)


@pytest.mark.parametrize("uid", ["1.2,3", "a\r\nb", "a\x00b\x00\x00", ""])
def test_permissive_and_lists_separators_and_control_characters(uid: str) -> None:
    kwargs: dict[str, Any] = {
        "query_level": "INSTANCE",
        "StudyInstanceUID": "x1",
        "SeriesInstanceUID": uid,
        "permissive_uid": True,
    }
    with pytest.raises(InvalidQueryError):
        HierarchicalQuery(**kwargs)


def test_permissive_covers_every_uid_field_lists_and_ui_filters() -> None:
    query = RelationalQuery(
        query_level="INSTANCE",
        StudyInstanceUID=["01.1", "02.2"],
        SeriesInstanceUID="S-1",
        SOPInstanceUID="I_1 \x00",
        filters={"SOPClassUID": "1.2.840.X"},
        permissive_uid=True,
    )
    assert query.query_string() == (
        "StudyInstanceUID=01.1,02.2&SeriesInstanceUID=S-1&SOPInstanceUID=I_1&SOPClassUID=1.2.840.X"
    )
    with pytest.raises(InvalidQueryError, match=re.escape("filters['SOPClassUID']")):
        RelationalQuery(query_level="INSTANCE", filters={"SOPClassUID": "1.2.840.X"})
    with pytest.raises(InvalidQueryError, match="SOPInstanceUID"):
        RelationalQuery(query_level="INSTANCE", SOPInstanceUID="I_1")


def test_permissive_must_be_a_bool_and_is_kept_by_evolve() -> None:
    with pytest.raises(InvalidQueryError, match="permissive_uid: 'yes' is not a bool"):
        HierarchicalQuery(permissive_uid="yes")  # type: ignore[arg-type]
    query = HierarchicalQuery(permissive_uid=True)
    child = attrs.evolve(query, query_level=QueryLevel.SERIES, StudyInstanceUID="0.01")
    assert child.permissive_uid
    assert child.uri_base() == "/studies/0.01/series"
    # Strict again when asked: the same UID is refused.
    with pytest.raises(InvalidQueryError, match="not a valid DICOM UID"):
        attrs.evolve(child, permissive_uid=False)


def test_ensure_query_type_permissive_only_converts_what_is_not_an_aqido_query() -> None:
    converted = ensure_query_type(
        {"query_level": "SERIES", "StudyInstanceUID": "01.2"}, permissive_uid=True
    )
    assert converted.permissive_uid
    assert converted.uri_base() == "/studies/01.2/series"
    with pytest.raises(InvalidQueryError):
        ensure_query_type({"query_level": "SERIES", "StudyInstanceUID": "01.2"})
    strict = HierarchicalQuery()
    assert ensure_query_type(strict, permissive_uid=True) is strict
    explicit = ensure_query_type({"permissive_uid": False}, permissive_uid=True)
    assert not explicit.permissive_uid


@given(
    st.lists(st.integers(min_value=0, max_value=10**6).map(str), min_size=1, max_size=8).map(
        ".".join
    )
)
def test_every_valid_uid_is_permissive(uid: str) -> None:
    if is_valid_uid(uid):
        assert is_permissive_uid(uid)


@given(st.text(max_size=140))
def test_a_permissive_uid_needs_no_encoding_anywhere(text: str) -> None:
    if is_permissive_uid(text):
        assert 1 <= len(text) <= PERMISSIVE_UID_MAX
        assert urllib.parse.quote(text, safe="") == text  # unreserved only
        assert text.strip(".")
