"""Archives that overflow a server's cap in every way a crawl must split around.

``busy_archive()`` builds DICOM JSON for FakeArchive: studies on a few dates,
one very busy day (times spread over the day, HHMM and fractional times among
them), one second of that day holding more studies than the cap (several
modalities, so only a split by ModalitiesInStudy gets below the cap), and
studies dated before 1900 and in the future (reached through the open-ended
parts of an undated crawl).  Expected answers come from the records returned,
never from a server.
"""

from __future__ import annotations

import random
from typing import Any

from aqido.testing.synthetic import generate_uid

#: (date, number of studies) on the ordinary days.
DAYS = (("20230105", 300), ("20230610", 250), ("20240229", 150), ("18850704", 3), ("20990101", 4))
BUSY_DAY = "20240301"
BUSY_STUDIES = 1400
#: Studies all at the same second of the busy day (above a cap of 50), by modality.
CROWDED_SECOND = "103015"
CROWDED = (("CT", 30), ("MR", 20), ("US", 12))
PREFIX = "1.2.826.0.1.3680043.8.498."


def _uid(*parts: object) -> str:
    return generate_uid(PREFIX, [str(p) for p in parts])


def _time(rng: random.Random) -> str:
    t = f"{rng.randint(0, 23):02d}{rng.randint(0, 59):02d}{rng.randint(0, 59):02d}"
    r = rng.random()
    if r < 0.15:
        return t + f".{rng.randint(0, 999999):06d}"
    if r < 0.25:
        return t[:4]
    return t


def _study(
    n: int, date: str, time: str, modalities: list[str], series: int, instances: int, seed: int
) -> list[dict[str, Any]]:
    study_uid = _uid(seed, "study", n)
    out = []
    for s in range(series):
        series_uid = _uid(seed, "series", n, s)
        for i in range(instances):
            out.append(
                {
                    "0020000D": {"vr": "UI", "Value": [study_uid]},
                    "0020000E": {"vr": "UI", "Value": [series_uid]},
                    "00080018": {"vr": "UI", "Value": [_uid(seed, "instance", n, s, i)]},
                    "00080016": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.7"]},
                    "00080020": {"vr": "DA", "Value": [date]},
                    "00080030": {"vr": "TM", "Value": [time]},
                    "00080060": {"vr": "CS", "Value": [modalities[s % len(modalities)]]},
                    "00100020": {"vr": "LO", "Value": [f"P{n % 700:05d}"]},
                    "00200011": {"vr": "IS", "Value": [s + 1]},
                    "00200013": {"vr": "IS", "Value": [i + 1]},
                }
            )
    return out


def busy_archive(
    *,
    seed: int = 1,
    series: int = 1,
    instances: int = 1,
    scale: float = 1.0,
    crowded: bool = True,
) -> tuple[list[dict[str, Any]], dict[str, dict[str, set[str]]]]:
    """(DICOM JSON instances, expected tree ``{study: {series: {instances}}}``).

    ``scale`` shrinks every group (the crowded second, unless ``crowded=False``,
    always overflows a cap of 50).
    """
    rng = random.Random(seed)
    datasets: list[dict[str, Any]] = []
    n = 0

    def add(date: str, time: str, modalities: list[str]) -> None:
        nonlocal n
        datasets.extend(_study(n, date, time, modalities, series, instances, seed))
        n += 1

    for date, count in DAYS:
        for _ in range(max(1, int(count * scale))):
            add(date, _time(rng), [rng.choice(("CT", "MR", "CR", "US"))])
    for _ in range(max(1, int(BUSY_STUDIES * scale))):
        add(BUSY_DAY, _time(rng), [rng.choice(("CT", "MR", "DX", "US", "MG"))])
    for modality, count in CROWDED if crowded else ():
        for _ in range(count):
            add(BUSY_DAY, CROWDED_SECOND, [modality, "SR"] if n % 3 == 0 else [modality])
    rng.shuffle(datasets)  # no helpful order: the server's listing order is arbitrary
    tree: dict[str, dict[str, set[str]]] = {}
    for item in datasets:
        study = tree.setdefault(item["0020000D"]["Value"][0], {})
        study.setdefault(item["0020000E"]["Value"][0], set()).add(item["00080018"]["Value"][0])
    return datasets, tree


def tree_of(studies: list[Any]) -> dict[str, dict[str, set[str]]]:
    """The UID tree of crawled studies; fails if a study comes twice."""
    out: dict[str, dict[str, set[str]]] = {}
    for study in studies:
        uid = str(study.StudyInstanceUID)
        assert uid not in out, f"study {uid} yielded twice"
        out[uid] = {
            str(series.SeriesInstanceUID): {str(i.SOPInstanceUID) for i in series.instances}
            for series in study.series
        }
    return out
