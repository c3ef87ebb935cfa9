"""evaluation/winrate.py: outcomes, win rates, Wilson and cluster-bootstrap intervals on hand-made numbers."""

from __future__ import annotations

import math

import pytest

from evaluation.winrate import bootstrap_interval, outcome, pairwise, wilson_interval, win_rate


def test_outcome_counts_ties_half() -> None:
    assert outcome(0.7, 0.5) == 1.0 and outcome(0.5, 0.7) == 0.0
    assert outcome(0.5, 0.5) == 0.5 and outcome(0.5, 0.5 + 1e-12) == 0.5
    assert outcome(0.5, 0.6, tol=0.2) == 0.5


def test_wilson_interval_textbook_values() -> None:
    lo, hi = wilson_interval(8, 10)  # the classic 8 of 10: (0.4902, 0.9433)
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)
    lo, hi = wilson_interval(2.0, 4)  # p = 1/2, n = 4: centre 1/2, half-width 0.35
    assert (lo, hi) == (pytest.approx(0.15, abs=1e-4), pytest.approx(0.85, abs=1e-4))
    lo, hi = wilson_interval(10, 10)  # never past 1, and not degenerate at p = 1
    assert hi == 1.0 and lo == pytest.approx(0.7225, abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(5, 4)


def test_win_rate_counts_and_symmetry() -> None:
    # prompt p1: A wins, tie; p2: tie, A loses; p3: A wins twice
    pairs = [("p1", 3.0, 1.0), ("p1", 2.0, 2.0), ("p2", 1.0, 1.0), ("p2", 1.0, 2.0),
             ("p3", 5.0, 4.0), ("p3", 5.0, 0.0)]
    wr = win_rate("A", "B", pairs)
    assert (wr.n, wr.wins, wr.ties, wr.losses) == (6, 3, 2, 1)
    assert wr.win_rate == pytest.approx(4 / 6)  # (3 + 2/2) / 6
    assert (wr.ci_low, wr.ci_high) == pytest.approx(wilson_interval(4, 6))
    back = win_rate("B", "A", [(c, b, a) for c, a, b in pairs])
    assert back.win_rate + wr.win_rate == pytest.approx(1.0)
    assert (back.wins, back.ties, back.losses) == (1, 2, 3)
    empty = win_rate("A", "B", [])
    assert empty.n == 0 and math.isnan(empty.win_rate) and (empty.ci_low, empty.ci_high) == (0.0, 1.0)
    with pytest.raises(ValueError, match="unknown CI method"):
        win_rate("A", "B", pairs, method="exact")


def test_bootstrap_resamples_prompts_so_agreeing_seeds_widen_it() -> None:
    # 10 prompts x 2 seeds whose seeds always agree: 7 prompts won, 3 lost
    pairs = [(f"p{i}", 1.0 if i < 7 else 0.0, 0.5) for i in range(10) for _ in range(2)]
    wr = win_rate("A", "B", pairs, method="bootstrap")
    assert wr.win_rate == pytest.approx(0.7) and wr.ci_low < 0.7 < wr.ci_high
    wilson = win_rate("A", "B", pairs)
    # 10 independent prompts, not 20 independent comparisons: wider than Wilson's interval
    assert wr.ci_high - wr.ci_low > wilson.ci_high - wilson.ci_low
    assert win_rate("A", "B", pairs, method="bootstrap") == wr  # fixed generator seed: reproducible
    assert bootstrap_interval([1.0, 1.0], ["a", "b"]) == (1.0, 1.0)
    with pytest.raises(ValueError, match="same length"):
        bootstrap_interval([1.0], ["a", "b"])


def test_pairwise_every_ordered_pair_over_shared_units() -> None:
    scores = {"early": {("p", 0): 0.1, ("p", 1): 0.2, ("q", 0): 0.3},
              "late": {("p", 0): 0.5, ("p", 1): 0.1, ("q", 0): 0.9, ("q", 1): 0.9},  # ("q", 1) unshared
              "mid": {("p", 0): 0.3}}
    rows = {(w.a, w.b): w for w in pairwise(scores)}
    assert set(rows) == {(a, b) for a in scores for b in scores if a != b}
    assert rows["late", "early"].n == 3 and rows["late", "early"].wins == 2
    assert rows["late", "early"].win_rate == pytest.approx(2 / 3)
    assert rows["mid", "late"].n == 1 and rows["mid", "late"].win_rate == 0.0
