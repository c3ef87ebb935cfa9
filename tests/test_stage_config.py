"""Every configurable stage field comes from its config section (no field silently stuck at a default)."""

from __future__ import annotations

import dataclasses

import pytest

from pipelines.config import CurateConfig
from pipelines.stages.aesthetic_scorer import AestheticScorer
from pipelines.stages.artifact_scorer import ArtifactScorer
from pipelines.stages.caption import CaptionStage
from pipelines.stages.decode_stage import Decode
from pipelines.stages.extract import ClipExtract
from pipelines.stages.ingest import Probe
from pipelines.stages.motion_scorer import MotionScorer
from pipelines.stages.quality_scorer import QualityScorer
from pipelines.stages.shot_split import ShotSplit
from pipelines.stages.text_scorer import OverlayTextScorer

# stage -> (config section, fields that are locations, not configuration)
STAGES = {
    Probe: ("ingest", set()),
    Decode: ("decode", {"work_dir"}),
    ShotSplit: ("split", {"decode"}),
    ClipExtract: ("extract", {"out_dir"}),
    QualityScorer: ("scores.quality", set()),
    MotionScorer: ("scores.motion", set()),
    OverlayTextScorer: ("scores.text", set()),
    AestheticScorer: ("scores.aesthetic", set()),
    ArtifactScorer: ("scores.artifacts", set()),
    CaptionStage: ("caption", {"root"}),
}


def section_of(cfg: object, dotted: str) -> object:
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


@pytest.mark.parametrize("stage", list(STAGES), ids=lambda s: s.__name__)
def test_stage_fields_are_all_configurable(stage: type) -> None:
    section, extras = STAGES[stage]
    cfg_fields = {f.name for f in dataclasses.fields(section_of(CurateConfig(), section))}
    stage_fields = {f.name for f in dataclasses.fields(stage) if f.init}
    assert stage_fields - extras <= cfg_fields, stage_fields - extras - cfg_fields


def test_from_config_carries_changed_values() -> None:
    cfg = CurateConfig()
    cfg.split.threshold, cfg.filters.min_height, cfg.extract.crf = 0.7, 120, 23
    assert ShotSplit.from_config(cfg.split).threshold == 0.7
    extract = ClipExtract.from_config(cfg.extract, out_dir="/tmp/clips")
    assert (extract.crf, extract.out_dir) == (23, "/tmp/clips")


@pytest.mark.parametrize("stage", list(STAGES), ids=lambda s: s.__name__)
def test_the_stage_is_its_config(stage: type) -> None:
    """No mirror: the stage subclasses its section's class, so a key added to the section is the
    stage's at once, and from_config copies every one of them."""
    section, extras = STAGES[stage]
    cfg = section_of(CurateConfig(), section)
    if stage is CaptionStage:
        cfg.backend = "vllm"  # signals captions one clip at a time: the stage sets batch_size 1
    assert stage.config_class() is type(cfg)
    own = {f.name for f in dataclasses.fields(stage) if f.init} - {f.name for f in dataclasses.fields(cfg)}
    assert own == extras, own
    built = stage.from_config(cfg, **{name: "/tmp/x" for name in extras})
    assert isinstance(built, type(cfg))
    assert {f.name: getattr(built, f.name) for f in dataclasses.fields(cfg)} == dataclasses.asdict(cfg)


def test_from_config_takes_only_the_stages_own_section() -> None:
    cfg = CurateConfig()
    with pytest.raises(TypeError, match="ShotSplit is configured by SplitConfig, not DecodeConfig"):
        ShotSplit.from_config(cfg.decode)


def test_unhashed_fields_change_no_params() -> None:
    """Threads, devices, endpoints and the filter step's caption rules re-run nothing; the measuring
    and caption-deciding fields do."""
    cfg = CurateConfig()
    base = {s: s.from_config(section_of(cfg, sec), **{n: "/tmp/x" for n in ex}).params_hash()
            for s, (sec, ex) in STAGES.items()}
    cfg.decode.threads, cfg.split.device = 4, "cuda"
    cfg.scores.text.threads, cfg.scores.text.enabled = 3, False
    cfg.scores.aesthetic.device, cfg.scores.aesthetic.required = "cuda", True
    cfg.caption.require_caption, cfg.caption.reject_failed_checks = True, ("lang",)
    cfg.ingest.extensions = (".mp4",)
    same = {s: s.from_config(section_of(cfg, sec), **{n: "/tmp/y" for n in ex}).params_hash()
            for s, (sec, ex) in STAGES.items()}
    assert same == base
    cfg.decode.sparse_fps, cfg.split.threshold, cfg.scores.text.every_s = 1.0, 0.7, 1.0
    changed = {s: s.from_config(section_of(cfg, sec), **{n: "/tmp/y" for n in ex}).params_hash()
               for s, (sec, ex) in STAGES.items()}
    moved = {s.__name__ for s in STAGES if changed[s] != base[s]}
    assert moved == {"Decode", "ShotSplit", "OverlayTextScorer"}
