"""Inter-annotator agreement: Krippendorff's alpha, and best/worst consistency of preference labels.

**Krippendorff's alpha** (Krippendorff, *Computing Krippendorff's Alpha-Reliability*, 2011) from the
coincidence matrix. Each unit (here: one video of one task, on one rubric dimension) has the values
its coders (labellers) gave; units with fewer than two values are not pairable and are dropped. With
``m_u`` values in unit u, every ordered pair of values (c, k) from different coders adds
``1 / (m_u - 1)`` to ``o[c, k]``; ``n_c = sum_k o[c, k]`` and ``n = sum_c n_c``. Then

    alpha = 1 - D_o / D_e,  D_o = sum_{c,k} o[c,k] d(c,k) / n,  D_e = sum_{c,k} n_c n_k d(c,k) / (n (n - 1))

with the squared difference ``d`` of the level of measurement:

- nominal: 0 if c = k else 1;
- ordinal: ``(sum_{g between c and k} n_g - (n_c + n_k) / 2) ** 2`` (ranks: distances count the values
  that lie between, so the 1..5 scale need not be equally spaced);
- interval: ``(c - k) ** 2``.

alpha = 1 is perfect agreement, 0 is what chance gives, < 0 is systematic disagreement; NaN when there
is no pairable unit or no variation at all (D_e = 0).

**Best/worst consistency** (``pick_consistency``): across labellers, the fraction of labeller pairs
that picked the same best (worst) video of a task, next to the chance rate 1 / (videos in the task);
within a label, the fraction of labels whose best video has the highest mean rubric score (ties
count) and whose worst has the lowest.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from itertools import combinations
from typing import Any, Literal

Level = Literal["nominal", "ordinal", "interval"]


def _delta(values: list[float], n_c: dict[float, float], level: Level) -> dict[tuple[float, float], float]:
    out: dict[tuple[float, float], float] = {}
    for i, c in enumerate(values):
        for k in values[i:]:
            if level == "nominal":
                d = 0.0 if c == k else 1.0
            elif level == "interval":
                d = (c - k) ** 2
            elif level == "ordinal":
                between = sum(n_c[g] for g in values if c <= g <= k)
                d = (between - (n_c[c] + n_c[k]) / 2.0) ** 2
            else:
                raise ValueError(f"level must be nominal, ordinal or interval, got {level!r}")
            out[c, k] = out[k, c] = d
    return out


def krippendorff_alpha(units: Sequence[Sequence[float | None]] | Mapping[Hashable, Sequence[float | None]],
                       level: Level = "ordinal") -> float:
    """Krippendorff's alpha of ``units``: per unit, the values its coders gave (None: no value).

    Accepts a list of units or a mapping unit -> values (a reliability matrix transposed: one row per
    unit, one entry per coder, or just the values given).
    """
    rows = list(units.values()) if isinstance(units, Mapping) else list(units)
    pairable = [[float(v) for v in r if v is not None and not (isinstance(v, float) and math.isnan(v))]
                for r in rows]
    pairable = [r for r in pairable if len(r) >= 2]
    if not pairable:
        return float("nan")
    o: dict[tuple[float, float], float] = {}
    for r in pairable:
        w = 1.0 / (len(r) - 1)
        for i, c in enumerate(r):
            for j, k in enumerate(r):
                if i != j:
                    o[c, k] = o.get((c, k), 0.0) + w
    values = sorted({c for c, _ in o})
    n_c = {c: sum(o.get((c, k), 0.0) for k in values) for c in values}
    n = sum(n_c.values())
    delta = _delta(values, n_c, level)
    d_o = sum(o.get((c, k), 0.0) * delta[c, k] for c in values for k in values) / n
    d_e = sum(n_c[c] * n_c[k] * delta[c, k] for c in values for k in values) / (n * (n - 1))
    if d_e == 0:
        return float("nan")
    return 1.0 - d_o / d_e


def rubric_units(labels: Sequence[Mapping[str, Any]], dimension: str) -> dict[tuple[str, str], list[float]]:
    """(task id, video id) -> the scores the labellers gave on ``dimension`` (skipped labels ignored)."""
    units: dict[tuple[str, str], list[float]] = {}
    for lab in labels:
        if lab.get("skipped") or not lab.get("scores"):
            continue
        for vid, dims in lab["scores"].items():
            v = dims.get(dimension) if isinstance(dims, Mapping) else None
            if isinstance(v, int | float) and not isinstance(v, bool):
                units.setdefault((lab["task_id"], vid), []).append(float(v))
    return units


def _mean_scores(lab: Mapping[str, Any]) -> dict[str, float]:
    return {vid: sum(d.values()) / len(d) for vid, d in lab["scores"].items() if d}


def pick_consistency(labels: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Best/worst agreement across labellers and with each label's own scores (see the module docstring).

    Returns {"best_agree", "worst_agree", "chance" (mean 1/k over the compared pairs), "pairs"
    (labeller pairs compared), "best_top", "worst_bottom" (within-label rates), "labels"}; rates are
    NaN when there is nothing to compare.
    """
    by_task: dict[str, list[Mapping[str, Any]]] = {}
    done = [lab for lab in labels if not lab.get("skipped") and lab.get("scores") and lab.get("best")]
    for lab in done:
        by_task.setdefault(lab["task_id"], []).append(lab)
    same_best = same_worst = n_pairs = 0
    chance = 0.0
    for labs in by_task.values():
        for a, b in combinations(labs, 2):
            n_pairs += 1
            same_best += a["best"] == b["best"]
            same_worst += a["worst"] == b["worst"]
            chance += 1.0 / max(len(a["scores"]), 1)
    top = bottom = 0
    for lab in done:
        means = _mean_scores(lab)
        top += means.get(lab["best"], -1) >= max(means.values())
        bottom += means.get(lab["worst"], 99) <= min(means.values())
    nan = float("nan")
    return {"best_agree": same_best / n_pairs if n_pairs else nan,
            "worst_agree": same_worst / n_pairs if n_pairs else nan,
            "chance": chance / n_pairs if n_pairs else nan, "pairs": float(n_pairs),
            "best_top": top / len(done) if done else nan, "worst_bottom": bottom / len(done) if done else nan,
            "labels": float(len(done))}
