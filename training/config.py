"""Training config: one nested dataclass per run, named presets, saved inside every checkpoint.

A preset composes the VAE, text encoder and DiT configs with the optimisation settings and the
progressive stages (Seedance 1.0 §3: image -> short low-res video -> higher resolution and fps).
``load_train_config`` starts from a preset, applies an optional YAML file and then
``key=value`` / ``section.key=value`` overrides, with the curation config's rules
(``pipelines.config.apply``). Stage lists are replaced whole (a YAML list of mappings).

Stage lengths are fractions of ``steps``, so ``--steps N`` rescales the whole schedule.

``post`` holds one section per post-training method (``training/post/config.py``): a post-training
run's config is its base checkpoint's with the method's schedule and ``post`` settings, and every
checkpoint stores the whole tree.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from models.dit.model import DiTConfig
from models.text_encoder import ByteEncoderConfig, TextEncoderConfig
from models.vae.causal_vae import VAEConfig
from pipelines.config import apply, plain
from training.post.config import PostConfig


@dataclass
class StageConfig:
    """One progressive-training stage.

    Attributes:
        name: label in logs and checkpoints.
        fraction: share of the run's steps (stages are normalised to sum to 1).
        n_frames: pixel frames per sample; 1 = images (T2I), else 1 + 4k (VAE temporal stride).
        size: (H, W) every sample is resized to.
        fps: frame rate the frames are sampled at.
        global_batch: samples per optimizer step over all ranks.
        i2v_share: share of video samples trained as image-to-video (first latent frame given).
        sample_mode: "first" frames or a "uniform"ly drawn window of each clip.
        data: this stage's shards directory (e.g. latents encoded at its size); "" = the run's data.
    """

    name: str = "video"
    fraction: float = 1.0
    n_frames: int = 9
    size: tuple[int, int] = (32, 64)
    fps: float = 8.0
    global_batch: int = 4
    i2v_share: float = 0.2
    sample_mode: Literal["first", "uniform"] = "first"
    data: str = ""


@dataclass
class TrainConfig:
    """Everything one training run needs; ``asdict`` of it is stored in each checkpoint."""

    preset: str = "tiny"  # the preset this config started from (recorded, not re-applied)
    seed: int = 0  # seeds the weights, the loader order and every per-step random draw
    steps: int = 200  # DiT optimizer steps over all stages (stage lengths are fractions of it)
    lr: float = 1e-3  # AdamW peak learning rate
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 10  # linear warm-up from 0 to lr
    weight_decay: float = 0.01  # decoupled (AdamW); not on biases and norm gains
    betas: tuple[float, float] = (0.9, 0.99)  # AdamW betas
    grad_clip: float = 1.0  # global gradient-norm clip
    ema_decay: float = 0.995  # float32 EMA of the trainable weights (generation uses it)
    bf16: bool = True  # autocast on CUDA only; CPU runs stay float32 (exact resume)
    compile: bool = False  # CUDA only: torch.compile each DiT block in place (``DiT.compile_blocks``)
    text_dropout: float = 0.1  # empty caption share, for classifier-free guidance
    caption_lang: Literal["both", "en", "zh"] = "both"  # caption language(s) drawn per sample
    timestep_shift: bool = True  # resolution/length-aware shift of the sampled timesteps
    stages: list[StageConfig] = field(default_factory=lambda: [StageConfig()])  # progressive stages, in order
    n_canonical: int = 16  # partitions the global order is shuffled in (it never depends on the world size)
    num_workers: int = 2  # loader prefetch threads per rank (the output does not depend on it)
    log_every: int = 10  # steps between log lines
    ckpt_every: int = 50  # steps between checkpoints
    keep_ckpts: int = 2  # newest checkpoints kept (older ones are deleted)
    eval_every: int = 50  # steps between held-out evaluations (fixed samples, timesteps and noise)
    eval_samples: int = 4  # held-out samples per evaluation
    vae: VAEConfig = field(default_factory=VAEConfig.tiny)
    dit: DiTConfig = field(default_factory=DiTConfig.tiny)
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    # The VAE is trained first (same loop, ``VAETrainer``) when ``vidloom train`` is given no --vae.
    vae_steps: int = 300
    vae_lr: float = 2e-3  # the VAE's learning rate
    vae_kl_weight: float = 1e-4  # weight of the KL term in the VAE loss
    vae_stage: StageConfig = field(
        default_factory=lambda: StageConfig(name="vae", n_frames=9, size=(64, 128), global_batch=4))
    # the post-training methods' settings (training/post/config.py), ``vidloom post METHOD``
    post: PostConfig = field(default_factory=PostConfig)

    def stage_bounds(self) -> list[tuple[int, int]]:
        """[start, end) step range of every stage; the last ends at ``steps``."""
        total = sum(s.fraction for s in self.stages)
        bounds, start, acc = [], 0, 0.0
        for i, s in enumerate(self.stages):
            acc += s.fraction
            end = self.steps if i == len(self.stages) - 1 else round(self.steps * acc / total)
            bounds.append((start, end))
            start = end
        return bounds

    def stage_at(self, step: int) -> int:
        """Index of the stage that trains ``step`` (0-based)."""
        for i, (_, end) in enumerate(self.stage_bounds()):
            if step < end:
                return i
        return len(self.stages) - 1


def tiny() -> TrainConfig:
    """CPU preset: ~0.5 M-param DiT, 40 k-param VAE, byte text encoder; minutes on 2 cores."""
    text = TextEncoderConfig(kind="byte", byte=ByteEncoderConfig(dim=32, depth=1, heads=2, max_len=96))
    vae = VAEConfig.tiny()
    dit = dataclasses.replace(DiTConfig.tiny(), in_channels=vae.latent_channels, text_dim=text.byte.dim)
    stages = [
        StageConfig("image", 0.2, n_frames=1, size=(32, 64), global_batch=8, i2v_share=0.0),
        StageConfig("video-low", 0.5, n_frames=9, size=(32, 64), fps=8.0, global_batch=4),
        StageConfig("video-high", 0.3, n_frames=9, size=(64, 128), fps=12.0, global_batch=4),
    ]
    return TrainConfig(preset="tiny", vae=vae, dit=dit, text=text, stages=stages)


def small() -> TrainConfig:
    """One GPU: ~33 M-param DiT over the (4, 8, 8) x 16-channel VAE, MiniLM text."""
    text = TextEncoderConfig(kind="minilm")
    vae = VAEConfig.small()
    dit = dataclasses.replace(DiTConfig.small(), in_channels=vae.latent_channels, text_dim=384)
    stages = [
        StageConfig("image", 0.2, n_frames=1, size=(256, 448), global_batch=64, i2v_share=0.0),
        StageConfig("video-low", 0.5, n_frames=17, size=(256, 448), fps=12.0, global_batch=16),
        StageConfig("video-high", 0.3, n_frames=33, size=(384, 640), fps=24.0, global_batch=8),
    ]
    return TrainConfig(preset="small", lr=2e-4, warmup_steps=500, ema_decay=0.9999, steps=20000,
                       vae=vae, dit=dit, text=text, stages=stages, vae_steps=20000, vae_lr=1e-4,
                       vae_stage=StageConfig("vae", n_frames=17, size=(256, 256), global_batch=16),
                       ckpt_every=1000, eval_every=1000, log_every=50)


def b1() -> TrainConfig:
    """~1 B-param DiT on the Seedance-scale (4, 16, 16) x 48-channel VAE; text from a local LLM/T5."""
    cfg = small()
    cfg.preset = "b1"
    cfg.vae = VAEConfig.seedance()
    cfg.dit = dataclasses.replace(DiTConfig.b1(), in_channels=cfg.vae.latent_channels)
    cfg.text = TextEncoderConfig(kind="hf")
    cfg.text.hf.dtype = "bfloat16"
    cfg.text.hf.device = "cuda"
    cfg.dit.text_dim = 4096
    cfg.stages = [
        StageConfig("image", 0.2, n_frames=1, size=(256, 512), global_batch=256, i2v_share=0.0),
        StageConfig("video-low", 0.5, n_frames=49, size=(256, 512), fps=12.0, global_batch=64),
        StageConfig("video-high", 0.3, n_frames=121, size=(512, 896), fps=24.0, global_batch=32),
    ]
    return cfg


PRESETS = {"tiny": tiny, "small": small, "b1": b1}


def to_dict(cfg: TrainConfig) -> dict[str, Any]:
    """Plain nested dict (tuples as lists): what checkpoints and config.yaml store."""
    return plain(dataclasses.asdict(cfg))


def from_dict(d: dict[str, Any]) -> TrainConfig:
    """Inverse of ``to_dict``, starting from the named preset so new fields keep defaults."""
    cfg = PRESETS[d.get("preset", "tiny")]()
    update_config(cfg, d)
    return cfg


# mappings that a layer replaces whole instead of adding keys to (the ReFL reward set)
REPLACE_WHOLE = (("post", "rlhf", "rewards"),)


def update_config(cfg: TrainConfig, values: dict[str, Any]) -> None:
    """Apply a nested dict; ``stages`` (a list of mappings), ``vae_stage`` and the mappings of
    ``REPLACE_WHOLE`` replace whole."""
    values = dict(values)
    for path in REPLACE_WHOLE:
        node: Any = values
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            owner: Any = cfg
            for part in path[:-1]:
                owner = getattr(owner, part)
            setattr(owner, path[-1], {})
    if "stages" in values:
        cfg.stages = [_stage(s) for s in values.pop("stages")]
    if "vae_stage" in values:
        cfg.vae_stage = _stage(values.pop("vae_stage"))
    apply(cfg, values)


def _stage(d: dict[str, Any] | StageConfig) -> StageConfig:
    if isinstance(d, StageConfig):
        return d
    stage = StageConfig()
    apply(stage, d)
    return stage


def load_train_config(preset: str = "tiny", path: str | Path | None = None,
                      overrides: list[str] | None = None) -> TrainConfig:
    """Preset, then YAML file, then ``a.b=value`` overrides (values parsed as YAML)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    cfg = PRESETS[preset]()
    if path is not None:
        update_config(cfg, yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {})
    return apply_overrides(cfg, overrides)


def apply_overrides(cfg: TrainConfig, overrides: list[str] | None) -> TrainConfig:
    """Apply ``key=value`` / ``section.key=value`` overrides (values parsed as YAML; ``stages`` and
    ``vae_stage`` take a YAML list / mapping and replace whole). Returns ``cfg``."""
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} must look like key=value or section.key=value")
        nested: dict[str, Any] = {}
        node = nested
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = yaml.safe_load(raw) if parts[-1] in ("stages", "vae_stage") else raw
        update_config(cfg, nested)
    return cfg


# config layers: ``key=value`` strings and nested mappings, applied in order (a mapping alone is one layer)
Layers = list[str | dict[str, Any]] | list[str] | dict[str, Any] | None


def apply_layers(cfg: TrainConfig, layers: Layers) -> TrainConfig:
    """Apply each layer in order: a ``key=value`` string (``apply_overrides``) or a nested mapping
    (``update_config``). Returns ``cfg``."""
    for layer in [layers] if isinstance(layers, dict) else layers or []:
        if isinstance(layer, dict):
            update_config(cfg, layer)
        else:
            apply_overrides(cfg, [layer])
    return cfg


def sets_key(layers: Layers, key: str) -> bool:
    """Whether any of ``layers`` sets the dotted ``key``."""
    for layer in [layers] if isinstance(layers, dict) else layers or []:
        if isinstance(layer, dict):
            node: Any = layer
            for part in key.split("."):
                node = node.get(part, _MISSING) if isinstance(node, dict) else _MISSING
            if node is not _MISSING:
                return True
        elif layer.partition("=")[0].strip() == key:
            return True
    return False


_MISSING = object()
