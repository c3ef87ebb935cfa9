"""Overlay text: real RapidOCR on generated frames and on a decoded mp4 with burned-in text.

The engine is loaded once for the module; each OCR'd frame costs ~80 ms, so the frame counts
are kept small.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from curation.schema import Clip
from pipelines.decode import decode_video
from pipelines.overlay_text import (
    TextBox,
    covered_fraction,
    joined_text,
    overlay_text,
    text_is_stable,
)
from pipelines.stages.text_scorer import OverlayTextScorer, load_rapidocr, ocr_frames
from pipelines.tasks import ClipTask

pytest.importorskip("rapidocr")

FONT_LATIN = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf")
FONT_CJK = Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc")
W, H = 256, 144  # the decode pass's sparse frame size


def textured(seed: int, w: int = W, h: int = H) -> np.ndarray:
    """uint8 [h, w, 3] RGB: smooth random colour blobs (a busy background without text)."""
    coarse = np.random.default_rng(seed).integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8)
    return cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)


def with_en(img: np.ndarray, text: str, org: tuple[int, int]) -> np.ndarray:
    """White Hershey text with a black border (cv2.putText), ~14 px tall."""
    out = img.copy()
    for color, thick in (((0, 0, 0), 5), ((255, 255, 255), 2)):
        cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.6, color, thick, cv2.LINE_AA)
    return out


def with_pil_text(img: np.ndarray, text: str, font: Path, size: int, y: int) -> np.ndarray:
    """White text with a black border, centred horizontally at row ``y`` (PIL ImageFont)."""
    from PIL import Image, ImageDraw, ImageFont

    im = Image.fromarray(img)
    draw = ImageDraw.Draw(im)
    f = ImageFont.truetype(str(font), size)
    left, _, right, _ = draw.textbbox((0, 0), text, font=f, stroke_width=2)
    x = (img.shape[1] - (right - left)) // 2
    draw.text((x, y), text, font=f, fill="white", stroke_width=2, stroke_fill="black")
    return np.asarray(im)


@pytest.fixture(scope="module")
def ocr() -> Any:
    return load_rapidocr()


@pytest.fixture(scope="module")
def scorer(ocr: Any) -> OverlayTextScorer:
    stage = OverlayTextScorer()
    stage._ocr = ocr  # the module's engine: setup() would load the same models again
    stage.setup()
    return stage


def box(text: str, x0: float, y0: float, x1: float, y1: float) -> TextBox:
    return TextBox(text, 0.9, x0, y0, x1, y1)


# ----------------------------------------------------------------- pure functions


def test_covered_fraction_counts_overlaps_once_and_clips_to_the_frame() -> None:
    a, b = box("a", 0, 0, 10, 10), box("b", 5, 0, 15, 10)  # union 150 px
    assert covered_fraction([a, b], 100, 10) == pytest.approx(150 / 1000)
    assert covered_fraction([box("c", -50, -50, 200, 200)], 100, 10) == 1.0
    assert covered_fraction([], 100, 10) == 0.0


def test_joined_text_dedupes_similar_lines_in_first_seen_order_and_caps_length() -> None:
    frames = [
        [box("VIDLOOM DEMO 2024", 0, 0, 1, 1)],
        [box("hello", 0, 0, 1, 1), box("VIDL0OM DEMO 2024", 0, 0, 1, 1)],
    ]
    assert joined_text(frames) == "VIDLOOM DEMO 2024 | hello"
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliett"]
    many = [[box(w * 4, 0, 0, 1, 1)] for w in words]
    capped = joined_text(many, max_chars=100)
    assert capped.startswith("alpha" * 4 + " | " + "bravo" * 4) and len(capped) <= 100
    assert len(capped) > 100 - len(" | ") - 4 * len("juliett")  # stops at the line that does not fit
    assert joined_text([[box("y" * 600, 0, 0, 1, 1)]], max_chars=500) == "y" * 500
    assert joined_text([[], []]) == ""


def test_text_is_stable_needs_the_same_box_and_text_in_most_frames() -> None:
    sub = [box("SUBTITLE", 40, 120, 200, 136)]
    moved = [box("SUBTITLE", 40, 10, 200, 26)]
    other = [box("SOMETHING ELSE", 40, 120, 200, 136)]
    assert text_is_stable([sub, sub, sub, []]) is True  # 3/4 >= 0.6
    assert text_is_stable([sub, [], [], []]) is False
    assert text_is_stable([sub, moved, sub, moved]) is False  # same text, two places: 2/4 each
    assert text_is_stable([sub, other, sub, other]) is False  # same place, other text
    assert text_is_stable([[], []]) is False
    assert text_is_stable([sub]) is None  # one sampled frame cannot show recurrence


# ----------------------------------------------------------------- real OCR on frames


def test_english_text_is_read_and_clean_frames_have_none(ocr: Any) -> None:
    frames = np.stack([with_en(textured(1), "HELLO WORLD", (60, 80)), textured(2), textured(3)])
    boxes = ocr_frames(ocr, frames, min_confidence=0.6)
    assert "HELLOWORLD" in "".join(b.text for b in boxes[0]).replace(" ", "").upper()
    assert boxes[1] == [] and boxes[2] == []
    text_frame = covered_fraction(boxes[0], W, H)
    assert 0.02 < text_frame < 0.3  # a ~140x20 px line on a 256x144 frame
    scores = overlay_text(boxes, W, H)
    assert scores.text_area == pytest.approx(text_frame / 3, rel=1e-3)
    assert scores.text_stable is False


def test_large_flat_shapes_are_not_text(ocr: Any) -> None:
    """SMPTE bars (640x360, area-downscaled like the decode pass) make the detector return one
    box most of the frame tall, read as a dash with score ~0.7: the line-height cap drops it."""
    raw = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i", "smptebars=size=640x360", "-frames:v", "1",
         "-vf", f"scale={W}:{H}:flags=area", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        check=True, capture_output=True,
    ).stdout
    bars = np.frombuffer(raw, np.uint8).reshape(1, H, W, 3)
    assert ocr_frames(ocr, bars) == [[]]
    uncapped = ocr_frames(ocr, bars, max_line_height=1.0)[0]
    assert all(b.y1 - b.y0 > 0.4 * H for b in uncapped)  # whatever it finds is no text line


@pytest.mark.skipif(not FONT_CJK.exists(), reason="no CJK font (apt-get install fonts-wqy-microhei)")
def test_chinese_text_is_read(ocr: Any) -> None:
    img = with_pil_text(textured(4), "欢迎来到北京", FONT_CJK, H // 9, 60)
    (boxes,) = ocr_frames(ocr, img[None], min_confidence=0.6)
    assert "欢迎来到北京" in "".join(b.text for b in boxes)
    assert covered_fraction(boxes, W, H) > 0.01


# ----------------------------------------------------------------- the stage on a decoded mp4


@pytest.fixture(scope="module")
def text_video(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """(path, frames dir) of an 8 s 426x240 25 fps mp4: a fixed English subtitle for 0-4 s,
    then a Chinese line shown during 4-5 s only; decoded once (sparse frames 256x144)."""
    if not FONT_LATIN.exists():
        pytest.skip("no DejaVu Sans Bold font (apt-get install fonts-dejavu-core)")
    d = tmp_path_factory.mktemp("ocr_video")
    path = d / "text.mp4"
    style = "fontsize=26:fontcolor=white:borderw=3:bordercolor=black:x=(w-text_w)/2"
    draw = [f"drawtext=fontfile={FONT_LATIN}:text='FIXED SUBTITLE':{style}:y=h-50:enable='lt(t,4)'"]
    if FONT_CJK.exists():
        draw.append(f"drawtext=fontfile={FONT_CJK}:text='你好世界':{style}:y=100:enable='between(t,4,4.9)'")
    graph = "mandelbrot=size=426x240:rate=25," + ",".join(draw) + ",format=yuv420p"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", graph, "-frames:v", "200",
         "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", str(path)],
        check=True, capture_output=True,
    )
    result = decode_video(str(path), str(d / "frames"))
    assert result.frames.sparse_size == (254, 144)  # fitted in 256x144, even sides
    return str(path), result.frames.dir


def clip_task(video: tuple[str, str], start: int, end: int, status: str = "kept") -> ClipTask:
    clip = Clip(f"clip{start:04d}", "video0", 0, start, end, start / 25, end / 25, 426, 240, 25.0)
    clip.status = status  # type: ignore[assignment]
    return ClipTask(clip=clip, src_path=video[0], frames_dir=video[1])


def test_stage_reads_a_fixed_subtitle_as_stable_text(
    scorer: OverlayTextScorer, text_video: tuple[str, str]
) -> None:
    task = scorer.process(clip_task(text_video, 0, 100, status="rejected"))  # rejected clips are scored too
    s = task.clip.scores
    assert "FIXEDSUBTITLE" in (s.ocr_text or "").replace(" ", "").upper()
    assert s.text_area is not None and s.text_area > 0.01
    assert s.text_stable is True
    assert task.clip.status == "rejected" and task.error is None


def test_stage_text_in_one_sampled_frame_is_not_stable(text_video: tuple[str, str], ocr: Any) -> None:
    if not FONT_CJK.exists():
        pytest.skip("no CJK font (apt-get install fonts-wqy-microhei)")
    stage = OverlayTextScorer(every_s=1.0)  # frames at 4, 5, 6, 7 s: the line is in the first only
    stage._ocr = ocr
    task = stage.process(clip_task(text_video, 100, 200))
    s = task.clip.scores
    assert "你好世界" in (s.ocr_text or "")
    assert s.text_stable is False
    assert s.text_area is not None and 0 < s.text_area < 0.05
    assert task.clip.status == "kept"


def test_stage_leaves_failed_tasks_untouched(scorer: OverlayTextScorer, text_video: tuple[str, str]) -> None:
    task = clip_task(text_video, 0, 100)
    task.error = "extract: boom"
    assert scorer.process(task).clip.scores.text_area is None
