"""Few-step distillation of the DiT (Seedance 1.0 §4.3 "inference acceleration"; docs/architecture.md
"Distillation").

Two stages, each a ``DiTTrainer`` subclass whose student starts from the teacher checkpoint's EMA
weights while the teacher stays frozen:

1. **CFG distillation** (``CFGDistillTrainer``): the student gets a guidance-scale embedding
   (``DiTConfig.guidance_embed``; zero-initialised, so at init it equals the teacher's conditional
   prediction) and learns ``|| v_s(x_t, t, c, w) - [v_u + w (v_c - v_u)]_teacher ||^2`` with
   ``w ~ U(guidance_range)``: one pass replaces the two of classifier-free guidance.
2. **TSCD** (``TSCDTrainer``; trajectory-segmented consistency distillation, Hyper-SD, Ren et al.
   2024): the time axis is cut into ``S`` segments (S = 8 -> 4 -> 2 -> 1 over the run). For ``x_t``
   inside segment ``[s, t_hi]`` the student jumps to the segment's lower boundary in one Euler step
   of its velocity, ``x_s = x_t + (s - t) v_student``. Target: one (or more) teacher ODE steps from
   ``t`` to ``t'`` (Euler or Heun, guided: CFG teacher or the CFG-distilled student), then the EMA
   student's jump from ``t'`` to ``s`` (the consistency target; ``t' = s`` needs none). The MSE is
   taken in velocity units, ``|| v_student - (target - x_t) / (s - t) ||^2`` (x-space MSE divided by
   ``(s - t)^2``), which is well conditioned near the boundary.

Segments live on the sampler's grid: boundaries are ``sampling_schedule(S, shift)``, so S = 4 is
a subset of S = 8 and ``sample_distilled`` (NFE = S) steps exactly across them.

Settings: ``post.cfg`` (the guidance range) and ``post.tscd`` (training/post/config.py).
Checkpoints are ordinary "dit" checkpoints (``load_pipeline`` reads them; the config has
``guidance_embed`` when the student has the embedding) plus a ``distill`` entry. ``TSCDTrainer``
also writes the EMA student at the end of every segment phase to ``<out>/segments_<S>/`` (a "dit"
run directory), so the 8-, 4-, 2- and 1-step students of one run can each be loaded.

Distillation is text-to-video / text-to-image only (no image-conditioning frames).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from models.dit.model import DiT, sample, velocity_fn
from training.config import Layers, TrainConfig, apply_layers, from_dict, to_dict
from training.loop.checkpoint import load_checkpoint, resolve_checkpoint, save_checkpoint, sub_state
from training.loop.distributed import DistInfo
from training.loop.dit_trainer import DiTNet, DiTTrainer
from training.loop.flow_matching import ModelFn, logit_normal_t, sampling_schedule, shift_t
from training.loop.trainer import Batch, write_config
from training.post.config import CFGDistillConfig, PostConfig, TSCDConfig, section_dict
from training.post.inputs import RunInputs

SEGMENT_STAGES = TSCDConfig().segments  # the default phases (8, 4, 2, 1): post.tscd.segments
GUIDANCE_RANGE = CFGDistillConfig().guidance_range  # the default w range (1, 6): post.cfg.guidance_range
VelocityFn = Callable[[Tensor, Tensor], Tensor]  # (x [B, ...], t [B]) -> guided velocity


# --------------------------------------------------------------------------- schedules


def segment_boundaries(segments: int, shift: float = 1.0) -> Tensor:
    """``[segments + 1]`` float64 boundaries from 1 (noise) to 0: ``sampling_schedule(segments, shift)``."""
    if segments < 1:
        raise ValueError(f"segments must be >= 1, got {segments}")
    return sampling_schedule(segments, shift)


def segments_at(step: int, total: int, stages: tuple[int, ...] = SEGMENT_STAGES) -> int:
    """Segment count at optimizer step ``step`` of ``total`` (each ``stages`` entry gets an equal share)."""
    return stages[min(len(stages) - 1, step * len(stages) // max(total, 1))]


def _bview(v: Tensor, like: Tensor) -> Tensor:
    return v.to(like).view(-1, *([1] * (like.dim() - 1)))


# --------------------------------------------------------------------------- losses


def guided_velocity(model_fn: ModelFn, x: Tensor, t: Tensor, cond: Any, uncond: Any, w: Tensor) -> Tensor:
    """``v_u + w (v_c - v_u)`` with a per-sample scale ``w`` [B] (two passes)."""
    v_c = model_fn(x, t, cond)
    v_u = model_fn(x, t, uncond)
    return v_u + _bview(w, v_c) * (v_c - v_u)


def cfg_distill_loss(student_fn: ModelFn, teacher_fn: ModelFn, x0: Tensor, noise: Tensor, t: Tensor,
                     w: Tensor, cond: dict[str, Any], uncond: dict[str, Any],
                     ) -> tuple[Tensor, dict[str, Tensor]]:
    """CFG-distillation MSE ``|| student(x_t, t, c, w) - [v_u + w (v_c - v_u)]_teacher ||^2``.

    Args:
        student_fn, teacher_fn: ``velocity_fn``-style callables; the student gets ``guidance=w``.
        x0, noise: ``[B, ...]``; ``x_t = (1 - t) x0 + t noise``.
        t, w: ``[B]`` timesteps and guidance scales.
        cond, uncond: model keyword arguments with the caption and the empty caption.

    Returns:
        ``(loss, aux)`` with ``per_sample [B]``, ``pred`` and ``target``.
    """
    tb = _bview(t, x0)
    x_t = (1 - tb) * x0 + tb * noise
    with torch.no_grad():
        target = guided_velocity(teacher_fn, x_t, t, cond, uncond, w).float()
    pred = student_fn(x_t, t, {**cond, "guidance": w})
    per_sample = ((pred.float() - target) ** 2).reshape(x0.shape[0], -1).mean(1)
    return per_sample.mean(), {"per_sample": per_sample, "pred": pred, "target": target}


def sample_segment_times(n: int, segments: int, shift: float, generator: torch.Generator | None = None,
                         u: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Timesteps inside segments: ``(u, u_lo, t)`` with ``u ~ U(0, 1]`` on the unshifted grid,
    ``u_lo = floor(u S) / S`` its segment's lower (data-side) boundary and ``t = shift_t(u)``."""
    if u is None:
        u = 1.0 - torch.rand(n, generator=generator, dtype=torch.float64)  # (0, 1]
    u = u.double().clamp(1e-6, 1.0)
    u_lo = torch.floor(u * segments - 1e-9) / segments
    return u, u_lo, shift_t(u, shift)


def tscd_loss(student_fn: ModelFn, ema_fn: ModelFn, teacher_v: VelocityFn, x0: Tensor, noise: Tensor,
              kwargs: dict[str, Any], segments: int, shift: float = 1.0, teacher_steps: int = 50,
              substeps: int = 1, heun: bool = False, generator: torch.Generator | None = None,
              u: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """Trajectory-segmented consistency loss (rectified-flow parametrisation), see the module doc.

    Args:
        student_fn, ema_fn: ``(x, t, kwargs) -> v`` of the student and of its EMA (no grad needed).
        teacher_v: ``(x, t) -> v`` guided teacher velocity (CFG teacher or CFG-distilled student).
        x0, noise: ``[B, ...]``; ``x_t = (1 - t) x0 + t noise``.
        kwargs: the student's model keyword arguments (caption, and ``guidance`` if it has one).
        segments: S; boundaries are ``segment_boundaries(S, shift)``.
        teacher_steps: the teacher's step is ``1 / teacher_steps`` on the unshifted grid.
        substeps: teacher steps taken before the EMA target (clamped at the boundary).
        heun: second-order teacher steps.
        u: optional unshifted times ``[B]`` in (0, 1] (else drawn from ``generator``).

    Returns:
        ``(loss, aux)`` with ``per_sample``, ``t``, ``s`` (boundaries) and ``reached`` (the teacher hit
        the boundary, so the target is the teacher alone).
    """
    b = x0.shape[0]
    u, u_lo, t = sample_segment_times(b, segments, shift, generator, u)
    s = shift_t(u_lo, shift)
    tb = _bview(t, x0)
    x_t = (1 - tb) * x0 + tb * noise
    t_f, s_f = t.to(x0), s.to(x0)
    with torch.no_grad():
        x, uc = x_t, u
        for _ in range(substeps):
            un = torch.maximum(uc - 1.0 / teacher_steps, u_lo)
            tc_f, tn_f = shift_t(uc, shift).to(x0), shift_t(un, shift).to(x0)
            dt = _bview(tn_f - tc_f, x)
            v = teacher_v(x, tc_f)
            x_e = x + dt * v
            x = x + dt * 0.5 * (v + teacher_v(x_e, tn_f)) if heun else x_e
            uc = un
        reached = uc <= u_lo + 1e-9
        t_p = shift_t(uc, shift).to(x0)
        target = x
        if not bool(reached.all()):
            jump = x + _bview(s_f - t_p, x) * ema_fn(x, t_p, kwargs)
            target = torch.where(_bview(reached, x).bool(), x, jump)
        v_target = ((target - x_t) / _bview(s_f - t_f, x_t)).float()
    pred = student_fn(x_t, t_f, kwargs)
    per_sample = ((pred.float() - v_target) ** 2).reshape(b, -1).mean(1)
    return per_sample.mean(), {"per_sample": per_sample, "t": t_f, "s": s_f, "reached": reached}


# --------------------------------------------------------------------------- sampling


@torch.no_grad()
def sample_distilled(model: DiT, noise: Tensor, kwargs: dict[str, Any], segments: int, shift: float = 1.0,
                     guidance: float | None = None, cfg_scale: float = 1.0,
                     uncond_kwargs: dict[str, Any] | None = None) -> Tensor:
    """Few-step sampling across the segment boundaries: one Euler step per segment (NFE = ``segments``,
    x2 if ``cfg_scale != 1``). ``guidance`` feeds the guidance embedding of a CFG-distilled model."""
    if guidance is not None:
        kwargs = {**kwargs, "guidance": torch.full((noise.shape[0],), float(guidance), device=noise.device)}
    return sample(model, noise, kwargs, segments, shift=shift, cfg_scale=cfg_scale,
                  uncond_kwargs=uncond_kwargs)


# --------------------------------------------------------------------------- trainers


def distill_config(teacher: str | Path, overrides: Layers = None, guidance_embed: bool = True) -> TrainConfig:
    """The teacher checkpoint's config with ``dit.guidance_embed`` set, fresh ``post`` settings and
    ``overrides`` (``key=value`` strings or a nested dict) applied: the config of a distillation run
    (``post.cfg``, ``post.tscd``, ``post.dmd``, ``post.adv``)."""
    cfg = from_dict(load_checkpoint(resolve_checkpoint(teacher))["config"])
    cfg.dit.guidance_embed = guidance_embed
    cfg.post = PostConfig()
    return apply_layers(cfg, overrides)


def load_dit_net(path: str | Path, cfg: TrainConfig | None = None, use_ema: bool = True) -> DiTNet:
    """A ``DiTNet`` (config ``cfg`` or the checkpoint's) with the checkpoint's weights; parameters the
    checkpoint lacks must be the guidance embedding's (left at their zero-output init)."""
    ckpt = load_checkpoint(resolve_checkpoint(path))
    net = DiTNet(cfg or from_dict(ckpt["config"]))
    missing, unexpected = net.load_state_dict(ckpt["ema" if use_ema else "net"], strict=False)
    bad = [k for k in missing if not k.startswith("dit.g_embed.")]
    if bad or unexpected:
        raise ValueError(f"{path} does not match the model: missing {bad[:5]}, unexpected {unexpected[:5]}")
    return net


class _DistillTrainer(DiTTrainer):
    """Student initialised from ``init`` (default: the teacher), frozen ``teacher`` net."""

    kind = "dit"  # checkpoints stay loadable by ``load_pipeline`` / ``vidloom generate``
    mode = "base"

    def __init__(self, cfg: TrainConfig, inputs: RunInputs, out: str | Path, dist: DistInfo | None = None,
                 *, device: str | torch.device | None = None) -> None:
        self.teacher_path = resolve_checkpoint(inputs.base)
        self.init_path = resolve_checkpoint(inputs.init) if inputs.init else self.teacher_path
        super().__init__(cfg, inputs.data or "", out, self.teacher_path, device, dist)
        self.teacher = load_dit_net(self.teacher_path).to(self.device).eval().requires_grad_(False)
        t_dit = self.teacher.dit.cfg
        if dataclasses.replace(cfg.dit, guidance_embed=t_dit.guidance_embed) != t_dit:
            raise ValueError(f"student DiT config {cfg.dit} differs from the teacher's {t_dit}")

    def build_net(self) -> nn.Module:
        return load_dit_net(self.init_path, self.cfg)

    def uncond(self, cond: dict[str, Any], b: int) -> dict[str, Any]:
        """The empty-caption counterpart of ``text_inputs``' output (the CFG negative)."""
        if "texts" in cond:
            return {"texts": [""] * b}
        emb, mask = self.net.encode_text([""] * b)
        return {"text": emb.float().to(self.device), "text_mask": mask.to(self.device)}

    def checkpoint_extra(self) -> dict[str, Any]:
        return {**super().checkpoint_extra(), "distill": self.distill_info()}

    def distill_info(self) -> dict[str, Any]:
        return {"mode": self.mode, "teacher": str(self.teacher_path), "init": str(self.init_path)}

    def loss(self, mb: Batch, gens: list[torch.Generator]) -> Tensor:
        raise NotImplementedError

    def forward_backward_step(self, micro_batches: list[Batch], gen: torch.Generator) -> dict[str, float]:
        n = sum(len(mb["key"]) for mb in micro_batches)
        total = 0.0
        for i, mb in enumerate(micro_batches):
            b = len(mb["key"])
            with self.no_sync(last=i == len(micro_batches) - 1):
                loss = self.loss(mb, self.sample_generators(mb))
                (loss * b / n).backward()
            total += float(loss.detach()) * b
        return {"loss": total / n, **self.step_metrics()}

    def step_metrics(self) -> dict[str, float]:
        return {}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """The distillation loss on the stage's first ``eval_samples`` samples, fixed draws."""
        losses = []
        for index, mb in self.eval_batches():
            gens = [torch.Generator().manual_seed(10_000 + index)]
            losses.append(float(self.loss(mb, gens)))
        return {"eval_distill_loss": sum(losses) / max(len(losses), 1)}

    def _draws(self, z: Tensor, gens: list[torch.Generator]) -> tuple[Tensor, Tensor]:
        t = shift_t(torch.cat([logit_normal_t(1, generator=g) for g in gens]), self._shift(z))
        noise = torch.cat([torch.randn((1, *z.shape[1:]), generator=g) for g in gens])
        return t.to(self.device), noise.to(self.device)


class CFGDistillTrainer(_DistillTrainer):
    """Stage 1: fold classifier-free guidance into a guidance-embedding input (one pass, not two)."""

    mode = "cfg"

    def __init__(self, cfg: TrainConfig, inputs: RunInputs, out: str | Path, dist: DistInfo | None = None,
                 *, device: str | torch.device | None = None) -> None:
        self.guidance_range = tuple(cfg.post.cfg.guidance_range)
        super().__init__(cfg, inputs, out, dist, device=device)
        if not self.cfg.dit.guidance_embed:
            raise ValueError("CFG distillation needs dit.guidance_embed=True (see distill_config)")

    def distill_info(self) -> dict[str, Any]:
        return {**super().distill_info(), **section_dict(self.cfg.post.cfg)}

    def loss(self, mb: Batch, gens: list[torch.Generator]) -> Tensor:
        z = self.latents(mb)
        cond = self.text_inputs(mb, None, 0.0)
        t, noise = self._draws(z, gens)
        lo, hi = self.guidance_range
        w = (lo + (hi - lo) * torch.cat([torch.rand(1, generator=g) for g in gens])).to(self.device)
        with self.autocast():
            loss, _ = cfg_distill_loss(velocity_fn(self.model), velocity_fn(self.teacher), z, noise, t, w,
                                       cond, self.uncond(cond, z.shape[0]))
        return loss


class TSCDTrainer(_DistillTrainer):
    """Stage 2: trajectory-segmented consistency distillation, ``segments`` shrinking over the run.

    ``inputs.base`` (the teacher) gives the targets: one pass with ``guidance`` when it has a guidance
    embedding (the CFG-distilled student), else CFG with two passes. ``inputs.init`` (default the
    teacher) seeds the student; a student with a guidance embedding is always called with
    ``guidance``. Settings: ``post.tscd``; a subclass takes its ``segments`` from its own section
    (``settings``: "dmd", "adv").
    """

    mode = "tscd"
    settings = "tscd"  # the post section whose ``segments`` this stage runs

    def __init__(self, cfg: TrainConfig, inputs: RunInputs, out: str | Path, dist: DistInfo | None = None,
                 *, device: str | torch.device | None = None) -> None:
        t = cfg.post.tscd
        self.guidance = float(t.guidance)
        self.segment_stages = tuple(int(n) for n in getattr(cfg.post, self.settings).segments)
        if not self.segment_stages or min(self.segment_stages) < 1:
            raise ValueError(f"post.{self.settings}.segments must be counts >= 1, "
                             f"got {list(self.segment_stages)}")
        self.teacher_steps, self.substeps, self.heun = int(t.teacher_steps), int(t.substeps), bool(t.heun)
        super().__init__(cfg, inputs, out, dist, device=device)

    @property
    def segments(self) -> int:
        return segments_at(self.step, self.total_steps, self.segment_stages)

    def distill_info(self) -> dict[str, Any]:
        tscd = {k: v for k, v in section_dict(self.cfg.post.tscd).items() if k != "segments"}
        return {**super().distill_info(), **tscd, "segment_stages": list(self.segment_stages),
                "segments": self.segments}

    def step_metrics(self) -> dict[str, float]:
        return {"segments": float(self.segments)}

    def _student_kwargs(self, cond: dict[str, Any], b: int) -> dict[str, Any]:
        if not self.cfg.dit.guidance_embed:
            return cond
        return {**cond, "guidance": torch.full((b,), self.guidance, device=self.device)}

    def loss(self, mb: Batch, gens: list[torch.Generator]) -> Tensor:
        z = self.latents(mb)
        b = z.shape[0]
        cond = self.text_inputs(mb, None, 0.0)
        _, noise = self._draws(z, gens)
        u = 1.0 - torch.cat([torch.rand(1, generator=g, dtype=torch.float64) for g in gens])
        teacher_fn = velocity_fn(self.teacher)
        w = torch.full((b,), self.guidance, device=self.device)
        if self.teacher.dit.cfg.guidance_embed:
            def teacher_v(x: Tensor, t: Tensor) -> Tensor:
                return teacher_fn(x, t, {**cond, "guidance": w})
        else:
            uncond = self.uncond(cond, b)

            def teacher_v(x: Tensor, t: Tensor) -> Tensor:
                return guided_velocity(teacher_fn, x, t, cond, uncond, w)
        with self.autocast():
            loss, _ = tscd_loss(velocity_fn(self.model), velocity_fn(self.ema), teacher_v, z, noise,
                                self._student_kwargs(cond, b), self.segments, self._shift(z),
                                self.teacher_steps, self.substeps, self.heun, u=u)
        return loss

    def _update_ema(self) -> None:
        # Called once per optimizer step, after the update and before ``step`` advances: the last
        # step of a segment phase writes that phase's EMA student as its own "dit" run.
        super()._update_ema()
        done = self.step + 1
        if self.dist.is_main and (done == self.total_steps or
                                  segments_at(done, self.total_steps, self.segment_stages) != self.segments):
            self.save_student(self.out / f"segments_{self.segments}", done)

    def save_student(self, run_dir: Path, step: int) -> Path:
        """The EMA student as a "dit" checkpoint in ``run_dir`` (``load_pipeline`` reads it)."""
        ema = {k: v.detach().cpu() for k, v in self.ema.state_dict().items()}
        payload = {"kind": "dit", "config": to_dict(self.cfg), "net": ema, "ema": ema,
                   **self.checkpoint_extra()}
        path = save_checkpoint(run_dir, step, payload, keep=1)
        write_config(run_dir, self.cfg)
        return path


def dit_of(path: str | Path, use_ema: bool = True) -> DiT:
    """Just the DiT of a "dit" checkpoint (eval mode, frozen)."""
    ckpt = load_checkpoint(resolve_checkpoint(path))
    dit = DiT(from_dict(ckpt["config"]).dit)
    dit.load_state_dict(sub_state(ckpt["ema" if use_ema else "net"], "dit"))
    return dit.eval().requires_grad_(False)
