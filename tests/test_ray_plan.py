"""Placement of stages on a Ray cluster (pipelines/ray_plan.py): pure, no Ray needed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from pipelines.config_check import DICT_KEYS
from pipelines.ray_plan import Cluster, plan
from pipelines.stage import Resources, Stage


@dataclass
class Task2(Stage[int, int]):
    name: ClassVar[str] = "decode"
    resources: ClassVar[Resources] = Resources(cpus=2.0)

    def process(self, task: int) -> int:
        return task


@dataclass
class Model(Stage[int, int]):
    name: ClassVar[str] = "shot_split"
    resources: ClassVar[Resources] = Resources(cpus=1.0, actors=True)

    def process(self, task: int) -> int:
        return task


@dataclass
class GpuModel(Model):
    name: ClassVar[str] = "aesthetic"
    resources: ClassVar[Resources] = Resources(cpus=1.0, gpus=1.0, actors=True)


def test_one_cpu_cluster_scales_every_request_to_fit_together() -> None:
    # the 1-CPU deadlock: a 2-CPU decode could never run beside a 1-CPU model actor
    decode, model = plan([Task2(), Model()], Cluster(cpus=1, node_cpus=1))
    assert (decode.num_cpus, model.num_cpus) == (0.5, 0.5)
    assert model.pool == (1, 2)  # room for two actors of the scaled size


def test_no_request_exceeds_the_largest_node() -> None:
    decode, model = plan([Task2(), Model()], Cluster(cpus=2, node_cpus=1))  # two 1-CPU nodes
    assert decode.num_cpus <= 1.0 and model.num_cpus <= 1.0
    assert model.pool == (1, 2)  # one actor per node


def test_a_minimum_pool_still_leaves_room_for_the_task_stage() -> None:
    # two 1-CPU nodes, two actors kept from the start: each worker is half a node, so an actor
    # and a decode task share each node
    decode, model = plan([Task2(), Model()], Cluster(cpus=2, node_cpus=1), min_actors={"shot_split": 2})
    assert (decode.num_cpus, model.num_cpus) == (0.5, 0.5)
    assert model.pool == (2, 4)


def test_model_pools_fill_a_big_cluster_and_obey_the_config() -> None:
    decode, model = plan([Task2(), Model()], Cluster(cpus=64, node_cpus=16))
    assert (decode.num_cpus, model.num_cpus) == (2.0, 1.0)  # what the stages ask for
    assert model.pool == (1, 64)
    assert decode.pool is None
    _, capped = plan([Task2(), Model()], Cluster(cpus=64, node_cpus=16), {"shot_split": 4})
    assert capped.pool == (1, 4)


def test_gpu_stages_take_gpus_only_where_there_are_some() -> None:
    on_cpu = plan([GpuModel()], Cluster(cpus=8))[0]
    assert on_cpu.num_gpus == 0.0 and on_cpu.pool == (1, 8)
    on_gpu = plan([GpuModel()], Cluster(cpus=8, gpus=2))[0]
    assert on_gpu.num_gpus == 1.0 and on_gpu.pool == (1, 2)  # one actor per GPU


def test_the_config_names_exactly_the_pool_stages() -> None:
    from pipelines.stages.aesthetic_scorer import AestheticScorer
    from pipelines.stages.caption import CaptionStage
    from pipelines.stages.shot_split import ShotSplit
    from pipelines.stages.text_scorer import OverlayTextScorer

    stages = (AestheticScorer, CaptionStage, ShotSplit, OverlayTextScorer)
    pools = {s.name for s in stages if s.resources.actors}
    assert pools == set(DICT_KEYS["runtime.actors"]) == set(DICT_KEYS["runtime.min_actors"])


def test_a_stage_configured_for_cuda_asks_for_a_gpu() -> None:
    from pipelines.stages.shot_split import ShotSplit

    on_gpu = plan([ShotSplit(device="cuda")], Cluster(cpus=16, gpus=4))[0]
    assert on_gpu.num_gpus == 1.0 and on_gpu.pool == (1, 4)
    on_cpu = plan([ShotSplit(device="cpu")], Cluster(cpus=16, gpus=4))[0]
    assert on_cpu.num_gpus == 0.0 and on_cpu.pool == (1, 16)
