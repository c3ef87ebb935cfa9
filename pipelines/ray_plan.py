"""How each stage of a Ray Data pipeline is placed on the cluster (a pure function, tested on CPU).

Rules, in order:

1. **Nothing larger than the largest node.** A worker's CPUs are capped to the CPUs of the
   biggest node, or Ray could never place it (a 2-CPU decode on a cluster of 1-CPU nodes).
2. **Every stage can make progress at once.** Ray Data keeps an actor pool's actors (and their
   CPUs) for the whole pipeline, so the minimum pools plus one worker of every task stage must
   fit in the cluster together; if they do not, every request is scaled down by the same factor
   (Ray accepts fractional CPUs). Without this a 1-CPU cluster deadlocks: the model actor holds
   the only CPU and the decode task before it can never start.
3. **Model stages fill the cluster.** A stage that declares ``actors`` runs on an autoscaling
   pool, ``ActorPoolStrategy(min_size=1, max_size=N)``. N defaults to as many actors as the
   cluster has room for (its GPUs for a GPU stage on a cluster with GPUs, else its CPUs), and is
   set per stage with ``runtime.actors.<stage name>`` (e.g. ``runtime.actors.shot_split=4``);
   ``runtime.min_actors.<stage name>`` raises the minimum (the actors kept from the start).
4. **GPUs when present.** A stage that declares GPUs, or whose ``device`` setting is ``cuda``
   (``split.device``, ``scores.aesthetic.device``), gets them on a cluster that has GPUs, one
   actor per GPU by default; elsewhere no GPU is requested.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pipelines.stage import Stage


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
    """One stage's Ray Data request: per-worker CPUs/GPUs, and the pool bounds of a model stage."""

    num_cpus: float
    num_gpus: float
    pool: tuple[int, int] | None  # (min, max) actors; None: stateless Ray tasks


def plan(
    stages: Sequence[Stage],
    cluster: Cluster,
    max_actors: Mapping[str, int] | None = None,
    min_actors: Mapping[str, int] | None = None,
) -> list[Placement]:
    """The placement of each stage on ``cluster`` (see the module docstring)."""
    max_actors, min_actors = max_actors or {}, min_actors or {}
    node = max(cluster.largest_node, 0.01)
    wants = [s.requested() for s in stages]
    cpus = [min(r.cpus, node) for r in wants]
    gpus = [r.gpus if cluster.gpus > 0 else 0.0 for r in wants]
    pools = [bool(r.actors) for r in wants]
    lows = [max(1, int(min_actors.get(s.name, 1))) if p else 1 for s, p in zip(stages, pools, strict=True)]
    # the footprint that must fit at once: every pool at its minimum, one worker of every task stage
    demand = sum(c * n for c, n in zip(cpus, lows, strict=True))
    if cluster.cpus > 0 and demand > cluster.cpus:
        factor = cluster.cpus / demand
        # snapped down to a whole fraction of a node (1/2, 1/3, ...), so the workers tile nodes
        cpus = [node / math.ceil(node / max(c * factor, 0.01)) for c in cpus]
    placements = []
    for s, c, g, is_pool, low in zip(stages, cpus, gpus, pools, lows, strict=True):
        if not is_pool:
            placements.append(Placement(c, g, None))
            continue
        if s.name in max_actors:
            top = int(max_actors[s.name])
        elif g > 0:
            top = int(cluster.gpus // g)
        else:
            top = int(cluster.cpus // c) if c > 0 else 1
        placements.append(Placement(c, g, (low, max(low, top))))
    return placements


def cluster_of_current_ray() -> Cluster:
    """The connected Ray cluster's totals and its largest node (alive nodes only)."""
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    node_cpus = max((n.get("Resources", {}).get("CPU", 0.0) for n in nodes), default=0.0)
    res = ray.cluster_resources()
    return Cluster(cpus=res.get("CPU", 0.0), gpus=res.get("GPU", 0.0), node_cpus=node_cpus)
