"""aqido.matching: the standard's matching rules, checked against independent oracles."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from aqido.errors import InvalidQueryError
from aqido.matching import (
    STANDARD,
    Criterion,
    MatchOptions,
    compile_value,
    element_strings,
    filter_datasets,
    match_form,
    matches_element,
)
from aqido.profile import ServerProfile


def wildcard_oracle(pattern: str, text: str) -> bool:
    """``*``/``?`` matching by dynamic programming (no regular expressions)."""
    n, m = len(pattern), len(text)
    table = [[False] * (m + 1) for _ in range(n + 1)]
    table[0][0] = True
    for i in range(1, n + 1):
        table[i][0] = table[i - 1][0] and pattern[i - 1] == "*"
    for i in range(1, n + 1):
        p = pattern[i - 1]
        for j in range(1, m + 1):
            if p == "*":
                table[i][j] = table[i - 1][j] or table[i][j - 1]
            else:
                table[i][j] = table[i - 1][j - 1] and (p == "?" or p == text[j - 1])
    return table[n][m]


def lo(*values: Any) -> dict[str, Any]:
    return {"vr": "LO", "Value": list(values)}


def pn(*alphabetic: str, **groups: str) -> dict[str, Any]:
    if groups:
        return {"vr": "PN", "Value": [groups]}
    return {"vr": "PN", "Value": [{"Alphabetic": a} for a in alphabetic]}


TEXT = st.text(alphabet="aAb^ ", max_size=8)
PATTERN = st.text(alphabet="aAb^*?", min_size=1, max_size=8)


@given(pattern=PATTERN, value=st.text(alphabet="aAb^", min_size=1, max_size=8))
def test_wildcards_agree_with_the_oracle(pattern: str, value: str) -> None:
    expected = pattern == "*" or wildcard_oracle(pattern, value)
    assert matches_element(lo(value), pattern, "LO") is expected


@given(pattern=PATTERN, value=st.text(alphabet="aAb^", min_size=1, max_size=8))
def test_case_insensitive_wildcards_agree_with_the_folded_oracle(pattern: str, value: str) -> None:
    options = MatchOptions(case_sensitive=False)
    expected = pattern == "*" or wildcard_oracle(pattern.lower(), value.lower())
    assert matches_element(lo(value), pattern, "LO", options) is expected


@given(value=st.text(alphabet="aAb^", min_size=1, max_size=8), stored=TEXT)
def test_single_values_match_exactly_and_case_sensitively(value: str, stored: str) -> None:
    # padding is not part of the value (SH, LO... may be padded at both ends, PS3.5 6.2)
    assert matches_element(lo(stored), value, "SH") is (stored.strip(" ") == value)


@given(stored=st.one_of(st.none(), st.just({"vr": "LO"}), st.just(lo()), st.just(lo(None))))
def test_universal_matching_matches_absent_and_empty_values(stored: dict[str, Any] | None) -> None:
    assert matches_element(stored, "", "LO")
    assert matches_element(stored, "*", "LO")  # '*' alone is universal matching
    assert compile_value("*", "LO") is None
    assert not matches_element(stored, "a*", "LO")  # any other form needs a value
    assert not matches_element(stored, "?", "LO")
    assert not matches_element(stored, "a", "LO")


@given(
    values=st.lists(st.text(alphabet="ab*", min_size=1, max_size=3), min_size=1, max_size=4),
    stored=st.lists(st.text(alphabet="ab", min_size=1, max_size=3), max_size=3),
)
def test_a_list_is_the_or_of_its_values(values: list[str], stored: list[str]) -> None:
    elem = {"vr": "CS", "Value": stored}
    expected = any(matches_element(elem, v, "CS") for v in values)
    assert matches_element(elem, ",".join(values), "CS") is expected
    # a server without value lists reads the comma literally
    literal = MatchOptions(value_lists=False)
    if len(values) > 1:
        assert matches_element(elem, ",".join(values), "CS", literal) is (
            any(wildcard_oracle(",".join(values), s) for s in stored)
        )


@given(
    uids=st.lists(st.sampled_from(["1.2", "1.2.3", "1.20", "2.5"]), min_size=1, max_size=3),
    stored=st.sampled_from(["1.2", "1.2.3", "1.20", "2.5", "9"]),
)
def test_uid_lists(uids: list[str], stored: str) -> None:
    elem = {"vr": "UI", "Value": [stored]}
    assert matches_element(elem, ",".join(uids), "UI") is (stored in uids)
    assert matches_element(elem, "1.*", "UI") is False  # no wildcards in UIDs


@given(
    stored=st.lists(st.sampled_from(["CT", "MR", "SR", "PT"]), max_size=4),
    wanted=st.sampled_from(["CT", "MR", "SR", "PT"]),
)
def test_multi_valued_attributes_match_when_any_value_does(stored: list[str], wanted: str) -> None:
    assert matches_element({"vr": "CS", "Value": stored}, wanted, "CS") is (wanted in stored)


DATES = st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(2099, 12, 31))


def da(d: dt.date) -> str:
    return d.strftime("%Y%m%d")


@given(stored=DATES, low=st.one_of(st.none(), DATES), high=st.one_of(st.none(), DATES))
def test_date_ranges_agree_with_date_comparisons(
    stored: dt.date, low: dt.date | None, high: dt.date | None
) -> None:
    if low is None and high is None:
        return
    value = f"{da(low) if low else ''}-{da(high) if high else ''}"
    expected = (low is None or low <= stored) and (high is None or stored <= high)
    assert matches_element({"vr": "DA", "Value": [da(stored)]}, value, "DA") is expected
    assert matches_element({"vr": "DA", "Value": [da(stored)]}, da(stored), "DA")
    assert not matches_element({"vr": "DA"}, value, "DA")  # empty never matches a range


TIMES = st.times().map(lambda t: t.replace(microsecond=0))


@given(stored=TIMES, low=TIMES, high=TIMES)
def test_time_ranges_compare_within_one_day(stored: dt.time, low: dt.time, high: dt.time) -> None:
    value = f"{low:%H%M%S}-{high:%H%M%S}"
    expected = low <= stored <= high  # a range that crosses midnight matches nothing
    assert matches_element({"vr": "TM", "Value": [f"{stored:%H%M%S}"]}, value, "TM") is expected


def test_a_time_bound_with_less_precision_covers_its_span() -> None:
    elem = {"vr": "TM", "Value": ["130059.5"]}
    assert matches_element(elem, "-1300", "TM")
    assert matches_element(elem, "13-13", "TM")
    assert not matches_element(elem, "1301-", "TM")
    assert not matches_element(elem, "2200-0200", "TM")


def test_a_leap_second_is_in_its_minute() -> None:
    # TM seconds run to 60 (PS3.5): 23:59:60 is within 23:59, as parse_tm reads it
    # (23:59:59) and as a DT's leap second already matched
    elem = {"vr": "TM", "Value": ["235960"]}
    assert matches_element(elem, "2300-2359", "TM")
    assert matches_element(elem, "-235959", "TM")
    assert matches_element({"vr": "TM", "Value": ["125960.5"]}, "1259-1259", "TM")
    assert not matches_element({"vr": "TM", "Value": ["125960"]}, "1300-", "TM")
    assert matches_element({"vr": "DT", "Value": ["20241231235960"]}, "-20241231235959", "DT")


def test_datetime_ranges() -> None:
    elem = {"vr": "DT", "Value": ["20240131120000"]}
    assert matches_element(elem, "20240131-20240131", "DT")
    assert matches_element(elem, "2024-", "DT")
    assert not matches_element(elem, "20240201-", "DT")


def dt_value(value: str) -> dict[str, Any]:
    return {"vr": "DT", "Value": [value]}


def test_datetime_ranges_compare_instants_not_text() -> None:
    # a fraction is inside a whole-second range ('.' sorts before the digits as text)
    assert matches_element(dt_value("20240101120000.5"), "20240101120000-20240101130000", "DT")
    assert not matches_element(dt_value("20240101120000"), "20240101120000.000001-", "DT")
    # a bound of reduced precision spans the whole period it names; a stored value
    # of reduced precision is its first instant (as aqido.values.parse_dt reads it)
    assert matches_element(dt_value("20241231235959.999999"), "-2024", "DT")
    assert not matches_element(dt_value("20250101"), "-2024", "DT")
    assert matches_element(dt_value("20240229235959"), "202402-202402", "DT")
    assert matches_element(dt_value("202402"), "-20240201", "DT")
    assert not matches_element(dt_value("2024"), "20240601-", "DT")
    # an offset on the stored value alone: its day, as written ('+' sorts before digits)
    assert matches_element(dt_value("20240101+0100"), "20240101-20240101", "DT")


def test_datetime_ranges_apply_utc_offsets() -> None:
    utc_day = "20240102000000+0000-20240102235959+0000"
    assert matches_element(dt_value("20240101230000-0500"), utc_day, "DT")  # 04:00 UTC on the 2nd
    assert not matches_element(dt_value("20240102230000-0500"), utc_day, "DT")  # 04:00 on the 3rd
    morning = "20240101000000+0000-20240101120000+0000"
    assert not matches_element(dt_value("20240101110000-0500"), morning, "DT")  # 16:00 UTC
    assert matches_element(dt_value("20240101130000+0200"), morning, "DT")  # 11:00 UTC


def test_a_date_of_reduced_precision_is_its_whole_span() -> None:
    # The query accepts a year or a month alone (StudyDate=2024): the matcher reads it
    # as the days it stands for, as a single value and as a range bound.
    def da_matches(stored: str, value: str) -> bool:
        return matches_element({"vr": "DA", "Value": [stored]}, value, "DA")

    assert da_matches("20240101", "2024")
    assert da_matches("20241231", "2024")
    assert not da_matches("20250101", "2024")
    assert not da_matches("20231231", "2024")
    assert da_matches("20240229", "202402")
    assert not da_matches("20240301", "202402")
    assert da_matches("20251231", "2024-2025")
    assert not da_matches("20260101", "2024-2025")
    assert da_matches("20241231", "-2024")
    assert not da_matches("20250101", "-2024")
    assert da_matches("20240101", "2024-")
    assert not da_matches("20231231", "2024-")
    assert da_matches("2024.03.31", "202403-202403")


def test_a_single_time_or_datetime_value_covers_its_precision() -> None:
    # PS3.4 C.2.2.2.1 names no text comparison for TM/DT: a value is the span its
    # precision covers, as dcm4chee reads it (the range v-v), written in any form
    def tm_matches(stored: str, value: str) -> bool:
        return matches_element({"vr": "TM", "Value": [stored]}, value, "TM")

    assert tm_matches("120000", "12")
    assert tm_matches("125959.999", "12")
    assert not tm_matches("130000", "12")
    assert not tm_matches("115959", "12")
    assert tm_matches("120000", "1200")
    assert tm_matches("120030", "1200")
    assert tm_matches("1200", "12:00")
    assert tm_matches("12:00:00", "120000")
    assert tm_matches("120000.5", "120000")
    assert not tm_matches("120001", "120000")
    assert matches_element(dt_value("20240615120000"), "2024", "DT")
    assert not matches_element(dt_value("20250101"), "2024", "DT")
    # the same instant at another offset
    assert matches_element(dt_value("20240101120000+0100"), "20240101110000+0000", "DT")


def test_a_single_temporal_value_compared_as_text_emulates_orthanc() -> None:
    # Orthanc compares a single DA/TM value as text (StudyTime=1200 finds no 120000): the
    # option FakeArchive.orthanc_like matches with (test_fake_vs_orthanc checks it live)
    text = MatchOptions(temporal_spans=False)
    assert matches_element({"vr": "TM", "Value": ["1200"]}, "1200", "TM", text)
    assert not matches_element({"vr": "TM", "Value": ["120000"]}, "1200", "TM", text)
    assert not matches_element({"vr": "DA", "Value": ["20100607"]}, "2010", "DA", text)
    assert matches_element({"vr": "TM", "Value": ["120000"]}, "1200-1200", "TM", text)  # a range


def test_datetimes_at_the_ends_of_the_calendar_keep_their_offsets() -> None:
    # In UTC, 0001-01-01 00:00+01:00 is in the year 0 and 9999-12-31 23:59-01:00 in
    # the year 10000: neither may be refused nor left out of a range that holds it.
    first, last = dt_value("00010101000000+0100"), dt_value("99991231235959-0100")
    assert matches_element(first, "0001-", "DT")
    assert matches_element(first, "0001-0002", "DT")
    assert matches_element(last, "9999-", "DT")
    assert matches_element(last, "-9999", "DT")
    assert matches_element(first, "00010101000000+0100", "DT")
    assert matches_element(first, "-00010101000000+0100", "DT")
    assert not matches_element(first, "00010101000000+0000-", "DT")  # 23:00 UTC the day before
    assert matches_element(first, "-00010101000000+0000", "DT")
    assert matches_element(last, "99991231235959+0000-", "DT")  # 00:59 UTC the day after


def test_a_single_date_matches_the_retired_form_as_a_range_does() -> None:
    old_form = {"vr": "DA", "Value": ["2024.01.01"]}
    assert matches_element(old_form, "20240101", "DA")
    assert matches_element(old_form, "20240101-20240101", "DA")
    assert not matches_element(old_form, "20240102", "DA")


def test_person_names_match_the_whole_value_and_each_group() -> None:
    yamada = pn(Alphabetic="Yamada^Tarou", Ideographic="山田^太郎")
    assert matches_element(yamada, "Yamada^Tarou=山田^太郎", "PN")
    assert matches_element(yamada, "Yamada^Tarou", "PN")
    assert matches_element(yamada, "山田*", "PN")
    assert not matches_element(yamada, "Yamada", "PN")  # the whole group, not a component
    assert not matches_element(yamada, "山田*", "PN", MatchOptions(pn_groups=False))
    bare = {"vr": "PN", "Value": ["Doe^John"]}  # a server sending PN as a string
    assert matches_element(bare, "Doe^J*", "PN")


def test_person_name_case_has_its_own_option() -> None:
    doe = pn("Doe^John")
    assert not matches_element(doe, "doe^john", "PN")
    assert matches_element(doe, "doe^john", "PN", MatchOptions(pn_case_sensitive=False))
    assert not matches_element(lo("Doe"), "doe", "LO", MatchOptions(pn_case_sensitive=False))
    assert matches_element(lo("Doe"), "doe", "LO", MatchOptions(case_sensitive=False))


def test_ignored_case_is_the_same_with_and_without_wildcards() -> None:
    # One folding for both: each character on its own ('ß' is not 'SS', 'ﬁ' not 'FI'),
    # so a value matches exactly where the same value as a pattern would.
    any_case = MatchOptions(pn_case_sensitive=False, case_sensitive=False)
    for stored, value in [("straße", "STRASSE"), ("FI", "\ufb01"), ("ß", "ss")]:
        for vr, elem in [("PN", pn(stored)), ("LO", lo(stored))]:
            exact = matches_element(elem, value, vr, any_case)
            assert exact is matches_element(elem, value + "*", vr, any_case) is False
    assert matches_element(pn("Doe^John"), "DOE^JOHN", "PN", any_case)
    assert matches_element(pn("Doe^John"), "DOE^JOHN*", "PN", any_case)
    assert matches_element(lo("STRAẞE"), "straße", "LO", any_case)
    assert matches_element(lo("\u212a"), "k", "LO", any_case)  # the Kelvin sign


def test_wildcards_are_characters_in_ages_and_uris() -> None:
    # PS3.4 C.2.2.2.4 allows wildcards in neither AS nor UR: '*' and '?' are literal
    age = {"vr": "AS", "Value": ["045Y"]}
    assert not matches_element(age, "04*", "AS")
    assert not matches_element(age, "04?Y", "AS")
    assert not matches_element(age, "*", "AS")  # not universal matching either
    assert match_form("04*", "AS") == "single"
    uri = {"vr": "UR", "Value": ["http://host/wado?x=1"]}
    assert matches_element(uri, "http://host/wado?x=1", "UR")
    assert not matches_element(
        {"vr": "UR", "Value": ["http://host/wadoax=1"]}, "http://host/wado?x=1", "UR"
    )
    assert not matches_element(uri, "http*", "UR")


def test_numbers_compare_numerically() -> None:
    assert matches_element({"vr": "IS", "Value": [7]}, "07", "IS")
    assert matches_element({"vr": "DS", "Value": ["72.50"]}, "72.5", "DS")
    assert not matches_element({"vr": "IS", "Value": [8]}, "7", "IS")


def test_numbers_compare_exactly_beyond_a_double() -> None:
    # As floats, 2**53 + 1 == 2**53: integers and DS text are compared exactly
    big = 2**53
    assert not matches_element({"vr": "SV", "Value": [big + 1]}, str(big), "SV")
    assert matches_element({"vr": "SV", "Value": [big + 1]}, str(big + 1), "SV")
    assert not matches_element({"vr": "UV", "Value": [2**64 - 1]}, str(2**64 - 2), "UV")
    assert not matches_element({"vr": "IS", "Value": [str(big + 1)]}, str(big), "IS")
    assert not matches_element({"vr": "DS", "Value": ["0.10000000000000000001"]}, "0.1", "DS")
    assert matches_element({"vr": "DS", "Value": ["1e2 "]}, "100.0", "DS")
    # a stored JSON float is the double it is
    assert matches_element({"vr": "FD", "Value": [0.1]}, "0.1", "FD")
    assert matches_element({"vr": "DS", "Value": [72.5]}, "72.50", "DS")
    assert not matches_element({"vr": "DS", "Value": ["abc", None, [1], "sNaN", "NaN"]}, "1", "DS")
    # NaN is equal to nothing, and a signalling NaN (which float() refuses) is no error
    for nan in ("NaN", "sNaN", "-nan"):
        assert not matches_element({"vr": "DS", "Value": ["NaN", "1", 1.5]}, nan, "DS")
    # an exponent beyond a Decimal's (the query accepts it) is read, not refused
    huge = "1e99999999999999999999999"
    assert not matches_element({"vr": "DS", "Value": ["1e999"]}, huge, "DS")
    assert matches_element({"vr": "DS", "Value": [huge]}, huge, "DS")


@pytest.mark.parametrize(
    ("value", "vr"),
    [
        ("-", "DA"),
        ("20241", "DA"),
        ("20241345", "DA"),
        ("2500", "TM"),
        ("abc", "IS"),
        ("x-y", "DA"),
        ("20241345", "DT"),
        ("2024-x", "DT"),  # a malformed high bound: not an open range
        ("x-2024", "DT"),
        ("2024-20241345", "DA"),
        ("x-1200", "TM"),
        # an empty item of a list is no value (as in a CS list), not every stored value
        ("19990101,", "DA"),
        ("0000,", "TM"),
        (",1999", "DT"),
    ],
)
def test_malformed_values_raise_or_match_nothing(value: str, vr: str) -> None:
    with pytest.raises(InvalidQueryError):
        compile_value(value, vr)
    pred = compile_value(value, vr, MatchOptions(strict_values=False))
    assert pred is not None
    assert not pred({"vr": vr, "Value": [value, "20240101", "1200", 7]})


def test_server_emulation_options() -> None:
    elem = lo("Doe^John")
    assert not matches_element(elem, "Doe", "LO")
    assert matches_element(elem, "Doe", "LO", MatchOptions(single_value_matching="prefix"))
    assert matches_element(elem, "oe^J", "LO", MatchOptions(single_value_matching="substring"))
    assert not matches_element(elem, "Doe*", "LO", MatchOptions(wildcard_star=False))
    assert matches_element(lo("Doe*"), "Doe*", "LO", MatchOptions(wildcard_star=False))
    assert not matches_element(
        {"vr": "UI", "Value": ["1.2"]}, "1.2,1.3", "UI", MatchOptions(uid_lists=False)
    )
    stored = {"vr": "DA", "Value": ["20240101"]}
    assert not matches_element(stored, "20230101-20250101", "DA", MatchOptions(date_ranges=False))
    assert matches_element(stored, "20230101-20250101", "DA", MatchOptions(open_date_ranges=False))
    assert not matches_element(stored, "20230101-", "DA", MatchOptions(open_date_ranges=False))


def test_options_from_a_profile() -> None:
    assert MatchOptions.from_profile(ServerProfile.standard()) == STANDARD
    loose = ServerProfile(case_sensitive=False, wildcard_question=False, bad_request_status=200)
    options = MatchOptions.from_profile(loose)
    assert (options.case_sensitive, options.wildcard_question, options.strict_values) == (
        False,
        False,
        False,
    )


def test_matches_element_takes_the_vr_from_the_element_when_none_is_given() -> None:
    stored = {"vr": "DA", "Value": ["20240105"]}
    assert matches_element(stored, "20240101-20240131", None)  # a DA range, not text
    assert not matches_element(stored, "20240201-20240229", None)


def test_match_forms() -> None:
    assert [
        match_form(v, vr)
        for v, vr in [
            ("", "PN"),
            ("*", "PN"),
            ("Doe", "PN"),
            ("D*", "PN"),
            ("CT,MR", "CS"),
            ("1.2,1.3", "UI"),
            ("2024-", "DA"),
            ("20240101-20240102", "DA"),
            ("20240101", "DA"),
            ("1*", "IS"),
            ("Smith-Jones", "PN"),  # '-' is a range only for DA, TM and DT
            ("20240101-", "DT"),
            # in a DT, '-' is also a negative offset: with two, no range can be told
            ("20240101120000-0500-20240102", "DT"),
        ]
    ] == [
        "universal",
        "universal",
        "single",
        "wildcard",
        "list",
        "list",
        "open_range",
        "range",
        "single",
        "single",
        "single",
        "open_range",
        "single",
    ]


def test_a_sequence_is_matched_only_through_its_attributes() -> None:
    with pytest.raises(InvalidQueryError, match="sequence"):
        compile_value("x", "SQ")


def test_criteria_on_datasets_and_sequences() -> None:
    datasets = [
        {
            "00100010": pn("Doe^John"),
            "00400275": {"vr": "SQ", "Value": [{"00400009": {"vr": "SH", "Value": ["SPS1"]}}, {}]},
        },
        {"00100010": pn("Roe^Jane")},
        {"00100010": {"vr": "PN"}},
    ]
    assert filter_datasets(datasets, [Criterion.of("PatientName", "?oe^*")]) == datasets[:2]
    assert filter_datasets(datasets, [Criterion.of("PatientName", "")]) == datasets
    seq = Criterion.of("RequestAttributesSequence.ScheduledProcedureStepID", "SPS*")
    assert (seq.key, seq.vr) == ("00400275.00400009", "SH")
    assert filter_datasets(datasets, [seq]) == datasets[:1]
    with pytest.raises(InvalidQueryError):
        Criterion.of("PatientNmae", "x")


def test_a_path_through_two_sequences_matches_an_item_of_an_item() -> None:
    def seq(item: dict[str, Any]) -> dict[str, Any]:
        return {"vr": "SQ", "Value": [{}, item]}

    uid = {"00081155": {"vr": "UI", "Value": ["1.2.3"]}}
    dataset = {"00400275": seq({"00081110": seq(uid)})}
    key = "RequestAttributesSequence.ReferencedStudySequence.ReferencedSOPInstanceUID"
    assert Criterion.of(key, "1.2.3").matches(dataset)
    assert not Criterion.of(key, "1.2.4").matches(dataset)


def test_element_strings_normalise_padding_and_empties() -> None:
    assert element_strings({"vr": "UI", "Value": ["1.2\0", None, ""]}) == ["1.2"]
    assert element_strings(None) == []
    assert element_strings(pn(Alphabetic="A^B", Phonetic="a^b")) == ["A^B==a^b", "A^B", "a^b"]


#: What a broken or hostile server may send where a DICOM JSON element belongs.
JSON_LEAVES = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=4)
)
JSON_ANY = st.recursive(
    JSON_LEAVES,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["Alphabetic", "Value", "vr", "00400009"]), inner, max_size=3
        )
    ),
    max_leaves=8,
)
MALFORMED_ELEMENTS = st.one_of(
    JSON_ANY,
    st.fixed_dictionaries(
        {"vr": st.sampled_from(["PN", "DA", "TM", "DT", "IS", "LO", "UI", "SQ"]), "Value": JSON_ANY}
    ),
)
ANY_CRITERION = st.sampled_from(
    [
        Criterion.of("PatientName", "Doe*"),
        Criterion.of("PatientName", "Doe"),
        Criterion.of("PatientBirthDate", "19700101-"),
        Criterion.of("StudyTime", "1000-1200"),
        Criterion.of("AcquisitionDateTime", "2024-"),
        Criterion.of("SeriesNumber", "3"),
        Criterion.of("PatientID", "X"),
        Criterion.of("StudyInstanceUID", "1.2,1.3"),
        Criterion.of("RequestAttributesSequence.ScheduledProcedureStepID", "SPS*"),
    ]
)


@settings(max_examples=300, deadline=None)
@given(element=MALFORMED_ELEMENTS, criterion=ANY_CRITERION)
def test_malformed_stored_elements_never_raise(element: Any, criterion: Criterion) -> None:
    # The client matches server answers locally (plan.finish): whatever the server sent
    # in place of an element, a criterion says match or not, never TypeError/AttributeError.
    dataset = {criterion.path[0]: element}
    assert criterion.matches(dataset) in (True, False)


def test_malformed_stored_elements_match_nothing() -> None:
    assert not Criterion.of("PatientBirthDate", "19700101-").matches(
        {"00100030": {"vr": "DA", "Value": 19700101}}
    )
    assert not Criterion.of("PatientID", "X").matches({"00100020": "X"})
    assert not Criterion.of("PatientID", "a").matches({"00100020": {"vr": "LO", "Value": "abc"}})
    assert not Criterion.of("PatientName", "5*").matches(
        {"00100010": {"vr": "PN", "Value": [{"Alphabetic": 5}]}}
    )
    assert not Criterion.of("RequestAttributesSequence.ScheduledProcedureStepID", "X").matches(
        {"00400275": {"vr": "SQ", "Value": 3}}
    )
    assert element_strings({"vr": "LO", "Value": [["X"], {"a": 1}, True, "Y"]}) == ["Y"]


def test_padding_is_not_part_of_a_stored_value() -> None:
    # What the results show (Dataset values) is what matches: "Doe^John " reads as
    # "Doe^John" and " ID7" as "ID7", so a local filter for either must keep them.
    assert matches_element(pn(Alphabetic="Doe^John \0"), "Doe^John", "PN")
    assert matches_element(pn(Alphabetic="Doe^John ", Ideographic="山田 "), "山田", "PN")
    assert matches_element(pn(Alphabetic="Doe^John "), "Doe^J*n", "PN")
    assert matches_element({"vr": "PN", "Value": ["Doe^John =山田 "]}, "山田", "PN")
    assert matches_element({"vr": "LO", "Value": [" ID7 "]}, "ID7", "LO")
    assert matches_element({"vr": "CS", "Value": [" CT"]}, "CT", "CS")
    # leading spaces of PN and the text VRs are significant (as in the results)
    assert not matches_element(pn(Alphabetic=" Doe"), "Doe", "PN")
    assert not matches_element({"vr": "ST", "Value": [" note"]}, "note", "ST")
    assert element_strings({"vr": "ST", "Value": [" note \0"]}) == [" note"]


@st.composite
def tm_values(draw: st.DrawFn, *, leap: bool = False) -> str:
    """A TM value HH[MM[SS[.F{1,6}]]] (seconds up to 60 with ``leap``)."""
    text = f"{draw(st.integers(0, 23)):02d}"
    n = draw(st.integers(0, 3))
    if n >= 1:
        text += f"{draw(st.integers(0, 59)):02d}"
    if n >= 2:
        text += f"{draw(st.integers(0, 60 if leap else 59)):02d}"
    if n == 3:
        text += "." + draw(st.text(alphabet="0123456789", min_size=1, max_size=6))
    return text


def _tm_span(text: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The first and last instants a TM value stands for (a leap second is in its minute)."""
    hh, mm, ss, frac = text[:2], text[2:4], text[4:6], text[7:]
    low = (int(hh), int(mm or 0), min(int(ss or 0), 59), int(frac.ljust(6, "0")))
    high = (
        int(hh),
        int(mm or 59),
        min(int(ss or 59), 59),
        int(frac.ljust(6, "9")) if frac else 999999,
    )
    return low, high


@settings(max_examples=200, deadline=None)
@given(
    stored=tm_values(leap=True),
    low=st.one_of(st.none(), tm_values()),
    high=st.one_of(st.none(), tm_values()),
)
@example(stored="235960", low="2300", high="2359")  # a leap second
def test_time_ranges_agree_with_an_instant_oracle(
    stored: str, low: str | None, high: str | None
) -> None:
    if low is None and high is None:
        return
    value = f"{low or ''}-{high or ''}"
    instant = _tm_span(stored)[0]
    expected = (low is None or _tm_span(low)[0] <= instant) and (
        high is None or instant <= _tm_span(high)[1]
    )
    assert matches_element({"vr": "TM", "Value": [stored]}, value, "TM") is expected


#: String attributes of each padding rule: LO/CS/SH stripped at both ends, PN at the end.
READ_KEYS = {
    "PatientID": ("00100020", "LO"),
    "Modality": ("00080060", "CS"),
    "StudyID": ("00200010", "SH"),
    "PatientName": ("00100010", "PN"),
}


@settings(max_examples=200, deadline=None)
@given(
    keyword=st.sampled_from(sorted(READ_KEYS)),
    raw=st.text(alphabet=st.sampled_from("ab^= \x00山é"), max_size=8),
    as_object=st.booleans(),
)
@example(keyword="PatientName", raw="^ ", as_object=True)
@example(keyword="PatientID", raw=" ID7", as_object=False)
def test_a_value_as_the_results_read_it_matches_itself(
    keyword: str, raw: str, as_object: bool
) -> None:
    # A search matched locally must keep a result whose value reads as the match value.
    from aqido.results import Dataset

    key, vr = READ_KEYS[keyword]
    value: Any = {"Alphabetic": raw} if vr == "PN" and as_object else raw
    dataset = {"0020000D": {"vr": "UI", "Value": ["1.2"]}, key: {"vr": vr, "Value": [value]}}
    read = Dataset.from_json(dataset)[keyword]
    text = "" if read is None else str(read)
    if not text or "," in text:  # empty: universal matching; ',': a list
        return
    assert Criterion.of(keyword, text).matches(dataset)


@pytest.mark.parametrize(
    ("value", "empty_matches"),
    [("-19541231", True), ("19540101-", False), ("19540101-19541231", False), ("19540317", False)],
)
def test_an_open_range_matches_empty_values_only_as_a_text_comparing_server(
    value: str, empty_matches: bool
) -> None:
    # The standard never matches an empty value to a range; Orthanc, comparing text (the
    # empty string sorts first), finds it with -d: the option emulates that server.
    empty, absent, dated = (
        {"vr": "DA"},
        {"vr": "DA", "Value": []},
        {"vr": "DA", "Value": ["19540317"]},
    )
    text_server = MatchOptions(temporal_text=True)
    for elem in (empty, absent):
        assert not matches_element(elem, value, "DA")
        assert matches_element(elem, value, "DA", text_server) is empty_matches
    assert matches_element(dated, value, "DA") is matches_element(dated, value, "DA", text_server)


@pytest.mark.parametrize(
    ("stored", "value", "standard", "as_text"),
    [
        ("20100315103000", "20100315-20100315", True, False),  # sorts after the high bound
        ("201003151030", "20100315103000-", True, False),  # sorts before the low bound
        ("20100315103000+0100", "-20100315103000", True, False),  # the offset sorts after
        ("20100315103000+0100", "20100315100000+0000-", False, True),  # 09:30 UTC
        ("", "-20100315", False, True),  # the empty string sorts first
        ("20100315", "20100315-20100315", True, True),
    ],
)
def test_a_datetime_range_compares_the_stored_text_as_a_text_comparing_server(
    stored: str, value: str, standard: bool, as_text: bool
) -> None:
    # FakeArchive emulates Orthanc's DT ranges (temporal_text) as it does its DA and TM ones
    elem = {"vr": "DT", "Value": [stored]} if stored else {"vr": "DT"}
    assert matches_element(elem, value, "DT") is standard
    assert matches_element(elem, value, "DT", MatchOptions(temporal_text=True)) is as_text
