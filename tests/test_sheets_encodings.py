"""CSVs in the encodings office programs save: what the author typed reaches the API."""

from __future__ import annotations

import codecs
from pathlib import Path

import pytest

from batchgen._encoding import EncodingUnsure, decode
from batchgen.simulator import SimulatorServer
from tests.helpers import IMAGE, run_cli

PROMPTS = {
    "cp1251": [
        "Кроссовки на беговой дорожке, крупный план, утренний свет",
        "Девушка пьёт кофе у окна, мягкий свет, медленная камера",
        "Часы на запястье, вращение, чёрный фон",
    ],
    "shift_jis": [
        "夕暮れの海辺を走るスニーカー、ゆっくりとしたカメラ",
        "朝の光の中で新しいコーヒーを飲む女性",
        "黒い背景で回転する腕時計のクローズアップ",
    ],
    "cp1252": [
        "Un café crème sur une table en bois, lumière douce",
        "Des chaussures à la plage, caméra lente — été",
        "Schöne Grüße: eine Uhr am Handgelenk",
    ],
    "utf-8": ["Café ☕ and a sneaker 👟", "Кофе и кроссовки", "コーヒーとスニーカー"],
    "utf-8-sig": ["Café ☕ and a sneaker 👟", "Кофе и кроссовки", "コーヒーとスニーカー"],
    "utf-16": ["Café ☕ and a sneaker 👟", "Кофе и кроссовки", "コーヒーとスニーカー"],
}


def sheet_text(prompts: list[str], sep: str = ",") -> str:
    lines = [sep.join(["prompt", "first_frame_image_url", "Notes"])]
    lines += [sep.join([f'"{p}"', IMAGE, "keep"]) for p in prompts]
    return "\r\n".join(lines) + "\r\n"


@pytest.mark.parametrize("encoding", sorted(PROMPTS))
def test_each_encoding_reaches_the_api_as_typed_and_is_written_back_in_it(
    tmp_path: Path, sim: SimulatorServer, encoding: str
) -> None:
    prompts = PROMPTS[encoding]
    sep = "\t" if encoding == "utf-16" else ","  # Excel's "Unicode text" is tab-separated
    original = sheet_text(prompts, sep).encode(encoding)
    sheet = tmp_path / "ads.csv"
    sheet.write_bytes(original)

    checked = run_cli(["check", sheet], sim)
    result = run_cli(["run", sheet], sim)

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert result.returncode == 0, result.stderr
    assert sorted(s.payload["prompt"] for s in sim.simulator.submissions()) == sorted(prompts)
    data = sheet.read_bytes()
    bom = {"utf-8-sig": codecs.BOM_UTF8, "utf-16": original[:2]}.get(encoding, b"")
    assert data.startswith(bom) and data[len(bom) : len(bom) + 1] != b"\xef"
    text = data.decode(encoding)
    first_line, *rest = text.split("\r\n")
    assert first_line == sep.join(
        ["prompt", "first_frame_image_url", "Notes", "request_id", "status", "video_url", "error"]
    )
    for prompt, line in zip(prompts, rest, strict=False):
        assert line.startswith(sep.join([f'"{prompt}"', IMAGE, "keep"]))
        assert f"{sep}completed{sep}" in line


def test_a_sheet_whose_encoding_cannot_be_told_is_refused_until_named(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    sheet = tmp_path / "ads.csv"
    sheet.write_bytes(sheet_text(["КРОССОВКИ", "ЧАСЫ"]).encode("cp1251"))

    checked = run_cli(["check", sheet], sim)
    refused = run_cli(["run", sheet], sim)

    assert checked.returncode == 2 and refused.returncode == 2
    assert "cannot tell its text encoding" in refused.stderr
    assert 'cp1251 reads "' in refused.stderr and "--encoding" in refused.stderr
    assert sim.simulator.submissions() == []

    job = tmp_path / "job.toml"
    job.write_text('sheet = "ads.csv"\nencoding = "cp1251"\n')
    result = run_cli(["run", job], sim)

    assert result.returncode == 0, result.stderr
    assert sorted(s.payload["prompt"] for s in sim.simulator.submissions()) == ["КРОССОВКИ", "ЧАСЫ"]
    assert "completed" in sheet.read_bytes().decode("cp1251")


def test_a_named_encoding_that_does_not_fit_the_bytes_is_refused(tmp_path: Path) -> None:
    sheet = tmp_path / "ads.csv"
    sheet.write_bytes(sheet_text(PROMPTS["shift_jis"]).encode("shift_jis"))
    job = tmp_path / "job.toml"
    job.write_text('sheet = "ads.csv"\nencoding = "utf-8"\n')

    refused = run_cli(["check", job], None)
    job.write_text('sheet = "ads.csv"\nencoding = "klingon"\n')
    unknown = run_cli(["check", job], None)

    assert refused.returncode == 2 and "is not valid UTF-8 text" in refused.stderr
    assert unknown.returncode == 2 and "unknown encoding 'klingon'" in unknown.stderr


@pytest.mark.parametrize("encoding", ["cp1251", "shift_jis", "cp1252"])
def test_detection_reads_a_real_sheet_exactly_or_says_it_cannot(encoding: str) -> None:
    text = sheet_text(PROMPTS[encoding])
    decoded = decode(text.encode(encoding))
    assert decoded.text == text and decoded.how == "detected"
    short = sheet_text(["ЧАСЫ"]).encode("cp1251")
    with pytest.raises(EncodingUnsure):
        decode(short)
