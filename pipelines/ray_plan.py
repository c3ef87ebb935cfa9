"""How each stage of a Ray Data pipeline is placed on the cluster (a pure function, tested on CPU).

Rules, in order:

1. **Nothing larger than the largest node.** A worker's CPUs are capped to the CPUs of the
   biggest node, or Ray could never place it (a 2-CPU decode on a cluster of 1-CPU nodes).
2. **Every stage can make progress at once.** Ray Data keeps an actor pool's actors (and their
   CPUs) for the whole pipeline, so the minimum pools plus one worker of every task stage must
   fit in the cluster together; if they do not, every request is scaled down by the same factor
   (Ray accepts fractional CPUs) and snapped down to a whole fraction of a node; on a single
   node the snapped requests then grow back while they still fit. Without this a 1-CPU cluster
   deadlocks: the model actor holds the only CPU and the decode task before it can never start.
3. **Model stages fill the cluster.** A stage that declares ``actors`` runs on an autoscaling
   pool, ``ActorPoolStrategy(min_size=1, max_size=N)``. N defaults to as many actors as the
   cluster has room for (its GPUs for a GPU stage on a cluster with GPUs, else its CPUs), and is
   set per stage with ``runtime.actors.<stage name>`` (e.g. ``runtime.actors.shot_split=4``);
   ``runtime.min_actors.<stage name>`` raises the minimum (the actors kept from the start).
4. **GPUs when present.** A stage that declares GPUs, or whose ``device`` setting is ``cuda``
   (``split.device``, ``scores.aesthetic.device``), gets them on a cluster that has GPUs, one
   actor per GPU by default; elsewhere no GPU is requested.
5. **Light neighbours share a worker** (``fuse=True``, what the Ray runner uses). Consecutive
   stages that need no GPU and ask for the same whole number of CPUs (``ceil``: 0.25, 0.5 and 1
   are all "one core") run one after another in one Ray Data operator, like Ray Data's own
   operator fusion: the score step's six stages become one operator instead of six, each task
   crosses the object store once instead of six times (on the dev set the six-operator score
   step spent more CPU in Ray's hand-offs than in the scorers). The fused worker asks for the
   largest member's CPUs; it is an actor pool when any member is a model stage (every member's
   ``setup()`` once per actor), with the tightest ``runtime.actors`` and the largest
   ``runtime.min_actors`` of its model stages. A GPU stage, or a stage of another CPU size (the
   2-CPU decode before the 1-CPU shot split), keeps an operator of its own.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pipelines.stage import Resources, Stage


@dataclass(frozen=True)
class Cluster:
    """What placement needs to know of a Ray cluster."""

    cpus: float  # total
    gpus: float = 0.0
    node_cpus: float = 0.0  # the largest node's CPUs (0: as many as ``cpus``)

    @property
    def largest_node(self) -> float:
        return self.node_cpus or self.cpus


@dataclass(frozen=True)
class Placement:
    """One Ray Data operator's request: per-worker CPUs/GPUs, the pool bounds of a model stage, and
    the stages its workers run, in order (indices into the planned list; one unless fused)."""

    num_cpus: float
    num_gpus: float
    pool: tuple[int, int] | None  # (min, max) actors; None: stateless Ray tasks
    stages: tuple[int, ...] = ()


def fused_groups(wants: Sequence[Resources], node: float, has_gpus: bool) -> list[tuple[int, ...]]:
    """Runs of consecutive stages that share one operator (rule 5): no GPU on this cluster and the
    same whole number of CPUs (capped to the largest node)."""
    def size(r: Resources) -> int:
        return math.ceil(min(r.cpus, node) - 1e-9)

    groups: list[list[int]] = []
    for i, r in enumerate(wants):
        prev = wants[i - 1] if i else None
        if (prev is not None and not (has_gpus and (r.gpus or prev.gpus)) and size(r) == size(prev)):
            groups[-1].append(i)
        else:
            groups.append([i])
    return [tuple(g) for g in groups]


def plan(
    stages: Sequence[Stage],
    cluster: Cluster,
    max_actors: Mapping[str, int] | None = None,
    min_actors: Mapping[str, int] | None = None,
    fuse: bool = False,
) -> list[Placement]:
    """The placement of each stage on ``cluster`` (see the module docstring): one Placement per
    stage, or with ``fuse`` one per operator (its ``stages`` say which)."""
    max_actors, min_actors = max_actors or {}, min_actors or {}
    node = max(cluster.largest_node, 0.01)
    each = [s.requested() for s in stages]
    if fuse:
        groups = fused_groups(each, node, cluster.gpus > 0)
    else:
        groups = [(i,) for i in range(len(stages))]
    wants = [Resources(cpus=max(each[i].cpus for i in g), gpus=max(each[i].gpus for i in g),
                       actors=any(each[i].actors for i in g)) for g in groups]
    models = [[stages[i].name for i in g if each[i].actors] for g in groups]
    cpus = [min(r.cpus, node) for r in wants]
    gpus = [r.gpus if cluster.gpus > 0 else 0.0 for r in wants]
    pools = [bool(r.actors) for r in wants]
    lows = [max([1] + [int(min_actors[n]) for n in names if n in min_actors]) for names in models]
    # the footprint that must fit at once: every pool at its minimum, one worker of every task stage
    demand = sum(c * n for c, n in zip(cpus, lows, strict=True))
    if cluster.cpus > 0 and demand > cluster.cpus:
        factor = cluster.cpus / demand
        # snapped down to a whole fraction of a node (1/2, 1/3, ...), so the workers tile nodes
        scaled = [node / math.ceil(node / max(c * factor, 0.01)) for c in cpus]
        if cluster.cpus <= node:  # one node: the snapped requests grow back while they fit
            scaled = _grow_back(scaled, cpus, lows, node, cluster.cpus)
        cpus = scaled
    placements = []
    for group, names, c, g, is_pool, low in zip(groups, models, cpus, gpus, pools, lows, strict=True):
        if not is_pool:
            placements.append(Placement(c, g, None, group))
            continue
        configured = [int(max_actors[n]) for n in names if n in max_actors]
        if configured:
            top = min(configured)
        elif g > 0:
            top = int(cluster.gpus // g)
        else:
            top = int(cluster.cpus // c) if c > 0 else 1
        placements.append(Placement(c, g, (low, max(low, top)), group))
    return placements


def _grow_back(
    cpus: list[float], wants: list[float], lows: list[int], node: float, total: float
) -> list[float]:
    """Raise snapped requests, a node fraction at a time, toward what the stages ask, while every
    pool's minimum plus one worker of each task stage still fits ``total`` (one node only: on
    several nodes the sum fitting does not mean the workers can be packed). On 2 CPUs the 2-CPU
    decode and the 1-CPU shot split, snapped to 1 and 2/3, become 1 and 1: two 1-thread actors at
    most, not three on two cores."""
    cpus = list(cpus)
    grew = True
    while grew:
        grew = False
        for i, (c, want) in enumerate(zip(cpus, wants, strict=True)):
            bigger = node / max(1, round(node / c) - 1)
            footprint = sum(x * n for x, n in zip(cpus, lows, strict=True)) + (bigger - c) * lows[i]
            if bigger <= want + 1e-9 and bigger > c and footprint <= total + 1e-9:
                cpus[i], grew = bigger, True
    return cpus


def cluster_of_current_ray() -> Cluster:
    """The connected Ray cluster's totals and its largest node (alive nodes only)."""
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    node_cpus = max((n.get("Resources", {}).get("CPU", 0.0) for n in nodes), default=0.0)
    res = ray.cluster_resources()
    return Cluster(cpus=res.get("CPU", 0.0), gpus=res.get("GPU", 0.0), node_cpus=node_cpus)
