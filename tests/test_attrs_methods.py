"""The shared ``__repr__``/``__eq__``/``__hash__`` behave as attrs' generated ones (issue 18).

``Retry``, ``Timeout`` and ``PersonName`` derive from
:class:`aqido._attrs_methods.ValueMethods` instead of having attrs compile the
three methods at import.  Each is checked against a twin class that attrs builds
with its own methods, over values that differ field by field; and the models
(``Study``, ``Series``, ``Instance``), whose equality is written once on
:class:`aqido._models._Model`, keep their meaning: same elements and children.
"""

from __future__ import annotations

import itertools
from typing import Any

import attrs
import pytest

from aqido import (
    BaseQuery,
    HierarchicalQuery,
    Instance,
    PersonName,
    RelationalQuery,
    Retry,
    Series,
    Study,
    Timeout,
)
from aqido._attrs_methods import ValueMethods


def _twin(cls: type) -> type:
    """``cls``'s fields in a class of the same name with attrs' generated methods."""
    fields = {
        f.name: attrs.field(default=None, eq=f.eq, hash=f.hash, repr=f.repr)
        for f in attrs.fields(cls)
    }
    return attrs.make_class(cls.__name__, fields, frozen=True, kw_only=True)


#: Instances that differ in each field in turn (the first is the default).
CASES: dict[type, list[dict[str, Any]]] = {
    Retry: [
        {},
        {"max_attempts": 2},
        {"total": None},
        {"backoff_base": 0.25},
        {"backoff_max": 1.0},
        {"statuses": frozenset({503})},
        {"retry_transport_errors": False},
        {"retry_invalid_responses": False},
        {"respect_retry_after": False},
        {"max_retry_after": 5.0},
    ],
    Timeout: [{}, {"request": 5.0}, {"connect": None}, {"total": 30.0}],
    PersonName: [
        {},
        {"alphabetic": "Doe^John"},
        {"ideographic": "山田^太郎"},
        {"phonetic": "やまだ^たろう"},
        {"alphabetic": "Doe^John", "phonetic": "x'\n\x1b"},
    ],
}


def _pairs(cls: type) -> list[tuple[Any, Any]]:
    twin = _twin(cls)
    out = []
    for kwargs in CASES[cls]:
        ours = cls(**kwargs)
        values = {f.name: getattr(ours, f.name) for f in attrs.fields(cls)}
        out.append((ours, twin(**values)))
    return out


@pytest.mark.parametrize("cls", list(CASES))
def test_the_class_uses_the_shared_methods_not_generated_ones(cls: type) -> None:
    assert issubclass(cls, ValueMethods)
    for name in ("__repr__", "__eq__", "__hash__"):
        assert getattr(cls, name) is getattr(ValueMethods, name), name


@pytest.mark.parametrize("cls", list(CASES))
def test_repr_is_attrs_repr(cls: type) -> None:
    for ours, twin in _pairs(cls):
        assert repr(ours) == repr(twin)


@pytest.mark.parametrize("cls", list(CASES))
def test_equality_and_hash_are_attrs_ones(cls: type) -> None:
    pairs = _pairs(cls)
    for (a, twin_a), (b, twin_b) in itertools.product(pairs, repeat=2):
        assert (a == b) is (twin_a == twin_b)
        assert (a != b) is (twin_a != twin_b)
        if a == b:
            assert hash(a) == hash(b)
    # a field changed makes a different object, rebuilt from the same values an equal one
    first, *others = (ours for ours, _twin_ in pairs)
    assert all(first != other for other in others)
    assert all(attrs.evolve(other) == other for other in others)


def test_another_class_with_the_same_values_is_not_equal() -> None:
    twin = _twin(Timeout)(request=60.0, connect=10.0, total=None)
    assert Timeout() != twin
    assert Timeout().__eq__(twin) is NotImplemented
    assert Timeout().__eq__(object()) is NotImplemented


def test_a_field_left_out_of_eq_is_left_out_of_hash_and_repr_as_attrs_does() -> None:
    @attrs.frozen(repr=False, eq=False)
    class Point(ValueMethods):
        x: int
        label: str = attrs.field(default="", eq=False, repr=False)
        note: object = attrs.field(default=None, hash=False)

    assert Point(1, "a") == Point(1, "b")
    assert hash(Point(1, "a")) == hash(Point(1, "b"))
    assert Point(1, note=[1]) != Point(1, note=[2])
    assert hash(Point(1, note=[1])) == hash(Point(1, note=[2]))  # an unhashable value left out
    assert repr(Point(1, "a", 2)) == "Point(x=1, note=2)"


RAW = {
    "0020000D": {"vr": "UI", "Value": ["1.2.3"]},
    "00201206": {"vr": "IS", "Value": [72]},
}


def test_models_are_equal_by_their_elements_and_children() -> None:
    study = Study(raw=RAW)
    same = Study(raw={key: dict(value) for key, value in RAW.items()})
    assert study == same
    assert hash(study) == hash(same)
    # 72 and 72.0 are equal in Python, not in the JSON received
    other = Study(raw={**RAW, "00201206": {"vr": "IS", "Value": [72.0]}})
    assert study != other
    series_raw = {"0020000E": {"vr": "UI", "Value": ["1.2.3.4"]}}
    series = Series(raw=series_raw)
    with_series = study.with_series([series])
    assert with_series != study
    assert with_series == same.with_series([Series(raw=dict(series_raw))])
    assert hash(with_series) == hash(same.with_series([Series(raw=dict(series_raw))]))
    assert with_series != same.with_series([Series(raw={})])  # children differ
    instance = Instance(raw={"00080018": {"vr": "UI", "Value": ["1.2.3.4.5"]}})
    assert series.with_instances([instance]) != series
    # a model is never equal to another level's, nor to a plain mapping
    assert Study(raw={}) != Series(raw={})
    assert study.__eq__(dict(RAW)) is NotImplemented


def test_a_typed_field_given_rewrites_the_elements_so_equality_follows_it() -> None:
    study = Study(raw=RAW)
    assert attrs.evolve(study, StudyID="S1") != study
    assert attrs.evolve(study, StudyID="S1") == attrs.evolve(study, StudyID="S1")
    assert attrs.evolve(study, NumberOfStudyRelatedSeries=72) == study


def test_queries_share_eq_and_hash_and_keep_their_own_repr() -> None:
    assert BaseQuery.__eq__ is ValueMethods.__eq__
    assert BaseQuery.__hash__ is ValueMethods.__hash__
    assert BaseQuery.__repr__ is not ValueMethods.__repr__
    twin = _twin(BaseQuery)
    queries = [
        HierarchicalQuery(),
        HierarchicalQuery(limit=10),
        HierarchicalQuery(PatientID="P1", filters={"StudyDate": "20240101-"}),
        HierarchicalQuery(query_level="SERIES", StudyInstanceUID="1.2"),
    ]
    twins = [twin(**{f.name: getattr(q, f.name) for f in attrs.fields(BaseQuery)}) for q in queries]
    for (a, ta), (b, tb) in itertools.product(zip(queries, twins, strict=True), repeat=2):
        assert (a == b) is (ta == tb)
        if a == b:
            assert hash(a) == hash(b)
    # the same fields in the other kind of query: not equal (attrs' "same class only")
    series = RelationalQuery(query_level="SERIES", StudyInstanceUID="1.2")
    assert series != queries[3]
    assert series == RelationalQuery(query_level="SERIES", StudyInstanceUID="1.2")
