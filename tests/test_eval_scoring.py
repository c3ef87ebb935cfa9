"""evaluation/scoring.py on hand-made videos, and the scores `vidloom eval` adds with --reference and
--reward-head (real synthetic shards, a saved head file)."""

from __future__ import annotations

import math
from pathlib import Path

import duckdb
import pytest
import torch

from evaluation.scoring import DEFAULT_WEIGHTS, Scorer, composite, cross_shot_consistency, nearest_psnr
from models.rewards.learned import MotionHead, TextAlignmentConfig, TextAlignmentHead, save_head
from samplegen.synthetic_shards import write_test_shards
from tests.test_eval_harness import _ckpt
from vidloom.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


def _flat(value: float, t: int = 5) -> torch.Tensor:
    return torch.full((3, t, 16, 16), value)


def test_cross_shot_consistency_compares_colour_histograms() -> None:
    assert cross_shot_consistency([_flat(0.2), _flat(0.2)]) == pytest.approx(1.0)
    assert cross_shot_consistency([_flat(-1.0), _flat(1.0)]) == pytest.approx(0.0)
    half = torch.cat([_flat(-1.0)[..., :8], _flat(1.0)[..., 8:]], dim=-1)  # half black, half white
    assert cross_shot_consistency([_flat(-1.0), half]) == pytest.approx(0.5)
    # three shots: the mean over the two consecutive pairs
    assert cross_shot_consistency([_flat(-1.0), _flat(-1.0), _flat(1.0)]) == pytest.approx(0.5)


def test_nearest_psnr_and_composite() -> None:
    refs = [_flat(0.0), _flat(0.5), torch.zeros(3, 9, 16, 16)]  # the last has other frames
    assert nearest_psnr(_flat(0.4), refs) == pytest.approx(10 * math.log10(4 / 0.01))  # nearest: 0.5
    assert nearest_psnr(_flat(0.5), refs) == 100.0
    assert nearest_psnr(torch.zeros(3, 2, 16, 16), refs) is None
    m = {"motion": 0.2, "stability": 1.0, "text_alignment": 7.0}
    assert composite(m, DEFAULT_WEIGHTS) == pytest.approx(0.6)  # text_alignment has no default weight
    assert composite(m, {**DEFAULT_WEIGHTS, "text_alignment": 1.0, "motion": 0.0}) == pytest.approx(4.0)
    assert math.isnan(composite({}, DEFAULT_WEIGHTS))


def test_scorer_per_shot_and_errors(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    a, b = (torch.rand(3, 5, 32, 32, generator=g) * 2 - 1 for _ in range(2))
    scorer = Scorer()
    one, two = scorer.score([a], ["x"]), scorer.score([a, b], ["x", "y"])
    assert set(one) == {"motion", "stability", "aesthetic_proxy", "composite"}
    assert "cross_shot_consistency" in two
    assert two["motion"] == pytest.approx((one["motion"] + scorer.score([b], ["y"])["motion"]) / 2)
    with pytest.raises(ValueError, match="one prompt per shot"):
        scorer.score([a, b], ["x"])
    head = tmp_path / "motion.pt"
    save_head(MotionHead(), str(head))
    with pytest.raises(ValueError, match="two motion_learned heads"):
        Scorer([str(head), str(head)])
    with pytest.raises(FileNotFoundError, match="reward head weights"):
        Scorer([str(tmp_path / "none.pt")])


def test_eval_with_reference_shards_and_reward_heads(tmp_path: Path) -> None:
    ckpt = _ckpt(tmp_path / "run", 4, 0)
    (tmp_path / "data").mkdir()
    shards = write_test_shards(tmp_path / "data", [("64x32", 30)] * 2)
    text_head, motion_head = tmp_path / "text.pt", tmp_path / "motion.pt"
    save_head(TextAlignmentHead(TextAlignmentConfig(text_encoder="byte")), str(text_head))
    save_head(MotionHead(), str(motion_head))
    out = tmp_path / "eval"
    assert main(["eval", "--ckpt", str(ckpt), "--suite", "tiny", "--out", str(out), "--seeds", "0",
                 "--steps", "2", "--reference", str(shards), "--reward-head", str(text_head),
                 "--reward-head", str(motion_head), "--weights", "text_alignment=0.5"]) == 0
    with duckdb.connect(str(out / "eval.duckdb"), read_only=True) as con:
        rows = con.execute("SELECT prompt_id, metric, value FROM eval_scores").fetchall()
        (settings,) = con.execute("SELECT settings FROM eval_runs").fetchone()
    scores: dict[str, dict[str, float]] = {}
    for pid, metric, value in rows:
        scores.setdefault(pid, {})[metric] = value
    assert len(scores) == 5
    for m in scores.values():
        assert {"data_psnr_db", "data_fidelity", "text_alignment", "motion_learned"} <= set(m)
        assert m["data_fidelity"] == pytest.approx(min(1.0, m["data_psnr_db"] / 40))
        weights = {**DEFAULT_WEIGHTS, "text_alignment": 0.5}
        assert m["composite"] == pytest.approx(composite(m, weights))
    assert '"text_alignment": 0.5' in settings
