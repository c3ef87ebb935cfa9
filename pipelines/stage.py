"""The stage abstraction.

A stage is one small dataclass: its fields are its configuration, ``setup()`` loads
models once per worker, ``process()`` does the work on one task and returns the
task, a list of tasks (fan-out) or None (drop). Resources are declared on the
class; the runner (sequential or Ray Data) maps them. Stages never know which
executor runs them.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

from curation.schema import params_hash

In = TypeVar("In")
Out = TypeVar("Out")


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
    def from_config(cls, section: Any, **extra: Any) -> Any:
        """Build the stage from a config section: every field the two share, plus ``extra``
        (locations and other settings that are not configuration)."""
        names = {f.name for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
        shared = {k: v for k, v in dataclasses.asdict(section).items() if k in names}
        return cls(**shared, **extra)

    def params(self) -> dict[str, Any]:
        """The configuration that determines this stage's output."""
        if dataclasses.is_dataclass(self):
            return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.compare}
        return {}

    def params_hash(self) -> str:
        return params_hash({"stage": self.name, "version": self.version, **self.params()})

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params()})"
