"""The curation config: the composition of the stages' sections, the filters and the step sections,
named presets, YAML next to every output.

A stage's section is defined in the stage's file (pipelines/stages/; the stage subclasses it).
One mechanism for curation and training (``apply``): ``load_config`` starts from a preset,
applies an optional YAML file and then ``section.key=value`` overrides from the CLI.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipelines import config_check, filters_extra, scorers
from pipelines.clip_spans import ClipConfig
from pipelines.stages.aesthetic_scorer import AestheticScoreConfig
from pipelines.stages.artifact_scorer import ArtifactScoreConfig
from pipelines.stages.caption import CaptionConfig
from pipelines.stages.decode_stage import DecodeConfig
from pipelines.stages.extract import ExtractConfig
from pipelines.stages.ingest import VIDEO_EXTENSIONS, IngestConfig
from pipelines.stages.motion_scorer import MotionScoreConfig
from pipelines.stages.quality_scorer import QualityScoreConfig
from pipelines.stages.shot_split import SplitConfig
from pipelines.stages.text_scorer import TextScoreConfig

__all__ = [  # the sections defined in their stages' files, importable from here too
    "VIDEO_EXTENSIONS", "AestheticScoreConfig", "ArtifactScoreConfig", "CaptionConfig", "DecodeConfig",
    "ExtractConfig", "IngestConfig", "MotionScoreConfig", "QualityScoreConfig", "SplitConfig",
    "TextScoreConfig", "ClipConfig", "ScoreConfig", "FilterConfig", "ShardConfig", "RuntimeConfig",
    "CurateConfig", "PRESETS", "load_config", "apply", "plain", "to_dict", "to_yaml", "default", "tiny",
    "check", "score_config",
]


@dataclass
class ScoreConfig:
    """How clips are measured. Changing a field re-runs that scorer alone (no decode);
    thresholds live in FilterConfig.

    A section per scorer, each defined in its scorer's file (pipelines/stages/*_scorer.py): the
    built-in ones are fields here; any other scorer registered with its config class
    (pipelines/scorers.py ``ScorerSpec.config``) gets ``scores.<key>`` added (:func:`score_config`),
    so a new scorer needs no edit here."""

    quality: QualityScoreConfig = field(default_factory=QualityScoreConfig)
    motion: MotionScoreConfig = field(default_factory=MotionScoreConfig)
    text: TextScoreConfig = field(default_factory=TextScoreConfig)
    aesthetic: AestheticScoreConfig = field(default_factory=AestheticScoreConfig)
    artifacts: ArtifactScoreConfig = field(default_factory=ArtifactScoreConfig)
    # False: cost-ordered (pipelines/score_step.py), the expensive scorers (overlay text, aesthetic)
    # skip a clip a cheaper score already rejects; True: every scorer on every clip (--score-all)
    score_all: bool = False


@dataclass
class FilterConfig:
    """Thresholds: a decision is a query over stored scores (``--rescore`` needs no decode).

    Units follow curation.schema.ClipScores. The defaults were set on the generated demo
    videos (clean vs planted defects), see tests/integration/test_filters_e2e.py.
    """

    min_duration_s: float = 2.0  # 'too_short' below this
    max_duration_s: float = 60.0  # 'too_long' above this
    min_width: int = 64  # 'low_resolution' below this width, px
    min_height: int = 64  # ... or this height, px
    max_aspect: float = 4.0  # 'bad_aspect' when w/h or h/w exceeds this
    max_black_frac: float = 0.34  # 'black' above this share of black frames
    min_luma: float = 40.0  # 'dark' below this mean luma (0-255) ...
    # ... unless the 99th-percentile luma exceeds this: dev set (issue 13) Megamind.avi's dark
    # restaurant mean 36 / p99 191, world.mp4's globe on black 8 / 109, the demo's planted dark
    # shot (mandelbrot at 20 %) 28 / 38
    dark_max_highlight: float = 70.0
    max_luma: float = 220.0  # 'overexposed' above this mean luma
    max_clipped: float = 0.35  # 'overexposed' above this share of clipped pixels
    # compression damage, 0-1 (pipelines/artifacts.py): clean real footage <= 0.07 per clip, x264
    # crf >= 45 and MPEG-2/4 at q 31 >= 0.24 (one clip 0.17), Cinepak 0.29-0.34, SVQ1 0.11-0.18
    max_artifacts: float = 0.15
    min_blur: float = 40.0  # at the sparse size (256x144): catches gblur sigma >= ~4 px at 720p
    max_black_border: float = 0.05  # clean clips measure exactly 0; letterbox 0.24-0.28
    max_frozen: float = 0.5  # a held frame measures 0.96-1.0, grain that survives x264 <= 0.12
    max_text_area: float = 0.02  # title text measures 0.06-0.11; testsrc2 timecode 0.002-0.018
    # Above max_text_area, crop the text off when it sits in bands or corners (pipelines/text_crop.py):
    min_crop_area: float = 0.8  # the crop keeps at least this fraction of the picture, else 'text'
    max_crop_aspect_change: float = 1.25  # crop w/h within this factor of the picture's (1/0.8: any band)
    text_crop_margin: float = 0.02  # padding around each text box, fraction of the frame height
    # frame widths per second, the mean flow (pipelines/motion.py). Dev set (issue 13), 10 s clips:
    # talking heads on a fixed webcam (cap12, cap13, franck) >= 0.00135, a screencast and an
    # animated end card 0.00047-0.00086; held stills with x264 grain 0.00001-0.0001. 0.005
    # rejected 14 talking-head clips as 'static' (a fixed camera, but the person moves)
    min_motion: float = 0.001
    max_motion: float = 1.0  # whip pans
    min_aesthetic: float = 4.5  # 'low_aesthetic' below this (1-10; only when scored)
    # near/exact duplicates across the catalog are rejected as 'duplicate' (the best copy is kept)
    dedup: bool = True
    phash_max_distance: int = 10  # of 64 bits, mean over the clip's keyframe hashes
    semantic_dedup_min_cosine: float = 0.97  # when aesthetic embeddings exist
    # user rules after the built-in ones (pipelines/filters_extra.py): each {name, where, reason},
    # ``where`` a SQL predicate over the clips table's stored columns, checked at load and run
    # sandboxed in DuckDB; the first that matches rejects with its reason
    extra: tuple[dict[str, str], ...] = ()


@dataclass
class ShardConfig:
    target_bytes: int = 1_000_000_000  # a shard is closed once it reaches this size
    with_first_frame: bool = True  # 'jpg' field for image-to-video
    # ``export --multi-shot`` (pipelines/multishot.py): shots per sample and the sample's length
    multishot_max_shots: int = 4
    multishot_min_shots: int = 2  # fewest shots in a multi-shot sample
    multishot_max_s: float = 20.0  # longest multi-shot sample, seconds


@dataclass
class RuntimeConfig:
    runner: str = "ray"  # 'ray' | 'sequential'
    ray_address: str | None = None  # a running Ray cluster to join (default: start a local one)
    num_cpus: int | None = None  # CPUs of the local Ray cluster (default: all)
    quiet: bool = False  # no progress bars
    # the largest actor pool of a model stage, by stage name (shot_split, text, aesthetic,
    # caption); unset: as many as the cluster has room for (pipelines/ray_plan.py)
    actors: dict[str, int] = field(default_factory=dict)
    min_actors: dict[str, int] = field(default_factory=dict)  # the smallest pool (default 1)
    window: int = 2000  # tasks per Ray Data execution: bounds the driver's memory
    # the decode pass's frames under .work/frames (~1 GB per hour of video): 'keep' them,
    # drop them once the run's last step that reads them is done ('after_score': not those
    # of a video with unfinished frame work; 'none': all). pipelines/scratch.py
    keep_frames: str = "keep"


@dataclass
class CurateConfig:
    ingest: IngestConfig = field(default_factory=IngestConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    clips: ClipConfig = field(default_factory=ClipConfig)
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    scores: ScoreConfig = field(default_factory=lambda: score_config())
    filters: FilterConfig = field(default_factory=FilterConfig)
    caption: CaptionConfig = field(default_factory=CaptionConfig)
    shards: ShardConfig = field(default_factory=ShardConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)


# the checks the stages' sections declare on their classes, under each section's key
for _key, _section in config_check.field_types(CurateConfig).items():
    config_check.register_section(f"{_key}.", _section)


def score_config() -> ScoreConfig:
    """The scores section with every registered scorer's section (pipelines/scorers.py)."""
    return scorers.score_config_class(ScoreConfig)()  # type: ignore[no-any-return]


def check(cfg: Any) -> None:
    """The checks that span fields, run once every layer is applied: the relations (min <= max)
    and ``filters.extra`` (each predicate parses, names stored columns, is sandbox-safe)."""
    config_check.check_relations(cfg)
    filters = getattr(cfg, "filters", None)
    if isinstance(filters, FilterConfig):
        filters_extra.check_rules(filters.extra)


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
    return yaml.safe_dump(plain(to_dict(cfg)), sort_keys=True)


def plain(x: Any) -> Any:
    """``x`` with tuples as lists, nested: what YAML, JSON and Prefect parameters hold."""
    if isinstance(x, dict):
        return {k: plain(v) for k, v in x.items()}
    if isinstance(x, tuple | list):
        return [plain(v) for v in x]
    return x


def apply(cfg: Any, values: dict[str, Any], prefix: str = "", relations: bool = True) -> None:
    """Recursively set dataclass fields from a nested dict, checking every key and value (the one
    mechanism behind presets + YAML + ``--set`` for curation and training, ``training/config.py``).

    Keys must be fields; values are typed from the field annotations and checked against the
    ranges and choices of ``pipelines/config_check.py`` (a ``ConfigError``, a ValueError, names
    the key and what it allows). With ``relations`` the cross-field relations (min <= max) are
    checked afterwards at the top level, so a dict from a Prefect parameter is checked as fully
    as a CLI config; ``load_config`` checks them once, after its last layer.
    """
    hints = config_check.field_types(type(cfg))
    names = [f.name for f in dataclasses.fields(cfg)]
    if not isinstance(values, dict):
        raise config_check.ConfigError(f"config {prefix or 'file'} needs a mapping; got {values!r}")
    for key, value in values.items():
        path = f"{prefix}{key}"
        if key not in names:
            raise config_check.unknown_key(path, names)
        current = getattr(cfg, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise config_check.ConfigError(f"config section {path!r} needs a mapping; got {value!r}")
            apply(current, value, prefix=f"{path}.")
        elif isinstance(current, dict) and isinstance(value, dict):  # layers add keys to a mapping
            setattr(cfg, key, {**current, **config_check.coerce(path, hints[key], value)})
        else:
            setattr(cfg, key, config_check.coerce(path, hints[key], value))
    if relations and not prefix:
        check(cfg)


def load_config(
    preset: str = "default", path: str | Path | None = None, overrides: list[str] | None = None
) -> CurateConfig:
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    cfg = PRESETS[preset]()
    if path is not None:
        apply(cfg, yaml.safe_load(Path(path).read_text()) or {}, relations=False)
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
        apply(cfg, nested, relations=False)
    check(cfg)
    return cfg
