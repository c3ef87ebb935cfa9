"""Scratch space (pipelines/scratch.py): ``runtime.keep_frames`` and ``vidloom gc OUT``.

Real curate runs (sequential runner, tiny preset) on one generated demo video with planted defects
(8 clips: 2 kept, 6 rejected). Whatever is dropped must not change what a run produces, and a
later run must decode again exactly when something reads the frames.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from curation.db import Catalog
from pipelines.config import CurateConfig, load_config
from pipelines.curate import STEPS, run_curate, run_step_by_name
from pipelines.dataset_versions import resolve
from pipelines.scratch import PIXELS, TIMELINE

SOURCE = "demo_defects_640x360.mp4"


def config(policy: str = "keep") -> CurateConfig:
    cfg = load_config("tiny")
    cfg.runtime.runner, cfg.runtime.quiet = "sequential", True
    cfg.scores.text.enabled = False  # OCR would only cost time here
    cfg.split.detector = "content"
    cfg.runtime.keep_frames = policy
    return cfg


@pytest.fixture(scope="module")
def runs(demo_samples: tuple[Path, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory
         ) -> dict[str, Path]:
    """The same video curated with frames kept and with ``after_score``; ``inputs``: its source dir."""
    inputs = tmp_path_factory.mktemp("inputs")
    shutil.copy(demo_samples[0] / SOURCE, inputs / SOURCE)
    base = tmp_path_factory.mktemp("scratch")
    out = {"inputs": inputs}
    for policy in ("keep", "after_score"):
        out[policy] = base / policy
        run_curate([str(inputs)], out[policy], config(policy))
    return out


def frame_dirs(out: Path) -> list[Path]:
    return sorted(d for d in (out / ".work" / "frames").iterdir() if not d.name.startswith("."))


def has_pixels(out: Path) -> list[bool]:
    return [all((d / n).is_file() for n in PIXELS) for d in frame_dirs(out)]


def catalog_state(out: Path) -> dict[str, Any]:
    with Catalog(out / "catalog.duckdb", read_only=True) as cat:
        return {
            "clips": cat.query("SELECT * FROM clips ORDER BY clip_id")[1],
            "captions": cat.query("SELECT clip_id, lang, kind, text, checks FROM captions ORDER BY ALL")[1],
        }


@contextmanager
def source_hidden(inputs: Path) -> Iterator[None]:
    """The source renamed away: a decode of it fails (and ingest finds no file)."""
    src = inputs / SOURCE
    src.rename(src.with_name(SOURCE + ".gone"))
    try:
        yield
    finally:
        src.with_name(SOURCE + ".gone").rename(src)


def copy(runs: dict[str, Path], policy: str, tmp_path: Path) -> Path:
    out = tmp_path / policy
    shutil.copytree(runs[policy], out, symlinks=True)
    return out


def test_after_score_drops_the_pixels_and_changes_no_output(runs: dict[str, Path]) -> None:
    kept, dropped = runs["keep"], runs["after_score"]
    assert has_pixels(kept) == [True]
    assert has_pixels(dropped) == [False]
    assert all((d / n).is_file() for d in frame_dirs(dropped) for n in TIMELINE)  # the timeline stays
    size = {k: sum(f.stat().st_size for f in (runs[k] / ".work" / "frames").rglob("*") if f.is_file())
            for k in ("keep", "after_score")}
    assert size["after_score"] < 0.01 * size["keep"], size
    # the signals captions read the sparse frames: they were dropped only after the caption step
    assert catalog_state(kept) == catalog_state(dropped)
    assert resolve(kept / "shards").name == resolve(dropped / "shards").name  # same dataset hash


def test_a_rerun_without_frames_decodes_nothing(runs: dict[str, Path], tmp_path: Path) -> None:
    out = copy(runs, "after_score", tmp_path)
    before = catalog_state(out)
    with source_hidden(runs["inputs"]):
        counts = {s: run_step_by_name(s, [str(runs["inputs"])], out, config("after_score")) for s in STEPS}
    assert counts["score"]["redecoded"] == 0 and counts["caption"]["redecoded"] == 0
    assert counts["score"]["errors"] == 0
    assert has_pixels(out) == [False]
    assert catalog_state(out) == before


def test_rescore_needs_no_frames(runs: dict[str, Path], tmp_path: Path) -> None:
    out = copy(runs, "after_score", tmp_path)
    cfg = config("after_score")
    cfg.filters.min_duration_s = 3.5  # longer than some kept clip
    too_short = "SELECT count(*) FROM clips WHERE reject_reason = 'too_short'"
    with Catalog(out / "catalog.duckdb", read_only=True) as cat:
        before = cat.query(too_short)[1][0][0]
    with source_hidden(runs["inputs"]):
        run_curate([str(runs["inputs"])], out, cfg, rescore=True)
    with Catalog(out / "catalog.duckdb", read_only=True) as cat:
        assert cat.query(too_short)[1][0][0] > before  # re-decided from the stored scores
    assert has_pixels(out) == [False]


def test_a_changed_scorer_decodes_again_and_scores_the_same(runs: dict[str, Path], tmp_path: Path) -> None:
    """A scorer whose params change (as a new scorer would) reruns on every clip: the dropped
    frames are decoded again, and the scores equal those measured on the kept frames."""
    kept, dropped = copy(runs, "keep", tmp_path), copy(runs, "after_score", tmp_path)
    motion: dict[str, Any] = {}
    for out, policy in ((kept, "keep"), (dropped, "after_score")):
        cfg = config(policy)
        cfg.scores.motion.static_motion = 0.02
        counts = run_step_by_name("score", [str(runs["inputs"])], out, cfg)
        assert counts["written"] == 8 and counts["errors"] == 0, counts
        assert counts["redecoded"] == (1 if policy == "after_score" else 0)
        with Catalog(out / "catalog.duckdb", read_only=True) as cat:
            motion[policy] = cat.query("SELECT clip_id, motion, camera_motion FROM clips ORDER BY clip_id")[1]
        if policy == "after_score":
            assert has_pixels(out) == [True]  # kept for the caption step (signals reads them)...
            caption = run_step_by_name("caption", [str(runs["inputs"])], out, cfg)
            assert caption["frames_dropped"] == 1 and has_pixels(out) == [False]  # ...then dropped
    assert motion["keep"] == motion["after_score"]


def test_exporting_an_uncut_clip_needs_the_source_not_frames(runs: dict[str, Path], tmp_path: Path) -> None:
    from vidloom.cli import main

    where = "reject_reason = 'blurry'"  # a rejected clip: never cut
    gone, here = copy(runs, "after_score", tmp_path / "gone"), copy(runs, "after_score", tmp_path / "here")
    with Catalog(here / "catalog.duckdb", read_only=True) as cat:
        assert cat.query(f"SELECT count(*) FROM clips WHERE {where} AND path IS NULL")[1][0][0] == 1
    with source_hidden(runs["inputs"]):
        main(["export", str(gone / "catalog.duckdb"), "--where", where, "--out", str(gone / "sel")])
    with Catalog(gone / "catalog.duckdb", read_only=True) as cat:
        (path, error), = cat.query(f"SELECT path, extract_error FROM clips WHERE {where}")[1]
    assert path is None and error  # without its source the clip cannot be cut

    assert main(["export", str(here / "catalog.duckdb"), "--where", where, "--out", str(here / "sel")]) == 0
    with Catalog(here / "catalog.duckdb", read_only=True) as cat:
        (path, n_frames, start, end, error), = cat.query(
            f"SELECT path, n_frames, start_frame, end_frame, extract_error FROM clips WHERE {where}")[1]
    assert error is None and (here / path).is_file() and n_frames == end - start  # cut on the timeline
    assert resolve(here / "sel").is_dir()
    assert has_pixels(here) == [False]


def vidloom_gc(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vidloom.cli", "gc", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def plant_debris(out: Path) -> list[Path]:
    """Leftovers of killed processes: a decode temp dir, a journal temp part, a catalog copy, a cut."""
    vid = frame_dirs(out)[0].name
    work = out / ".work"
    planted = [work / "frames" / f".{vid}.tmp-abc123", work / "parts" / "score" / ".tmp-x-1",
               out / f".catalog.duckdb.tmp-{'d' * 8}", out / "clips" / vid / ".c0ffee.4242.part"]
    for p in planted:
        if p.suffix == ".part" or p.name.startswith(".catalog"):
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(b"x" * 1000)
        else:
            p.mkdir(parents=True)
            (p / "tiny.npy").write_bytes(b"x" * 1000)
    return planted


def freed_bytes(stdout: str) -> int:
    import re

    return int(re.search(r"(?:would free|freed) (\d+) bytes", stdout)[1])


def test_gc_of_an_output_root(runs: dict[str, Path], tmp_path: Path) -> None:
    from vidloom.cli import main

    out = copy(runs, "keep", tmp_path)
    with Catalog(out / "catalog.duckdb", read_only=True) as cat:
        (one,) = cat.query("SELECT min(clip_id) FROM clips WHERE status = 'kept'")[1][0]
    assert main(["export", str(out / "catalog.duckdb"), "--where", f"clip_id = '{one}'",
                 "--out", str(out / "shards")]) == 0  # a second dataset version, now latest
    versions = lambda: sorted(p.name for p in (out / "shards").iterdir() if len(p.name) == 64)  # noqa: E731
    assert len(versions()) == 2
    planted = plant_debris(out)
    pixels = sum((d / n).stat().st_size for d in frame_dirs(out) for n in PIXELS)

    res = vidloom_gc(out, "--dry-run")  # config.yaml says keep: the frames stay
    assert res.returncode == 0, res.stderr
    assert "frames kept" in res.stdout and freed_bytes(res.stdout) == 4000, res.stdout
    res = vidloom_gc(out, "--keep-frames", "after_score", "--keep", "1", "--dry-run")
    assert freed_bytes(res.stdout) > pixels + 4000, res.stdout  # + the old version's own bytes
    assert has_pixels(out) == [True] and all(p.exists() for p in planted) and len(versions()) == 2

    res = vidloom_gc(out, "--keep-frames", "after_score")  # no --keep: every version stays
    assert res.returncode == 0, res.stderr
    assert freed_bytes(res.stdout) == pixels + 4000, res.stdout
    assert has_pixels(out) == [False] and not any(p.exists() for p in planted) and len(versions()) == 2
    assert all((d / n).is_file() for d in frame_dirs(out) for n in TIMELINE)
    res = vidloom_gc(out, "--keep", "1")
    assert "1 dataset versions" in res.stdout and freed_bytes(res.stdout) > 0, res.stdout
    assert versions() == [resolve(out / "shards").name]
    assert freed_bytes(vidloom_gc(out, "--keep-frames", "none", "--keep", "1").stdout) == 0


def test_gc_keeps_the_frames_of_unfinished_videos_unless_none(runs: dict[str, Path], tmp_path: Path) -> None:
    """A clip whose motion score is missing (a failed clip the next run retries) keeps its video's
    frames under after_score; none drops them, and the retry decodes them again."""
    out = copy(runs, "keep", tmp_path)
    with Catalog(out / "catalog.duckdb") as cat:
        (clip,) = cat.query("SELECT clip_id FROM clips ORDER BY clip_id LIMIT 1")[1][0]
        cat.con.execute("DELETE FROM stage_done WHERE item_id = ? AND stage = 'score:motion'", [clip])
    res = vidloom_gc(out, "--keep-frames", "after_score")
    assert res.returncode == 0 and "freed 0 bytes" in res.stdout, res.stdout + res.stderr
    assert has_pixels(out) == [True]
    res = vidloom_gc(out, "--keep-frames", "none")
    assert res.returncode == 0 and has_pixels(out) == [False], res.stdout + res.stderr
    counts = run_step_by_name("score", [str(runs["inputs"])], out, config("keep"))
    assert counts["redecoded"] == 1 and counts["errors"] == 0
    assert catalog_state(out) == catalog_state(runs["keep"])


def test_gc_refuses_while_the_catalog_is_written(runs: dict[str, Path], tmp_path: Path) -> None:
    out = copy(runs, "keep", tmp_path)
    with Catalog(out / "catalog.duckdb"):  # a writer (a run's step) holds the live catalog
        res = vidloom_gc(out, "--keep-frames", "none", "--wait", "0.2")
    assert res.returncode == 1 and "being written" in res.stderr, res.stdout + res.stderr
    assert has_pixels(out) == [True]


def test_keep_frames_is_checked() -> None:
    from pipelines.config_check import ConfigError

    with pytest.raises(ConfigError, match="keep_frames"):
        load_config("tiny", overrides=["runtime.keep_frames=sometimes"])
    assert load_config("tiny", overrides=["runtime.keep_frames=none"]).runtime.keep_frames == "none"


def test_signals_captions_and_a_changed_split_decode_again(runs: dict[str, Path], tmp_path: Path) -> None:
    """Clips to caption with the signals backend (here: their caption marks removed) get their
    video decoded again and the same captions; changed split params re-decode in the split step."""
    out = copy(runs, "after_score", tmp_path)
    with Catalog(out / "catalog.duckdb") as cat:
        cat.con.execute("DELETE FROM stage_done WHERE stage = 'caption'")
    counts = run_step_by_name("caption", [str(runs["inputs"])], out, config("after_score"))
    assert counts["redecoded"] == 1 and counts["written"] == 2 and counts["errors"] == 0, counts
    assert counts["frames_dropped"] == 1 and has_pixels(out) == [False]
    assert catalog_state(out)["captions"] == catalog_state(runs["keep"])["captions"]

    cfg = config("after_score")
    cfg.split.threshold = cfg.split.threshold * 1.01  # new split params: every video is split again
    counts = run_step_by_name("split", [str(runs["inputs"])], out, cfg)
    assert counts["written"] == 1 and counts["errors"] == 0 and has_pixels(out) == [True], counts
