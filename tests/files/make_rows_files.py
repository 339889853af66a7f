"""Make the LibreOffice-saved workbooks of tests/test_sheet_rows.py (see README.md here).

Run from the repository root: `python tests/files/make_rows_files.py` (needs `soffice`).
The sources are written with XlsxWriter, then opened and saved by LibreOffice, so the
committed files hold LibreOffice's own XML (hidden="true", its table and filter parts).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import xlsxwriter

HERE = Path(__file__).parent
IMAGE = "https://images.example.com/product.png"


def table_with_totals(path: Path) -> None:
    """A Table of four ads and a totals row; the third ad's row hidden by hand."""
    book = xlsxwriter.Workbook(str(path))
    ws = book.add_worksheet("Ads")
    data = [[f"LibreOffice ad {i}", IMAGE, "5"] for i in range(1, 5)]
    columns = [
        {"header": "prompt", "total_string": "Total"},
        {"header": "first_frame_image_url", "total_function": "count"},
        {"header": "duration", "total_function": "sum"},
    ]
    ws.add_table(0, 0, 5, 2, {"data": data, "total_row": True, "columns": columns})
    ws.set_row(3, None, None, {"hidden": True})
    book.close()


def filtered(path: Path) -> None:
    """Five ads under an AutoFilter on Region showing EU (two rows hidden by it)."""
    book = xlsxwriter.Workbook(str(path))
    ws = book.add_worksheet("Ads")
    ws.write_row(0, 0, ["prompt", "first_frame_image_url", "Region"])
    for i, region in enumerate(["EU", "US", "EU", "US", "EU"], start=1):
        ws.write_row(i, 0, [f"Filtered ad {i}", IMAGE, region])
        if region != "EU":
            ws.set_row(i, None, None, {"hidden": True})
    ws.autofilter(0, 0, 5, 2)
    ws.filter_column(2, "Region == EU")
    book.close()


def main() -> None:
    """Write each source, convert it with LibreOffice, keep the converted file here."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name, make in (("table_totals", table_with_totals), ("filtered", filtered)):
            source = folder / "source" / f"{name}.xlsx"
            source.parent.mkdir(exist_ok=True)
            make(source)
            # a profile of its own: another soffice running would take the job and not do it
            profile = f"-env:UserInstallation=file://{folder / 'profile'}"
            subprocess.run(
                ["soffice", profile, "--headless", "--convert-to", "xlsx", "--outdir", tmp, source],
                check=True,
                timeout=120,
            )
            shutil.copyfile(folder / f"{name}.xlsx", HERE / f"libreoffice_{name}.xlsx")


if __name__ == "__main__":
    main()
