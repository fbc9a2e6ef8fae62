"""Benchmark: parsing a large QIDO-RS study response, aqido against the alternatives.

Run ``python benchmarks/parse.py [--studies N] [--repeat K] [--compact] [--no-gc] [--json OUT]``.
It generates a deterministic Orthanc-like ``/studies`` body (the 17 default
study attributes plus StudyDescription, tab-indented like Orthanc's DICOMweb
plugin unless ``--compact``) and prints, side by side, the median time of:

* ``json.loads`` and ``orjson.loads`` of the bytes (the floor);
* aqido's typed parse, ``parse_results(body, STUDY)``: decode (orjson when
  installed) + validate + structure;
* the same plus reading every typed field of every study (all values converted);
* ``pydicom.Dataset.from_json`` per item (after ``json.loads``);
* dicomtrolley's ``QidoRS.parse_qido_response`` (after ``json.loads``).

Ratios are against ``json.loads``.  ``run(studies, repeat) -> dict`` is the
importable entry point (for ``nox -s bench``).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import attrs

from aqido.query import QueryLevel
from aqido.results import Study, parse_results

FAMILY = ["Doe", "Smith", "Müller", "García", "Nguyen", "Yamada", "Kim", "Rossi", "Novak", "Ali"]
GIVEN = ["John", "Jane", "Anna", "Luis", "Mei", "Tarou", "Ji-woo", "Marco", "Eva", "Omar"]
DESCRIPTIONS = ["CT HEAD W/O CONTRAST", "MR BRAIN", "CT CHEST", "US ABDOMEN", "XR CHEST 2V", ""]
MODALITIES = [["CT"], ["MR"], ["CT", "MR"], ["US"], ["CR"], ["CT", "PT"]]


def make_items(studies: int, seed: int = 42) -> list[dict[str, Any]]:
    """Deterministic Orthanc-like study items (default attributes, like FINDINGS.md shows)."""
    rng = random.Random(seed)
    items = []
    for n in range(studies):
        uid = f"1.2.826.0.1.3680043.8.498.{rng.randrange(10**20)}.{n}"
        name: dict[str, str] = {"Alphabetic": f"{rng.choice(FAMILY)}^{rng.choice(GIVEN)}"}
        if n % 10 == 5:
            name = {
                "Alphabetic": "Yamada^Tarou",
                "Ideographic": "山田^太郎",
                "Phonetic": "やまだ^たろう",
            }
        year, month, day = rng.randrange(1995, 2025), rng.randrange(1, 13), rng.randrange(1, 29)
        time_text = f"{rng.randrange(24):02d}{rng.randrange(60):02d}{rng.randrange(60):02d}"
        if n % 3 == 0:
            time_text += f".{rng.randrange(10**6):06d}"
        item: dict[str, Any] = {
            "00080005": {"Value": ["ISO_IR 192"], "vr": "CS"},
            "00080020": {"Value": [f"{year:04d}{month:02d}{day:02d}"], "vr": "DA"},
            "00080030": {"Value": [time_text], "vr": "TM"},
            "00080050": {"Value": [f"ACC{n:07d}"], "vr": "SH"},
            "00080061": {"Value": rng.choice(MODALITIES), "vr": "CS"},
            "00080090": {"vr": "PN"}
            if n % 2
            else {"Value": [{"Alphabetic": f"Ref^{rng.choice(GIVEN)}"}], "vr": "PN"},
            "00081030": {"Value": [rng.choice(DESCRIPTIONS)], "vr": "LO"},
            "00081190": {
                "Value": [f"http://127.0.0.1:8042/dicom-web/studies/{uid}"],
                "vr": "UR",
            },
            "00100010": {"Value": [name], "vr": "PN"},
            "00100020": {"Value": [f"PID{n % 2000:06d}"], "vr": "LO"},
            "00100030": {"vr": "DA"}
            if n % 7 == 0
            else {"Value": [f"{rng.randrange(1930, 2020)}0{rng.randrange(1, 10)}15"], "vr": "DA"},
            "00100040": {"Value": [rng.choice("MFO")], "vr": "CS"},
            "0020000D": {"Value": [uid], "vr": "UI"},
            "00200010": {"Value": [f"S{n}"], "vr": "SH"},
            "00201206": {"Value": [rng.randrange(1, 6)], "vr": "IS"},
            "00201208": {"Value": [rng.randrange(1, 400)], "vr": "IS"},
        }
        items.append(item)
    return items


def make_body(studies: int, compact: bool = False) -> bytes:
    """The response body: tab-indented like Orthanc, or compact."""
    items = make_items(studies)
    if compact:
        return json.dumps(items, ensure_ascii=False, separators=(",", ":")).encode()
    return json.dumps(items, ensure_ascii=False, indent="\t").encode()


def _time_once(fn: Callable[[], object], gc_enabled: bool) -> float:
    gc.collect()
    if not gc_enabled:
        gc.disable()
    try:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start
    finally:
        gc.enable()


def _touch_all(studies: list[Study]) -> None:
    names = [f.name for f in attrs.fields(Study)]
    for study in studies:
        for name in names:
            getattr(study, name)


def run(
    studies: int = 10_000, repeat: int = 5, compact: bool = False, gc_enabled: bool = True
) -> dict[str, Any]:
    """Time every contender on the same body; return medians (seconds) and ratios.

    The garbage collector stays on (as in a real crawl) unless ``gc_enabled`` is
    false (as ``timeit`` does); it is run before every timed call.
    """
    body = make_body(studies, compact)
    contenders: dict[str, Callable[[], object]] = {"json.loads": lambda: json.loads(body)}
    try:
        import orjson

        contenders["orjson.loads"] = lambda: orjson.loads(body)
    except ImportError:  # pragma: no cover
        pass
    contenders["aqido parse_results"] = lambda: parse_results(body, QueryLevel.STUDY)
    contenders["aqido parse_results + read every field"] = lambda: _touch_all(
        parse_results(body, QueryLevel.STUDY)
    )
    try:
        import pydicom

        def pydicom_from_json() -> object:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return [pydicom.Dataset.from_json(item) for item in json.loads(body)]

        contenders["pydicom Dataset.from_json per item"] = pydicom_from_json
    except ImportError:  # pragma: no cover
        pass
    try:
        from dicomtrolley.qido_rs import QidoRS

        def dicomtrolley_parse() -> object:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return QidoRS.parse_qido_response(json.loads(body))

        contenders["dicomtrolley parse_qido_response"] = dicomtrolley_parse
    except ImportError:  # pragma: no cover
        pass

    parsed = parse_results(body, QueryLevel.STUDY)  # warm caches; check the parse is right
    assert len(parsed) == studies
    assert parsed[-1].StudyInstanceUID is not None
    del parsed
    # Fast contenders run round-robin (one call each per round) so that noise from
    # other processes on the machine spreads evenly; the slow ones run fewer times.
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for round_ in range(repeat):
        for name, fn in contenders.items():
            if name.startswith(("pydicom", "dicomtrolley")) and round_ >= max(1, repeat // 3):
                continue
            times[name].append(_time_once(fn, gc_enabled))
    results = {name: statistics.median(t) for name, t in times.items()}
    base = results["json.loads"]
    return {
        "studies": studies,
        "repeat": repeat,
        "body_bytes": len(body),
        "compact": compact,
        "gc_enabled": gc_enabled,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "seconds": results,
        "ratio_vs_json_loads": {name: t / base for name, t in results.items()},
    }


def format_table(report: dict[str, Any]) -> str:
    """The report as a plain-text table."""
    lines = [
        f"{report['studies']:,} studies, {report['body_bytes'] / 1e6:.1f} MB "
        f"({'compact' if report['compact'] else 'tab-indented like Orthanc'}), "
        f"median of {report['repeat']} runs, GC {'on' if report['gc_enabled'] else 'off'}, "
        f"Python {report['python']}",
        f"{'contender':<42} {'ms':>9} {'x json.loads':>13}",
    ]
    for name, seconds in report["seconds"].items():
        ratio = report["ratio_vs_json_loads"][name]
        lines.append(f"{name:<42} {seconds * 1000:>9.1f} {ratio:>13.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--compact", action="store_true", help="compact JSON instead of tabs")
    parser.add_argument("--no-gc", action="store_true", help="disable the GC while timing")
    parser.add_argument("--json", metavar="OUT", help="also write the results as JSON to OUT")
    args = parser.parse_args(argv)
    report = run(args.studies, args.repeat, args.compact, gc_enabled=not args.no_gc)
    print(format_table(report))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
