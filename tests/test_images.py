"""`batchgen check --images` against real images on a loopback HTTP server."""

from __future__ import annotations

import io
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
    assert (
        "row 4, column 'first_frame_image_url'" in out
        and "200x200 px" in out
        and "at least 300" in out
    )
    assert "row 5" in out and "width/height 3.00" in out
    assert ("row 6" in out and "not a recognisable image" in out) or "Pillow" in out
    assert "row 7" in out and "404" in out
    assert _Images.hits["/good.png"] == 1


def test_check_without_images_fetches_nothing(tmp_path: Path, image_host: str) -> None:
    rows = ad_rows(2, first_frame_image_url=f"{image_host}/tiny.png")
    sheet = write_csv(tmp_path / "ads.csv", rows)

    assert run_cli(["check", sheet], None).returncode == 0
    assert _Images.hits == {}
