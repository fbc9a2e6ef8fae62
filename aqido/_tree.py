"""``build_tree``: group flat results into a study → series → instance tree (pure)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from aqido._dataset import Dataset, _Elements
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
            out[_RETRIEVE_URL] = ("UR", f"{head}/{segment}/{uid}")  # stored form
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
    no parent UID are grouped under a parent whose UID is ``None``.
    """
    studies: dict[str | None, Study] = {}
    real_studies: set[str | None] = set()
    series: dict[tuple[str | None, str | None], Series] = {}
    real_series: set[tuple[str | None, str | None]] = set()
    series_of: dict[str | None, list[tuple[str | None, str | None]]] = {}
    instances: dict[tuple[str | None, str | None], dict[str | None, Instance]] = {}

    def add_study(study: Study, placeholder: bool) -> None:
        uid = study.StudyInstanceUID
        if uid in studies and (placeholder or uid in real_studies):
            return
        studies[uid] = study
        series_of.setdefault(uid, [])
        if not placeholder:
            real_studies.add(uid)

    def add_series(item: Series, placeholder: bool) -> tuple[str | None, str | None]:
        key = (item.StudyInstanceUID, item.SeriesInstanceUID)
        add_study(_parent(Study, item, _STUDY_KEYS), True)
        if key in series and (placeholder or key in real_series):
            return key
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
            instances.setdefault(key, {}).setdefault(result.SOPInstanceUID, result)
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
            index = attached.get(item.SeriesInstanceUID, -1)
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
    """``series`` with those of ``more`` whose SOPInstanceUID it has not got yet appended."""
    have = {i.SOPInstanceUID for i in series.instances}
    new = []
    for instance in more:
        if instance.SOPInstanceUID not in have:
            have.add(instance.SOPInstanceUID)
            new.append(instance)
    return series.with_instances((*series.instances, *new)) if new else series
