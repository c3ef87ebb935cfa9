"""Every configurable stage field comes from its config section (no field silently stuck at a default)."""

from __future__ import annotations

import dataclasses

import pytest

from pipelines.config import CurateConfig
from pipelines.stages.aesthetic_scorer import AestheticScorer
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
    ShotSplit: ("split", set()),
    ClipExtract: ("extract", {"out_dir"}),
    QualityScorer: ("scores.quality", set()),
    MotionScorer: ("scores.motion", set()),
    OverlayTextScorer: ("scores.text", set()),
    AestheticScorer: ("scores.aesthetic", set()),
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
