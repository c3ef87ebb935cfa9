"""Videos with planted shot transitions and their exact ground truth.

Each shot of a plan is rendered by its own ffmpeg lavfi source to raw yuv420p frames
(an exact frame count), transitions and flashes are blended in numpy, and every output
frame is piped to one libx264 encoder. Python writes every frame itself, so the index
of each planted event is exact; :func:`plan_ground_truth` derives the same indices from
the plan alone, without rendering.

Frame-index conventions (spans are half-open ``[start, end)``):
    cuts         the frame where the new shot starts after a hard cut.
    gradual      frames blended or black during a dissolve or a fade through black;
                 they belong to neither neighbouring shot.
    negatives    frames ``c`` where a cut (a new shot starting at ``c``) would be wrong:
                 a flash of L frames at f gives ``[f, f+L+1)`` (into and out of the flash);
                 a fast pan of L frames at p gives ``[p, p+L)``.
    shots        the clean frames of each shot, transition frames excluded.
    short_shots  the shots with fewer than ``SHORT_SHOT_FRAMES`` clean frames.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import IO, Literal

import numpy as np

FFMPEG = ("ffmpeg", "-nostdin", "-y", "-loglevel", "error")
# Output options that make the bytes a pure function of the frames (no version strings, no dates).
BITEXACT = ("-fflags", "+bitexact", "-flags", "+bitexact", "-map_metadata", "-1")
FONT_LATIN = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf")
FONT_CJK = Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc")
SHORT_SHOT_FRAMES = 10
Y_BLACK, Y_WHITE, C_NEUTRAL = 16, 235, 128  # limited-range yuv

Enter = Literal["cut", "dissolve", "fade"]

# Lavfi sources whose consecutive frames differ little (mean |dY| < 12) while any two
# sources differ a lot. Placeholders: w, h, r (rate), seed, qw/qh (quarter size),
# w1/h1 (last column/row), c0/c1 (a colour pair picked by seed), pos (a start position in
# [0, 1) picked by seed), ht (h plus room for testsrc2's timecode, cropped off).
#
# As the curation scorers see them (decoded x264 at crf 23, 48x27 tiny frames, 256x144 sparse
# frames, median Farneback flow), measured in the demo renders:
#   clean footage (sharp, mean luma 85-145, no clipping or bars, median flow 0.05-0.08 frame
#     widths/s): 'testsrc2_pan', 'mandelbrot_outz_pan', 'mandelbrot_valley', 'mandelbrot_bands';
#   never frozen, but most of the picture stands still (median flow 0.0005-0.002, static or
#     borderline): 'testsrc2' (also shows a timecode: text), 'mandelbrot', 'life' (dim: mean
#     luma about 48); 'mandelbrot_outz' only shimmers as it zooms (flow about 0.03);
#     'life_pan' moves everywhere at some seeds only;
#   'still': static (grain, no motion); 'smptebars', 'rgbtestsrc', 'noise' (one fixed noise
#     pattern): frozen; 'gradients': no edges (blurry); 'mandelbrot_white': overexposed;
#     'black': black.
SOURCES: dict[str, str] = {
    "testsrc2": "testsrc2=s={w}x{h}:r={r}",
    "mandelbrot": "mandelbrot=s={w}x{h}:r={r}",
    "mandelbrot_white": "mandelbrot=s={w}x{h}:r={r}:outer=white",
    "mandelbrot_outz": "mandelbrot=s={w}x{h}:r={r}:outer=outz",
    "life": "life=s={qw}x{qh}:r={r}:mold=10:ratio=0.1:seed={seed}:life_color=#00ff00"
    ":death_color=#aa2200:mold_color=#222266,scale={w}:{h}:flags=neighbor",
    "smptebars": "smptebars=s={w}x{h}:r={r}",
    "rgbtestsrc": "rgbtestsrc=s={w}x{h}:r={r}",
    # gradients picks random colours whatever its seed, so colours and end points are explicit.
    "gradients": "gradients=s={w}x{h}:r={r}:n=2:c0={c0}:c1={c1}:x0=0:y0=0:x1={w1}:y1={h1}:speed=0.01",
    "noise": "color=c=0x2a6f97:s={w}x{h}:r={r},noise=alls=40:allf=u:all_seed={seed}",
    # One frame held still, with temporal grain that survives x264 at crf 23 (a mean tiny-frame
    # difference of about 0.2 levels): a "static" shot, not a frozen one.
    "still": "mandelbrot=s={w}x{h}:r={r}:outer=normalized_iteration_count,trim=end_frame=1,"
    "loop=loop=-1:size=1,noise=alls=10:allf=t+u:all_seed={seed}",
    "black": "color=c=black:s={w}x{h}:r={r}",
    # Clean moving footage: a steady scroll (wrapping around) of a sharp pattern.
    "testsrc2_pan": "testsrc2=s={w}x{ht}:r={r},crop={w}:{h}:0:{ht}-{h},scroll=h=0.0025:hpos={pos}",
    "mandelbrot_outz_pan": "mandelbrot=s={w}x{h}:r={r}:outer=outz,scroll=v=0.004:vpos={pos}",
    # Seahorse valley, zoomed in (outz colouring: structure everywhere), scrolling left.
    "mandelbrot_valley": "mandelbrot=s={w}x{h}:r={r}:outer=outz:start_x=-0.743643887037151"
    ":start_y=0.13182590420533:start_scale=0.05,scroll=h=-0.003:hpos={pos}",
    # A spiral region in colour bands (iteration_count), scrolling right.
    "mandelbrot_bands": "mandelbrot=s={w}x{h}:r={r}:outer=iteration_count:start_x=-0.1011:start_y=0.9563"
    ":start_scale=0.01,scroll=h=0.003:hpos={pos}",
    # Brighter life, scrolling; its flat background leaves some seeds too empty to move everywhere.
    "life_pan": "life=s={qw}x{qh}:r={r}:mold=10:ratio=0.1:seed={seed}:life_color=#40ff40"
    ":death_color=#d04020:mold_color=#4a5a9a,scale={w}:{h}:flags=neighbor,scroll=h=0.003:hpos={pos}",
}
# Planted picture defects, appended to a segment's source graph after the source (and a
# pan) and before the text: overlay text is drawn sharp and bright on top of the defect.
# Placeholders: h (frame height), bh (letterbox bar height, even), ih (picture height
# between the bars).
EFFECTS: dict[str, str] = {
    # Heavy gaussian blur: no edge survives, the colours and their motion do.
    "blur": "gblur=sigma=8",
    # Luma pressed to a fifth of its range above black, colours dimmed with it: a dark but
    # visible scene (mandelbrot: mean luma about 29 of 255, never flat black).
    "dark": "lutyuv=y=16+(val-16)/5:u=128+(val-128)/4:v=128+(val-128)/4",
    # The middle 72 % of the rows kept in place, black bars (14 % each) top and bottom.
    "letterbox": "crop=iw:{ih}:0:{bh},pad=iw:{h}:0:{bh}:black",
    # The first frame held: every later frame is bit-identical.
    "frozen": "trim=end_frame=1,loop=loop=-1:size=1",
}
_GRADIENT_COLOURS = [("0x4b2a8c", "0xe07a1e"), ("0x1e6fd9", "0xd91e6f"), ("0x2a8c4b", "0xf2e205")]
_TEXT_OK = re.compile(r"^[\w .!?#+\-\u3000-\u303f\u4e00-\u9fff\uff00-\uffef]+$")


@dataclass(frozen=True, slots=True)
class Segment:
    """One planted shot. Offsets (``flash``, ``pan``) count this shot's own rendered frames.

    ``frames`` includes the frames that a dissolve or fade blends with a neighbour, so a
    dissolve of ``t`` frames shortens the video by ``t``; a fade adds ``black`` frames.
    """

    source: str
    frames: int
    enter: Enter = "cut"
    transition: int = 0  # dissolve overlap, or fade-out and fade-in length each
    black: int = 0  # fade only: full-black frames between fade-out and fade-in
    flash: tuple[int, int] | None = None  # (offset, length): near-white frames, same scene after
    pan: tuple[int, int] | None = None  # (offset, length): fast horizontal pan, w/8 px a frame
    text: str | None = None  # centred drawtext overlay; CJK text uses the WenQuanYi font
    seed: int = 0
    effect: str | None = None  # a planted defect, one of EFFECTS (applied under the text)


@dataclass(slots=True)
class GroundTruth:
    """Exact planted events of one video; see the module docstring for the conventions."""

    n_frames: int
    fps: float
    width: int
    height: int
    cuts: list[int] = field(default_factory=list)
    gradual: list[tuple[int, int]] = field(default_factory=list)
    gradual_kinds: list[str] = field(default_factory=list)  # 'dissolve' | 'fade', as schema.Transition
    negatives: list[tuple[int, int]] = field(default_factory=list)
    negative_kinds: list[str] = field(default_factory=list)  # 'flash' | 'motion'
    short_shots: list[tuple[int, int]] = field(default_factory=list)
    shots: list[tuple[int, int]] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> GroundTruth:
        raw = json.loads(text)
        for key in ("gradual", "negatives", "short_shots", "shots"):
            raw[key] = [tuple(span) for span in raw[key]]
        return cls(**raw)


def _tail(plan: Sequence[Segment], i: int) -> int:
    """Frames at the end of shot ``i`` that the next shot's transition consumes."""
    nxt = plan[i + 1] if i + 1 < len(plan) else None
    return nxt.transition if nxt is not None and nxt.enter != "cut" else 0


def _check_plan(plan: Sequence[Segment]) -> None:
    if not plan:
        raise ValueError("empty plan")
    for i, seg in enumerate(plan):
        if seg.source not in SOURCES:
            raise ValueError(f"segment {i}: unknown source {seg.source!r}; known: {sorted(SOURCES)}")
        gradual = seg.enter != "cut"
        if gradual and (i == 0 or seg.transition < 1):
            raise ValueError(f"segment {i}: a {seg.enter} needs a previous shot and transition >= 1")
        lead = seg.transition if gradual else 0
        last = seg.frames - _tail(plan, i)  # clean frames are [lead, last)
        if last - lead < 1:
            raise ValueError(f"segment {i}: {seg.frames} frames leave no clean frame")
        if seg.flash and not (lead <= seg.flash[0] and sum(seg.flash) + 1 <= last):
            raise ValueError(f"segment {i}: flash {seg.flash} must lie within clean frames [{lead}, {last})")
        if seg.pan and not (lead < seg.pan[0] and sum(seg.pan) <= last):
            raise ValueError(f"segment {i}: pan {seg.pan} must lie within clean frames [{lead}, {last})")
        if seg.effect is not None and seg.effect not in EFFECTS:
            raise ValueError(f"segment {i}: unknown effect {seg.effect!r}; known: {sorted(EFFECTS)}")
        if seg.text is not None and not _TEXT_OK.match(seg.text):
            raise ValueError(f"segment {i}: text {seg.text!r} has characters drawtext would need escaped")


def plan_ground_truth(plan: Sequence[Segment], width: int, height: int, fps: float) -> GroundTruth:
    """The exact ground truth of ``plan``, computed without rendering anything."""
    _check_plan(plan)
    gt = GroundTruth(n_frames=0, fps=float(fps), width=width, height=height)
    pos = 0  # frames written so far
    for i, seg in enumerate(plan):
        origin = pos  # output index of this shot's local frame 0
        if i > 0 and seg.enter == "cut":
            gt.cuts.append(pos)
        elif seg.enter == "dissolve":
            gt.gradual.append((pos, pos + seg.transition))
            gt.gradual_kinds.append("dissolve")
        elif seg.enter == "fade":
            origin = pos + seg.transition + seg.black
            gt.gradual.append((pos, origin + seg.transition))
            gt.gradual_kinds.append("fade")
        clean_start = origin + (seg.transition if seg.enter != "cut" else 0)
        pos = origin + seg.frames - _tail(plan, i)
        gt.shots.append((clean_start, pos))
        if pos - clean_start < SHORT_SHOT_FRAMES:
            gt.short_shots.append((clean_start, pos))
        if seg.flash:
            gt.negatives.append((origin + seg.flash[0], origin + sum(seg.flash) + 1))
            gt.negative_kinds.append("flash")
        if seg.pan:
            gt.negatives.append((origin + seg.pan[0], origin + sum(seg.pan)))
            gt.negative_kinds.append("motion")
    gt.n_frames = pos
    return gt


def rate_str(fps: float) -> str:
    """ffmpeg rate for ``fps``: '25/1', '30000/1001'."""
    rate = Fraction(fps).limit_denominator(1001)
    return f"{rate.numerator}/{rate.denominator}"


def _source_graph(seg: Segment, width: int, height: int, fps: float, seed: int) -> str:
    src_w = width
    step = max(2, width // 8) // 2 * 2
    if seg.pan:
        src_w = width + step * seg.pan[1]
    c0, c1 = _GRADIENT_COLOURS[seed % len(_GRADIENT_COLOURS)]
    graph = SOURCES[seg.source].format(w=src_w, h=height, r=rate_str(fps), seed=seed, qw=max(8, src_w // 4),
                                       qh=max(8, height // 4), w1=src_w - 1, h1=height - 1, c0=c0, c1=c1,
                                       pos=f"{seed * 0.381966 % 1:.4f}", ht=height + 40)
    if seg.pan:
        p, length = seg.pan
        graph += f",crop={width}:{height}:x='{step}*clip(n-{p - 1},0,{length})':y=0"
    if seg.effect:
        bar = round(height * 0.14 / 2) * 2
        graph += "," + EFFECTS[seg.effect].format(h=height, bh=bar, ih=height - 2 * bar)
    if seg.text:
        font = FONT_LATIN if seg.text.isascii() else FONT_CJK
        if not font.exists():
            package = "fonts-dejavu-core" if font == FONT_LATIN else "fonts-wqy-microhei"
            raise FileNotFoundError(f"font {font} is missing: apt-get install {package}")
        graph += (
            f",drawtext=fontfile={font}:text='{seg.text}':fontsize={max(10, height // 9)}:fontcolor=white"
            ":borderw=3:bordercolor=black:x=(w-text_w)/2:y=(h-text_h)/2"
        )
    return graph + ",format=yuv420p,setsar=1"


def _flat(width: int, height: int, luma: int) -> np.ndarray:
    """A flat yuv420p frame, as one uint8 buffer (Y plane then U and V)."""
    return np.concatenate(
        [np.full(width * height, luma, np.uint8), np.full(width * height // 2, C_NEUTRAL, np.uint8)]
    )


def _blend(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """(1 - t) * a + t * b, rounded; a and b are yuv420p buffers."""
    return (a.astype(np.float32) * (1.0 - t) + b.astype(np.float32) * t + 0.5).astype(np.uint8)


def _segment_frames(seg: Segment, width: int, height: int, fps: float, seed: int) -> Iterator[np.ndarray]:
    """Exactly ``seg.frames`` yuv420p buffers of the segment's source, flash applied."""
    graph = _source_graph(seg, width, height, fps, seed)
    cmd = [*FFMPEG, "-f", "lavfi", "-i", graph, "-frames:v", str(seg.frames),
           "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "yuv420p", "-"]
    size = width * height * 3 // 2
    white = _flat(width, height, Y_WHITE)
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        for k in range(seg.frames):
            buf = proc.stdout.read(size)
            if len(buf) != size:
                proc.wait()
                error = proc.stderr.read().decode(errors="replace")
                raise RuntimeError(f"{seg.source}: frame {k} missing: {error}")
            frame = np.frombuffer(buf, np.uint8)
            if seg.flash and seg.flash[0] <= k < sum(seg.flash):
                frame = _blend(frame, white, 0.85)  # a photographer's flash: the scene shows through faintly
            yield frame


def _encoder(path: Path, width: int, height: int, fps: float, n_frames: int, audio: bool,
             scenecut: bool, crf: int) -> subprocess.Popen[bytes]:
    cmd = [*FFMPEG, "-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", f"{width}x{height}",
           "-framerate", rate_str(fps), "-i", "-"]
    if audio:
        cmd += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={n_frames / fps:.6f}"]
    cmd += ["-map", "0:v", "-c:v", "libx264", "-preset", "veryfast", "-crf", str(crf), "-g", "250",
            "-pix_fmt", "yuv420p", "-threads", "2"]
    if not scenecut:
        cmd += ["-sc_threshold", "0"]  # keyframes only every 250 frames: most cuts fall between them
    if audio:
        cmd += ["-map", "1:a", "-c:a", "aac", "-b:a", "64k"]
    cmd += [*BITEXACT, "-f", "mp4", str(path)]
    return subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)


def make_transition_video(path: str | Path, width: int, height: int, fps: float, plan: Sequence[Segment],
                          seed: int = 0, *, audio: bool = False, scenecut: bool = False,
                          crf: int = 18) -> GroundTruth:
    """Render ``plan`` to an H.264 mp4 at ``path`` and return its exact ground truth.

    Args:
        path: output file; written to a temporary name, then renamed.
        width, height: frame size in pixels (even).
        fps: frame rate, frames/s.
        plan: the shots, in order.
        seed: added to every segment's seed (life, gradients, noise).
        audio: add a 440 Hz sine track as long as the video.
        scenecut: let x264 put keyframes on detected cuts (as real encoders do); off by
            default so most planted cuts fall between keyframes.
        crf: x264 quality.
    """
    if width % 2 or height % 2:
        raise ValueError(f"width and height must be even for yuv420p, got {width}x{height}")
    gt = plan_ground_truth(plan, width, height, fps)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    black = _flat(width, height, Y_BLACK)
    enc = _encoder(tmp, width, height, fps, gt.n_frames, audio, scenecut, crf)
    assert enc.stdin is not None and enc.stderr is not None
    stdin: IO[bytes] = enc.stdin
    written = 0

    def write(frame: np.ndarray) -> None:
        nonlocal written
        stdin.write(frame.tobytes())
        written += 1

    try:
        held: list[np.ndarray] = []  # the previous shot's frames that this shot's transition consumes
        for i, seg in enumerate(plan):
            frames = _segment_frames(seg, width, height, fps, seg.seed + seed)
            t = seg.transition
            if seg.enter == "dissolve":
                for k in range(t):
                    write(_blend(held[k], next(frames), (k + 1) / (t + 1)))
            elif seg.enter == "fade":
                for k in range(t):
                    write(_blend(held[k], black, (k + 1) / (t + 1)))
                for _ in range(seg.black):
                    write(black)
                for k in range(t):
                    write(_blend(black, next(frames), (k + 1) / (t + 1)))
            body = seg.frames - (t if seg.enter != "cut" else 0) - _tail(plan, i)
            for _ in range(body):
                write(next(frames))
            held = list(frames)
        stdin.close()
    except BrokenPipeError:
        pass  # the encoder died; its stderr says why
    except BaseException:
        enc.kill()
        enc.wait()
        tmp.unlink(missing_ok=True)
        raise
    if enc.wait() != 0 or written != gt.n_frames:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"encoding {path} failed ({written}/{gt.n_frames} frames): "
                           f"{enc.stderr.read().decode(errors='replace')}")
    enc.stderr.close()
    tmp.replace(path)
    return gt
