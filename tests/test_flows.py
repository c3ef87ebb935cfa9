"""The Prefect side, on the real (ephemeral) Prefect server.

- The watch deployment registers its cron schedule, parameters and a concurrency limit of 1;
  the server then cancels (skip) or enqueues (wait) a run due while one is running, and records
  it in that run's state history.
- ``--pool``: the deployment is registered with a work pool, the flow referenced by module path.
- A real curate flow run: one task per step, named after it (a failed extraction is the
  ``extract`` task); a finished run records its flow-run id in ``runs`` and leaves a table
  artifact of its counts and a link artifact to its report.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from curation.db import Catalog
from flows.curate_flow import COUNTS_ARTIFACT, REPORT_ARTIFACT, curate_flow, deploy_to_pool, watch_deployment
from pipelines.config import tiny, to_dict


@pytest.fixture(scope="module", autouse=True)
def _send_logs_while_the_server_runs() -> Iterator[None]:
    """Send queued flow-run logs before the session's ephemeral server stops (see test_train_flow.py)."""
    yield
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=30)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _read_deployment(dep_id: Any) -> Any:
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        return await client.read_deployment(dep_id)


def test_watch_deployment_registers_schedule_and_parameters(tmp_path: Path) -> None:
    cfg = to_dict(tiny())
    dep = watch_deployment(str(tmp_path / "in"), str(tmp_path / "out"), "*/7 * * * *", cfg, name="t-watch")
    stored = run(_read_deployment(dep.apply()))
    assert stored.name == "t-watch"
    assert [s.schedule.cron for s in stored.schedules] == ["*/7 * * * *"]
    assert stored.parameters["sources"] == [str(tmp_path / "in")]
    assert stored.parameters["config"]["clips"]["max_s"] == cfg["clips"]["max_s"]
    assert stored.global_concurrency_limit.limit == 1
    assert stored.concurrency_options.collision_strategy.value == "CANCEL_NEW"


@pytest.mark.parametrize(("overlap", "state_of_second"),
                         [("skip", "Cancelled"), ("wait", "AwaitingConcurrencySlot")])
def test_a_run_due_while_one_runs_is_skipped_or_waits(tmp_path: Path, overlap: str,
                                                      state_of_second: str) -> None:
    """The state proposals a runner or worker makes for two runs of the deployment, the first still
    running: the server refuses the second one's start and records why."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.responses import SetStateStatus
    from prefect.states import Completed, Pending, Running

    dep_id = watch_deployment(str(tmp_path / "in"), str(tmp_path / "out"), "0 0 1 1 *", {},
                              name=f"t-overlap-{overlap}", overlap=overlap).apply()

    async def scenario() -> tuple[Any, list[str], str]:
        async with get_client() as client:
            first = await client.create_flow_run_from_deployment(dep_id)
            second = await client.create_flow_run_from_deployment(dep_id)
            for state in (Pending(), Running()):
                assert (await client.set_flow_run_state(first.id, state)).status == SetStateStatus.ACCEPT
            refused = await client.set_flow_run_state(second.id, Pending())
            assert "concurrency limit" in refused.details.reason
            await client.set_flow_run_state(first.id, Completed())
            after = await client.set_flow_run_state(second.id, Pending())  # the first one is done
            history = [s.name for s in await client.read_flow_run_states(second.id)]
            return refused.status, history, after.status

    status, history, after = run(scenario())
    assert status == SetStateStatus.REJECT and history[1] == state_of_second
    if overlap == "wait":
        assert after == SetStateStatus.ACCEPT and history[-1] == "Pending"  # it starts once the first ends
    else:
        assert after == SetStateStatus.ABORT and history[-1] == "Cancelled"  # a skipped run stays skipped


def test_deploy_to_a_work_pool(tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    with pytest.raises(ValueError, match="prefect work-pool create"):
        deploy_to_pool(str(tmp_path / "in"), str(tmp_path / "out"), "*/5 * * * *", "no-such-pool")

    async def make_pool() -> None:
        async with get_client() as client:
            await client.create_work_pool(WorkPoolCreate(name="t-vidloom", type="process"), overwrite=True)

    run(make_pool())
    dep_id = deploy_to_pool(str(tmp_path / "in"), str(tmp_path / "out"), "*/5 * * * *", "t-vidloom",
                            name="t-pool", overlap="wait")
    stored = run(_read_deployment(dep_id))
    assert stored.work_pool_name == "t-vidloom"
    assert stored.entrypoint == "flows.curate_flow.curate_flow"  # importable wherever vidloom is installed
    assert stored.global_concurrency_limit.limit == 1
    assert stored.concurrency_options.collision_strategy.value == "ENQUEUE"
    assert [s.schedule.cron for s in stored.schedules] == ["*/5 * * * *"]


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("flow_in")
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=160x90:rate=25",
                    "-frames:v", "75", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(src / "a.mp4")],
                   check=True)
    return src


def flow_config() -> dict[str, Any]:
    cfg = tiny()
    cfg.runtime.runner, cfg.runtime.quiet = "sequential", True
    return to_dict(cfg)


async def _task_runs(flow_run_id: Any) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async with get_client() as client:
        runs = FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        return await client.read_task_runs(flow_run_filter=runs)


def test_a_failed_extraction_shows_as_the_extract_task(video: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / ".work" / "parts").mkdir(parents=True)
    (out / ".work" / "parts" / "extract").write_text("not a directory")  # the extract step's journal
    state = curate_flow(sources=[str(video)], out=str(out), config=flow_config(), task_retries=0,
                        return_state=True)
    assert state.is_failed()
    tasks = {t.name: t.state.type.value for t in run(_task_runs(state.state_details.flow_run_id))}
    assert tasks == {"ingest": "COMPLETED", "split": "COMPLETED", "clips": "COMPLETED", "score": "COMPLETED",
                     "filter": "COMPLETED", "extract": "FAILED"}


def test_a_run_records_its_flow_run_id_and_leaves_artifacts(video: Path, tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client

    out = tmp_path / "out"
    state = curate_flow(sources=[str(video)], out=str(out), config=flow_config(), return_state=True)
    assert state.is_completed()
    flow_run_id = state.state_details.flow_run_id
    names = [t.name for t in run(_task_runs(flow_run_id))]
    assert {"ingest", "split", "clips", "score", "filter", "extract", "caption", "export", "record-run",
            "report"} <= set(names)
    with Catalog(out / "catalog.duckdb", read_only=True) as cat:
        (row,) = cat.dicts("SELECT flow_run_id, counts FROM runs")
    assert row["flow_run_id"] == str(flow_run_id)

    async def artifacts() -> dict[str, Any]:
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

        async with get_client() as client:
            found = await client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
        return {a.key: a for a in found}

    found = run(artifacts())
    table, link = found[COUNTS_ARTIFACT], found[REPORT_ARTIFACT]
    assert table.type == "table"
    rows = {r["count"]: r["value"] for r in json.loads(table.data)}
    counts = json.loads(row["counts"])
    assert rows["videos_ok"] == counts["videos_ok"] == 1 and rows["shots"] == counts["shots"] == 1
    assert rows["clips_rejected.compressed"] == counts["clips_rejected"]["compressed"]
    report = out / "report.html"
    assert link.type == "markdown" and f"({report.resolve().as_uri()})" in link.data  # a markdown link
    assert report.is_file() and "<html" in report.read_text()[:2000].lower()
