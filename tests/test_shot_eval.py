"""Matching detected transitions to labels: +-2 frames, one-to-one, gradual windows."""

from __future__ import annotations

from pipelines.shot_detect import Transition
from pipelines.shot_eval import match_transitions


def cut(f: int) -> Transition:
    return Transition(f, f, "cut", 1.0)


def test_cut_matches_within_two_frames_and_not_three() -> None:
    assert match_transitions([cut(102)], [100], []).tp == 1
    s = match_transitions([cut(103)], [100], [])
    assert (s.tp, s.fp, s.fn) == (0, 1, 1)
    assert s.missed == [(100, 100)] and s.false_positives == [(103, 103, "cut")]


def test_matching_is_one_to_one_and_closest_first() -> None:
    # two detections near one cut: one is a true positive, the other a false positive
    s = match_transitions([cut(99), cut(100)], [100], [])
    assert (s.tp, s.fp, s.fn) == (1, 1, 0) and s.false_positives == [(99, 99, "cut")]
    # one detection between two labels matches only one of them
    s = match_transitions([cut(101)], [100, 102], [])
    assert (s.tp, s.fp, s.fn) == (1, 0, 1)
    # closest-first lets both labels be matched when both detections are there
    s = match_transitions([cut(101), cut(103)], [100, 102], [])
    assert (s.tp, s.fp, s.fn) == (2, 0, 0)


def test_gradual_window_with_tolerance() -> None:
    labels = [(50, 70)]
    assert match_transitions([cut(48)], [], labels).tp == 1  # a cut anywhere in [48, 72]
    assert match_transitions([cut(72)], [], labels).tp == 1
    assert match_transitions([cut(73)], [], labels).tp == 0
    assert match_transitions([Transition(60, 90, "dissolve", 1.0)], [], labels).tp == 1
    # a detected span [start, end) ends at end - 1: [40, 49) reaches 48, 2 from 50; [40, 48) is 3 away
    assert match_transitions([Transition(40, 49, "fade", 1.0)], [], labels).tp == 1
    assert match_transitions([Transition(40, 48, "fade", 1.0)], [], labels).tp == 0


def test_precision_recall_f1() -> None:
    s = match_transitions([cut(10), cut(20), cut(40)], [10, 20, 30, 50], [])
    assert (s.tp, s.fp, s.fn) == (2, 1, 2)
    assert abs(s.precision - 2 / 3) < 1e-9 and abs(s.recall - 0.5) < 1e-9
    assert abs(s.f1 - 2 * (2 / 3) * 0.5 / (2 / 3 + 0.5)) < 1e-9
    empty = match_transitions([], [], [])
    assert (empty.precision, empty.recall, empty.f1) == (1.0, 1.0, 1.0)
    assert match_transitions([cut(5)], [], []).f1 == 0.0
