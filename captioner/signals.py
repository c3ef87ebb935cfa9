"""The ``signals`` caption backend: a deterministic zh + en caption written from measured signals.

No model: each measured signal (ClipScores, the clip span, the sparse frames) becomes one
template sentence in both languages. Every value is rendered identically on both sides
(numbers as Arabic digits, colours from one palette), so ``check_agreement`` passes by
construction; the catalog labels these captions ``backend='signals'``.

Choices:
- Motion level from ``motion`` (frame widths/s, pipelines/motion.py): static < 0.005 (the
  static filter's threshold), slow < 0.03, moderate < 0.15, fast above (a pan across the frame
  in 16 s is 0.06, a whip pan about 1).
- Brightness from mean ``luma`` (0-255): dark < 50, dim < 90, normal < 170, bright above.
- Dominant colours: pixels quantised by HSV rules to 11 named colours (``PALETTE``); the colour
  words gold and silver that ``check_agreement`` also reads are materials, not pixel colours
  (gold pixels are yellow, silver pixels gray), so they are not in the palette. Letterbox bars
  are trimmed first, so they do not count as black. Colours under 5 % are not mentioned.
- OCR text goes last, in double quotes, truncated to 80 characters: language ID and agreement
  skip quoted spans (captioner/validate.py), so Chinese on-screen text keeps an English caption
  English (unquoted, a 20-character Chinese sign already flips lingua to Chinese).
"""

from __future__ import annotations

from typing import Any

import numpy as np

PALETTE: tuple[str, ...] = (
    "black", "white", "gray", "red", "orange", "yellow", "green", "blue", "purple", "pink", "brown",
)  # fmt: skip
ZH_COLOURS = {
    "black": "黑色", "white": "白色", "gray": "灰色", "red": "红色", "orange": "橙色", "yellow": "黄色",
    "green": "绿色", "blue": "蓝色", "purple": "紫色", "pink": "粉色", "brown": "棕色",
}  # fmt: skip
MIN_SHARE = 0.05  # colours below this share of the picture are not mentioned
OCR_MAX_CHARS = 80

_MOTION = (  # (upper bound in frame widths/s, en, zh)
    (0.005, "almost no movement", "画面几乎静止"),
    (0.03, "slow movement", "画面运动缓慢"),
    (0.15, "moderate movement", "画面运动适中"),
    (float("inf"), "fast movement", "画面运动很快"),
)
_LIGHT = (  # (upper bound of mean luma, en, zh)
    (50.0, "The scene is dark.", "画面很暗。"),
    (90.0, "The lighting is dim.", "光线昏暗。"),
    (170.0, "The lighting is normal.", "光线正常。"),
    (float("inf"), "The scene is brightly lit.", "画面明亮。"),
)
CAMERA = {
    "static": ("The camera is static.", "固定镜头，摄像机保持不动。"),
    "pan_left": ("The camera pans left.", "镜头向左平移。"),
    "pan_right": ("The camera pans right.", "镜头向右平移。"),
    "tilt_up": ("The camera tilts up.", "镜头向上倾斜（上摇）。"),
    "tilt_down": ("The camera tilts down.", "镜头向下倾斜（下摇）。"),
    "zoom_in": ("The camera zooms in.", "镜头推近。"),
    "zoom_out": ("The camera zooms out.", "镜头拉远。"),
    "mixed": (
        "The camera moves in a complex way, or the subjects move independently of it.",
        "镜头呈复杂运动，或画面中的主体独立于镜头运动。",
    ),
}
_TRANSITION = {
    "start": ("at the start of the video", "位于视频开头"),
    "cut": ("entered by a hard cut", "由硬切进入"),
    "dissolve": ("entered through a dissolve", "由叠化转场进入"),
    "fade": ("entered through a fade", "由淡入淡出转场进入"),
}


def _level(value: float, table: tuple[tuple[float, str, str], ...]) -> tuple[str, str]:
    return next((en, zh) for bound, en, zh in table if value < bound)


def _inside_bars(frames: np.ndarray, bar_luma: float = 24.0) -> np.ndarray:
    """The frames without edge rows/columns that are dark in every frame (letterbox bars)."""
    luma = frames.max(axis=-1)  # [k, h, w]; the brightest channel, so colour never counts as bar
    rows = luma.max(axis=(0, 2)) > bar_luma
    cols = luma.max(axis=(0, 1)) > bar_luma
    if not rows.any() or not cols.any():  # all dark: a dark picture, not bars
        return frames
    r, c = np.flatnonzero(rows), np.flatnonzero(cols)
    return frames[:, r[0] : r[-1] + 1, c[0] : c[-1] + 1]


def colour_labels(rgb: np.ndarray) -> np.ndarray:
    """Index into ``PALETTE`` of each pixel.

    Args:
        rgb: uint8 [..., 3] RGB.

    Returns:
        int64 [...]: black below 20 % value; white/gray when chroma is low; otherwise by hue,
        with dark oranges and yellows brown, light desaturated reds and light magentas pink.
    """
    x = rgb.astype(np.float32) / 255.0
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    v, mn = x.max(axis=-1), x.min(axis=-1)
    d = v - mn
    s = np.where(v > 0, d / np.maximum(v, 1e-6), 0.0)
    dd = np.maximum(d, 1e-6)
    h = np.where(v == r, ((g - b) / dd) % 6, np.where(v == g, (b - r) / dd + 2, (r - g) / dd + 4)) * 60
    idx = PALETTE.index
    chroma = np.select(
        [
            (h < 15) | (h >= 340),
            h < 45,
            h < 70,
            h < 170,
            h < 260,
            h < 290,
        ],
        [
            np.where((v >= 0.75) & (s < 0.5), idx("pink"), idx("red")),
            np.where(v >= 0.65, idx("orange"), idx("brown")),
            np.where(v >= 0.5, idx("yellow"), idx("brown")),
            idx("green"),
            idx("blue"),
            idx("purple"),
        ],
        default=np.where(v >= 0.6, idx("pink"), idx("purple")),
    )
    grey = np.where(v >= 0.8, idx("white"), idx("gray"))
    return np.where(v < 0.2, idx("black"), np.where((s < 0.2) | (d < 0.08), grey, chroma)).astype(np.int64)


def dominant_colours(frames: np.ndarray, k: int = 3) -> list[tuple[str, float]]:
    """The ``k`` most common palette colours and their shares of the picture.

    Args:
        frames: uint8 RGB [n, h, w, 3] sparse frames (or one [h, w, 3] frame).
        k: how many colours.

    Returns:
        [(colour, share)] by share descending (ties in palette order), shares rounded to 3
        places; letterbox bars excluded; every second pixel in each direction is read.
    """
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    if frames.size == 0:
        return []
    pixels = _inside_bars(frames)[:, ::2, ::2]
    counts = np.bincount(colour_labels(pixels).ravel(), minlength=len(PALETTE))
    order = sorted(range(len(PALETTE)), key=lambda i: (-counts[i], i))[:k]
    total = counts.sum()
    return [(PALETTE[i], round(float(counts[i] / total), 3)) for i in order if counts[i] > 0]


def _join(items: list[str], sep: str, last: str) -> str:
    return items[0] if len(items) == 1 else sep.join(items[:-1]) + last + items[-1]


def _ocr(text: str) -> str:
    """On-screen text made safe to quote: one line, no double quotes, at most OCR_MAX_CHARS."""
    t = " ".join(text.replace('"', "'").replace("“", "'").replace("”", "'").split())
    return t if len(t) <= OCR_MAX_CHARS else t[: OCR_MAX_CHARS - 1].rstrip() + "…"


def _shot(signals: dict[str, Any]) -> tuple[str, str] | None:
    """The shot sentence: which shot of the source video, and how it was entered."""
    shot, n_shots, transition = signals.get("shot_index"), signals.get("n_shots"), signals.get("transition")
    t_en, t_zh = _TRANSITION.get(str(transition), ("", ""))
    if shot is None:
        return ("The clip is " + t_en + ".", "该片段" + t_zh + "。") if t_en else None
    n = int(shot) + 1
    en = f"It is shot {n}" + (f" of {int(n_shots)}" if n_shots else "") + " in its source video"
    zh = f"它是源视频的第{n}个镜头" + (f"（共{int(n_shots)}个）" if n_shots else "")
    return (f"{en}, {t_en}.", f"{zh}，{t_zh}。") if t_en else (en + ".", zh + "。")


def _colours(frames: np.ndarray | None) -> tuple[str, str] | None:
    """The dominant-colour sentence, shares in whole percent."""
    if frames is None:
        return None
    colours = [(c, round(share * 100)) for c, share in dominant_colours(frames) if share >= MIN_SHARE]
    if not colours:
        return None
    en = _join([f"{c} ({p}%)" for c, p in colours], ", ", " and ")
    zh = _join([f"{ZH_COLOURS[c]}（{p}%）" for c, p in colours], "、", "和")
    noun = "colour is" if len(colours) == 1 else "colours are"
    return f"The dominant {noun} {en}.", f"主要颜色为{zh}。"


def signals_caption(signals: dict[str, Any], frames: np.ndarray | None) -> tuple[str, str]:
    """(en, zh) dense captions from a clip's measured signals.

    Args:
        signals: any of duration_s, motion (frame widths/s), camera_motion (a ``CAMERA`` key),
            luma (0-255), ocr_text, black_border (area fraction), shot_index (0-based),
            n_shots, transition ('start', 'cut', 'dissolve', 'fade'); a missing or None value
            leaves its sentence out, other keys are ignored.
        frames: uint8 RGB [n, h, w, 3] sparse frames for the colours, or None to omit them.

    Returns:
        The English and the Chinese caption; the same inputs give the same text.
    """
    dur, motion = signals.get("duration_s"), signals.get("motion")
    en = f"A {float(dur):.1f}-second video clip" if dur is not None else "A video clip"
    zh = f"这是一段时长{float(dur):.1f}秒的视频片段" if dur is not None else "这是一段视频片段"
    if motion is not None:
        m_en, m_zh = _level(float(motion), _MOTION)
        en, zh = f"{en} with {m_en}", f"{zh}，{m_zh}"
    sentences: list[tuple[str, str] | None] = [(en + ".", zh + "。"), _shot(signals)]
    sentences.append(CAMERA.get(str(signals.get("camera_motion"))))
    if signals.get("luma") is not None:
        sentences.append(_level(float(signals["luma"]), _LIGHT))
    sentences.append(_colours(frames))
    border = signals.get("black_border")
    if border is not None and float(border) > 0.05:
        pct = round(float(border) * 100)
        sentences.append((
            f"The picture is letterboxed, with black bars covering {pct}% of the frame.",
            f"画面带有黑边（遮幅），黑边占画面的{pct}%。",
        ))  # fmt: skip
    ocr = _ocr(str(signals.get("ocr_text") or ""))
    if ocr:
        sentences.append((f'On-screen text reads "{ocr}".', f'画面中的文字为"{ocr}"。'))
    kept = [s for s in sentences if s is not None]
    return " ".join(e for e, _ in kept), "".join(z for _, z in kept)


# --- the structured description (captioner/caption_schema.py) ---------------------------

_GLOBAL_MOVES = ("pan_left", "pan_right", "tilt_up", "tilt_down", "zoom_in", "zoom_out")
_SPEED = ((0.03, "slow"), (0.15, "moderate"), (float("inf"), "fast"))  # the _MOTION bounds
_BRIGHTNESS = ((50.0, "dark"), (90.0, "dim"), (170.0, "normal"), (float("inf"), "bright"))  # _LIGHT's


def signals_description(signals: dict[str, Any]) -> dict[str, Any]:
    """The description fields a clip's measurements fill; every other field stays unknown.

    - camera movement: the optical-flow label (``camera_motion``); speed: 'none' when static,
      the motion level (slow / moderate / fast, the ``_MOTION`` bounds) for a pan, tilt or
      zoom, unknown for 'mixed' (the flow mixes camera and subject motion);
    - lighting brightness from the mean luma (the ``_LIGHT`` bounds); its source is unknown;
    - text overlays: the OCR lines (``ocr_text``, ' | '-joined), [] when OCR found none; null
      when OCR did not run or a crop cut the text away (the clip's own text is not measured);
    - shot count: 1 for a clip with a ``shot_index`` (a clip lies inside one detected shot).

    Subjects, actions, scene, style, content class, shot size and angle are not measured:
    'unknown' / null, never guessed.
    """
    from captioner.caption_schema import unknown_description

    doc = unknown_description()
    movement, motion = signals.get("camera_motion"), signals.get("motion")
    if movement in CAMERA:
        doc["camera"]["movement"] = movement
        if movement == "static":
            doc["camera"]["speed"] = "none"
        elif movement in _GLOBAL_MOVES and motion is not None:
            doc["camera"]["speed"] = next(s for bound, s in _SPEED if float(motion) < bound)
    if signals.get("luma") is not None:
        doc["lighting"]["brightness"] = next(b for bound, b in _BRIGHTNESS if float(signals["luma"]) < bound)
    ocr = signals.get("ocr_text")
    if ocr is not None:
        doc["text_overlays"] = [line.strip() for line in str(ocr).split(" | ") if line.strip()]
    if signals.get("shot_index") is not None:
        doc["shot_count"] = 1
    return doc
