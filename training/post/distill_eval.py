"""Evaluation of distilled students, and in-memory distillation for tests and benchmarks.

``distill_report(teacher, students, prompts)``: every variant (a pipeline, its step count, CFG
scale or guidance-embedding input) samples the same prompts from the same fixed noise; each is
compared in normalised-latent space with the reference, the teacher's ``reference_steps``-step
CFG output (``latent_rel_err = ||z - z_ref|| / ||z_ref||``, and the decoded video's PSNR against
the decoded reference). With a reward (``models.rewards``; the composite one by default when the
built-in rewards exist) each variant's mean reward is reported and ``reward_retained`` = student /
teacher mean reward.

``fit_cfg_student`` / ``fit_tscd_student`` run the losses of ``training/post/distill.py`` on in-memory
batches (no shards, no VAE): CFG distillation on random ``x_0``, TSCD on the reflow coupling
``(x_0, noise)`` = (the teacher's guided ODE output of ``noise``, ``noise``), the data-free setting in
which a teacher's own samples stand in for data.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import statistics
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from models.dit.model import DiT, sample, velocity_fn
from training.inference.sampling_setup import resolve_settings
from training.loop.checkpoint import Pipeline
from training.loop.flow_matching import resolution_shift
from training.post.distill import GUIDANCE_RANGE, cfg_distill_loss, guided_velocity, segments_at, tscd_loss


@dataclass
class Prompts:
    """Text-encoder outputs of P prompts and of the empty caption (the CFG negative)."""

    text: Tensor  # [P, L, D]
    mask: Tensor  # [P, L] bool
    empty: Tensor  # [1, L0, D]
    empty_mask: Tensor  # [1, L0]

    @staticmethod
    def encode(encoder: Any, prompts: list[str], device: str | torch.device = "cpu",
               negative: bool = True) -> Prompts:
        """Encode ``prompts`` and, when ``negative``, the empty caption (else ``empty`` is empty)."""
        with torch.no_grad():
            e, m = encoder.encode(list(prompts))
            e0, m0 = encoder.encode([""]) if negative else (e[:0], m[:0])
        return Prompts(e.float().to(device), m.to(device), e0.float().to(device), m0.to(device))

    def cond(self, idx: Tensor) -> dict[str, Tensor]:
        return {"text": self.text[idx], "text_mask": self.mask[idx]}

    def uncond(self, n: int) -> dict[str, Tensor]:
        return {"text": self.empty.expand(n, -1, -1), "text_mask": self.empty_mask.expand(n, -1)}


def wake(dit: DiT, std: float = 0.2, seed: int = 0) -> DiT:
    """Give the zero-initialised parameters (adaLN-zero, final projection) random values, so a random
    DiT's velocity depends on x, t and the text; the guidance embedding stays zero."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in dit.named_parameters():
            if not p.any() and not name.startswith("g_embed."):
                p.copy_(torch.randn(p.shape, generator=g) * std)
    return dit


def student_from(teacher: DiT, guidance_embed: bool) -> DiT:
    """A trainable copy of the teacher, with a (zero-output) guidance embedding if asked."""
    student = DiT(dataclasses.replace(teacher.cfg, guidance_embed=guidance_embed))
    student.load_state_dict(teacher.state_dict(), strict=False)
    return student.to(next(teacher.parameters()).device).train().requires_grad_(True)


def _cosine(opt: torch.optim.Optimizer, steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * i / steps)))


def fit_cfg_student(teacher: DiT, prompts: Prompts, shape: tuple[int, ...], steps: int = 600, batch: int = 16,
                    lr: float = 2e-3, guidance_range: tuple[float, float] = GUIDANCE_RANGE,
                    seed: int = 0) -> DiT:
    """CFG-distil ``teacher`` (frozen) into a guidance-embedding student on random ``x_t``."""
    teacher.eval().requires_grad_(False)
    student = student_from(teacher, guidance_embed=True)
    dev = next(teacher.parameters()).device
    opt = torch.optim.Adam(student.parameters(), lr=lr)
    sched = _cosine(opt, steps)
    g = torch.Generator().manual_seed(seed)
    lo, hi = guidance_range
    for _ in range(steps):
        idx = torch.randint(prompts.text.shape[0], (batch,), generator=g)
        x0, noise = (torch.randn(batch, *shape, generator=g).to(dev) for _ in range(2))
        t = torch.rand(batch, generator=g).to(dev)
        w = (lo + (hi - lo) * torch.rand(batch, generator=g)).to(dev)
        loss, _ = cfg_distill_loss(velocity_fn(student), velocity_fn(teacher), x0, noise, t, w,
                                   prompts.cond(idx.to(dev)), prompts.uncond(batch))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return student.eval().requires_grad_(False)


def teacher_velocity(teacher: DiT, cond: dict[str, Tensor], uncond: dict[str, Tensor], w: float) -> Any:
    """``(x, t) -> v``: one pass with ``guidance`` for a guidance-embedding teacher, else two-pass CFG."""
    fn = velocity_fn(teacher)
    if teacher.cfg.guidance_embed:
        return lambda x, t: fn(x, t, {**cond, "guidance": torch.full_like(t, w)})
    return lambda x, t: guided_velocity(fn, x, t, cond, uncond, torch.full_like(t, w))


def fit_tscd_student(teacher: DiT, prompts: Prompts, pairs: tuple[Tensor, Tensor, Tensor], guidance: float,
                     segments: tuple[int, ...] = (8, 4), steps: int = 400, batch: int = 16, lr: float = 1e-3,
                     ema_decay: float = 0.95, teacher_steps: int = 50, shift: float = 1.0,
                     init: DiT | None = None, seed: int = 0) -> DiT:
    """TSCD on reflow pairs ``(x0 [N, ...], noise [N, ...], prompt index [N])`` (``teacher_pairs``).

    The student starts from ``init`` (default: the teacher) and is called with ``guidance`` if it has
    a guidance embedding; the targets come from ``teacher_velocity(teacher, ..., guidance)``.
    """
    teacher.eval().requires_grad_(False)
    base = init if init is not None else teacher
    student = student_from(base, base.cfg.guidance_embed)
    ema = copy.deepcopy(student).requires_grad_(False)
    dev = next(teacher.parameters()).device
    opt = torch.optim.Adam(student.parameters(), lr=lr)
    sched = _cosine(opt, steps)
    g = torch.Generator().manual_seed(seed)
    x0s, noises, pidx = pairs
    for step in range(steps):
        i = torch.randint(x0s.shape[0], (batch,), generator=g)
        cond = prompts.cond(pidx[i].to(dev))
        kw = cond if not student.cfg.guidance_embed else {**cond, "guidance": torch.full((batch,), guidance,
                                                                                         device=dev)}
        loss, _ = tscd_loss(velocity_fn(student), velocity_fn(ema),
                            teacher_velocity(teacher, cond, prompts.uncond(batch), guidance),
                            x0s[i].to(dev), noises[i].to(dev), kw, segments_at(step, steps, segments),
                            shift, teacher_steps, generator=g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            torch._foreach_lerp_(list(ema.parameters()), list(student.parameters()), 1.0 - ema_decay)
    return ema.eval()


@torch.no_grad()
def teacher_pairs(teacher: DiT, prompts: Prompts, shape: tuple[int, ...], n: int, guidance: float,
                  steps: int = 50, shift: float = 1.0, seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """``(x0, noise, prompt index)``: ``n`` fixed noises and the teacher's ``steps``-step guided output."""
    g = torch.Generator().manual_seed(seed)
    dev = next(teacher.parameters()).device
    noise = torch.randn(n, *shape, generator=g).to(dev)
    idx = torch.arange(n) % prompts.text.shape[0]
    x0 = run_sampler(teacher, noise, prompts, idx, steps, guidance, shift)
    return x0, noise, idx


@torch.no_grad()
def run_sampler(model: DiT, noise: Tensor, prompts: Prompts, idx: Tensor, steps: int, guidance: float,
                shift: float = 1.0, distilled: bool = False) -> Tensor:
    """Euler sampling: guidance embedding (one pass/step) if the model has one, one conditional pass
    for a ``distilled`` model trained at a fixed scale, else CFG (two passes)."""
    dev = noise.device
    cond = prompts.cond(idx.to(dev))
    if distilled and not model.cfg.guidance_embed:
        return sample(model, noise, cond, steps, shift=shift)
    if model.cfg.guidance_embed:
        cond = {**cond, "guidance": torch.full((noise.shape[0],), float(guidance), device=dev)}
        return sample(model, noise, cond, steps, shift=shift)
    return sample(model, noise, cond, steps, shift=shift, cfg_scale=guidance,
                  uncond_kwargs=prompts.uncond(noise.shape[0]))


# --------------------------------------------------------------------------- report


@dataclass
class Variant:
    """One way to generate: a pipeline and its sampler settings.

    ``guidance`` feeds a CFG-distilled model's guidance embedding (one pass per step); otherwise
    ``cfg_scale != 1`` runs classifier-free guidance (two passes per step).
    """

    name: str
    pipeline: Pipeline
    steps: int
    cfg_scale: float = 1.0
    guidance: float | None = None

    @property
    def nfe(self) -> int:
        return self.steps * (2 if self.guidance is None and self.cfg_scale != 1.0 else 1)


def _shift(pipeline: Pipeline, shape: tuple[int, ...]) -> float:
    cfg = pipeline.config
    if not cfg.timestep_shift:
        return 1.0
    pt, ph, pw = cfg.dit.patch
    return resolution_shift((shape[-3] // pt) * (shape[-2] // ph) * (shape[-1] // pw))


def _device(pipeline: Pipeline) -> torch.device:
    return next(pipeline.dit.parameters()).device


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def variant_outputs(v: Variant, prompts: list[str], noise: Tensor, decode: bool = True) -> dict[str, Any]:
    """Latents (and decoded videos) of one variant for ``prompts`` from ``noise`` [P, C, T, H, W];
    ``seconds``: wall time end to end, one prompt at a time: text encoding (the prompt, plus the empty
    negative caption for plain CFG only), sampling and, with ``decode``, the VAE decode."""
    p = v.pipeline
    dev = next(p.dit.parameters()).device
    shift = _shift(p, tuple(noise.shape))
    zs, videos = [], []
    _sync(dev)
    start = time.perf_counter()
    for i, prompt in enumerate(prompts):
        x = noise[i : i + 1].to(dev)
        plain_cfg = v.guidance is None and v.cfg_scale != 1.0
        bank = Prompts.encode(p.text_encoder, [prompt], dev, negative=plain_cfg)
        if v.guidance is not None:
            cond = {**bank.cond(torch.tensor([0], device=dev)),
                    "guidance": torch.full((1,), float(v.guidance), device=dev)}
            z = sample(p.dit, x, cond, v.steps, shift=shift)
        else:
            z = sample(p.dit, x, bank.cond(torch.tensor([0], device=dev)), v.steps, shift=shift,
                       cfg_scale=v.cfg_scale, uncond_kwargs=bank.uncond(1) if plain_cfg else None)
        zs.append(z.float())
        if decode:
            videos.append(p.vae.decode(p.latent_stats.denormalize(z.float())).clamp(-1, 1))
    _sync(dev)
    out: dict[str, Any] = {"latents": torch.cat(zs).cpu(), "seconds": time.perf_counter() - start}
    if decode:
        out["videos"] = torch.cat(videos).float().cpu()
    return out


def psnr(a: Tensor, b: Tensor) -> float:
    """PSNR in dB of videos in [-1, 1] (peak-to-peak 2)."""
    mse = float(((a.float() - b.float()) ** 2).mean())
    return float("inf") if mse == 0 else 10 * math.log10(4.0 / mse)


DEFAULT_REWARD_WEIGHTS = {"motion": 1.0, "stability": 1.0, "aesthetic_proxy": 1.0}  # need no weights


def load_reward(name: str = "composite", **kw: Any) -> Any:
    """The named reward (``composite`` defaults to ``DEFAULT_REWARD_WEIGHTS``), or None when the
    built-in rewards (``models/rewards/builtin.py``) or their weights are missing."""
    if name == "composite":
        kw.setdefault("weights", DEFAULT_REWARD_WEIGHTS)
    try:
        from models.rewards.builtin import build_reward

        return build_reward(name, **kw)
    except (ImportError, ValueError, FileNotFoundError, OSError):
        return None


@torch.no_grad()
def distill_report(teacher: Pipeline, students: list[Variant], prompts: list[str], reference_steps: int = 50,
                   cfg_scale: float = 4.0, seed: int = 0, n_frames: int | None = None,
                   size: tuple[int, int] | None = None, reward: Any = None, decode: bool = True,
                   repeats: int = 1) -> dict[str, Any]:
    """Fidelity (and reward) of each variant against the teacher's ``reference_steps``-step CFG output.

    Args:
        teacher: the teacher pipeline; the reference is its Euler sampler at ``cfg_scale``.
        students: variants to compare (NFE = ``Variant.nfe``); may include teacher variants with
            fewer steps as baselines.
        prompts: captions; prompt i always starts from the same noise (``seed + i``).
        n_frames, size: default the teacher config's last stage.
        reward: a ``Reward`` (``models.rewards``); None = ``load_reward()`` (skipped if unavailable);
            False = no reward.
        decode: decode with the VAE (needed for PSNR and rewards).
        reward floor: with a reward, ``reference["noise_reward"]`` is the reward of the decoded starting
            noise and each row's ``reward_retained_above_noise`` is ``(R - R_noise) / (R_teacher -
            R_noise)``: the share of what the teacher gains over noise that the variant keeps (proxy
            rewards give noise most of the teacher's score, so the plain ratio says little).
        repeats: timing rounds; after the first, every variant (the reference included) is timed again
            in turn, round after round, and ``seconds`` is each one's median (noisy machines).

    Returns:
        ``{"reference": row, "rows": [row, ...], "reward": name or None}``; a row has name, nfe, seconds,
        latent_rel_err, latent_rmse, psnr_db (decode), reward and reward_retained (with a reward).
    """
    cfg = teacher.config
    n_frames, (h, w), _ = resolve_settings(cfg, n_frames, size, None)
    shape = (cfg.dit.in_channels, *cfg.vae.latent_shape(n_frames, h, w))
    noise = torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(seed + i))
                         for i in range(len(prompts))])
    if reward is None and decode:
        reward = load_reward()
    reward = reward or None
    ref_v = Variant(f"teacher-{reference_steps}step-cfg", teacher, reference_steps, cfg_scale)
    ref = variant_outputs(ref_v, prompts, noise, decode)

    def row(v: Variant, out: dict[str, Any]) -> dict[str, Any]:
        z, zr = out["latents"], ref["latents"]
        r: dict[str, Any] = {"name": v.name, "nfe": v.nfe, "steps": v.steps,
                             "seconds": round(out["seconds"], 4),
                             "latent_rel_err": float((z - zr).norm() / zr.norm().clamp_min(1e-12)),
                             "latent_rmse": float(((z - zr) ** 2).mean().sqrt())}
        if decode:
            r["psnr_db"] = psnr(out["videos"], ref["videos"])
        if reward is not None:
            try:
                r["reward"] = float(reward(out["videos"], list(prompts)).float().mean())
            except (ValueError, RuntimeError) as e:  # e.g. a motion reward given one frame
                r["reward_error"] = str(e)
        return r

    ref_row = row(ref_v, ref)
    rows = [row(v, variant_outputs(v, prompts, noise, decode)) for v in students]
    times = [[r["seconds"]] for r in [ref_row, *rows]]
    for _ in range(repeats - 1):
        for t, v in zip(times, [ref_v, *students], strict=True):
            t.append(variant_outputs(v, prompts, noise, decode)["seconds"])
    for r, t in zip([ref_row, *rows], times, strict=True):
        r["seconds"], r["seconds_all"] = round(statistics.median(t), 4), [round(x, 4) for x in t]
    floor = None
    if reward is not None and ref_row.get("reward") is not None:
        # the reward of the sampler's own starting noise, decoded: how much of the score any output gets
        with torch.no_grad():
            z0 = teacher.latent_stats.denormalize(noise.to(_device(teacher)))
            start = teacher.vae.decode(z0).clamp(-1, 1).float().cpu()
            floor = float(reward(start, list(prompts)).float().mean())
        ref_row["noise_reward"] = floor
    for r in rows:
        if "reward" in r and ref_row.get("reward"):
            r["reward_retained"] = r["reward"] / ref_row["reward"]
            if floor is not None and ref_row["reward"] != floor:
                r["reward_retained_above_noise"] = (r["reward"] - floor) / (ref_row["reward"] - floor)
        r["speedup_vs_reference"] = ref_row["seconds"] / max(r["seconds"], 1e-9)
    return {"reference": ref_row, "rows": rows, "reward": getattr(reward, "name", None), "repeats": repeats}
