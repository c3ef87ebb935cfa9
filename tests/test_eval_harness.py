"""vidloom eval end to end on two tiny random-weight checkpoints: the real CLI, real mp4 files, a real
DuckDB history and human labels written through the annotation page's own table helpers."""

from __future__ import annotations

import json
import re
import urllib.parse
from pathlib import Path

import av
import duckdb
import pytest
import torch

from evaluation.annotate_tasks import make_tasks
from evaluation.harness import video_id
from evaluation.preferences import insert_label
from models.dit.model import DiT
from models.text_encoder import ByteEncoder
from models.vae.causal_vae import VAE
from training.config import StageConfig, tiny
from training.loop.checkpoint import save_dit_run
from training.post.distill_eval import wake
from vidloom.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one intra-op thread is fastest

FAST = ["--suite", "tiny", "--seeds", "0,1", "--steps", "2"]
N_VIDEOS = 2 * 5 * 2  # checkpoints x prompts x seeds


def _ckpt(root: Path, step: int, seed: int) -> Path:
    cfg = tiny()
    cfg.stages = [StageConfig("video", 1.0, n_frames=5, size=(32, 64), fps=8.0, global_batch=2)]
    torch.manual_seed(seed)
    dit = wake(DiT(cfg.dit), 0.05, seed)
    save_dit_run(root, step, cfg, dit, ByteEncoder(cfg.text.byte), VAE(cfg.vae))
    return root


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("eval_ckpts")
    return _ckpt(root / "early", 3, 0), _ckpt(root / "late", 9, 1)


def _sql(db: Path, q: str) -> list[tuple]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(q).fetchall()


def _frames(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


def test_eval_twice_history_page_labels(ckpts: tuple[Path, Path], tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    early, late = ckpts
    out, labels = tmp_path / "eval", tmp_path / "labels.duckdb"
    args = ["eval", "--ckpt", f"early={early}", "--ckpt", str(late), "--out", str(out), *FAST]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "Mean score per dimension" in printed and "multi_shot" in printed and "Win rates" in printed
    db = out / "eval.duckdb"
    run1 = _sql(db, "SELECT run_id FROM eval_runs")[0][0]
    assert _sql(db, "SELECT count(*), count(DISTINCT video_id) FROM eval_videos") == [(N_VIDEOS, N_VIDEOS)]
    assert _sql(db, "SELECT DISTINCT ckpt FROM eval_videos ORDER BY 1") == [("early",), ("late-step9",)]
    assert _sql(db, "SELECT count(*) FROM eval_scores WHERE metric = 'composite'") == [(N_VIDEOS,)]
    # win rates: A over B and B over A sum to 1, with an interval around the rate
    rows = _sql(db, "SELECT ckpt_a, win_rate, ci_low, ci_high, n FROM eval_winrates "
                    "WHERE metric = 'composite' AND dimension = 'all' ORDER BY ckpt_a")
    assert [r[0] for r in rows] == ["early", "late-step9"] and rows[0][4] == 10
    assert rows[0][1] + rows[1][1] == pytest.approx(1.0)
    assert all(lo <= rate <= hi for _, rate, lo, hi, _ in rows)

    # every video is on the page, linked by its id (a path relative to --out); multi-shot joins its shots
    ids = {r[0] for r in _sql(db, "SELECT video_id FROM eval_videos")}
    page = (out / "report.html").read_text(encoding="utf-8")
    srcs = {urllib.parse.unquote(s) for s in re.findall(r"<video src='([^']+)'", page)}
    assert srcs == ids and all((out / v).is_file() for v in ids)
    assert "一匹棕色的马沿着海滩奔跑" in page and "<script" not in page
    assert (out / f"report-{run1}.html").read_text(encoding="utf-8") == page
    (shot_video,) = _sql(db, "SELECT video_id FROM eval_videos WHERE prompt_id = 'ms-runner-en' "
                             "AND ckpt = 'early' AND seed = 0")[0]
    assert _frames(out / shot_video) == 10  # two shots of 5 frames
    # 2 steps x 2 passes (CFG) per shot, recorded per video
    passes = _sql(db, "SELECT DISTINCT prompt_id = 'ms-runner-en', steps::VARCHAR, dit_passes "
                      "FROM eval_videos")
    assert sorted(passes) == [(False, "[2]", 4), (True, "[2, 2]", 8)]
    assert _sql(db, "SELECT count(*) FROM eval_scores WHERE metric = 'cross_shot_consistency'") == [(4,)]
    index = [json.loads(x) for x in (out / "index.jsonl").read_text(encoding="utf-8").splitlines()]
    assert {x["video_id"] for x in index} == ids and all(Path(x["path"]).is_file() for x in index)

    # the annotation page's make-tasks reads this index: its tasks carry these ids, paths under --out
    made = make_tasks([out / "index.jsonl"], tmp_path / "tasks.duckdb")
    assert made.added and {v for t in made.tasks for v in t["video_ids"]} == ids
    assert all((out / p).is_file() for t in made.tasks for p in t["video_paths"])

    # two labellers score one unit of both checkpoints; a third skips; an unrelated id is ignored
    vid_e = next(x["video_id"] for x in index if x["ckpt"] == "early" and x["prompt_id"] == "vq-city-night-en"
                 and x["seed"] == 1)
    vid_l = next(x["video_id"] for x in index if x["ckpt"] == "late-step9" and x["prompt_id"] ==
                 "vq-city-night-en" and x["seed"] == 1)
    task = {"task_id": "t1", "prompt": "a rainy city street", "video_ids": [vid_e, vid_l, "videos/other.mp4"]}
    good = {"motion": 4, "structure": 5, "fidelity": 4, "alignment": 3}
    bad = {"motion": 2, "structure": 1, "fidelity": 2, "alignment": 1}
    insert_label(labels, task, "alice", {vid_e: bad, vid_l: good, "videos/other.mp4": good}, vid_l, vid_e,
                 False)
    insert_label(labels, task, "bob", {vid_e: {**bad, "motion": 3}, vid_l: good}, vid_l, vid_e, False)
    insert_label(labels, task, "carol", None, None, None, True)

    assert main([*args, "--labels", str(labels)]) == 0
    capsys.readouterr()
    runs = [r[0] for r in _sql(db, "SELECT run_id FROM eval_runs ORDER BY created_at, run_id")]
    assert len(set(runs)) == 2 and run1 in runs
    run2 = next(r for r in runs if r != run1)
    assert _sql(db, "SELECT count(*) FROM eval_videos") == [(2 * N_VIDEOS,)]
    # fixed seeds: the rerun makes the same videos, with the same ids and scores
    same = _sql(db, f"SELECT count(*) FROM eval_scores a JOIN eval_scores b USING (ckpt, prompt_id, seed, "
                    f"metric) WHERE a.run_id = '{run1}' AND b.run_id = '{run2}' AND a.value = b.value")
    assert same == _sql(db, f"SELECT count(*) FROM eval_scores WHERE run_id = '{run1}'")
    human = dict(_sql(db, f"SELECT metric, value FROM eval_scores WHERE run_id = '{run2}' AND ckpt = 'early' "
                          "AND prompt_id = 'vq-city-night-en' AND seed = 1 AND metric LIKE 'human%'"))
    assert human["human_motion"] == pytest.approx(2.5) and human["human_structure"] == 1.0
    assert human["human_n"] == 2 and human["human_best_worst"] == -1.0
    assert human["human_mean"] == pytest.approx((2.5 + 1 + 2 + 1) / 4)
    assert _sql(db, f"SELECT count(*) FROM eval_scores WHERE run_id = '{run2}' AND metric = 'human_mean'"
                ) == [(2,)]
    (hw,) = _sql(db, f"SELECT n, wins, win_rate FROM eval_winrates WHERE run_id = '{run2}' AND "
                     "metric = 'human_mean' AND ckpt_a = 'late-step9'")
    assert hw == (1, 1, 1.0)
    assert _sql(db, f"SELECT count(*) FROM eval_winrates WHERE run_id = '{run1}' AND metric LIKE 'human%'"
                ) == [(0,)]


def test_video_ids_and_bad_input(ckpts: tuple[Path, Path], tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert video_id("early", "pf-x", 3, "0123abcd") == "videos/early/pf-x-s3-0123abcd.mp4"
    early, _ = ckpts
    out = tmp_path / "e"
    assert main(["eval", "--ckpt", str(early), "--ckpt", str(early), "--out", str(out), *FAST]) == 2
    assert "labels must be unique" in capsys.readouterr().err
    assert main(["eval", "--ckpt", str(tmp_path / "missing"), "--out", str(out), *FAST]) == 2
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("prompts: [{id: x, dimension: nope, lang: en, text: a}]\n", encoding="utf-8")
    assert main(["eval", "--ckpt", str(early), "--out", str(out), "--suite", str(bad)]) == 2
    assert "dimension must be one of" in capsys.readouterr().err
    assert not (out / "eval.duckdb").exists()  # nothing recorded for a run that did not start


def test_adaptive_steps_are_recorded(ckpts: tuple[Path, Path], tmp_path: Path) -> None:
    early, _ = ckpts
    out = tmp_path / "auto"
    assert main(["eval", "--ckpt", str(early), "--out", str(out), "--suite", "tiny", "--seeds", "0",
                 "--steps", "auto"]) == 0
    rows = _sql(out / "eval.duckdb", "SELECT steps, dit_passes FROM eval_videos")
    assert len(rows) == 5
    for steps, passes in rows:
        assert all(isinstance(n, int) and n >= 1 for n in steps)
        assert passes >= 2 * sum(steps)  # CFG passes, plus the probe's
    (settings,) = _sql(out / "eval.duckdb", "SELECT settings FROM eval_runs")[0]
    assert json.loads(settings)["steps"] == "auto"
