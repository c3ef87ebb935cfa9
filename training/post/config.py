"""The post-training methods' configs: one section per method under ``post`` of the training tree.

``TrainConfig.post`` (``training/config.py``) composes them, so ``--set post.rlhf.beta=0.2``, a
``post:`` mapping in a ``--config`` YAML file and a preset set them the same way as any training
key, checked by the same mechanism (``pipelines.config.apply``: types from the annotations,
``Literal`` choices, and the ranges registered here). Each default is written once, here; the
trainers (``training/post/*.py``) read them from ``cfg.post.<method>`` and their checkpoints store
the whole resolved tree (``config``).

The sections live in this one module rather than in each trainer's: ``training/config.py`` imports
them, and a trainer module imports torch models and ``training.config`` itself.

Which section each ``vidloom post METHOD`` reads (training/post/methods.py):

- ``sft``, ``refine-sft``: ``post.sft``; ``merge``: ``post.merge``;
- ``rlhf``: ``post.rlhf`` (the ReFL objective and its schedule) and ``post.rlhf_rounds``;
  ``refine-rlhf``: ``post.rlhf`` and ``post.refine_rlhf``; ``rlhf-compare``: ``post.rlhf``,
  ``post.flow_dpo`` and ``post.rlhf_compare``;
- ``cfg``: ``post.cfg``; ``tscd``: ``post.tscd``; ``dmd`` / ``adv``: ``post.dmd`` / ``post.adv`` and
  ``post.tscd`` (guidance, teacher grid, substeps, heun of their TSCD regulariser);
  ``distill-report``: ``post.distill_report``;
- ``refine``: ``post.refine``; ``thin-decoder``: ``post.thin_decoder``.

Two defaults had two values before this tree: ``post.rlhf_rounds.steps_per_round`` is 50 and
``post.rlhf_compare.grad_passes`` 256, the values the CLI ran (the Python API and the flow had
20 and 64).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from pipelines import config_check
from pipelines.config import plain


@dataclass
class SFTConfig:
    init: Literal["ema", "net"] = "ema"  # start from the base's EMA weights or its raw weights
    lr_factor: float = 0.2  # SFT learning rate = base lr * this (not again for an SFT of an SFT)
    steps_share: float = 0.1  # default SFT steps = this share of the base run's steps ...
    min_steps: int = 10  # ... and at least this many
    warmup_share: float = 0.05  # warm-up = this share of the SFT steps (>= 1, <= the base's warm-up)


@dataclass
class MergeConfig:
    # one weight per checkpoint, normalised to sum 1; empty = uniform
    weights: tuple[float, ...] = ()


@dataclass
class ReFLConfig:
    """The ReFL objective (training/post/refl.py), used by the DiT's and the refiner's RLHF, and the
    schedule of one ReFL run over the base checkpoint's config."""

    # optimised rewards and weights (models/rewards); a mapping given whole replaces this one
    rewards: dict[str, float] = field(default_factory=lambda: {"motion": 1.0, "aesthetic_proxy": 1.0})
    beta: float = 0.1  # weight of the reference-velocity regulariser
    sample_steps: int = 8  # Euler steps N of each rollout
    grad_steps: int = 1  # differentiated last steps K (truncated backprop through the sampler)
    # x0-prediction step drawn per step from [lo, hi] (null: the last step, the full sample)
    stop_range: tuple[int, int] | None = None
    cfg_scale: float = 1.0  # guidance while sampling (1 = none; else the negative is the empty caption)
    lr: float = 1e-4  # constant learning rate, no warm-up
    global_batch: int = 4  # prompts per optimizer step
    n_frames: int | None = None  # pixel frames of the "rlhf" stage (null: the base's last stage's)
    size: tuple[int, int] | None = None  # (H, W) of the "rlhf" stage (null: the base's last stage's)


@dataclass
class RLHFRoundsConfig:
    rounds: int = 2  # policy-training rounds (reward models retrained between them)
    steps_per_round: int = 50  # ReFL optimizer steps per round
    heldout_reward: str = "stability"  # reward monitored on held-out prompts, never optimised
    n_heldout: int = 4  # prompts held out for evaluation when no held-out prompts are given
    samples_per_prompt: int = 2  # videos sampled per prompt to label new preference pairs
    reward_steps: int = 20  # optimizer steps of each learned reward head's retraining


@dataclass
class FlowDPOConfig:
    beta: float = 500.0  # Flow-DPO inverse temperature
    eval_pairs: int = 8  # pairs scored by each evaluation
    lr: float | None = None  # its learning rate (null: post.rlhf.lr)


@dataclass
class RLHFCompareConfig:
    grad_passes: int = 256  # DiT forward+backward budget of each method
    samples_per_prompt: int = 4  # base-policy samples per prompt for Flow-DPO's pairs


@dataclass
class RefineRLHFConfig:
    steps: int = 100  # ReFL optimizer steps on the refiner
    base_steps: int = 8  # Euler steps of the frozen base for each low-res latent


@dataclass
class CFGDistillConfig:
    guidance_range: tuple[float, float] = (1.0, 6.0)  # guidance scales w ~ U(lo, hi) the student learns


@dataclass
class TSCDConfig:
    guidance: float = 4.0  # CFG scale of the targets (and the student's guidance input)
    segments: tuple[int, ...] = (8, 4, 2, 1)  # segment counts of the successive phases
    teacher_steps: int = 50  # teacher grid: one teacher step is 1 / this
    substeps: int = 1  # teacher steps before the EMA target
    heun: bool = False  # second-order teacher steps


@dataclass
class DMDConfig:
    segments: tuple[int, ...] = (4,)  # the student's steps (segment counts of successive phases)
    critic_lr: float = 1e-4  # learning rate of the fake-score critic
    critic_betas: tuple[float, float] = (0.9, 0.99)  # the critic's AdamW betas
    fake_updates: int = 1  # critic updates per generator step
    dmd_weight: float = 0.02  # weight of the distribution-matching term
    reg_weight: float = 1.0  # weight of the TSCD regulariser (0: off)


@dataclass
class AdvConfig:
    segments: tuple[int, ...] = (4,)  # the student's steps (segment counts of successive phases)
    disc_blocks: int = 1  # teacher block pairs in the discriminator backbone
    disc_hidden: int = 128  # width of each discriminator head
    disc_lr: float = 1e-4  # learning rate of the discriminator heads
    disc_betas: tuple[float, float] = (0.0, 0.99)  # the heads' AdamW betas
    reg_weight: float = 1.0  # weight of the TSCD regulariser (0: off)


@dataclass
class DistillReportConfig:
    cfg_student: str = ""  # CFG-distilled run to report ("" = none)
    tscd: str = ""  # TSCD run directory whose segments_<S> students are reported ("" = none)
    steps: int = 50  # reference and CFG-student sampling steps
    teacher_steps: tuple[int, ...] = (4,)  # few-step teacher baselines
    guidance: float = 4.0  # guidance scale of every variant
    seed: int = 0  # noise seed of the prompts


@dataclass
class RefineConfig:
    size: tuple[int, int] = (64, 128)  # output (H, W) of the refiner; the base runs at half
    n_frames: int = 9  # pixel frames per training sample
    fps: float = 12.0  # frame rate the frames are sampled at
    upsample: Literal["nearest", "trilinear"] = "trilinear"  # latent upsampling of the low-res condition
    lowres_noise: float = 0.1  # max std of the Gaussian noise on the low-res latent in training
    steps: int = 200  # refiner optimizer steps
    lr: float = 5e-4  # the refiner's learning rate


@dataclass
class ThinDecoderConfig:
    width: float = 0.5  # channel multiplier of the thin decoder
    full_weight: float = 1.0  # weight of the terms matching the full decoder
    perturb: float = 2.0  # also distil on latents moved by up to this many latent stds (0: means only)
    init: Literal["random", "slice"] = "random"  # random weights, or the full decoder's leading channels
    generator_steps: int = 4  # sampler steps of the generator (with a --generator run)
    guidance: float = 4.0  # the generator's guidance scale


@dataclass
class PostConfig:
    """The post-training methods' sections (module doc)."""

    sft: SFTConfig = field(default_factory=SFTConfig)
    merge: MergeConfig = field(default_factory=MergeConfig)
    rlhf: ReFLConfig = field(default_factory=ReFLConfig)
    rlhf_rounds: RLHFRoundsConfig = field(default_factory=RLHFRoundsConfig)
    flow_dpo: FlowDPOConfig = field(default_factory=FlowDPOConfig)
    rlhf_compare: RLHFCompareConfig = field(default_factory=RLHFCompareConfig)
    refine_rlhf: RefineRLHFConfig = field(default_factory=RefineRLHFConfig)
    cfg: CFGDistillConfig = field(default_factory=CFGDistillConfig)
    tscd: TSCDConfig = field(default_factory=TSCDConfig)
    dmd: DMDConfig = field(default_factory=DMDConfig)
    adv: AdvConfig = field(default_factory=AdvConfig)
    distill_report: DistillReportConfig = field(default_factory=DistillReportConfig)
    refine: RefineConfig = field(default_factory=RefineConfig)
    thin_decoder: ThinDecoderConfig = field(default_factory=ThinDecoderConfig)


# ``vidloom post METHOD``: the sections each method reads and what it does (training/post/methods.py
# runs them; kept here, torch-free, so the command line is built without importing the trainers)
METHODS: dict[str, tuple[tuple[str, ...], str]] = {
    "sft": (("sft",), "fine-tune a trained DiT on shards or a catalog selection"),
    "merge": (("merge",), "average the weights of DiT checkpoints of one model (--base A --base B)"),
    "rlhf": (("rlhf", "rlhf_rounds"), "RLHF rounds (ReFL) with reward models"),
    "rlhf-compare": (("rlhf", "rlhf_rounds", "flow_dpo", "rlhf_compare"),
                     "ReFL vs Flow-DPO at equal DiT forward+backward passes"),
    "cfg": (("cfg",), "CFG distillation into a guidance-embedding student"),
    "tscd": (("tscd",), "trajectory-segmented consistency distillation (8 -> 4 -> 2 -> 1)"),
    "dmd": (("dmd", "tscd"), "score distillation (distribution matching, fake-score critic)"),
    "adv": (("adv", "tscd"), "adversarial distillation (DiT-initialised discriminator)"),
    "distill-report": (("distill_report",), "fidelity / reward of distilled students vs the teacher"),
    "refine": (("refine",), "train the cascade super-resolution refiner from a base DiT"),
    "refine-sft": (("sft",), "fine-tune a refiner on pixel shards or a catalog selection"),
    "refine-rlhf": (("rlhf", "refine_rlhf"), "ReFL on a refiner (low-res latents from the frozen base)"),
    "thin-decoder": (("thin_decoder",), "train a narrower VAE decoder against a frozen VAE"),
}

_POSITIVE = (0, None, True)  # > 0
_COUNT = (1, None, False)  # >= 1
_SHARE = (0, 1, False)  # in [0, 1]
# Ranges by section, checked at load time (unlisted numbers must be >= 0, config_check's rule).
RANGES: dict[str, dict[str, tuple[float | None, float | None, bool]]] = {
    "sft": {"lr_factor": _POSITIVE, "steps_share": (0, 1, True), "min_steps": _COUNT,
            "warmup_share": _SHARE},
    "rlhf": {"sample_steps": _COUNT, "grad_steps": _COUNT, "cfg_scale": _POSITIVE, "lr": _POSITIVE,
             "global_batch": _COUNT, "n_frames": _COUNT},
    "rlhf_rounds": {"rounds": _COUNT, "steps_per_round": _COUNT, "n_heldout": _COUNT,
                    "samples_per_prompt": (2, None, False)},
    "flow_dpo": {"beta": _POSITIVE, "eval_pairs": _COUNT, "lr": _POSITIVE},
    "rlhf_compare": {"grad_passes": _COUNT, "samples_per_prompt": (2, None, False)},
    "refine_rlhf": {"steps": _COUNT, "base_steps": _COUNT},
    "tscd": {"teacher_steps": _COUNT, "substeps": _COUNT},
    "dmd": {"critic_lr": _POSITIVE, "fake_updates": _COUNT},
    "adv": {"disc_blocks": _COUNT, "disc_hidden": _COUNT, "disc_lr": _POSITIVE},
    "distill_report": {"steps": _COUNT},
    "refine": {"n_frames": _COUNT, "fps": _POSITIVE, "steps": _COUNT, "lr": _POSITIVE},
    "thin_decoder": {"width": (0, 4, True), "generator_steps": _COUNT},
}


def register() -> None:
    """Register the ranges above with the config checks (``post.<section>.`` prefixes)."""
    for section, ranges in RANGES.items():
        config_check.register_checks(f"post.{section}.", ranges, {})


register()


def section_dict(section: Any) -> dict[str, Any]:
    """A section as a plain dict (tuples as lists): what a checkpoint's method entry records."""
    return plain(asdict(section))  # type: ignore[no-any-return]


def settings_tree(settings: Mapping[str, Any], sections: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    """Keyword settings as a ``post`` mapping: names listed under a section go there (a ``dpo_``
    prefix is dropped for ``flow_dpo``), every other name to ``rlhf`` (the ReFL objective)."""
    post: dict[str, Any] = {}
    for name, value in settings.items():
        if value is None:
            continue
        section = next((s for s, names in sections.items() if name in names), "rlhf")
        key = name.removeprefix("dpo_") if section == "flow_dpo" else name
        post.setdefault(section, {})[key] = list(value) if isinstance(value, tuple) else value
    return post
