"""The curation steps: ingest -> split -> clips -> export, each resumable and idempotent.

Each step is a coarse unit that a Prefect task wraps (flows/curate_flow.py). Inside
a step the items (files, videos, clips) go through the stages on a runner (Ray Data
or sequential); results are journaled as Parquet parts and committed to the catalog
by this process, the driver, which is the only DuckDB writer.

Output layout under ``out``:
    catalog.duckdb, config.yaml
    clips/<video_id>/<clip_id>.mp4
    shards/<bucket>/NNNNNN.tar, shards/manifest.json
    .work/frames/<video_id>/   the single decode pass (shared by every frame-level stage)
    .work/parts/<step>/         the crash journal
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from curation import schema
from curation.db import Catalog
from pipelines.clip_spans import align_to_keyframes, clip_spans
from pipelines.config import CurateConfig, to_yaml
from pipelines.journal import StepJournal, run_step
from pipelines.runner import Runner
from pipelines.stages.clip_filter import ShapeFilter
from pipelines.stages.decode_stage import Decode
from pipelines.stages.extract import ClipExtract
from pipelines.stages.ingest import Probe, discover_inputs
from pipelines.stages.shot_split import ShotSplit
from pipelines.tasks import ClipTask, FrameSet, VideoTask


class Paths:
    """Every location under the output root; nothing is written outside it."""

    def __init__(self, out: str | Path) -> None:
        self.root = Path(out).resolve()
        self.catalog = self.root / "catalog.duckdb"
        self.clips = self.root / "clips"
        self.shards = self.root / "shards"
        self.work = self.root / ".work"
        self.frames = self.work / "frames"

    def frames_dir(self, video_id: str) -> Path:
        return self.frames / video_id


def file_item_id(path: str) -> str:
    """A file's identity for the ingest step: the path plus size and mtime (a changed file is re-probed)."""
    try:
        st = os.stat(path)
        return f"{path}|{st.st_size}|{st.st_mtime_ns}"
    except OSError:
        return f"{path}|missing"


# --- step 1: ingest -----------------------------------------------------------
def ingest(
    sources: list[str], paths: Paths, cfg: CurateConfig, runner: Runner, cat: Catalog
) -> dict[str, int]:
    """Probe every input file; every file gets a ``files`` row and its content a ``videos`` row."""
    files = discover_inputs(sources, cfg.ingest.extensions)
    probe = Probe.from_config(cfg.ingest)

    def to_tables(t: VideoTask) -> dict[str, list[dict[str, Any]]]:
        v = t.video or schema.Video(
            video_id=schema.short_hash("path:" + t.path),
            path=t.path,
            sha256="",
            status="error",
            error=t.error or "not probed",
        )
        if t.error and v.status == "ok":
            v.status, v.error = "error", t.error
        f = schema.InputFile(t.path, v.video_id, v.size_bytes, v.status, v.error)
        return {"videos": [schema.row(v)], "files": [schema.row(f)]}

    counts = run_step(
        cat,
        StepJournal(paths.work, "ingest"),
        runner,
        [probe],
        [VideoTask(path=p) for p in files],
        lambda t: file_item_id(t.path),
        to_tables,
        ("probe", probe.version, probe.params_hash()),
        batch_parts=64,
        progress=not cfg.runtime.quiet,
    )
    cat.resolve_duplicate_files()
    return counts


# --- step 2: decode once + shot split -----------------------------------------
def split_stages(cfg: CurateConfig, paths: Paths) -> list[Any]:
    return [Decode.from_config(cfg.decode, work_dir=str(paths.work)), ShotSplit.from_config(cfg.split)]


def split_hash(cfg: CurateConfig) -> str:
    """The hash of everything that decides clip boundaries (part of every clip_id)."""
    # device and thread counts change speed, not output: they stay out of the identity. The
    # model's arithmetic does count: 'auto' precision enters as the dtype it resolves to here.
    from pipelines.transnet import resolved_precision

    split_params = {k: v for k, v in asdict(cfg.split).items() if k != "device"}
    split_params["precision"] = resolved_precision(cfg.split.device, cfg.split.precision)
    decode_params = {k: v for k, v in asdict(cfg.decode).items() if k != "threads"}
    return schema.params_hash({"decode": decode_params, "split": split_params, "clips": asdict(cfg.clips)})


def split(paths: Paths, cfg: CurateConfig, runner: Runner, cat: Catalog) -> dict[str, int]:
    """Decode each ok video once (tiny + sparse frames) and split it into shots."""
    stages = split_stages(cfg, paths)
    videos = cat.videos(status="ok")

    def to_tables(t: VideoTask) -> dict[str, list[dict[str, Any]]]:
        v = t.video
        assert v is not None
        if t.error and v.status == "ok":
            v.status, v.error = "error", t.error
        out: dict[str, list[dict[str, Any]]] = {"videos": [schema.row(v)]}
        if v.status == "ok":
            out["shots"] = [schema.row(s) for s in t.shots]
        if v.error:  # a decode failure or warning (e.g. truncated) also lands on the file's row
            out["files"] = [schema.row(schema.InputFile(v.path, v.video_id, v.size_bytes, v.status, v.error))]
        return out

    key = ("split", 1, split_hash(cfg))
    return run_step(
        cat,
        StepJournal(paths.work, "split"),
        runner,
        stages,
        [VideoTask(path=v.path, video=v) for v in videos],
        lambda t: t.video.video_id,
        to_tables,
        key,
        batch_parts=1,
        progress=not cfg.runtime.quiet,
    )


# --- step 3: clip spans -> filter -> extract ----------------------------------
def clip_tasks(paths: Paths, cfg: CurateConfig, cat: Catalog) -> list[ClipTask]:
    """Every clip span of every shot of every ok video, as tasks (a pure function of the catalog
    and the decoded timelines). Times come from the real frame timestamps (VFR-safe)."""
    from pipelines.decode import load_timeline

    c, sh = cfg.clips, split_hash(cfg)
    align = cfg.extract.stream_copy and c.keyframe_align_s > 0
    tasks = []
    for v in cat.videos(status="ok"):
        fps = v.fps or 25.0
        frames = FrameSet(str(paths.frames_dir(v.video_id)), v.n_frames or 0, (0, 0))
        pts, keyframe = load_timeline(frames)
        n = len(pts)
        for shot in cat.shots(v.video_id):
            spans = clip_spans(
                shot.start_frame,
                shot.end_frame,
                fps,
                c.min_s,
                c.max_s,
                c.stride_s,
                c.trim_start_frames,
                c.trim_end_frames,
            )
            if align:
                spans = align_to_keyframes(
                    spans,
                    np.flatnonzero(keyframe),
                    shot.start_frame,
                    shot.end_frame,
                    n,
                    round(c.keyframe_align_s * fps),
                )
            for a, b in spans:
                end_s = float(pts[b]) if b < n else float(pts[-1]) + 1.0 / fps
                clip = schema.Clip(
                    clip_id=schema.clip_id_for(v.video_id, a, b, sh),
                    video_id=v.video_id,
                    shot_index=shot.shot_index,
                    start_frame=a,
                    end_frame=b,
                    start_s=round(float(pts[a]), 6),
                    end_s=round(end_s, 6),
                    width=v.width or 0,
                    height=v.height or 0,
                    fps=fps,
                    n_frames=b - a,
                    split_hash=sh,
                )
                tasks.append(ClipTask(clip=clip, src_path=v.path, frames_dir=frames.dir))
    return tasks


def clips(paths: Paths, cfg: CurateConfig, runner: Runner, cat: Catalog) -> dict[str, int]:
    stages = [
        ShapeFilter.from_config(cfg.filters),
        ClipExtract.from_config(cfg.extract, out_dir=str(paths.clips)),
    ]

    def to_tables(t: ClipTask) -> dict[str, list[dict[str, Any]]]:
        if t.error and t.clip.status == "kept":
            t.clip.status, t.clip.reject_reason = "rejected", f"extract_error: {t.error}"[:500]
        return {"clips": [schema.row(t.clip)]}

    key = ("clips", 1, schema.params_hash({"stages": [s.params_hash() for s in stages]}))
    return run_step(
        cat,
        StepJournal(paths.work, "clips"),
        runner,
        stages,
        clip_tasks(paths, cfg, cat),
        lambda t: t.clip.clip_id,
        to_tables,
        key,
        batch_parts=8,
        progress=not cfg.runtime.quiet,
    )


# --- step 4: export -----------------------------------------------------------
def export(paths: Paths, cfg: CurateConfig, cat: Catalog) -> dict[str, int]:
    """Write the kept clips of the current split params as bucketed WebDataset shards."""
    from pipelines.shard_writer import bucket_for, sample_for_clip, write_shards

    kept = cat.clips("status = 'kept' AND split_hash = ?", [split_hash(cfg)])

    def samples() -> Any:
        for c in sorted(kept, key=lambda c: (bucket_for(c.width, c.height, c.duration_s), c.clip_id)):
            yield (
                bucket_for(c.width, c.height, c.duration_s),
                sample_for_clip(c, paths.root, cat.captions(c.clip_id), cfg.shards.with_first_frame),
            )

    infos = write_shards(samples(), paths.shards, cfg.shards.target_bytes)
    cat.replace_shards(infos)
    return {"shards": len(infos), "samples": sum(i.n_samples for i in infos)}


# --- driver -------------------------------------------------------------------
STEPS = ("ingest", "split", "clips", "export")


def now_iso() -> str:
    import datetime as dt

    return dt.datetime.now(dt.UTC).replace(tzinfo=None).isoformat()


def run_step_by_name(
    step: str, sources: list[str], out: str | Path, cfg: CurateConfig, runner: Runner | None = None
) -> dict[str, int]:
    """Run one step against ``out`` (opens the catalog as the single writer for its duration)."""
    from pipelines.runner import make_runner

    paths = Paths(out)
    paths.root.mkdir(parents=True, exist_ok=True)
    (paths.root / "config.yaml").write_text(to_yaml(cfg))
    runner = runner or make_runner(cfg.runtime)
    with Catalog(paths.catalog) as cat:
        if step == "ingest":
            return ingest(sources, paths, cfg, runner, cat)
        if step == "split":
            return split(paths, cfg, runner, cat)
        if step == "clips":
            return clips(paths, cfg, runner, cat)
        if step == "export":
            return export(paths, cfg, cat)
    raise ValueError(f"unknown step {step!r}; steps are {STEPS}")


def finish_run(out: str | Path, cfg: CurateConfig, started_at: str, steps: dict[str, Any]) -> dict[str, Any]:
    """Record the run (config, git sha, counts) and return the catalog summary."""
    paths = Paths(out)
    with Catalog(paths.catalog) as cat:
        counts = cat.counts()
        run_id = schema.short_hash(started_at, to_yaml(cfg))
        cat.record_run(run_id, started_at, now_iso(), to_yaml(cfg), git_sha(), {**counts, "steps": steps})
    return counts


def run_curate(
    sources: list[str], out: str | Path, cfg: CurateConfig, runner: Runner | None = None
) -> dict[str, Any]:
    """All steps in-process, without Prefect (tests, benchmarks)."""
    from pipelines.runner import make_runner

    runner = runner or make_runner(cfg.runtime)
    started = now_iso()
    steps = {s: run_step_by_name(s, sources, out, cfg, runner) for s in STEPS}
    return finish_run(out, cfg, started, steps)


def git_sha() -> str:
    import subprocess

    try:
        res = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
        return res.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
