"""The keep/reject decision: a pure function of a clip's stored columns and the thresholds.

Every score is measured once and stored (kept and rejected clips alike); deciding is a query
over those columns, so ``vidloom curate --rescore`` and a changed threshold never decode a
video. The rules run in a fixed order and the first failing one is the clip's
``reject_reason`` (datatrove-style: a filter returns keep/drop with a reason):

    too_short, too_long, low_resolution, bad_aspect      shape
    black, dark, overexposed, compressed, blurry,        quality (compressed before blurry:
    letterbox, frozen                                    a crushed clip reads blurry too)
    text                                                 overlay text that no crop cuts off
    static, too_fast                                     motion
    low_aesthetic                                        aesthetic (only when measured)
    duplicate                                            dedup (``dup_of`` is set)
    extract_error                                        the clip could not be cut
    caption_check, no_caption                            a check the config rejects on failed /
                                                         no valid caption set (``require_caption``);
                                                         both off by default

A score that was not measured (None) never rejects: a disabled scorer is not a failed clip.

Overlay text is cropped off when it sits in bands or corners (``crop_columns``,
pipelines/text_crop.py): the clip keeps ``extract_crop_*`` and ``crop_reason``, and extraction
cuts that box. ``text`` rejects (``text_area`` above ``max_text_area``) only when no crop would do.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pipelines.config import CaptionConfig, FilterConfig
from pipelines.quality import CLIP_HIGH
from pipelines.text_crop import decode_boxes, text_crop, union_area

Row = Mapping[str, Any]


def _below(col: str, limit: float) -> Callable[[Row], bool]:
    return lambda r: r.get(col) is not None and r[col] < limit


def _above(col: str, limit: float) -> Callable[[Row], bool]:
    return lambda r: r.get(col) is not None and r[col] > limit


def _duration(r: Row) -> float:
    return float(r["end_s"]) - float(r["start_s"])


def _failed(r: Row) -> set[str]:
    """The clip's failed caption checks, by name and by family ('lang_en' is also 'lang')."""
    names = {n for n in (r.get("caption_failed") or "").split(",") if n}
    return names | {n.split("_")[0] for n in names}


def _captioned_without_valid_caption(r: Row) -> bool:
    """Captioned (``caption_failed`` is set by the caption step, '' when every check passed) but
    a request failed after its retries or a caption failed a check. A clip not captioned yet
    (the filter step runs before captioning) is not rejected for it."""
    if r.get("caption_error") is not None:
        return True
    return r.get("caption_failed") not in (None, "")


def rules(f: FilterConfig, c: CaptionConfig | None = None) -> list[tuple[str, Callable[[Row], bool]]]:
    """(reason, fails) in decision order. ``c``: the caption rules' settings (default: off)."""
    c = c or CaptionConfig()
    eps = 1e-6
    return [
        ("too_short", lambda r: _duration(r) < f.min_duration_s - eps),
        ("too_long", lambda r: _duration(r) > f.max_duration_s + eps),
        ("low_resolution", lambda r: (r["width"] or 0) < f.min_width or (r["height"] or 0) < f.min_height),
        (
            "bad_aspect",
            lambda r: max(r["width"], r["height"]) > f.max_aspect * max(1, min(r["width"], r["height"])),
        ),
        ("black", _above("black_frac", f.max_black_frac)),
        # dark: dim throughout; a night or CG scene with lit parts (luma_high) is not (None: luma alone)
        (
            "dark",
            lambda r: _below("luma", f.min_luma)(r) and not _above("luma_high", f.dark_max_highlight)(r),
        ),
        # clipped counts both ends: it means blown highlights only when the top 1 % is clipped
        (
            "overexposed",
            lambda r: (
                _above("luma", f.max_luma)(r)
                or (_above("clipped", f.max_clipped)(r) and not _below("luma_high", CLIP_HIGH)(r))
            ),
        ),
        ("compressed", _above("artifacts", f.max_artifacts)),
        ("blurry", _below("blur", f.min_blur)),
        ("letterbox", _above("black_border", f.max_black_border)),
        ("frozen", _above("frozen", f.max_frozen)),
        ("text", lambda r: _above("text_area", f.max_text_area)(r) and r.get("extract_crop_w") is None),
        ("static", _below("motion", f.min_motion)),
        ("too_fast", _above("motion", f.max_motion)),
        ("low_aesthetic", _below("aesthetic", f.min_aesthetic)),
        ("duplicate", lambda r: f.dedup and r.get("dup_of") is not None),
        ("extract_error", lambda r: r.get("extract_error") is not None),
        ("caption_check", lambda r: bool(set(c.reject_failed_checks) & _failed(r))),
        ("no_caption", lambda r: c.require_caption and _captioned_without_valid_caption(r)),
    ]


REASONS: tuple[str, ...] = tuple(name for name, _ in rules(FilterConfig()))

CROP_COLUMNS = ("extract_crop_x", "extract_crop_y", "extract_crop_w", "extract_crop_h", "crop_reason")


def crop_columns(r: Row, f: FilterConfig) -> dict[str, Any]:
    """The crop that cuts a clip's overlay text off, as ``CROP_COLUMNS`` (all None: no crop).

    A clip is cropped when the union of its ``text_boxes`` (pooled over the sampled frames)
    covers more than ``max_text_area`` of the frame: more than ``text_area``, the per-frame mean
    the ``text`` rule reads, when text shows in some frames only. The geometry is the source's
    displayed size (``source_width``, ``source_height`` when the row carries them: after a
    cropped extraction ``width`` and ``height`` are the clip file's) and the letterbox box
    ``crop_x/y/w/h`` when measured.
    """
    crop = None
    boxes = decode_boxes(r.get("text_boxes"))
    if boxes and union_area(boxes) > f.max_text_area:
        w, h = int(r.get("source_width") or r["width"] or 0), int(r.get("source_height") or r["height"] or 0)
        bars = [r.get(k) for k in ("crop_x", "crop_y", "crop_w", "crop_h")]
        crop = text_crop(
            boxes,
            w,
            h,
            tuple(int(v) for v in bars) if None not in bars else None,  # type: ignore[arg-type]
            margin=f.text_crop_margin,
            min_area=f.min_crop_area,
            max_aspect_change=f.max_crop_aspect_change,
            max_aspect=f.max_aspect,
            min_size=(f.min_width, f.min_height),
        )
    values = (crop.x, crop.y, crop.w, crop.h, crop.reason) if crop else (None,) * 5
    return dict(zip(CROP_COLUMNS, values, strict=True))


# score column -> ('min' | 'max', FilterConfig field): the thresholds drawn on the report's histograms
THRESHOLDS: dict[str, tuple[str, str]] = {
    "black_frac": ("max", "max_black_frac"),
    "luma": ("min", "min_luma"),
    "clipped": ("max", "max_clipped"),
    "artifacts": ("max", "max_artifacts"),
    "blur": ("min", "min_blur"),
    "black_border": ("max", "max_black_border"),
    "frozen": ("max", "max_frozen"),
    "text_area": ("max", "max_text_area"),
    "motion": ("min", "min_motion"),
    "aesthetic": ("min", "min_aesthetic"),
}


def thresholds(f: FilterConfig) -> dict[str, tuple[str, float]]:
    """score column -> ('min' | 'max', value) under ``f``."""
    return {col: (kind, float(getattr(f, name))) for col, (kind, name) in THRESHOLDS.items()}


def reject_reason(
    row: Row, f: FilterConfig, checks: list[tuple[str, Callable[[Row], bool]]] | None = None
) -> str | None:
    """The first rule ``row`` fails, or None to keep it. ``row``: a clip's catalog columns."""
    for name, fails in checks or rules(f):
        if fails(row):
            return name
    return None


def dedup_candidates(rows: list[dict[str, Any]], f: FilterConfig) -> list[dict[str, Any]]:
    """The clips that take part in dedup: those no rule before 'duplicate' rejects (a duplicate
    of a clip that is rejected anyway must not lose its place to it)."""
    after = ("duplicate", "extract_error", "caption_check", "no_caption")
    before = [r for r in rules(f) if r[0] not in after]
    return [r for r in rows if reject_reason(r, f, before) is None]
