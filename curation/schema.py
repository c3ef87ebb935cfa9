"""The vidloom data contract: one typed, slotted dataclass per catalog row.

Every other module imports these; nothing redefines them. This module must not
import torch (it is loaded by the CLI, the catalog and Ray workers alike).

Identity (docs/architecture.md "Identity, resume and nothing lost"):
    video_id = first 16 hex chars of the sha256 of the file's bytes.
    clip_id  = sha256(video_id, start_frame, end_frame, split-params hash)[:16].
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from curation import score_columns

ID_LEN = 16

VideoStatus = Literal["ok", "error"]
ClipStatus = Literal["kept", "rejected"]
Transition = Literal["start", "cut", "dissolve", "fade"]


def short_hash(*parts: object) -> str:
    """Stable short hex id of the given parts (joined by NUL)."""
    h = hashlib.sha256("\0".join(str(p) for p in parts).encode("utf-8"))
    return h.hexdigest()[:ID_LEN]


def params_hash(params: dict[str, Any]) -> str:
    """Stable hash of a (JSON-serialisable) parameter dict, independent of key order."""
    return short_hash(json.dumps(params, sort_keys=True, default=str))


def clip_id_for(video_id: str, start_frame: int, end_frame: int, split_hash: str) -> str:
    return short_hash(video_id, start_frame, end_frame, split_hash)


@dataclass(slots=True)
class Video:
    """One input file. A file that cannot be used still gets a row (status='error')."""

    video_id: str
    path: str
    sha256: str
    status: VideoStatus = "ok"
    error: str | None = None
    duration_s: float | None = None
    fps: float | None = None
    n_frames: int | None = None
    width: int | None = None
    height: int | None = None
    codec: str | None = None
    rotation: int = 0
    has_audio: bool = False
    vfr: bool = False
    size_bytes: int = 0
    # JSON object: a manifest row's metadata columns (pipelines/remote_inputs.py); None = none
    source_meta: str | None = None


@dataclass(slots=True)
class InputFile:
    """One input path. Identical bytes under several paths share one ``videos`` row; every
    path still gets a ``files`` row (status 'ok', 'duplicate' or 'error')."""

    path: str
    video_id: str
    size_bytes: int
    status: str
    error: str | None = None


@dataclass(slots=True)
class Shot:
    """A raw shot: frames [start_frame, end_frame) between two transitions.

    ``transition`` says how this shot was entered: 'start' (first shot), 'cut',
    'dissolve' or 'fade'. For gradual transitions ``transition_start`` /
    ``transition_end`` give the transition's frame span [start, end), which belongs
    to neither neighbouring shot.
    """

    video_id: str
    shot_index: int
    start_frame: int
    end_frame: int
    start_s: float
    end_s: float
    detector: str
    transition: Transition = "start"
    transition_start: int | None = None
    transition_end: int | None = None
    transition_score: float | None = None


class ClipScores:
    """Per-clip measurements, stored for kept and rejected clips alike. Each is a real catalog
    column; None = not measured. Frame-level scores come from the decode pass's sparse frames
    (about 2 fps, 256x144) or its tiny frames (every frame, 48x27): nothing is decoded again.

    The columns, their types and meanings are the scorers' (curation/score_columns.py: the
    built-in ones by scorer, and those a scorer registers from its own file), so a new scorer
    adds attributes here without an edit. ``ClipScores(blur=1.0).blur``; an unknown name is an
    error (a typo must not drop a score silently); :meth:`as_dict` gives every column.
    """

    __slots__ = ("_values",)

    def __init__(self, **values: Any) -> None:
        unknown = set(values) - set(score_columns.names())
        if unknown:
            raise TypeError(f"unknown score column(s) {sorted(unknown)}; the columns are: "
                            f"{', '.join(score_columns.names())}")
        object.__setattr__(self, "_values", dict(values))

    def __getattr__(self, name: str) -> Any:
        if name != "_values" and score_columns.get(name) is not None:
            return self._values.get(name)
        raise AttributeError(f"ClipScores has no score column {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if score_columns.get(name) is None:
            raise AttributeError(f"ClipScores has no score column {name!r}; the columns are: "
                                 f"{', '.join(score_columns.names())}")
        self._values[name] = value

    def as_dict(self) -> dict[str, Any]:
        """Every registered score column (None where not measured), in catalog order."""
        return {c: self._values.get(c) for c in score_columns.names()}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ClipScores) and self.as_dict() == other.as_dict()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"ClipScores({', '.join(f'{k}={v!r}' for k, v in self._values.items() if v is not None)})"

    def __getstate__(self) -> dict[str, Any]:
        return dict(self._values)

    def __setstate__(self, state: dict[str, Any]) -> None:
        object.__setattr__(self, "_values", dict(state))


@dataclass(slots=True)
class Clip:
    """A span of one shot, extracted to its own file. Kept or rejected, it keeps its row."""

    clip_id: str
    video_id: str
    shot_index: int
    start_frame: int
    end_frame: int
    start_s: float
    end_s: float
    width: int
    height: int
    fps: float
    path: str | None = None
    status: ClipStatus = "kept"
    reject_reason: str | None = None
    codec: str | None = None
    extract_mode: str | None = None  # 'copy' | 'reencode'
    n_frames: int = 0
    bytes: int = 0
    split_hash: str = ""
    score_error: str | None = None  # a scorer failed on this clip (retried by the next run)
    # scorers skipped by cost-ordered scoring, and why: 'overlay_text: rejected before it (blurry)'
    not_scored: str | None = None
    extract_error: str | None = None  # the clip could not be cut from its source
    caption_error: str | None = None  # captioning failed (after retries); the run went on
    caption_failed: str | None = None  # failed caption checks, comma-separated ('' = all passed)
    # The crop extraction applies (source pixels; None = the whole frame), set by the filter step
    # when overlay text can be cut off (pipelines/text_crop.py), and why: e.g. 'text_bottom_band',
    # 'text_corner_top_right', '+letterbox' when the bars outside crop_x/y/w/h go too.
    extract_crop_x: int | None = None
    extract_crop_y: int | None = None
    extract_crop_w: int | None = None
    extract_crop_h: int | None = None
    crop_reason: str | None = None
    scores: ClipScores = field(default_factory=ClipScores)

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(slots=True)
class Caption:
    """One caption of a clip, with its provenance: which backend and model wrote it, from which
    prompt (sha256 of the prompt file), with which sampling params, and how the checks went."""

    clip_id: str
    lang: Literal["en", "zh"]
    text: str
    kind: Literal["dense", "short"] = "dense"
    model: str = ""
    prompt_sha: str = ""
    backend: str = ""
    tokens: int = 0  # completion tokens
    finish_reason: str = ""
    checks: str = "{}"  # JSON: check name -> {"ok": bool, ...}
    revision: str = ""  # the model revision, when known
    params: str = "{}"  # JSON: the sampling params sent
    prompt_tokens: int = 0
    # The structured description the caption came with (captioner/caption_schema.py); None on a
    # free-text caption, on a reply that broke the schema, and in catalogs made before it.
    # Closed sets hold one of their values or 'unknown'; the JSON lists are null when not known.
    fields_version: str | None = None  # e.g. 'clip-v1'
    content_class: str | None = None  # nature | people | objects | animation | screen | other
    camera_movement: str | None = None  # static, pan_left, ..., zoom_in, dolly_in, tracking, ...
    camera_speed: str | None = None  # none | slow | moderate | fast
    shot_size: str | None = None  # extreme_close_up ... extreme_wide
    camera_angle: str | None = None  # eye_level | high | low | overhead | dutch
    lighting: str | None = None  # brightness: dark | dim | normal | bright
    light_source: str | None = None  # natural | artificial | mixed
    style: str | None = None  # realistic, cinematic, documentary, vintage, animated, cgi, ...
    scene: str | None = None
    shot_count: int | None = None
    subjects: str | None = None  # JSON [{"description", "appearance", "count"}]
    actions: str | None = None  # JSON [{"subject", "action"}], in temporal order
    text_overlays: str | None = None  # JSON [text, ...]
    fields: str | None = None  # JSON: the whole description


@dataclass(slots=True)
class CaptionCheck:
    """One field of a clip's structured caption compared with what was measured
    (captioner/field_checks.py): ``agree`` None when the two cannot be compared (either side
    unknown or not measured)."""

    clip_id: str
    field: str  # 'camera_movement' (vs the optical-flow label), 'text_overlays' (vs OCR)
    captioned: str | None
    measured: str | None
    agree: bool | None
    detail: str = ""
    backend: str = ""


@dataclass(slots=True)
class ShardSample:
    """One WebDataset sample: ``__key__`` = clip_id plus extension-named fields."""

    key: str
    mp4: bytes
    meta: dict[str, Any]
    en_txt: str | None = None
    zh_txt: str | None = None
    jpg: bytes | None = None

    def to_wds(self) -> dict[str, Any]:
        sample: dict[str, Any] = {
            "__key__": self.key,
            "mp4": self.mp4,
            "json": json.dumps(self.meta, sort_keys=True, ensure_ascii=False).encode("utf-8"),
        }
        if self.en_txt is not None:
            sample["en.txt"] = self.en_txt.encode("utf-8")
        if self.zh_txt is not None:
            sample["zh.txt"] = self.zh_txt.encode("utf-8")
        if self.jpg is not None:
            sample["jpg"] = self.jpg
        return sample


@dataclass(slots=True)
class ShardInfo:
    """One written shard. ``shard`` is its path relative to the catalog's root when it lies
    inside it ('shards/<dataset_hash>/480p/16x9/2-5s/000000.tar'), else its absolute path;
    ``dataset`` is the dataset version hash (the version directory's name) and ``export_root``
    the export directory that holds the versions and ``latest`` (pipelines/dataset_versions.py)."""

    shard: str
    path: str
    n_samples: int
    bytes: int
    sha256: str
    bucket: str
    dataset: str = ""
    export_root: str = ""
    selection: str = ""  # the SQL predicate that chose the clips


def clip_row(clip: Clip) -> dict[str, Any]:
    """Flatten a Clip (scores become top-level columns) for the catalog."""
    row = {f.name: getattr(clip, f.name) for f in dataclasses.fields(clip) if f.name != "scores"}
    row.update(clip.scores.as_dict())
    return row


def row(obj: Any) -> dict[str, Any]:
    """A dataclass as a flat dict; Clip rows get their scores flattened."""
    if isinstance(obj, Clip):
        return clip_row(obj)
    return dataclasses.asdict(obj)


# The columns the clips step writes: a clip's identity and geometry. Scores, decisions and
# extraction results are written by their own steps and survive a rerun of this one.
CLIP_IDENTITY: tuple[str, ...] = (
    "clip_id", "video_id", "shot_index", "start_frame", "end_frame", "start_s", "end_s",
    "width", "height", "fps", "n_frames", "split_hash",
)
# the built-in score columns (import time); score_columns.names() also has those registered since
SCORE_COLUMNS: tuple[str, ...] = score_columns.names()
