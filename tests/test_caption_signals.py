"""The signals caption backend: bilingual captions from measured signals that pass their own checks,
deterministically, and dominant colours of synthetic frames."""

from __future__ import annotations

import numpy as np
import pytest

from captioner.signals import CAMERA, OCR_MAX_CHARS, dominant_colours, signals_caption
from captioner.validate import check_agreement, check_caption, failed, validate_pair


def halves(a: tuple[int, int, int], b: tuple[int, int, int], n: int = 3) -> np.ndarray:
    """uint8 RGB [n, 72, 128, 3]: left half colour a, right half colour b."""
    frames = np.zeros((n, 72, 128, 3), np.uint8)
    frames[:, :, :64], frames[:, :, 64:] = a, b
    return frames


NEWS = "欢迎收看新闻联播今天是二零二四年一月一日星期一 | 本节目由某某公司赞助播出"
SIGNALS = {
    "static dark, zh text": {
        "duration_s": 4.04, "motion": 0.001, "camera_motion": "static", "luma": 28.0,
        "ocr_text": NEWS, "black_border": 0.25, "shot_index": 0, "transition": "start",
    },
    "fast pan": {
        "duration_s": 3.0, "motion": 0.42, "camera_motion": "pan_right", "luma": 140.0, "ocr_text": None,
        "black_border": 0.0, "shot_index": 4, "n_shots": 9, "transition": "cut",
    },
    "zoom": {
        "duration_s": 6.5, "motion": 0.05, "camera_motion": "zoom_in", "luma": 210.0,
        "transition": "dissolve",
    },
    "mixed, en text": {
        "duration_s": 2.2, "motion": 0.02, "camera_motion": "mixed", "luma": 75.0,
        "ocr_text": 'SALE "50% OFF" on 3 red shoes', "width": 640, "height": 360, "fps": 25.0,
    },
}  # fmt: skip
FRAMES = {
    "static dark, zh text": halves((30, 30, 30), (0, 0, 0)),
    "fast pan": halves((200, 40, 30), (30, 60, 200)),
    "zoom": None,
    "mixed, en text": halves((40, 160, 60), (240, 240, 240)),
}


@pytest.mark.parametrize("name", list(SIGNALS))
def test_signals_captions_pass_their_checks(name: str) -> None:
    en, zh = signals_caption(SIGNALS[name], FRAMES[name])
    checks = validate_pair(en, zh)
    assert failed(checks) == [], (en, zh, checks)
    assert check_caption(en, "en")["lang"]["detected"] == "en"
    assert check_caption(zh, "zh")["lang"]["detected"] == "zh"
    frames = FRAMES[name]
    assert signals_caption(dict(SIGNALS[name]), None if frames is None else frames.copy()) == (en, zh)


def test_signal_values_appear_on_both_sides() -> None:
    en, zh = signals_caption(SIGNALS["fast pan"], FRAMES["fast pan"])
    assert en.startswith("A 3.0-second video clip with fast movement.")
    assert "shot 5 of 9" in en and "第5个镜头（共9个）" in zh
    assert "The camera pans right." in en and "镜头向右平移" in zh
    assert "red (50%) and blue (50%)" in en and "红色（50%）和蓝色（50%）" in zh
    assert check_agreement(en, zh)["colours"]["en"] == ["blue", "red"]
    assert "letterbox" not in en  # black_border 0 says nothing

    en, zh = signals_caption(SIGNALS["static dark, zh text"], FRAMES["static dark, zh text"])
    assert "almost no movement" in en and "固定镜头" in zh and "The scene is dark." in en and "画面很暗" in zh
    assert "black bars covering 25%" in en and "黑边占画面的25%" in zh
    assert en.endswith(f'On-screen text reads "{NEWS}".') and zh.endswith(f'画面中的文字为"{NEWS}"。')

    en, zh = signals_caption(SIGNALS["zoom"], None)
    assert "zooms in" in en and "推近" in zh and "colour" not in en and "颜色" not in zh
    assert "entered through a dissolve" in en and "叠化" in zh


def test_ocr_text_is_quoted_safely_and_truncated() -> None:
    en, zh = signals_caption(SIGNALS["mixed, en text"], None)
    assert en.endswith("""On-screen text reads "SALE '50% OFF' on 3 red shoes".""")
    long_zh = "这是一段很长的屏幕文字" * 20
    en, zh = signals_caption({"duration_s": 5.0, "motion": 0.01, "ocr_text": long_zh}, None)
    quoted = en.split('"')[1]
    assert len(quoted) == OCR_MAX_CHARS and quoted.endswith("…")
    assert check_caption(en, "en")["lang"]["ok"] and failed(validate_pair(en, zh)) == []


def test_every_camera_label_has_both_languages() -> None:
    for label in CAMERA:
        signals = {"duration_s": 5.0, "motion": 0.1, "camera_motion": label, "luma": 120.0}
        en, zh = signals_caption(signals, None)
        assert failed(validate_pair(en, zh)) == [], label


def test_dominant_colours_of_synthetic_frames() -> None:
    assert dominant_colours(halves((220, 20, 20), (20, 20, 220))) == [("red", 0.5), ("blue", 0.5)]
    quarter = halves((255, 255, 255), (128, 128, 128))
    quarter[:, :36, :64] = (20, 160, 40)
    # ties in palette order
    assert dominant_colours(quarter) == [("gray", 0.5), ("white", 0.25), ("green", 0.25)]
    named = {  # one pixel colour each
        (0, 0, 0): "black", (255, 165, 0): "orange", (139, 69, 19): "brown", (255, 192, 203): "pink",
        (128, 0, 128): "purple", (250, 230, 40): "yellow", (0, 200, 220): "blue",
    }  # fmt: skip
    for rgb, colour in named.items():
        assert dominant_colours(np.full((1, 8, 8, 3), rgb, np.uint8), k=1) == [(colour, 1.0)], rgb


def test_letterbox_bars_are_not_a_colour() -> None:
    frames = halves((220, 20, 20), (20, 20, 220))
    frames[:, :12], frames[:, -12:] = 0, 0
    assert dominant_colours(frames) == [("red", 0.5), ("blue", 0.5)]
    dark = np.full((2, 16, 16, 3), 5, np.uint8)  # a black picture is black, not all bars
    assert dominant_colours(dark) == [("black", 1.0)]
    assert dominant_colours(np.zeros((0, 8, 8, 3), np.uint8)) == []
