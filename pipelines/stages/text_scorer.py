"""Overlay-text scorer: RapidOCR (PP-OCR det + rec, zh and en, weights shipped in the wheel) on a
few of a clip's sparse frames -> ``text_area``, ``ocr_text``, ``text_stable``, and the boxes
themselves (``text_boxes``, pooled over the frames) from which the filter step crops text away
(pipelines/text_crop.py).

Cost, measured on 2 cores with one intra-op thread: about 70-90 ms per 256x144 frame with
``det_side=288``. RapidOCR's default detector side (736, the shorter side is *scaled up* to it)
costs about 5x more on these small frames and reads the same text. Recognition at 256x144 holds
for text about frame_height/14 or taller (~10 px glyphs); smaller subtitle-sized text
(frame_height/20) needs 384x216 sparse frames.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from pipelines.clip_frames import clip_sparse
from pipelines.overlay_text import TextBox, boxes_from_ocr, overlay_text
from pipelines.scorers import Rule, ScorerSpec, above, register
from pipelines.stage import Resources, Stage, unhashed
from pipelines.tasks import ClipTask
from pipelines.text_crop import encode_boxes, union_boxes


def load_rapidocr(det_side: int = 288, threads: int = 1) -> Any:
    """A quiet RapidOCR engine on ONNX Runtime (CPU), with the packaged PP-OCR models.

    Args:
        det_side: the detector input's shorter side in pixels (frames are scaled to it).
        threads: ONNX Runtime intra-op threads per session (one per worker keeps workers from
            fighting over the cores).
    """
    try:
        from rapidocr import RapidOCR
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError("the overlay-text scorer needs RapidOCR: pip install rapidocr onnxruntime") from e
    return RapidOCR(
        params={
            "Global.log_level": "error",
            # Overlay text is never upside down: skip the 180-degree angle classifier.
            "Global.use_cls": False,
            "Det.limit_side_len": det_side,
            "EngineConfig.onnxruntime.intra_op_num_threads": threads,
            "EngineConfig.onnxruntime.inter_op_num_threads": 1,
        }
    )


def ocr_frames(
    ocr: Any, frames_rgb: np.ndarray, min_confidence: float = 0.6, max_line_height: float = 0.4
) -> list[list[TextBox]]:
    """The text boxes of each frame (see ``boxes_from_ocr``).

    Args:
        frames_rgb: uint8 [k, h, w, 3] RGB.
        max_line_height: boxes taller than this fraction of the frame height are dropped.
    """
    max_px = max_line_height * frames_rgb.shape[1]
    # RapidOCR takes an ndarray as BGR (OpenCV order).
    results = (ocr(np.ascontiguousarray(f[..., ::-1])) for f in frames_rgb)
    return [boxes_from_ocr(r, min_confidence, max_px) for r in results]


@dataclass
class TextScoreConfig:
    """scores.text: RapidOCR (PP-OCR, zh + en) on sampled sparse frames."""

    enabled: bool = unhashed(True)  # false: no OCR (the overlay_text scorer is skipped)
    every_s: float = 2.0  # one OCR frame per this many seconds of clip
    max_frames: int = 16  # at most this many frames per clip, spread evenly
    min_confidence: float = 0.6  # recognition score below which a line is ignored
    max_line_height: float = 0.4  # taller boxes (fraction of frame height) are not text lines
    det_side: int = 288  # the text detector's input, shorter side in pixels
    max_chars: int = 500  # ocr_text length cap
    stable_iou: float = 0.5  # text_stable: same box above this IoU ...
    stable_fraction: float = 0.6  # ... with similar text in at least this fraction of frames
    threads: int = unhashed(1)  # RapidOCR intra-op threads per actor


@dataclass
class OverlayTextScorer(TextScoreConfig, Stage[ClipTask, ClipTask]):
    """Sets ``text_area``, ``ocr_text``, ``text_stable`` and ``text_boxes``; the filter step's
    ``text`` rule reads ``text_area`` and crops by ``text_boxes``. A clip whose span holds no
    sparse frame is left unmeasured (None)."""

    name: ClassVar[str] = "overlay_text"
    version: ClassVar[int] = 2  # 2: text_boxes
    # One OCR engine per actor, one ONNX Runtime thread each.
    resources: ClassVar[Resources] = Resources(cpus=1.0, actors=True)
    columns: ClassVar[tuple[str, ...]] = ("text_area", "ocr_text", "text_stable", "text_boxes")

    _ocr: Any = field(default=None, init=False, repr=False, compare=False)

    def setup(self) -> None:
        if self._ocr is None:
            self._ocr = load_rapidocr(self.det_side, self.threads)

    def process(self, task: ClipTask) -> ClipTask:
        if not task.wants(self.name):
            return task
        frames, _ = clip_sparse(task, self.every_s)
        if len(frames) == 0:
            return task
        if len(frames) > self.max_frames:
            frames = frames[np.linspace(0, len(frames) - 1, self.max_frames).round().astype(int)]
        boxes = ocr_frames(self._ocr, frames, self.min_confidence, self.max_line_height)
        h, w = frames.shape[1:3]
        found = overlay_text(boxes, w, h, self.max_chars, self.stable_iou, self.stable_fraction)
        s = task.clip.scores
        s.text_area, s.ocr_text, s.text_stable = found.text_area, found.ocr_text, found.text_stable
        s.text_boxes = encode_boxes(union_boxes(boxes, w, h))
        return task


# expensive: behind a gate (cost-ordered scoring); 'text' only when no crop cuts the text off
register(ScorerSpec(
    name="overlay_text", stage=OverlayTextScorer, cost=100, key="text",
    ranges={
        "every_s": (0, None, True),
        "max_frames": (1, None, False),
        "min_confidence": (0, 1, False),
        "max_line_height": (0, 1, False),
        "det_side": (32, None, False),
        "stable_iou": (0, 1, False),
        "stable_fraction": (0, 1, False),
    },
    columns=OverlayTextScorer.columns,
    expensive=True, gate="text",
    unavailable=lambda s: None if s.enabled else "scores.text.enabled is false",
    rules=(
        Rule("text", 200, lambda x, f, s: (x["text_area"] > f.max_text_area) & ~x.present("extract_crop_w"),
             lambda r, f, s: above(r, "text_area", f.max_text_area) and r.get("extract_crop_w") is None,
             ("text_area",), ("text_area", "max", "filters.max_text_area")),
    ),
))
