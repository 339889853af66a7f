"""The house rules: rooms the runtime never enters, lean start-up, no process left behind."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from batchgen.simulator import SimulatorServer
from tests.helpers import ad_rows, cli_env, run_cli, wait_until, write_csv

PACKAGE = Path(__file__).resolve().parent.parent / "batchgen"
# the simulator and the benchmark, and the commands that start them (lazily)
ROOMS = ("batchgen.simulator", "batchgen.bench")
OUTSIDE_RUNTIME = ("simulator", "bench", "cli_tools.py")


def _imported_names(tree: ast.AST) -> set[str]:
    """Every module an import statement anywhere in the tree names (functions included)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_runtime_modules_never_import_the_simulator_or_the_benchmark() -> None:
    runtime = [
        path
        for path in PACKAGE.rglob("*.py")
        if path.relative_to(PACKAGE).parts[0] not in OUTSIDE_RUNTIME
    ]
    assert PACKAGE / "runner.py" in runtime and PACKAGE / "pool" / "_submitting.py" in runtime
    offenders = {
        str(path.relative_to(PACKAGE)): sorted(
            name
            for name in _imported_names(ast.parse(path.read_text(encoding="utf-8")))
            if name.startswith(ROOMS)
        )
        for path in runtime
    }
    assert {path: names for path, names in offenders.items() if names} == {}


def test_importing_the_cli_and_the_runner_loads_neither_room() -> None:
    code = (
        "import sys, batchgen.cli, batchgen.runner; "
        "print(sorted(m for m in sys.modules if m.startswith(('batchgen.simulator', "
        "'batchgen.bench'))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"


def test_every_subpackage_is_listed_for_the_wheel() -> None:
    # a package missing from [tool.setuptools] packages works installed editable and is
    # silently left out of a wheel
    config = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text(encoding="utf-8"))
    listed = set(config["tool"]["setuptools"]["packages"])
    found = {
        ".".join(("batchgen", *init.parent.relative_to(PACKAGE).parts))
        for init in PACKAGE.rglob("__init__.py")
    }
    assert "batchgen.pool" in found
    assert found - listed == set()


def _imports_of(args: list[str], cwd: Path) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run `python -X importtime -m batchgen ARGS`; the modules it imported, by name."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "batchgen", *args],
        env=cli_env(None),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    modules = {
        line.rsplit("|", 1)[1].strip()
        for line in done.stderr.splitlines()
        if line.startswith("import time:") and line.count("|") == 2
    }
    return done, modules


@pytest.mark.parametrize(
    "command", [["--help"], ["status", "ads.csv"], ["check", "ads.csv"], ["report", "ads.csv"]]
)
def test_commands_that_send_nothing_import_neither_the_pool_nor_httpx(
    tmp_path: Path, command: list[str]
) -> None:
    write_csv(tmp_path / "ads.csv", ad_rows(2))
    done, modules = _imports_of(command, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "batchgen.cli" in modules  # the importtime output was read
    unwanted = {"httpx", "batchgen.pool", "batchgen.client", "batchgen.runner", *ROOMS}
    assert modules & unwanted == set()


def test_status_of_a_finished_run_reads_its_ledger_without_the_pool_httpx_or_sqlalchemy(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    sheet = write_csv(tmp_path / "ads.csv", ad_rows(2))
    assert run_cli(["run", sheet], sim).returncode == 0

    done, modules = _imports_of(["status", "ads.csv"], tmp_path)

    assert done.returncode == 0, done.stderr[-2000:]
    assert "2/2 done: 2 completed" in done.stdout
    # a ledger at the newest schema is read with plain sqlite3: no SQLAlchemy, no Alembic
    unwanted = {"httpx", "batchgen.pool", "batchgen.client", "batchgen.runner", *ROOMS}
    assert modules & (unwanted | {"sqlalchemy", "alembic"}) == set()


FAILING_TEST = """
from tests.helpers import start_cli


def test_fails_with_a_simulator_running_in_the_background(tmp_path_factory):
    proc = start_cli(["simulate", "--port", "0"], None)
    line = proc.stdout.readline()  # the simulator says where it listens once it does
    assert "batchgen simulator" in line
    with open({pid_file!r}, "w") as handle:
        handle.write(str(proc.pid))
    assert False, "this test fails on purpose"
"""


def _alive(pid: int) -> bool:
    """Whether a process runs (a zombie awaiting its parent counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads process states from /proc")
def test_a_failing_tests_background_cli_is_reaped(tmp_path: Path) -> None:
    pid_file = tmp_path / "simulator.pid"
    inner = tmp_path / "test_inner.py"
    inner.write_text(FAILING_TEST.format(pid_file=str(pid_file)), encoding="utf-8")
    root = PACKAGE.parent
    # the inner run takes the fixtures (the reaper among them) from tests/conftest.py
    plugins = ["-p", "tests.conftest", "-p", "no:cacheprovider", "-o", "addopts="]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", *plugins, "--rootdir", str(tmp_path), str(inner)],
        cwd=root,
        env=os.environ | {"PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    assert "1 failed" in done.stdout
    pid = int(pid_file.read_text())  # the simulator had started and answered
    wait_until(lambda: not _alive(pid), timeout=10)
