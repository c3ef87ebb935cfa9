"""Pairwise win rates between checkpoints, with confidence intervals.

A comparison is one *unit* (a prompt x seed) scored for both checkpoints A and B on the same metric:
A wins when its score is higher by more than ``tol``, loses when lower by more than ``tol``, and the
two tie otherwise. The win rate of A over B is ``(wins + ties / 2) / n``: a tie counts half, so the
rates of A over B and of B over A sum to 1.

Confidence intervals (95 % by default):

- ``wilson``: the Wilson score interval of ``k = wins + ties / 2`` successes in ``n`` trials (a
  fractional k is fine in the formula). It treats units as independent; seeds of one prompt are not
  quite, so it is somewhat narrow when seeds agree.
- ``bootstrap``: the percentile interval of the win rate over ``n_boot`` resamples of whole prompts
  (a cluster bootstrap: every seed of a drawn prompt comes along), fixed generator seed, so the
  interval is reproducible. It accounts for the correlation between seeds of a prompt.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

Z95 = 1.959963984540054


@dataclass(frozen=True)
class WinRate:
    """A over B on one metric: counts, rate, interval and its method."""

    a: str
    b: str
    n: int
    wins: int
    ties: int
    losses: int
    win_rate: float
    ci_low: float
    ci_high: float
    ci_method: str

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def outcome(a: float, b: float, tol: float = 1e-9) -> float:
    """1 if a > b + tol, 0 if a < b - tol, else 0.5 (a tie)."""
    if a > b + tol:
        return 1.0
    if a < b - tol:
        return 0.0
    return 0.5


def wilson_interval(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion; (0, 1) when n = 0."""
    if n <= 0:
        return 0.0, 1.0
    if not 0 <= successes <= n:
        raise ValueError(f"successes must lie in [0, n={n}], got {successes}")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo, hi = max(0.0, centre - half), min(1.0, centre + half)
    # exact at the ends (the formula gives 1 - 1e-16 for p = 1), so the interval always holds p
    return (0.0 if successes == 0 else min(lo, p)), (1.0 if successes == n else max(hi, p))


def bootstrap_interval(outcomes: Sequence[float], clusters: Sequence[str], n_boot: int = 2000,
                       level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile interval of the mean outcome, resampling whole clusters (prompts) with replacement."""
    if not outcomes:
        return 0.0, 1.0
    if len(outcomes) != len(clusters):
        raise ValueError("outcomes and clusters must have the same length")
    names = sorted(set(clusters))
    index = {c: i for i, c in enumerate(names)}
    sums, counts = np.zeros(len(names)), np.zeros(len(names))
    for o, c in zip(outcomes, clusters, strict=True):
        sums[index[c]] += o
        counts[index[c]] += 1
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(names), size=(n_boot, len(names)))
    rates = sums[draws].sum(1) / counts[draws].sum(1)
    lo, hi = np.quantile(rates, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def win_rate(a: str, b: str, pairs: Sequence[tuple[str, float, float]], method: str = "wilson",
             tol: float = 1e-9, n_boot: int = 2000, seed: int = 0) -> WinRate:
    """Win rate of A over B from ``pairs`` of (cluster = prompt id, score of A, score of B).

    Raises:
        ValueError: unknown ``method`` (wilson | bootstrap).
    """
    results = [outcome(sa, sb, tol) for _, sa, sb in pairs]
    n = len(results)
    wins, losses = sum(r == 1.0 for r in results), sum(r == 0.0 for r in results)
    ties = n - wins - losses
    rate = (wins + ties / 2) / n if n else float("nan")
    if method == "wilson":
        lo, hi = wilson_interval(wins + ties / 2, n)
    elif method == "bootstrap":
        lo, hi = bootstrap_interval(results, [c for c, _, _ in pairs], n_boot, seed=seed)
    else:
        raise ValueError(f"unknown CI method {method!r} (wilson | bootstrap)")
    return WinRate(a, b, n, wins, ties, losses, rate, lo, hi, method)


def pairwise(scores: dict[str, dict[tuple[str, int], float]], method: str = "wilson",
             tol: float = 1e-9) -> list[WinRate]:
    """Win rates of every ordered pair of checkpoints over the units both have.

    Args:
        scores: checkpoint label -> {(prompt id, seed): score}.
    """
    labels = list(scores)
    out = []
    for a in labels:
        for b in labels:
            if a == b:
                continue
            units = sorted(set(scores[a]) & set(scores[b]))
            pairs = [(u[0], scores[a][u], scores[b][u]) for u in units]
            out.append(win_rate(a, b, pairs, method, tol))
    return out
