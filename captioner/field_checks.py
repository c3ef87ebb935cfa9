"""Field agreement: a structured caption's fields against what the pipeline measured.

Two fields can be checked against a measurement (``caption_checks`` rows, one per clip and
field; ``agree`` None when there is nothing to compare):

- ``camera_movement`` vs the optical-flow label ``clips.camera_motion`` (pipelines/motion.py:
  static, pan_left/right, tilt_up/down, zoom_in/out, mixed). Flow cannot tell a dolly from a
  zoom, so dolly_in agrees with zoom_in and dolly_out with zoom_out; tracking and orbit move
  the whole picture, so they agree with any moving label; 'mixed' agrees with any moving label
  too (the flow's 'mixed' is camera and subject motion together). 'handheld' and 'unknown'
  are not compared.
- ``text_overlays`` vs the OCR text ``clips.ocr_text`` (pipelines/overlay_text.py): both empty
  agree; text on one side only disagrees; both non-empty agree when the OCR lines hold at least
  ``MIN_TEXT_MATCH`` of the stated text's characters (casefolded, letters and digits only, by
  ``difflib`` matching blocks). Not compared when the caption's list is null (unknown) or OCR
  did not run (``ocr_text`` NULL, or a crop cut the text away).
"""

from __future__ import annotations

import json
from difflib import SequenceMatcher
from typing import Any

from curation.schema import Caption, CaptionCheck, Clip

MOVING = frozenset({"pan_left", "pan_right", "tilt_up", "tilt_down", "zoom_in", "zoom_out", "mixed"})
AGREES: dict[str, frozenset[str]] = {
    "static": frozenset({"static"}),
    **{m: frozenset({m}) for m in ("pan_left", "pan_right", "tilt_up", "tilt_down", "zoom_in", "zoom_out")},
    "dolly_in": frozenset({"zoom_in"}),
    "dolly_out": frozenset({"zoom_out"}),
    "tracking": MOVING,
    "orbit": MOVING,
    "mixed": MOVING,
}
MIN_TEXT_MATCH = 0.6


def camera_check(captioned: str | None, measured: str | None) -> tuple[bool | None, str]:
    """(agree, why) of a captioned camera movement against the flow label."""
    if captioned is None or captioned not in AGREES:
        return None, f"captioned {captioned or 'nothing'}: not comparable"
    if measured is None:
        return None, "no optical-flow label"
    ok = measured in AGREES[captioned]
    return ok, f"{captioned} {'agrees with' if ok else 'contradicts'} flow {measured}"


def _norm(text: str) -> str:
    return "".join(ch for ch in text.casefold() if ch.isalnum())


def text_check(captioned: list[str] | None, ocr_text: str | None) -> tuple[bool | None, str]:
    """(agree, why) of the stated overlay text against the OCR lines."""
    if captioned is None:
        return None, "overlay text unknown"
    if ocr_text is None:
        return None, "OCR did not run"
    stated, seen = _norm(" ".join(captioned)), _norm(ocr_text)
    if not stated or not seen:
        if not stated and not seen:
            return True, "no text either way"
        return False, "text stated but OCR found none" if stated else "OCR found text the caption omits"
    matched = sum(b.size for b in SequenceMatcher(None, stated, seen, autojunk=False).get_matching_blocks())
    share = matched / len(stated)
    return share >= MIN_TEXT_MATCH, f"{share:.0%} of the stated text found by OCR"


def field_checks(clip: Clip, captions: list[Caption]) -> list[CaptionCheck]:
    """The agreement rows of a clip whose captions carry a structured description ([] when none
    does): from its dense English caption, else the first caption with fields."""
    with_fields = [c for c in captions if c.fields_version]
    if not with_fields:
        return []
    c = next((c for c in with_fields if (c.kind, c.lang) == ("dense", "en")), with_fields[0])
    s = clip.scores
    overlays: Any = json.loads(c.text_overlays) if c.text_overlays else None
    ocr = None if clip.crop_reason else s.ocr_text
    cam_ok, cam_why = camera_check(c.camera_movement, s.camera_motion)
    txt_ok, txt_why = text_check(overlays, ocr)
    return [
        CaptionCheck(
            clip.clip_id, "camera_movement", c.camera_movement, s.camera_motion, cam_ok, cam_why, c.backend
        ),
        CaptionCheck(
            clip.clip_id,
            "text_overlays",
            None if overlays is None else " | ".join(overlays),
            ocr,
            txt_ok,
            txt_why,
            c.backend,
        ),
    ]
