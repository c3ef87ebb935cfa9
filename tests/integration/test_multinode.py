"""A real multi-node Ray cluster on one machine: 1-CPU nodes run the whole curation, the model stage
runs actors on both nodes, and the outputs are byte-identical to the sequential runner's.

The nodes are ``ray start --block`` processes in their own process groups, so the teardown stops
exactly them (never ``ray stop``, which would stop every Ray on the machine), also when a test
fails.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from curation.db import Catalog
from pipelines.config import load_config
from pipelines.curate import run_curate

SUBSET = ("demo_cuts_640x360.mp4", "demo_text_en_640x360.mp4")
RAY = str(Path(sys.executable).with_name("ray"))
pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalCluster:
    """Ray nodes started with ``ray start --block``, each in its own process group."""

    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="vr", dir="/tmp"))  # Ray's socket paths must be short
        self.port = free_port()
        self.env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
        self.env.pop("RAY_ADDRESS", None)
        self.nodes: list[subprocess.Popen[bytes]] = []

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start_head(self, cpus: int) -> None:
        self._start(["--head", f"--port={self.port}", f"--temp-dir={self.tmp}", "--include-dashboard=false"],
                    cpus, expect=1)

    def add_node(self, cpus: int) -> None:
        self._start([f"--address={self.address}"], cpus, expect=len(self.nodes) + 1)

    def _start(self, args: list[str], cpus: int, expect: int) -> None:
        cmd = [RAY, "start", "--block", f"--num-cpus={cpus}", "--num-gpus=0", *args]
        log = open(self.tmp / f"node{len(self.nodes)}.log", "wb")  # noqa: SIM115 - lives with the node
        self.nodes.append(subprocess.Popen(cmd, env=self.env, stdout=log, stderr=log, start_new_session=True))
        deadline = time.monotonic() + 120
        while self.alive_nodes() < expect:
            if time.monotonic() > deadline or self.nodes[-1].poll() is not None:
                raise RuntimeError(f"ray node did not start: {(self.tmp / 'node0.log').read_text()[-2000:]}")
            time.sleep(1)

    def state(self, code: str) -> Any:
        """Run ``code`` (which prints JSON) against the cluster in a fresh interpreter."""
        script = f"import json, ray\nray.init(address={self.address!r}, log_to_driver=False)\n{code}"
        res = subprocess.run([sys.executable, "-c", script], env=self.env, capture_output=True, text=True,
                             timeout=120)
        if res.returncode != 0:
            raise RuntimeError(res.stderr[-2000:])
        return json.loads(res.stdout.strip().splitlines()[-1])

    def alive_nodes(self) -> int:
        try:
            return int(self.state("print(json.dumps(sum(n['Alive'] for n in ray.nodes())))"))
        except (RuntimeError, subprocess.TimeoutExpired, ValueError, IndexError):
            return 0

    def actors_by_node(self, name: str) -> dict[str, int]:
        """Actors whose class name mentions ``name`` (Ray Data wraps a stage in a map worker), per
        node id, dead ones included: the GCS actor table (the state API's server needs the
        dashboard's packages, which vidloom does not install)."""
        code = ("from ray._private.state import actors\n"
                "print(json.dumps([a['Address']['NodeID'] for a in actors().values() "
                f"if {name!r} in a['ActorClassName']]))")
        counts: dict[str, int] = {}
        for node in self.state(code):
            counts[node] = counts.get(node, 0) + 1
        return counts

    def stop(self) -> None:
        for p in reversed(self.nodes):
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(p.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    p.wait(timeout=20)
                    break
                except subprocess.TimeoutExpired:
                    continue
        shutil.rmtree(self.tmp, ignore_errors=True)


@pytest.fixture()
def cluster() -> Iterator[LocalCluster]:
    c = LocalCluster()
    try:
        yield c
    finally:
        c.stop()


def curate_cli(inputs: Path, out: Path, address: str, env: dict[str, str], *sets: str) -> None:
    args = [sys.executable, "-m", "vidloom.cli", "curate", str(inputs), "--out", str(out), "--preset", "tiny",
            "--no-prefect", "--quiet", "--ray-address", address]
    for s in sets:
        args += ["--set", s]
    res = subprocess.run(args, env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-4000:]


def outputs(out: Path) -> dict[str, Any]:
    """What must not depend on the runner: every shard's bytes and the decision columns of every clip."""
    shards = {p.relative_to(out / "shards").as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
              for p in sorted((out / "shards").rglob("*.tar"))}
    with Catalog(out / "catalog.duckdb", read_only=True) as cat:
        _, clips = cat.query("SELECT clip_id, status, reject_reason, start_frame, end_frame, bytes, dup_of "
                             "FROM clips ORDER BY clip_id")
        _, shots = cat.query("SELECT video_id, shot_index, start_frame, end_frame FROM shots ORDER BY 1, 2")
    return {"shards": shards, "clips": clips, "shots": shots}


def test_one_cpu_nodes_run_everything_with_actors_on_both(
    cluster: LocalCluster, demo_inputs: Any, tmp_path: Path
) -> None:
    inputs = demo_inputs(SUBSET)
    cfg = load_config("tiny")
    cfg.runtime.runner, cfg.runtime.quiet = "sequential", True
    run_curate([str(inputs)], tmp_path / "sequential", cfg)
    reference = outputs(tmp_path / "sequential")
    assert reference["shards"]

    # a cluster of one 1-CPU node: every stage asks for more than 1 CPU in total, none may hang
    cluster.start_head(cpus=1)
    curate_cli(inputs, tmp_path / "one_cpu", cluster.address, cluster.env)
    assert outputs(tmp_path / "one_cpu") == reference

    # a second 1-CPU node: the shot-split pool keeps two actors, one on each node
    cluster.add_node(cpus=1)
    before = cluster.actors_by_node("ShotSplit")
    curate_cli(inputs, tmp_path / "two_nodes", cluster.address, cluster.env,
               "runtime.min_actors.shot_split=2")
    after = cluster.actors_by_node("ShotSplit")
    new = {node: after[node] - before.get(node, 0) for node in after if after[node] > before.get(node, 0)}
    assert len(new) == 2, f"ShotSplit actors per node: before {before}, after {after}"
    assert outputs(tmp_path / "two_nodes") == reference
