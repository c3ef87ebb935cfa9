"""Video generation from a trained "dit" checkpoint: text-to-video, image-to-video, text-to-image.

``generate(pipeline, prompt, image=...)`` samples normalised latents with the DiT's rectified-flow
sampler (``models.dit.model.sample``), denormalises them with the checkpoint's latent statistics
and decodes them with its frozen VAE, returning ``[3, T, H, W]`` in [-1, 1]. ``write_mp4`` encodes
such a tensor with libx264 (yuv420p) atomically; ``generate_to_file`` does checkpoint -> file.

Settings mirror training (``training/dit_trainer.py``):

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

Options: ``refine=`` a "refiner" checkpoint (``training/refine.py``) makes it a cascade: the base
samples at ``size / scale``, the refiner samples ``size`` conditioned on the base latent (fresh noise
from ``seed + 1``). ``thin_decoder=`` a "thin_decoder" checkpoint (``training/thin_decoder.py``)
decodes instead of the full VAE decoder. ``timings=`` a dict that ``generate`` fills with seconds
per part (``Timer``); ``generate_to_file`` returns it under "timings".
"""

from __future__ import annotations

import contextlib
import os
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.dit.model import sample
from training.checkpoint import Pipeline, load_pipeline
from training.config import TrainConfig
from training.flow_matching import resolution_shift

ImageInput = str | os.PathLike[str] | Any  # a path, or a PIL image


def resolve_settings(cfg: TrainConfig, n_frames: int | None = None, size: tuple[int, int] | None = None,
                     fps: float | None = None) -> tuple[int, tuple[int, int], float]:
    """(n_frames, (H, W), fps): defaults from the last stage, validated against the VAE and DiT.

    Raises:
        ValueError: n_frames is not 1 + dt * k, H or W is not a multiple of
            VAE stride * patch * window, the latent frames do not divide by the temporal patch,
            or fps <= 0.
    """
    last = cfg.stages[-1]
    n_frames = int(last.n_frames if n_frames is None else n_frames)
    h, w = (int(v) for v in (last.size if size is None else size))
    fps = float(last.fps if fps is None else fps)
    dt, dh, dw = cfg.vae.downsample
    pt, ph, pw = cfg.dit.patch
    wh, ww = cfg.dit.window
    if n_frames < 1 or (n_frames - 1) % dt:
        raise ValueError(f"n_frames must be 1 + {dt}k (1, {1 + dt}, {1 + 2 * dt}, ...), got {n_frames}")
    if (1 + (n_frames - 1) // dt) % pt:
        raise ValueError(f"n_frames {n_frames} gives {1 + (n_frames - 1) // dt} latent frames, "
                         f"not divisible by the DiT's temporal patch {pt}")
    mh, mw = dh * ph * wh, dw * pw * ww
    if h <= 0 or w <= 0 or h % mh or w % mw:
        raise ValueError(f"size (H, W) = {(h, w)} must be positive multiples of ({mh}, {mw}) "
                         f"(VAE stride {(dh, dw)} x patch {(ph, pw)} x window {(wh, ww)})")
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    return n_frames, (h, w), fps


def load_image(image: ImageInput, size: tuple[int, int]) -> torch.Tensor:
    """An image (path or PIL image; a video path gives its first frame) -> [3, H, W] in [-1, 1].

    Center-cropped to the aspect of ``size`` = (H, W), then resized (box filter when shrinking).
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    if isinstance(image, Image.Image):
        img = image
    else:
        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(f"conditioning image {path} does not exist")
        try:
            with Image.open(path) as f:
                img = ImageOps.exif_transpose(f)
                img.load()
        except UnidentifiedImageError:
            img = _first_video_frame(path)
    img = img.convert("RGB")
    h, w = size
    iw, ih = img.size
    if iw * h > ih * w:  # wider than the target: crop the sides
        cw, ch = max(1, round(ih * w / h)), ih
    else:
        cw, ch = iw, max(1, round(iw * h / w))
    left, top = (iw - cw) // 2, (ih - ch) // 2
    img = img.crop((left, top, left + cw, top + ch))
    shrink = cw >= w and ch >= h
    img = img.resize((w, h), Image.Resampling.BOX if shrink else Image.Resampling.BICUBIC)
    arr = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).float()
    return (arr / 127.5 - 1.0).clamp(-1.0, 1.0)


def _first_video_frame(path: Path) -> Any:
    import av

    try:
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                return frame.to_image()
    except (av.error.FFmpegError, IndexError) as e:
        raise ValueError(f"{path} is neither an image nor a video: {e}") from e
    raise ValueError(f"{path} has no video frames")


class Timer:
    """Seconds per part of one generation: text encoding, DiT passes (count and total), refiner
    passes, VAE decode. CUDA work is synchronised before each reading."""

    KEYS = ("text_s", "dit_passes", "dit_s", "refiner_passes", "refiner_s", "vae_decode_s")

    def __init__(self, out: dict[str, Any] | None = None) -> None:
        self.out = {} if out is None else out
        for k in self.KEYS:
            self.out.setdefault(k, 0)

    @contextlib.contextmanager
    def section(self, key: str) -> Any:
        _sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            _sync()
            self.out[key] = round(self.out.get(key, 0.0) + time.perf_counter() - start, 6)

    def counted(self, model: Any, key: str) -> Any:
        """``model`` as a callable that adds one to ``out[key]`` per call (a DiT pass)."""

        def call(*args: Any, **kwargs: Any) -> Any:
            self.out[key] = self.out.get(key, 0) + 1
            return model(*args, **kwargs)

        return call


def _sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def _device(pipeline: Pipeline) -> torch.device:
    return next(pipeline.dit.parameters()).device


def _autocast(cfg: TrainConfig, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast for the DiT on CUDA when the run trained in bf16; float32 elsewhere."""
    if device.type == "cuda" and cfg.bf16:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def encode_condition(pipeline: Pipeline, image: ImageInput, size: tuple[int, int]) -> torch.Tensor:
    """Normalised latent [1, C, 1, H', W'] of the conditioning image (posterior mean)."""
    device = _device(pipeline)
    pixels = load_image(image, size)[None, :, None].to(device)  # [1, 3, 1, H, W]
    z = pipeline.vae.encode(pixels).mean.float()
    return pipeline.latent_stats.normalize(z)


@torch.no_grad()
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
        pipeline: ``training.checkpoint.load_pipeline`` of a "dit" checkpoint.
        prompt: the caption.
        image: optional first frame (path or PIL image): image-to-video.
        n_frames: pixel frames, 1 + dt * k (1 = an image); default the last stage's.
        size: (H, W); default the last stage's.
        fps: validated only (the DiT has no fps input); ``generate_to_file`` writes it.
        steps: sampler steps (NFE = steps, x2 with Heun, x2 with CFG), or "auto": a probe of the
            velocity field picks them (``training/adaptive_steps.py``; its passes are counted).
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
        from training.refine import as_refiner

        refiner = as_refiner(refine, _device(pipeline))
        n_frames, size, _ = resolve_settings(refiner.config, n_frames, size, fps)
        hi_thw = refiner.config.vae.latent_shape(n_frames, *size)
        size = refiner.low_size(size)
    n_frames, (h, w), _ = resolve_settings(cfg, n_frames, size, fps)
    if steps != "auto" and (not isinstance(steps, int) or steps < 1):
        raise ValueError(f"steps must be an integer >= 1 or 'auto', got {steps!r}")
    if image is not None and n_frames == 1:
        raise ValueError("image-to-video needs n_frames > 1 (one frame would only reconstruct the image)")
    device = _device(pipeline)
    prepared = prepare(pipeline, prompt, image, n_frames, (h, w), cfg_scale, negative_prompt, seed, timer)
    noise, kwargs, uncond, base_cfg_scale, shift = prepared
    info = {} if info is None else info
    first_velocity = None
    if steps == "auto":
        from training.adaptive_steps import Plan, auto_steps

        plan = adaptive if isinstance(adaptive, Plan) else auto_steps(
            pipeline, prepared, adaptive, heun, timer, settings=(image, n_frames, (h, w), cfg_scale,
                                                                 negative_prompt, seed))
        steps, info["adaptive"], first_velocity = plan.steps, plan.record, plan.first_velocity
    info["steps"] = int(steps)
    with _autocast(cfg, device), timer.section("dit_s"):
        model = timer.counted(pipeline.dit, "dit_passes")
        if first_velocity is not None:  # the probe's t = 1 velocity is the first Euler step's
            from training.adaptive_steps import sample_euler

            z = sample_euler(model, noise, kwargs, int(steps), shift, base_cfg_scale, uncond, first_velocity)
        else:
            z = sample(model, noise, kwargs, steps, shift=shift, cfg_scale=base_cfg_scale,
                       uncond_kwargs=uncond, heun=heun)
    z = z.float()
    if image is not None:  # exact, whatever autocast did to the rest
        z[:, :, :1] = kwargs["cond"][:, :, :1]
    vae, stats = pipeline.vae, pipeline.latent_stats
    if refiner is not None:
        from training.refine import base_to_refiner_latent, refine_latent

        z = refine_latent(refiner, base_to_refiner_latent(z, stats, refiner), prompt, hi_thw,
                          steps=refine_steps or steps, cfg_scale=cfg_scale, seed=int(seed) + 1, heun=heun,
                          negative_prompt=negative_prompt, timer=timer,
                          autocast=_autocast(refiner.config, device))
        vae, stats = refiner.vae, refiner.latent_stats
    decode = vae.decode
    if thin_decoder is not None:
        from training.thin_decoder import as_thin_decoder

        decode = as_thin_decoder(thin_decoder, vae.cfg, device)
    with timer.section("vae_decode_s"):
        video = decode(stats.denormalize(z))
    return video[0].float().clamp(-1.0, 1.0).cpu()


@torch.no_grad()
def prepare(pipeline: Pipeline, prompt: str, image: ImageInput | None, n_frames: int, size: tuple[int, int],
            cfg_scale: float, negative_prompt: str, seed: int, timer: Timer | None = None
            ) -> tuple[torch.Tensor, dict[str, Any], dict[str, Any] | None, float, float]:
    """What sampling one prompt starts from: (noise, DiT kwargs, CFG negative kwargs or None, the
    sampler's CFG scale, the timestep shift); settings already validated (``resolve_settings``)."""
    cfg = pipeline.config
    timer = timer or Timer()
    h, w = size
    device = _device(pipeline)
    lt, lh, lw = cfg.vae.latent_shape(n_frames, h, w)
    shape = (1, cfg.dit.in_channels, lt, lh, lw)
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(int(seed))).to(device)

    def text_kwargs(caption: str) -> dict[str, Any]:
        with timer.section("text_s"):
            emb, mask = pipeline.text_encoder.encode([caption])
            return {"text": emb.float().to(device), "text_mask": mask.to(device)}

    kwargs = text_kwargs(prompt)
    uncond, base_cfg_scale = None, cfg_scale
    if cfg.dit.guidance_embed:  # a CFG-distilled student: one pass per step, the scale is an input
        kwargs["guidance"] = torch.full((1,), float(cfg_scale), device=device)
        base_cfg_scale = 1.0
    elif cfg_scale != 1.0:  # only plain CFG needs the negative caption encoded
        uncond = text_kwargs(negative_prompt)
    if image is not None:
        cond = torch.zeros(shape, device=device)
        cond[:, :, :1] = encode_condition(pipeline, image, (h, w))
        cond_mask = torch.zeros(1, lt, dtype=torch.bool, device=device)
        cond_mask[:, 0] = True
        kwargs.update(cond=cond, cond_mask=cond_mask)
    shift = 1.0
    if cfg.timestep_shift:
        pt, ph, pw = cfg.dit.patch
        shift = resolution_shift((lt // pt) * (lh // ph) * (lw // pw))
    return noise, kwargs, uncond, base_cfg_scale, shift


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
        from training.refine import as_refiner

        refine = as_refiner(refine, device)
    if thin_decoder is not None:
        from training.thin_decoder import as_thin_decoder

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
    from training.generate_record import rewrite_prompt, write_summary

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
