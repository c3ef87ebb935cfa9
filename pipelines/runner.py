"""Runners: push tasks through a list of stages, in-process or on Ray Data.

Both runners share one contract (``apply_stage``), so a test on the sequential
runner says what the Ray runner does:

* ``process()`` returns a task, a list of tasks (fan-out) or None (drop).
* A task whose ``error`` attribute is set is forwarded unchanged: later stages
  never see it in ``process()``.
* If ``process()`` raises on a task that has an ``error`` attribute, the runner
  sets ``task.error = "<stage.name>: <ExceptionType>: <message>"`` and forwards
  the task; the run goes on. A task without an ``error`` attribute cannot carry
  the failure, so the exception propagates and the run fails.
* Either way the traceback is logged by the driver (logger ``pipelines.runner``,
  at WARNING): a Ray worker sends it back beside the task, since worker logs
  are not forwarded (``log_to_driver=False``). Inside a Prefect task the record
  reaches the task run's logs (``vidloom/logs.py`` adds ``pipelines`` to
  Prefect's extra loggers).

Ray mapping (docs/architecture.md "Prefect x Ray"): tasks travel as pickled bytes in a
single binary column, one ``map_batches`` per stage. A stage that declares
``resources.actors`` runs on an autoscaling actor pool, each actor calling
``setup()`` once; other stages run as Ray tasks with ``num_cpus``/``num_gpus``
and call ``setup()`` lazily, once per worker process. Consecutive light stages share
one operator (fused, like Ray Data's own operator fusion). Sizes, CPUs and fusion come
from ``pipelines/ray_plan.py``.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import os
import pickle
import traceback
from collections.abc import Generator, Iterable, Iterator
from typing import Any, ClassVar, Protocol, TypeVar

import cloudpickle
import pyarrow as pa
from tqdm import tqdm

from pipelines.config import RuntimeConfig
from pipelines.stage import Stage

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_INPUT_BLOCKS = 1000  # one block per input item up to this, so a few long items still spread out
CALLS_PER_CPU = 32  # a window is cut into at least this many calls per CPU (load balance) ...
MAX_ROWS_PER_CALL = 16  # ... of at most this many tasks (each call costs Ray a few ms of CPU)
WINDOW = 2000  # tasks per Ray Data execution: what the driver holds at most


class Runner(Protocol):
    def run(
        self, stages: list[Stage[Any, Any]], tasks: Iterable[Any], progress: bool = True, desc: str = ""
    ) -> Generator[Any, None, None]:
        """Yield the output tasks of the last stage (in any order)."""
        ...

    def shutdown(self) -> None: ...


Failures = list[tuple[Any, str]]  # (the task that recorded an error, the traceback's text)


def apply_stage(stage: Stage[Any, Any], task: Any, failures: Failures | None = None) -> list[Any]:
    """Run one stage on one task with the shared fan-out, drop and error semantics.

    failures: where a Ray worker collects (task, traceback) of the errors it records, to send
        them to the driver; None logs them here (the sequential runner runs in the driver).
    """
    if getattr(task, "error", None):
        return [task]
    try:
        out = stage.process(task)
    except Exception as e:
        if not hasattr(task, "error"):
            raise
        _record_failure(f"{stage.name} failed on {task!r}", task, failures)
        task.error = f"{stage.name}: {type(e).__name__}: {e}"
        return [task]
    if out is None:
        return []
    return out if isinstance(out, list) else [out]


def apply_batch(stage: Stage[Any, Any], tasks: list[Any], failures: Failures | None = None) -> list[Any]:
    """Run one stage on a batch: ``process_batch`` when the stage defines one (I/O stages that
    overlap requests), else ``apply_stage`` per task. Errored tasks pass through untouched; if
    ``process_batch`` raises, every task of the batch records the error."""
    if type(stage).process_batch is Stage.process_batch:
        return [out for task in tasks for out in apply_stage(stage, task, failures)]
    todo = [t for t in tasks if not getattr(t, "error", None)]
    done = [t for t in tasks if getattr(t, "error", None)]
    if not todo:
        return done
    try:
        return done + list(stage.process_batch(todo))
    except Exception as e:
        _record_failure(f"{stage.name} failed on a batch of {len(todo)}", todo[0], failures)
        for t in todo:
            t.error = f"{stage.name}: {type(e).__name__}: {e}"
        return done + todo


def _record_failure(what: str, task: Any, failures: Failures | None) -> None:
    """Log the exception being handled with its traceback, or queue it for the driver."""
    log.warning("%s", what, exc_info=True)  # in a Ray worker: that worker's log file
    if failures is not None:
        failures.append((task, f"{what}\n{traceback.format_exc()}"))


def _batched(stage: Stage[Any, Any], tasks: Iterator[Any], bar: tqdm) -> Iterator[Any]:
    """A lazy stream through one stage, ``stage.batch_size`` tasks at a time."""
    size = max(1, stage.batch_size)
    while True:
        chunk = list(itertools.islice(tasks, size))
        if not chunk:
            return
        outs = apply_batch(stage, chunk)
        bar.update(len(chunk))
        yield from outs


class SequentialRunner:
    """Runs every stage in this process, depth-first; used by tests and small jobs."""

    def run(
        self, stages: list[Stage[Any, Any]], tasks: Iterable[Any], progress: bool = True, desc: str = ""
    ) -> Generator[Any, None, None]:
        for stage in stages:
            stage.setup()
        bars = [
            tqdm(desc=f"{desc} {s.name}".strip(), unit="task", position=i, disable=not progress, leave=False)
            for i, s in enumerate(stages)
        ]
        try:
            # A chain of lazy generators: with batch_size 1 each task goes depth-first through
            # every stage before the next one is read.
            stream: Iterator[Any] = iter(tasks)
            for stage, bar in zip(stages, bars, strict=True):
                stream = _batched(stage, stream, bar)
            yield from stream
        finally:
            for bar in bars:
                bar.close()

    def shutdown(self) -> None:
        pass


def _process_table(stages: list[Stage[Any, Any]], batch: pa.Table) -> pa.Table:
    """One Ray Data batch through one stage or a fused run of them (``pipelines/ray_plan.py``
    rule 5), each stage taking ``batch_size`` tasks at a time as in the sequential runner.
    Output rows: ``task`` (pickled) and ``traceback`` (the text of the error a stage recorded on
    that task, else null), carried to the driver to log. An errored task is forwarded as the same
    object, so an earlier stage's traceback follows it."""
    tasks = [pickle.loads(blob) for blob in batch.column("task").to_pylist()]
    before = batch.column("traceback").to_pylist() if "traceback" in batch.column_names else []
    failures: Failures = [(t, tb) for t, tb in zip(tasks, before, strict=False) if tb]
    for stage in stages:
        size = max(1, stage.batch_size)
        chunks = (tasks[i:i + size] for i in range(0, len(tasks), size))
        tasks = [out for chunk in chunks for out in apply_batch(stage, chunk, failures)]
    tbs = {id(t): tb for t, tb in failures}
    return pa.table({"task": pa.array([cloudpickle.dumps(o) for o in tasks], type=pa.binary()),
                     "traceback": pa.array([tbs.get(id(o)) for o in tasks], type=pa.string())})


@functools.lru_cache(maxsize=16)
def _ready_stages(stages_blob: bytes) -> list[Stage[Any, Any]]:
    """The unpickled, set-up stages, cached per worker process: Ray Data deserializes a
    function UDF for every task, and ``setup()`` should not run once per block."""
    stages: list[Stage[Any, Any]] = pickle.loads(stages_blob)
    for stage in stages:
        stage.setup()
    return stages


class _StageTaskFn:
    """Stateless stages as a Ray Data function; ``setup()`` once per worker process."""

    stages_blob: ClassVar[bytes]

    def __call__(self, batch: pa.Table) -> pa.Table:
        return _process_table(_ready_stages(self.stages_blob), batch)


class _StageActor:
    """Stages with a model as a Ray Data callable class: one ``setup()`` each per actor."""

    stages_blob: ClassVar[bytes]

    def __init__(self) -> None:
        self.stages: list[Stage[Any, Any]] = pickle.loads(self.stages_blob)
        for stage in self.stages:
            stage.setup()

    def __call__(self, batch: pa.Table) -> pa.Table:
        return _process_table(self.stages, batch)


def _bind(base: type[T], stages: list[Stage[Any, Any]]) -> type[T]:
    """A subclass of ``base`` carrying the stages, named after them (Ray shows the name:
    ``QualityScorer+MotionScorer+...`` for a fused run).

    The stages travel as cloudpickle bytes in a class attribute, like the tasks: Ray's
    own pickler never imports their modules, and the actor has no constructor arguments
    to keep alive in the object store.
    """
    name = "+".join(type(s).__name__ for s in stages)
    return type(name, (base,), {"stages_blob": cloudpickle.dumps(stages)})


def start_local_ray(num_cpus: int | None) -> None:
    """A local Ray cluster for this run: ``num_cpus`` CPUs (None = all), no dashboard, workers at
    the driver's priority. Ray starts its workers at nice 15 by default; a curation's workers
    are its work, and at nice 15 any other process on the machine (a test suite, a second job)
    takes their cores while the driver, at nice 0, waits on them. Measured on this 2-core machine
    beside other load: bench/README.md "Throughput on real footage"."""
    import ray

    ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, configure_logging=False,
             _system_config={"worker_niceness": 0})


def rows_per_call(n_tasks: int, cpus: float) -> int:
    """Tasks per Ray Data call for a window of ``n_tasks``: one while there are few (33 videos
    on 2 CPUs: one video per call, so long ones spread out), more when there are many (260 clips:
    4 per call), so Ray's per-call cost (pickling, the object store, scheduling) stays small
    beside the work; at least ``CALLS_PER_CPU`` calls per CPU remain to balance the load."""
    return max(1, min(MAX_ROWS_PER_CALL, n_tasks // max(1, round(cpus * CALLS_PER_CPU))))


class RayRunner:
    """Runs the stages as one streaming Ray Data pipeline.

    Placement (``pipelines/ray_plan.py``): model stages on autoscaling actor pools sized from
    the cluster, task stages on every free CPU, nothing larger than the largest node, and
    requests scaled down when the cluster is too small for every stage to run at once.

    Tasks are fed in windows of ``window`` items, one Ray Data execution each, so the driver
    never holds more than one window of pickled tasks whatever the number of videos or clips
    (model actors are set up again per window: a few seconds per ``window`` items).

    Args:
        address: Ray cluster to connect to; defaults to ``RAY_ADDRESS``, else a local
            ``ray.init``.
        num_cpus: CPUs for a local cluster (None = all).
        max_actors: the largest pool of each model stage, by stage name (``runtime.actors``).
        min_actors: the smallest pool, by stage name (``runtime.min_actors``; default 1).
        window: tasks per Ray Data execution (``runtime.window``).
        fuse: run consecutive light stages in one operator (``pipelines/ray_plan.py`` rule 5);
            False gives every stage an operator of its own.
    """

    def __init__(
        self,
        address: str | None = None,
        num_cpus: int | None = None,
        max_actors: dict[str, int] | None = None,
        window: int = WINDOW,
        min_actors: dict[str, int] | None = None,
        fuse: bool = True,
    ) -> None:
        self.fuse = fuse
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self.num_cpus = num_cpus
        self.max_actors = dict(max_actors or {})
        self.min_actors = dict(min_actors or {})
        self.window = max(1, window)
        self._owns_ray = False

    def _init(self) -> None:
        import ray

        if ray.is_initialized():
            return
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        if self.address:
            ray.init(address=self.address, log_to_driver=False, configure_logging=False)
        else:
            start_local_ray(self.num_cpus)
        self._owns_ray = True

    def run(
        self, stages: list[Stage[Any, Any]], tasks: Iterable[Any], progress: bool = True, desc: str = ""
    ) -> Generator[Any, None, None]:
        stream = iter(tasks)
        while True:
            blobs = [{"task": cloudpickle.dumps(t)} for t in itertools.islice(stream, self.window)]
            if not blobs:
                return
            yield from self._run_window(stages, blobs, progress)

    def _run_window(
        self, stages: list[Stage[Any, Any]], blobs: list[dict[str, bytes]], progress: bool
    ) -> Generator[Any, None, None]:
        import ray.data

        from pipelines.ray_plan import cluster_of_current_ray, plan

        self._init()
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = progress
        ctx.enable_operator_progress_bars = progress
        ctx.print_on_execution_start = progress
        ctx.enable_auto_log_stats = False
        ctx.execution_options.verbose_progress = False
        cluster = cluster_of_current_ray()
        rows = rows_per_call(len(blobs), cluster.cpus)
        ds: ray.data.Dataset = ray.data.from_items(
            blobs, override_num_blocks=min(math.ceil(len(blobs) / rows), MAX_INPUT_BLOCKS)
        )
        del blobs
        placements = plan(stages, cluster, self.max_actors, self.min_actors, fuse=self.fuse)
        for place in placements:
            members = [stages[i] for i in place.stages]
            fn: Any
            if place.pool:  # a model stage: an autoscaling pool, setup() once per actor
                lo, hi = place.pool
                fn = _bind(_StageActor, members)
                compute = ray.data.ActorPoolStrategy(min_size=lo, max_size=hi)
            else:  # stateless: plain Ray tasks, as many as the resources allow
                fn, compute = _bind(_StageTaskFn, members)(), None
            ds = ds.map_batches(
                fn,
                compute=compute,
                batch_size=max(rows, *(s.batch_size for s in members)),
                batch_format="pyarrow",
                num_cpus=place.num_cpus,
                num_gpus=place.num_gpus or None,
            )
        # Without progress, also hush Ray Data's "bars disabled" / "execution finished" lines.
        data_log = logging.getLogger("ray.data")
        level = data_log.level
        if not progress:
            data_log.setLevel(logging.ERROR)
        rows = iter(ds.iter_rows())
        try:
            for row in rows:
                if row.get("traceback"):  # an error a worker recorded: its traceback, here
                    log.warning("(in a Ray worker) %s", row["traceback"])
                yield pickle.loads(row["task"])
        finally:
            # Closed early (the caller failed or stopped): closing the iterator shuts the
            # streaming executor down instead of leaving the pipeline running unread.
            close = getattr(rows, "close", None)
            if close is not None:
                close()
            data_log.setLevel(level)

    def shutdown(self) -> None:
        """Disconnect from (or stop) the Ray cluster this runner started."""
        import ray

        if self._owns_ray and ray.is_initialized():
            ray.shutdown()
        self._owns_ray = False


def make_runner(runtime_cfg: RuntimeConfig) -> Runner:
    if runtime_cfg.runner == "sequential":
        return SequentialRunner()
    if runtime_cfg.runner == "ray":
        return RayRunner(address=runtime_cfg.ray_address, num_cpus=runtime_cfg.num_cpus,
                         max_actors=runtime_cfg.actors, window=runtime_cfg.window,
                         min_actors=runtime_cfg.min_actors)
    raise ValueError(f"unknown runner {runtime_cfg.runner!r}; choose 'ray' or 'sequential'")
