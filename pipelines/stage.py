"""The stage abstraction.

A stage is one small dataclass: its fields are its configuration, ``setup()`` loads
models once per worker, ``process()`` does the work on one task and returns the
task, a list of tasks (fan-out) or None (drop). Resources are declared on the
class; the runner (sequential or Ray Data) maps them. Stages never know which
executor runs them.

The stage is its configuration (as in NeMo Curator): a configurable stage subclasses its config
section's dataclass, defined once in the stage's file (``Decode(DecodeConfig, Stage)``), and adds
only what is not configuration (where it writes, models it loads). The config tree
(pipelines/config.py) composes those sections; :meth:`Stage.from_config` builds the stage from
its section. A config field that changes how a stage runs but not what it outputs (threads, an
endpoint, retries, a threshold another step applies) is declared with :func:`unhashed`: it stays
out of ``params()``, so changing it re-runs nothing.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

from curation.schema import params_hash

In = TypeVar("In")
Out = TypeVar("Out")
T = TypeVar("T")

_UNHASHED = {"params": False}


def unhashed(default: T) -> T:
    """A config field (with ``default``) that does not change the stage's output: not in
    ``params()`` or ``params_hash()``."""
    return dataclasses.field(default=default, metadata=_UNHASHED)  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True)
class Resources:
    """What one worker of a stage needs.

    Attributes:
        cpus: CPU cores per worker (Ray ``num_cpus``).
        gpus: GPUs per worker, requested on a cluster that has GPUs (elsewhere the stage runs
            on CPU and must work there).
        actors: run on an autoscaling pool of long-lived actors (stateful stages that load a
            model in ``setup()``; pool bounds: ``pipelines/ray_plan.py``); False runs
            stateless Ray tasks.
    """

    cpus: float = 1.0
    gpus: float = 0.0
    actors: bool = False


def worker_cores() -> int:
    """The whole cores this worker may use: what Ray assigned to it (a fraction counts as one),
    else the process's CPU affinity. Ray is never imported here: a process without it is not a
    Ray worker."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        try:
            cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
        except Exception:  # noqa: BLE001 - the driver, or a Ray without a runtime context yet
            cpus = None
        if cpus:
            return max(1, int(cpus))
    return max(1, len(os.sched_getaffinity(0)))


class Stage(ABC, Generic[In, Out]):
    """Base class for every pipeline stage (subclasses are dataclasses).

    Error contract (both runners): a task whose ``error`` is set is forwarded
    without calling ``process()``. If ``process()`` raises, the runner records
    ``'<name>: <Type>: <msg>'`` in ``task.error`` and forwards the task, so one bad
    item never stops a run; the step records the error in the catalog.
    """

    name: ClassVar[str]
    version: ClassVar[int] = 1
    resources: ClassVar[Resources] = Resources()
    batch_size: ClassVar[int] = 1

    def setup(self) -> None:  # noqa: B027 - optional hook
        """Load models or open resources once per worker."""

    @abstractmethod
    def process(self, task: In) -> Out | list[Out] | None:
        """Do the work on one task."""

    def requested(self) -> Resources:
        """The resources this configured stage asks Ray for (``pipelines/ray_plan.py``); a stage
        with a ``device`` setting asks for a GPU only when that device is one."""
        if str(getattr(self, "device", "cpu")).startswith("cuda") and not self.resources.gpus:
            return dataclasses.replace(self.resources, gpus=1.0)
        return self.resources

    def process_batch(self, tasks: list[In]) -> list[Out]:
        """Optional: process ``batch_size`` tasks together (an I/O stage overlapping requests).

        Only tasks without ``error`` arrive; return every task (errors recorded on them).
        The runners call ``process()`` per task unless a subclass overrides this.
        """
        raise NotImplementedError

    @classmethod
    def config_class(cls) -> type | None:
        """The config section's dataclass this stage subclasses (None: a stage without one)."""
        return next((b for b in cls.__mro__[1:]
                     if dataclasses.is_dataclass(b) and not issubclass(b, Stage)), None)

    @classmethod
    def from_config(cls, section: Any, **extra: Any) -> Any:
        """The stage configured by ``section``, an instance of its config class: every field of
        the section is the stage's own (nothing is copied to a mirror or left at a default);
        ``extra`` sets the stage's fields that are not configuration (locations).

        Raises TypeError when ``section`` is not this stage's config."""
        base = cls.config_class()
        if base is None or not isinstance(section, base):
            raise TypeError(f"{cls.__name__} is configured by {getattr(base, '__name__', 'no section')}, "
                            f"not {type(section).__name__}")
        return cls(**{f.name: getattr(section, f.name) for f in dataclasses.fields(base)}, **extra)

    def params(self) -> dict[str, Any]:
        """The configuration that determines this stage's output (not its ``unhashed`` fields or
        those with ``compare=False``: locations, loaded models)."""
        if dataclasses.is_dataclass(self):
            return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                    if f.compare and f.metadata.get("params", True)}
        return {}

    def params_hash(self) -> str:
        return params_hash({"stage": self.name, "version": self.version, **self.params()})

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params()})"
