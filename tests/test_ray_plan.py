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


def test_signals_captions_run_as_tasks_vlm_captions_on_a_pool() -> None:
    from pipelines.stages.caption import CaptionStage

    signals = plan([CaptionStage(backend="signals")], Cluster(cpus=4))[0]
    vlm = plan([CaptionStage(backend="vllm")], Cluster(cpus=4))[0]
    assert (signals.pool, signals.num_cpus) == (None, 1.0)
    assert (vlm.pool, vlm.num_cpus) == ((1, 4), 1.0)


@dataclass
class Light(Stage[int, int]):
    name: ClassVar[str] = "quality"
    resources: ClassVar[Resources] = Resources(cpus=0.25)

    def process(self, task: int) -> int:
        return task


@dataclass
class Ocr(Model):
    name: ClassVar[str] = "overlay_text"


def test_light_neighbours_share_one_operator() -> None:
    # the score step: cheap scorers then a model stage, all "one core": one operator, an actor pool
    score = [Light(), Light(), Ocr()]
    (fused,) = plan(score, Cluster(cpus=2), fuse=True)
    assert fused.stages == (0, 1, 2)
    assert (fused.num_cpus, fused.pool) == (1.0, (1, 2))  # the largest member's CPUs, two actors
    # unfused: one operator per stage, as before
    assert [p.stages for p in plan(score, Cluster(cpus=2))] == [(0,), (1,), (2,)]
    # the 2-CPU decode keeps its own operator before the 1-CPU model stage
    decode, model = plan([Task2(), Model()], Cluster(cpus=64, node_cpus=16), fuse=True)
    assert (decode.stages, model.stages) == ((0,), (1,))
    assert decode.pool is None and model.pool == (1, 64)
    # ... but on 1-CPU nodes both are "one core" (capped to the node), so they share one
    (both,) = plan([Task2(), Model()], Cluster(cpus=2, node_cpus=1), fuse=True)
    assert both.stages == (0, 1) and both.num_cpus == 1.0 and both.pool == (1, 2)


def test_a_gpu_stage_is_never_fused_on_a_gpu_cluster() -> None:
    stages = [Light(), GpuModel(), Light()]
    on_gpu = plan(stages, Cluster(cpus=8, gpus=2), fuse=True)
    assert [p.stages for p in on_gpu] == [(0,), (1,), (2,)]
    assert on_gpu[1].num_gpus == 1.0 and on_gpu[1].pool == (1, 2)
    (on_cpu,) = plan(stages, Cluster(cpus=8), fuse=True)  # no GPU anywhere: one CPU operator
    assert on_cpu.stages == (0, 1, 2) and on_cpu.num_gpus == 0.0 and on_cpu.pool == (1, 8)


def test_a_fused_pool_takes_its_model_stages_bounds() -> None:
    stages = [Light(), Model(), Ocr()]
    (p,) = plan(stages, Cluster(cpus=16), {"overlay_text": 3, "shot_split": 5}, {"shot_split": 2}, fuse=True)
    assert p.pool == (2, 3)  # the tightest maximum, the largest minimum
    (q,) = plan([Light(), Light()], Cluster(cpus=16), {"quality": 1}, fuse=True)
    assert q.pool is None  # no model stage: stateless tasks, runtime.actors does not apply


def test_on_one_two_cpu_node_the_split_gets_one_cpu_per_worker_and_two_actors_at_most() -> None:
    # scaled to fit (2-CPU decode + 1-CPU actor > 2), then grown back while the sum still fits:
    # one decode beside one 1-CPU actor, or two actors, never three 1-thread actors on two cores
    decode, model = plan([Task2(), Model()], Cluster(cpus=2))
    assert (decode.num_cpus, model.num_cpus) == (1.0, 1.0)
    assert model.pool == (1, 2)
    # several nodes: no growing back (the sum fitting does not mean the workers pack onto nodes)
    decode, model = plan([Task2(), Model()], Cluster(cpus=2, node_cpus=1), min_actors={"shot_split": 2})
    assert (decode.num_cpus, model.num_cpus) == (0.5, 0.5)
