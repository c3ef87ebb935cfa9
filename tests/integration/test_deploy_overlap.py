"""`vidloom deploy` against a real local Prefect server: two runs due at once, one runs, one is skipped.

A real ``prefect server start``, a real ``vidloom deploy`` serving the watch deployment, two flow
runs of it created at the same moment: the first curates, the second is cancelled by the server's
deployment concurrency limit and says so in its state; the catalog records only the first.

``vidloom deploy --pool``: a real process worker runs the registered deployment.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from curation.db import Catalog

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(pred: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[dict[str, str]]:
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_API_URL": f"http://127.0.0.1:{port}/api"}
    proc = subprocess.Popen([str(Path(sys.executable).parent / "prefect"), "server", "start", "--host",
                             "127.0.0.1", "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    try:
        wait_for(healthy, 120, "the Prefect server")
        yield env
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def test_two_runs_due_at_once_one_runs_one_is_skipped(server: dict[str, str], tmp_path: Path) -> None:
    watch, out = tmp_path / "in", tmp_path / "out"
    watch.mkdir()
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=160x90:rate=25", "-frames:v",
                    "75", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(watch / "a.mp4")], check=True)
    deploy = subprocess.Popen([sys.executable, "-m", "vidloom.cli", "deploy", str(watch), "--out", str(out),
                               "--cron", "0 0 1 1 *", "--name", "overlap", "--preset", "tiny",
                               "--runner", "sequential", "--quiet"], env=server,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        states = asyncio.run(_two_runs(server["PREFECT_API_URL"]))
    finally:
        deploy.terminate()
        _, err = deploy.communicate(timeout=60)
    finals = sorted((s[-1][0], s[-1][1]) for s in states.values())
    assert finals == [("CANCELLED", "Cancelled"), ("COMPLETED", "Completed")], (states, err[-3000:])
    (skipped,) = [s for s in states.values() if s[-1][0] == "CANCELLED"]
    assert "concurrency limit" in (skipped[-1][2] or "")  # recorded in the skipped run's state
    (ran,) = [fid for fid, s in states.items() if s[-1][0] == "COMPLETED"]
    with Catalog(out / "catalog.duckdb", read_only=True) as cat:
        assert [r[0] for r in cat.query("SELECT flow_run_id FROM runs")[1]] == [ran]


async def _two_runs(api_url: str) -> dict[str, list[tuple[str, str, str | None]]]:
    from prefect.client.orchestration import PrefectClient

    async with PrefectClient(api=api_url) as client:
        deadline = time.monotonic() + 180
        dep = None
        while dep is None and time.monotonic() < deadline:
            try:
                dep = await client.read_deployment_by_name("vidloom-curate/overlap")
            except Exception:  # noqa: BLE001 - not registered yet
                await asyncio.sleep(1)
        assert dep is not None, "the deployment was never registered"
        runs = [await client.create_flow_run_from_deployment(dep.id) for _ in range(2)]
        terminal = {"COMPLETED", "CANCELLED", "FAILED", "CRASHED"}
        while time.monotonic() < deadline + 240:
            current = [await client.read_flow_run(r.id) for r in runs]
            if all(fr.state is not None and fr.state.type.value in terminal for fr in current):
                break
            await asyncio.sleep(2)
        out = {}
        for r in runs:
            history = await client.read_flow_run_states(r.id)
            out[str(r.id)] = [(s.type.value, s.name, s.message) for s in history]
        return out


def test_a_pool_deployment_runs_on_a_process_worker(server: dict[str, str], tmp_path: Path) -> None:
    """``vidloom deploy --pool``: the deployment is only registered; a real process worker picks the
    run up and imports the flow by module path."""
    watch, out = tmp_path / "in", tmp_path / "out"
    watch.mkdir()
    prefect = str(Path(sys.executable).parent / "prefect")
    subprocess.run([prefect, "work-pool", "create", "t-pool", "--type", "process"], env=server, check=True,
                   capture_output=True)
    res = subprocess.run([sys.executable, "-m", "vidloom.cli", "deploy", str(watch), "--out", str(out),
                          "--cron", "0 0 1 1 *", "--name", "pooled", "--pool", "t-pool", "--preset", "tiny",
                          "--runner", "sequential", "--quiet"], env=server, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0 and "t-pool" in res.stdout, res.stderr[-3000:]
    flow_run_id = asyncio.run(_create_run(server["PREFECT_API_URL"], "vidloom-curate/pooled"))
    worker = subprocess.run([prefect, "worker", "start", "--pool", "t-pool", "--run-once"], env=server,
                            capture_output=True, text=True, timeout=300, cwd=tmp_path)
    state = asyncio.run(_state(server["PREFECT_API_URL"], flow_run_id))
    assert state == "COMPLETED", worker.stdout[-3000:] + worker.stderr[-3000:]
    with Catalog(out / "catalog.duckdb", read_only=True) as cat:
        assert [r[0] for r in cat.query("SELECT flow_run_id FROM runs")[1]] == [flow_run_id]


async def _create_run(api_url: str, name: str) -> str:
    from prefect.client.orchestration import PrefectClient

    async with PrefectClient(api=api_url) as client:
        dep = await client.read_deployment_by_name(name)
        return str((await client.create_flow_run_from_deployment(dep.id)).id)


async def _state(api_url: str, flow_run_id: str) -> str:
    from prefect.client.orchestration import PrefectClient

    async with PrefectClient(api=api_url) as client:
        fr = await client.read_flow_run(flow_run_id)
        return fr.state.type.value if fr.state else "NONE"
