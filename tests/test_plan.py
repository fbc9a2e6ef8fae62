"""aqido.plan: planning queries for servers that do not match as the standard says (pure).

The central property: a plan executed against a simulated server that
matches as its profile says (:class:`aqido.matching.MatchOptions.from_profile`)
returns the standard's answer.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aqido._plan_spans import span_range
from aqido.matching import Criterion, MatchOptions, filter_datasets
from aqido.plan import MAX_FAN_OUT, Plan, plan_query
from aqido.profile import ServerProfile
from aqido.query import (
    BaseQuery,
    HierarchicalQuery,
    QueryLevel,
    RelationalQuery,
    encode_query_value,
)

UIDS = [f"1.2.{i}" for i in range(12)]
NAMES = [
    "Doe^John",
    "doe^john",
    "Doe^Johnny",
    "Doe^Jane",
    "DOE^JANE",
    "Müller^Jürgen",
    "Roe^Richard",
    "Doe-Smith^Mary",
    "",
    "Doe^John",
    "Yamada^Tarou=山田^太郎",
    "Smith",
]
MODALITIES = [["CT"], ["MR"], ["CT", "MR"], ["US"], [], ["ct"], ["MG", "CT"], ["MR"], ["CR"],
              ["CT"], ["PT", "MR"], ["XA"]]  # fmt: skip
DESCRIPTIONS = ["CT Thorax", "ct thorax", "Knee MRI (left)", "", "Thorax", "CT", "MRI Brain",
                "Knee", "CT Thorax", "Abdomen US", "Chest", "thorax CT"]  # fmt: skip


def _pn(name: str) -> dict[str, Any]:
    if not name:
        return {"vr": "PN"}
    groups = name.split("=")
    value = {k: g for k, g in zip(("Alphabetic", "Ideographic"), groups, strict=False) if g}
    return {"vr": "PN", "Value": [value]}


DATASETS: list[dict[str, Any]] = [
    {
        "0020000D": {"vr": "UI", "Value": [UIDS[i]]},
        "00100010": _pn(NAMES[i]),
        "00080061": {"vr": "CS", "Value": MODALITIES[i]} if MODALITIES[i] else {"vr": "CS"},
        "00080020": {"vr": "DA", "Value": [f"20{10 + i:02d}0615"]},
        "00080030": {"vr": "TM", "Value": [f"{(i * 2) % 24:02d}3000"]},
        "00081030": {"vr": "LO", "Value": [DESCRIPTIONS[i]]} if DESCRIPTIONS[i] else {"vr": "LO"},
    }
    for i in range(12)
]

_PARAMS_NOT_KEYS = {"includefield", "limit", "offset", "fuzzymatching"}


def request_criteria(query: BaseQuery, profile: ServerProfile) -> list[Criterion]:
    """The match keys a server sees: values as sent (undecoded when it does not decode)."""
    out = []
    for key, value in query.uri_search_params().items():
        if key in _PARAMS_NOT_KEYS:
            continue
        assert isinstance(value, str)
        if not profile.percent_decoding:
            value = encode_query_value(value)
        if not profile.non_ascii_values and not value.isascii():
            value = "\x00unmatchable"  # the server misreads the bytes: nothing matches
        criterion = Criterion.of(key, value)
        ranged = profile.range_keys is None or key in profile.range_keys
        assert ranged or "-" not in value, f"a range on {key}: the server refuses it"
        if profile.matched_keys is None or key in profile.matched_keys:
            out.append(criterion)
    return out


def serve(query: BaseQuery, profile: ServerProfile) -> list[Mapping[str, Any]]:
    """A server that matches as ``profile`` says (and returns every attribute)."""
    options = MatchOptions.from_profile(profile)
    found = filter_datasets(DATASETS, request_criteria(query, profile), options)
    start = query.offset
    return found[start : start + query.limit] if query.limit else found[start:]


def execute(plan: Plan, profile: ServerProfile) -> list[str]:
    kept, notes = plan.finish(plan.merge(serve(q, profile) for q in plan.requests))
    assert notes == []
    return [item["0020000D"]["Value"][0] for item in kept]


def standard(query: BaseQuery, pn_case: bool) -> list[str]:
    found = filter_datasets(
        DATASETS, request_criteria(query, ServerProfile()), MatchOptions(pn_case_sensitive=pn_case)
    )
    found = found[query.offset :]
    if query.limit:
        found = found[: query.limit]
    return [item["0020000D"]["Value"][0] for item in found]


queries = st.builds(
    HierarchicalQuery,
    PatientName=st.sampled_from(
        ["", "Doe^John", "doe^john", "Doe*", "D?e^J*", "*", "Müller*", "Doe^J", "*ane", "山田*"]
    ),
    ModalitiesInStudy=st.sampled_from(["", "CT", "CT,MR", "M*", "ct", "MR,US,XA"]),
    StudyInstanceUID=st.one_of(
        st.just(""), st.lists(st.sampled_from(UIDS), min_size=1, max_size=6, unique=True)
    ),
    StudyDescription=st.sampled_from(["", "CT Thorax", "*t*", "Knee MRI (left)", "CT"]),
    min_study_date=st.one_of(st.none(), st.dates(dt.date(2009, 1, 1), dt.date(2016, 1, 1))),
    max_study_date=st.one_of(st.none(), st.dates(dt.date(2016, 1, 2), dt.date(2025, 1, 1))),
    filters=st.sampled_from([{}, {"StudyTime": "0600-1400"}, {"StudyTime": "-0400"}]),
    limit=st.sampled_from([0, 0, 2, 5]),
    offset=st.sampled_from([0, 0, 1, 3]),
)

profiles = st.builds(
    ServerProfile,
    percent_decoding=st.booleans(),
    wildcard_star=st.booleans(),
    wildcard_question=st.booleans(),
    case_sensitive=st.booleans(),
    pn_case_sensitive=st.booleans(),
    single_value_matching=st.sampled_from(["exact", "prefix", "substring"]),
    uid_lists=st.booleans(),
    value_lists=st.booleans(),
    date_ranges=st.booleans(),
    open_date_ranges=st.booleans(),
    time_ranges=st.booleans(),
    # ranges only on some keys (tiny_pacs refuses a PatientBirthDate range with a 400)
    range_keys=st.none()
    | st.lists(st.sampled_from(["StudyDate", "StudyTime"]), unique=True).map(tuple),
    # dates and times compared as text (Orthanc): the server below does so too
    temporal_text=st.booleans(),
    non_ascii_values=st.booleans(),
    matched_keys=st.none()
    | st.lists(
        st.sampled_from(
            [
                "PatientName",
                "StudyDescription",
                "ModalitiesInStudy",
                "StudyTime",
                "StudyInstanceUID",
                "StudyDate",
            ]
        ),
        max_size=5,
        unique=True,
    ),
)


@settings(max_examples=300, deadline=None)
@given(query=queries, profile=profiles, pn_case=st.sampled_from([True, False, None]))
def test_a_plan_gives_the_standard_answer_on_any_server(
    query: HierarchicalQuery, profile: ServerProfile, pn_case: bool | None
) -> None:
    plan = plan_query(query, profile, pn_case_sensitive=pn_case)
    assert plan.warnings == ()
    got = execute(plan, profile)
    pn = profile.pn_case_sensitive if pn_case is None else pn_case
    wanted = standard(query, pn)
    assert len(set(got)) == len(got)
    fanned_out = len(plan.requests) > 1
    if fanned_out and not plan.local_window:  # merged in request order, not the server's
        assert sorted(got) == sorted(wanted)
    elif not fanned_out:
        assert got == wanted
    else:  # a window cut from a merged list: as many, all from the standard answer
        assert len(got) == len(wanted)
        assert set(got) <= set(standard(attrs.evolve(query, limit=0, offset=0), pn))


@settings(max_examples=200, deadline=None)
@given(query=queries)
def test_a_standard_server_gets_the_query_unchanged(query: HierarchicalQuery) -> None:
    plan = plan_query(query, ServerProfile.standard())
    if query.PatientName != "*":
        assert plan.direct
        assert plan.requests == (query,)
    assert plan_query(query, None).direct


@settings(max_examples=200, deadline=None)
@given(query=queries, profile=profiles)
def test_requests_only_hold_what_the_server_understands(
    query: HierarchicalQuery, profile: ServerProfile
) -> None:
    plan = plan_query(query, profile)
    for request in plan.requests:
        params = request.uri_search_params()
        if not profile.percent_decoding:
            assert "%" not in request.query_string()
        if not profile.uid_lists:
            assert "," not in str(params.get("StudyInstanceUID", ""))
        if not profile.value_lists:
            assert "," not in str(params.get("ModalitiesInStudy", ""))
        wildcards = (("*", profile.wildcard_star), ("?", profile.wildcard_question))
        for char, supported in wildcards:
            if not supported:
                assert char not in str(params.get("PatientName", ""))
                assert char not in str(params.get("StudyDescription", ""))
        for keyword in ("PatientName", "StudyDescription", "ModalitiesInStudy"):
            if profile.matched_keys is not None and keyword not in profile.matched_keys:
                assert keyword not in params
        if not profile.non_ascii_values:
            assert all(str(v).isascii() for v in params.values())
        for keyword in ("StudyDate", "StudyTime"):
            if profile.range_keys is not None and keyword not in profile.range_keys:
                assert "-" not in str(params.get(keyword, ""))  # a range it takes none on
        if plan.local or len(plan.requests) > 1:
            assert "limit" not in params
            assert "offset" not in params


def test_lists_fan_out_crossed_and_beyond_the_limit_are_matched_here() -> None:
    query = HierarchicalQuery(StudyInstanceUID=UIDS[:3], ModalitiesInStudy=["CT", "MR"])
    plan = plan_query(query, ServerProfile(uid_lists=False, value_lists=False))
    assert [(r.StudyInstanceUID, r.ModalitiesInStudy) for r in plan.requests] == [
        (uid, modality) for uid in UIDS[:3] for modality in ("CT", "MR")
    ]
    assert plan.local == ()
    many = [f"1.2.{i}" for i in range(40)]
    query = HierarchicalQuery(StudyInstanceUID=many, ModalitiesInStudy=["CT", "MR"])
    plan = plan_query(query, ServerProfile(uid_lists=False, value_lists=False))
    assert [r.StudyInstanceUID for r in plan.requests] == many
    assert {r.ModalitiesInStudy for r in plan.requests} == {""}
    assert [(c.key, c.value) for c in plan.local] == [("00080061", "CT,MR")]
    assert all(r.include_fields == ("ModalitiesInStudy",) for r in plan.requests)


def test_the_first_list_fans_out_whole_past_the_cap_and_a_second_is_matched_here() -> None:
    # docs/profiles.md said "up to 64 requests": the first list is one request per value,
    # however many; only a further list is crossed while at most MAX_FAN_OUT requests
    many = [f"1.2.{i}" for i in range(3 * MAX_FAN_OUT)]
    plan = plan_query(HierarchicalQuery(StudyInstanceUID=many), ServerProfile(uid_lists=False))
    assert [r.StudyInstanceUID for r in plan.requests] == many
    query = HierarchicalQuery(StudyInstanceUID=many[:32], ModalitiesInStudy=["CT", "MR"])
    plan = plan_query(query, ServerProfile(uid_lists=False, value_lists=False))
    assert len(plan.requests) == MAX_FAN_OUT  # 32 x 2: crossed
    query = HierarchicalQuery(StudyInstanceUID=many[:33], ModalitiesInStudy=["CT", "MR"])
    plan = plan_query(query, ServerProfile(uid_lists=False, value_lists=False))
    assert len(plan.requests) == 33  # 33 x 2 > 64: the modalities are matched here
    assert [(c.key, c.value) for c in plan.local] == [("00080061", "CT,MR")]


@pytest.mark.parametrize("value", ["CT,", ",MR", "CT,,MR", ","])
def test_an_empty_list_item_is_never_a_request_of_its_own(value: str) -> None:
    # sent alone, the empty item of `CT,` would be universal matching: every study
    profile = ServerProfile(value_lists=False)
    query = HierarchicalQuery(ModalitiesInStudy=value, StudyDescription="CT*,Knee*")
    plan = plan_query(query, profile)
    assert all(r.ModalitiesInStudy or plan.local for r in plan.requests)
    assert all(r.StudyDescription for r in plan.requests)
    assert sorted(execute(plan, profile)) == sorted(standard(query, True))


def test_a_limit_is_cut_locally_when_matching_locally() -> None:
    query = HierarchicalQuery(PatientName="Doe*", limit=2, offset=1)
    plan = plan_query(query, ServerProfile(wildcard_star=False))
    (request,) = plan.requests
    assert (request.limit, request.offset, request.PatientName) == (0, 0, "")
    assert (plan.local_window, plan.limit, plan.offset) == (True, 2, 1)
    kept, _ = plan.finish(DATASETS)
    assert [d["00100010"]["Value"][0]["Alphabetic"] for d in kept] == ["Doe^Johnny", "Doe^Jane"]


def test_a_key_neither_matched_nor_returned_is_a_warning() -> None:
    profile = ServerProfile(wildcard_star=False, includefield=False)
    plan = plan_query(HierarchicalQuery(StudyDescription="CT*"), profile)
    assert plan.requests == (HierarchicalQuery(StudyDescription="CT*"),)  # best effort
    assert not plan.exact
    assert "StudyDescription" in plan.warnings[0]
    # a default attribute is returned anyway: no warning
    plan = plan_query(HierarchicalQuery(PatientName="Doe*"), profile)
    assert plan.exact
    assert plan.requests == (HierarchicalQuery(),)
    # with includefield=all supported, asking for all is enough
    profile = ServerProfile(wildcard_star=False, includefield=False, includefield_all=True)
    query = HierarchicalQuery(StudyDescription="CT*", include_fields=["all"])
    assert plan_query(query, profile).exact


def test_a_result_without_the_key_is_reported_not_filtered() -> None:
    plan = plan_query(HierarchicalQuery(PatientName="Doe*"), ServerProfile(wildcard_star=False))
    items = [{"0020000D": {"vr": "UI", "Value": ["1.2"]}}]
    kept, notes = plan.finish(items)
    assert kept == items
    assert len(notes) == 1
    assert "PatientName" in notes[0]


def test_wildcard_characters_of_a_uri_are_sent_and_checked_here() -> None:
    # '?' and '*' are characters in a UR (PS3.4 C.2.2.2.4): a server that reads them as
    # wildcards would return more, so the results are filtered to the literal value
    uri = "http://host/wado?x=1"
    query = RelationalQuery(query_level=QueryLevel.INSTANCE, filters={"RetrieveURL": uri})
    plan = plan_query(query, ServerProfile.standard())
    assert [c.value for c in plan.local] == [uri]
    assert all(dict(r.filters)["RetrieveURL"] == uri for r in plan.requests)
    assert not plan.warnings
    literal = {"00081190": {"vr": "UR", "Value": [uri]}}
    other = {"00081190": {"vr": "UR", "Value": ["http://host/wadoax=1"]}}
    assert plan.finish([literal, other])[0] == [literal]


def test_fuzzy_person_name_matching_is_left_to_a_server_that_does_it() -> None:
    query = HierarchicalQuery(PatientName="doe", fuzzymatching=True)
    assert plan_query(query, ServerProfile(fuzzy_matching="supported")).direct


@pytest.mark.parametrize("fuzzy", ["ignored", "warning", "error"])
def test_fuzzymatching_on_a_server_without_it_is_planned_as_literal_matching(fuzzy: str) -> None:
    # tiny_pacs ignores fuzzymatching=true and matches PatientName as a substring: without
    # fuzzy matching the standard's answer is the literal one, so the name is planned (and
    # filtered) as it is without fuzzymatching
    profile = attrs.evolve(ServerProfile.tiny_pacs(), fuzzy_matching=fuzzy)
    for name in ("Doe^John", "doe", "Doe*"):
        literal = plan_query(HierarchicalQuery(PatientName=name), profile)
        plan = plan_query(HierarchicalQuery(PatientName=name, fuzzymatching=True), profile)
        assert plan.local == literal.local != ()
        assert [attrs.evolve(r, fuzzymatching=False) for r in plan.requests] == list(
            literal.requests
        )
        assert plan.warnings == literal.warnings == ()
    items = [{"00100010": _pn(n)} for n in ("Doe^John", "Doe^Johnny", "DOE^JOHN", "Roe^Doe^John")]
    query = HierarchicalQuery(PatientName="Doe^John", fuzzymatching=True)
    assert plan_query(query, profile).finish(items)[0] == [
        items[0],
        items[2],
    ]  # PN case: the server's
    plan = plan_query(query, profile, pn_case_sensitive=True)
    assert plan.finish(items)[0] == items[:1]


@pytest.mark.parametrize("fuzzy", ["warning", "supported", "ignored", "error"])
def test_fuzzymatching_is_sent_unless_the_server_refuses_it(fuzzy: str) -> None:
    # a server that answers fuzzymatching=true with a 4xx is not sent it: the name is
    # planned as without it (fanned-out lists too), as on a server that ignores it
    profile = ServerProfile(fuzzy_matching=fuzzy, value_lists=False)
    for query in (
        HierarchicalQuery(PatientName="Doe^John", fuzzymatching=True),
        HierarchicalQuery(PatientName="Doe^John,Roe^Jane", fuzzymatching=True),  # fanned out
        HierarchicalQuery(PatientID="P1", fuzzymatching=True),  # no name: 4xx all the same
    ):
        plan = plan_query(query, profile)
        assert len(plan.requests) == 1 + ("," in query.PatientName)
        assert all(r.fuzzymatching is (fuzzy != "error") for r in plan.requests)
        assert plan.query == query
        assert plan.direct is ("," not in query.PatientName and fuzzy != "error")
        assert not plan.local
    assert plan_query(HierarchicalQuery(PatientID="P1"), profile).direct


def test_fuzzy_note_says_only_what_a_server_ignoring_fuzzymatching_did_not() -> None:
    from aqido._plan_spans import fuzzy_note

    ignored = ServerProfile.tiny_pacs()
    note = fuzzy_note(True, ignored)
    assert note is not None
    assert "only literal matching" in note
    assert fuzzy_note(False, ignored) is None
    for fuzzy in ("warning", "supported"):  # the server says so itself, or fuzzes
        assert fuzzy_note(True, attrs.evolve(ignored, fuzzy_matching=fuzzy)) is None
    refused = fuzzy_note(True, attrs.evolve(ignored, fuzzy_matching="error"))
    assert refused is not None  # not sent at all: aqido says so
    assert "fuzzymatching=true was not sent" in refused
    assert "only literal matching" in refused
    assert fuzzy_note(False, attrs.evolve(ignored, fuzzy_matching="error")) is None
    assert fuzzy_note(True, None) is None


@pytest.mark.parametrize(
    ("query", "profile", "parent", "fields"),
    [
        (
            RelationalQuery(query_level=QueryLevel.SERIES, PatientName="Doe*", Modality="CT"),
            ServerProfile(relational_series=False),
            HierarchicalQuery(PatientName="Doe*"),
            {"Modality": "CT"},
        ),
        (
            RelationalQuery(
                query_level=QueryLevel.INSTANCE,
                Modality="MR",
                limit=3,
                filters={"InstanceNumber": "1"},
            ),
            ServerProfile(relational_instances=False),
            RelationalQuery(query_level=QueryLevel.SERIES, Modality="MR"),
            {"filters": (("InstanceNumber", "1"),)},
        ),
        (
            RelationalQuery(query_level=QueryLevel.INSTANCE, StudyInstanceUID="1.2"),
            ServerProfile(study_instances=False),
            HierarchicalQuery(query_level=QueryLevel.SERIES, StudyInstanceUID="1.2"),
            {},
        ),
    ],
)
def test_missing_relational_paths_are_walked(
    query: BaseQuery, profile: ServerProfile, parent: BaseQuery, fields: dict[str, Any]
) -> None:
    plan = plan_query(query, profile)
    assert plan.walk is not None
    assert plan.walk.parent == parent
    assert dict(plan.walk.fields) == fields
    child = plan.walk.child(
        {"0020000D": {"vr": "UI", "Value": ["1.2"]}, "0020000E": {"vr": "UI", "Value": ["1.2.3"]}}
    )
    assert child is not None
    assert child.uri_base().startswith("/studies/1.2/")
    assert plan.walk.child({}) is None
    assert plan_query(query, ServerProfile()).walk is None


def test_a_walked_series_without_its_study_uid_takes_the_parent_querys() -> None:
    # /studies/1.2/series need not return StudyInstanceUID: the series is still walked
    query = RelationalQuery(query_level=QueryLevel.INSTANCE, StudyInstanceUID="1.2")
    walk = plan_query(query, ServerProfile(study_instances=False)).walk
    assert walk is not None
    child = walk.child({"0020000E": {"vr": "UI", "Value": ["1.2.3"]}})
    assert child is not None
    assert child.uri_base() == "/studies/1.2/series/1.2.3/instances"
    listed = RelationalQuery(query_level=QueryLevel.INSTANCE, StudyInstanceUID="1.2,1.3")
    walk = plan_query(listed, ServerProfile(relational_instances=False)).walk
    assert walk is not None  # two studies: a series without its study UID has no parent
    assert walk.child({"0020000E": {"vr": "UI", "Value": ["1.2.3"]}}) is None


def _text_server(items: list[dict[str, Any]], query: BaseQuery) -> list[dict[str, Any]]:
    """Orthanc's matching of one DA/TM filter: a single value as text, a range by text order."""
    (name, value), tag = query.filters[0], {"StudyDate": "00080020", "StudyTime": "00080030"}
    low, dash, high = value.partition("-")
    out = []
    for item in items:
        stored = item[tag[name]]["Value"][0]
        if (low <= stored <= (high or "~")) if dash else stored == value:
            out.append(item)
    return out


@pytest.mark.parametrize(
    "profile", [ServerProfile.orthanc(), ServerProfile()], ids=["orthanc", "standard"]
)
def test_an_upper_bounded_range_drops_the_empty_values_a_text_comparing_server_adds(
    profile: ServerProfile,
) -> None:
    # Orthanc finds a study without a birth date with PatientBirthDate=-19541231 (the empty
    # string sorts first); the standard never matches an empty value: filtered out here
    query = HierarchicalQuery(filters={"PatientBirthDate": "-19541231"}, limit=2)
    plan = plan_query(query, profile)
    assert [r.filters for r in plan.requests] == [(("PatientBirthDate", "-19541231"),)]
    items = [
        {"0020000D": {"vr": "UI", "Value": ["1.1"]}, "00100030": {"vr": "DA"}},
        {
            "0020000D": {"vr": "UI", "Value": ["1.2"]},
            "00100030": {"vr": "DA", "Value": ["19500101"]},
        },
        {
            "0020000D": {"vr": "UI", "Value": ["1.3"]},
            "00100030": {"vr": "DA", "Value": ["19510101"]},
        },
    ]
    if profile.temporal_text:
        assert plan.local
        assert plan.local_window  # every match fetched, the window cut here
        assert plan.requests[0].limit == 0
        kept, _ = plan.finish(plan.merge([items]))
        assert [k["0020000D"]["Value"][0] for k in kept] == ["1.2", "1.3"]
    else:
        assert plan.direct  # a standard server: sent as it is, limit and all
    # a lower bound never finds an empty value: sent as it is on both
    assert plan_query(HierarchicalQuery(filters={"PatientBirthDate": "19500101-"}), profile).direct


@pytest.mark.parametrize(
    ("value", "sent"),
    [
        ("19540101-19541231", False),
        ("19540101-", False),
        ("-19541231", False),
        ("1954", False),  # a year: it would go out as its range
        ("19540317", True),  # a whole date: a single value, which tiny_pacs matches
    ],
)
def test_a_range_on_a_key_the_server_takes_none_on_is_matched_here(value: str, sent: bool) -> None:
    # tiny_pacs matches StudyDate ranges but refuses PatientBirthDate=19540101- with a 400
    query = HierarchicalQuery(filters={"PatientBirthDate": value})
    plan = plan_query(query, ServerProfile.tiny_pacs())
    assert [("PatientBirthDate", value) in r.filters for r in plan.requests] == [sent]
    assert plan.warnings == ()
    if not sent:
        assert plan.local
        items = [
            {"0020000D": {"vr": "UI", "Value": [f"1.{i}"]}, "00100030": {"vr": "DA", "Value": [d]}}
            for i, d in enumerate(["19531231", "19540317", "19550101", "19560101"])
        ]
        kept, _ = plan.finish(plan.merge([items]))
        wanted = {
            "19540101-19541231": ["19540317"],
            "19540101-": ["19540317", "19550101", "19560101"],
            "-19541231": ["19531231", "19540317"],
            "1954": ["19540317"],
        }[value]
        assert [k["00100030"]["Value"][0] for k in kept] == wanted
    # a StudyDate range, on the same server, is sent
    dated = plan_query(
        HierarchicalQuery(filters={"StudyDate": "20100101-"}), ServerProfile.tiny_pacs()
    )
    assert dated.requests[0].filters == (("StudyDate", "20100101-"),)
    # and with ranges on every key (the standard), the birth date range goes out too
    standard = plan_query(query, ServerProfile(range_keys=None))
    assert [("PatientBirthDate", value) in r.filters for r in standard.requests] == [
        value != "1954"  # a year goes out as the range it spans, a range as it is
    ]


@pytest.mark.parametrize(
    ("key", "value", "sent", "expected"),
    [
        ("StudyTime", "10", "10-105959.999999", ["10", "1000", "104540.014044", "105959"]),
        ("StudyTime", "0727", "0727-072759.999999", ["0727", "072700", "072759.5"]),
        ("StudyTime", "020052", "020052-020052.999999", ["020052", "020052.532032"]),
        ("StudyDate", "2010", "20100101-20101231", ["20100101", "20101231"]),
        ("StudyDate", "201002", "20100201-20100228", ["20100201", "20100228"]),
        ("StudyDate", "201001", "20100101-20100131", ["20100101", "20100131"]),
        ("StudyDate", "202402", "20240201-20240229", ["20240201", "20240229"]),  # a leap year
    ],
)
def test_a_single_date_or_time_of_less_precision_is_sent_as_the_range_it_spans(
    key: str, value: str, sent: str, expected: list[str]
) -> None:
    # Orthanc compares a single DA/TM value as text: StudyTime=072700 misses a stored 0727,
    # StudyDate=2010 finds nothing; the standard's answer (aqido.matching) is the whole span.
    tag = {"StudyDate": "00080020", "StudyTime": "00080030"}[key]
    vr = "DA" if key == "StudyDate" else "TM"
    stored = [
        *expected,
        *(["09", "0959", "095959.999999", "11", "110000"] if vr == "TM" else []),
        *(["20091231", "20110101"] if vr == "DA" else []),
        *(["072800", "0728"] if value == "0727" else []),
        *(["020053", "020051.9"] if value == "020052" else []),
        *(["20100301", "20100131"] if value == "201002" else []),
    ]
    items = [{tag: {"vr": vr, "Value": [text]}} for text in stored]
    query = HierarchicalQuery(filters={key: value})
    plan = plan_query(query, ServerProfile.orthanc())
    assert [r.filters for r in plan.requests] == [((key, sent),)]
    answer, _ = plan.finish(plan.merge(_text_server(items, r) for r in plan.requests))
    assert sorted(i[tag]["Value"][0] for i in answer) == sorted(expected)
    # without ranges the server cannot be asked: the key is matched here
    no_ranges = attrs.evolve(ServerProfile.orthanc(), time_ranges=False, date_ranges=False)
    assert plan_query(query, no_ranges).requests[0].filters == ()


@pytest.mark.parametrize(
    ("value", "sent"),
    [
        ("030500-040000", "0305-040000.999999"),
        ("030500-", "0305-"),
        ("-0400", "-040059.999999"),
        ("03-04", "03-045959.999999"),
        ("030500", "0305-030500.999999"),  # a single value: the span of its second
        ("0305", "0305-030559.999999"),
    ],
)
def test_a_time_range_is_sent_as_a_server_comparing_text_reads_it(value: str, sent: str) -> None:
    # Orthanc compares times as text: 030500-040000 misses a study stored at 0305 (it sorts
    # before 030500), and 0400 as a high bound misses 040030; the standard's answer, with
    # a stored value of any precision, is what aqido's matching gives.
    stored = ["0305", "03", "030500", "030500.5", "0304", "030459.999", "0400", "04"]
    stored += ["040030", "040059.999999", "0401", "040100", "0259", "05"]
    items = [{"00080030": {"vr": "TM", "Value": [t]}} for t in stored]
    query = HierarchicalQuery(filters={"StudyTime": value})
    plan = plan_query(query, ServerProfile.orthanc())
    assert [r.filters for r in plan.requests] == [(("StudyTime", sent),)]
    answer, _ = plan.finish(plan.merge(_text_server(items, r) for r in plan.requests))
    wanted = filter_datasets(items, [Criterion.of("StudyTime", value)])
    assert answer == wanted
    assert wanted  # proves something
    # as the value itself, the text comparison misses some of them
    if "-" in value:
        assert _text_server(items, query) != wanted


#: Stored DT values of every precision, with fractions and offsets (and an empty one).
DT_STORED = ["20100315103000", "201003151030", "20100315103000.123456", "20100315103000+0100",
             "2010031510", "20100315", "20100315103000.5-0500", "20100315235959", "20100316",
             "2010031511", "20100315105959.999999+0100", "201003", "2010", "20100314",
             "20091231235959.999999", "20100315093000+0000", ""]  # fmt: skip


@pytest.mark.parametrize(
    ("value", "sent"),
    [
        ("20100315-20100315", "20100315-20100316"),
        ("20100315103000-20100315103000", "201003151030-20100315103001"),
        ("-20100315103000", "-20100315103001"),
        ("20100315103000-", "201003151030-"),
        ("-2010031510", "-2010031511"),
        ("2010031510-2010031510", "2010031510-2010031511"),
        ("2010-2010", "2010-2011"),
        ("20100301000000.000-", "201003-"),
        ("20100315103000.5-", None),  # as written: text comparison reads it right
        ("20100315103000+0100-20100315113000+0100", "201003140930-20100316103001"),
        ("20100315", "20100315-20100316"),  # a single value: the span of its day
        ("2010031510", "2010031510-2010031511"),
        ("20100315103000", "201003151030-20100315103001"),
        ("20100315103000+0100", "201003140930-20100316093001"),
        # what aqido says to write for 20100315103000-0500 (refused as ambiguous): in UTC
        ("20100315153000+0000", "201003141530-20100316153001"),
        ("2010031515+0000", "2010031415-2010031616"),
    ],
)
@pytest.mark.parametrize("decodes", [False, True], ids=["orthanc", "orthanc-decoding"])
def test_a_datetime_range_is_sent_as_a_server_comparing_text_reads_it(
    value: str, sent: str | None, decodes: bool
) -> None:
    # Orthanc compares datetimes as text: 20100315-20100315 finds a stored 20100315 alone,
    # not 20100315103000 (it sorts after the high bound), and 20100315103000- misses a
    # stored 201003151030.  aqido's answer (a bound is the span it covers, a stored value
    # of less precision its first instant, offsets in UTC) comes from the bounds sent as
    # text comparison reads them, and the answer filtered here.
    profile = attrs.evolve(ServerProfile.orthanc(), percent_decoding=decodes)
    items = [
        {"00080018": {"vr": "UI", "Value": [f"1.{i}"]}, "0008002A": {"vr": "DT", "Value": [v]}}
        for i, v in enumerate(DT_STORED)
    ] + [{"00080018": {"vr": "UI", "Value": ["1.99"]}}]
    server = attrs.evolve(MatchOptions.from_profile(profile), temporal_spans=False)

    def text_server(request: BaseQuery) -> list[Mapping[str, Any]]:
        return filter_datasets(items, request_criteria(request, profile), server)

    query = RelationalQuery(query_level=QueryLevel.INSTANCE, filters={"AcquisitionDateTime": value})
    plan = plan_query(query, profile)
    wanted = filter_datasets(items, [Criterion.of("AcquisitionDateTime", value)])
    answer, _ = plan.finish(plan.merge(text_server(r) for r in plan.requests))
    assert answer == wanted
    assert wanted  # proves something
    if "+" in value and not decodes:  # Orthanc reads no %2B: matched here, nothing sent
        assert plan.requests[0].filters == ()
        return
    assert [r.filters for r in plan.requests] == [(("AcquisitionDateTime", sent or value),)]
    if sent is not None:  # sent as written, the text comparison gives another answer
        assert text_server(query) != wanted
    # a server comparing instants gets the range as it is (a single value: its span)
    span = span_range(value, "DT") or value
    instants = plan_query(query, attrs.evolve(profile, temporal_text=False))
    assert [r.filters for r in instants.requests] == [(("AcquisitionDateTime", span),)]
    # a server that takes no such range is not sent it: matched here
    no_ranges = attrs.evolve(profile, date_ranges=False, open_date_ranges=False)
    assert plan_query(query, no_ranges).requests[0].filters == ()


@pytest.mark.parametrize(
    ("value", "sent"),
    [
        ("2008-2013", "20080101-20131231"),
        ("200807-201302", "20080701-20130228"),
        ("-201303", "-20130331"),
        ("2008-", "20080101-"),
        ("20080115-2013", "20080115-20131231"),
    ],
)
@pytest.mark.parametrize(
    "profile",
    [ServerProfile.orthanc(), ServerProfile.tiny_pacs(), ServerProfile()],
    ids=["orthanc", "tiny_pacs", "standard"],
)
def test_a_date_range_with_bounds_of_less_precision_is_sent_with_full_dates(
    value: str, sent: str, profile: ServerProfile
) -> None:
    # aqido reads a bound of less precision as its span (2008-2013: 20080101 to 20131231);
    # sent as written, Orthanc (comparing text) missed every date of 2013 (20130315 sorts
    # after 2013) and tiny_pacs answered 400 (dates must be YYYYMMDD)
    stored = ["20071231", "20080101", "20080115", "20080701", "20100505", "20130101"]
    stored += ["20130228", "20130315", "20130331", "20131231", "20140101"]
    items = [{"00080020": {"vr": "DA", "Value": [d]}} for d in stored]
    query = HierarchicalQuery(filters={"StudyDate": value})
    plan = plan_query(query, profile)
    assert [r.filters for r in plan.requests] == [(("StudyDate", sent),)]
    answer, _ = plan.finish(plan.merge(_text_server(items, r) for r in plan.requests))
    assert answer == filter_datasets(items, [Criterion.of("StudyDate", value)])
    # a range of full dates goes out as it is
    assert plan_query(HierarchicalQuery(filters={"StudyDate": "20080101-20131231"}), profile).direct


@pytest.mark.parametrize(
    ("key", "vr", "value", "sent"),
    [
        ("SeriesNumber", "IS", "01", "01,1"),
        ("SeriesNumber", "IS", "002", "002,2"),
        ("SliceThickness", "DS", "0.6250", "0.6250,0.625"),
        ("SliceThickness", "DS", "2.0", "2.0,2"),
    ],
)
def test_a_number_not_in_its_plain_form_is_also_sent_in_it(
    key: str, vr: str, value: str, sent: str
) -> None:
    # aqido compares numbers by value (SeriesNumber=01 finds a stored 1); Orthanc compares
    # the text and found nothing: both texts go out, the answer is filtered here
    tag = {"SeriesNumber": "00200011", "SliceThickness": "00180050"}[key]
    plain = sent.partition(",")[2]
    stored = [value, plain, "3", "0.5"]  # the stored texts a server comparing text finds
    items = [{tag: {"vr": vr, "Value": [v]}} for v in stored]
    query = HierarchicalQuery(
        query_level=QueryLevel.SERIES, StudyInstanceUID="1.2", filters={key: value}
    )
    plan = plan_query(query, ServerProfile.orthanc())
    assert [r.filters for r in plan.requests] == [((key, sent),)]

    def text_server(request: BaseQuery) -> list[dict[str, Any]]:
        texts = dict(request.filters)[key].split(",")
        return [i for i in items if i[tag]["Value"][0] in texts]

    answer, _ = plan.finish(plan.merge(text_server(r) for r in plan.requests))
    wanted = filter_datasets(items, [Criterion.of(key, value)])
    assert answer == wanted
    assert wanted
    assert text_server(query) != wanted  # as written, the text misses some
    # to a server comparing values it goes out as it is, and a plain number to any
    assert plan_query(query, ServerProfile.standard()).direct
    assert plan_query(attrs.evolve(query, filters=((key, plain),)), ServerProfile.orthanc()).direct


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("StudyDate", "20100115"),
        ("StudyTime", "020052.123456"),
        ("AcquisitionDateTime", "20100115020052.123456"),
    ],
)
def test_a_single_date_or_time_of_full_precision_is_sent_as_it_is(key: str, value: str) -> None:
    # it spans nothing more than itself: no range to send, even to a server comparing text
    query = HierarchicalQuery(filters={key: value})
    plan = plan_query(query, ServerProfile.orthanc())
    assert [r.filters for r in plan.requests] == [((key, value),)]


@pytest.mark.parametrize(
    ("value", "vr"),
    [
        ("202413", "DA"),
        ("202400", "DA"),
        ("2024x", "DA"),
        ("24", "DA"),
        ("1", "TM"),
        ("12:00", "TM"),
    ],
)
def test_span_range_of_a_malformed_value_is_none(value: str, vr: str) -> None:
    # span_range's contract: anything malformed gives None (never a range, nor an exception)
    from aqido._plan_spans import span_range

    assert span_range(value, vr) is None
