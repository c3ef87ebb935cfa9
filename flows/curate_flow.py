"""The curation flow: one Prefect task per pipeline step (ingest, split, clips, score, filter,
extract, caption, export), then the run record, the HTML report and the run's artifacts.

Prefect holds parameters, retries, schedules and run history; Ray Data runs the items inside
each step (pipelines/runner.py). Each task is idempotent (the steps skip finished items), so a
Prefect retry or a rerun after a kill resumes. Task names are the step names, so a failed
extraction shows as the ``extract`` task, not as the step after it.

Each run leaves two artifacts: a table of the run's counts (key ``vidloom-curate-counts``) and a
link to its report (``vidloom-curate-report``); its flow-run id is recorded in the catalog's
``runs`` table.

Schedules never overlap: the watch deployment has a concurrency limit of 1. A run that is due
while the previous one is still going is cancelled (``overlap="skip"``, the default: the next
run picks up the new files anyway) or waits for it (``overlap="wait"``, Prefect's
``AwaitingConcurrencySlot`` state); either way Prefect's server decides and records it in the
new run's state history. ``serve_watch`` serves the deployment from this process;
``deploy_to_pool`` registers it with a work pool instead (a worker runs it, importing the flow
by module path, so any machine with vidloom installed can).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy

from pipelines import curate
from pipelines.config import CurateConfig, apply, default

OVERLAP = {"skip": ConcurrencyLimitStrategy.CANCEL_NEW, "wait": ConcurrencyLimitStrategy.ENQUEUE}
COUNTS_ARTIFACT, REPORT_ARTIFACT = "vidloom-curate-counts", "vidloom-curate-report"


def _cfg(config: dict[str, Any] | None) -> CurateConfig:
    cfg = default()
    apply(cfg, config or {})
    return cfg


@task(retries=2, retry_delay_seconds=5, task_run_name="{step}")
def step_task(step: str, sources: list[str], out: str, config: dict[str, Any]) -> dict[str, Any]:
    """One pipeline step (pipelines/curate.py); the task is named after it."""
    return curate.run_step_by_name(step, sources, out, _cfg(config))


@task(name="record-run", task_run_name="record-run")
def record_task(out: str, config: dict[str, Any], started_at: str, steps: dict[str, Any],
                flow_run_id: str | None) -> dict[str, Any]:
    return curate.finish_run(out, _cfg(config), started_at, steps, flow_run_id)


@task(name="report", task_run_name="report")
def report_task(out: str, config: dict[str, Any], report: str) -> str:
    """Write the HTML report of ``out``'s catalog to ``report``; returns its absolute path."""
    curate.write_report(Path(out) / "catalog.duckdb", report, _cfg(config))
    return str(Path(report).resolve())


def count_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The run summary as rows ``{"count", "value"}``; rejections per reason: ``clips_rejected.<reason>``."""
    rows: list[dict[str, Any]] = []
    for key, value in summary.items():
        if isinstance(value, dict):
            rows += [{"count": f"{key}.{k}", "value": v} for k, v in value.items()]
        else:
            rows.append({"count": key, "value": value})
    return rows


def publish_artifacts(summary: dict[str, Any], report: str, out: str) -> None:
    from prefect.artifacts import create_link_artifact, create_table_artifact

    create_table_artifact(count_rows(summary), key=COUNTS_ARTIFACT, description=f"vidloom curate {out}")
    create_link_artifact(Path(report).as_uri(), link_text=f"curation report of {out}", key=REPORT_ARTIFACT,
                         description=f"HTML report of {out}/catalog.duckdb after this run")


@flow(name="vidloom-curate", log_prints=True)
def curate_flow(
    sources: list[str], out: str, config: dict[str, Any] | None = None, rescore: bool = False,
    report: str | None = None, task_retries: int = 2,
) -> dict[str, Any]:
    """Curate ``sources`` (files, directories, globs) into ``out`` (catalog, clips, shards).

    rescore: only the filter step (re-decide from stored scores; nothing is decoded or cut).
    report: where the HTML report goes (default ``<out>/report.html``).
    task_retries: Prefect retries of a failed step (each step resumes where it stopped).
    """
    from prefect.runtime import flow_run

    config = config or {}
    started = curate.now_iso()
    steps: dict[str, Any] = {}
    for step in curate.RESCORE_STEPS if rescore else curate.STEPS:
        steps[step] = step_task.with_options(name=step, retries=task_retries)(step, sources, out, config)
    summary = record_task(out, config, started, steps, str(flow_run.id) if flow_run.id else None)
    html = report_task(out, config, report or str(Path(out) / "report.html"))
    publish_artifacts(summary, html, out)
    get_run_logger().info("curated %s: %s (report %s)", out, summary, html)
    return summary


def watch_deployment(
    watch_dir: str, out: str, cron: str, config: dict[str, Any] | None = None, name: str = "watch",
    overlap: str = "skip", pool: str | None = None,
) -> Any:
    """A deployment of the flow that curates ``watch_dir`` into ``out`` on ``cron``, one run at a time.

    Each scheduled run ingests only files it has not seen (the ingest step skips done items), so
    new files in the directory are curated as they arrive. ``overlap``: what a run due while the
    last one still runs does, "skip" (cancelled) or "wait" (enqueued). ``pool``: a work pool
    (the flow is then referenced by module path, ``flows.curate_flow.curate_flow``).
    """
    from prefect.deployments.runner import EntrypointType

    if overlap not in OVERLAP:
        raise ValueError(f"overlap must be one of {sorted(OVERLAP)}, not {overlap!r}")
    return curate_flow.to_deployment(
        name=name, cron=cron, parameters={"sources": [watch_dir], "out": out, "config": config or {}},
        concurrency_limit=ConcurrencyLimitConfig(limit=1, collision_strategy=OVERLAP[overlap]),
        work_pool_name=pool,
        entrypoint_type=EntrypointType.MODULE_PATH if pool else EntrypointType.FILE_PATH,
    )


def serve_watch(
    watch_dir: str, out: str, cron: str, config: dict[str, Any] | None = None, name: str = "watch",
    overlap: str = "skip",
) -> None:
    """Register the watch deployment with the Prefect API and serve its scheduled runs."""
    from prefect import serve

    serve(watch_deployment(watch_dir, out, cron, config, name, overlap))


def deploy_to_pool(
    watch_dir: str, out: str, cron: str, pool: str, config: dict[str, Any] | None = None,
    name: str = "watch", overlap: str = "skip",
) -> Any:
    """Register the watch deployment with work pool ``pool``; returns the deployment id.

    Raises:
        ValueError: if the pool does not exist (``prefect work-pool create NAME --type process``).
    """
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(pool)
        except ObjectNotFound as e:
            raise ValueError(f"no work pool {pool!r}: create it with `prefect work-pool create {pool} "
                             "--type process`, then start a worker with `prefect worker start --pool "
                             f"{pool}`") from e
    return watch_deployment(watch_dir, out, cron, config, name, overlap, pool).apply(work_pool_name=pool)
