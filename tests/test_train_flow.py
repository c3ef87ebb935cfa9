"""The Prefect training flow against the real local (ephemeral) Prefect server.

A first flow run trains the VAE and 3 DiT steps; a second run of the same flow with ``steps=5``
resumes from the checkpoint: the DiT log goes on at step 4 with no step twice and the first
three rows untouched, and the finished VAE is not retrained. The deployment helper registers a
cron schedule with the flow's parameters.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flows.train_flow import train_flow, training_deployment
from tests.train_shards import write_test_shards
from training.loop.checkpoint import latest_checkpoint, load_checkpoint

OVERRIDES = ["vae_steps=2", "ckpt_every=2", "num_workers=0", "eval_samples=1", "warmup_steps=1",
             "log_every=1"]


@pytest.fixture(scope="module", autouse=True)
def _send_logs_while_the_server_runs() -> Iterator[None]:
    """Flow runs log to the Prefect API in the background: send the queue before the session's
    ephemeral server stops (conftest.py), or the worker retries against it for a minute at exit."""
    yield
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=30)


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_test_shards(tmp_path_factory.mktemp("train_flow"), [("128x64", 20)] * 8)


def _log(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _run(shards: Path, out: Path, steps: int) -> dict[str, Any]:
    state = train_flow(str(shards), str(out), preset="tiny", steps=steps, overrides=OVERRIDES,
                       return_state=True)
    assert state.is_completed(), state
    return state.result()


def test_train_flow_trains_then_resumes_with_more_steps(shards: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = _run(shards, out, steps=3)
    assert first["dit"]["steps"] == 3 and first["vae"]["steps"] == 2
    ckpt = Path(first["checkpoint"])
    assert ckpt.is_file() and ckpt == latest_checkpoint(out)
    assert load_checkpoint(ckpt)["step"] == 3
    assert all("eval_loss" in row for row in first["dit"]["eval"]) and first["dit"]["eval"]
    assert all("eval_l1" in row for row in first["vae"]["eval"]) and first["vae"]["eval"]
    rows = _log(out / "log.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(isinstance(r["loss"], float) and r["keys"] for r in rows)
    vae_rows = _log(out / "vae" / "log.jsonl")

    second = _run(shards, out, steps=5)  # same run directory: resumes from step 3
    assert second["dit"]["steps"] == 5 and load_checkpoint(latest_checkpoint(out))["step"] == 5
    assert second["vae"]["eval"] == []  # the VAE run was finished: nothing retrained
    assert _log(out / "vae" / "log.jsonl") == vae_rows
    resumed = _log(out / "log.jsonl")
    assert [r["step"] for r in resumed] == [1, 2, 3, 4, 5]  # continues, no step twice
    assert resumed[:3] == rows
    assert all("eval_loss" in row for row in second["dit"]["eval"])

    third = _run(shards, out, steps=5)  # a rerun of a finished run only reports
    assert third["dit"]["steps"] == 5 and _log(out / "log.jsonl") == resumed


def test_train_flow_runs_are_recorded_by_prefect(shards: Path, tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    state = train_flow(str(shards), str(tmp_path / "run"), steps=1, overrides=OVERRIDES, return_state=True)
    assert state.is_completed()

    async def read() -> Any:
        async with get_client() as client:
            runs = await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
            tasks = await client.read_task_runs()
            return runs, tasks

    runs, tasks = asyncio.run(read())
    assert [r.state.type.value for r in runs] == ["COMPLETED"]
    assert runs[0].parameters["steps"] == 1
    mine = {t.name.rsplit("-", 1)[0] for t in tasks if t.flow_run_id == runs[0].id}
    assert {"prepare-run", "train"} <= mine


def test_training_deployment_registers_schedule_and_parameters(tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client

    dep = training_deployment(str(tmp_path / "shards"), str(tmp_path / "run"), "0 3 * * *", steps=400,
                              overrides=["lr=5e-4"], name="t-train")
    dep_id = dep.apply()

    async def read() -> Any:
        async with get_client() as client:
            return await client.read_deployment(dep_id)

    stored = asyncio.run(read())
    assert stored.name == "t-train"
    assert [s.schedule.cron for s in stored.schedules] == ["0 3 * * *"]
    assert stored.parameters == {"data": str(tmp_path / "shards"), "out": str(tmp_path / "run"),
                                 "preset": "tiny", "overrides": ["lr=5e-4"], "steps": 400}


def test_post_training_flows_distill_refine_rlhf_from_a_trained_base(shards: Path, tmp_path: Path) -> None:
    from flows.posttrain_flow import distill_flow, refine_flow, rlhf_flow
    from training.loop.checkpoint import load_pipeline

    base = Path(_run(shards, tmp_path / "base", steps=2)["checkpoint"])
    quick = ["num_workers=0", "eval_samples=1", "warmup_steps=1", "ckpt_every=2"]
    state = distill_flow("cfg", str(base), str(shards), str(tmp_path / "cfgd"), steps=2, overrides=quick,
                         return_state=True)
    assert state.is_completed(), state
    student = load_pipeline(tmp_path / "cfgd")
    assert student.step == 2 and student.dit.cfg.guidance_embed
    state = distill_flow("dmd", str(base), str(shards), str(tmp_path / "dmd"), init=str(tmp_path / "cfgd"),
                         steps=1, overrides=quick, return_state=True)  # score distillation from the student
    assert state.is_completed(), state
    dmd = load_checkpoint(latest_checkpoint(tmp_path / "dmd"))
    assert dmd["distill"]["mode"] == "dmd" and dmd["config"]["dit"]["guidance_embed"]
    state = refine_flow(str(base), str(shards), str(tmp_path / "refine"), steps=2, overrides=quick,
                        return_state=True)
    assert state.is_completed(), state
    assert load_checkpoint(latest_checkpoint(tmp_path / "refine"))["kind"] == "refiner"
    prompts = ["a red ball", "a blue box", "a cat", "a dog", "a tree", "a car"]  # 4 are held out
    state = rlhf_flow(str(base), str(tmp_path / "rlhf"), prompts=prompts, rounds=1, steps_per_round=1,
                      return_state=True)
    assert state.is_completed(), state
    rounds = state.result()["rounds"]
    assert [r["round"] for r in rounds] == [0, 1] and "heldout_change" in rounds[1]  # base, then round 1
