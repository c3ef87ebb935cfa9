"""Every configurable stage field comes from its config section (no field silently stuck at a default)."""

from __future__ import annotations

import dataclasses

import pytest

from pipelines.config import CurateConfig
from pipelines.stages.clip_filter import ShapeFilter
from pipelines.stages.decode_stage import Decode
from pipelines.stages.extract import ClipExtract
from pipelines.stages.ingest import Probe
from pipelines.stages.shot_split import ShotSplit

# stage -> (config section, fields that are locations, not configuration)
STAGES = {
    Probe: ("ingest", set()),
    Decode: ("decode", {"work_dir"}),
    ShotSplit: ("split", set()),
    ShapeFilter: ("filters", set()),
    ClipExtract: ("extract", {"out_dir"}),
}


@pytest.mark.parametrize("stage", list(STAGES), ids=lambda s: s.__name__)
def test_stage_fields_are_all_configurable(stage: type) -> None:
    section, extras = STAGES[stage]
    cfg_fields = {f.name for f in dataclasses.fields(getattr(CurateConfig(), section))}
    stage_fields = {f.name for f in dataclasses.fields(stage) if f.init}
    assert stage_fields - extras <= cfg_fields, stage_fields - extras - cfg_fields


def test_from_config_carries_changed_values() -> None:
    cfg = CurateConfig()
    cfg.split.threshold, cfg.filters.min_height, cfg.extract.crf = 0.7, 120, 23
    assert ShotSplit.from_config(cfg.split).threshold == 0.7
    assert ShapeFilter.from_config(cfg.filters).min_height == 120
    extract = ClipExtract.from_config(cfg.extract, out_dir="/tmp/clips")
    assert (extract.crf, extract.out_dir) == (23, "/tmp/clips")
