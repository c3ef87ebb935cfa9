"""Multi-view balance: the subset meets every view's targets at once, deterministically."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from curation.balance import (
    DEFAULT_TARGETS,
    balance,
    normalise,
    proportions,
    report_rows,
    tv_distance,
    view_classes,
)

SIDES = {"sd": (640, 360), "hd": (1280, 720 - 2), "fhd": (1920, 1080)}  # 1280x718: short side < 720


def skewed_pool(n: int = 600, seed: int = 7) -> list[dict[str, Any]]:
    """Clips skewed away from DEFAULT_TARGETS in every view (mostly static, short, fhd, low fps)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        motion = rng.choice([0.004, 0.02, 0.12], p=[0.65, 0.22, 0.13])
        duration = rng.choice([2.5, 6.0, 11.0], p=[0.6, 0.28, 0.12])
        width, height = SIDES[rng.choice(["sd", "hd", "fhd"], p=[0.15, 0.2, 0.65])]
        fps = rng.choice([24.0, 30.0, 60.0], p=[0.6, 0.3, 0.1])
        langs = [["en", "zh"], ["en"], []][rng.choice(3, p=[0.8, 0.15, 0.05])]
        rows.append({
            "clip_id": f"clip{i:04d}", "motion": float(motion), "start_s": 1.0, "end_s": 1.0 + duration,
            "width": width, "height": height, "fps": float(fps), "langs": langs,
        })
    return rows


def pool_distance(rows: list[dict[str, Any]], targets: dict[str, dict[str, float]]) -> dict[str, float]:
    shares = normalise(targets)
    pool = proportions(rows, shares)
    return {v: tv_distance(pool[v], t) for v, t in shares.items()}


def test_view_classes_bins() -> None:
    row = {"motion": 0.03, "start_s": 2.0, "end_s": 10.0, "width": 1920, "height": 1080, "fps": 30.0,
           "langs": {"zh", "en"}}
    assert view_classes(row) == {"content": "moderate", "duration": "long", "resolution": "fhd",
                                 "fps": "standard", "language": "en+zh"}
    sparse = {"start_s": 0.0, "end_s": 3.99, "width": 480, "height": 854, "fps": 24.5, "langs": ["zh"]}
    assert view_classes(sparse) == {"content": "unknown", "duration": "short", "resolution": "hd",
                                    "fps": "low", "language": "zh"}
    assert view_classes({"fps": 59.94})["fps"] == "high"
    assert view_classes({})["language"] == "none"


def test_balanced_subset_meets_every_view_at_once() -> None:
    rows = skewed_pool()
    before = pool_distance(rows, DEFAULT_TARGETS)
    assert min(before.values()) > 0.15  # the pool is far from the targets on every view

    result = balance(rows, DEFAULT_TARGETS)
    assert result.n_pool == len(rows)
    assert not result.unreachable
    assert 50 <= len(result.selected) <= len(rows)
    assert len(set(result.selected)) == len(result.selected)
    for view, dist in result.distance.items():
        assert dist < 0.05, (view, dist, before[view])
        assert dist < before[view] / 4
    # ``achieved`` is what the selected clips really are.
    chosen = set(result.selected)
    assert result.achieved == proportions([r for r in rows if r["clip_id"] in chosen])

    # The size is the largest reachable one: the rarest class (dynamic, 3/10 of the subset) bounds it.
    dynamic = sum(view_classes(r)["content"] == "dynamic" for r in rows)
    assert len(result.selected) <= dynamic / 0.3 + 1


def test_n_respected_and_deterministic() -> None:
    rows = skewed_pool()
    first = balance(rows, DEFAULT_TARGETS, n=120, seed=3)
    assert len(first.selected) == 120
    assert max(first.distance.values()) < 0.05
    shuffled = list(reversed(rows))  # input order does not matter
    assert balance(shuffled, DEFAULT_TARGETS, n=120, seed=3).selected == first.selected
    other = balance(rows, DEFAULT_TARGETS, n=120, seed=4)
    assert other.selected != first.selected
    assert max(other.distance.values()) < 0.05


def test_language_target_and_untargeted_views() -> None:
    rows = skewed_pool()
    result = balance(rows, {"language": {"en+zh": 1, "en": 1}}, n=60)
    assert len(result.selected) == 60
    assert result.distance["language"] < 0.02
    assert result.achieved["language"]["none"] == 0.0
    assert set(result.distance) == {"language"}


def test_unreachable_target_is_reported_not_raised() -> None:
    rows = [r for r in skewed_pool() if view_classes(r)["resolution"] != "sd"]
    result = balance(rows, DEFAULT_TARGETS)
    assert result.unreachable == [("resolution", "sd")]
    assert result.distance["resolution"] == pytest.approx(0.2, abs=0.02)  # the 2/10 that cannot be had
    for view in ("content", "duration", "fps"):
        assert result.distance[view] < 0.05
    rows_out = {(v, c): (t, a, k) for v, c, t, a, k in report_rows(result)}
    assert rows_out[("resolution", "sd")] == (pytest.approx(0.2), 0.0, 0)
    assert rows_out[("language", "en+zh")][0] is None  # no target for language

    empty = balance([], DEFAULT_TARGETS)
    assert empty.selected == [] and all(d == 1.0 for d in empty.distance.values())


def test_bad_targets_rejected() -> None:
    with pytest.raises(ValueError, match="unknown view"):
        balance(skewed_pool(20), {"colour": {"red": 1}})
