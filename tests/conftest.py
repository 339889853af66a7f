"""Fixtures: a real simulator over HTTP, PostgreSQL, and the reaper.

The helpers they use are in tests/helpers.py (imported as `tests.helpers`, the one copy).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from batchgen.simulator import Simulator, SimulatorServer
from tests import helpers
from tests.helpers import fast_config, fresh_pg_database


@pytest.fixture
def sim() -> Iterator[SimulatorServer]:
    """A simulator with fast jobs on a free loopback port."""
    with SimulatorServer(Simulator(fast_config())) as server:
        yield server


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty database on the PostgreSQL server of BATCHGEN_TEST_PG_URL (whose user
    may create databases; CI starts one, see .ci/run), dropped afterwards; skips without it."""
    with fresh_pg_database() as url:
        yield url


@pytest.fixture(autouse=True)
def _reap_background_runs() -> Iterator[None]:
    """A test that fails midway must not leave a `batchgen run` behind it."""
    yield
    while helpers.STARTED:
        proc = helpers.STARTED.pop()
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)
