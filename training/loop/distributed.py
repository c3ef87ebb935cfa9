"""Data-parallel and FSDP training under ``torchrun`` (docs/architecture.md "Trainer").

``DistInfo.from_env`` reads torchrun's ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` and initialises the
process group (NCCL on GPUs, gloo on CPU); without them the run is one process and nothing is
wrapped. ``TrainConfig``-independent choice of strategy: ``VIDLOOM_PARALLEL=ddp`` (default) or
``fsdp`` (PyTorch's per-parameter ``fully_shard``; every block of the DiT is its own unit, then the
root).

Checkpoints are always full, unsharded state dicts gathered to CPU
(``torch.distributed.checkpoint.state_dict``), so a checkpoint written by 8 FSDP ranks loads in
one CPU process (``vidloom generate``) and vice versa. Each rank reads its share of every global
batch (``StreamingLoader`` rank slices, ``drop_last`` so shares are equal); DDP averages the
gradients, which makes the update the one a single process would make on the whole global batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as tdist
from torch import nn

STRATEGIES = ("ddp", "fsdp")


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    strategy: str = "none"  # "none" | "ddp" | "fsdp"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def device(self) -> str:
        return f"cuda:{self.local_rank}" if torch.cuda.is_available() else "cpu"

    @staticmethod
    def from_env() -> DistInfo:
        """One process, or torchrun's rank layout with the process group initialised."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return DistInfo()
        strategy = os.environ.get("VIDLOOM_PARALLEL", "ddp")
        if strategy not in STRATEGIES:
            raise ValueError(f"VIDLOOM_PARALLEL={strategy!r}; expected one of {STRATEGIES}")
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if not tdist.is_initialized():
            if torch.cuda.is_available():
                torch.cuda.set_device(local)
            tdist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        return DistInfo(tdist.get_rank(), tdist.get_world_size(), local, strategy)

    def barrier(self) -> None:
        """Wait for every rank (e.g. until rank 0 has written a checkpoint); no-op in one process."""
        if self.world_size > 1 and tdist.is_initialized():
            tdist.barrier()

    # ------------------------------------------------------------------ wrapping

    def wrap(self, net: nn.Module, cfg: Any = None) -> nn.Module:
        """The module to call in the training step: ``net`` itself, DDP(net) or net sharded in place."""
        if self.strategy == "ddp":
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.local_rank] if torch.cuda.is_available() else None
            # Some parameters get no gradient in some steps or ever (the last dual-stream block's
            # text outputs feed nothing): DDP must not wait for them.
            # Parameters unused on every rank keep ``grad=None``, as in a single process.
            return DistributedDataParallel(net, device_ids=ids, find_unused_parameters=True)
        if self.strategy == "fsdp":
            from torch.distributed.fsdp import fully_shard

            for module in net.modules():
                if module is not net and type(module).__name__ in ("SpatialBlock", "TemporalBlock", "_Block"):
                    fully_shard(module)
            fully_shard(net)
        return net

    # ------------------------------------------------------------------ full state dicts

    def _options(self) -> Any:
        from torch.distributed.checkpoint.state_dict import StateDictOptions

        return StateDictOptions(full_state_dict=True, cpu_offload=True)

    def model_state(self, net: nn.Module) -> dict[str, torch.Tensor]:
        if self.strategy != "fsdp":
            return {k: v.detach().cpu() for k, v in net.state_dict().items()}
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        return get_model_state_dict(net, options=self._options())

    def optimizer_state(self, net: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        if self.strategy != "fsdp":
            return optimizer.state_dict()
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        return get_optimizer_state_dict(net, optimizer, options=self._options())

    def load_model_state(self, net: nn.Module, state: dict[str, torch.Tensor]) -> None:
        if self.strategy != "fsdp":
            net.load_state_dict(state)
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        set_model_state_dict(net, state, options=StateDictOptions(full_state_dict=True))

    def load_optimizer_state(self, net: nn.Module, optimizer: torch.optim.Optimizer,
                             state: dict[str, Any]) -> None:
        """Load either layout: ``optimizer.state_dict()`` (integer ids: one process, DDP) or the
        parameter-name-keyed full state of FSDP runs, so a run resumes under another strategy."""
        if self.strategy != "fsdp":
            optimizer.load_state_dict(_optimizer_layout(net, optimizer, state, by_name=False))
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        # strict=False: parameters that never had a gradient (unused outputs) have no saved state,
        # in FSDP checkpoints as in one-process ones; AdamW creates it on their first gradient
        set_optimizer_state_dict(net, optimizer, _optimizer_layout(net, optimizer, state, by_name=True),
                                 options=StateDictOptions(full_state_dict=True, strict=False))


def _optimizer_layout(net: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any],
                      by_name: bool) -> dict[str, Any]:
    """``state`` re-keyed by parameter name (``by_name``) or by ``optimizer.state_dict()``'s integer
    ids. Both number/name the parameters in ``optimizer.param_groups`` order; names come from ``net``."""
    names_of = {id(p): name for name, p in net.named_parameters()}
    names = [names_of[id(p)] for group in optimizer.param_groups for p in group["params"]]
    saved = [k for group in state["param_groups"] for k in group["params"]]
    if len(saved) != len(names) or all(isinstance(k, str) for k in saved) == by_name:
        return state  # already in the wanted layout (or a mismatch the loader reports)
    want = names if by_name else list(range(len(names)))
    key = dict(zip(saved, want, strict=True))
    return {"state": {key[k]: v for k, v in state["state"].items()},
            "param_groups": [{**g, "params": [key[k] for k in g["params"]]} for g in state["param_groups"]]}
