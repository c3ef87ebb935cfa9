"""A deterministic, resumable loader over in-memory items (prompts, preference pairs).

``Trainer.make_loader`` uses it when a trainer holds ``items`` (RLHF prompts, Flow-DPO pairs, the
refiner's ReFL prompts) instead of shards; it has the ``StreamingLoader`` interface the loop needs
(``global_batches``, ``state_dict``/``load_state_dict``, ``samples_seen``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

Item = dict[str, Any]
Batch = dict[str, Any]


def collate_items(items: list[Item]) -> Batch:
    """Tensors stacked along a new batch dim, everything else as lists."""
    return {k: torch.stack([it[k] for it in items]) if isinstance(items[0][k], Tensor) else
            [it[k] for it in items] for k in items[0]}


class ListLoader:
    """Deterministic, resumable loader over in-memory items (prompts, preference pairs).

    The stream is the concatenation of per-epoch permutations seeded by ``(seed, epoch)``; global
    batch ``g`` holds stream positions ``[g b, (g + 1) b)`` and rank ``r`` of ``w`` its ``r``-th
    slice. The whole state is ``samples_seen`` (advanced when a global batch is handed out).
    """

    def __init__(self, items: Sequence[Item], seed: int, global_batch: int, rank: int = 0,
                 world_size: int = 1) -> None:
        if not items:
            raise ValueError("no items to load")
        if global_batch % world_size:
            raise ValueError("world_size must divide global_batch")
        self.dataset = list(items)
        self.seed, self.global_batch, self.rank, self.world_size = seed, global_batch, rank, world_size
        self.samples_seen = 0

    def state_dict(self) -> dict[str, int]:
        return {"samples_seen": self.samples_seen}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        self.samples_seen = int(state["samples_seen"])

    def _at(self, pos: int) -> Item:
        n = len(self.dataset)
        order = np.random.default_rng([self.seed, pos // n]).permutation(n)
        return self.dataset[int(order[pos % n])]

    def global_batches(self, continuous: bool = True) -> Iterator[list[Batch]]:
        per = self.global_batch // self.world_size
        while True:
            start = self.samples_seen + self.rank * per
            items = [self._at(p) for p in range(start, start + per)]
            self.samples_seen += self.global_batch
            yield [collate_items(items)]
