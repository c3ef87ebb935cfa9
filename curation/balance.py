"""Multi-view balance: pick a subset of clips whose mix matches targets on several views at once.

Seedance 1.0 balances its training data over several views simultaneously (content, duration,
resolution, frame rate, language) instead of one after another, which would undo the earlier
views. Here a view maps a clip row to a class (:func:`view_classes`), a target is a ratio per
class, and :func:`balance` draws a subset in three steps:

1. **Size.** With ``n=None`` the size is the largest n at which every view's targets can be met
   at once: start at the marginal bound ``min over (view, class) of available / target share``
   and bisect down until calibration (step 2) meets the targets within ``FEASIBLE_TOL`` of what
   it meets at a tiny size. (A small pool may lack some class combinations, so no size meets every
   view exactly; the size is then the largest one that does no worse than that.)
2. **Calibration (capped raking).** Iterative proportional fitting of per-clip inclusion
   probabilities pi_i in [0, 1] (sum n) until each class's expected count is n x target, over
   every view in turn; probabilities are capped at 1 (a clip is drawn at most once).
3. **Balanced sampling (cube method, Deville & Tille 2004).** The flight phase rounds pi to 0/1
   while keeping every class count exactly at its expectation; the landing phase drops the
   constraints one at a time for the last few undecided clips. Weighted sampling alone would
   leave each class count off by its binomial noise (about +-0.05 in share at n=100); the cube
   method leaves at most a few clips off over all views together.

Rows are sorted by ``clip_id`` first and all randomness comes from one seeded numpy Generator,
so the result is a pure function of (rows, targets, n, seed). A class with a target but no clips
cannot be met: it is left out of the calibration, listed in ``unreachable``, and shows in
``distance`` (total-variation distance between achieved and target shares).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Motion (median optical flow, frame widths per second): below STATIC_BELOW the picture takes over
# 100 s to move one frame width (a locked-off shot); from DYNAMIC_FROM it moves a width in 20 s or
# less (fast action, pans).
MOTION_STATIC_BELOW = 0.01
MOTION_DYNAMIC_FROM = 0.05
DURATION_SHORT_BELOW_S = 4.0
DURATION_LONG_FROM_S = 8.0
SHORT_SIDE_HD_FROM = 480
SHORT_SIDE_FHD_FROM = 720
FPS_LOW_UP_TO = 24.5  # film and PAL rates, 23.976 / 24 / 25 is standard
FPS_STANDARD_UP_TO = 30.5

UNKNOWN = "unknown"
VIEW_CLASSES: dict[str, tuple[str, ...]] = {
    "content": ("static", "moderate", "dynamic"),
    "duration": ("short", "medium", "long"),
    "resolution": ("sd", "hd", "fhd"),
    "fps": ("low", "standard", "high"),
    "language": ("en", "zh", "en+zh", "none"),
}
VIEWS: tuple[str, ...] = tuple(VIEW_CLASSES)

DEFAULT_TARGETS: dict[str, dict[str, float]] = {
    "content": {"static": 4, "moderate": 3, "dynamic": 3},
    "duration": {"short": 3, "medium": 4, "long": 3},
    "resolution": {"sd": 2, "hd": 5, "fhd": 3},
    "fps": {"low": 4, "standard": 4, "high": 2},
}

FEASIBLE_TOL = 0.005  # max |expected share - target share| for a size to count as reachable
_RAKE_ITERS = 300
_RAKE_TOL = 1e-8  # largest change of a cell's expected count, relative to n, to stop at
_EPS = 1e-9


def _bin(value: float | None, edges: Sequence[float], names: Sequence[str], right: bool = False) -> str:
    """The class of ``value`` among ``names`` split at ``edges`` (``right``: edges belong below)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return UNKNOWN
    for edge, name in zip(edges, names, strict=False):
        if value < edge or (right and value == edge):
            return name
    return names[-1]


def view_classes(row: Mapping[str, Any]) -> dict[str, str]:
    """The class of a clip row (catalog columns, plus ``langs``: caption languages) in every view."""
    start, end = row.get("start_s"), row.get("end_s")
    width, height = row.get("width"), row.get("height")
    langs = set(row.get("langs") or ())
    language = "+".join(lang for lang in ("en", "zh") if lang in langs) or "none"
    return {
        "content": _bin(
            row.get("motion"), (MOTION_STATIC_BELOW, MOTION_DYNAMIC_FROM), VIEW_CLASSES["content"]
        ),
        "duration": _bin(
            None if start is None or end is None else end - start,
            (DURATION_SHORT_BELOW_S, DURATION_LONG_FROM_S), VIEW_CLASSES["duration"],
        ),
        "resolution": _bin(
            None if not width or not height else min(width, height),
            (SHORT_SIDE_HD_FROM, SHORT_SIDE_FHD_FROM), VIEW_CLASSES["resolution"],
        ),
        "fps": _bin(row.get("fps"), (FPS_LOW_UP_TO, FPS_STANDARD_UP_TO), VIEW_CLASSES["fps"], right=True),
        "language": language,
    }


Labeler = Callable[[Mapping[str, Any]], dict[str, str]]


def _shares(labels: Iterable[str], classes: Sequence[str]) -> dict[str, float]:
    counts: dict[str, int] = {c: 0 for c in classes}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    total = sum(counts.values())
    return {c: (k / total if total else 0.0) for c, k in counts.items()}


def proportions(
    rows: Sequence[Mapping[str, Any]], views: Iterable[str] | None = None,
    label: Labeler = view_classes, classes: Mapping[str, Sequence[str]] = VIEW_CLASSES,
) -> dict[str, dict[str, float]]:
    """Share of ``rows`` in each class of each view (every class listed, 'unknown' when present).

    ``label`` maps a row to its class per view and ``classes`` lists each view's classes (the
    report's views by default; pipelines/balance_export.py has the export's)."""
    labels = [label(r) for r in rows]
    return {v: _shares((c[v] for c in labels), classes[v]) for v in (views or classes)}


def normalise(targets: Mapping[str, Mapping[str, float]],
              classes: Mapping[str, Sequence[str]] = VIEW_CLASSES) -> dict[str, dict[str, float]]:
    """Ratios -> shares summing to 1 per view; views whose ratios are all zero are dropped."""
    out: dict[str, dict[str, float]] = {}
    for view, ratios in targets.items():
        if view not in classes:
            raise ValueError(f"unknown view {view!r}; views are {', '.join(classes)}")
        total = float(sum(ratios.values()))
        if any(r < 0 for r in ratios.values()):
            raise ValueError(f"negative target ratio in view {view!r}")
        if total > 0:
            out[view] = {c: r / total for c, r in ratios.items()}
    return out


def tv_distance(a: Mapping[str, float], b: Mapping[str, float]) -> float:
    """Total-variation distance between two class -> share maps (0 = equal, 1 = disjoint)."""
    return 0.5 * sum(abs(a.get(k, 0.0) - b.get(k, 0.0)) for k in set(a) | set(b))


@dataclass(slots=True)
class BalanceResult:
    """A balanced subset and how close it came.

    Attributes:
        selected: chosen clip_ids, sorted.
        achieved: view -> class -> share among ``selected`` (every view, targeted or not).
        targets: the normalised targets (shares summing to 1 per view).
        distance: view -> total-variation distance between achieved and target shares.
        n_pool: rows offered.
        available: view -> class -> number of rows offered in that class.
        unreachable: (view, class) pairs with a target share but no clips.
    """

    selected: list[str]
    achieved: dict[str, dict[str, float]]
    targets: dict[str, dict[str, float]]
    distance: dict[str, float]
    n_pool: int
    available: dict[str, dict[str, int]] = field(default_factory=dict)
    unreachable: list[tuple[str, str]] = field(default_factory=list)


def _rake(
    groups: list[np.ndarray], shares: list[np.ndarray], sizes: np.ndarray, n: float
) -> tuple[np.ndarray, float]:
    """Capped raking over cells (clips with the same class in every view share one probability).

    Args:
        groups: per view, int [K] class index of each cell.
        shares: per view, float [C] target share of each class (classes with clips only).
        sizes: float [K] clips in each cell.
        n: wanted subset size.
    Returns:
        (pi float [K] in [0, 1] with sum(sizes * pi) = n and per-view class sums near
        n x share, the largest |class sum - n x share| / n left over).
    """
    pi = np.full(len(sizes), n / sizes.sum() if len(sizes) else 0.0)
    for _ in range(_RAKE_ITERS):
        before = pi.copy()
        for g, share in zip(groups, shares, strict=True):
            capped = pi >= 1.0
            for _ in range(len(sizes) + 1):  # each pass caps at least one more cell, or stops
                free = np.bincount(g, np.where(capped, 0.0, sizes * pi), len(share))
                fixed = np.bincount(g, np.where(capped, sizes, 0.0), len(share))
                scale = np.maximum(n * share - fixed, 0.0) / np.maximum(free, 1e-300)
                new = np.where(capped, 1.0, pi * scale[g])
                over = (new > 1.0) & ~capped
                if not over.any():
                    break
                capped |= over
            pi = np.minimum(new, 1.0)
        if (np.abs(pi - before) * sizes).max(initial=0.0) <= _RAKE_TOL * n:
            break
    miss = max((np.abs(np.bincount(g, sizes * pi, len(s)) - n * s).max()
                for g, s in zip(groups, shares, strict=True)), default=0.0)
    return pi, float(miss / n) if n else 0.0


def _cube(pi: np.ndarray, a: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Balanced sampling (cube method): bool [N] sample with E[s] = pi and a.T @ s = a.T @ pi.

    The flight phase moves ``pi`` inside the null space of the constraints ``a`` (float [N, p],
    columns in order of importance) on p + 1 undecided clips at a time until each is 0 or 1; the
    landing phase drops the last constraint while clips stay undecided.
    """
    pi = pi.copy()
    undecided = iter([int(i) for i in rng.permutation(len(pi)) if _EPS < pi[i] < 1 - _EPS])
    work: list[int] = []
    for p in range(a.shape[1], -1, -1):
        cols = a[:, :p]
        while True:
            work += itertools.islice(undecided, p + 1 - len(work))
            if len(work) <= p:
                break
            idx = np.array(work)
            u = np.linalg.svd(cols[idx].T)[2][-1] if p else np.ones(1)  # a null vector
            x = pi[idx]
            pos, neg = u > _EPS, u < -_EPS
            safe = np.where(pos | neg, np.abs(u), 1.0)
            # Largest steps along +u and -u that keep every clip in [0, 1].
            lam1 = np.min(np.where(pos, (1 - x) / safe, np.where(neg, x / safe, np.inf)))
            lam2 = np.min(np.where(pos, x / safe, np.where(neg, (1 - x) / safe, np.inf)))
            x = x + (lam1 * u if rng.random() * (lam1 + lam2) < lam2 else -lam2 * u)
            pi[idx] = np.where(x < _EPS, 0.0, np.where(x > 1 - _EPS, 1.0, x))
            work = [i for i in work if 0.0 < pi[i] < 1.0]
    return pi > 0.5


@dataclass(slots=True)
class _Pool:
    """The rows in clip_id order, their labels, and the calibration's cells and constraints."""

    ordered: list[Mapping[str, Any]]
    labels: list[dict[str, str]]
    shares: dict[str, dict[str, float]]
    available: dict[str, dict[str, int]]
    eligible: list[int]
    unreachable: list[tuple[str, str]]
    groups: list[np.ndarray]
    group_shares: list[np.ndarray]
    a: np.ndarray
    cell_of: np.ndarray
    sizes: np.ndarray
    cell_groups: list[np.ndarray]


def _prepare(rows: Sequence[Mapping[str, Any]], targets: Mapping[str, Mapping[str, float]],
             label: Labeler, classes: Mapping[str, Sequence[str]]) -> _Pool:
    shares = normalise(targets, classes)
    ordered = sorted(rows, key=lambda r: str(r["clip_id"]))
    labels = [label(r) for r in ordered]
    available = {v: {c: 0 for c in classes[v]} for v in classes}
    for lab in labels:
        for v, c in lab.items():
            available[v][c] = available[v].get(c, 0) + 1
    # Eligible clips: in a class with a target share in every targeted view.
    eligible = [i for i, lab in enumerate(labels) if all(shares[v].get(lab[v], 0) > 0 for v in shares)]
    unreachable: list[tuple[str, str]] = []
    groups: list[np.ndarray] = []  # per targeted view: class index of each eligible clip
    group_shares: list[np.ndarray] = []  # per targeted view: share of each reachable class
    columns = [np.ones(len(eligible))]  # balancing constraints: size, then class counts
    for v, t in shares.items():
        present = {labels[i][v] for i in eligible}
        unreachable += [(v, c) for c in t if t[c] > 0 and c not in present]
        reachable = [c for c in t if t[c] > 0 and c in present]  # the calibration's classes
        total = sum(t[c] for c in reachable)
        index = {c: k for k, c in enumerate(reachable)}
        g = np.array([index[labels[i][v]] for i in eligible], dtype=np.int64)
        groups.append(g)
        group_shares.append(np.array([t[c] / total for c in reachable]))
        columns += [(g == k).astype(float) for k in range(len(reachable) - 1)]  # the last is implied
    a = np.stack(columns, axis=1)
    # Cells: distinct class combinations; raking works on these (a few dozen), not on clips.
    cells, cell_of = np.unique(np.stack(groups, axis=1) if groups else np.zeros((len(eligible), 0), int),
                               axis=0, return_inverse=True)
    cell_of = cell_of.reshape(-1)
    sizes = np.bincount(cell_of, minlength=len(cells)).astype(float)
    cell_groups = [cells[:, k] for k in range(len(groups))]
    return _Pool(ordered, labels, shares, available, eligible, unreachable, groups, group_shares, a,
                 cell_of, sizes, cell_groups)


def balance(
    rows: Sequence[Mapping[str, Any]],
    targets: Mapping[str, Mapping[str, float]] = DEFAULT_TARGETS,
    n: int | None = None,
    seed: int = 0,
    label: Labeler = view_classes,
    classes: Mapping[str, Sequence[str]] = VIEW_CLASSES,
) -> BalanceResult:
    """Choose clips matching ``targets`` on all targeted views at once (see the module docstring).

    Args:
        rows: clip rows with ``clip_id`` and the columns ``label`` reads.
        targets: view -> class -> ratio (normalised per view). Clips in a class without a target
            share (including 'unknown') are not eligible when their view is targeted.
        n: subset size; None picks the largest reachable one. Capped at the eligible count.
        seed: seed of the numpy Generator behind every random choice.
        label: row -> view -> class (:func:`view_classes` by default).
        classes: view -> its classes, in display order (:data:`VIEW_CLASSES` by default).
    """
    p = _prepare(rows, targets, label, classes)
    eligible, groups, group_shares = p.eligible, p.groups, p.group_shares
    sizes, cell_groups = p.sizes, p.cell_groups
    if n is None:
        counts = [np.bincount(g, minlength=len(s)) for g, s in zip(groups, group_shares, strict=True)]
        bound = min([float(len(eligible))] + [float(m / s) for c, sh in zip(counts, group_shares, strict=True)
                                               for m, s in zip(c, sh, strict=True)])
        lo, hi = 0, int(math.floor(bound + 1e-9))
        # Without capping, raking is scale-free: its miss at a tiny size is the pool's structural one.
        floor_miss = _rake(cell_groups, group_shares, sizes, 1e-6)[1] if hi else 0.0
        while hi > lo:  # bisect for the largest size whose calibration meets the targets
            mid = (lo + hi + 1) // 2
            if _rake(cell_groups, group_shares, sizes, mid)[1] <= floor_miss + FEASIBLE_TOL:
                lo = mid
            else:
                hi = mid - 1
        n = lo
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    n = min(n, len(eligible))
    rng = np.random.default_rng(seed)
    pi = _rake(cell_groups, group_shares, sizes, n)[0][p.cell_of] if n else np.zeros(len(eligible))
    picked = np.flatnonzero(_cube(pi, p.a, rng))
    selected = sorted(str(p.ordered[eligible[k]]["clip_id"]) for k in picked)

    chosen = sorted(eligible[k] for k in picked)
    achieved = {v: _shares((p.labels[i][v] for i in chosen), classes[v]) for v in classes}
    distance = {v: tv_distance(achieved[v], t) if chosen else 1.0 for v, t in p.shares.items()}
    return BalanceResult(selected, achieved, p.shares, distance, len(rows), p.available, p.unreachable)


def balance_weights(
    rows: Sequence[Mapping[str, Any]],
    targets: Mapping[str, Mapping[str, float]],
    label: Labeler = view_classes,
    classes: Mapping[str, Sequence[str]] = VIEW_CLASSES,
) -> tuple[dict[str, float], BalanceResult]:
    """Per-clip sampling weights whose weighted class shares match ``targets`` on every view.

    Raking without the cap of 1 (weights, not inclusion probabilities): the same calibration as
    :func:`balance` at a vanishing size, scaled so the eligible clips' weights average 1. Clips
    that are not eligible get weight 0. The result's ``achieved`` / ``distance`` are the weighted
    (expected) shares; ``selected`` lists the clips with a positive weight.
    """
    p = _prepare(rows, targets, label, classes)
    w = np.zeros(len(p.eligible))
    if p.eligible:
        pi = _rake(p.cell_groups, p.group_shares, p.sizes, 1e-6)[0][p.cell_of]
        w = pi * (len(pi) / pi.sum()) if pi.sum() > 0 else w
    weights = {str(r["clip_id"]): 0.0 for r in p.ordered}
    for k, i in enumerate(p.eligible):
        weights[str(p.ordered[i]["clip_id"])] = float(w[k])
    total = float(w.sum())
    achieved: dict[str, dict[str, float]] = {}
    for v in classes:
        acc = {c: 0.0 for c in classes[v]}
        for k, i in enumerate(p.eligible):
            acc[p.labels[i][v]] = acc.get(p.labels[i][v], 0.0) + (w[k] / total if total else 0.0)
        achieved[v] = acc
    distance = {v: tv_distance(achieved[v], t) if total else 1.0 for v, t in p.shares.items()}
    selected = sorted(c for c, x in weights.items() if x > 0)
    return weights, BalanceResult(selected, achieved, p.shares, distance, len(rows), p.available,
                                  p.unreachable)


def report_rows(result: BalanceResult) -> list[tuple[str, str, float | None, float, int]]:
    """(view, class, target share or None, achieved share, available clips), for printing."""
    out: list[tuple[str, str, float | None, float, int]] = []
    for view in VIEWS:
        target = result.targets.get(view)
        classes = list(result.achieved.get(view, {}))
        classes += [c for c in (target or {}) if c not in classes]
        for c in classes:
            share = None if target is None else target.get(c, 0.0)
            out.append((view, c, share, result.achieved.get(view, {}).get(c, 0.0),
                        result.available.get(view, {}).get(c, 0)))
    return out
