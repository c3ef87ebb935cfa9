"""Both runners push real stages through the same fan-out, drop and error contract."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

from pipelines.config import RuntimeConfig
from pipelines.runner import (
    MAX_ROWS_PER_CALL,
    RayRunner,
    Runner,
    SequentialRunner,
    make_runner,
    rows_per_call,
)
from pipelines.stage import Resources, Stage

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")


@dataclass(slots=True)
class Num:
    value: int
    trail: str = ""
    error: str | None = None


@dataclass
class Square(Stage[Num, Num]):
    name: ClassVar[str] = "square"

    def process(self, task: Num) -> Num:
        task.value = task.value**2
        task.trail += "s"
        return task


@dataclass
class FanOut(Stage[Num, Num]):
    """n -> n copies of n (0 drops the task)."""

    name: ClassVar[str] = "fan_out"
    batch_size: ClassVar[int] = 3

    def process(self, task: Num) -> list[Num] | None:
        if task.value == 0:
            return None
        return [Num(task.value, task.trail + "f") for _ in range(task.value)]


def log_setup(log_dir: str, stage: Stage[Num, Num]) -> None:
    """Record a setup() call in a file: Ray runs stages in other processes."""
    if log_dir:
        (Path(log_dir) / f"{stage.name}-{os.getpid()}-{id(stage)}").touch()


def setup_pids(log_dir: Path, name: str) -> list[str]:
    return [p.name.split("-")[1] for p in log_dir.glob(f"{name}-*")]


@dataclass
class FailOn(Stage[Num, Num]):
    """Stateless, with a cheap setup()."""

    name: ClassVar[str] = "fail_on"
    bad: int = 9
    log_dir: str = ""

    def setup(self) -> None:
        log_setup(self.log_dir, self)

    def process(self, task: Num) -> Num:
        if task.value == self.bad:
            raise ValueError(f"bad value {task.value}")
        task.trail += "x"
        return task


@dataclass
class AddOffset(Stage[Num, Num]):
    """Stateful: ``setup()`` loads the offset (our stand-in for a model), once per actor."""

    name: ClassVar[str] = "add_offset"
    resources: ClassVar[Resources] = Resources(cpus=0.5, actors=True)
    batch_size: ClassVar[int] = 2
    offset: int = 1000
    log_dir: str = ""

    def setup(self) -> None:
        self.loaded = self.offset
        log_setup(self.log_dir, self)

    def process(self, task: Num) -> Num:
        task.value += self.loaded  # AttributeError if setup() was skipped
        task.trail += "o"
        return task


def pipeline(log_dir: str = "") -> list[Stage[Num, Num]]:
    return [FanOut(), Square(), FailOn(bad=9, log_dir=log_dir), AddOffset(log_dir=log_dir)]


def results(runner: Runner, inputs: list[int], log_dir: str = "") -> Counter[tuple[int, str, str | None]]:
    out = runner.run(pipeline(log_dir), [Num(v) for v in inputs], progress=False)
    return Counter((t.value, t.trail, t.error) for t in out)


INPUTS = [0, 1, 2, 3]
EXPECTED = Counter({
    (1001, "fsxo", None): 1,
    (1004, "fsxo", None): 2,
    # 3 fans out to three 3s, squared to 9, which fail_on rejects: kept, error set, skipped later.
    (9, "fs", "fail_on: ValueError: bad value 9"): 3,
})


@pytest.fixture(scope="module")
def ray_runner(ray_cluster: object) -> RayRunner:
    """Joins the session's local cluster (tests/conftest.py), which workers import this module on."""
    return RayRunner()


def test_sequential_fan_out_drop_and_errors(tmp_path: Path) -> None:
    assert results(SequentialRunner(), INPUTS, str(tmp_path)) == EXPECTED
    assert len(setup_pids(tmp_path, "add_offset")) == len(setup_pids(tmp_path, "fail_on")) == 1


def test_task_with_error_is_forwarded_not_processed() -> None:
    done = Num(5, error="earlier: boom")
    out = list(SequentialRunner().run([Square(), FanOut()], [done], progress=False))
    assert out == [Num(5, error="earlier: boom")]


def test_exception_without_error_attribute_propagates() -> None:
    @dataclass
    class Boom(Stage[int, int]):
        name: ClassVar[str] = "boom"

        def process(self, task: int) -> int:
            raise RuntimeError("no error field to carry this")

    with pytest.raises(RuntimeError, match="no error field"):
        list(SequentialRunner().run([Boom()], [1], progress=False))


def add_offset_actors() -> set[str]:
    """Ids of the Ray actors that ran AddOffset (Ray Data names the map worker after the stage)."""
    from ray._private.state import actors

    return {i for i, a in actors().items() if "AddOffset" in a["ActorClassName"]}


def test_ray_matches_sequential(ray_runner: RayRunner, tmp_path: Path) -> None:
    before = add_offset_actors()
    assert results(ray_runner, INPUTS, str(tmp_path)) == EXPECTED
    # At most one setup() per actor of the autoscaling pool (at most 4 actors of 0.5 CPU on 2 CPUs;
    # an actor the pool scales away before its setup ends logs none), each in a process of its
    # own, not one per batch or task ...
    actor_pids = setup_pids(tmp_path, "add_offset")
    started = add_offset_actors() - before
    assert actor_pids, "no AddOffset actor ran setup()"
    assert len(actor_pids) == len(set(actor_pids)), f"two setups in one process: {actor_pids}"
    assert len(actor_pids) <= len(started), (actor_pids, started)  # never more setups than actors
    assert len(started) <= 4, started  # the pool's bound on 2 CPUs
    # ... and for a stateless stage at most one per worker process, not one per block.
    pids = setup_pids(tmp_path, "fail_on")
    assert len(pids) >= 1 and len(pids) == len(set(pids))


def test_ray_many_items_and_empty_input(ray_runner: RayRunner) -> None:
    inputs = list(range(1, 40))
    assert results(ray_runner, inputs) == results(SequentialRunner(), inputs)
    # fed in windows of 7 tasks (six Ray Data executions): the same results
    assert results(RayRunner(window=7), inputs) == results(SequentialRunner(), inputs)
    # one operator per stage instead of the fused one (pipelines/ray_plan.py rule 5): the same
    assert results(RayRunner(fuse=False), inputs) == results(SequentialRunner(), inputs)
    assert list(ray_runner.run(pipeline(), [], progress=False)) == []


def test_ray_all_dropped(ray_runner: RayRunner) -> None:
    assert list(ray_runner.run([FanOut()], [Num(0), Num(0)], progress=False)) == []


def test_ray_exception_without_error_attribute_fails_the_run(ray_runner: RayRunner) -> None:
    @dataclass
    class Boom(Stage[int, int]):
        name: ClassVar[str] = "boom"

        def process(self, task: int) -> int:
            raise RuntimeError("no error field to carry this")

    with pytest.raises(Exception, match="no error field"):
        list(ray_runner.run([Boom()], [1, 2], progress=False))


def test_rows_per_call_grows_with_the_window_not_past_the_balance() -> None:
    assert rows_per_call(33, 2) == 1  # 33 videos on 2 CPUs: one per call
    assert rows_per_call(260, 2) == 4  # 260 clips: 65 calls, 32 per CPU
    assert rows_per_call(2000, 2) == MAX_ROWS_PER_CALL  # bounded, whatever the window
    assert rows_per_call(2000, 64) == 1  # a big cluster keeps every task its own call
    assert rows_per_call(0, 2) == 1


@dataclass
class Niceness(Stage[Num, Num]):
    name: ClassVar[str] = "niceness"

    def process(self, task: Num) -> Num:
        task.value = os.nice(0)
        return task


def test_a_local_cluster_runs_its_workers_at_the_drivers_priority(tmp_path: Path) -> None:
    """Ray's default is nice 15: beside any other load the workers would lose their cores while
    the driver waits. A fresh interpreter, since this session's cluster is already up."""
    import subprocess
    import sys

    code = ("import os\nfrom test_runner import Niceness, Num\nfrom pipelines.runner import RayRunner\n"
            "r = RayRunner(num_cpus=1)\n"
            "print([t.value for t in r.run([Niceness()], [Num(0)], progress=False)], os.nice(0))\n"
            "r.shutdown()\n")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    env.pop("RAY_ADDRESS", None)
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300,
                         cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    worker, driver = res.stdout.strip().splitlines()[-1].rsplit(" ", 1)
    assert worker == f"[{driver}]", res.stdout


def test_make_runner() -> None:
    assert isinstance(make_runner(RuntimeConfig(runner="sequential")), SequentialRunner)
    assert isinstance(make_runner(RuntimeConfig(runner="ray", num_cpus=1)), RayRunner)
    with pytest.raises(ValueError, match="unknown runner"):
        make_runner(RuntimeConfig(runner="dask"))


