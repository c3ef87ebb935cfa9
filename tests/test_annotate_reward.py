"""Preference rows -> PreferencePairs (training/post/reward_labels.py); ``vidloom reward-train`` on real
labels."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import torch
from annotate_helpers import make_batch

from evaluation import preferences
from evaluation.annotate_reward import load_clip
from evaluation.annotate_tasks import make_tasks
from models.rewards.learned import load_head
from training.post.reward_labels import DIMENSION_MAP, label_pairs, pairs_from_labels
from vidloom.cli import main


def _s(m: int, s: int, f: int, a: int) -> dict[str, int]:
    return {"motion": m, "structure": s, "fidelity": f, "alignment": a}


def _row(scores: dict[str, dict[str, int]], best: str, worst: str, skipped: bool = False) -> dict[str, Any]:
    return {"task_id": "t", "prompt": "p", "video_ids": list(scores), "scores": scores, "best": best,
            "worst": worst, "skipped": skipped}


def test_label_pairs_from_scores_and_best_worst() -> None:
    row = _row({"x": _s(5, 3, 1, 2), "y": _s(2, 3, 5, 2), "z": _s(2, 4, 3, 4)}, best="z", worst="x")
    got = {(a, b): labels for a, b, labels in label_pairs(row, DIMENSION_MAP["motion"])}
    assert got == {
        ("x", "y"): {"motion": "a"},  # structure tied, and (x, y) is not the best/worst pair
        ("x", "z"): {"motion": "a", "structure": "b"},  # scores win over best=z on motion
        ("y", "z"): {"structure": "b"},  # motion tied
    }
    text = {(a, b): labels for a, b, labels in label_pairs(row, DIMENSION_MAP["text"])}
    assert text == {("x", "z"): {"text_alignment": "b"}, ("y", "z"): {"text_alignment": "b"}}
    # a tie on every mapped dimension is broken by the pick
    tie = _row({"x": _s(3, 3, 1, 3), "y": _s(3, 3, 5, 3)}, best="y", worst="x")
    assert label_pairs(tie, DIMENSION_MAP["motion"]) == [("x", "y", {"motion": "b", "structure": "b"})]
    assert label_pairs({**tie, "skipped": True, "scores": None}, DIMENSION_MAP["motion"]) == []


def test_pairs_from_labels_loads_once_and_drops_missing() -> None:
    loads: list[str] = []

    def load(vid: str) -> torch.Tensor | None:
        loads.append(vid)
        return None if vid == "gone" else torch.full((3, 2, 4, 4), float(ord(vid[0]) % 7) / 7)

    rows = [_row({"x": _s(5, 5, 5, 5), "y": _s(1, 1, 1, 1)}, "x", "y"),
            {**_row({"x": _s(4, 4, 4, 4), "y": _s(2, 2, 2, 2)}, "x", "y"), "labeller": "bob"},
            _row({"x": _s(5, 5, 5, 5), "gone": _s(1, 1, 1, 1)}, "x", "gone"),
            _row({"x": _s(5, 5, 5, 5), "y": _s(1, 1, 1, 1)}, "x", "y", skipped=True)]
    pairs, stats = pairs_from_labels(rows, DIMENSION_MAP["motion"], load)
    assert stats == {"labels": 3, "skipped": 1, "pairs": 2, "dropped_missing": 1, "videos": 2}
    assert sorted(loads) == ["gone", "x", "y"]  # each video decoded once
    assert all(p.labels == {"motion": "a", "structure": "a"} and p.prompt == "p" for p in pairs)
    assert pairs[0].video_a is pairs[1].video_a


def test_load_clip_pads_to_the_head_input(tmp_path: Path) -> None:
    index = make_batch(tmp_path, ["p"], seed=0)
    mp4 = next(tmp_path.glob("*.mp4"))
    clip = load_clip(mp4, frames=12, size=16)
    assert clip.shape == (3, 12, 16, 16) and clip.min() >= -1 and clip.max() <= 1
    assert torch.equal(clip[:, 8], clip[:, 11])  # 8 real frames, the last one repeated
    assert not torch.equal(clip[:, 0], clip[:, 7])  # the square moves
    assert index.is_file()


def test_reward_train_cli_learns_the_labellers_motion_preference(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], request: pytest.FixtureRequest) -> None:
    """Labellers prefer slow, smooth motion (speed 1) over fast motion (speed 5) on every task; the motion
    head trained from those rows alone ranks them the same way on held-out tasks."""
    prompts = [f"a square moves, take {i}" for i in range(8)]
    slow = make_batch(tmp_path / "gen" / "slow", prompts, seed=1, speed=1)
    fast = make_batch(tmp_path / "gen" / "fast", prompts, seed=2, speed=5)
    db = tmp_path / "l.duckdb"
    make_tasks([slow, fast], db, per_task=2)
    rng = random.Random(0)
    for t in preferences.read_tasks(db):
        good = next(v for v in t["video_ids"] if v.startswith("slow/"))
        bad = next(v for v in t["video_ids"] if v.startswith("fast/"))
        for who in ("alice", "bob"):
            scores = {good: _s(rng.choice([4, 5]), 4, 3, 3), bad: _s(rng.choice([1, 2]), 2, 3, 3)}
            preferences.insert_label(db, t, who, scores, good, bad, False)
    out = tmp_path / "heads" / "motion.pt"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convs: more threads only contend on a busy 2-core machine
    request.addfinalizer(lambda: torch.set_num_threads(threads))
    argv = ["reward-train", "--db", str(db), "--videos", str(tmp_path / "gen"), "--out", str(out),
            "--kind", "motion", "--steps", "40", "--lr", "3e-3", "--batch-size", "4", "--holdout", "3"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "motion head ['motion', 'structure']" in text and "saved" in text
    head = load_head(str(out), "motion")
    assert head.dimensions == ("motion", "structure")
    clips = {p: load_clip(p, 8, 32) for p in (tmp_path / "gen").rglob("*.mp4")}
    scores = {p: head(c[None]).detach()[0] for p, c in clips.items()}
    wins = [float(scores[s][d] > scores[f][d]) for s in clips if "slow" in s.parts
            for f in clips if "fast" in f.parts for d in range(2)]  # both dimensions (an untrained head: 0.5)
    assert sum(wins) / len(wins) > 0.9
    acc = [line for line in text.splitlines() if line.startswith("held-out accuracy")]
    assert acc and float(acc[0].split()[2]) > 0.9


def test_reward_train_without_usable_labels_fails_clearly(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "l.duckdb"
    preferences.insert_tasks(db, [{"task_id": "t", "prompt": "p", "video_ids": ["a", "b"],
                                   "video_paths": ["a.mp4", "b.mp4"]}])
    preferences.insert_label(db, {"task_id": "t", "prompt": "p", "video_ids": ["a", "b"]}, "al",
                             {"a": _s(5, 5, 5, 5), "b": _s(1, 1, 1, 1)}, "a", "b", False)
    argv = ["reward-train", "--db", str(db), "--videos", str(tmp_path), "--out", str(tmp_path / "h.pt")]
    assert main(argv) == 2
    assert "no labelled pair" in capsys.readouterr().err and not (tmp_path / "h.pt").exists()


def test_reward_train_text_head_on_alignment(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             request: pytest.FixtureRequest) -> None:
    """``--kind text`` trains the text-alignment head from the "alignment" scores (a smoke run: few steps)."""
    a = make_batch(tmp_path / "gen" / "a", ["p1", "p2"], seed=1)
    b = make_batch(tmp_path / "gen" / "b", ["p1", "p2"], seed=2)
    db = tmp_path / "l.duckdb"
    make_tasks([a, b], db, per_task=2)
    for t in preferences.read_tasks(db):
        x, y = t["video_ids"]
        preferences.insert_label(db, t, "al", {x: _s(3, 3, 3, 5), y: _s(3, 3, 3, 2)}, x, y, False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    request.addfinalizer(lambda: torch.set_num_threads(threads))
    out = tmp_path / "text.pt"
    assert main(["reward-train", "--db", str(db), "--videos", str(tmp_path / "gen"), "--out", str(out),
                 "--kind", "text", "--text-encoder", "byte", "--steps", "3"]) == 0
    text = capsys.readouterr().out
    assert "text head ['text_alignment'] <- rubric {'alignment': 'text_alignment'}: 2 training pairs" in text
    assert load_head(str(out), "text_alignment").dimensions == ("text_alignment",)
