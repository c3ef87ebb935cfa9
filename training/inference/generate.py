"""Video generation from a trained "dit" checkpoint: text-to-video, image-to-video, text-to-image.

``generate(pipeline, prompt, image=...)`` samples normalised latents with the DiT's rectified-flow
sampler (``models.dit.model.sample``), denormalises them with the checkpoint's latent statistics
and decodes them with its frozen VAE, returning ``[3, T, H, W]`` in [-1, 1]. ``write_mp4`` encodes
such a tensor with libx264 (yuv420p) atomically; ``generate_to_file`` does checkpoint -> file.

Settings mirror training (``training/loop/dit_trainer.py``):

- frames, size and fps default to the last progressive stage of the checkpoint's config;
- the sampling schedule is shifted by ``resolution_shift`` of the patched token count when the
  config has ``timestep_shift`` (the same shift training applied to its timesteps);
- classifier-free guidance: the negative is the encoded ``negative_prompt`` ("" = the empty
  caption that text dropout trained);
- image-to-video: the image is center-cropped to the target aspect, resized, encoded as a one-frame
  video (posterior mean), normalised and given as the clean latent frame 0 (``cond_mask[:, 0]``).
  The causal VAE decodes pixel frame 0 from latent frame 0 alone, so the first output frame is
  the VAE reconstruction of the image.

Noise comes from a CPU ``torch.Generator`` seeded with ``seed``, so a seed gives the same noise on
every device.

Options: ``refine=`` a "refiner" checkpoint (``training/post/refine.py``) makes it a cascade: the base
samples at ``size / scale``, the refiner samples ``size`` conditioned on the base latent (fresh noise
from ``seed + 1``). ``thin_decoder=`` a "thin_decoder" checkpoint (``training/post/thin_decoder.py``)
decodes instead of the full VAE decoder. ``timings=`` a dict that ``generate`` fills with seconds
per part (``Timer``); ``generate_to_file`` returns it under "timings".
"""

from __future__ import annotations

import os
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.dit.model import sample
from training.inference.adaptive_steps import Plan, auto_steps, sample_euler
from training.inference.generate_record import rewrite_prompt, write_summary
from training.inference.sampling_setup import (  # noqa: F401  (resolve_settings, load_image, Timer, prepare: re-exported)
    ImageInput,
    Timer,
    autocast_for,
    device_of,
    encode_condition,
    load_image,
    prepare,
    resolve_settings,
    sync,
)
from training.loop.checkpoint import Pipeline, load_pipeline
from training.post.refine import as_refiner, base_to_refiner_latent, refine_latent
from training.post.thin_decoder import as_thin_decoder


def generate(
    pipeline: Pipeline,
    prompt: str,
    image: ImageInput | None = None,
    n_frames: int | None = None,
    size: tuple[int, int] | None = None,
    fps: float | None = None,
    steps: int | str = 30,
    cfg_scale: float = 4.0,
    seed: int = 0,
    heun: bool = False,
    negative_prompt: str = "",
    refine: Any = None,
    refine_steps: int | None = None,
    thin_decoder: Any = None,
    timings: dict[str, Any] | None = None,
    adaptive: Any = None,
    info: dict[str, Any] | None = None,
) -> torch.Tensor:
    """Sample one video.

    Args:
        pipeline: ``training.loop.checkpoint.load_pipeline`` of a "dit" checkpoint.
        prompt: the caption.
        image: optional first frame (path or PIL image): image-to-video.
        n_frames: pixel frames, 1 + dt * k (1 = an image); default the last stage's.
        size: (H, W); default the last stage's.
        fps: validated only (the DiT has no fps input); ``generate_to_file`` writes it.
        steps: sampler steps (NFE = steps, x2 with Heun, x2 with CFG), or "auto": a probe of the
            velocity field picks them (``training/inference/adaptive_steps.py``; its passes are counted).
        cfg_scale: classifier-free guidance scale; 1 disables the negative pass.
        seed: noise seed.
        heun: second-order sampler.
        negative_prompt: the CFG negative caption.
        refine: a "refiner" checkpoint / run directory or a loaded ``RefinerPipeline``: cascade
            (``size`` and n_frames are then the output's, default the refiner's last stage; the base
            samples ``size / scale``; I2V conditions the base only).
        refine_steps: refiner sampler steps (default ``steps``).
        thin_decoder: a "thin_decoder" checkpoint or a loaded decoder module, used to decode.
        timings: a dict filled with ``Timer.KEYS`` (seconds and DiT pass counts).
        adaptive: ``steps="auto"`` settings (``AdaptiveSteps``: budget, bounds, probe times,
            reference estimate; default ``AdaptiveSteps()``), or a ``Plan`` made ahead (a batch
            allocates its steps over every prompt first).
        info: a dict filled with ``steps`` (the steps sampled) and, for "auto", ``adaptive`` (the
            estimate, the reference, the chosen steps and the probe's passes).

    Returns:
        [3, T, H, W] float32 video in [-1, 1] on the CPU.
    """
    cfg = pipeline.config
    timer = Timer(timings)
    refiner = None
    if refine is not None:
        refiner = as_refiner(refine, device_of(pipeline))
        n_frames, size, _ = resolve_settings(refiner.config, n_frames, size, fps)
        hi_thw = refiner.config.vae.latent_shape(n_frames, *size)
        size = refiner.low_size(size)
    n_frames, (h, w), _ = resolve_settings(cfg, n_frames, size, fps)
    if steps != "auto" and (not isinstance(steps, int) or steps < 1):
        raise ValueError(f"steps must be an integer >= 1 or 'auto', got {steps!r}")
    if image is not None and n_frames == 1:
        raise ValueError("image-to-video needs n_frames > 1 (one frame would only reconstruct the image)")
    device = device_of(pipeline)
    prepared = prepare(pipeline, prompt, image, n_frames, (h, w), cfg_scale, negative_prompt, seed, timer)
    noise, kwargs, uncond, base_cfg_scale, shift = prepared
    info = {} if info is None else info
    first_velocity = None
    if steps == "auto":
        plan = adaptive if isinstance(adaptive, Plan) else auto_steps(
            pipeline, prepared, adaptive, heun, timer, settings=(image, n_frames, (h, w), cfg_scale,
                                                                 negative_prompt, seed))
        steps, info["adaptive"], first_velocity = plan.steps, plan.record, plan.first_velocity
    info["steps"] = int(steps)
    with autocast_for(cfg, device), timer.section("dit_s"):
        model = timer.counted(pipeline.dit, "dit_passes")
        if first_velocity is not None:  # the probe's t = 1 velocity is the first Euler step's
            z = sample_euler(model, noise, kwargs, int(steps), shift, base_cfg_scale, uncond, first_velocity)
        else:
            z = sample(model, noise, kwargs, steps, shift=shift, cfg_scale=base_cfg_scale,
                       uncond_kwargs=uncond, heun=heun)
    z = z.float()
    if image is not None:  # exact, whatever autocast did to the rest
        z[:, :, :1] = kwargs["cond"][:, :, :1]
    vae, stats = pipeline.vae, pipeline.latent_stats
    if refiner is not None:
        z = refine_latent(refiner, base_to_refiner_latent(z, stats, refiner), prompt, hi_thw,
                          steps=refine_steps or steps, cfg_scale=cfg_scale, seed=int(seed) + 1, heun=heun,
                          negative_prompt=negative_prompt, timer=timer,
                          autocast=autocast_for(refiner.config, device))
        vae, stats = refiner.vae, refiner.latent_stats
    decode = vae.decode
    if thin_decoder is not None:
        decode = as_thin_decoder(thin_decoder, vae.cfg, device)
    with timer.section("vae_decode_s"):
        video = decode(stats.denormalize(z))
    return video[0].float().clamp(-1.0, 1.0).cpu()


@torch.no_grad()
def to_uint8_frames(video: torch.Tensor) -> np.ndarray:
    """[3, T, H, W] in [-1, 1] -> [T, H, W, 3] uint8."""
    if video.dim() != 4 or video.shape[0] != 3:
        raise ValueError(f"video must be [3, T, H, W], got {tuple(video.shape)}")
    v = ((video.detach().float().cpu().clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)
    return v.permute(1, 2, 3, 0).contiguous().numpy()


def write_mp4(video: torch.Tensor, path: str | os.PathLike[str], fps: float, crf: int = 18) -> Path:
    """Encode [3, T, H, W] in [-1, 1] as H.264 (libx264, yuv420p) in an mp4 container.

    Odd heights/widths are padded by one replicated row/column (yuv420p needs even sizes). The file
    is written to ``<path>.part``, fsynced and renamed, so ``path`` is either absent or complete.
    """
    import av

    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    frames = to_uint8_frames(video)
    _, h, w, _ = frames.shape
    if h % 2 or w % 2:
        frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    rate = Fraction(fps).limit_denominator(1001)
    try:
        with open(tmp, "wb") as f:
            with av.open(f, mode="w", format="mp4") as container:
                stream = container.add_stream("libx264", rate=rate)
                stream.width, stream.height = frames.shape[2], frames.shape[1]
                stream.pix_fmt = "yuv420p"
                stream.options = {"crf": str(crf), "preset": "medium"}
                for arr in frames:
                    for packet in stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                        container.mux(packet)
                for packet in stream.encode():
                    container.mux(packet)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def load_for_generation(ckpt: str | os.PathLike[str], refine: Any = None, thin_decoder: Any = None,
                        use_ema: bool = True, device: str = "cpu") -> tuple[Pipeline, Any, Any]:
    """The pipeline of ``ckpt``, plus the refiner and thin decoder (paths or loaded), loaded once."""
    pipeline = load_pipeline(ckpt, use_ema=use_ema, device=device)
    if refine is not None:
        refine = as_refiner(refine, device)
    if thin_decoder is not None:
        thin_decoder = as_thin_decoder(thin_decoder, (refine or pipeline).vae.cfg, device)
    return pipeline, refine, thin_decoder


def generate_to_file(ckpt: str | os.PathLike[str], prompt: str, out: str | os.PathLike[str],
                     image: ImageInput | None = None, device: str = "cpu", use_ema: bool = True,
                     rewrite: Any = None, **kw: Any) -> dict[str, Any]:
    """Load a "dit" checkpoint (file or run directory), generate, write ``out`` as mp4 and the
    summary next to it (``out`` with suffix ``.json``).

    Args:
        ckpt: checkpoint file or run directory (its newest loadable checkpoint).
        prompt, image, **kw: ``generate``'s arguments (n_frames, size, fps, steps (or "auto"),
            adaptive, cfg_scale, seed, heun, negative_prompt, refine, refine_steps, thin_decoder).
        out: output mp4 path.
        device: torch device for the models.
        use_ema: EMA weights (default) or the raw trained weights.
        rewrite: rewrite the prompt first (``rewrite_prompt``); the record goes in the summary.

    Returns:
        Summary: path, prompt, frames, size [H, W], fps, seconds, step, seed, steps (the steps sampled),
        cfg_scale, image, elapsed_s, timings (``Timer.KEYS`` plus load_s and write_s), refine and
        thin_decoder (paths or None), adaptive (``steps="auto"``'s record, else None), rewrite (the
        rewrite record: original, rewritten, source, checks, failure; None without one), json (the
        summary file).

    Raises:
        FileNotFoundError: no checkpoint (or conditioning image) at the given path.
        ValueError: not a "dit" checkpoint, or invalid settings.
    """
    start = time.perf_counter()
    timings: dict[str, Any] = {}
    pipeline, refine, thin = load_for_generation(ckpt, kw.pop("refine", None), kw.pop("thin_decoder", None),
                                                 use_ema, device)
    timings["load_s"] = round(time.perf_counter() - start, 6)
    n_frames, size, fps = resolve_settings((refine or pipeline).config, kw.pop("n_frames", None),
                                           kw.pop("size", None), kw.pop("fps", None))
    used, record = rewrite_prompt(prompt, rewrite)
    info: dict[str, Any] = {}
    video = generate(pipeline, used, image, n_frames=n_frames, size=size, fps=fps, refine=refine,
                     thin_decoder=thin, timings=timings, info=info, **kw)
    write_start = time.perf_counter()
    path = write_mp4(video, out, fps)
    timings["write_s"] = round(time.perf_counter() - write_start, 6)
    t = int(video.shape[1])
    summary = {
        "path": str(path), "prompt": prompt, "frames": t, "size": [int(video.shape[2]), int(video.shape[3])],
        "fps": fps, "seconds": t / fps, "step": pipeline.step, "seed": kw.get("seed", 0),
        "steps": info["steps"],
        "cfg_scale": kw.get("cfg_scale", 4.0), "image": None if image is None else str(image),
        "elapsed_s": round(time.perf_counter() - start, 3), "timings": timings,
        "refine": _source(refine), "thin_decoder": _source(thin), "adaptive": info.get("adaptive"),
        "rewrite": record, "json": str(Path(path).with_suffix(".json")),
    }
    write_summary(summary, summary["json"])
    return summary


def _source(obj: Any) -> str | None:
    """The checkpoint path a loaded refiner / thin decoder came from (None when not used)."""
    return None if obj is None else str(getattr(obj, "source", None) or obj)
