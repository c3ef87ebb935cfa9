"""Sample videos for ``make demo`` and for tests: a demo set, a set of bad inputs, and
(from :mod:`samplegen.cut_videos`) the shot-detection suite.

Every file is a pure function of the code: ffmpeg runs with bitexact flags and no
metadata, so regenerating gives the same bytes. Each generator skips files that
already exist, and writes through a temporary name so a killed run leaves no half file.

CLI::

    python -m samplegen.samples demo DIR    # demo videos + DIR/samples.json
    python -m samplegen.samples bad DIR     # inputs that ingest must survive
    python -m samplegen.samples suite DIR   # detection suite + <name>.json ground truth
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from samplegen.cut_videos import (
    BITEXACT,
    FFMPEG,
    FONT_CJK,
    Segment,
    make_transition_video,
    plan_ground_truth,
)
from samplegen.detection_suite import detection_suite

MANIFEST = "samples.json"


def _run_ffmpeg(out: Path, args: Sequence[str], fmt: str = "mp4") -> None:
    """Run ``ffmpeg <args> <bitexact> -f fmt out`` through a temporary name."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    proc = subprocess.run([*FFMPEG, *args, *BITEXACT, "-f", fmt, str(tmp)], capture_output=True)
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"ffmpeg failed for {out.name}: {proc.stderr.decode(errors='replace')}")
    tmp.replace(out)


def _write_bytes(out: Path, data: bytes) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(out)


def _lavfi_h264(graph: str, frames: int, pix_fmt: str = "yuv420p") -> list[str]:
    """ffmpeg arguments encoding ``frames`` frames of a lavfi graph with libx264."""
    return ["-f", "lavfi", "-i", graph, "-frames:v", str(frames), "-c:v", "libx264", "-preset", "veryfast",
            "-pix_fmt", pix_fmt, "-threads", "1"]


def _corrupt_copy(src: Path) -> bytes:
    """The first third of ``src`` with its ftyp header overwritten: no demuxer can read it."""
    data = bytearray(src.read_bytes()[: src.stat().st_size // 3])
    data[:64] = np.random.default_rng(7).integers(0, 256, 64, dtype=np.uint8).tobytes()
    return bytes(data)


# ---------------------------------------------------------------- demo set

# The reasons of pipelines.decide, in decision order: a clip gets the first rule it fails.
REASON_ORDER = ("too_short", "too_long", "low_resolution", "bad_aspect", "black", "dark", "overexposed",
                "compressed", "blurry", "letterbox", "frozen", "text", "static", "too_fast", "low_aesthetic",
                "duplicate")
# The 'tiny' preset's clip and shape limits (pipelines.config.tiny(), checked by the tests):
# a shot of fewer clean frames than fps * MIN_CLIP_S + 2 trimmed ones yields a too-short clip.
MIN_CLIP_S, MAX_CLIP_S, CLIP_TRIM_FRAMES = 1.0, 4.0, 2
MIN_SIDE, MAX_ASPECT = 64, 4.0
# What a plain segment of a source (no effect, no text) is, as the scorers see it: 'kept' or
# the reason its clips fail. Measured on x264 crf 23 demo renders (see SOURCES). Sources not
# listed ('testsrc2', 'mandelbrot', 'mandelbrot_outz', 'life', 'life_pan') may read as static
# or (testsrc2's timecode) text: the demo uses them only where an effect, text or the shape
# decides first.
SOURCE_STATUS: dict[str, str] = {
    "testsrc2_pan": "kept",
    "mandelbrot_outz_pan": "kept",
    "mandelbrot_valley": "kept",
    "mandelbrot_bands": "kept",
    "black": "black",
    "mandelbrot_white": "overexposed",  # mean luma about 230, 84 % of pixels clipped white
    "gradients": "blurry",  # smooth colour ramps: no edges
    "smptebars": "frozen",
    "rgbtestsrc": "frozen",
    "noise": "frozen",  # one fixed noise pattern
    "still": "static",  # a held frame with grain: changes every frame, moves nowhere
}
EFFECT_REASON = {"blur": "blurry", "dark": "dark", "letterbox": "letterbox", "frozen": "frozen"}


def segment_expect(seg: Segment, clean_frames: int, width: int, height: int, fps: float) -> str:
    """The reason every clip of the shot of ``seg`` must be rejected with, or 'kept'.

    The first in decision order of: the shot too short for a clip (``clean_frames``), the
    frame size, the planted effect, the overlay text, the source's own status.

    Raises:
        ValueError: a plain segment of a source whose status is not known (SOURCE_STATUS).
    """
    reasons = set()
    if clean_frames - CLIP_TRIM_FRAMES < fps * MIN_CLIP_S:
        reasons.add("too_short")
    if min(width, height) < MIN_SIDE:
        reasons.add("low_resolution")
    if max(width, height) > MAX_ASPECT * min(width, height):
        reasons.add("bad_aspect")
    if seg.effect is not None:
        reasons.add(EFFECT_REASON[seg.effect])
    if seg.text is not None:
        reasons.add("text")
    status = SOURCE_STATUS.get(seg.source)
    if status not in (None, "kept"):
        reasons.add(status)
    first = min(reasons, key=REASON_ORDER.index) if reasons else "kept"
    # An unlisted source may fail 'text' or 'static' on its own: something earlier must decide.
    if status is None and (first == "kept" or REASON_ORDER.index(first) > REASON_ORDER.index("text")):
        raise ValueError(f"a plain {seg.source!r} segment has no known status; see SOURCE_STATUS")
    return first


def plan_segments(plan: Sequence[Segment], width: int, height: int, fps: float) -> list[dict[str, Any]]:
    """The manifest's ``segments`` of a plan: each shot's clean frames ``[start, end)`` (as
    ``GroundTruth.shots``), what it shows, and the clips' expected fate (``segment_expect``)."""
    gt = plan_ground_truth(plan, width, height, fps)
    return [{"start": start, "end": end, "source": seg.source, "effect": seg.effect, "text": seg.text,
             "expect": segment_expect(seg, end - start, width, height, fps)}
            for seg, (start, end) in zip(plan, gt.shots, strict=True)]


def demo_plans() -> dict[str, tuple[int, int, float, list[Segment], bool, str]]:
    """name -> (width, height, fps, plan, audio, description) of each rendered demo video.

    Every shot is either clean moving footage (clips kept) or carries one planted defect
    (clips rejected with its reason); see ``segment_expect``. Clean shots are at most
    MAX_CLIP_S long (one clip each) and no two of them, across all videos, look alike.
    """
    plans: dict[str, tuple[int, int, float, list[Segment], bool, str]] = {
        "demo_cuts_640x360.mp4": (640, 360, 25, [
            Segment("testsrc2_pan", 75),
            Segment("mandelbrot_outz_pan", 90),
            Segment("smptebars", 60),
            Segment("mandelbrot_bands", 50, seed=1),
            Segment("mandelbrot_white", 70),
            Segment("mandelbrot_valley", 55, seed=2),
        ], True, "six shots joined by hard cuts, with a 440 Hz audio track"),
        "demo_static_480x270.mp4": (480, 270, 24, [
            Segment("testsrc2_pan", 48, seed=3),
            Segment("still", 180, seed=3),  # 7.5 s of a held frame with grain
            Segment("mandelbrot_valley", 72, seed=4),
        ], False, "a 7.5 s still shot (a held frame with grain) between two short moving shots"),
        "demo_text_en_640x360.mp4": (640, 360, 30, [
            Segment("testsrc2", 110, text="VIDLOOM DEMO 2024"),
            Segment("mandelbrot", 90, text="SCENE TWO"),
            Segment("mandelbrot_bands", 90, seed=5),
            Segment("testsrc2_pan", 60, enter="dissolve", transition=15, seed=5),
        ], False, "English overlay text on two shots (OCR), then plain shots and a dissolve"),
        "街景 sample 01.mp4": (320, 180, 30, [
            Segment("testsrc2_pan", 60, seed=6),
            Segment("mandelbrot_valley", 75, seed=6),
            Segment("mandelbrot_bands", 90, enter="fade", transition=10, black=5, seed=6),
            Segment("mandelbrot_outz_pan", 60, seed=7),
        ], False, "unicode file name with spaces; hard cuts and a fade through black"),
        "demo_defects_640x360.mp4": (640, 360, 25, [
            Segment("mandelbrot_valley", 75, seed=9),
            Segment("testsrc2", 75, effect="blur"),
            Segment("mandelbrot", 75, effect="dark"),
            # not life_pan: its 4-px cells are blocks on the codec grid and read 'compressed'
            Segment("testsrc2_pan", 75, effect="letterbox", seed=10),
            Segment("mandelbrot_outz", 75, effect="frozen"),
            Segment("life", 15, seed=11),  # 0.6 s: one clip, too short
            Segment("testsrc2_pan", 75, seed=12),
            Segment("black", 50),
        ], False, "one planted defect a shot (blur, dark, letterbox, frozen, a 0.6 s shot, black) "
                  "between clean moving shots"),
        "demo_lowres_96x54.mp4": (96, 54, 25, [
            Segment("mandelbrot", 50),
        ], False, "a clean 2 s shot at 96x54: below the minimum frame height"),
        "demo_wide_640x128.mp4": (640, 128, 25, [
            Segment("mandelbrot_bands", 50, seed=14),
        ], False, "a clean 2 s shot at 640x128 (5:1): beyond the maximum aspect ratio"),
    }
    if FONT_CJK.exists():
        plans["demo_text_zh_426x240.mp4"] = (426, 240, 25, [
            Segment("mandelbrot", 90, text="街景 测试 你好世界"),
            Segment("mandelbrot_bands", 50, seed=8),
            Segment("mandelbrot_outz", 90, text="欢迎来到北京 2024"),
        ], False, "Chinese overlay text (WenQuanYi Micro Hei) for zh OCR")
    return plans


def _as_duplicate(entry: dict[str, Any]) -> list[dict[str, Any]]:
    """The original's segments, with every clip it keeps now a duplicate of the original's."""
    return [{**seg, "expect": "duplicate" if seg["expect"] == "kept" else seg["expect"]}
            for seg in entry["segments"]]


def generate_demo_samples(directory: str | Path) -> dict[str, dict[str, Any]]:
    """Write the demo videos into ``directory`` and return (and write) their manifest.

    The manifest, ``samples.json``, maps each file name to a dict with ``description``,
    ``kind`` ('video', 'duplicate', 'remux_duplicate', 'near_duplicate' or 'corrupt'), and
    for decodable files ``width``, ``height``, ``fps``, ``n_frames``, ``cuts`` and
    ``gradual`` (frame indices, see :mod:`samplegen.cut_videos`) and ``segments``: each
    shot's clean frames ``start``/``end``, ``source``, ``effect``, ``text`` and ``expect``,
    the reason every clip cut from that shot must be rejected with under the 'tiny'
    preset, or 'kept' (``segment_expect``). In the copies, clips the original keeps expect
    'duplicate' (dedup keeps the best technical copy, pipelines/dedup.py: the re-encode has
    fewer pixels; the remux is the original's twin, same packets and frames, and content
    decides which of the two is kept); the byte-identical copy is a duplicate file and
    yields no clips at all. Existing files are kept.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, dict[str, Any]] = {}
    for name, (width, height, fps, plan, audio, description) in demo_plans().items():
        path = directory / name
        gt = plan_ground_truth(plan, width, height, fps)
        if not path.exists():
            make_transition_video(path, width, height, fps, plan, audio=audio, scenecut=True, crf=23)
        manifest[name] = {"kind": "video", "description": description, "width": width, "height": height,
                          "fps": gt.fps, "n_frames": gt.n_frames, "cuts": gt.cuts,
                          "gradual": [list(span) for span in gt.gradual],
                          "has_audio": audio, "segments": plan_segments(plan, width, height, fps)}

    source = "demo_cuts_640x360.mp4"
    duplicate = directory / "demo_cuts_copy.mp4"
    if not duplicate.exists():
        shutil.copyfile(directory / source, duplicate)
    manifest[duplicate.name] = {**manifest[source], "kind": "duplicate", "duplicate_of": source,
                                "segments": _as_duplicate(manifest[source]),
                                "description": f"byte-identical copy of {source}"}

    remux = directory / "demo_cuts_remux.mkv"
    if not remux.exists():
        _run_ffmpeg(remux, ["-i", str(directory / source), "-map", "0", "-c", "copy"], fmt="matroska")
    manifest[remux.name] = {**manifest[source], "kind": "remux_duplicate", "duplicate_of": source,
                            "segments": _as_duplicate(manifest[source]),
                            "description": f"{source} remuxed into Matroska (-c copy): other bytes, "
                                           "identical decoded frames"}

    near = directory / "demo_cuts_near_dup_480x270.mp4"
    if not near.exists():
        _run_ffmpeg(near, ["-i", str(directory / source), "-vf", "scale=480:270:flags=bicubic",
                           "-fps_mode", "passthrough", "-c:v", "libx264", "-preset", "veryfast", "-crf", "30",
                           # one x264 thread: fed by a decoder, two threads gave other bytes run to run
                           "-pix_fmt", "yuv420p", "-threads", "1", "-c:a", "aac", "-b:a", "48k"])
    manifest[near.name] = {**manifest[source], "kind": "near_duplicate", "duplicate_of": source,
                           "width": 480, "height": 270, "segments": _as_duplicate(manifest[source]),
                           "description": f"{source} re-encoded at 480x270, crf 30: same frames, other bytes"}

    corrupt = directory / "demo_corrupt.mp4"
    if not corrupt.exists():
        _write_bytes(corrupt, _corrupt_copy(directory / source))
    manifest[corrupt.name] = {"kind": "corrupt",
                              "description": f"first third of {source}, header overwritten"}

    _write_bytes(directory / MANIFEST, json.dumps(manifest, indent=1, ensure_ascii=False).encode("utf-8"))
    return manifest


# ---------------------------------------------------------------- bad inputs

BAD_INPUTS: dict[str, str] = {
    "corrupt_bytes.mp4": "64 KiB of random bytes with an .mp4 extension",
    "empty.mp4": "a 0-byte file",
    "audio_only.mp4": "an mp4 with one AAC sine track and no video stream",
    "png_image.mp4": "a PNG image renamed to .mp4 (probes as a one-frame png_pipe stream)",
    "odd_97x55_yuv444.mp4": "H.264 High 4:4:4 at an odd frame size, 97x55",
    "rotated_90.mp4": "320x180 H.264 with a 90-degree display matrix (shows as 180x320)",
    "vfr.mp4": "variable frame rate: 30 fps for 1 s, then 10 fps, then jittered timestamps",
    "truncated_half.mp4": "the first half of a valid faststart mp4: header intact, frames missing",
    "vidéo 测试 file.mp4": "a valid 2 s video with a unicode name containing spaces",
    "absurd_2x2.mp4": "a 2x2-pixel video, 10 frames",
    "absurd_10h_gap.mp4": "11 frames, the last one 10 hours in: stream and container claim ~10 h",
    "single_frame.mp4": "a video of exactly one frame",
    "nested/deeper/nested_clip.mp4": "a valid video two directories down",
}


def _make_bad(name: str, out: Path, work: Path) -> None:
    small = "testsrc2=s=160x90:r=25"
    if name == "corrupt_bytes.mp4":
        _write_bytes(out, np.random.default_rng(0).integers(0, 256, 65536, dtype=np.uint8).tobytes())
    elif name == "empty.mp4":
        _write_bytes(out, b"")
    elif name == "audio_only.mp4":
        _run_ffmpeg(out, ["-f", "lavfi", "-i", "sine=frequency=330:sample_rate=44100:duration=3",
                          "-c:a", "aac", "-b:a", "64k"])
    elif name == "png_image.mp4":
        _run_ffmpeg(out, ["-f", "lavfi", "-i", "testsrc2=s=320x180", "-frames:v", "1", "-c:v", "png"],
                    fmt="image2pipe")
    elif name == "odd_97x55_yuv444.mp4":
        # The graph ends in yuv444p so lavfi keeps the odd size (it rounds yuv420p to even).
        _run_ffmpeg(out, _lavfi_h264("testsrc2=s=97x55:r=25,format=yuv444p", 50, "yuv444p"))
    elif name == "rotated_90.mp4":
        # ffmpeg 5.1 drops rotate metadata when encoding; a stream-copy remux writes the display matrix.
        plain = work / "rotated_plain.mp4"
        _run_ffmpeg(plain, _lavfi_h264("testsrc2=s=320x180:r=25", 50))
        _run_ffmpeg(out, ["-i", str(plain), "-c", "copy", "-metadata:s:v:0", "rotate=90"])
    elif name == "vfr.mp4":
        pts = "if(lt(N,30),N/30,if(lt(N,50),1+(N-30)/10,3+(N-50)/25+0.01*mod(N,3)))/TB"
        _run_ffmpeg(out, [*_lavfi_h264(f"{small},setpts='{pts}'", 80), "-fps_mode", "vfr"])
    elif name == "truncated_half.mp4":
        full = work / "truncated_full.mp4"
        _run_ffmpeg(full, [*_lavfi_h264("testsrc2=s=320x180:r=25", 100), "-movflags", "+faststart"])
        _write_bytes(out, full.read_bytes()[: full.stat().st_size // 2])
    elif name == "absurd_2x2.mp4":
        _run_ffmpeg(out, _lavfi_h264("testsrc2=s=2x2:r=10", 10))
    elif name == "absurd_10h_gap.mp4":
        # No B-frames, so the stream's own duration (not only the container's) says 10 h.
        _run_ffmpeg(out, [*_lavfi_h264(f"{small},setpts='if(lt(N,10),N/25,36000)/TB'", 11),
                          "-bf", "0", "-fps_mode", "passthrough"])
    elif name == "single_frame.mp4":
        _run_ffmpeg(out, _lavfi_h264(small, 1))
    else:  # the valid ones: unicode name, nested directory (different content, so not duplicates)
        source = "rgbtestsrc" if name.startswith("nested/") else "smptebars"
        _run_ffmpeg(out, _lavfi_h264(f"{source}=s=320x180:r=25", 50))


def generate_bad_inputs(directory: str | Path) -> dict[str, str]:
    """Write inputs that ingest must survive (each gets a row, the run goes on).

    Returns file name (relative to ``directory``, '/'-separated) -> what it is.
    Existing files are kept.
    """
    directory = Path(directory)
    work = directory / ".work"
    for name in BAD_INPUTS:
        out = directory / name
        if not out.exists():
            work.mkdir(parents=True, exist_ok=True)
            _make_bad(name, out, work)
    shutil.rmtree(work, ignore_errors=True)
    return dict(BAD_INPUTS)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m samplegen.samples", description=__doc__.split("\n\n")[0])
    parser.add_argument("set", choices=["demo", "bad", "suite"], help="which set of videos to write")
    parser.add_argument("directory", type=Path)
    args = parser.parse_args(argv)
    if args.set == "demo":
        result: Any = generate_demo_samples(args.directory)
    elif args.set == "bad":
        result = generate_bad_inputs(args.directory)
    else:
        result = {str(path): gt.n_frames for path, gt in detection_suite(args.directory)}
    json.dump(result, sys.stdout, indent=1, ensure_ascii=False)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
