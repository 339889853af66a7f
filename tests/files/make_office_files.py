"""Make the LibreOffice-saved sheets in tests/files (needs `soffice` on PATH; CI uses the files).

Each sheet is laid out with XlsxWriter in a temporary folder, then opened and saved by
LibreOffice (`soffice --headless --convert-to`), so every committed byte is LibreOffice's:
its xlsx parts, styles and shared strings, and its CSV dialect and code pages. Run it from
anywhere: `python tests/files/make_office_files.py`. See README.md beside it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import xlsxwriter

HERE = Path(__file__).resolve().parent
IMAGE = "https://images.example.com/product.png"

# LibreOffice's CSV export options: separator, quote, character set (rtl_TextEncoding
# numbers from LibreOffice's rtl/textenc.h: 1 = Windows-1252, 34 = Windows-1251,
# 64 = Shift-JIS, 65535 = Unicode, i.e. UTF-16 with a BOM), first line 1, cell format
# empty, language 0, then: quote all text cells, detect special numbers, save as shown,
# export formulas, remove space: all false.
CSV_FILTER = "csv:Text - txt - csv (StarCalc):{sep},34,{charset},1,,0,false,false,true,false,false"

CSVS: dict[str, dict[str, Any]] = {
    "ads_cp1251.csv": {
        "charset": 34,
        "sep": ";",  # a Russian locale's list separator
        "header": ["prompt", "first_frame_image_url", "Комментарий"],
        "rows": [
            ["Кроссовки на беговой дорожке, крупный план, утренний свет", IMAGE, "Аня"],
            ["Девушка пьёт кофе у окна; мягкий свет, медленная камера", IMAGE, "Олег"],
            ['Часы на запястье, вращение, чёрный фон, надпись "Время"', IMAGE, "Аня"],
        ],
    },
    "ads_shift_jis.csv": {
        "charset": 64,
        "sep": ",",
        "header": ["prompt", "first_frame_image_url", "担当"],
        "rows": [
            ["夕暮れの海辺を走るスニーカー、ゆっくりとしたカメラ", IMAGE, "佐藤"],
            ["朝の光の中で新しいコーヒーを飲む女性", IMAGE, "鈴木"],
            ["黒い背景で回転する腕時計のクローズアップ", IMAGE, "佐藤"],
        ],
    },
    "ads_cp1252.csv": {
        "charset": 1,
        "sep": ";",
        "header": ["prompt", "first_frame_image_url", "Notes"],
        "rows": [
            ["Un café crème sur une table en bois, lumière douce", IMAGE, "Zoë"],
            ["Des chaussures à la plage, caméra lente — été", IMAGE, "René"],
            ["Schöne Grüße: eine Uhr am Handgelenk", IMAGE, "Jürgen"],
        ],
    },
    "ads_utf16.csv": {
        "charset": 65535,
        "sep": "9",  # a tab, as LibreOffice's options spell it (its code)
        "header": ["prompt", "first_frame_image_url", "Notes"],
        "rows": [
            ["Café ☕ and a sneaker 👟", IMAGE, "mixed"],
            ["Кофе и кроссовки", IMAGE, "ru"],
            ["コーヒーとスニーカー", IMAGE, "ja"],
        ],
    },
    "ads_cp1251_unsure.csv": {  # too short for anyone to tell its code page
        "charset": 34,
        "sep": ",",
        "header": ["prompt", "first_frame_image_url"],
        "rows": [["КРОССОВКИ", IMAGE], ["ЧАСЫ", IMAGE]],
    },
}


def team_workbook(path: Path) -> None:
    """A cover sheet, a campaign sheet below a title and group headers, and a draft sheet."""
    book = xlsxwriter.Workbook(str(path), {"strings_to_urls": False})
    bold = book.add_format({"bold": True})
    title = book.add_format({"bold": True, "font_size": 14})
    readme = book.add_worksheet("Read me")
    readme.write_column(
        0,
        0,
        [
            "How to fill in the Ads sheet",
            "One row per video. Status, Request ID, Video URL, ERROR and Owner are the team's.",
            "Questions: ana@example.com",
        ],
    )
    ads = book.add_worksheet("Ads")
    ads.merge_range(0, 0, 0, 8, "Summer campaign 2026 — video ads", title)
    ads.merge_range(2, 0, 2, 3, "Model inputs", bold)
    ads.merge_range(2, 4, 2, 8, "Team", bold)
    ads.write_row(
        3,
        0,
        [
            "Prompt",
            "Image URL",
            "Aspect ratio",
            "Duration (s)",
            "Status",
            "Request ID",
            "Video URL",
            "ERROR",
            "Owner",
        ],
        bold,
    )
    for i, (prompt, ratio, status) in enumerate(
        [
            ("Sneaker on a running track, morning light", "9:16", "approved"),
            ("Coffee cup by the window, slow push-in", "1:1", "draft"),
            ("Watch on a wrist, turning, black background", "16:9", "on hold"),
        ]
    ):
        ads.write_row(
            4 + i,
            0,
            [
                prompt,
                IMAGE,
                ratio,
                8,
                status,
                f"REQ-{12 + i}",
                f"https://drive.example.com/reference-{i + 1}.mp4",
                "brief has a typo" if i == 1 else "",
                ["ana", "ben", "ana"][i],
            ],
        )
    ads.set_column(0, 0, 44)
    draft = book.add_worksheet("Draft")
    draft.write_row(0, 0, ["prompt", "first_frame_image_url", "Resolutoin", "Duration (min)"], bold)
    for i, prompt in enumerate(["Sunglasses on sand", "Headphones on a desk"]):
        draft.write_row(1 + i, 0, [prompt, IMAGE, "720p", 1])
    book.close()


def csv_source(path: Path, spec: dict[str, Any]) -> None:
    """The CSV's content as a one-sheet workbook, for LibreOffice to save as text."""
    book = xlsxwriter.Workbook(str(path), {"strings_to_urls": False})
    sheet = book.add_worksheet("Sheet1")
    sheet.write_row(0, 0, spec["header"])
    for i, row in enumerate(spec["rows"]):
        sheet.write_row(i + 1, 0, row)
    book.close()


def soffice(profile: Path, args: list[str], outdir: Path) -> None:
    """One LibreOffice conversion, with a profile of its own (no clash with a running one)."""
    subprocess.run(
        [
            "soffice",
            f"-env:UserInstallation={profile.as_uri()}",
            "--headless",
            "--norestore",
            *args,
            "--outdir",
            str(outdir),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )


PROFILE_USER = """<?xml version="1.0" encoding="UTF-8"?>
<oor:items xmlns:oor="http://openoffice.org/2001/registry">
<item oor:path="/org.openoffice.UserProfile/Data"><prop oor:name="givenname" oor:op="fuse">\
<value>Ana</value></prop></item>
<item oor:path="/org.openoffice.UserProfile/Data"><prop oor:name="sn" oor:op="fuse">\
<value>Lima</value></prop></item>
</oor:items>
"""


def libreoffice_lock(work: Path, sheet: Path, out: Path) -> None:
    """The lock file LibreOffice leaves beside a sheet it has open, saved as `libreoffice.lock`.

    A headless soffice told to open a document (no conversion) writes the lock, then aborts
    without removing it, as a crashed office program would; the profile names its user.
    """
    profile = work / "lock-profile"
    (profile / "user").mkdir(parents=True)
    (profile / "user" / "registrymodifications.xcu").write_text(PROFILE_USER)
    folder = work / "open"
    folder.mkdir()
    shutil.copyfile(sheet, folder / sheet.name)
    subprocess.run(
        [
            "soffice",
            f"-env:UserInstallation={profile.as_uri()}",
            "--headless",
            "--norestore",
            str(folder / sheet.name),
        ],
        capture_output=True,
        timeout=120,
    )
    shutil.copyfile(folder / f".~lock.{sheet.name}#", out / "libreoffice.lock")


def main() -> None:
    """Write every file into tests/files."""
    if shutil.which("soffice") is None:
        sys.exit("soffice (LibreOffice) is not on PATH; the committed files are the reference")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        profile, src, out = work / "profile", work / "src", work / "out"
        src.mkdir()
        out.mkdir()
        team_workbook(src / "team_ads.xlsx")
        soffice(profile, ["--convert-to", "xlsx", str(src / "team_ads.xlsx")], out)
        libreoffice_lock(work, out / "team_ads.xlsx", out)
        for name, spec in CSVS.items():
            source = src / f"{Path(name).stem}.xlsx"
            csv_source(source, spec)
            sep = spec["sep"] if spec["sep"].isdigit() else str(ord(spec["sep"]))
            options = CSV_FILTER.format(sep=sep, charset=spec["charset"])
            soffice(profile, ["--convert-to", options, str(source)], out)
        for made in sorted(out.iterdir()):
            shutil.copyfile(made, HERE / made.name)
            print(f"{made.name}: {made.stat().st_size} bytes")


if __name__ == "__main__":
    main()
