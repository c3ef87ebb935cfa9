"""The keep/reject decision: a pure function of a clip's stored columns and the thresholds.

Every score is measured once and stored (kept and rejected clips alike); deciding is a query
over those columns, so ``vidloom curate --rescore`` and a changed threshold never decode a
video. The rules run in order and the first failing one is the clip's ``reject_reason``
(datatrove-style: a filter returns keep/drop with a reason). Each scorer registers its own rules
with their positions (pipelines/scorers.py, in its pipelines/stages/*_scorer.py file); this module
holds the filter step's own (shape, dedup, extraction, captions) and merges the two. Today:

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
After these come the user's SQL rules, ``filters.extra`` (pipelines/filters_extra.py; the filter
step evaluates them in DuckDB, pipelines/decide_columns.py).

Overlay text is cropped off when it sits in bands or corners (``crop_columns``,
pipelines/text_crop.py): the clip keeps ``extract_crop_*`` and ``crop_reason``, and extraction
cuts that box. ``text`` rejects (``text_area`` above ``max_text_area``) only when no crop would do.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from pipelines import scorers
from pipelines.config import CaptionConfig, FilterConfig
from pipelines.scorers import Rule
from pipelines.text_crop import decode_boxes, text_crop, union_area

Row = Mapping[str, Any]
EPS = 1e-6


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


def _wh(x: Any) -> tuple[np.ndarray, np.ndarray]:
    return np.nan_to_num(x["width"], nan=0.0), np.nan_to_num(x["height"], nan=0.0)


def _caption_check_mask(x: Any, c: CaptionConfig) -> np.ndarray:
    out = np.zeros(x.n, bool)
    wanted = set(c.reject_failed_checks)
    if wanted:
        idx, values = x.sparse("caption_failed")
        out[idx] = [bool(wanted & _failed({"caption_failed": v})) for v in values]
    return out


def _failed_any(x: Any) -> np.ndarray:
    out = np.zeros(x.n, bool)
    out[x.sparse("caption_failed")[0]] = True
    return out


# The filter step's own rules (section: the caption config). The scorers' rules sit between
# bad_aspect (40) and duplicate (500): pipelines/stages/*_scorer.py.
CORE_RULES = [
    Rule("too_short", 10, lambda x, f, c: (x["end_s"] - x["start_s"]) < f.min_duration_s - EPS,
         lambda r, f, c: _duration(r) < f.min_duration_s - EPS, ("start_s", "end_s")),
    Rule("too_long", 20, lambda x, f, c: (x["end_s"] - x["start_s"]) > f.max_duration_s + EPS,
         lambda r, f, c: _duration(r) > f.max_duration_s + EPS, ("start_s", "end_s")),
    Rule("low_resolution", 30, lambda x, f, c: (_wh(x)[0] < f.min_width) | (_wh(x)[1] < f.min_height),
         lambda r, f, c: (r["width"] or 0) < f.min_width or (r["height"] or 0) < f.min_height,
         ("width", "height")),
    Rule("bad_aspect", 40,
         lambda x, f, c: np.maximum(*_wh(x)) > f.max_aspect * np.maximum(1, np.minimum(*_wh(x))),
         lambda r, f, c: max(r["width"], r["height"]) > f.max_aspect * max(1, min(r["width"], r["height"])),
         ("width", "height")),
    Rule("duplicate", 500, lambda x, f, c: x.present("dup_of") & bool(f.dedup),
         lambda r, f, c: f.dedup and r.get("dup_of") is not None),
    Rule("extract_error", 600, lambda x, f, c: x.present("extract_error"),
         lambda r, f, c: r.get("extract_error") is not None),
    Rule("caption_check", 700, lambda x, f, c: _caption_check_mask(x, c),
         lambda r, f, c: bool(set(c.reject_failed_checks) & _failed(r))),
    Rule("no_caption", 710,
         lambda x, f, c: (x.present("caption_error") | _failed_any(x)) if c.require_caption else False,
         lambda r, f, c: c.require_caption and _captioned_without_valid_caption(r)),
]
scorers.register_core_rules(CORE_RULES)
# the rules from 'duplicate' on: dedup candidates are the clips no earlier rule rejects
AFTER_DEDUP = ("duplicate", "extract_error", "caption_check", "no_caption")


def decision_rules() -> list[Rule]:
    """Every rule in decision order: the filter step's and each registered scorer's."""
    return scorers.all_rules()


def rule_settings(rule: Rule, c: CaptionConfig, scores: Any = None) -> Any:
    """What ``rule`` reads besides the filters: the caption config for the filter step's own
    rules, the scorer's ``scores.<key>`` section (defaults when ``scores`` is None) for a scorer's."""
    return c if rule.owner == "filter" else scorers.get(rule.owner).section(scores)


def rules(
    f: FilterConfig, c: CaptionConfig | None = None, scores: Any = None
) -> list[tuple[str, Callable[[Row], bool]]]:
    """(reason, fails) in decision order. ``c``: the caption rules' settings (default: off);
    ``scores``: the scorers' sections (default: their defaults)."""
    c = c or CaptionConfig()
    out = []
    for rule in decision_rules():
        fails, settings = scorers.row_form(rule), rule_settings(rule, c, scores)
        out.append((rule.reason, lambda r, fails=fails, settings=settings: fails(r, f, settings)))
    return out


REASONS: tuple[str, ...] = tuple(name for name, _ in rules(FilterConfig()))


def rule_table(f: FilterConfig | None = None) -> list[tuple[str, str]]:
    """(reason, whose rule) in decision order, ``f.extra``'s last ('filters.extra'): the report lists them."""
    out = [(r.reason, r.owner) for r in decision_rules()]
    extra = [(str(e.get("reason") or e.get("name")), "filters.extra") for e in (f.extra if f else ())]
    return out + [e for e in extra if e[0] not in {r for r, _ in out}]

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


def _threshold_rules() -> list[Rule]:
    return [r for r in decision_rules() if r.threshold is not None]


# score column -> ('min' | 'max', FilterConfig field): the built-in thresholds drawn on the
# report's histograms (each rule names its own: ``Rule.threshold``)
THRESHOLDS: dict[str, tuple[str, str]] = {
    r.threshold[0]: (r.threshold[1], r.threshold[2].removeprefix("filters."))  # type: ignore[index]
    for r in _threshold_rules() if r.threshold[2].startswith("filters.")  # type: ignore[index]
}


def thresholds(f: FilterConfig, scores: Any = None) -> dict[str, tuple[str, float]]:
    """score column -> ('min' | 'max', value) under ``f`` (and the scorers' sections ``scores``)."""
    out: dict[str, tuple[str, float]] = {}
    for r in _threshold_rules():
        col, kind, _ = r.threshold  # type: ignore[misc]
        out.setdefault(col, (kind, scorers.threshold_value(r, f, rule_settings(r, CaptionConfig(), scores))))
    return out


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
    before = [r for r in rules(f) if r[0] not in AFTER_DEDUP]
    return [r for r in rows if reject_reason(r, f, before) is None]
