"""Where a curation run keeps things (``Paths``: every location under the output root) and what
identifies its split (``split_stages``, ``split_hash``, part of every clip_id). Shared by the
steps (pipelines/curate.py) and scratch-space management (pipelines/scratch.py).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from curation import schema
from pipelines.config import CurateConfig
from pipelines.stages.decode_stage import Decode
from pipelines.stages.shot_split import ShotSplit
from pipelines.transnet import resolved_precision


class Paths:
    """Every location under the output root; nothing is written outside it."""

    def __init__(self, out: str | Path) -> None:
        self.root = Path(out).resolve()
        self.catalog = self.root / "catalog.duckdb"
        self.clips = self.root / "clips"
        self.shards = self.root / "shards"
        self.work = self.root / ".work"
        self.frames = self.work / "frames"

    def frames_dir(self, video_id: str) -> Path:
        return self.frames / video_id


def split_stages(cfg: CurateConfig, paths: Paths) -> list[Any]:
    return [Decode.from_config(cfg.decode, work_dir=str(paths.work)), ShotSplit.from_config(cfg.split)]


def split_hash(cfg: CurateConfig) -> str:
    """The hash of everything that decides clip boundaries (part of every clip_id)."""
    # device and thread counts change speed, not output: they stay out of the identity. The
    # model's arithmetic does count: 'auto' precision enters as the dtype it resolves to here.
    split_params = {k: v for k, v in asdict(cfg.split).items() if k != "device"}
    split_params["precision"] = resolved_precision(cfg.split.device, cfg.split.precision)
    decode_params = {k: v for k, v in asdict(cfg.decode).items() if k != "threads"}
    return schema.params_hash({"decode": decode_params, "split": split_params, "clips": asdict(cfg.clips)})
