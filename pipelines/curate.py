"""The curation steps: ingest -> split -> clips -> score -> filter -> extract -> caption -> export.

Each step is resumable and idempotent.

Each step is a coarse unit that a Prefect task wraps (flows/curate_flow.py). Inside
a step the items (files, videos, clips) go through the stages on a runner (Ray Data
or sequential); results are journaled as Parquet parts and committed to the catalog
by this process, the driver, which is the only DuckDB writer.

Output layout under ``out``:
    catalog.duckdb, config.yaml   (catalog.duckdb: the published snapshot readers query;
                                  .catalog.duckdb.live: the writers' copy, curation/snapshot.py)
    clips/<video_id>/<clip_id>.mp4
    shards/<dataset_hash>/<bucket>/NNNNNN.tar, shards/<dataset_hash>/manifest.json, shards/latest
                                (one immutable version per export; pipelines/dataset_versions.py)
    .work/frames/<video_id>/   the single decode pass (shared by every frame-level stage)
    .work/parts/<step>/         the crash journal
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from curation import schema
from curation.db import Catalog
from curation.report import write_report as render_report
from pipelines import scratch
from pipelines.clip_spans import align_to_keyframes, clip_spans
from pipelines.config import CurateConfig, to_yaml
from pipelines.decide import rule_table, thresholds
from pipelines.journal import StepJournal, run_step
from pipelines.remote import is_url
from pipelines.remote import item_id as remote_item_id
from pipelines.remote_inputs import discover_sources
from pipelines.run_layout import Paths, split_hash, split_stages  # noqa: F401  (re-exported)
from pipelines.runner import Runner
from pipelines.stages.ingest import Probe
from pipelines.tasks import ClipTask, FrameSet, VideoTask


def file_item_id(path: str) -> str:
    """A file's identity for the ingest step: the path plus size and mtime (a changed file is re-probed)."""
    if is_url(path):
        return remote_item_id(path)
    try:
        st = os.stat(path)
        return f"{path}|{st.st_size}|{st.st_mtime_ns}"
    except OSError:
        return f"{path}|missing"


# --- step 1: ingest -----------------------------------------------------------
def ingest(
    sources: list[str], paths: Paths, cfg: CurateConfig, runner: Runner, cat: Catalog
) -> dict[str, int]:
    """Probe every input (file, URL, manifest row); each gets a ``files`` row and its content a
    ``videos`` row (a manifest row's metadata columns in ``videos.source_meta``)."""
    inputs = discover_sources(sources, cfg.ingest.extensions)
    files = inputs.paths
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
        if t.path in inputs.meta:
            v.source_meta = json.dumps(inputs.meta[t.path], sort_keys=True, ensure_ascii=False, default=str)
        f = schema.InputFile(t.path, v.video_id, v.size_bytes, v.status, v.error)
        return {"videos": [schema.row(v)], "files": [schema.row(f)]}

    counts = run_step(
        cat,
        StepJournal(paths.work, "ingest"),
        runner,
        [probe],
        [VideoTask(path=p, error=inputs.errors.get(p)) for p in files],
        lambda t: file_item_id(t.path),
        to_tables,
        ("probe", probe.version, probe.params_hash()),
        batch_parts=64,
        progress=not cfg.runtime.quiet,
    )
    cat.resolve_duplicate_files()
    return counts


# --- step 2: decode once + shot split -----------------------------------------
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
def clip_tasks(paths: Paths, cfg: CurateConfig, cat: Catalog) -> Iterator[ClipTask]:
    """Every clip span of every shot of every ok video, as tasks, one video at a time (a pure
    function of the catalog and the decoded timelines). Times come from the real frame
    timestamps (VFR-safe)."""
    from pipelines.decode import load_timeline

    c, sh = cfg.clips, split_hash(cfg)
    align = cfg.extract.stream_copy and c.keyframe_align_s > 0
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
                yield ClipTask(clip=clip, src_path=v.path, frames_dir=frames.dir)


CLIPS_BATCH = 50_000  # clip spans the clips step holds and writes at a time


def clips(paths: Paths, cfg: CurateConfig, runner: Runner, cat: Catalog) -> dict[str, int]:
    """Record every clip span (identity and geometry only: scores, decisions and files are
    written by their own steps, so a rerun of this one keeps them)."""
    sh = split_hash(cfg)
    done = cat.done_items("clips", 2, sh)
    spans = written = 0
    stream = clip_tasks(paths, cfg, cat)
    with cat.transaction():  # one transaction, written CLIPS_BATCH spans at a time (bounded memory)
        while batch := list(itertools.islice(stream, CLIPS_BATCH)):
            new = [t.clip for t in batch if t.clip.clip_id not in done]
            rows = [{c: schema.clip_row(k)[c] for c in schema.CLIP_IDENTITY} for k in new]
            cat.update_columns("clips", rows)
            cat.mark_done("clips", 2, sh, [k.clip_id for k in new])
            spans, written = spans + len(batch), written + len(new)
    return {"spans": spans, "written": written}


# --- steps 4-5: score every clip, then decide from the stored scores ------------
def score(paths: Paths, cfg: CurateConfig, runner: Runner, cat: Catalog) -> dict[str, Any]:
    from pipelines.score_step import iter_clip_tasks
    from pipelines.score_step import score as run_scorers

    tasks = iter_clip_tasks(cat, paths.frames, split_hash(cfg), source_size=True)  # a stream, by pages
    redecoded = scratch.ensure_pixels(paths, cfg, runner, cat, "score")  # frames dropped (keep_frames)
    return {**run_scorers(tasks, paths.work, cfg, runner, cat), "redecoded": redecoded}


def filter_clips(paths: Paths, cfg: CurateConfig, cat: Catalog) -> dict[str, Any]:
    from pipelines.score_step import decide

    return decide(cat, cfg, split_hash(cfg))


# --- steps 6-7: cut the kept clips, write the shards ---------------------------
KEPT = "status = 'kept'"


def extract(paths: Paths, cfg: CurateConfig, runner: Runner, cat: Catalog) -> dict[str, int]:
    from pipelines.export_step import extract as run_extract
    from pipelines.score_step import clip_tasks_from_catalog

    tasks = clip_tasks_from_catalog(cat, paths.frames, split_hash(cfg), f"c.{KEPT}")
    return run_extract(tasks, paths.root, cfg, runner, cat)


def caption(paths: Paths, cfg: CurateConfig, runner: Runner, cat: Catalog) -> dict[str, Any]:
    """Caption the kept clips, then re-decide (caption rules, when configured, reject).

    Clips rejected only by a caption rule ('no_caption', 'caption_check') are taken too: the
    step's journal skips those already done, so a clip whose captioning failed is retried by the
    next run (and kept again when it succeeds) instead of being locked out by its own failure.
    """
    from pipelines.caption_step import caption as run_caption
    from pipelines.score_step import decide, iter_clip_tasks

    wanted = f"c.{KEPT} OR c.reject_reason IN ('no_caption', 'caption_check')"
    tasks = iter_clip_tasks(cat, paths.frames, split_hash(cfg), wanted)  # a stream, by pages
    redecoded = scratch.ensure_pixels(paths, cfg, runner, cat, "caption")  # signals reads frames
    counts = {**run_caption(paths.root, tasks, cfg, runner, cat), "redecoded": redecoded}
    counts["decide"] = decide(cat, cfg, split_hash(cfg))
    return counts


def export(paths: Paths, cfg: CurateConfig, runner: Runner, cat: Catalog) -> dict[str, Any]:
    """Write the kept clips of the current split params as bucketed shards under ``<out>/shards``."""
    from pipelines.export_step import export as run_export

    selection = f"{KEPT} AND split_hash = '{split_hash(cfg)}'"
    ids = [r[0] for r in cat.query(f"SELECT clip_id FROM clips WHERE {selection} ORDER BY clip_id")[1]]
    counts = run_export(paths.root, cfg, runner, cat, ids, paths.shards, selection)
    return {k: v for k, v in counts.items() if k in ("shards", "samples", "dataset")}


# --- driver -------------------------------------------------------------------
STEPS = ("ingest", "split", "clips", "score", "filter", "extract", "caption", "export")
RESCORE_STEPS = ("filter",)


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
        counts = _dispatch(step, sources, paths, cfg, runner, cat)
        return {**counts, **scratch.after_step(step, paths, cfg, cat)}  # runtime.keep_frames


def _dispatch(
    step: str, sources: list[str], paths: Paths, cfg: CurateConfig, runner: Runner, cat: Catalog
) -> dict[str, Any]:
    if step == "ingest":
        return ingest(sources, paths, cfg, runner, cat)
    if step == "split":
        return split(paths, cfg, runner, cat)
    if step == "clips":
        return clips(paths, cfg, runner, cat)
    if step == "score":
        return score(paths, cfg, runner, cat)
    if step == "filter":
        return filter_clips(paths, cfg, cat)
    if step == "extract":
        return extract(paths, cfg, runner, cat)
    if step == "caption":
        return caption(paths, cfg, runner, cat)
    if step == "export":
        return export(paths, cfg, runner, cat)
    raise ValueError(f"unknown step {step!r}; steps are {STEPS}")


def finish_run(out: str | Path, cfg: CurateConfig, started_at: str, steps: dict[str, Any],
               flow_run_id: str | None = None) -> dict[str, Any]:
    """Record the run (config, git sha, counts, Prefect flow-run id) and return the catalog summary."""
    paths = Paths(out)
    with Catalog(paths.catalog) as cat:
        counts = cat.counts()
        run_id = schema.short_hash(started_at, to_yaml(cfg))
        cat.record_run(run_id, started_at, now_iso(), to_yaml(cfg), git_sha(), {**counts, "steps": steps},
                       flow_run_id)
    return counts


def run_curate(
    sources: list[str],
    out: str | Path,
    cfg: CurateConfig,
    runner: Runner | None = None,
    rescore: bool = False,
) -> dict[str, Any]:
    """All steps in-process, without Prefect (tests, benchmarks).

    rescore: only re-decide kept/rejected from the stored scores under ``cfg.filters`` (no
        decode, no extraction, no shards; ``vidloom export`` writes shards of the new selection).
    """
    from pipelines.runner import make_runner

    runner = runner or make_runner(cfg.runtime)
    started = now_iso()
    steps = {s: run_step_by_name(s, sources, out, cfg, runner) for s in (RESCORE_STEPS if rescore else STEPS)}
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


def write_report(db: str | Path, out_html: str | Path, cfg: CurateConfig) -> dict[str, Any]:
    """The HTML report of the catalog ``db`` with ``cfg``'s thresholds and decision order (the
    scorers' rules and ``filters.extra``): what ``vidloom report``, ``curate --report`` and the
    flow's report task write."""
    return render_report(db, out_html, thresholds=thresholds(cfg.filters, cfg.scores),
                         rules=rule_table(cfg.filters))
