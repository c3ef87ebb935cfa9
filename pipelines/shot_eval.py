"""Scoring detected transitions against planted ground truth (tests and ``vidloom bench split``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from pipelines.shot_detect import Transition


@dataclass
class ShotScore:
    """Matches of detected transitions to planted ones.

    A hard cut matches only at the exact frame. A gradual transition matches a
    detection that overlaps its span (a cut inside the span counts as found, with
    the wrong kind noted in ``kind_errors``).
    """

    true_cuts: int = 0
    found_cuts: int = 0
    true_gradual: int = 0
    found_gradual: int = 0
    false_positives: list[tuple[int, int, str]] = field(default_factory=list)
    missed: list[tuple[int, int]] = field(default_factory=list)
    kind_errors: int = 0

    @property
    def recall(self) -> float:
        total = self.true_cuts + self.true_gradual
        return (self.found_cuts + self.found_gradual) / total if total else 1.0

    @property
    def precision(self) -> float:
        tp = self.found_cuts + self.found_gradual
        return tp / (tp + len(self.false_positives)) if tp + len(self.false_positives) else 1.0

    def add(self, other: ShotScore) -> ShotScore:
        return ShotScore(
            self.true_cuts + other.true_cuts,
            self.found_cuts + other.found_cuts,
            self.true_gradual + other.true_gradual,
            self.found_gradual + other.found_gradual,
            self.false_positives + other.false_positives,
            self.missed + other.missed,
            self.kind_errors + other.kind_errors,
        )


def score_transitions(
    detected: list[Transition], cuts: list[int], gradual: list[tuple[int, int]]
) -> ShotScore:
    score = ShotScore(true_cuts=len(cuts), true_gradual=len(gradual))
    used: set[int] = set()
    for c in cuts:
        hit = next(
            (i for i, t in enumerate(detected) if i not in used and t.kind == "cut" and t.start == c), None
        )
        if hit is None:
            score.missed.append((c, c))
        else:
            used.add(hit)
            score.found_cuts += 1
    for a, b in gradual:
        hit = next(
            (
                i
                for i, t in enumerate(detected)
                if i not in used and max(t.start, a) <= min(max(t.end, t.start + 1), b)
            ),
            None,
        )
        if hit is None:
            score.missed.append((a, b))
        else:
            used.add(hit)
            score.found_gradual += 1
            score.kind_errors += detected[hit].kind == "cut"
    score.false_positives = [(t.start, t.end, t.kind) for i, t in enumerate(detected) if i not in used]
    return score


@dataclass
class MatchScore:
    """One-to-one matches of detected transitions to labelled ones, with a frame tolerance.

    A detection matches a labelled hard cut when it lies within ``tol`` frames of it (a
    detected gradual span matches when it overlaps ``[cut - tol, cut + tol]``), and a labelled
    gradual transition ``[first, last]`` when it overlaps ``[first - tol, last + tol]``. Each
    detection and each label is used at most once; the closest pairs are matched first.
    """

    tp: int = 0
    fp: int = 0
    fn: int = 0
    missed: list[tuple[int, int]] = field(default_factory=list)
    false_positives: list[tuple[int, int, str]] = field(default_factory=list)

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def add(self, other: MatchScore) -> MatchScore:
        return MatchScore(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn,
                          self.missed + other.missed, self.false_positives + other.false_positives)


def _span(t: Transition) -> tuple[int, int]:
    """The detection's frames, inclusive: a cut is its first new frame, a gradual [start, end)."""
    return (t.start, t.start) if t.kind == "cut" or t.end <= t.start else (t.start, t.end - 1)


def match_transitions(
    detected: list[Transition], cuts: list[int], gradual: list[tuple[int, int]], tol: int = 2
) -> MatchScore:
    """Score ``detected`` against labelled ``cuts`` (first frame of the new shot) and ``gradual``
    ``[first, last]`` spans (inclusive), one-to-one within ``tol`` frames (see ``MatchScore``)."""
    labels = [(c, c) for c in cuts] + [(a, b) for a, b in gradual]
    pairs = []
    for i, (a, b) in enumerate(labels):
        for j, t in enumerate(detected):
            s, e = _span(t)
            gap = max(0, a - e, s - b)  # 0 when they overlap
            if gap <= tol:
                centre = abs((s + e) / 2 - (a + b) / 2)
                pairs.append((gap, centre, i, j))
    used_l: set[int] = set()
    used_d: set[int] = set()
    for _, _, i, j in sorted(pairs):
        if i not in used_l and j not in used_d:
            used_l.add(i)
            used_d.add(j)
    return MatchScore(
        tp=len(used_l),
        fp=len(detected) - len(used_d),
        fn=len(labels) - len(used_l),
        missed=[lab for i, lab in enumerate(labels) if i not in used_l],
        false_positives=[(t.start, t.end, t.kind) for j, t in enumerate(detected) if j not in used_d],
    )
