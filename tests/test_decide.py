"""The keep/reject decision: first failing rule, unmeasured scores never reject, dedup picks."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from pipelines.config import FilterConfig
from pipelines.decide import REASONS, dedup_candidates, reject_reason, thresholds
from pipelines.dedup import clip_phash, find_duplicates, parse_phash, phash_distance_matrix


def clip(**over: Any) -> dict[str, Any]:
    row = {
        "clip_id": "c",
        "start_s": 0.0,
        "end_s": 3.0,
        "width": 640,
        "height": 360,
        "start_frame": 0,
        "end_frame": 75,
        "blur": 300.0,
        "luma": 110.0,
        "clipped": 0.01,
        "black_frac": 0.0,
        "black_border": 0.0,
        "frozen": 0.0,
        "artifacts": 0.0,
        "text_area": 0.0,
        "motion": 0.05,
        "aesthetic": None,
        "dup_of": None,
    }
    row.update(over)
    return row


@pytest.mark.parametrize(
    ("over", "reason"),
    [
        ({}, None),
        ({"end_s": 0.5}, "too_short"),
        ({"end_s": 90.0}, "too_long"),
        ({"width": 48, "height": 32}, "low_resolution"),
        ({"width": 2000, "height": 100}, "bad_aspect"),
        ({"black_frac": 1.0, "luma": 16.0, "blur": 0.0}, "black"),  # black wins over dark and blurry
        ({"luma": 20.0}, "dark"),
        ({"luma": 28.0, "luma_high": 38.0}, "dark"),  # dim throughout (the demo's planted dark shot)
        ({"luma": 36.0, "luma_high": 191.0}, None),  # a dark scene with lit parts (Megamind.avi)
        ({"luma": 240.0}, "overexposed"),
        ({"clipped": 0.6}, "overexposed"),
        ({"clipped": 0.6, "luma_high": 253.0}, "overexposed"),  # blown highlights
        ({"clipped": 0.57, "luma": 12.0, "luma_high": 126.0}, None),  # crushed blacks (world.mp4's globe)
        ({"artifacts": 0.9, "blur": 5.0}, "compressed"),  # a crushed clip is blurry too: compression first
        ({"blur": 5.0, "frozen": 1.0}, "blurry"),  # first failing rule, in order
        ({"black_border": 0.25}, "letterbox"),
        ({"frozen": 1.0, "motion": 0.0}, "frozen"),
        ({"text_area": 0.05}, "text"),
        ({"motion": 0.0001}, "static"),
        ({"motion": 50.0}, "too_fast"),
        ({"aesthetic": 2.0}, "low_aesthetic"),
        ({"dup_of": "other"}, "duplicate"),
        ({"extract_error": "ffmpeg failed"}, "extract_error"),
    ],
)
def test_first_failing_rule_is_the_reason(over: dict[str, Any], reason: str | None) -> None:
    assert reject_reason(clip(**over), FilterConfig()) == reason


def test_unmeasured_scores_never_reject() -> None:
    unmeasured = {
        k: None
        for k in (
            "blur",
            "luma",
            "clipped",
            "black_frac",
            "black_border",
            "frozen",
            "artifacts",
            "text_area",
            "motion",
            "aesthetic",
        )
    }
    assert reject_reason(clip(**unmeasured), FilterConfig()) is None


def test_a_threshold_change_moves_the_decision() -> None:
    row = clip(blur=50.0)
    assert reject_reason(row, FilterConfig(min_blur=40.0)) is None
    assert reject_reason(row, FilterConfig(min_blur=60.0)) == "blurry"
    assert reject_reason(clip(dup_of="x"), FilterConfig(dedup=False)) is None
    assert set(thresholds(FilterConfig())) <= set(clip()) | {"aesthetic"}
    assert REASONS[0] == "too_short" and REASONS[-1] == "no_caption"


def _textured(seed: int) -> np.ndarray:
    import cv2

    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.integers(0, 255, (144, 256, 3), dtype=np.uint8), (9, 9), 3)


def test_near_duplicates_survive_noise_and_keep_the_larger_clip() -> None:
    a, c = _textured(0), _textured(1)
    noisy = np.clip(a.astype(int) + np.random.default_rng(2).integers(-8, 9, a.shape), 0, 255).astype(
        np.uint8
    )
    frames = {"orig": np.stack([a] * 4), "noisy": np.stack([noisy] * 4), "other": np.stack([c] * 4)}
    rows = [
        clip(clip_id="orig", width=640, height=360, phash=clip_phash(frames["orig"]), content_hash="h1"),
        clip(clip_id="noisy", width=480, height=270, phash=clip_phash(frames["noisy"]), content_hash="h2"),
        clip(clip_id="other", phash=clip_phash(frames["other"]), content_hash="h3"),
        clip(clip_id="remux", width=320, height=180, phash=clip_phash(frames["other"]), content_hash="h3"),
    ]
    d = phash_distance_matrix([parse_phash(r["phash"]) for r in rows])
    assert d[0, 1] <= 6 and d[0, 2] >= 20  # close vs unrelated, out of 64 bits
    assert find_duplicates(rows, 10) == {"noisy": "orig", "remux": "other"}
    assert find_duplicates(rows, 0) == {"remux": "other"}  # exact content hash only


def test_dedup_ignores_clips_rejected_for_another_reason() -> None:
    rows = [clip(clip_id="a", blur=1.0, width=1280, height=720), clip(clip_id="b")]
    assert [r["clip_id"] for r in dedup_candidates(rows, FilterConfig())] == ["b"]


def test_semantic_dedup_uses_stored_embeddings() -> None:
    from pipelines.dedup import decode_embedding, encode_embedding

    rng = np.random.default_rng(3)
    base = rng.normal(size=768)
    near, far = base + 0.05 * rng.normal(size=768), rng.normal(size=768)
    unit = lambda v: v / np.linalg.norm(v)  # noqa: E731
    stored = {k: encode_embedding(unit(v)) for k, v in {"a": base, "b": near, "c": far}.items()}
    emb = {k: decode_embedding(t) for k, t in stored.items()}
    assert abs(float(emb["a"] @ unit(base)) - 1) < 1e-3
    rows = [clip(clip_id=k, end_frame=75 - i) for i, k in enumerate("abc")]  # no hashes: embeddings only
    assert find_duplicates(rows, 10, emb, min_cosine=0.97) == {"b": "a"}
    assert find_duplicates(rows, 10, None) == {}


def test_caption_rules_are_off_unless_configured() -> None:
    from pipelines.config import CaptionConfig
    from pipelines.decide import rules

    row = clip(caption_error="timeout after 4 retries", caption_failed="lang_zh,numbers")
    assert reject_reason(row, FilterConfig()) is None  # recorded, not rejected, by default
    f = FilterConfig()
    required = rules(f, CaptionConfig(require_caption=True))
    assert reject_reason(row, f, required) == "no_caption"
    assert reject_reason(row, f, rules(f, CaptionConfig(reject_failed_checks=("lang",)))) == "caption_check"
    assert reject_reason(row, f, rules(f, CaptionConfig(reject_failed_checks=("colours",)))) is None
    # require_caption: a request that failed, or a failed check, rejects; a clip not captioned yet
    # (the filter step runs before the caption step) and a clip whose checks all passed do not
    transport = clip(caption_error="dense_en: http 500", caption_failed="")
    assert reject_reason(transport, f, required) == "no_caption"
    assert reject_reason(clip(caption_failed="reply_zh,lang_zh"), f, required) == "no_caption"
    assert reject_reason(clip(caption_failed=None), f, required) is None
    assert reject_reason(clip(caption_failed=""), f, required) is None
