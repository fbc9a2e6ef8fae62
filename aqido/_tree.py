"""``build_tree``: group flat results into a study → series → instance tree (pure)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from aqido._dataset import Dataset
from aqido._elements import _El, _Elements
from aqido._models import Instance, Series, Study

_D = TypeVar("_D", bound=Dataset)


# --------------------------------------------------------------------------- tree

_RETRIEVE_URL = "00081190"
#: Attributes of a child that describe the child itself, not its parent: never copied to a
#: placeholder parent (see _parent). Its RetrieveURL names the child; its
#: InstanceAvailability is the child's (a study's may differ: some instances offline).
#: SpecificCharacterSet and TimezoneOffsetFromUTC are copied: they describe the whole
#: dataset the child came in, the parent attributes copied with them included.
_CHILDS_OWN = frozenset({_RETRIEVE_URL, "00080056"})
_STUDY_KEYS = tuple(key for _, key, _, _ in Study._typed if key not in _CHILDS_OWN)
_SERIES_KEYS = tuple(key for _, key, _, _ in Series._typed if key not in _CHILDS_OWN)
_PATH_SEGMENTS = {Study: ("studies", "0020000D"), Series: ("series", "0020000E")}


class _Unnamed:
    """The key of a result with no UID of its own whose level's ``None`` key is already
    held by another such result: it equals no other key, so neither result is dropped."""

    __slots__ = ()


#: A result's key among its level's: its UID, ``None`` for the first result without one.
_Key = str | None | _Unnamed


def _parent(cls: type[_D], child: Dataset, keys: Iterable[str]) -> _D:
    """A placeholder parent made from a child's parent-level attributes.

    Its RetrieveURL is the child's cut after ``/studies/{uid}`` (``/series/{uid}``
    for a series), as PS3.18 builds them; ``None`` if the child's has no such part.
    """
    raw = child._raw
    out = _Elements({k: raw[k] for k in keys if k in raw})
    segment, uid_key = _PATH_SEGMENTS[cls]
    url, uid = child.get("RetrieveURL"), child.get(uid_key)
    if isinstance(url, str) and isinstance(uid, str):
        head, found, _ = url.partition(f"/{segment}/{uid}/")
        if found:
            out[_RETRIEVE_URL] = _El("UR", (f"{head}/{segment}/{uid}",))  # stored form
    return cls._lazy(out, child._ctx)


def build_tree(results: Iterable[Study | Series | Instance]) -> list[Study]:
    """Group flat results into a study → series → instance tree, by UID.

    Like dicomtrolley's ``QidoRS.parse_qido_response``: series and instances are
    attached under their parents (``Study.series``, ``Series.instances``).  A
    parent that is not itself in ``results`` is made from the child's
    parent-level default attributes (a relational result carries them), with
    a RetrieveURL derived from the child's, never copied (nor the child's
    InstanceAvailability, which is its own).  The
    first result with a given UID wins (later duplicates are dropped); order of
    first appearance is kept.  Children already attached are kept, and the flat
    results under them join them (an Instance whose SOPInstanceUID is already
    attached is dropped).  Results with
    no parent UID are grouped under a parent whose UID is ``None`` (the first
    result without a UID of that parent's level, if any).  A result without a
    UID of its own is never a duplicate: every one is kept.
    """
    studies: dict[_Key, Study] = {}
    real_studies: set[_Key] = set()
    series: dict[tuple[_Key, _Key], Series] = {}
    real_series: set[tuple[_Key, _Key]] = set()
    series_of: dict[_Key, list[tuple[_Key, _Key]]] = {}
    instances: dict[tuple[_Key, _Key], dict[_Key, Instance]] = {}

    def add_study(study: Study, placeholder: bool) -> None:
        uid: _Key = study.StudyInstanceUID
        if uid in studies and (placeholder or uid in real_studies):
            if placeholder or uid is not None:
                return
            uid = _Unnamed()  # another study without a UID: kept, not a duplicate
        studies[uid] = study
        series_of.setdefault(uid, [])
        if not placeholder:
            real_studies.add(uid)

    def add_series(item: Series, placeholder: bool) -> tuple[_Key, _Key]:
        key: tuple[_Key, _Key] = (item.StudyInstanceUID, item.SeriesInstanceUID)
        add_study(_parent(Study, item, _STUDY_KEYS), True)
        if key in series and (placeholder or key in real_series):
            if placeholder or key[1] is not None:
                return key
            key = (key[0], _Unnamed())  # another series without a UID: kept
        if key not in series:
            series_of[key[0]].append(key)
        series[key] = item
        if not placeholder:
            real_series.add(key)
        return key

    for result in results:
        if isinstance(result, Study):
            add_study(result, False)
        elif isinstance(result, Series):
            add_series(result, False)
        elif isinstance(result, Instance):
            key = add_series(_parent(Series, result, (*_SERIES_KEYS, *_STUDY_KEYS)), True)
            uid: _Key = result.SOPInstanceUID
            instances.setdefault(key, {}).setdefault(_Unnamed() if uid is None else uid, result)
        else:
            raise TypeError(f"build_tree() takes Study/Series/Instance, not {type(result)!r}")

    tree: list[Study] = []
    for uid, study in studies.items():
        children = list(study.series)
        attached: dict[str | None, int] = {}  # an attached series' UID → its index
        for index, child in enumerate(children):
            attached.setdefault(child.SeriesInstanceUID, index)
        for key in series_of[uid]:
            item = series[key]
            # a flat Series without a UID is another series than an attached one without
            unnamed = item.SeriesInstanceUID is None and key in real_series
            index = -1 if unnamed else attached.get(item.SeriesInstanceUID, -1)
            extra = instances.get(key, {}).values()
            if index < 0:
                children.append(_with_new_instances(item, extra))
            elif extra or item.instances:
                # The attached series is kept; the instances of the same series among
                # the flat results (and those attached to a flat Series) join it.
                children[index] = _with_new_instances(children[index], (*item.instances, *extra))
        tree.append(study.with_series(children) if children else study)
    return tree


def _with_new_instances(series: Series, more: Iterable[Instance]) -> Series:
    """``series`` with those of ``more`` whose SOPInstanceUID it has not got yet appended.

    An instance without a SOPInstanceUID is appended unless it is already there itself.
    """
    have = {i.SOPInstanceUID for i in series.instances} - {None}
    same = {id(i) for i in series.instances}
    new = []
    for instance in more:
        uid = instance.SOPInstanceUID
        if uid not in have and id(instance) not in same:
            if uid is not None:
                have.add(uid)
            same.add(id(instance))
            new.append(instance)
    return series.with_instances((*series.instances, *new)) if new else series
