"""A provider's request limit: the simulator's token bucket, and runs that learn the limit."""

from __future__ import annotations

import json
import signal
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from batchgen.client.answers import retry_after
from batchgen.simulator import Simulator, SimulatorConfig, SimulatorServer
from tests.helpers import ad_rows, fast_config, read_csv, run_cli, start_cli, write_csv

PAYLOAD = {"prompt": "a red fox in the snow", "first_frame_image_url": "https://example.com/a.png"}
SUBMIT = "/v1/models/bytedance/seedance-v1.5-pro/image-to-video"
AUTH = {"Authorization": "Bearer t"}


@contextmanager
def served(**options: Any) -> Iterator[SimulatorServer]:
    """A simulator with these settings on a free loopback port."""
    options.setdefault("seed", 3)
    with SimulatorServer(Simulator(SimulatorConfig(**options))) as server:
        yield server


def test_the_bucket_answers_429_with_retry_after_beyond_its_rate() -> None:
    with served(rate_limit=5, rate_burst=3) as server, httpx.Client(base_url=server.base_url) as c:
        answers = [c.get("/v1/requests/nope/status", headers=AUTH) for _ in range(6)]
        # three tokens at once (a burst), then refusals until the bucket refills at 5 a second
        assert [a.status_code for a in answers[:3]] == [404, 404, 404]
        refused = [a for a in answers[3:] if a.status_code == 429]
        assert refused, [a.status_code for a in answers]
        for answer in refused:
            # HTTP's delay-seconds: a whole number, the wait (at most 1/R) rounded up
            assert answer.headers["retry-after"] == "1"
            assert answer.json()["error_code"] == 429
        # a refused submit creates no job, and every call kind counts against the same bucket
        assert c.post(SUBMIT, json=PAYLOAD, headers=AUTH).status_code == 429
        assert server.simulator.submissions() == []
        stats = c.get("/_sim/stats").json()
        assert stats["rate_limited"] == stats["answered_429"] == len(refused) + 1


@pytest.mark.parametrize("form", ["fractional", "date", "none"])
def test_the_limits_retry_after_comes_in_each_form_asked_for(form: str) -> None:
    options = {"rate_limit": 5, "rate_burst": 1, "retry_after_format": form}
    with served(**options) as server, httpx.Client(base_url=server.base_url) as c:
        answers = [c.get("/v1/requests/nope/status", headers=AUTH) for _ in range(3)]
        refused = [a for a in answers if a.status_code == 429]
        assert refused, [a.status_code for a in answers]
        for answer in refused:
            value = answer.headers.get("retry-after")
            if form == "none":
                assert value is None
                continue
            assert value is not None
            wait = retry_after(value)
            assert wait is not None
            if form == "fractional":  # the time until the next token, to the millisecond
                assert 0 < wait <= 1 / 5 + 1e-3 and len(value.split(".")[1]) == 3
            else:  # an HTTP-date names a whole second, the first at which a call may pass
                assert value.endswith(" GMT")
                assert 0 <= wait <= 2.0


def test_a_bad_retry_after_format_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="retry_after_format must be one of"):
        Simulator(SimulatorConfig(retry_after_format="minutes"))
    done = run_cli(["simulate", "--port", "0", "--retry-after-format", "minutes"], None)
    assert done.returncode == 2 and "--retry-after-format" in done.stderr


def test_the_limit_can_be_raised_mid_run_over_http() -> None:
    with served(rate_limit=1, rate_burst=1) as server, httpx.Client(base_url=server.base_url) as c:
        codes = [c.get("/v1/requests/x/status", headers=AUTH).status_code for _ in range(5)]
        assert codes.count(429) >= 3
        answer = c.post("/_sim/limit", json={"rate_limit": 10_000, "rate_burst": 10_000})
        assert answer.status_code == 200
        assert server.simulator.config.rate_limit == 10_000
        # the bucket keeps its (empty) tokens and refills at the new rate: soon all pass
        later = [c.get("/v1/requests/x/status", headers=AUTH).status_code for _ in range(40)]
        assert later[-20:] == [404] * 20
        assert c.post("/_sim/limit", json={"rate_limit": -1}).status_code == 422
        assert c.post("/_sim/limit", json={"rate_limit": None}).status_code == 200
        assert server.simulator.config.rate_limit is None


def _durations(**options: Any) -> list[float]:
    """Durations of 400 jobs submitted to a simulator with these settings."""
    with served(capacity=1000, **options) as server, httpx.Client(base_url=server.base_url) as c:
        for _ in range(400):
            assert c.post(SUBMIT, json=PAYLOAD, headers=AUTH).status_code == 200
        return [
            c.get(f"/_sim/jobs/{s.request_id}").json()["duration"]
            for s in server.simulator.submissions()
        ]


def test_duration_distributions_have_their_shapes() -> None:
    uniform = _durations(min_duration=2.0, max_duration=4.0)
    assert min(uniform) >= 2.0 and max(uniform) <= 4.0
    assert statistics.median(uniform) == pytest.approx(3.0, abs=0.25)
    lognormal = _durations(durations="lognormal", median_duration=1.0, duration_sigma=1.0)
    assert statistics.median(lognormal) == pytest.approx(1.0, rel=0.2)
    # a long right tail: the mean well above the median, some jobs ten times the median
    assert statistics.mean(lognormal) > 1.3 * statistics.median(lognormal)
    assert max(lognormal) > 6.0 and min(lognormal) < 0.3
    mixture = _durations(
        durations="mixture", min_duration=1.0, max_duration=2.0, long_share=0.2, long_factor=10
    )
    long = [d for d in mixture if d >= 10.0]
    assert all(1.0 <= d <= 2.0 or 10.0 <= d <= 20.0 for d in mixture)
    assert 0.12 < len(long) / len(mixture) < 0.28


def test_bad_durations_are_refused_with_the_setting_named() -> None:
    with pytest.raises(ValueError, match="min_duration"):
        Simulator(SimulatorConfig(min_duration=3.0, max_duration=1.0))
    with pytest.raises(ValueError, match="durations must be one of"):
        Simulator(SimulatorConfig(durations="pareto"))


@pytest.mark.parametrize(
    ("flag", "status"),
    [("--fault-500", 500), ("--fault-429", 429), ("--fault-error-200", 200)],
)
def test_each_fault_kind_has_its_own_flag(flag: str, status: int) -> None:
    proc = start_cli(["simulate", "--port", "0", flag, "1"], None)
    assert proc.stdout is not None
    url = proc.stdout.readline().rsplit(" ", 1)[-1].strip()
    assert url.startswith("http://127.0.0.1:")
    with httpx.Client(base_url=url, headers=AUTH) as c:
        answer = c.post(SUBMIT, json=PAYLOAD)
        assert answer.status_code == status
        assert answer.json()["error_code"] != 0
        if status == 429:
            assert float(answer.headers["retry-after"]) == pytest.approx(0.05)
        assert c.get("/_sim/submissions").json() == []  # no kind of these creates a job


def test_drops_and_truncations_by_their_own_flags() -> None:
    proc = start_cli(["simulate", "--port", "0", "--fault-truncated-json", "1"], None)
    assert proc.stdout is not None
    url = proc.stdout.readline().rsplit(" ", 1)[-1].strip()
    with httpx.Client(base_url=url, headers=AUTH) as c:
        answer = c.post(SUBMIT, json=PAYLOAD)
        with pytest.raises(json.JSONDecodeError):
            answer.json()
        assert len(c.get("/_sim/submissions").json()) == 1  # the job was made all the same
    proc = start_cli(["simulate", "--port", "0", "--fault-drop-before", "1"], None)
    assert proc.stdout is not None
    url = proc.stdout.readline().rsplit(" ", 1)[-1].strip()
    with httpx.Client(base_url=url, headers=AUTH) as c:
        with pytest.raises(httpx.TransportError):
            c.post(SUBMIT, json=PAYLOAD)
        assert c.get("/_sim/submissions").json() == []


def test_simulate_refuses_fault_rates_adding_up_past_one() -> None:
    done = run_cli(["simulate", "--port", "0", "--fault-500", "0.7", "--fault-429", "0.7"], None)
    assert done.returncode == 2
    assert "add up to more than 1" in done.stderr
    assert "Traceback" not in done.stderr


# whole seconds (HTTP's delay-seconds), an HTTP-date, or nothing: an API may omit Retry-After
@pytest.mark.parametrize("form", ["seconds", "date", "none"])
def test_a_run_without_rate_learns_the_limit_and_few_calls_are_refused(
    tmp_path: Path, form: str
) -> None:
    sheet = write_csv(tmp_path / "ads.csv", ad_rows(60))
    config = fast_config(capacity=20, rate_limit=25.0, rate_burst=25.0, retry_after_format=form)
    with SimulatorServer(Simulator(config)) as server:
        done = run_cli(["run", sheet, "--concurrency", "40"], server)
        assert done.returncode == 0, done.stderr
        stats = server.simulator.stats()
    assert {row["status"] for row in read_csv(sheet)} == {"completed"}
    assert len(server.simulator.submissions()) == 60  # a refused submit is never paid twice
    calls = sum(stats[kind] for kind in ("submit", "status", "result", "cancel"))
    assert stats["rate_limited"] > 0  # the limit was met, and learned
    # generous: without learning, most calls past the first second are refused
    assert stats["answered_429"] / calls < 0.2, stats


@pytest.mark.parametrize("form", ["seconds", "none"])
def test_a_limit_raised_mid_run_is_used(tmp_path: Path, form: str) -> None:
    sheet = write_csv(tmp_path / "ads.csv", ad_rows(300))
    db = tmp_path / "ledger.db"
    config = fast_config(capacity=300, rate_limit=10.0, rate_burst=2.0, retry_after_format=form)
    with SimulatorServer(Simulator(config)) as server:
        sim = server.simulator
        proc = start_cli(["run", sheet, "--db", db, "--concurrency", "300"], server)
        _wait(lambda: sim.stats()["rate_limited"] > 0 and _calls(sim) > 60, proc)
        sim.set_limit(25.0, 2.0)  # the account's limit is raised
        before = sim.stats()["rate_limited"]
        # refused again only once it sends faster than 25 a second: it probed past the old 10
        _wait(lambda: sim.stats()["rate_limited"] > before, proc)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 130
    assert len(sim.submissions()) == sum(1 for row in read_csv(sheet) if row["request_id"])


def _calls(sim: Simulator) -> int:
    stats = sim.stats()
    return sum(stats[kind] for kind in ("submit", "status", "result", "cancel"))


def _wait(condition: Any, proc: Any, timeout: float = 60.0) -> None:
    """Poll the simulator (bounded) until the condition holds, the run still going."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, "the run ended before the condition held"
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def test_a_limit_on_queued_jobs_is_not_taken_for_a_request_rate(tmp_path: Path) -> None:
    # the provider answers 429 to submits alone while its queue is full; checks pass
    sheet = write_csv(tmp_path / "ads.csv", ad_rows(24))
    config = fast_config(capacity=2, queue_limit=4)
    with SimulatorServer(Simulator(config)) as server:
        done = run_cli(["run", sheet, "--concurrency", "12"], server)
        assert done.returncode == 0, done.stderr
        stats = server.simulator.stats()
    assert {row["status"] for row in read_csv(sheet)} == {"completed"}
    assert len(server.simulator.submissions()) == 24  # a refused submit is never paid twice
    assert stats["answered_429"] > 0 and stats["rate_limited"] == 0
