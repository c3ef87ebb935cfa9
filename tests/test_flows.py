"""The Prefect side: the watch deployment registers with its cron schedule and parameters."""

from __future__ import annotations

import asyncio
from pathlib import Path

from flows.curate_flow import watch_deployment
from pipelines.config import tiny, to_dict


def test_watch_deployment_registers_schedule_and_parameters(tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client

    cfg = to_dict(tiny())
    dep = watch_deployment(str(tmp_path / "in"), str(tmp_path / "out"), "*/7 * * * *", cfg, name="t-watch")
    dep_id = dep.apply()

    async def read() -> object:
        async with get_client() as client:
            return await client.read_deployment(dep_id)

    stored = asyncio.run(read())
    assert stored.name == "t-watch"
    assert [s.schedule.cron for s in stored.schedules] == ["*/7 * * * *"]
    assert stored.parameters["sources"] == [str(tmp_path / "in")]
    assert stored.parameters["config"]["clips"]["max_s"] == cfg["clips"]["max_s"]
