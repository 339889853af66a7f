"""The simulator over real HTTP: the Model API contract, its time model and its injected faults."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import datetime
from typing import Any

import httpx
import pytest

from batchgen.models import DEFAULT_MODEL_ID, get_model
from batchgen.simulator import Faults, Simulator, SimulatorConfig, SimulatorServer

TOKEN = "test-token"
MODEL = DEFAULT_MODEL_ID
PAYLOAD = {"prompt": "a red fox in the snow", "first_frame_image_url": "https://example.com/a.png"}
LONG = 60.0  # a job duration no test waits for

StartServer = Callable[..., SimulatorServer]


@pytest.fixture
def start() -> Iterator[StartServer]:
    """Start simulator servers for one test; all are stopped at its end."""
    with ExitStack() as stack:

        def _start(**options: Any) -> SimulatorServer:
            options.setdefault("seed", 1)
            server = SimulatorServer(Simulator(SimulatorConfig(**options)))
            return stack.enter_context(server)

        yield _start


def client(server: SimulatorServer, *, token: str | None = TOKEN, **options: Any) -> httpx.Client:
    """An httpx client for the server's API, with a Bearer token unless None."""
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    headers.update(options.pop("headers", {}))
    return httpx.Client(base_url=server.base_url, headers=headers, **options)


def submit(
    c: httpx.Client, payload: Any = None, *, model: str = MODEL, **options: Any
) -> httpx.Response:
    """POST a job (the default payload unless one is given)."""
    return c.post(f"/v1/models/{model}", json=PAYLOAD if payload is None else payload, **options)


def submit_ok(c: httpx.Client, payload: Any = None) -> str:
    """Submit a job that must be accepted; return its request_id."""
    response = submit(c, payload)
    assert response.status_code == 200, response.text
    return response.json()["request_id"]


def wait_for(c: httpx.Client, request_id: str, *final: str, timeout: float = 5.0) -> dict[str, Any]:
    """Poll the status until it is one of `final` (bounded by a deadline)."""
    final = final or ("completed", "failed", "cancelled")
    deadline = time.monotonic() + timeout
    while True:
        body = c.get(f"/v1/requests/{request_id}/status").json()
        if body["status"] in final:
            return body
        assert time.monotonic() < deadline, f"still {body} after {timeout} s"
        time.sleep(0.01)  # polling interval, not synchronisation: the deadline bounds the loop


# --- the contract ---------------------------------------------------------------------------


def test_lifecycle_from_submit_to_a_playable_mp4(start: StartServer) -> None:
    server = start(min_duration=0.05, max_duration=0.1)
    with client(server) as c:
        answer = submit(c).json()
        request_id = answer["request_id"]
        assert uuid.UUID(request_id).version == 4
        assert answer["status"] == "in_queue"
        base = f"{server.base_url}/v1/requests/{request_id}"
        assert answer["status_url"] == f"{base}/status"
        assert answer["result_url"] == f"{base}/result"
        assert answer["cancel_url"] == f"{base}/cancel"
        assert c.get(answer["status_url"]).json()["status"] in ("in_queue", "in_progress")

        assert wait_for(c, request_id) == {"request_id": request_id, "status": "completed"}
        result = c.get(answer["result_url"]).json()
        assert set(result) == {"request_id", "status", "output", "created_at", "finished_at"}
        created = datetime.fromisoformat(result["created_at"])
        finished = datetime.fromisoformat(result["finished_at"])
        assert created.utcoffset() is not None and created.utcoffset().total_seconds() == 0
        assert 0.04 <= (finished - created).total_seconds() <= 0.2
        port = server.base_url.rsplit(":", 1)[1]
        video_url = result["output"]["video"]
        assert video_url == f"http://localhost:{port}/media/{request_id}.mp4"

    with httpx.Client() as plain:  # no token: the media host must not need one
        video = plain.get(video_url)
        assert video.status_code == 200
        assert video.headers["content-type"] == "video/mp4"
        assert int(video.headers["content-length"]) == len(video.content) < 60_000
        assert video.content[4:8] == b"ftyp"
        assert b"moov" in video.content[:2000]  # faststart: the index comes first
        part = plain.get(video_url, headers={"Range": "bytes=0-7"})
        assert part.status_code == 206 and part.content == video.content[:8]
    assert server.simulator.media_auth_headers == []
    stats = server.simulator.stats()
    assert stats["submit"] == 1 and stats["result"] == 1 and stats["media"] == 2
    assert stats["faults"] == 0


def test_zero_durations_finish_at_once(start: StartServer) -> None:
    server = start(min_duration=0, max_duration=0)
    with client(server) as c:
        request_id = submit_ok(c)
        assert c.get(f"/v1/requests/{request_id}/status").json()["status"] == "completed"
        assert server.simulator.job_status(request_id) == "completed"


def test_queue_positions_with_capacity_one(start: StartServer) -> None:
    server = start(capacity=1, min_duration=LONG, max_duration=LONG)
    with client(server) as c:
        ids = [submit_ok(c) for _ in range(4)]
        answers = [c.get(f"/v1/requests/{i}/status").json() for i in ids]
        assert answers[0] == {"request_id": ids[0], "status": "in_progress"}
        assert [a["queue_position"] for a in answers[1:]] == [0, 1, 2]
        assert all(a["status"] == "in_queue" for a in answers[1:])
        assert c.post(f"/v1/requests/{ids[1]}/cancel").json()["outcome"] == "cancelled"
        positions = [c.get(f"/v1/requests/{i}/status").json().get("queue_position") for i in ids]
        assert positions == [None, None, 0, 1]


def test_capacity_is_respected(start: StartServer) -> None:
    server = start(capacity=3, min_duration=LONG, max_duration=LONG)
    with client(server) as c:
        ids = [submit_ok(c) for _ in range(7)]
        statuses = [c.get(f"/v1/requests/{i}/status").json()["status"] for i in ids]
    assert statuses == ["in_progress"] * 3 + ["in_queue"] * 4


def test_jobs_are_packed_without_gaps(start: StartServer) -> None:
    capacity = 3
    server = start(capacity=capacity, min_duration=0.02, max_duration=0.08)
    with client(server) as c:
        ids = [submit_ok(c) for _ in range(12)]
        for request_id in ids:
            wait_for(c, request_id)
        lines = [c.get(f"/_sim/jobs/{i}").json()["timeline"] for i in ids]
    assert all(server.simulator.job_status(i) == "completed" for i in ids)
    ends = {line["finished"] for line in lines}
    for line in lines:
        # A job starts when it is submitted or at the exact instant another one ends.
        assert line["started"] == line["created"] or line["started"] in ends
        running = sum(1 for o in lines if o["started"] <= line["started"] < o["finished"])
        assert running <= capacity
    starts = [line["started"] for line in lines]
    assert starts == sorted(starts)  # FIFO


def test_missing_or_wrong_token_is_401(start: StartServer) -> None:
    server = start(token="secret")
    calls = [("POST", f"/v1/models/{MODEL}"), ("GET", f"/v1/requests/{uuid.uuid4()}/status")]
    refused = ({}, {"Authorization": "Bearer"}, {"Authorization": "Bearer wrong"})
    for headers in (*refused, {"Authorization": "Basic secret"}):
        with client(server, token=None, headers=headers) as c:
            for method, path in calls:
                response = c.request(method, path, json=PAYLOAD)
                assert response.status_code == 401
                assert response.json()["error_code"] == 401
                assert response.json()["error_message"]
    with client(server, token="secret") as c:
        assert submit(c).status_code == 200
    assert len(server.simulator.submissions()) == 1


def test_unknown_request_id_is_404(start: StartServer) -> None:
    server = start()
    with client(server) as c:
        unknown = str(uuid.uuid4())
        for method, action in (("GET", "status"), ("GET", "result"), ("POST", "cancel")):
            response = c.request(method, f"/v1/requests/{unknown}/{action}")
            assert response.status_code == 404
            assert response.json()["error_code"] == 404001


def test_bad_payloads_are_422_and_create_nothing(start: StartServer) -> None:
    server = start()
    with client(server) as c:
        url = f"/v1/models/{MODEL}"
        for content in (b"{not json", b"[1, 2]", b""):
            response = c.post(url, content=content, headers={"Content-Type": "application/json"})
            assert response.status_code == 422
            assert response.json()["error_code"] == 422001
        for payload, field in (
            ({"first_frame_image_url": "https://example.com/a.png"}, "prompt"),
            ({"prompt": "x", "first_frame_image_url": "  "}, "first_frame_image_url"),
            ({"prompt": 5, "first_frame_image_url": "https://example.com/a.png"}, "prompt"),
        ):
            response = submit(c, payload)
            assert response.status_code == 422
            body = response.json()
            assert body["error_code"] == 422001
            assert [d["loc"] for d in body["detail"]] == [["body", field]]
        response = submit(c, model="acme/unknown-model")
        assert response.status_code == 400 and response.json()["error_code"] == 400001
    assert server.simulator.submissions() == []


def test_cancel_queued_running_and_finished(start: StartServer) -> None:
    server = start(capacity=1, min_duration=0, max_duration=0)
    with client(server) as c:
        done = submit_ok(c)
        server.simulator.config.min_duration = server.simulator.config.max_duration = LONG
        running, queued = submit_ok(c), submit_ok(c)
        for request_id, status, outcome in (
            (done, "completed", "not_cancellable"),
            (running, "in_progress", "not_cancellable"),
            (queued, "cancelled", "cancelled"),
        ):
            answer = c.post(f"/v1/requests/{request_id}/cancel")
            assert answer.status_code == 200
            assert answer.json() == {"request_id": request_id, "status": status, "outcome": outcome}
        assert c.get(f"/v1/requests/{queued}/status").json()["status"] == "cancelled"
        result = c.get(f"/v1/requests/{queued}/result").json()
        assert result["status"] == "cancelled" and "output" not in result
        again = c.post(f"/v1/requests/{queued}/cancel").json()  # a retried cancel
        assert again["outcome"] == "cancelled"


def test_failure_rate_one_fails_every_job_with_a_message(start: StartServer) -> None:
    server = start(failure_rate=1.0, min_duration=0, max_duration=0)
    with client(server) as c:
        for _ in range(3):
            request_id = submit_ok(c)
            result = c.get(f"/v1/requests/{request_id}/result?include_cost=true").json()
            assert result["status"] == "failed"
            assert isinstance(result["error"], str) and len(result["error"]) > 10
            assert "output" not in result and result["cost"] == 0
            assert result["finished_at"]


def test_include_cost_uses_the_model_estimate(start: StartServer) -> None:
    server = start(min_duration=0, max_duration=0)
    payload = {**PAYLOAD, "resolution": "720p", "duration": 10, "generate_audio": False}
    with client(server) as c:
        request_id = submit_ok(c, payload)
        plain = c.get(f"/v1/requests/{request_id}/result").json()
        assert "cost" not in plain
        costed = c.get(f"/v1/requests/{request_id}/result", params={"include_cost": "true"})
        assert costed.json()["cost"] == pytest.approx(get_model(MODEL).estimate_cost(payload))
        assert costed.json()["cost"] == pytest.approx(0.26)
    assert server.simulator.submissions()[0].payload == payload


def test_balance_runs_out_with_402(start: StartServer) -> None:
    server = start(balance=0.25, capacity=1, min_duration=LONG, max_duration=LONG)
    with client(server) as c:
        submit_ok(c)  # 0.12 each with the default inputs
        second = submit_ok(c)
        refused = submit(c)
        assert refused.status_code == 402
        assert refused.json()["error_code"] == 400002
        assert len(server.simulator.submissions()) == 2
        c.post(f"/v1/requests/{second}/cancel")  # a cancelled job is not billed
        submit_ok(c)


def test_queue_limit_answers_429_with_retry_after(start: StartServer) -> None:
    server = start(queue_limit=2, capacity=1, min_duration=LONG, max_duration=LONG)
    with client(server) as c:
        submit_ok(c)
        submit_ok(c)
        refused = submit(c)
        assert refused.status_code == 429
        assert float(refused.headers["Retry-After"]) == pytest.approx(0.05)
        assert refused.json()["error_code"]
    assert len(server.simulator.submissions()) == 2


def test_media_needs_a_completed_job_and_records_authorization(start: StartServer) -> None:
    server = start(capacity=1, min_duration=0, max_duration=0)
    with client(server) as c:
        done = submit_ok(c)
        server.simulator.config.min_duration = server.simulator.config.max_duration = LONG
        running = submit_ok(c)
        assert c.get(f"/media/{uuid.uuid4()}.mp4").status_code == 404
        assert c.get(f"/media/{running}.mp4").status_code == 404
        assert c.get(f"/media/{done}.mp4").status_code == 200
    assert server.simulator.media_auth_headers == [f"Bearer {TOKEN}"] * 3
    assert server.simulator.stats()["media"] == 3


def test_control_endpoints(start: StartServer) -> None:
    server = start(capacity=1, min_duration=LONG, max_duration=LONG)
    with client(server) as c:
        ids = [submit_ok(c) for _ in range(2)]
        c.get(f"/v1/requests/{ids[1]}/status")
    with httpx.Client(base_url=server.base_url) as plain:  # no auth on /_sim
        listed = plain.get("/_sim/submissions").json()
        assert [s["request_id"] for s in listed] == ids
        assert listed[0]["model_id"] == MODEL and listed[0]["payload"] == PAYLOAD
        assert datetime.fromisoformat(listed[0]["created_at"])
        stats = plain.get("/_sim/stats").json()
        assert stats["submit"] == 2 and stats["status"] == 1 and stats["faults"] == 0
        job = plain.get(f"/_sim/jobs/{ids[1]}").json()
        assert job["status"] == "in_queue" and job["queue_position"] == 0
        assert job["payload"] == PAYLOAD and job["timeline"]["started"] is None
        assert plain.get(f"/_sim/jobs/{uuid.uuid4()}").status_code == 404
        info = plain.get(f"/v1/models/{MODEL}", headers={"Authorization": "Bearer x"}).json()
        assert info["model_id"] == MODEL and info["base_price_usd"] == pytest.approx(0.12)


# --- faults ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_server() -> Iterator[SimulatorServer]:
    """One instant-jobs server for the fault tests, which only swap its faults."""
    config = SimulatorConfig(seed=1, min_duration=0, max_duration=0)
    with SimulatorServer(Simulator(config)) as server:
        yield server


@pytest.fixture
def faulty(shared_server: SimulatorServer) -> Iterator[Callable[..., SimulatorServer]]:
    """Set the shared server's faults for one test (and clear them afterwards)."""

    def _set(**faults: float) -> SimulatorServer:
        shared_server.simulator.config.faults = Faults(**faults)
        return shared_server

    _set()
    yield _set
    _set()


def _counts(server: SimulatorServer) -> tuple[int, int]:
    """Jobs created and faults injected so far."""
    return len(server.simulator.submissions()), server.simulator.stats()["faults"]


@pytest.mark.parametrize(
    ("kind", "status", "error_code"),
    [("error_500", 500, 500001), ("rate_limit_429", 429, None), ("error_code_200", 200, 500001)],
)
def test_error_faults_on_submit_create_no_job(
    faulty: Callable[..., SimulatorServer], kind: str, status: int, error_code: int | None
) -> None:
    server = faulty(**{kind: 1.0})
    jobs, faults = _counts(server)
    with client(server) as c:
        response = submit(c)
        assert response.status_code == status
        body = response.json()
        assert "request_id" not in body and body["error_message"]
        if error_code is not None:
            assert body["error_code"] == error_code
        if kind == "rate_limit_429":
            assert float(response.headers["Retry-After"]) == pytest.approx(0.05)
    assert _counts(server) == (jobs, faults + 1)


@pytest.mark.parametrize(("kind", "creates_job"), [("drop_before", False), ("drop_after", True)])
def test_dropped_submits_look_like_dropped_connections(
    faulty: Callable[..., SimulatorServer], kind: str, creates_job: bool
) -> None:
    server = faulty(**{kind: 1.0})
    jobs, faults = _counts(server)
    with client(server) as c:
        with pytest.raises(httpx.RemoteProtocolError):
            submit(c)
        assert _counts(server) == (jobs + creates_job, faults + 1)
        faulty()  # the same client keeps working afterwards
        submit_ok(c)
    assert _counts(server) == (jobs + creates_job + 1, faults + 1)


@pytest.mark.parametrize("kind", ["drop_before", "drop_after", "truncated_json", "error_code_200"])
def test_faults_on_polling_calls(faulty: Callable[..., SimulatorServer], kind: str) -> None:
    server = faulty()
    with client(server) as c:
        request_id = submit_ok(c)
        jobs, faults = _counts(server)
        faulty(**{kind: 1.0})
        for method, action in (("GET", "status"), ("GET", "result"), ("POST", "cancel")):
            url = f"/v1/requests/{request_id}/{action}"
            if kind.startswith("drop"):
                with pytest.raises(httpx.RemoteProtocolError):
                    c.request(method, url)
                continue
            response = c.request(method, url)
            assert response.status_code == 200
            if kind == "truncated_json":
                with pytest.raises(json.JSONDecodeError):
                    response.json()
            else:
                assert response.json()["error_code"] == 500001
    assert _counts(server) == (jobs, faults + 3)


def test_truncated_json_submit_still_creates_the_job(
    faulty: Callable[..., SimulatorServer],
) -> None:
    server = faulty(truncated_json=1.0)
    jobs, _ = _counts(server)
    with client(server) as c:
        response = submit(c)
        assert response.status_code == 200
        assert response.text.startswith('{"request_id":')
        with pytest.raises(json.JSONDecodeError):
            response.json()
    assert _counts(server)[0] == jobs + 1


def test_slow_answers_and_a_timed_out_submit(start: StartServer) -> None:
    server = start(faults=Faults(slow=1.0, slow_seconds=0.3))
    with client(server) as c:
        began = time.monotonic()
        submit_ok(c)
        assert time.monotonic() - began >= 0.3
        # A client that gives up first cannot know that its job exists: it does.
        with pytest.raises(httpx.ReadTimeout):
            submit(c, timeout=0.1)
    assert len(server.simulator.submissions()) == 2


def test_mixed_faults_are_reproducible_with_a_seed(start: StartServer) -> None:
    faults = {"error_500": 0.1, "rate_limit_429": 0.1, "error_code_200": 0.1, "truncated_json": 0.1}

    def outcomes() -> list[str]:
        server = start(min_duration=0, max_duration=0, seed=7, faults=Faults(**faults))
        seen = []
        with client(server) as c:
            for _ in range(40):
                response = submit(c)
                try:
                    seen.append(f"{response.status_code}:{response.json().get('error_code')}")
                except json.JSONDecodeError:
                    seen.append(f"{response.status_code}:truncated")
        return seen

    first = outcomes()
    assert first == outcomes()
    assert len(set(first)) == 5  # success and all four kinds occurred


def test_concurrent_submits_from_an_async_client(start: StartServer) -> None:
    server = start(capacity=8, min_duration=0, max_duration=0.01)

    async def run() -> list[str]:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(base_url=server.base_url, headers=headers) as c:
            url = f"/v1/models/{MODEL}"
            answers = await asyncio.gather(*(c.post(url, json=PAYLOAD) for _ in range(100)))
        return [a.json()["request_id"] for a in answers]

    ids = asyncio.run(run())
    assert len(set(ids)) == 100
    assert {s.request_id for s in server.simulator.submissions()} == set(ids)


def test_a_busy_port_fails_to_start(start: StartServer) -> None:
    server = start()
    port = int(server.base_url.rsplit(":", 1)[1])
    with pytest.raises(RuntimeError), SimulatorServer(port=port):
        pass
