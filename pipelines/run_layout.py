"""Where a curation run keeps things (``Paths``: every location under the output root) and what
identifies its split (``split_stages``, ``split_hash``, part of every clip_id). Shared by the
steps (pipelines/curate.py) and scratch-space management (pipelines/scratch.py).
"""

from __future__ import annotations

from dataclasses import asdict, fields, replace
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
    """The split step's stages: one ShotSplit that decodes each video itself (``split.stream``, the
    model's windows overlapping the decode), or Decode tasks then ShotSplit actors.

    ``split.precision`` reaches the workers resolved here, as ``split_hash`` records it: on a
    cluster whose nodes have other CPUs than the driver, 'auto' would otherwise compute on each
    node what that node resolves it to, under clip ids that name the driver's arithmetic. A node
    that cannot run it fails at setup and says so."""
    decode = decode_stage(cfg, paths)
    section = replace(cfg.split, precision=resolved_precision(cfg.split.device, cfg.split.precision))
    if cfg.split.stream:
        return [ShotSplit.from_config(section, decode=decode)]
    return [decode, ShotSplit.from_config(section)]


def decode_stage(cfg: CurateConfig, paths: Paths) -> Decode:
    """The decode pass alone (what a re-decode of dropped frames runs)."""
    return Decode.from_config(cfg.decode, work_dir=str(paths.work))


def _hashed(section: Any) -> dict[str, Any]:
    """A config section's fields that change output (not the ``unhashed`` ones: threads, device,
    how the work is laid out)."""
    return {f.name: getattr(section, f.name) for f in fields(section) if f.metadata.get("params", True)}


def split_hash(cfg: CurateConfig) -> str:
    """The hash of everything that decides clip boundaries (part of every clip_id)."""
    # device and thread counts change speed, not output: they stay out of the identity. The
    # model's arithmetic does count: 'auto' precision enters as the dtype it resolves to here.
    split_params = _hashed(cfg.split)
    split_params["precision"] = resolved_precision(cfg.split.device, cfg.split.precision)
    decode_params = _hashed(cfg.decode)
    return schema.params_hash({"decode": decode_params, "split": split_params, "clips": asdict(cfg.clips)})
