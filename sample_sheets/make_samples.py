"""Regenerate the sample sheets: python sample_sheets/make_samples.py"""

from __future__ import annotations

import csv
from pathlib import Path

from openpyxl import Workbook
from openpyxl.styles import Font, PatternFill

HERE = Path(__file__).resolve().parent
IMAGE = "https://playgrounds-storage-public.runcomfy.net/tools/7272/media-files/input-1-1.png"
PRODUCTS = [
    (
        "Trail runner shoe",
        "A trail running shoe splashes through a shallow stream at sunrise, slow motion",
    ),
    (
        "Espresso machine",
        "Steam rises from a fresh espresso as the machine's chrome catches warm kitchen light",
    ),
    ("Smart watch", "A smart watch face lights up on a wrist during a night-time city jog"),
    ("Sunscreen", "A sunscreen bottle rests on hot sand while gentle waves roll in behind it"),
    (
        "Headphones",
        "Over-ear headphones rotate slowly on a pedestal, soft studio lighting, dust in the air",
    ),
    (
        "Backpack",
        "A hiking backpack is zipped open, revealing neatly packed gear on a mountain ledge",
    ),
    (
        "Lipstick",
        "A lipstick twists up from its golden case, petals drifting past in the background",
    ),
    ("Coffee beans", "Roasted coffee beans pour into a glass jar in warm morning light"),
    ("Yoga mat", "A yoga mat unrolls across a wooden floor as sunlight sweeps across the room"),
    ("Water bottle", "Condensation drips down a steel water bottle on a desert trail"),
    ("Desk lamp", "A minimalist desk lamp switches on and lights a sketchbook at dusk"),
    ("Sneakers", "Bright sneakers step onto a rain-soaked street with neon reflections"),
]


def demo_sheet() -> None:
    """The demo: 12 ad variants, a notes sheet, styling that must survive."""
    wb = Workbook()
    ws = wb.active
    ws.title = "Ads"
    ws.append(
        [
            "variant",
            "prompt",
            "first_frame_image_url",
            "ratio",
            "resolution",
            "duration",
            "generate_audio",
            "model",
            "owner",
        ]
    )
    for cell in ws[1]:
        cell.font = Font(bold=True)
        cell.fill = PatternFill("solid", fgColor="FFE699")
    ratios = ["9:16", "1:1", "16:9", "9:16|1:1", "4:3", "adaptive"]
    # the first six ads are compared: Seedance and Kling 3.0 side by side in the report
    compared = "seedance-1.5-pro-i2v|kling-3.0-pro-i2v"
    for i, (name, prompt) in enumerate(PRODUCTS):
        ws.append(
            [
                name,
                prompt,
                IMAGE,
                ratios[i % len(ratios)],
                "720p" if i % 3 == 0 else "480p",
                5,
                i % 2 == 0,
                compared if i < 6 else "",
                "ana@example.com",
            ]
        )
    ws.column_dimensions["B"].width = 70
    notes = wb.create_sheet("Notes")
    notes["A1"] = "Campaign: spring launch. Owner column is ours; batchgen never touches it."
    wb.save(HERE / "demo_ads.xlsx")


def csv_sheet() -> None:
    """A plain CSV of the same ads, as a spreadsheet program exports it."""
    with (HERE / "ads.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["prompt", "first_frame_image_url", "ratio", "duration", "takes", "notes"])
        for i, (name, prompt) in enumerate(PRODUCTS[:6]):
            writer.writerow([prompt, IMAGE, "9:16", 5, 2 if i == 0 else "", f"{name} — keep"])


def team_sheet() -> None:
    """A team's own headers, mapped by jobs/nightly.toml."""
    wb = Workbook()
    ws = wb.active
    ws.title = "Briefs"
    ws.append(["Creative brief", "Hero image", "Format", "Status note"])
    for cell in ws[1]:
        cell.font = Font(bold=True)
    for i, (name, prompt) in enumerate(PRODUCTS[:8]):
        ws.append([prompt, IMAGE, ["9:16", "1:1", ""][i % 3], f"{name}: approved"])
    wb.save(HERE / "team.xlsx")


if __name__ == "__main__":
    demo_sheet()
    csv_sheet()
    team_sheet()
