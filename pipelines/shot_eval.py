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
