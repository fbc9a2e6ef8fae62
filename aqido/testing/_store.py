"""The datasets a :class:`~aqido.testing.FakeArchive` holds, and the walk that finds matches.

Content is stored study by study, series by series (insertion order, so
``limit``/``offset`` paging is stable).  Each attribute is kept at the level it
belongs to (:func:`level_of`): patient and study attributes on the study, series
attributes on the series, everything else on the instance; the study and series
attributes come from the first instance stored for them.  ModalitiesInStudy and
the NumberOf*Related* counts are computed, never stored.  Instances of a
:class:`~aqido.testing.synthetic.SyntheticArchive` are built on demand and not
kept, so large synthetic archives stay small.

:meth:`Store.hits` walks the entities that match compiled keys (:class:`Match`,
made by :mod:`aqido.testing._emulation` with :mod:`aqido.matching`), narrowing by
the UID indexes first; :meth:`Store.render` turns entities into DICOM JSON items.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import attrs

from aqido.matching import (
    SERIES_ATTRIBUTES,
    STUDY_ATTRIBUTES,
    ElementPredicate,
    element_strings,
    match_path,
)

if TYPE_CHECKING:  # pragma: no cover
    from aqido.testing.synthetic import SyntheticArchive

try:  # pragma: no cover - both branches are exercised in different environments
    import orjson

    def dumps(obj: Any) -> bytes:
        """``obj`` as compact UTF-8 JSON bytes (orjson when installed)."""
        data: bytes = orjson.dumps(obj)
        return data

except ImportError:  # pragma: no cover

    def dumps(obj: Any) -> bytes:
        """``obj`` as compact UTF-8 JSON bytes (orjson when installed)."""
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


DICOM_JSON = "application/dicom+json"

# --- levels -------------------------------------------------------------------------------

STUDY, SERIES, INSTANCE = 0, 1, 2

_STUDY_TAGS = STUDY_ATTRIBUTES
_SERIES_TAGS = SERIES_ATTRIBUTES
OWN = -1  # stored at every level (SpecificCharacterSet, TimezoneOffsetFromUTC)
_OWN_TAGS = frozenset({"00080005", "00080201"})

# Attributes the archive computes.
MODALITIES_IN_STUDY = "00080061"
N_STUDY_SERIES = "00201206"
N_STUDY_INSTANCES = "00201208"
N_SERIES_INSTANCES = "00201209"
AVAILABILITY = "00080056"
RETRIEVE_URL = "00081190"
COMPUTED_LEVEL = {
    MODALITIES_IN_STUDY: STUDY,
    N_STUDY_SERIES: STUDY,
    N_STUDY_INSTANCES: STUDY,
    N_SERIES_INSTANCES: SERIES,
}


def level_of(key: str) -> int:
    """The level an attribute is stored at: patient and study, series, or instance."""
    if key in _OWN_TAGS:
        return OWN
    if key in _STUDY_TAGS or key.startswith("0010"):
        return STUDY
    if key in _SERIES_TAGS:
        return SERIES
    return COMPUTED_LEVEL.get(key, INSTANCE)


# --- the records --------------------------------------------------------------------------

Element = dict[str, Any]
Attrs = dict[str, Element]


class _Study:
    __slots__ = ("attrs", "modalities", "modalities_elem", "n_instances", "series", "uid")

    def __init__(self, uid: str, attrs: Attrs) -> None:
        self.uid = uid
        self.attrs = attrs
        self.series: dict[str, _Series] = {}
        self.n_instances = 0
        self.modalities: set[str] = set()
        self.modalities_elem: Element | None = None


class _Series:
    __slots__ = ("attrs", "instances", "study", "uid")

    def __init__(self, uid: str, attrs: Attrs, study: _Study) -> None:
        self.uid = uid
        self.attrs = attrs
        self.study = study
        self.instances: dict[str, _Instance] = {}


class _Instance:
    __slots__ = ("_attrs", "_loader", "seq", "series", "uid")

    def __init__(
        self,
        uid: str,
        series: _Series,
        attrs: Attrs | None = None,
        loader: Callable[[], Attrs] | None = None,
    ) -> None:
        self.uid = uid
        self.series = series
        self.seq = 0  # insertion order in the archive
        self._attrs = attrs
        self._loader = loader

    @property
    def attrs(self) -> Attrs:
        if self._attrs is not None:
            return self._attrs
        assert self._loader is not None
        return self._loader()  # built on demand, not kept: large synthetic archives stay small


#: An entity is (study, series or None, instance or None).
Entity = tuple[_Study, _Series | None, _Instance | None]


def _uid_of(attrs: Mapping[str, Any], key: str, what: str) -> str:
    elem = attrs.get(key)
    values = elem.get("Value") if isinstance(elem, dict) else None
    if not values or not isinstance(values[0], str) or not values[0]:
        raise ValueError(f"a dataset without {what} ({key}) cannot be stored")
    return values[0].rstrip("\0 ")


def _normalise(dataset: Mapping[str, Any]) -> Attrs:
    """Uppercase tag keys; drop pixel data and group lengths."""
    out: Attrs = {}
    for key, elem in dataset.items():
        k = key.upper()
        if k == "7FE00010" or k.endswith("0000"):
            continue
        out[k] = elem
    return out


@attrs.frozen
class Match:
    """One compiled match key of a query: which attribute, at which level, matched how."""

    key: str  # first tag key of the path
    level: int
    path: tuple[str, ...]  # remaining sequence path (tag keys)
    predicate: ElementPredicate | None  # None = universal
    uids: frozenset[str] | None = None  # for UI list matching (index use)


# --- the store ----------------------------------------------------------------------------


class Store:
    """Studies, series and instances by UID, in insertion order, with the match walk."""

    def __init__(self) -> None:
        self.studies: dict[str, _Study] = {}
        self.series: dict[str, _Series] = {}
        self.instances: dict[str, _Instance] = {}

    @property
    def counts(self) -> tuple[int, int, int]:
        """(studies, series, instances) stored."""
        return len(self.studies), len(self.series), len(self.instances)

    def add(self, content: SyntheticArchive | Iterable[Any] | Mapping[str, Any] | Any) -> None:
        """Store a SyntheticArchive, a DICOM JSON dict, a pydicom Dataset or an iterable
        of these; an instance already stored (same SOPInstanceUID) is skipped."""
        from aqido.testing.synthetic import SyntheticArchive, paused_gc

        if isinstance(content, SyntheticArchive):
            with paused_gc():
                self._add_synthetic(content)
        elif isinstance(content, Mapping):
            self._add_json(content)
        elif hasattr(content, "to_json_dict"):  # pydicom Dataset
            self._add_json(content.to_json_dict(bulk_data_threshold=1 << 30))
        elif isinstance(content, Iterable) and not isinstance(content, (str, bytes)):
            for item in content:
                self.add(item)
        else:
            raise TypeError(f"cannot store {type(content).__name__!r} in a FakeArchive")

    def _add_synthetic(self, synth: SyntheticArchive) -> None:
        for st in synth.studies:
            study = self.studies.get(st.study_instance_uid)
            if study is None:
                # study_json/series_json hold only their level's attributes (tested)
                attrs_ = synth.study_json(st, aggregates=False)
                study = self.studies[st.study_instance_uid] = _Study(st.study_instance_uid, attrs_)
            for se in st.series:
                series = self.series.get(se.series_instance_uid)
                if series is None:
                    attrs_ = synth.series_json(se, aggregates=False)
                    series = _Series(se.series_instance_uid, attrs_, study)
                    self.series[se.series_instance_uid] = study.series[series.uid] = series
                    study.modalities.add(se.modality)
                    study.modalities_elem = None
                for inst in se.instances:
                    if inst.sop_instance_uid in self.instances:
                        continue
                    node = _Instance(
                        inst.sop_instance_uid,
                        series,
                        loader=functools.partial(synth._instance_json, st, se, inst),
                    )
                    node.seq = len(self.instances)
                    self.instances[node.uid] = series.instances[node.uid] = node
                    study.n_instances += 1

    def _add_json(self, dataset: Mapping[str, Any]) -> None:
        full = _normalise(dataset)
        study_uid = _uid_of(full, "0020000D", "StudyInstanceUID")
        series_uid = _uid_of(full, "0020000E", "SeriesInstanceUID")
        sop_uid = _uid_of(full, "00080018", "SOPInstanceUID")
        if sop_uid in self.instances:
            return
        levels: tuple[Attrs, Attrs, Attrs] = ({}, {}, {})
        for key, elem in full.items():
            level = level_of(key)
            if level == OWN:
                for attrs_ in levels:
                    attrs_[key] = elem
            elif key in COMPUTED_LEVEL:
                continue
            else:
                levels[level][key] = elem
        levels[SERIES]["0020000D"] = full["0020000D"]
        levels[INSTANCE]["0020000D"] = full["0020000D"]
        levels[INSTANCE]["0020000E"] = full["0020000E"]
        study = self.studies.get(study_uid)
        if study is None:
            study = self.studies[study_uid] = _Study(study_uid, levels[STUDY])
        series = self.series.get(series_uid)
        if series is None:
            series = _Series(series_uid, levels[SERIES], study)
            self.series[series_uid] = study.series[series_uid] = series
            for modality in element_strings(levels[SERIES].get("00080060")):
                study.modalities.add(modality)
            study.modalities_elem = None
        node = _Instance(sop_uid, series, attrs=levels[INSTANCE])
        node.seq = len(self.instances)
        self.instances[sop_uid] = series.instances[sop_uid] = node
        series.study.n_instances += 1

    # --- the match walk ---

    def hits(
        self, level: int, study_uid: str | None, series_uid: str | None, matches: list[Match]
    ) -> Iterator[Entity] | None:
        """The matching entities in stable order; ``None`` for an unknown parent in the path.

        UID keys narrow the walk through the indexes; study-level filters run
        once per study and series-level ones once per series.
        """
        uid_sets = {m.key: m.uids for m in matches if m.uids is not None}
        filters = [m for m in matches if m.predicate is not None]
        if any(m.level > level for m in filters):
            return iter(())  # a lower-level attribute is never present, so never matches
        study_f = [m for m in filters if m.level == STUDY]
        series_f = [m for m in filters if m.level == SERIES]
        rest_f = [m for m in filters if m.level not in (STUDY, SERIES)]
        studies: Iterable[_Study]
        if study_uid is not None:
            study = self.studies.get(study_uid)
            if study is None:
                return None
            if series_uid is not None and series_uid not in study.series:
                return None
            studies = (study,)
        elif "0020000D" in uid_sets:
            wanted = uid_sets["0020000D"] or frozenset()
            studies = [s for u, s in self.studies.items() if u in wanted]
        else:
            studies = self.studies.values()
        if study_f:
            studies = (
                s for s in studies if self._matches_no_instance((s, None, None), study_f, level)
            )
        if level == STUDY:
            entities: Iterator[Entity] = ((s, None, None) for s in studies)
            if rest_f:
                return (e for e in entities if self._matches(e, rest_f, level))
            return entities

        wanted_series = uid_sets.get("0020000E")

        def series_of(study: _Study) -> Iterable[_Series]:
            if series_uid is not None:
                found: Iterable[_Series] = (study.series[series_uid],)
            elif wanted_series is not None:
                found = [se for u, se in study.series.items() if u in wanted_series]
            else:
                found = study.series.values()
            if series_f:
                return [
                    se
                    for se in found
                    if self._matches_no_instance((study, se, None), series_f, level)
                ]
            return found

        if level == SERIES:
            entities = ((s, se, None) for s in studies for se in series_of(s))
        elif "00080018" in uid_sets and study_uid is None and "0020000D" not in uid_sets:
            wanted = uid_sets["00080018"] or frozenset()
            found = sorted(
                (self.instances[u] for u in wanted if u in self.instances),
                key=lambda i: i.seq,
            )
            entities = (
                (i.series.study, i.series, i)
                for i in found
                if self._matches_no_instance(
                    (i.series.study, i.series, None), study_f + series_f, level
                )
            )
        else:
            entities = (
                (s, se, i) for s in studies for se in series_of(s) for i in se.instances.values()
            )
        if rest_f:
            return (e for e in entities if self._matches(e, rest_f, level))
        return entities

    @staticmethod
    def _element(
        entity: Entity,
        key: str,
        level: int,
        result_level: int,
        inst_attrs: Attrs | None = None,
    ) -> Element | None:
        study, series, instance = entity
        if level == OWN:
            if instance is not None:
                return (inst_attrs if inst_attrs is not None else instance.attrs).get(key)
            return (series.attrs if series is not None else study.attrs).get(key)
        if level > result_level:
            return None
        if key in COMPUTED_LEVEL:
            if key == MODALITIES_IN_STUDY:
                if study.modalities_elem is None:
                    study.modalities_elem = {"vr": "CS", "Value": sorted(study.modalities)}
                return study.modalities_elem
            if key == N_STUDY_SERIES:
                return {"vr": "IS", "Value": [len(study.series)]}
            if key == N_STUDY_INSTANCES:
                return {"vr": "IS", "Value": [study.n_instances]}
            assert series is not None
            return {"vr": "IS", "Value": [len(series.instances)]}
        if level == STUDY:
            return study.attrs.get(key)
        if level == SERIES:
            assert series is not None
            return series.attrs.get(key)
        assert instance is not None
        return (inst_attrs if inst_attrs is not None else instance.attrs).get(key)

    def _matches(self, entity: Entity, filters: list[Match], result_level: int) -> bool:
        inst_attrs = entity[2].attrs if entity[2] is not None else None
        return all(self._match_one(entity, m, result_level, inst_attrs) for m in filters)

    def _matches_no_instance(self, entity: Entity, filters: list[Match], result_level: int) -> bool:
        return all(self._match_one(entity, m, result_level, None) for m in filters)

    def _match_one(
        self, entity: Entity, match: Match, result_level: int, inst_attrs: Attrs | None
    ) -> bool:
        elem = self._element(entity, match.key, match.level, result_level, inst_attrs)
        assert match.predicate is not None
        if elem is None:
            return False
        if not match.path:
            return match.predicate(elem)
        return match_path(elem, match.path, match.predicate)

    # --- rendering ---

    @staticmethod
    def _plan(
        level: int, returned: Iterable[str], extra: Iterable[str] = ()
    ) -> list[tuple[str, int]]:
        """The sorted (key, level) pairs to render; lower-level attributes are left out."""
        keys: set[str] = set(returned)
        keys.update(extra)
        plan = []
        for key in sorted(keys):
            key_level = OWN if key in (AVAILABILITY, RETRIEVE_URL) else level_of(key)
            if key_level <= level:
                plan.append((key, key_level))
        return plan

    def render(
        self,
        page: list[Entity],
        level: int,
        top: int,
        returned: frozenset[str],
        include_all: bool,
        base: str,
        *,
        return_sequences: bool,
    ) -> list[dict[str, Any]]:
        """The DICOM JSON items of ``page``: the ``returned`` attributes, or every stored one
        of the levels from ``top`` down with ``include_all``; ``base`` is the service root
        of the RetrieveURLs; ``return_sequences=False`` leaves SQ attributes out."""
        shared = None if include_all else self._plan(level, returned)
        out: list[dict[str, Any]] = []
        for entity in page:
            study, series, instance = entity
            inst_attrs = instance.attrs if instance is not None else None
            plan = shared
            if plan is None:
                extra: set[str] = set()
                if top <= STUDY:
                    extra.update(study.attrs)
                if series is not None and top <= SERIES:
                    extra.update(series.attrs)
                if inst_attrs is not None:
                    extra.update(inst_attrs)
                plan = self._plan(level, returned, extra)
            item: dict[str, Any] = {}
            for key, key_level in plan:
                if key == AVAILABILITY:
                    item[key] = {"vr": "CS", "Value": ["ONLINE"]}
                elif key == RETRIEVE_URL:
                    url = f"{base}/studies/{study.uid}"
                    if level >= SERIES and series is not None:
                        url += f"/series/{series.uid}"
                    if level == INSTANCE and instance is not None:
                        url += f"/instances/{instance.uid}"
                    item[key] = {"vr": "UR", "Value": [url]}
                else:
                    elem = self._element(entity, key, key_level, level, inst_attrs)
                    if elem is not None and (return_sequences or elem.get("vr") != "SQ"):
                        item[key] = elem
            out.append(item)
        return out
