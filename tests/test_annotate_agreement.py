"""Krippendorff's alpha against the textbook and a hand computation; the agreement report."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from evaluation import preferences
from evaluation.agreement import krippendorff_alpha, pick_consistency, rubric_units
from evaluation.annotate_report import build_report
from vidloom.cli import main

N = None
# Krippendorff (2011), "Computing Krippendorff's alpha-reliability", the 4 coders x 12 units example with
# missing values; the paper gives alpha = 0.743 (nominal), 0.815 (ordinal), 0.849 (interval).
CODERS = [[1, 2, 3, 3, 2, 1, 4, 1, 2, N, N, N],
          [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, N, 3],
          [N, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, N],
          [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, N]]


@pytest.mark.parametrize(("level", "expected"), [("nominal", 0.743), ("ordinal", 0.815), ("interval", 0.849)])
def test_alpha_matches_krippendorff_2011(level: Any, expected: float) -> None:
    units = list(zip(*CODERS, strict=True))
    assert round(krippendorff_alpha(units, level), 3) == expected


def test_alpha_by_hand() -> None:
    # Units (1, 1), (2, 2), (3, 1). Coincidences: o11 = 2, o22 = 2, o13 = o31 = 1; n1 = 3, n2 = 2, n3 = 1,
    # n = 6. Nominal: D_o = 2/6, D_e = 2 (3*2 + 3*1 + 2*1) / 30 = 22/30, alpha = 1 - 60/132 = 6/11.
    # Interval: D_o = 8/6, D_e = 2 (6*1 + 3*4 + 2*1) / 30 = 40/30, alpha = 0.
    # Ordinal: d(1,2) = (3 + 2 - 2.5)^2 = 6.25, d(2,3) = (2 + 1 - 1.5)^2 = 2.25, d(1,3) = (6 - 2)^2 = 16;
    # D_o = 2 * 16 / 6, D_e = 2 (6 * 6.25 + 3 * 16 + 2 * 2.25) / 30, alpha = 1 - (32/6) / (180/30) = 1/9.
    units = [(1, 1), (2, 2), (3, 1)]
    assert krippendorff_alpha(units, "nominal") == pytest.approx(6 / 11)
    assert krippendorff_alpha(units, "interval") == pytest.approx(0.0, abs=1e-12)
    assert krippendorff_alpha(units, "ordinal") == pytest.approx(1 / 9)


def test_alpha_edge_cases() -> None:
    assert krippendorff_alpha([(1, 1), (3, 3), (5, 5, 5)]) == 1.0
    assert krippendorff_alpha({"u1": [2, 4], "u2": [4, 2]}, "interval") < 0  # systematic disagreement
    assert math.isnan(krippendorff_alpha([(1,), (2, None)]))  # nothing pairable
    assert math.isnan(krippendorff_alpha([(3, 3), (3, 3)]))  # no variation: D_e = 0
    with pytest.raises(ValueError, match="level"):
        krippendorff_alpha([(1, 2), (2, 3)], "ratio")  # type: ignore[arg-type]


def _lab(task: str, who: str, scores: dict[str, dict[str, int]] | None, best: str | None = None,
         worst: str | None = None) -> dict[str, Any]:
    return {"task_id": task, "labeller": who, "scores": scores, "best": best, "worst": worst,
            "skipped": scores is None, "video_ids": sorted(scores or {})}


def _s(m: int, s: int = 3, f: int = 3, a: int = 3) -> dict[str, int]:
    return {"motion": m, "structure": s, "fidelity": f, "alignment": a}


LABELS = [
    _lab("t1", "alice", {"x": _s(5, a=5), "y": _s(1, a=1)}, "x", "y"),
    _lab("t1", "bob", {"x": _s(4, a=5), "y": _s(2, a=2)}, "x", "y"),
    _lab("t2", "alice", {"p": _s(3), "q": _s(4), "r": _s(1)}, "q", "r"),
    _lab("t2", "bob", {"p": _s(2), "q": _s(5), "r": _s(1)}, "p", "r"),  # bob's best is not his top score
    _lab("t3", "bob", None),
]


def test_units_and_pick_consistency() -> None:
    units = rubric_units(LABELS, "motion")
    assert units == {("t1", "x"): [5, 4], ("t1", "y"): [1, 2], ("t2", "p"): [3, 2], ("t2", "q"): [4, 5],
                     ("t2", "r"): [1, 1]}
    p = pick_consistency(LABELS)
    assert p["pairs"] == 2 and p["labels"] == 4
    assert p["best_agree"] == 0.5 and p["worst_agree"] == 1.0
    assert p["chance"] == pytest.approx((1 / 2 + 1 / 3) / 2)
    assert p["best_top"] == 0.75 and p["worst_bottom"] == 1.0


def _db_with(tmp_path: Path, labels: list[dict[str, Any]]) -> Path:
    db = tmp_path / "l.duckdb"
    tasks = {}
    for lab in labels:
        tasks.setdefault(lab["task_id"], {"task_id": lab["task_id"], "prompt": f"prompt {lab['task_id']}",
                                          "video_ids": lab["video_ids"] or ["m", "n"],
                                          "video_paths": lab["video_ids"] or ["m", "n"]})
    preferences.insert_tasks(db, list(tasks.values()))
    for lab in labels:
        preferences.insert_label(db, tasks[lab["task_id"]], lab["labeller"], lab["scores"], lab["best"],
                                 lab["worst"], lab["skipped"])
    return db


def test_report_cli_prints_and_writes_html(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = _db_with(tmp_path, LABELS)
    rep = build_report(db)
    motion = next(d for d in rep["dimensions"] if d["dimension"] == "motion")
    assert motion["units"] == 5 and motion["values"] == 10
    assert motion["alpha_ordinal"] == pytest.approx(krippendorff_alpha(rubric_units(LABELS, "motion")))
    fidelity = next(d for d in rep["dimensions"] if d["dimension"] == "fidelity")
    assert math.isnan(fidelity["alpha_ordinal"])  # everyone said 3: no variation
    out = tmp_path / "r" / "report.html"
    assert main(["annotate", "report", "--db", str(db), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "3 tasks, 4 labels, 1 skipped, 2 labellers" in text
    assert "alice    | 2        | 0" in text and "bob      | 2        | 1" in text
    assert f"motion    | {motion['alpha_ordinal']:.3f}" in text and "fidelity  | n/a" in text
    assert "same best across labellers      | 0.500" in text
    html = out.read_text(encoding="utf-8")
    assert "Krippendorff" in html and f"{motion['alpha_interval']:.3f}" in html


def test_read_preferences_on_missing_db_is_empty(tmp_path: Path) -> None:
    assert preferences.read_preferences(tmp_path / "none.duckdb") == []
    assert build_report(tmp_path / "none.duckdb")["labels"] == 0
