"""The training loop every vidloom model shares (docs/architecture.md "Trainer").

``Trainer`` owns what does not depend on the model: AdamW with decoupled weight decay (no decay on
biases and norm gains), linear warm-up then cosine decay, gradient clipping, a float32 EMA of the
trainable weights, bf16 autocast on CUDA, progressive stages (one ``StreamingLoader`` per stage),
checkpoints (model, optimizer, EMA, loader, RNG, and the whole resolved config: ``config``, also
written beside them as ``config.yaml``) and the step log. Subclasses supply the model
(``build_net``) and the objective (``forward_backward_step``); later stages (SFT, RLHF,
distillation) subclass it the same way.

Exact resume: every random draw of a step (timesteps, noise, caption language and dropout, I2V
choice) comes from a ``torch.Generator`` seeded by ``(seed, step)``, the loader's order is a pure
function of its state, and checkpoints store the global RNG states as well; on CPU a run killed
and resumed logs bitwise-identical losses (``tests/test_trainer_resume.py``). The log keeps each
loss as a hex float and is cut back to the checkpoint's step on resume.

Distributed: ``training/loop/distributed.py`` supplies rank/world size and wraps the net in DDP or
FSDP (``wrap``); only rank 0 writes logs and checkpoints.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import sys
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn

from pipelines.remote import as_path
from training.config import StageConfig, TrainConfig, to_dict
from training.data.list_loader import ListLoader
from training.data.loader import StreamingLoader
from training.loop import checkpoint as ckpt_files
from training.loop.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from training.loop.distributed import DistInfo

Batch = dict[str, Any]
log = logging.getLogger(__name__)


def lr_at(step: int, base_lr: float, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine from ``base_lr`` to ``base_lr * min_ratio``."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return base_lr * (min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def step_generator(seed: int, step: int, device: torch.device | str = "cpu") -> torch.Generator:
    """The RNG of one optimizer step: a pure function of (seed, step), so resume replays it."""
    state = np.random.SeedSequence([seed, step]).generate_state(2, dtype=np.uint32)
    return torch.Generator(device=device).manual_seed(int(state[0]) << 32 | int(state[1]))


def sample_generator(seed: int, step: int, key: str) -> torch.Generator:
    """The RNG of one sample in one step: a pure function of (seed, step, sample key).

    Per-sample draws (noise, timestep, caption choice, I2V choice, VAE posterior sample) come from
    it, so they do not depend on which rank, micro-batch or bucket the sample lands in: a
    data-parallel run makes the same draws, hence the same update, as one process.
    """
    state = np.random.SeedSequence([seed, step, zlib.crc32(key.encode("utf-8"))]).generate_state(
        2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def param_groups(net: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on matrices, none on biases, norm gains and other 1-D params."""
    decay, no_decay = [], []
    for p in net.parameters():
        if p.requires_grad:
            (decay if p.dim() >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class Trainer:
    """Base loop. Subclasses implement ``build_net`` and ``forward_backward_step``."""

    kind = "base"
    items: list[Any] | None = None  # in-memory items (prompts, pairs) instead of shards: see make_loader

    def __init__(self, cfg: TrainConfig, data: str | Path, out: str | Path,
                 device: str | torch.device | None = None, dist: DistInfo | None = None) -> None:
        self.cfg, self.data, self.out = cfg, as_path(data), Path(out)  # a URL stays a RemoteDir
        self.dist = dist or DistInfo.from_env()
        self.device = torch.device(device or self.dist.device)
        torch.manual_seed(cfg.seed)
        self.net = self.build_net().to(self.device)
        self.ema = copy.deepcopy(self.net).float().requires_grad_(False)
        if cfg.compile and self.device.type == "cuda":
            for module in list(self.net.modules()):
                if hasattr(module, "compile_blocks"):
                    module.compile_blocks()
        self.model = self.dist.wrap(self.net, self.cfg)
        self.optimizer = torch.optim.AdamW(param_groups(self.net, cfg.weight_decay), lr=self.base_lr,
                                           betas=tuple(cfg.betas))
        self.step = 0
        self.stage_index = -1
        self.loader: StreamingLoader | None = None
        self._batches: Iterator[list[Batch]] | None = None
        self._resume_loader: dict[str, int] | None = None
        self.log_path = self.out / "log.jsonl"

    # ------------------------------------------------------------------ subclass hooks

    @property
    def total_steps(self) -> int:
        return self.cfg.steps

    @property
    def base_lr(self) -> float:
        return self.cfg.lr

    def stage_plan(self) -> list[tuple[StageConfig, int, int]]:
        """(stage, first step, end step) of each stage."""
        return [(s, a, b) for s, (a, b) in zip(self.cfg.stages, self.cfg.stage_bounds(), strict=True)]

    def build_net(self) -> nn.ModuleDict:
        raise NotImplementedError

    def forward_backward_step(self, micro_batches: list[Batch], gen: torch.Generator) -> dict[str, float]:
        """Compute the loss of one global batch (this rank's micro-batches) and back-propagate it.

        Gradients of all micro-batches must add up to the gradient of the mean per-sample loss;
        return metrics (floats) for the log, ``loss`` included.
        """
        raise NotImplementedError

    def evaluate(self) -> dict[str, float]:
        """Metrics on a fixed held batch (same samples, timesteps and noise at every call)."""
        return {}

    def checkpoint_extra(self) -> dict[str, Any]:
        """More entries for the checkpoint (e.g. the frozen VAE of a DiT run)."""
        return {}

    # ------------------------------------------------------------------ helpers for subclasses

    def sample_generators(self, mb: Batch) -> list[torch.Generator]:
        """One generator per sample of a micro-batch for the current step (``sample_generator``)."""
        return [sample_generator(self.cfg.seed, self.step, key) for key in mb["key"]]

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """bf16 autocast on CUDA when ``cfg.bf16``; a no-op on CPU (float32, exact resume)."""
        if self.device.type == "cuda" and self.cfg.bf16:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def no_sync(self, last: bool) -> contextlib.AbstractContextManager[Any]:
        """Skip the gradient all-reduce on every micro-batch but the last (DDP)."""
        if last or not hasattr(self.model, "no_sync"):
            return contextlib.nullcontext()
        return self.model.no_sync()

    @property
    def stage(self) -> StageConfig:
        return self.stage_plan()[self.stage_index][0]

    def make_loader(self, stage: StageConfig,
                    global_batch: int | None = None) -> StreamingLoader | ListLoader:
        """The stage's loader: over ``self.items`` when the trainer holds in-memory items (prompts,
        preference pairs), else streaming the stage's shards."""
        if self.items is not None:
            return ListLoader(self.items, self.cfg.seed, global_batch or stage.global_batch, self.dist.rank,
                              self.dist.world_size)
        return StreamingLoader(
            stage.data or self.data, seed=self.cfg.seed, global_batch=global_batch or stage.global_batch,
            n_canonical=self.cfg.n_canonical, rank=self.dist.rank, world_size=self.dist.world_size,
            n_frames=stage.n_frames, fps=stage.fps, size=tuple(stage.size), sample_mode=stage.sample_mode,
            num_workers=self.cfg.num_workers, drop_last=self.dist.world_size > 1)

    # ------------------------------------------------------------------ loop

    def _enter_stage(self, index: int) -> None:
        self.stage_index = index
        self.loader = self.make_loader(self.stage)
        if self._resume_loader is not None:
            self.loader.load_state_dict(self._resume_loader)
            self._resume_loader = None
        self._batches = None

    def eval_batches(self) -> Iterator[tuple[int, Batch]]:
        """The stage's first ``eval_samples`` samples (fixed, whatever the step), each as a one-sample
        micro-batch (``video``/``latent`` batched, other fields one-element lists); the model is put
        in eval mode first."""
        assert self.loader is not None
        ds = self.loader.dataset
        self.model.eval()
        for index in range(min(self.cfg.eval_samples, len(ds))):
            sample = ds.get(index, self.cfg.seed, 0)
            yield index, {k: v[None] if k in ("video", "latent") else [v] for k, v in sample.items()}

    def _next_global_batch(self) -> list[Batch]:
        assert self.loader is not None
        if self._batches is None:
            self._batches = self.loader.global_batches(continuous=True)  # prefetch crosses epochs
        batch = next(self._batches, None)
        if batch is None:
            raise RuntimeError(f"{self.stage.data or self.data} yields no batches (fewer samples than "
                               "one global batch?)")
        return batch

    @torch.no_grad()
    def _update_ema(self) -> None:
        decay = min(self.cfg.ema_decay, (1 + self.step) / (10 + self.step))
        ema = [p for p in self.ema.parameters()]
        cur = [_full(p.detach()).float() for p in self.net.parameters()]
        torch._foreach_lerp_(ema, cur, 1.0 - decay)
        for b_ema, b in zip(self.ema.buffers(), self.net.buffers(), strict=True):
            b_ema.copy_(_full(b))

    def train(self, progress: bool = True) -> dict[str, Any]:
        """Run (or resume) to ``total_steps``; returns a summary with the eval history."""
        self.out.mkdir(parents=True, exist_ok=True)
        if self.dist.is_main:
            write_config(self.out, self.cfg)
        self.resume()
        plan = self.stage_plan()
        history: list[dict[str, Any]] = []
        self._quiet_log = not progress
        bar = _progress(progress and self.dist.is_main, self.total_steps, self.step, self.kind)
        wait_s = busy_s = 0.0
        while self.step < self.total_steps:
            index = next(i for i, (_, a, b) in enumerate(plan) if a <= self.step < b)
            if index != self.stage_index:
                self._enter_stage(index)
                history.append(self._eval_row("start"))
            t0 = time.perf_counter()
            micro = self._next_global_batch()
            t1 = time.perf_counter()
            lr = lr_at(self.step, self.base_lr, self.cfg.warmup_steps, self.total_steps,
                       self.cfg.min_lr_ratio)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            self.optimizer.zero_grad(set_to_none=True)
            self.model.train()
            metrics = self.forward_backward_step(micro, step_generator(self.cfg.seed, self.step))
            grad_norm = torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.cfg.grad_clip)
            self.optimizer.step()
            self._update_ema()
            self.step += 1
            t2 = time.perf_counter()
            wait_s, busy_s = wait_s + t1 - t0, busy_s + t2 - t1
            self._log(metrics, lr, float(_full(grad_norm)), micro, t1 - t0, t2 - t1)
            bar.update(1)
            bar.set_postfix(stage=self.stage.name, loss=f"{metrics['loss']:.4f}")
            if self.step == plan[self.stage_index][2]:
                history.append(self._eval_row("end"))
            if self.step % self.cfg.ckpt_every == 0 or self.step == self.total_steps:
                self.save()
        bar.close()
        return {"kind": self.kind, "steps": self.step, "out": str(self.out), "eval": history,
                "data_wait_share": wait_s / max(wait_s + busy_s, 1e-9)}

    def _eval_row(self, when: str) -> dict[str, Any]:
        return {"step": self.step, "stage": self.stage.name, "when": when, **self.evaluate()}

    def _log(self, metrics: dict[str, float], lr: float, grad_norm: float, micro: list[Batch],
             wait_s: float, step_s: float) -> None:
        if not self.dist.is_main:
            return
        assert self.loader is not None
        row = {"step": self.step, "stage": self.stage.name, "lr": lr, "grad_norm": grad_norm,
               **metrics, "loss_hex": float(metrics["loss"]).hex(),
               "keys": [k for mb in micro for k in mb["key"]], **self.loader.state_dict(),
               "data_wait_s": round(wait_s, 6), "step_s": round(step_s, 6)}
        with open(self.log_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
        if self.step % self.cfg.log_every == 0 and getattr(self, "_quiet_log", True):
            print(f"[{self.kind}] step {self.step}/{self.total_steps} {self.stage.name} "
                  f"loss {metrics['loss']:.4f} lr {lr:.2e}", file=sys.stderr, flush=True)

    # ------------------------------------------------------------------ checkpoints

    def state(self) -> dict[str, Any]:
        assert self.loader is not None
        return {"kind": self.kind, "config": to_dict(self.cfg), "net": self.dist.model_state(self.net),
                "ema": self.ema.state_dict(),
                "optimizer": self.dist.optimizer_state(self.net, self.optimizer),
                "loader": self.loader.state_dict(), "stage": self.stage_index, "rng": rng_state(),
                **self.checkpoint_extra()}

    def save(self) -> Path | None:
        state = self.state()  # every rank joins the (FSDP) gathers
        path = None
        if self.dist.is_main:
            path = save_checkpoint(self.out, self.step, state, keep=self.cfg.keep_ckpts)
        self.dist.barrier()  # when save returns, every rank sees the checkpoint (run.py loads the VAE's)
        return path

    def resume(self) -> bool:
        """Load the newest checkpoint of ``out`` if any; cut the log back to its step.

        The candidates are chosen from their small metadata files (training/loop/checkpoint.py), so
        only the checkpoint resumed from is loaded, once; one that still fails to load (damaged
        after it was written) is reported and the one before it is tried.
        """
        ckpt, path = None, None
        for candidate in ckpt_files.checkpoint_candidates(self.out):
            try:
                ckpt, path = load_checkpoint(candidate, map_location=self.device), candidate
                break
            except Exception as e:  # noqa: BLE001 - a damaged file: fall back to the one before
                log.warning("[%s] cannot load %s (%s: %s); trying the checkpoint before it",
                            self.kind, candidate, type(e).__name__, e)
        if ckpt is None:
            if self.dist.is_main:
                self.log_path.unlink(missing_ok=True)
            return False
        if self.dist.is_main:  # printed like the step lines: it shows at every --log-level
            print(f"[{self.kind}] resuming from step {int(ckpt['step'])} ({path})", file=sys.stderr,
                  flush=True)
        if ckpt["kind"] != self.kind:
            raise ValueError(f"{path} is a {ckpt['kind']!r} checkpoint, this run trains {self.kind!r}")
        self.dist.load_model_state(self.net, ckpt["net"])
        self.ema.load_state_dict(ckpt["ema"])
        self.dist.load_optimizer_state(self.net, self.optimizer, ckpt["optimizer"])
        self.step = int(ckpt["step"])
        self._resume_loader = ckpt["loader"]
        self.stage_index = -1
        set_rng_state(ckpt["rng"])
        self.on_resume(ckpt)
        if self.dist.is_main and self.log_path.exists():
            keep = [line for line in self.log_path.read_text(encoding="utf-8").splitlines()
                    if line.strip() and json.loads(line)["step"] <= self.step]
            self.log_path.write_text("".join(line + "\n" for line in keep), encoding="utf-8")
        # the saved loader state belongs to the stage of the saved step; _enter_stage restores it
        plan = self.stage_plan()
        if self.step < self.total_steps:
            index = next(i for i, (_, a, b) in enumerate(plan) if a <= self.step < b)
            if index != int(ckpt["stage"]):
                self._resume_loader = None  # the checkpoint closed its stage: the next one starts fresh
        return True

    def on_resume(self, ckpt: dict[str, Any]) -> None:
        """Restore subclass state from a checkpoint."""


def write_config(run_dir: Path, cfg: TrainConfig) -> None:
    """The resolved config next to the run's checkpoints (``config.yaml``), unless the run directory
    already holds one (``vidloom train`` and ``vidloom post`` write and check it before training)."""
    path = run_dir / "config.yaml"
    if not path.exists():
        path.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=True, allow_unicode=True), encoding="utf-8")


def _full(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor of an FSDP-sharded DTensor (all-gather); plain tensors as they are."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def _progress(enabled: bool, total: int, initial: int, desc: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, disable=not enabled, dynamic_ncols=True,
                file=sys.stderr)
