"""The report's comparison of models: a real run through the CLI, then the page in a browser."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pytest

from batchgen.simulator import Simulator, SimulatorServer
from tests.helpers import IMAGE, fast_config, run_cli, write_csv
from tests.test_report import browse

MODELS = ["seedance-1.5-pro-i2v", "kling-3.0-pro-i2v", "wan-2.6-i2v"]


@dataclass
class Cell:
    """One model's cell of one sheet row."""

    model: str
    videos: list[str] = field(default_factory=list)
    text: str = ""


@dataclass
class Table:
    """The comparison table as a page holds it."""

    models: list[str] = field(default_factory=list)
    rows: dict[str, list[Cell]] = field(default_factory=dict)
    body: dict[str, str] = field(default_factory=dict)


class _TableParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.table = Table()
        self._in_table = False
        self._row: str | None = None
        self._cell: Cell | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "body":
            self.table.body = values
        elif tag == "table" and "compare" in values.get("class", ""):
            self._in_table = True
        elif not self._in_table:
            return
        elif tag == "th" and "data-model" in values:
            self.table.models.append(values["data-model"])
        elif tag == "tr" and "data-row" in values:
            self._row = values["data-row"]
            self.table.rows[self._row] = []
        elif tag == "td" and "data-model" in values and self._row is not None:
            self._cell = Cell(values["data-model"])
            self.table.rows[self._row].append(self._cell)
        elif tag == "video" and self._cell is not None:
            self._cell.videos.append(values.get("src", ""))

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._cell = None
        elif tag == "table":
            self._in_table = False

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.text += data


def parse_table(html: str) -> Table:
    """The comparison table of a report page."""
    parser = _TableParser()
    parser.feed(html)
    parser.close()
    return parser.table


@pytest.fixture(scope="module")
def compared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three rows run through up to three models with downloads, and `batchgen report`."""
    folder = tmp_path_factory.mktemp("compare")
    rows = [
        {"prompt": "Shoe splashes through a stream", "image": IMAGE, "duration": 5},
        {"prompt": "Watch face lights up", "image": IMAGE, "duration": 8},
        {"prompt": "Lamp switches on", "image": IMAGE, "duration": 4},
    ]
    for row in rows[:2]:
        row["model"] = "|".join(MODELS)
    rows[2]["model"] = "seedance-1.5-pro-i2v|kling-3.0-pro-i2v"
    sheet = write_csv(folder / "ads.csv", rows)
    with SimulatorServer(Simulator(fast_config())) as server:
        run = run_cli(["run", sheet, "--download", folder / "videos"], server)
    assert run.returncode == 0, run.stderr
    page = folder / "compare.html"
    made = run_cli(["report", sheet, "-o", page], None)
    assert made.returncode == 0, made.stderr
    return page


def test_one_row_per_sheet_row_and_one_column_per_model(compared: Path) -> None:
    table = parse_table(compared.read_text(encoding="utf-8"))

    assert table.models == MODELS
    assert list(table.rows) == ["2", "3", "4"]
    for cells in table.rows.values():
        assert [c.model for c in cells] == MODELS
        for cell in cells[:2]:
            assert len(cell.videos) == 1 and cell.videos[0].startswith("videos/")
            assert "completed" in cell.text
    row2 = {c.model: c for c in table.rows["2"]}
    # the simulator bills each job at its model's price (a fixed $0.10 where none is known)
    assert "$0.12 billed" in row2["seedance-1.5-pro-i2v"].text  # 5 s at 480p with audio
    assert "$0.84 billed" in row2["kling-3.0-pro-i2v"].text  # 5 s at $0.168/s
    assert "$0.10 billed" in row2["wan-2.6-i2v"].text
    assert re.search(r"\d s$", row2["kling-3.0-pro-i2v"].text.strip())  # the time it took
    lamp = {c.model: c for c in table.rows["4"]}
    assert lamp["wan-2.6-i2v"].videos == [] and "—" in lamp["wan-2.6-i2v"].text


def test_every_compared_video_plays_in_a_real_browser(compared: Path, tmp_path: Path) -> None:
    dom = browse(compared.as_uri(), "--dump-dom", profile=tmp_path / "profile")
    table = parse_table(dom)

    videos = sum(len(c.videos) for cells in table.rows.values() for c in cells)
    assert videos == 8  # 2 rows x 3 models + 1 row x 2 models
    # the cards below the table hold the same 8 videos again
    assert table.body["data-videos-total"] == "16"
    assert table.body["data-videos-ready"] == "16"
    assert table.body["data-videos-failed"] == "0"


def test_a_one_model_sheet_has_no_comparison(tmp_path: Path) -> None:
    sheet = write_csv(tmp_path / "ads.csv", [{"prompt": "p", "image": IMAGE}])
    page = tmp_path / "r.html"

    assert run_cli(["report", sheet, "-o", page], None).returncode == 0

    assert 'class="compare"' not in page.read_text(encoding="utf-8")
