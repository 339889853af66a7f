"""`batchgen check --images` against real images on a loopback HTTP server."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import ClassVar

import pytest
from PIL import Image

from tests.helpers import ad_rows, loopback_http, run_cli, write_csv


def _png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 80, 40)).save(buffer, "PNG")
    return buffer.getvalue()


def _jpeg(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (20, 80, 140)).save(buffer, "JPEG", quality=40)
    return buffer.getvalue()


IMAGES = {
    "/good.png": _png(1024, 1024),
    "/tiny.png": _png(200, 200),
    "/wide.jpg": _jpeg(3000, 1000),
    "/notimage.png": b"<html>this is a login page</html>",
}


class _Images(BaseHTTPRequestHandler):
    hits: ClassVar[dict[str, int]] = {}

    def do_GET(self) -> None:
        self.hits[self.path] = self.hits.get(self.path, 0) + 1
        body = IMAGES.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def image_host() -> Iterator[str]:
    _Images.hits = {}
    with loopback_http(_Images) as url:
        yield url


def test_check_images_fetches_each_image_once_and_applies_the_rules(
    tmp_path: Path, image_host: str
) -> None:
    urls = ["good.png", "good.png", "tiny.png", "wide.jpg", "notimage.png", "missing.png"]
    rows = ad_rows(len(urls), first_frame_image_url=lambda i: f"{image_host}/{urls[i]}")
    sheet = write_csv(tmp_path / "ads.csv", rows)

    result = run_cli(["check", sheet, "--images"], None)

    assert result.returncode == 1
    out = result.stdout
    assert "row 2" not in out and "row 3" not in out
    assert "200x200 px" in out and "at least 300" in out
    assert "(row 4, column 'first_frame_image_url')" in out
    assert "row 5" in out and "width/height 3.00" in out
    assert ("row 6" in out and "not a recognisable image" in out) or "Pillow" in out
    assert "row 7" in out and "404" in out
    assert _Images.hits["/good.png"] == 1


def test_a_url_used_by_many_rows_is_fetched_and_reported_once_and_the_counts_agree(
    tmp_path: Path, image_host: str
) -> None:
    rows = ad_rows(16, first_frame_image_url=f"{image_host}/good.png")
    for i in range(2, 14):  # 12 rows share one image that is not there
        rows[i]["first_frame_image_url"] = f"{image_host}/missing.png"
    rows[14]["duration"] = "99"  # and one row is invalid on its own
    sheet = write_csv(tmp_path / "ads.csv", rows)

    result = run_cli(["check", sheet, "--images"], None)

    assert result.returncode == 1
    errors = [line for line in result.stdout.splitlines() if line.startswith("error:")]
    missing = [line for line in errors if "missing.png" in line]
    assert len(missing) == 1, errors
    assert "rows 4, 5, 6, 7, 8, 9, 10, 11, 12, 13 …; 12 rows" in missing[0]
    assert _Images.hits == {"/good.png": 1, "/missing.png": 1}
    # 16 rows: 13 invalid (12 by the image, 1 by its duration), 3 valid with 3 jobs
    assert "estimated cost: $0.36 for 3 valid job(s) of 3 valid row(s)" in result.stdout
    assert "13 invalid row(s)" in result.stdout

    as_json = json.loads(run_cli(["check", sheet, "--images", "--json"], None).stdout)
    assert as_json["valid_jobs"] == 3 and len(as_json["invalid_rows"]) == 13
    assert [p["rows"][:2] for p in as_json["image_problems"]] == [[4, 5]]


def test_check_without_images_fetches_nothing(tmp_path: Path, image_host: str) -> None:
    rows = ad_rows(2, first_frame_image_url=f"{image_host}/tiny.png")
    sheet = write_csv(tmp_path / "ads.csv", rows)

    assert run_cli(["check", sheet], None).returncode == 0
    assert _Images.hits == {}
