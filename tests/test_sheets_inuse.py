"""A sheet open in LibreOffice or Excel is never written under the person who has it open."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchgen.simulator import SimulatorServer
from tests.helpers import ad_rows, read_csv, run_cli, write_csv, write_xlsx


def excel_owner_file(user: str) -> bytes:
    """Excel's ~$ owner file: a length byte, the name padded to 54 bytes, then UTF-16."""
    ansi = user.encode("cp1252")
    head = bytes([len(ansi)]) + ansi.ljust(53, b" ")
    return head + len(user).to_bytes(2, "little") + user.encode("utf-16-le") + b"\x00" * 50


@pytest.mark.parametrize(
    ("kind", "lock_name", "content", "said"),
    [
        (
            "xlsx",
            ".~lock.ads.xlsx#",
            b"Jane Doe,jane,laptop-7,06.12.2026 01:50,file:///home/jane/.config/libreoffice/4;",
            "open in LibreOffice by Jane Doe (jane on laptop-7, since 06.12.2026 01:50)",
        ),
        ("csv", ".~lock.ads.csv#", b",jane,laptop-7,06.12.2026 01:50,file:///x;", "by jane"),
        ("xlsx", "~$ads.xlsx", excel_owner_file("Ana Lima"), "open in Excel by Ana Lima"),
    ],
)
def test_a_run_stops_with_75_before_paying_when_the_sheet_is_open(
    tmp_path: Path, sim: SimulatorServer, kind: str, lock_name: str, content: bytes, said: str
) -> None:
    path = tmp_path / f"ads.{kind}"
    (write_xlsx if kind == "xlsx" else write_csv)(path, ad_rows(3))
    before = path.read_bytes()
    lock = tmp_path / lock_name
    lock.write_bytes(content)

    checked = run_cli(["check", path], sim)
    refused = run_cli(["run", path], sim)

    assert checked.returncode == 0 and said in checked.stdout
    assert refused.returncode == 75, refused.stderr
    line = refused.stderr.strip().splitlines()[-1]
    assert said in line and lock_name in line and "--output" in line and "close it" in line
    assert sim.simulator.submissions() == []
    assert path.read_bytes() == before

    elsewhere = tmp_path / f"results.{kind}"
    written = run_cli(["run", path, "--output", elsewhere], sim)

    assert written.returncode == 0, written.stderr
    assert path.read_bytes() == before and elsewhere.is_file()
    lock.unlink()
    assert run_cli(["run", path], sim).returncode == 0
    if kind == "csv":
        assert {r["status"] for r in read_csv(path)} == {"completed"}


def test_excel_owner_file_of_a_long_name_drops_its_first_two_characters(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    path = write_xlsx(tmp_path / "nightly_ads.xlsx", ad_rows(2))
    (tmp_path / "~$ghtly_ads.xlsx").write_bytes(excel_owner_file("Ana"))

    refused = run_cli(["run", path], sim)

    assert refused.returncode == 75 and "open in Excel by Ana" in refused.stderr
    assert sim.simulator.submissions() == []
