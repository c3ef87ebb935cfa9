"""Cost-ordered scoring (pipelines/stages/score_gate.py, pipelines/score_step.py).

The expensive scorers (OCR; aesthetic when its weights are there) skip a clip that a rule before
theirs already rejects, the catalog says so in ``not_scored``, and ``scores.score_all`` scores
everything. On three demo videos (defects, overlay text, static camera) the kept/rejected decisions and the
reasons are the same either way.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from curation import schema
from curation.db import Catalog
from pipelines.config import FilterConfig, load_config
from pipelines.stages.score_gate import ScoreGate, gate_rules
from pipelines.tasks import ClipTask


def clip_task(**scores: Any) -> ClipTask:
    clip = schema.Clip("c1", "v1", 0, 0, 100, 0.0, 4.0, 640, 360, 25.0, n_frames=100)
    for k, v in scores.items():
        setattr(clip.scores, k, v)
    return ClipTask(clip=clip, src_path="x.mp4", todo=("quality", "overlay_text", "aesthetic", "hash"))


def test_gate_skips_the_expensive_scorers_of_a_clip_a_cheap_rule_rejects() -> None:
    f = FilterConfig()
    gate = ScoreGate(before="overlay_text", skip=("overlay_text", "aesthetic"), filters=f)
    blurry = gate.process(clip_task(blur=f.min_blur / 2, luma=120.0))
    assert blurry.todo == ("quality", "hash")
    assert blurry.clip.not_scored == "overlay_text,aesthetic: rejected before overlay_text (blurry)"
    sharp = gate.process(clip_task(blur=f.min_blur * 2, luma=120.0))
    assert sharp.todo == ("quality", "overlay_text", "aesthetic", "hash") and sharp.clip.not_scored is None
    unmeasured = gate.process(clip_task())  # None never rejects
    assert unmeasured.clip.not_scored is None


def test_aesthetic_gate_reads_motion_but_not_the_text_rule() -> None:
    f = FilterConfig()
    names = [n for n, _ in gate_rules("aesthetic", f)]
    assert "static" in names and "blurry" in names and "text" not in names and "low_aesthetic" not in names
    assert [n for n, _ in gate_rules("overlay_text", f)][-1] == "frozen"
    gate = ScoreGate(before="aesthetic", skip=("aesthetic",), filters=f)
    static = gate.process(clip_task(blur=f.min_blur * 2, luma=120.0, motion=0.0, text_area=0.9))
    assert static.todo == ("quality", "overlay_text", "hash")
    assert static.clip.not_scored == "aesthetic: rejected before aesthetic (static)"


@pytest.fixture(scope="module")
def split_out(demo_samples: tuple[Path, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo videos ingested, split and cut into clip spans (the steps before score)."""
    from pipelines.curate import run_step_by_name

    src, manifest = demo_samples
    # the defects (black, dark, blurry, frozen ... spans), overlay text, a static camera
    names = [n for n in manifest if n.startswith(("demo_defects", "demo_text_en", "demo_static"))]
    assert len(names) == 3, sorted(manifest)
    out = tmp_path_factory.mktemp("cost") / "split"
    cfg = demo_cfg()
    for step in ("ingest", "split", "clips"):
        run_step_by_name(step, [str(src / n) for n in names], out, cfg)
    return out


def demo_cfg(**filters: Any) -> Any:
    cfg = load_config("tiny")
    cfg.runtime.runner, cfg.runtime.quiet = "sequential", True
    cfg.filters.min_duration_s = 1.5  # as make demo
    for k, v in filters.items():
        setattr(cfg.filters, k, v)
    return cfg


def score_and_filter(split_out: Path, dest: Path, cfg: Any) -> dict[str, dict[str, Any]]:
    from pipelines.curate import run_step_by_name

    if not dest.exists():
        shutil.copytree(split_out, dest)
    for step in ("score", "filter"):
        run_step_by_name(step, [], dest, cfg)
    with Catalog(dest / "catalog.duckdb", read_only=True) as cat:
        rows = cat.dicts("SELECT clip_id, status, reject_reason, not_scored, text_area, blur FROM clips")
    return {r["clip_id"]: r for r in rows}


def ocr_done(out: Path) -> set[str]:
    with Catalog(out / "catalog.duckdb", read_only=True) as cat:
        sql = "SELECT item_id FROM stage_done WHERE stage = 'score:overlay_text'"
        return {r[0] for r in cat.query(sql)[1]}


@pytest.mark.slow  # ~35 s on 2 cores, the fixture's split of three demo videos included
def test_cost_ordered_scoring_decides_as_score_all_on_the_demo(split_out: Path, tmp_path: Path) -> None:
    ordered = score_and_filter(split_out, tmp_path / "ordered", demo_cfg())
    all_cfg = demo_cfg()
    all_cfg.scores.score_all = True
    every = score_and_filter(split_out, tmp_path / "all", all_cfg)
    assert {k: (r["status"], r["reject_reason"]) for k, r in ordered.items()} == {
        k: (r["status"], r["reject_reason"]) for k, r in every.items()}
    skipped = {k for k, r in ordered.items() if r["not_scored"]}
    assert skipped, "the demo has clips a cheap rule rejects (black, dark, blurry, ...)"
    for k in skipped:
        r = ordered[k]
        assert r["status"] == "rejected" and r["text_area"] is None
        assert r["not_scored"].startswith("overlay_text") and f"({r['reject_reason']})" in r["not_scored"]
    assert not skipped & ocr_done(tmp_path / "ordered")  # not marked done: a rerun may still score them
    assert all(r["not_scored"] is None for r in every.values())
    assert ocr_done(tmp_path / "all") >= set(every)

    # --score-all on the cost-ordered catalog scores what was skipped and clears not_scored
    again = score_and_filter(split_out, tmp_path / "ordered", all_cfg)
    assert all(r["not_scored"] is None for r in again.values())
    assert ocr_done(tmp_path / "ordered") >= set(again)


@pytest.mark.slow
def test_a_loosened_threshold_rescores_the_clips_it_lets_through(split_out: Path, tmp_path: Path) -> None:
    first = score_and_filter(split_out, tmp_path / "o", demo_cfg())
    blurry = {k for k, r in first.items() if r["reject_reason"] == "blurry"}
    if not blurry:
        pytest.skip("no demo clip is rejected as blurry")
    second = score_and_filter(split_out, tmp_path / "o", demo_cfg(min_blur=0.0))
    done = ocr_done(tmp_path / "o")
    for k in blurry:  # the gate re-decided: OCR ran, or a later cheap rule rejects the clip now
        assert (k in done) != bool(second[k]["not_scored"]), second[k]
        assert "(blurry)" not in (second[k]["not_scored"] or "")
    assert blurry & done


def test_a_clip_never_scored_is_not_kept_on_its_missing_score() -> None:
    import numpy as np

    from pipelines.decide_columns import reason_names

    reason = np.array([-1, -1, 3, -1])  # kept, kept, rejected by rule 3, kept
    not_scored = np.array([False, True, True, False])
    score_error = np.array([False, False, False, True])
    names = reason_names(reason, score_error, not_scored)
    assert names[0] is None and names[1] == "not_scored" and names[3] == "score_error"
    assert names[2] not in (None, "not_scored")  # an earlier rule's rejection stands


@pytest.mark.slow  # ~35 s on 2 cores, the fixture's split of three demo videos included
def test_rescore_after_loosening_rejects_unscored_clips_until_scored(split_out: Path, tmp_path: Path) -> None:
    from pipelines.curate import run_step_by_name

    out = tmp_path / "o"
    first = score_and_filter(split_out, out, demo_cfg())
    gated = {k for k, r in first.items() if r["not_scored"] and "overlay_text" in r["not_scored"]}
    if not gated:
        pytest.skip("no demo clip was kept from OCR")
    run_step_by_name("filter", [], out, demo_cfg(min_blur=0.0, min_duration_s=0.0))  # a --rescore
    with Catalog(out / "catalog.duckdb", read_only=True) as cat:
        rows = {r["clip_id"]: r for r in cat.dicts("SELECT clip_id, status, reject_reason FROM clips")}
    for k in gated:  # no clip is kept without the OCR score it never got
        assert rows[k]["status"] == "rejected", rows[k]
    assert any(rows[k]["reject_reason"] == "not_scored" for k in gated)


@pytest.mark.slow  # the fixture's split of three demo videos
def test_the_clips_step_writes_the_same_rows_in_small_batches(
    split_out: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The clips step streams its spans (pipelines/curate.clip_tasks, a generator) and writes them
    CLIPS_BATCH at a time: batches of 2 give the catalog the one-batch run gave it."""
    from pipelines import curate

    def clip_rows(out: Path) -> list[tuple[Any, ...]]:
        with Catalog(out / "catalog.duckdb", read_only=True) as cat:
            return cat.query("SELECT * FROM clips ORDER BY clip_id")[1]

    dest = tmp_path / "batched"
    shutil.copytree(split_out, dest)
    with Catalog(dest / "catalog.duckdb") as cat:
        cat.con.execute("DELETE FROM clips")
        cat.con.execute("DELETE FROM stage_done WHERE stage = 'clips'")
    monkeypatch.setattr(curate, "CLIPS_BATCH", 2)
    counts = curate.run_step_by_name("clips", [], dest, demo_cfg())
    reference = clip_rows(split_out)
    assert counts["spans"] == counts["written"] == len(reference) > 2
    assert clip_rows(dest) == reference
    again = curate.run_step_by_name("clips", [], dest, demo_cfg())  # a rerun writes nothing
    assert (again["spans"], again["written"]) == (len(reference), 0)
