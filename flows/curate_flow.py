"""The curation flow: ingest -> split+score -> filter -> caption -> export, one Prefect task per coarse step.

Prefect holds parameters, retries, schedules and run history; Ray Data runs the
items inside each step (pipelines/runner.py). Each task is idempotent (the steps
skip finished items), so a Prefect retry or a rerun after a kill resumes.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task

from pipelines import curate
from pipelines.config import CurateConfig, apply, default


def _cfg(config: dict[str, Any] | None) -> CurateConfig:
    cfg = default()
    apply(cfg, config or {})
    return cfg


# Prefect sees coarse, retryable steps (DESIGN.md "Prefect x Ray"); each runs pipeline steps.
STAGES: dict[str, tuple[str, ...]] = {
    "ingest": ("ingest",),
    "split-score": ("split", "clips", "score"),
    "filter": ("filter",),
    "caption": ("extract", "caption"),
    "export": ("export",),
}


@task(retries=2, retry_delay_seconds=5, task_run_name="{name}")
def steps_task(name: str, sources: list[str], out: str, config: dict[str, Any]) -> dict[str, Any]:
    return {s: curate.run_step_by_name(s, sources, out, _cfg(config)) for s in STAGES[name]}


@task(name="record-run")
def record_task(out: str, config: dict[str, Any], started_at: str, steps: dict[str, Any]) -> dict[str, Any]:
    return curate.finish_run(out, _cfg(config), started_at, steps)


@flow(name="vidloom-curate", log_prints=True)
def curate_flow(
    sources: list[str], out: str, config: dict[str, Any] | None = None, rescore: bool = False
) -> dict[str, Any]:
    """Curate ``sources`` (files, directories, globs) into ``out`` (catalog, clips, shards).

    rescore: only the filter step (re-decide from stored scores; nothing is decoded or cut).
    """
    config = config or {}
    started = curate.now_iso()
    steps: dict[str, Any] = {}
    for name in ("filter",) if rescore else STAGES:
        steps.update(steps_task.with_options(name=name)(name, sources, out, config))
    summary = record_task(out, config, started, steps)
    get_run_logger().info("curated %s: %s", out, summary)
    return summary


def watch_deployment(
    watch_dir: str, out: str, cron: str, config: dict[str, Any] | None = None, name: str = "watch"
) -> Any:
    """A deployment of the flow that curates ``watch_dir`` into ``out`` on ``cron``.

    Each scheduled run ingests only files it has not seen (the ingest step skips
    done items), so new files in the directory are curated as they arrive.
    """
    return curate_flow.to_deployment(
        name=name, cron=cron, parameters={"sources": [watch_dir], "out": out, "config": config or {}}
    )


def serve_watch(
    watch_dir: str, out: str, cron: str, config: dict[str, Any] | None = None, name: str = "watch"
) -> None:
    """Register the watch deployment with the Prefect API and serve its scheduled runs."""
    from prefect import serve

    serve(watch_deployment(watch_dir, out, cron, config, name))
