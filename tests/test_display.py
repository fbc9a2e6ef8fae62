"""Rich display: HTML tables and cards with escaped values; short plain reprs."""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser

import attrs

from aqido.display import html_table, short_repr
from aqido.results import Dataset, Instance, Series, Study

HOSTILE = '<script>alert("x")</script>&amp;\'<b>'


class Cells(HTMLParser):
    """Collect the text of every table cell, and every tag seen."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: list[str] = []
        self.tags: list[str] = []
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag in ("td", "th"):
            self._in = ""

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._in is not None:
            self.cells.append(self._in)
            self._in = None

    def handle_data(self, data: str) -> None:
        if self._in is not None:
            self._in += data


def parse(markup: str) -> Cells:
    cells = Cells()
    cells.feed(markup)
    return cells


def make_study(uid: str, name: str, description: str) -> Study:
    return Study.from_json(
        {
            "0020000D": {"vr": "UI", "Value": [uid]},
            "00100010": {"vr": "PN", "Value": [{"Alphabetic": name}]},
            "00081030": {"vr": "LO", "Value": [description]},
            "00080020": {"vr": "DA", "Value": ["20240131"]},
            "00080061": {"vr": "CS", "Value": ["CT", "MR"]},
            "00080005": {"vr": "CS", "Value": ["ISO_IR 192"]},
        }
    )


def make_series(uid: str, number: int, description: str) -> Series:
    return Series.from_json(
        {
            "0020000E": {"vr": "UI", "Value": [uid]},
            "00200011": {"vr": "IS", "Value": [number]},
            "00080060": {"vr": "CS", "Value": ["CT"]},
            "0008103E": {"vr": "LO", "Value": [description]},
        }
    )


def test_table_cells_hold_the_values() -> None:
    markup = html_table([make_study("1.2.3", "Doe^John", "Chest"), make_study("1.2.4", "", "")])
    cells = parse(markup).cells
    assert cells[:4] == ["StudyInstanceUID", "PatientName", "StudyDescription", "StudyDate"]
    assert "SpecificCharacterSet" not in cells  # hidden in compact tables
    assert cells[5:10] == ["1.2.3", "Doe^John", "Chest", "2024-01-31", "CT\\MR"]
    assert cells[10:15] == ["1.2.4", "", "", "2024-01-31", "CT\\MR"]
    assert "2 results" in markup


def test_hostile_values_are_escaped() -> None:
    study = make_study("1.2.3", HOSTILE, HOSTILE)
    for markup in (html_table([study]), study._repr_html_()):
        parsed = parse(markup)
        assert "script" not in parsed.tags
        assert "b" not in parsed.tags[parsed.tags.index("table") :]
        assert HOSTILE in parsed.cells
        assert html.escape(HOSTILE) in markup


def test_long_values_are_cut_with_the_full_value_in_the_title() -> None:
    long = "x" * 100 + "<>"
    markup = html_table([make_study("1.2.3", "A", long)], max_chars=20)
    assert "x" * 19 + "…" in parse(markup).cells
    assert f'title="{html.escape(long)}"' in markup


def test_max_rows_adds_a_more_line() -> None:
    studies = [make_study(f"1.2.{i}", "A", "d") for i in range(5)]
    markup = html_table(studies, max_rows=2)
    cells = parse(markup).cells
    assert "1.2.1" in cells
    assert "1.2.2" not in cells
    assert "… 3 more" in cells


def test_columns_option_and_child_counts() -> None:
    study = attrs.evolve(make_study("1.2.3", "A", "d"), series=[make_series("1.2.3.1", 1, "Axial")])
    cells = parse(html_table([study, make_study("1.2.4", "B", "e")], columns=["PatientName"])).cells
    assert cells == ["PatientName", "series", "A", "1", "B", "0"]


def test_study_card_lists_its_series() -> None:
    series = [make_series("1.2.3.1", 1, "Axial <5mm>"), make_series("1.2.3.2", 2, "Coronal")]
    study = attrs.evolve(make_study("1.2.3", "Doe^John", "Chest"), series=series)
    markup = study._repr_html_()
    cells = parse(markup).cells
    assert "Doe^John" in markup.split("<details>")[0]  # the heading
    at = cells.index("1.2.3.1")
    assert cells[at - 4 : at] == ["1", "CT", "Axial <5mm>", ""]
    assert "Coronal" in cells
    assert "2 series:" in markup
    # the attribute table (in <details>) lists every attribute, hidden ones included
    assert "SpecificCharacterSet" in cells


def test_series_shows_its_instances_and_datasets_show_attributes() -> None:
    inst = Instance.from_json(
        {
            "00080018": {"vr": "UI", "Value": ["1.2.3.1.7"]},
            "00200013": {"vr": "IS", "Value": [7]},
        }
    )
    series = attrs.evolve(make_series("1.2.3.1", 1, "Axial"), instances=[inst])
    cells = parse(series._repr_html_()).cells
    assert "1.2.3.1.7" in cells
    assert "7" in cells
    assert parse(inst._repr_html_()).cells == ["SOPInstanceUID", "1.2.3.1.7", "InstanceNumber", "7"]
    assert "no instances attached" in make_series("1.2", 1, "x")._repr_html_()
    plain = Dataset({"00100010": {"vr": "PN", "Value": [{"Alphabetic": HOSTILE}]}})
    assert parse(plain._repr_html_()).cells == ["PatientName", HOSTILE]


def test_plain_repr_is_short() -> None:
    series = [make_series(f"1.2.3.{i}", i, "d") for i in range(40)]
    study = attrs.evolve(make_study("1.2.3", "Doe^John", "Chest"), series=series)
    text = repr(study)
    assert text == short_repr(study)
    assert text == (
        "Study(StudyInstanceUID='1.2.3', PatientName='Doe^John', "
        "StudyDate=datetime.date(2024, 1, 31), ModalitiesInStudy=('CT', 'MR'), <40 series>)"
    )
    assert repr(series[1]) == (
        "Series(SeriesInstanceUID='1.2.3.1', Modality='CT', SeriesNumber=1, SeriesDescription='d')"
    )
    assert re.fullmatch(r"Instance\(\)", repr(Instance.from_json({})))


def test_search_results_display_as_a_table() -> None:
    from aqido.client import SearchResults

    results = SearchResults([make_study("1.2.3", HOSTILE, "Chest"), make_study("1.2.4", "B", "")])
    markup = results._repr_html_()
    cells = parse(markup).cells
    assert "script" not in parse(markup).tags
    assert cells[:2] == ["StudyInstanceUID", "PatientName"]
    assert cells[5:8] == ["1.2.3", HOSTILE, "Chest"]
    assert "2 results" in markup
    assert repr(results).startswith("[Study(StudyInstanceUID='1.2.3'")


def test_control_and_format_characters_show_as_escapes_in_html() -> None:
    sneaky = "Doe\x1b[2J\u202eevil\u200b\x9b"
    study = make_study("1.2.3", sneaky, sneaky)
    for markup in (html_table([study]), study._repr_html_(), html_table([study], max_chars=5)):
        for char in "\x1b\u202e\u200b\x9b":
            assert char not in markup
    assert "Doe\\x1b[2J\\u202eevil\\u200b\\x9b" in parse(study._repr_html_()).cells


def test_huge_values_give_bounded_reprs_and_tooltips() -> None:
    huge = "y" * 100_000
    item = {
        "0020000D": {"vr": "UI", "Value": ["1.2.3"]},
        "00100020": {"vr": "LO", "Value": [huge]},
        "00080061": {"vr": "CS", "Value": ["CT"] * 100_000},
        "00400275": {"vr": "SQ", "Value": [{"00100020": {"vr": "LO", "Value": [huge]}}] * 1000},
    }
    study = Study.from_json(item)
    assert len(repr(study)) < 600
    assert repr(study).startswith("Study(StudyInstanceUID='1.2.3', PatientID='yyy")
    assert len(repr(Dataset.from_json(item))) < 600
    assert len(repr(Dataset.from_json({"00100020": {"vr": "LO", "Value": ["a"]}}))) < 40
    assert repr(Dataset.from_json(item)["RequestAttributesSequence"][:1]).endswith("…),)")
    for markup in (html_table([study]), study._repr_html_()):
        assert len(markup) < 10_000


def test_attribute_table_stops_at_max_rows() -> None:
    item = {f"0009{0x1000 + i:04X}": {"vr": "LO", "Value": ["v"]} for i in range(200)}
    for ds in (Dataset.from_json(item), Study.from_json(item)):
        cells = parse(ds._repr_html_()).cells
        assert "… 150 more" in cells
        assert len(cells) == 2 * 50 + 1


def test_table_columns_stop_at_max_columns_unless_chosen() -> None:
    from aqido.display import MAX_COLUMNS

    rows = [
        Dataset.from_json({f"0009{r + 0x1000:04X}": {"vr": "LO", "Value": ["v"]}})
        for r in range(50)
    ]
    wide = [
        Dataset.from_json(
            {f"0009{r * 300 + i + 0x1000:04X}": {"vr": "LO", "Value": ["v"]} for i in range(300)}
        )
        for r in range(20)
    ]  # 6,000 distinct attributes
    markup = html_table(wide)
    assert parse(markup).cells[: MAX_COLUMNS + 1][-1] == "v"  # the header row, then the values
    assert len(parse(markup).cells) == MAX_COLUMNS * 21
    assert f"{6000 - MAX_COLUMNS} more columns not shown" in markup
    assert len(parse(html_table(rows)).cells) == 50 * 51  # fewer columns: all shown
    chosen = [f"0009{i + 0x1000:04X}" for i in range(150)]
    assert len(parse(html_table(wide, columns=chosen)).cells) == 150 * 21


def test_repr_of_deeply_nested_sequences_stops_after_a_few_levels() -> None:
    from aqido._json import dumps
    from aqido.results import parse_results

    item: dict[str, object] = {"00100020": {"vr": "LO", "Value": ["leaf"]}}
    for _ in range(340):  # the decoder accepts 341 levels of SQ
        item = {"00400275": {"vr": "SQ", "Value": [item]}}
    [series] = parse_results(dumps([item]), "SERIES")
    text = repr(series["RequestAttributesSequence"])
    assert text.startswith("(Dataset(RequestAttributesSequence=(Dataset(")
    assert len(text) < 200
    assert len(repr(Dataset.from_json(item))) < 200
