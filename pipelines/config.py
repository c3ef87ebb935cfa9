"""The curation config: nested dataclasses, named presets, YAML next to every output.

One config system (STYLE.md #6). ``load_config`` starts from a preset, applies an
optional YAML file and then ``section.key=value`` overrides from the CLI.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".mpg", ".mpeg", ".ts", ".flv", ".wmv")


@dataclass
class IngestConfig:
    extensions: tuple[str, ...] = VIDEO_EXTENSIONS
    max_duration_s: float = 6 * 3600.0  # longer files are recorded as 'absurd' errors
    max_pixels: int = 8192 * 8192


@dataclass
class DecodeConfig:
    sparse_fps: float = 2.0
    sparse_width: int = 256
    sparse_height: int = 144
    threads: int = 0  # 0 = let FFmpeg decide


@dataclass
class SplitConfig:
    """Shot detection.

    detector: 'transnetv2' (cascade: a cheap frame-difference proposer, TransNetV2
        confirms every proposal), 'transnetv2-full' (TransNetV2 on every frame),
        'adaptive' / 'content' (PySceneDetect, hard cuts only).
    """

    detector: str = "transnetv2"
    threshold: float = 0.5
    min_shot_frames: int = 1
    flash_max_frames: int = 8  # A-[<=N frames]-A with A similar on both sides is not a cut
    cascade_context: int = 8  # TransNetV2 context frames on proposal ranges (full model: 25)
    black_luma: float = 20.0  # mean luma (0-255) below which a frame is black (fades)
    device: str = "cpu"  # 'cuda' runs TransNetV2 on a GPU
    precision: str = "auto"  # TransNetV2 autocast: 'auto' (bf16 where native), 'fp32', 'bf16'


@dataclass
class ClipConfig:
    min_s: float = 2.0
    max_s: float = 10.0
    stride_s: float = 10.0  # window start step for shots longer than max_s
    trim_start_frames: int = 2
    trim_end_frames: int = 2
    # move clip boundaries up to this far onto keyframes so the clip is a stream copy (0: off)
    keyframe_align_s: float = 0.5


@dataclass
class ExtractConfig:
    codec: str = "libx264"
    crf: int = 18
    preset: str = "veryfast"
    stream_copy: bool = True  # copy when the span starts on a keyframe
    threads: int = 1  # per ffmpeg process; Ray runs several in parallel


@dataclass
class FilterConfig:
    min_duration_s: float = 2.0
    max_duration_s: float = 60.0
    min_width: int = 64
    min_height: int = 64
    max_aspect: float = 4.0


@dataclass
class ShardConfig:
    target_bytes: int = 1_000_000_000
    with_first_frame: bool = True  # 'jpg' field for image-to-video


@dataclass
class RuntimeConfig:
    runner: str = "ray"  # 'ray' | 'sequential'
    ray_address: str | None = None
    num_cpus: int | None = None
    quiet: bool = False


@dataclass
class CurateConfig:
    ingest: IngestConfig = field(default_factory=IngestConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    clips: ClipConfig = field(default_factory=ClipConfig)
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    filters: FilterConfig = field(default_factory=FilterConfig)
    shards: ShardConfig = field(default_factory=ShardConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)


def default() -> CurateConfig:
    return CurateConfig()


def tiny() -> CurateConfig:
    """Tests and the demo: short clips, small shards."""
    cfg = CurateConfig()
    cfg.clips = ClipConfig(min_s=1.0, max_s=4.0, stride_s=4.0, trim_start_frames=1, trim_end_frames=1)
    cfg.filters.min_duration_s = 1.0
    cfg.shards.target_bytes = 2_000_000
    return cfg


PRESETS = {"default": default, "tiny": tiny}


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def to_yaml(cfg: CurateConfig) -> str:
    return yaml.safe_dump(_plain(to_dict(cfg)), sort_keys=True)


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, tuple | list):
        return [_plain(v) for v in x]
    return x


def apply(cfg: Any, values: dict[str, Any]) -> None:
    """Recursively set dataclass fields from a nested dict, rejecting unknown keys."""
    names = {f.name: f for f in dataclasses.fields(cfg)}
    for key, value in values.items():
        if key not in names:
            raise ValueError(f"unknown config key {key!r} in {type(cfg).__name__}; known: {sorted(names)}")
        current = getattr(cfg, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ValueError(f"config section {key!r} needs a mapping")
            apply(current, value)
        else:
            setattr(cfg, key, _coerce(current, value))


def _coerce(current: Any, value: Any) -> Any:
    if isinstance(value, str) and not isinstance(current, str) and current is not None:
        value = yaml.safe_load(value)
    if isinstance(current, tuple) and isinstance(value, list):
        return tuple(value)
    if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def load_config(
    preset: str = "default", path: str | Path | None = None, overrides: list[str] | None = None
) -> CurateConfig:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    cfg = PRESETS[preset]()
    if path is not None:
        apply(cfg, yaml.safe_load(Path(path).read_text()) or {})
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} must look like section.key=value")
        nested: dict[str, Any] = {}
        node = nested
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = raw
        apply(cfg, nested)
    return cfg
