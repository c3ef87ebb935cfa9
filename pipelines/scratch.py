"""Scratch space under ``<out>/.work``: when the decode pass's frames may go, and what ``gc`` drops.

The decode pass (pipelines/decode.py) leaves ``.work/frames/<video_id>/``. Two kinds of files:

- the *pixels*: ``tiny.npy`` (every frame at 48x27), ``sparse.npy`` (about 2 fps at up to
  256x144) and the sparse frames' edge profiles ``edge_cols.npy`` / ``edge_rows.npy``: over 99% of
  the bytes, about 1 GB per hour of 720p30 video;
- the *timeline*: ``pts.npy``, ``keyframe.npy``, ``sparse_idx.npy``, ``packet_bytes.npy`` and
  ``meta.json``: about 17 bytes a frame (1.8 MB per hour at 30 fps).

Dropping frames deletes the pixels and never the timeline. The timeline is what the clips step
derives every clip's times from on every run (``curate.clip_tasks``), and what extraction plans
cuts against, so a clip selected later is cut at exactly the frames it was scored on. Without
it every rerun would re-decode every video.

Who reads the pixels: the split step (shot detection, ``tiny``, in the same stage chain as the
decode), the score step (every scorer), and the caption step with the ``signals`` backend (its
captions describe the clip's sparse frames; the VLM backends read the extracted clip file
instead). Extraction, export, ``--rescore`` and dedup read none. The HTML report takes a
rejected clip's thumbnail from the sparse frames and shows none once they are gone (a kept clip's
comes from its own file).

``runtime.keep_frames``:

- ``keep`` (default): frames stay.
- ``after_score``: at the end of the last step of the run that reads pixels (score, or caption
  when ``caption.backend`` is ``signals``), the frames of every video with no frame work left
  are dropped. A video with a clip the next run retries (a scorer that failed on it, a signals
  caption that failed) keeps its frames, so the retry decodes nothing.
- ``none``: at that same point every video's frames are dropped, unfinished ones included
  (their retry re-decodes them).

A dropped video is decoded again only when a step actually needs its pixels: the score step
when a clip of it lacks a scorer's results (a new or changed scorer, a failed clip), the
caption step when a clip of it is to be captioned by ``signals``. The split step re-decodes by
itself (``decode_video`` treats a directory without its pixels as incomplete) when the split
params change. The decode is deterministic, so the re-decoded frames give the same scores.

``gc_output_root`` (``vidloom gc OUT``) applies a policy after the fact, and removes the debris of
killed processes: decode temp dirs, journal temp dirs, catalog and clip temp files. It holds the
catalog's write lock while it deletes, so no step of a run can start meanwhile.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from curation.db import Catalog
    from pipelines.config import CurateConfig
    from pipelines.run_layout import Paths
    from pipelines.runner import Runner

log = logging.getLogger("vidloom.scratch")

POLICIES = ("keep", "after_score", "none")
PIXELS = ("tiny.npy", "sparse.npy", "edge_cols.npy", "edge_rows.npy")
TIMELINE = ("pts.npy", "keyframe.npy", "sparse_idx.npy", "packet_bytes.npy", "meta.json")
# debris of killed processes, by directory relative to the output root (all safe to delete while
# no writer holds the catalog): decode temp dirs, journal temp parts, catalog copies, clip cuts
DEBRIS = ((".work/frames", ".*.tmp-*"), (".work/frames", ".*.old-*"), (".work/parts/*", ".tmp-*"),
          (".", ".catalog.duckdb.tmp-*"), (".", ".catalog.duckdb.live.tmp-*"), ("clips/*", ".*.part"))


def check_policy(policy: str) -> str:
    if policy not in POLICIES:
        raise ValueError(f"runtime.keep_frames must be one of {', '.join(POLICIES)}; got {policy!r}")
    return policy


def frame_steps(cfg: CurateConfig) -> tuple[str, ...]:
    """The curation steps after the split that read a video's pixels, in run order."""
    return ("score", "caption") if cfg.caption.backend == "signals" else ("score",)


def has_pixels(frames_dir: Path) -> bool:
    return all((frames_dir / n).is_file() for n in PIXELS)


def tree_bytes(path: Path) -> int:
    if path.is_file() or path.is_symlink():
        return path.lstat().st_size
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def drop_pixels(frames_dir: Path, dry_run: bool = False) -> int:
    """Delete a video's pixel files (the timeline stays); returns the bytes freed.

    Any pixel file missing makes the directory incomplete to ``decode_video``, so a drop cut
    short by a crash is re-decoded like a whole one when the pixels are needed.
    """
    freed = 0
    for name in PIXELS:
        p = frames_dir / name
        if p.is_file():
            freed += p.stat().st_size
            if not dry_run:
                p.unlink()
    return freed


# --- which videos still need their pixels ---------------------------------------------
def _score_keys(cfg: CurateConfig) -> list[tuple[str, int, str]]:
    from pipelines.score_step import _key, build_scorers

    quiet = logging.getLogger("vidloom.score")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # the score step itself logs the skipped scorers
    try:
        return [_key(s) for s in build_scorers(cfg)[0]]
    finally:
        quiet.setLevel(level)


def _gated() -> set[str]:
    """The expensive scorers cost-ordered scoring may skip on a clip (pipelines/stages/score_gate.py)."""
    try:
        from pipelines.stages.score_gate import GATED
    except ImportError:  # a vidloom without cost-ordered scoring
        return set()
    return set(GATED)


CAPTION_WANTED = "(c.status = 'kept' OR c.reject_reason IN ('no_caption', 'caption_check'))"  # curate.caption


def pending(cat: Catalog, cfg: CurateConfig, step: str, root: Path) -> set[str]:
    """The videos with a clip of the current split that ``step`` would still process from pixels."""
    from pipelines.run_layout import split_hash

    sh = split_hash(cfg)
    if step == "score":
        keys = _score_keys(cfg)
        gated = _gated() if not cfg.scores.score_all else set()
        have = {r[0] for r in cat.query(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'clips'")[1]}
        skipped = "not_scored IS NOT NULL AND score_error IS NULL" if "not_scored" in have else "FALSE"
        rows = cat.query(f"SELECT clip_id, video_id, {skipped} FROM clips WHERE split_hash = ?", [sh])[1]
        done = {k: cat.done_items(*k) for k in keys}
        # a scorer cost ordering kept from a clip (clips.not_scored) is not pending: the gate skips it
        # again unless a threshold changed, and then a clip it lets through fails for want of
        # frames (score_error) and the next run decodes its video for the retry
        return {v for c, v, gate_skipped in rows
                if any(c not in done[k] and not (gate_skipped and k[0].removeprefix("score:") in gated)
                       for k in keys)}
    if step == "caption" and cfg.caption.backend == "signals":
        from pipelines.stages.caption import CaptionStage

        stage = CaptionStage.from_config(cfg.caption, root=str(root))
        done = cat.done_items("caption", stage.version, stage.params_hash())
        sql = f"SELECT c.clip_id, c.video_id FROM clips c WHERE c.split_hash = ? AND {CAPTION_WANTED}"
        rows = cat.query(sql, [sh])[1]
        return {v for c, v in rows if c not in done}
    return set()


def needed(cat: Catalog, cfg: CurateConfig, root: Path) -> set[str]:
    """The videos whose pixels some step of a rerun with ``cfg`` would read."""
    return set().union(*(pending(cat, cfg, s, root) for s in frame_steps(cfg)))


# --- re-decode what a step needs --------------------------------------------------------
def ensure_pixels(paths: Paths, cfg: CurateConfig, runner: Runner, cat: Catalog, step: str) -> int:
    """Decode again every video that ``step`` needs pixels of and whose pixels were dropped.

    Returns the number of videos decoded. A video that no longer decodes (its source moved) is
    logged and left: its clips fail in ``step`` with the missing frames, recorded per clip, and
    the next run retries them.
    """
    from pipelines.run_layout import decode_stage
    from pipelines.tasks import VideoTask

    wanted = pending(cat, cfg, step, paths.root)
    tasks = [VideoTask(path=v.path, video=v) for v in cat.videos(status="ok")
             if v.video_id in wanted and not has_pixels(paths.frames_dir(v.video_id))]
    if not tasks:
        return 0
    decode = decode_stage(cfg, paths)
    n = 0
    for t in runner.run([decode], iter(tasks), progress=not cfg.runtime.quiet, desc="re-decode"):
        if t.video is not None and t.video.status == "error":
            log.warning("%s: frames dropped and cannot be decoded again: %s", t.path, t.video.error)
        else:
            n += 1
    log.info("%s: decoded %d videos again (their frames had been dropped)", step, n)
    return n


# --- dropping -------------------------------------------------------------------------
@dataclass
class Freed:
    """What a drop or a gc removed (or would remove): paths and their bytes, by kind."""

    items: dict[str, list[tuple[Path, int]]] = field(default_factory=dict)

    def add(self, kind: str, path: Path, nbytes: int) -> None:
        self.items.setdefault(kind, []).append((path, nbytes))

    def bytes(self, kind: str | None = None) -> int:
        kinds = [kind] if kind else list(self.items)
        return sum(b for k in kinds for _, b in self.items.get(k, []))

    def count(self, kind: str) -> int:
        return len(self.items.get(kind, []))


def drop_frames(paths: Paths, cfg: CurateConfig, cat: Catalog, policy: str,
                dry_run: bool = False) -> Freed:
    """Drop the pixels ``policy`` lets go now: every video's under ``none``, under ``after_score``
    those of videos no step still needs (``needed``), including videos the catalog no longer
    lists as ok. ``keep`` drops nothing."""
    freed = Freed()
    if check_policy(policy) == "keep" or not paths.frames.is_dir():
        return freed
    keep = needed(cat, cfg, paths.root) if policy == "after_score" else set()
    for d in sorted(paths.frames.iterdir()):
        if d.is_dir() and not d.name.startswith(".") and d.name not in keep:
            nbytes = drop_pixels(d, dry_run)
            if nbytes:
                freed.add("frames", d, nbytes)
    return freed


def after_step(step: str, paths: Paths, cfg: CurateConfig, cat: Catalog) -> dict[str, Any]:
    """Apply ``runtime.keep_frames`` once ``step`` has finished: a no-op unless ``step`` is the
    run's last reader of pixels. Returns the counts to add to the step's."""
    policy = check_policy(cfg.runtime.keep_frames)
    if policy == "keep" or step != frame_steps(cfg)[-1]:
        return {}
    freed = drop_frames(paths, cfg, cat, policy)
    log.info("keep_frames=%s: dropped the frames of %d videos (%.1f MB)", policy,
             freed.count("frames"), freed.bytes() / 1e6)
    return {"frames_dropped": freed.count("frames"), "frames_freed_bytes": freed.bytes()}


def debris(root: Path) -> Iterable[Path]:
    """Leftovers of killed processes under ``root`` (``DEBRIS``)."""
    for parent, pattern in DEBRIS:
        for d in [root] if parent == "." else sorted(root.glob(parent)):
            yield from sorted(d.glob(pattern))


def gc_output_root(root: Path, cfg: CurateConfig, cat: Catalog, policy: str, keep_versions: int | None,
                   dry_run: bool = False, log_fn: Callable[[str], None] = print) -> Freed:
    """What a finished run no longer needs under ``root``: frames per ``policy``, debris, and, when
    ``keep_versions`` is set, all but that many dataset versions under ``root/shards``.

    The caller holds the catalog's write lock (``cat``, read-write) for the duration."""
    from pipelines import dataset_versions as dv
    from pipelines.run_layout import Paths

    paths = Paths(root)
    freed = drop_frames(paths, cfg, cat, policy, dry_run)
    for p in debris(paths.root):
        freed.add("debris", p, tree_bytes(p))
        if not dry_run:
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)
    if keep_versions is not None and (paths.shards / dv.LATEST).exists():
        doomed = dv.gc(paths.shards, keep=keep_versions, dry_run=True)
        sizes = unlinked_bytes(doomed)
        if not dry_run:
            dv.gc(paths.shards, keep=keep_versions, log=log_fn)
        for p in doomed:
            freed.add("versions", p, sizes[p])
    return freed


def unlinked_bytes(dirs: list[Path]) -> dict[Path, int]:
    """Bytes each of ``dirs`` frees when all of them are deleted: a file hard-linked from
    elsewhere (a shard shared with a version that stays) frees nothing."""
    links: dict[tuple[int, int], int] = {}
    files: dict[Path, list[tuple[tuple[int, int], int, int]]] = {}
    for d in dirs:
        for f in d.rglob("*"):
            if f.is_file() and not f.is_symlink():
                st = f.lstat()
                ino = (st.st_dev, st.st_ino)
                links[ino] = links.get(ino, 0) + 1
                files.setdefault(d, []).append((ino, st.st_nlink, st.st_size))
    out, seen = {}, set()
    for d in dirs:
        out[d] = 0
        for ino, nlink, size in files.get(d, []):
            if links[ino] >= nlink and ino not in seen:
                out[d] += size
            seen.add(ino)
    return out
