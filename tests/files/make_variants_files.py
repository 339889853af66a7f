"""Make the LibreOffice-saved workbook of tests/test_sheet_variants.py (see README.md here).

Run from the repository root: `python tests/files/make_variants_files.py` (needs `soffice`).
The source is written with XlsxWriter, then opened and saved by LibreOffice, so the
committed file holds LibreOffice's own styles part (its cellXfs, alignment and protection).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import xlsxwriter

HERE = Path(__file__).parent
IMAGE = "https://images.example.com/product.png"
ROWS = [  # prompt, ratio, resolution, takes
    ("Sneaker on a pedestal", "9:16|1:1", "720p", ""),
    ("Watch on a wrist", "9:16|16:9", "480p|720p", ""),
    ("Bag on a bench", "16:9", "480p", 2),
    ("Cap on a shelf", "1:1", "480p", ""),
]


def variants(path: Path) -> None:
    """Ads with several jobs per row; output columns the team formatted in advance."""
    book = xlsxwriter.Workbook(str(path))
    ws = book.add_worksheet("Ads")
    bold = book.add_format({"bold": True, "bg_color": "#DDEBF7"})
    yellow = book.add_format({"bg_color": "#FFF2CC", "border": 1})
    top = book.add_format({"bg_color": "#E2EFDA", "valign": "top", "italic": True})
    headers = ["prompt", "first_frame_image_url", "ratio", "resolution", "takes", "variant"]
    ws.write_row(0, 0, [*headers, "request_id", "status", "video_url", "error"], bold)
    for i, (prompt, ratio, resolution, takes) in enumerate(ROWS, start=1):
        ws.write_row(i, 0, [prompt, IMAGE, ratio, resolution, takes, f"Spring {i}"])
        ws.write_blank(i, 6, None, yellow)
        ws.write_blank(i, 7, None, top)  # an alignment of its own: wrapText joins it
        ws.write_blank(i, 8, None, yellow)
        ws.write_blank(i, 9, None, yellow)
    ws.set_column(0, 0, 30)
    book.add_worksheet("Notes").write(0, 0, "keep me")
    book.close()


def main() -> None:
    """Write the source, convert it with LibreOffice, keep the converted file here."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        source = folder / "source" / "variants.xlsx"
        source.parent.mkdir()
        variants(source)
        # a profile of its own: another soffice running would take the job and not do it
        profile = f"-env:UserInstallation=file://{folder / 'profile'}"
        subprocess.run(
            ["soffice", profile, "--headless", "--convert-to", "xlsx", "--outdir", tmp, source],
            check=True,
            timeout=120,
        )
        shutil.copyfile(folder / "variants.xlsx", HERE / "libreoffice_variants.xlsx")


if __name__ == "__main__":
    main()
