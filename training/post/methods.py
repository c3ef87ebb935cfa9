"""The post-training methods by name: how each resolves its config and runs (``vidloom post METHOD``,
``flows/post_flow.py``).

``resolve(method, inputs, preset, path, overrides)`` builds the whole ``TrainConfig`` of a run: the
method's starting config (its base checkpoint's: ``sft_config``, ``rlhf_config``, ``distill_config``,
``refine_config``, ...) with fresh ``post`` settings, over which the layers are applied in order: the
``post`` section of ``--preset`` (a training preset: ``training.config.PRESETS``), the YAML file,
then the ``--set`` items. ``run(method, cfg, inputs, out)`` writes the resolved config next to the
output (``out/config.yaml``; a run directory holding another config is refused, as for
``vidloom train``) and trains; every checkpoint stores the same tree.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from training.config import PRESETS, Layers, TrainConfig, from_dict, to_dict
from training.loop.checkpoint import load_checkpoint, resolve_checkpoint
from training.post.config import METHODS as POST_METHODS
from training.post.inputs import RunInputs


@dataclass(frozen=True)
class Method:
    name: str
    sections: tuple[str, ...]  # the ``post`` sections it reads
    help: str
    config: Callable[[RunInputs, list[Any]], TrainConfig]
    run: Callable[[TrainConfig, RunInputs, Path, str | None, bool], dict[str, Any]]
    writes_config: bool = True  # False: the method writes config.yaml itself (SFT: its own checks)


# --------------------------------------------------------------------------- configs


def _sft_config(inputs: RunInputs, layers: list[Any]) -> TrainConfig:
    from training.post.sft import sft_config

    base = load_checkpoint(resolve_checkpoint(inputs.base))
    if base.get("kind") != "dit":
        raise ValueError(f"{inputs.base} is a {base.get('kind')!r} checkpoint; SFT needs a 'dit' one")
    return sft_config(from_dict(base["config"]), overrides=layers)


def _merge_config(inputs: RunInputs, layers: list[Any]) -> TrainConfig:
    from training.config import apply_layers
    from training.post.config import PostConfig

    if len(inputs.checkpoints) < 2:
        raise ValueError("merging needs at least two checkpoints (--base A --base B ...)")
    cfg = from_dict(load_checkpoint(resolve_checkpoint(inputs.checkpoints[0]))["config"])
    cfg.post = PostConfig()
    return apply_layers(cfg, layers)


def _rounds_config(inputs: RunInputs, layers: list[Any]) -> TrainConfig:
    from training.post.rlhf_rounds import rounds_config

    return rounds_config(inputs.base, layers)


def _compare_config(inputs: RunInputs, layers: list[Any]) -> TrainConfig:
    from training.post.flow_dpo import compare_config

    return compare_config(inputs.base, layers)[0]


def _distill_config(inputs: RunInputs, layers: list[Any], mode: str) -> TrainConfig:
    from training.post.distill import distill_config

    source = inputs.init or inputs.base
    embed = True
    if mode != "cfg" and source != inputs.base:  # the student keeps its init checkpoint's architecture
        embed = bool(load_checkpoint(resolve_checkpoint(source))["config"]["dit"].get("guidance_embed"))
    return distill_config(inputs.base if mode == "cfg" else source, layers, guidance_embed=embed)


def _report_config(inputs: RunInputs, layers: list[Any]) -> TrainConfig:
    from training.config import apply_layers
    from training.post.config import PostConfig

    cfg = from_dict(load_checkpoint(resolve_checkpoint(inputs.base))["config"])
    cfg.post = PostConfig()
    return apply_layers(cfg, layers)


def _refine_config(inputs: RunInputs, layers: list[Any]) -> TrainConfig:
    from training.post.refine import refine_config

    return refine_config(inputs.base, layers)


def _refine_sft_config(inputs: RunInputs, layers: list[Any]) -> TrainConfig:
    from training.post.refine_post import refiner_sft_config

    return refiner_sft_config(inputs.base, layers)


def _refine_rlhf_config(inputs: RunInputs, layers: list[Any]) -> TrainConfig:
    from training.post.refine_post import refiner_rlhf_config

    return refiner_rlhf_config(inputs.base, layers)


def _thin_config(inputs: RunInputs, layers: list[Any]) -> TrainConfig:
    from training.post.thin_decoder import thin_decoder_config

    return thin_decoder_config(inputs.base, None, layers)


# --------------------------------------------------------------------------- runs


def _run_sft(cfg: TrainConfig, inputs: RunInputs, out: Path, device: str | None, progress: bool) -> dict[str,
                                                                                                         Any]:
    from training.post.sft import sft

    return sft(inputs.base, data=inputs.data, catalog=inputs.catalog, where=inputs.where, out=out,
               progress=progress, device=device, cfg=cfg)


def _run_merge(cfg: TrainConfig, inputs: RunInputs, out: Path, device: str | None,
               progress: bool) -> dict[str, Any]:
    from training.post.merge import merge_checkpoints

    path = merge_checkpoints(list(inputs.checkpoints), list(cfg.post.merge.weights) or None, out=out)
    return {"out": str(path), **load_checkpoint(path)["merge"]}


def _run_rounds(cfg: TrainConfig, inputs: RunInputs, out: Path, device: str | None,
                progress: bool) -> dict[str, Any]:
    from training.post.rlhf_rounds import run_rounds

    return run_rounds(cfg, inputs, out, device=device)


def _run_compare(cfg: TrainConfig, inputs: RunInputs, out: Path, device: str | None,
                 progress: bool) -> dict[str, Any]:
    from training.post.flow_dpo import compare, compare_config

    prompts, held = list(inputs.prompts or []), list(inputs.eval_prompts)
    if not held:
        n = cfg.post.rlhf_rounds.n_heldout
        prompts, held = prompts[:-n], prompts[-n:]
    if not prompts:
        raise ValueError("no training prompts left after holding out the evaluation prompts")
    _, dpo_cfg = compare_config(inputs.base, {"post": to_dict(cfg)["post"]})
    inputs = RunInputs(inputs.base, prompts=prompts, eval_prompts=held, reward_models=inputs.reward_models)
    rows = compare(cfg, dpo_cfg, inputs, out, cfg.post.rlhf_rounds.heldout_reward, device)
    return {"out": str(out), "rows": rows}


def _run_distill(mode: str) -> Callable[..., dict[str, Any]]:
    def run(cfg: TrainConfig, inputs: RunInputs, out: Path, device: str | None, progress: bool) -> dict[str,
                                                                                                        Any]:
        from training.post.distill import CFGDistillTrainer, TSCDTrainer
        from training.post.distill_adv import AdversarialDistillTrainer
        from training.post.distill_dmd import ScoreDistillTrainer

        trainer = {"cfg": CFGDistillTrainer, "tscd": TSCDTrainer, "dmd": ScoreDistillTrainer,
                   "adv": AdversarialDistillTrainer}[mode]
        if mode == "cfg":
            inputs = RunInputs(inputs.base, data=inputs.data)
        return trainer(cfg, inputs, out,
                       device=device).train(progress=progress)  # type: ignore[no-any-return]

    return run


def _run_report(cfg: TrainConfig, inputs: RunInputs, out: Path | None, device: str | None,
                progress: bool) -> dict[str, Any]:
    from training.loop.checkpoint import load_pipeline
    from training.post.distill_eval import Variant, distill_report

    r, device = cfg.post.distill_report, device or "cpu"
    teacher = load_pipeline(inputs.base, device=device)
    variants = [Variant(f"teacher-{n}", teacher, n, r.guidance) for n in r.teacher_steps]
    if r.cfg_student:
        variants.append(Variant("cfg-distilled", load_pipeline(r.cfg_student, device=device), r.steps,
                                guidance=r.guidance))
    runs = sorted(Path(r.tscd).glob("segments_*"), key=lambda p: -int(p.name.split("_")[1])) if r.tscd else []
    for run in runs:
        s = int(run.name.split("_")[1])
        student = load_pipeline(run, device=device)
        variants.append(Variant(f"tscd-{s}", student, s,
                                r.guidance if student.dit.cfg.guidance_embed else None))
    prompts = [str(p) for p in inputs.prompts or []] or ["a red ball rolls across a table"]
    report: dict[str, Any] = distill_report(teacher, variants, prompts, r.steps, r.guidance, r.seed)
    if out is not None:
        Path(out).write_text(json.dumps(report, indent=1), encoding="utf-8")
    return report


def _run_refine(cfg: TrainConfig, inputs: RunInputs, out: Path, device: str | None,
                progress: bool) -> dict[str, Any]:
    from training.post.refine import run_refiner

    return run_refiner(cfg, inputs, out, device=device, progress=progress)


def _run_refine_sft(cfg: TrainConfig, inputs: RunInputs, out: Path, device: str | None,
                    progress: bool) -> dict[str, Any]:
    from training.post.refine_post import refiner_sft

    return refiner_sft(inputs.base, data=inputs.data, catalog=inputs.catalog, where=inputs.where, out=out,
                       progress=progress, device=device, cfg=cfg)


def _run_refine_rlhf(cfg: TrainConfig, inputs: RunInputs, out: Path, device: str | None,
                     progress: bool) -> dict[str, Any]:
    from training.post.refine_post import refiner_rlhf

    return refiner_rlhf(inputs.base, out, prompts=inputs.prompts, data=inputs.data,
                        reward_models=inputs.reward_models, eval_prompts=inputs.eval_prompts,
                        progress=progress, device=device, cfg=cfg)


def _run_thin(cfg: TrainConfig, inputs: RunInputs, out: Path, device: str | None,
              progress: bool) -> dict[str, Any]:
    from training.post.thin_decoder import train_thin_decoder

    return train_thin_decoder(inputs.base, inputs.data or "", out, generator=inputs.generator, device=device,
                              progress=progress, cfg=cfg)


_STEPS: dict[str, tuple[Callable[[RunInputs, list[Any]], TrainConfig], Callable[..., dict[str, Any]]]] = {
    "sft": (_sft_config, _run_sft),
    "merge": (_merge_config, _run_merge),
    "rlhf": (_rounds_config, _run_rounds),
    "rlhf-compare": (_compare_config, _run_compare),
    **{mode: (lambda i, la, mode=mode: _distill_config(i, la, mode), _run_distill(mode))
       for mode in ("cfg", "tscd", "dmd", "adv")},
    "distill-report": (_report_config, _run_report),
    "refine": (_refine_config, _run_refine),
    "refine-sft": (_refine_sft_config, _run_refine_sft),
    "refine-rlhf": (_refine_rlhf_config, _run_refine_rlhf),
    "thin-decoder": (_thin_config, _run_thin),
}
# SFT and merges write config.yaml themselves (SFT checks it against a rerun's; a merge beside its file)
_OWN_CONFIG = ("sft", "merge", "refine-sft")
METHODS: dict[str, Method] = {
    name: Method(name, sections, help, *_STEPS[name], writes_config=name not in _OWN_CONFIG)
    for name, (sections, help) in POST_METHODS.items()}


def method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown post-training method {name!r}; choose from {', '.join(METHODS)}")
    return METHODS[name]


def layers(preset: str | None = None, path: str | Path | None = None, overrides: Layers = None) -> list[Any]:
    """The config layers in order: the preset's ``post`` section, the YAML file, the overrides."""
    out: list[Any] = []
    if preset is not None:
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
        out.append({"post": to_dict(PRESETS[preset]())["post"]})
    if path is not None:
        out.append(yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {})
    out += [overrides] if isinstance(overrides, dict) else list(overrides or [])
    return out


def resolve(name: str, inputs: RunInputs, preset: str | None = None, path: str | Path | None = None,
            overrides: Layers = None) -> TrainConfig:
    """The whole resolved config of ``vidloom post NAME`` (module doc)."""
    return method(name).config(inputs, layers(preset, path, overrides))


def run(name: str, cfg: TrainConfig, inputs: RunInputs, out: str | Path | None, device: str | None = None,
        progress: bool = True) -> dict[str, Any]:
    """Run method ``name`` with the resolved ``cfg``; ``config.yaml`` is written beside the output."""
    from training.loop.run import _write_config

    m = method(name)
    target = None if out is None else Path(out)
    if m.writes_config and target is not None:
        if target.suffix:  # a file output (the report): its config beside it
            target.parent.mkdir(parents=True, exist_ok=True)
            target.with_suffix(".yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=True),
                                                   encoding="utf-8")
        else:
            _write_config(target, cfg)
    return m.run(cfg, inputs, target, device, progress)  # type: ignore[arg-type]
