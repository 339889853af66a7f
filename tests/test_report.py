"""The HTML report: a real run through the CLI and simulator, then the page in a real browser."""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from batchgen.config import build_config
from batchgen.htmlreport import render_report
from batchgen.ledger import JobRecord
from batchgen.runner import load_batch, open_ledger
from batchgen.simulator import Simulator, SimulatorServer
from batchgen.specs import SheetPlan
from tests.helpers import TOKEN, ad_rows, fast_config, run_cli, write_csv

XSS = "<script>alert(1)</script>"
BROWSER_TIMEOUT = 60  # seconds; a cold Chromium start is a second or two


# --------------------------------------------------------------------------- helpers


@dataclass
class Card:
    """What the page says about one card."""

    status: str
    hidden: bool
    video: str | None
    text: str = ""


@dataclass
class Page:
    """A parsed report page (as written, or as a browser left it)."""

    body: dict[str, str] = field(default_factory=dict)
    cards: list[Card] = field(default_factory=list)
    filters: dict[str, str] = field(default_factory=dict)  # data-filter -> aria-pressed
    scripts: int = 0


class _PageParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.page = Page()
        self._in_card = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "body":
            self.page.body = values
        elif tag == "script":
            self.page.scripts += 1
        elif tag == "article":
            self.page.cards.append(Card(values["data-status"], "hidden" in values, None))
            self._in_card = True
        elif tag == "video" and self._in_card:
            self.page.cards[-1].video = values.get("src")
        elif tag == "button" and "data-filter" in values:
            self.page.filters[values["data-filter"]] = values.get("aria-pressed", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "article":
            self._in_card = False

    def handle_data(self, data: str) -> None:
        if self._in_card:
            self.page.cards[-1].text += data


def parse(text: str) -> Page:
    """The cards, filter buttons and body attributes of a report page."""
    parser = _PageParser()
    parser.feed(text)
    parser.close()
    return parser.page


@dataclass
class Ran:
    """A sheet run through the CLI, and the report rendered from its ledger."""

    folder: Path
    sheet: Path
    videos: Path
    plan: SheetPlan
    records: dict[str, JobRecord]
    report: Path

    @property
    def html(self) -> str:
        """The report page as written."""
        return self.report.read_text(encoding="utf-8")

    def states(self) -> list[str]:
        """The ledger state of every job of the plan."""
        return [self.records[job.key].state for job in self.plan.jobs]


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> Ran:
    """Six cards: a failed job, an invalid row, and four completed jobs with downloaded videos."""
    folder = tmp_path_factory.mktemp("report")
    sheet, videos = folder / "ads.csv", folder / "videos"
    rows = ad_rows(5, variant=lambda i: f"v{i}")
    rows[0]["prompt"] = f'Say "hi" & {XSS} then spin'
    rows[1].update(ratio="9:16|1:1", duration=8, generate_audio="no")
    rows[2]["prompt"] = "This product is doomed to fail"
    rows[3]["ratio"] = "2:1"  # not a ratio the model takes: an invalid row
    with SimulatorServer(Simulator(fast_config(failure_rate=1.0))) as server:
        # the doomed row runs alone first, while every job fails; its ledger record stays failed
        write_csv(sheet, [rows[2]])
        first = run_cli(["run", sheet], server)
        assert first.returncode == 1, first.stderr
        server.simulator.config.failure_rate = 0.0
        write_csv(sheet, rows)
        second = run_cli(["run", sheet, "--download", videos], server)
    assert second.returncode == 1, second.stderr  # one failed job and one invalid row
    config = build_config(sheet)
    plan = load_batch(config).plan
    ledger = open_ledger(config)
    try:
        records = ledger.get_jobs()
    finally:
        ledger.close()
    report = render_report(title=sheet.name, plan=plan, records=records, out=folder / "r.html")
    return Ran(folder, sheet, videos, plan, records, report)


def find_chromium() -> str:
    """The Chromium binary, or skip the test."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no chromium binary on PATH (apt-get install -y chromium)")


def browse(url: str, *args: str, profile: Path) -> str:
    """Run headless Chromium on `url` with `args` and return its stdout."""
    command = [
        find_chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--autoplay-policy=no-user-gesture-required",
        # virtual time runs the page's scripts and media loads to quiescence, then stops
        "--virtual-time-budget=5000",
        *args,
        url,
    ]
    # its own session, so a hung browser and its helper processes can all be killed together
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=BROWSER_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    assert proc.returncode == 0, err[-2000:]
    return out


def dump_dom(report: Path, profile: Path, fragment: str = "") -> Page:
    """The page as the browser left it after its scripts ran."""
    return parse(browse(report.as_uri() + fragment, "--dump-dom", profile=profile))


def with_download(records: dict[str, JobRecord], key: str, path: Path | None) -> dict[str, Any]:
    """A copy of `records` with one job's download_path changed."""
    changed = dict(records)
    changed[key] = dataclasses.replace(records[key], download_path=str(path) if path else None)
    return changed


def completed(ran: Ran) -> Sequence[JobRecord]:
    """The completed jobs' records, in plan order."""
    return [r for r in (ran.records[j.key] for j in ran.plan.jobs) if r.state == "completed"]


@pytest.fixture
def profile(tmp_path: Path) -> Iterator[Path]:
    """A throwaway browser profile."""
    yield tmp_path / "chromium-profile"


# --------------------------------------------------------------------------- the page as written


def test_the_run_gives_the_expected_mix_of_outcomes(ran: Ran) -> None:
    assert sorted(ran.states()) == ["completed"] * 4 + ["failed"]
    assert list(ran.plan.invalid) == [5]
    for record in completed(ran):
        assert record.download_path and Path(record.download_path).stat().st_size > 1000


def test_one_card_per_job_and_per_invalid_row_in_sheet_order(ran: Ran) -> None:
    page = parse(ran.html)

    statuses = [card.status for card in page.cards]
    assert len(page.cards) == len(ran.plan.jobs) + len(ran.plan.invalid) == 6
    assert statuses == ["completed", "completed", "completed", "failed", "invalid", "completed"]
    assert list(page.filters) == ["all", "completed", "failed", "invalid"]
    assert not any(card.hidden for card in page.cards)  # without JS everything shows
    assert "row 5" in page.cards[4].text and "ratio" in page.cards[4].text
    assert "2:1" in page.cards[4].text  # the problem says what was wrong
    failed = page.cards[3]
    assert failed.video is None and ran.records[ran.plan.jobs[3].key].error in failed.text
    # the card names its variant as the sheet's lines do (the label follows the row number)
    assert "row 39:16Product" in page.cards[1].text and "row 31:1Product" in page.cards[2].text
    assert "8 s" in page.cards[1].text and "audio" in page.cards[1].text


def test_prompts_are_escaped_and_the_only_script_is_the_pages_own(ran: Ran) -> None:
    html = ran.html
    page = parse(html)

    assert XSS not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert page.scripts == 1
    assert f'Say "hi" & {XSS} then spin' in page.cards[0].text  # shown exactly as typed
    assert TOKEN not in html


def test_videos_point_at_the_downloaded_files_relative_to_the_report(ran: Ran) -> None:
    page = parse(ran.html)

    sources = [card.video for card in page.cards if card.status == "completed"]
    expected = [os.path.relpath(r.download_path or "", ran.folder) for r in completed(ran)]
    assert sources == expected
    for src in sources:
        assert src is not None and src.startswith("videos/row0000") and src.endswith(".mp4")
        assert (ran.folder / src).is_file()
    assert '<video controls preload="metadata" playsinline' in ran.html


def test_a_report_elsewhere_links_back_and_a_missing_file_falls_back_to_the_url(
    ran: Ran, tmp_path: Path
) -> None:
    first = completed(ran)[0]
    records = with_download(ran.records, first.key, tmp_path / "gone.mp4")
    out = ran.folder / "sub" / "deeper" / "report.html"

    render_report(title="ads.csv", plan=ran.plan, records=records, out=out)

    sources = [c.video for c in parse(out.read_text()).cards if c.status == "completed"]
    assert sources[0] == first.video_url and sources[0].startswith("http://")
    assert all(src.startswith("../../videos/") for src in sources[1:] if src)
    assert sorted(p.name for p in out.parent.iterdir()) == ["report.html"]  # no temp file left


def test_unsafe_urls_never_reach_an_attribute(ran: Ran, tmp_path: Path) -> None:
    first = completed(ran)[0]
    records = with_download(ran.records, first.key, None)
    records[first.key].video_url = "javascript:alert(1)"
    odd = tmp_path / "javascript:alert(2).mp4"
    second = completed(ran)[1]
    odd.write_bytes(Path(second.download_path or "").read_bytes())
    records = with_download(records, second.key, odd)

    out = render_report(title="x", plan=ran.plan, records=records, out=tmp_path / "r.html")

    html = out.read_text()
    cards = [c for c in parse(html).cards if c.status == "completed"]
    assert cards[0].video is None and "javascript:" not in html
    assert cards[1].video == "javascript%3Aalert%282%29.mp4"  # a relative path, not a scheme


# --------------------------------------------------------------------------- in a real browser


def test_the_failed_view_shows_only_the_failed_card(ran: Ran, profile: Path) -> None:
    page = dump_dom(ran.report, profile, "#failed")

    assert page.body["data-filter"] == "failed"
    shown = [card.status for card in page.cards if not card.hidden]
    assert shown == ["failed"]
    assert len(page.cards) == 6
    assert page.filters["failed"] == "true" and page.filters["all"] == "false"


def test_an_unknown_hash_shows_everything(ran: Ran, profile: Path) -> None:
    page = dump_dom(ran.report, profile, "#nonsense")

    assert page.body["data-filter"] == "all"
    assert not any(card.hidden for card in page.cards)


def test_the_downloaded_videos_load_in_the_browser(ran: Ran, profile: Path) -> None:
    page = dump_dom(ran.report, profile)

    assert page.body["data-videos-total"] == str(len(completed(ran))) == "4"
    assert page.body["data-videos-ready"] == "4"
    assert page.body["data-videos-failed"] == "0"


def test_a_broken_video_is_counted_as_not_ready(ran: Ran, profile: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video at all" * 20)
    records = with_download(ran.records, completed(ran)[0].key, broken)
    out = render_report(title="x", plan=ran.plan, records=records, out=ran.folder / "broken.html")

    page = dump_dom(out, profile)

    assert (page.body["data-videos-ready"], page.body["data-videos-failed"]) == ("3", "1")


@pytest.mark.parametrize("width,height", [(390, 844), (1280, 900)])
def test_screenshots_show_a_page(ran: Ran, profile: Path, width: int, height: int) -> None:
    shot = ran.folder / f"report-{width}x{height}.png"

    browse(
        ran.report.as_uri(),
        f"--window-size={width},{height}",
        f"--screenshot={shot}",
        "--hide-scrollbars",
        profile=profile,
    )

    assert shot.stat().st_size > 10_000
    with Image.open(shot) as image:
        assert image.size == (width, height)
        colours = image.convert("RGB").getcolors(maxcolors=1_000_000) or []
    assert len(colours) > 100  # text, badges and video frames, not a blank page
