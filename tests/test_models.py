"""Many models from one sheet: model files, roles, the model column, prices, the simulator."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from batchgen.models import ROLES, load_catalog, shipped_models
from batchgen.simulator import Simulator, SimulatorServer
from tests.helpers import IMAGE, TOKEN, fast_config, ledger_rows, read_csv, run_cli, write_csv

SEEDANCE = "bytedance/seedance-v1.5-pro/image-to-video"
KLING3 = "kling/kling-3.0/pro/image-to-video"
END = "https://images.example.com/end.png"


def submissions(server: SimulatorServer) -> list[dict[str, Any]]:
    """What the simulator was sent, in order."""
    return list(httpx.get(f"{server.base_url}/_sim/submissions").json())


def jobfile(path: Path, sheet: Path, body: str = "") -> Path:
    """A job file for `sheet` with extra TOML lines."""
    path.write_text(f'sheet = "{sheet.name}"\n{body}', encoding="utf-8")
    return path


# --------------------------------------------------------------------------- model files


def test_shipped_models_cover_both_kinds_and_say_where_they_came_from() -> None:
    models = {m.alias: m for m in shipped_models()}
    assert len(models) >= 8
    for alias in (
        "seedance-1.5-pro-i2v",
        "seedance-1.5-pro-t2v",
        "kling-2.1-pro-i2v",
        "kling-3.0-pro-i2v",
        "wan-2.6-t2v",
    ):
        assert alias in models
    assert {m.kind for m in models.values()} == {"t2v", "i2v"}
    for model in models.values():
        assert model.source["url"].startswith("https://www.runcomfy.com/models/")
        assert model.source["read_on"]
        assert "prompt" in model.roles
        assert set(model.roles) <= set(ROLES)
        assert (model.kind == "i2v") == ("image" in model.roles)
    # a price only where one is published: the others are unknown, never made up
    assert not models["wan-2.6-t2v"].priced
    assert models["wan-2.6-t2v"].price_per_second() == "unknown"
    assert models["kling-3.0-pro-i2v"].price_per_second() == "$0.168/s"


def test_a_malformed_model_file_is_exit_2_naming_the_file_the_key_and_the_rule(
    tmp_path: Path,
) -> None:
    sheet = write_csv(tmp_path / "ads.csv", [{"prompt": "a", "image": IMAGE}])
    models = tmp_path / "models"
    models.mkdir()
    bad = models / "acme.json"
    bad.write_text(
        json.dumps(
            {
                "model_id": "acme/video/text-to-video",
                "kind": "t2v",
                "inputs": {"prompt": {"type": "text"}},
            }
        ),
        encoding="utf-8",
    )
    job = jobfile(tmp_path / "job.toml", sheet, 'models_dir = "models"\n')

    result = run_cli(["check", job], None)

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    line = result.stderr.strip()
    assert str(bad) in line and "inputs.prompt.type" in line and "'text' is not one of" in line

    bad.write_text('{"model_id": "acme/video/t2v", "inputs": {', encoding="utf-8")
    result = run_cli(["check", job], None)
    assert result.returncode == 2
    assert str(bad) in result.stderr and "not valid JSON" in result.stderr


# --------------------------------------------------------------------------- sheets


def test_one_row_runs_through_two_models_each_with_its_own_field_names(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    rows = [
        {
            "prompt": "Sneaker spins on a pedestal",
            "image": IMAGE,
            "duration": 6,
            "model": "seedance-1.5-pro-i2v|kling-3.0-pro-i2v",
        }
    ]
    sheet = write_csv(tmp_path / "ads.csv", rows)

    result = run_cli(["run", sheet], sim)

    assert result.returncode == 0, result.stderr
    sent = {s["model_id"]: s["payload"] for s in submissions(sim)}
    assert sent[SEEDANCE] == {
        "prompt": "Sneaker spins on a pedestal",
        "first_frame_image_url": IMAGE,
        "duration": 6,
    }
    assert sent[KLING3] == {
        "prompt": "Sneaker spins on a pedestal",
        "start_image_url": IMAGE,
        "duration": 6,
    }
    row = read_csv(sheet)[0]
    lines = row["status"].splitlines()
    assert lines == ["seedance-1.5-pro-i2v: completed", "kling-3.0-pro-i2v: completed"]
    results = read_csv(tmp_path / "ads.results.csv")
    assert [r["model"] for r in results] == [SEEDANCE, KLING3]
    costs = [float(r["estimated_cost"]) for r in results]
    assert costs == [pytest.approx(0.144), pytest.approx(1.008)]


def test_model_specific_headers_keep_working_and_feed_every_model_of_the_row(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    rows = [
        {
            "prompt": "Watch face close-up",
            "first_frame_image_url": IMAGE,
            "camera_fixed": "no",
            "model": "kling-3.0-pro-i2v | Seedance-1.5-Pro-I2V",
        }
    ]
    sheet = write_csv(tmp_path / "ads.csv", rows)

    check = run_cli(["check", sheet], None)
    assert check.returncode == 0, check.stdout
    # Kling has no camera_fixed: a warning for that model's jobs, not an error
    assert "kling-3.0-pro-i2v has no input 'camera_fixed'" in check.stdout

    assert run_cli(["run", sheet], sim).returncode == 0
    sent = {s["model_id"]: s["payload"] for s in submissions(sim)}
    assert sent[KLING3] == {"prompt": "Watch face close-up", "start_image_url": IMAGE}
    assert sent[SEEDANCE]["camera_fixed"] is False


def test_a_role_a_model_does_not_take_is_invalid_where_it_changes_the_video(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    rows = [
        {"prompt": "Lake at dawn", "image": IMAGE, "ratio": "9:16", "model": "wan-2.6-t2v"},
        {"prompt": "Lake at noon", "ratio": "9:16", "model": "wan-2.6-t2v|seedance-1.5-pro-t2v"},
        {
            "prompt": "Door opens",
            "image": IMAGE,
            "end_image": END,
            "model": "seedance-1.5-pro-i2v|kling-3.0-pro-i2v",
        },
    ]
    sheet = write_csv(tmp_path / "ads.csv", rows)

    check = run_cli(["check", "--json", sheet], None)

    assert check.returncode == 1
    report = json.loads(check.stdout)
    errors = {(p["row"], p["message"]) for p in report["problems"]}
    assert any(r == 2 and "a text-to-video model takes no image" in m for r, m in errors)
    assert any(r == 4 and "seedance-1.5-pro-i2v takes no end image" in m for r, m in errors)
    warnings = [w["message"] for w in report["warnings"]]
    assert any("wan-2.6-t2v takes no ratio; left out" in w and "(2 rows)" in w for w in warnings)
    # row 3 runs both models; row 4 still runs Kling, which takes the end frame
    assert report["jobs"] == 3
    assert report["by_model"]["kling-3.0-pro-i2v"] == {
        "jobs": 1,
        "estimated_cost_usd": 0,
        "unpriced_jobs": 1,  # no duration given, and Kling 3.0 publishes no default
    }
    assert report["by_model"]["seedance-1.5-pro-t2v"]["estimated_cost_usd"] == 0.12

    run = run_cli(["run", sheet], sim)
    assert run.returncode == 1
    sent = [(s["model_id"], s["payload"]) for s in submissions(sim)]
    assert (KLING3, {"prompt": "Door opens", "start_image_url": IMAGE, "end_image_url": END}) in (
        sent
    )
    assert all(m != SEEDANCE for m, _ in sent)
    row4 = read_csv(sheet)[2]
    assert row4["status"].splitlines() == [
        "kling-3.0-pro-i2v: completed",
        "seedance-1.5-pro-i2v: invalid",
    ]


def test_validation_is_per_model(tmp_path: Path) -> None:
    # 15 s is fine for Kling 3.0 (3-15) but not for Seedance (4-12)
    rows = [
        {
            "prompt": "p",
            "image": IMAGE,
            "duration": 15,
            "model": "seedance-1.5-pro-i2v|kling-3.0-pro-i2v",
        }
    ]
    sheet = write_csv(tmp_path / "ads.csv", rows)

    result = run_cli(["check", sheet], None)

    assert result.returncode == 1
    assert "model seedance-1.5-pro-i2v: duration 15 is outside 4–12" in result.stdout
    assert "  kling-3.0-pro-i2v: 1 job(s), $2.52" in result.stdout
    assert "1 jobs" in result.stdout or "1 job" in result.stdout


def test_an_unknown_model_name_is_invalid_for_its_row_with_the_nearest_names(
    tmp_path: Path,
) -> None:
    rows = [{"prompt": "p", "image": IMAGE, "model": "kling-3.0-pro-i2w"}]
    sheet = write_csv(tmp_path / "ads.csv", rows)

    result = run_cli(["check", sheet], None)

    assert result.returncode == 1
    assert "unknown model 'kling-3.0-pro-i2w'; did you mean kling-3.0-pro-i2v" in result.stdout


# --------------------------------------------------------------------------- identity


def test_existing_single_model_sheets_keep_their_job_keys(tmp_path: Path) -> None:
    # the keys an earlier batchgen gave these jobs: a rerun after upgrading pays nothing again
    rows = [
        {
            "prompt": "Product 0 spins slowly on a pedestal",
            "first_frame_image_url": IMAGE,
            "ratio": "9:16|1:1",
        }
    ]
    sheet = write_csv(tmp_path / "ads.csv", rows)

    result = run_cli(["check", "--json", sheet], None)
    assert result.returncode == 0
    from batchgen.config import build_config
    from batchgen.runner import load_batch

    plan = load_batch(build_config(sheet)).plan
    assert [j.key for j in plan.jobs] == [
        "f13f46a77c20482d8710027e8853f9fe",
        "c93a50fee892e620893a225c68688b6f",
    ]
    # the lines name the variant as a person says it; what older versions wrote still reads
    assert [j.label for j in plan.jobs] == ["9:16", "1:1"]
    assert [j.former_label for j in plan.jobs] == ["ratio=9:16", "ratio=1:1"]


@pytest.mark.parametrize("job_id", [False, True])
def test_adding_a_model_to_a_row_submits_only_the_new_jobs(
    tmp_path: Path, sim: SimulatorServer, job_id: bool
) -> None:
    rows = [{"prompt": f"Ad {i}", "image": IMAGE, "ratio": "9:16|1:1"} for i in range(3)]
    if job_id:
        for i, row in enumerate(rows):
            row["job_id"] = f"ad-{i}"
    sheet = write_csv(tmp_path / "ads.csv", rows)
    assert run_cli(["run", sheet], sim).returncode == 0
    assert len(submissions(sim)) == 6

    for row in rows:
        row["model"] = SEEDANCE  # the column added, naming the model the sheet always used
    rows[1]["model"] = "seedance-1.5-pro-i2v|kling-3.0-pro-i2v"
    write_csv(sheet, rows)
    result = run_cli(["run", sheet], sim)

    assert result.returncode == 0, result.stderr
    sent = submissions(sim)
    assert len(sent) == 7  # one new job: Kling for row 3 (it takes no ratio: one job)
    assert sent[-1]["model_id"] == KLING3
    assert len(ledger_rows(tmp_path / "ads.csv.batchgen.db")) == 7


# --------------------------------------------------------------------------- prices


def test_max_cost_refuses_an_unpriced_model_until_the_job_file_prices_it(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    rows = [{"prompt": "Lake at dawn", "model": "wan-2.6-t2v"}]
    sheet = write_csv(tmp_path / "ads.csv", rows)

    check = run_cli(["check", sheet], None)
    assert check.returncode == 0
    assert "price unknown" in check.stdout and "wan-2.6-t2v" in check.stdout

    job = jobfile(tmp_path / "job.toml", sheet, "max_cost = 5.0\n")
    refused = run_cli(["run", job], sim)
    assert refused.returncode == 2
    assert "cannot bound the cost of wan-2.6-t2v: no price is known" in refused.stderr
    assert '[prices] "wan-2.6-t2v" = 0.05' in refused.stderr
    assert submissions(sim) == []

    # Wan's file records no duration: a user's price is then per job
    jobfile(tmp_path / "job.toml", sheet, 'max_cost = 5.0\n[prices]\n"wan-2.6-t2v" = 0.4\n')
    assert run_cli(["run", job], sim).returncode == 0
    results = read_csv(tmp_path / "ads.results.csv")
    assert float(results[0]["estimated_cost"]) == pytest.approx(0.4)


def test_a_price_for_an_unknown_model_is_exit_2_naming_the_job_file(tmp_path: Path) -> None:
    sheet = write_csv(tmp_path / "ads.csv", [{"prompt": "p", "image": IMAGE}])
    job = jobfile(tmp_path / "job.toml", sheet, '[prices]\n"wan-2.6-t2w" = 0.05\n')

    result = run_cli(["check", job], None)

    assert result.returncode == 2
    assert str(job) in result.stderr and "[prices]: unknown model 'wan-2.6-t2w'" in result.stderr
    assert "did you mean wan-2.6-t2v" in result.stderr


def test_a_users_price_is_per_second_of_video(tmp_path: Path) -> None:
    rows = [{"prompt": "p", "image": IMAGE, "duration": 10, "model": "kling-o3-pro-i2v"}]
    sheet = write_csv(tmp_path / "ads.csv", rows)
    job = jobfile(
        tmp_path / "job.toml", sheet, '[prices]\n"kling/kling-video-o3/pro/image-to-video" = 0.05\n'
    )

    result = run_cli(["check", "--json", job], None)

    assert result.returncode == 0
    assert json.loads(result.stdout)["estimated_cost_usd"] == pytest.approx(0.5)


# --------------------------------------------------------------------------- user's models


def test_a_users_model_file_runs_a_model_batchgen_does_not_ship(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "acme.json").write_text(
        json.dumps(
            {
                "model_id": "acme/motion-9/text-to-video",
                "alias": "motion-9",
                "kind": "t2v",
                "roles": {"prompt": "text", "duration": "seconds"},
                "inputs": {
                    "text": {"type": "string", "required": True},
                    "seconds": {"type": "integer", "minimum": 1, "maximum": 20, "default": 4},
                },
                "pricing": {"per_seconds": 1, "table": 0.02},
            }
        ),
        encoding="utf-8",
    )
    sheet = write_csv(tmp_path / "ads.csv", [{"prompt": "Rocket", "duration": 8}])
    job = jobfile(tmp_path / "job.toml", sheet, 'model = "motion-9"\nmodels_dir = "models"\n')
    config = fast_config(models=("acme/motion-9/text-to-video",))

    with SimulatorServer(Simulator(config)) as server:
        result = run_cli(["run", job], server)
        sent = submissions(server)

    assert result.returncode == 0, result.stderr
    assert sent[0]["model_id"] == "acme/motion-9/text-to-video"
    assert sent[0]["payload"] == {"text": "Rocket", "seconds": 8}
    assert float(read_csv(tmp_path / "ads.results.csv")[0]["estimated_cost"]) == 0.16


# --------------------------------------------------------------------------- simulator


@pytest.mark.parametrize(
    ("model_id", "payload", "field"),
    [
        (KLING3, {"prompt": "p"}, "start_image_url"),
        (KLING3, {"prompt": "p", "start_image_url": IMAGE, "duration": 20}, "duration"),
        (KLING3, {"prompt": "p", "first_frame_image_url": IMAGE}, "first_frame_image_url"),
        (SEEDANCE, {"prompt": "p", "first_frame_image_url": IMAGE, "ratio": "2:1"}, "ratio"),
        ("wan-ai/wan-2-6/text-to-video", {"prompt": ""}, "prompt"),
    ],
)
def test_the_simulator_holds_each_model_to_its_own_schema(
    sim: SimulatorServer, model_id: str, payload: dict[str, Any], field: str
) -> None:
    answer = httpx.post(
        f"{sim.base_url}/v1/models/{model_id}",
        json=payload,
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert answer.status_code == 422
    assert any(d["loc"] == ["body", field] for d in answer.json()["detail"])


def test_the_simulator_serves_every_shipped_model(sim: SimulatorServer) -> None:
    for model in load_catalog():
        payload = {
            name: IMAGE if spec.type == "url" else "p"
            for name, spec in model.fields.items()
            if spec.required
        }
        answer = httpx.post(
            f"{sim.base_url}/v1/models/{model.model_id}",
            json=payload,
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert answer.status_code == 200, (model.model_id, answer.text)


# --------------------------------------------------------------------------- batchgen models


def _user_model(folder: Path, **changes: Any) -> Path:
    folder.mkdir(exist_ok=True)
    data: dict[str, Any] = {
        "model_id": "acme/motion-9/text-to-video",
        "alias": "motion-9",
        "kind": "t2v",
        "roles": {"prompt": "text"},
        "inputs": {"text": {"type": "string", "required": True}},
    }
    data.update(changes)
    path = folder / "acme.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_models_lists_shipped_and_users_models_with_kind_roles_and_price(tmp_path: Path) -> None:
    _user_model(tmp_path / "mine")

    listed = run_cli(["models", "--models-dir", tmp_path / "mine", "--json"], None)

    assert listed.returncode == 0, listed.stderr
    rows = {r["alias"]: r for r in json.loads(listed.stdout)}
    assert rows["kling-3.0-pro-i2v"] == {
        "id": KLING3,
        "alias": "kling-3.0-pro-i2v",
        "kind": "i2v",
        "required_roles": ["prompt", "image"],
        "price_per_second": "$0.168/s",
        "source": "shipped",
    }
    assert rows["motion-9"]["price_per_second"] == "unknown"
    assert rows["motion-9"]["source"].endswith("acme.json")

    table = run_cli(["models"], None)
    assert table.returncode == 0
    assert "wan-2.6-t2v" in table.stdout and "unknown" in table.stdout


def test_models_id_shows_one_models_inputs_and_rules() -> None:
    shown = run_cli(["models", "seedance-1.5-pro-i2v"], None)

    assert shown.returncode == 0
    out = shown.stdout
    assert SEEDANCE in out and "runcomfy.com/models/bytedance/seedance-1-5/pro/api" in out
    assert "image" in out and "first_frame_image_url" in out and "required" in out
    assert "whole number 4–12" in out and "default 5" in out
    assert "one of 480p, 720p, 1080p" in out

    unknown = run_cli(["models", "seedance-1.5-pro"], None)
    assert unknown.returncode == 2
    assert "did you mean" in unknown.stderr and "seedance-1.5-pro-i2v" in unknown.stderr


def test_models_dir_overrides_a_shipped_model_and_a_bad_file_stops_every_command(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "mine"
    _user_model(
        folder,
        model_id="wan-ai/wan-2-6/text-to-video",
        alias="wan-2.6-t2v",
        pricing={"per_seconds": 1, "table": 0.1},
        roles={"prompt": "prompt"},
        inputs={"prompt": {"type": "string", "required": True}},
    )
    shown = run_cli(["models", "wan-2.6-t2v", "--models-dir", folder, "--json"], None)
    assert json.loads(shown.stdout)["source"].endswith("acme.json")

    bad = _user_model(folder, roles={"image": "text"})  # a t2v model cannot take an image
    sheet = write_csv(tmp_path / "ads.csv", [{"prompt": "p", "image": IMAGE}])
    for args in (["models", "--models-dir", folder], ["check", sheet, "--models-dir", folder]):
        result = run_cli(args, None)
        assert result.returncode == 2
        assert result.stderr.strip() == (
            f"batchgen: error: {bad}: roles.image: a text-to-video model (kind t2v) takes no image"
        )


def test_the_model_flag_takes_several_models(tmp_path: Path, sim: SimulatorServer) -> None:
    sheet = write_csv(tmp_path / "ads.csv", [{"prompt": "Lake", "ratio": "1:1"}])

    result = run_cli(["run", sheet, "--model", "seedance-1.5-pro-t2v|wan-2.6-t2v"], sim)

    assert result.returncode == 0, result.stderr
    assert sorted(s["model_id"] for s in submissions(sim)) == [
        "bytedance/seedance-v1.5-pro/text-to-video",
        "wan-ai/wan-2-6/text-to-video",
    ]
    assert read_csv(sheet)[0]["status"].splitlines() == [
        "seedance-1.5-pro-t2v: completed",
        "wan-2.6-t2v: completed",
    ]


def test_a_lost_ledger_of_a_two_model_sheet_pays_nothing_again(
    tmp_path: Path, sim: SimulatorServer
) -> None:
    rows = [
        {"prompt": f"Ad {i}", "image": IMAGE, "model": "seedance-1.5-pro-i2v|kling-3.0-pro-i2v"}
        for i in range(3)
    ]
    sheet = write_csv(tmp_path / "ads.csv", rows)
    assert run_cli(["run", sheet], sim).returncode == 0
    assert len(submissions(sim)) == 6

    for leftover in tmp_path.glob("ads.csv.batchgen.db*"):
        leftover.unlink()  # the ledger is gone: the sheet's output cells still name each job
    again = run_cli(["run", sheet], sim)

    assert again.returncode == 0, again.stderr
    assert len(submissions(sim)) == 6
