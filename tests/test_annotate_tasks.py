"""``vidloom annotate make-tasks``: grouping by prompt across indexes, task sizes, idempotence."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest
from annotate_helpers import make_batch

from evaluation import preferences
from evaluation.annotate_tasks import Video, make_tasks, plan_tasks, read_index
from vidloom.cli import main


def _videos(prompt: str, n: int, source: str = "s") -> list[Video]:
    return [Video(f"{source}/{i}.mp4", f"{source}/{i}.mp4", prompt, source, True) for i in range(n)]


@pytest.mark.parametrize(("n", "per", "sizes"), [(2, 4, [2]), (4, 4, [4]), (5, 4, [3, 2]), (7, 3, [3, 2, 2]),
                                                 (9, 4, [3, 3, 3]), (3, 2, [2, 2]), (5, 2, [2, 2, 2])])
def test_task_sizes(n: int, per: int, sizes: list[int]) -> None:
    tasks, lone = plan_tasks(_videos("p", n), per)
    assert [len(t["video_ids"]) for t in tasks] == sizes and not lone
    covered = {v for t in tasks for v in t["video_ids"]}
    assert covered == {f"s/{i}.mp4" for i in range(n)}  # every video is in a task
    assert all(len(set(t["video_ids"])) == len(t["video_ids"]) for t in tasks)


def test_tasks_mix_sources_and_reject_bad_sizes() -> None:
    videos = _videos("p", 2, "a") + _videos("p", 2, "b")
    tasks, _ = plan_tasks(videos, 2)
    assert [sorted(v.split("/")[0] for v in t["video_ids"]) for t in tasks] == [["a", "b"], ["a", "b"]]
    with pytest.raises(ValueError, match="2..4"):
        plan_tasks(videos, 5)
    tasks, lone = plan_tasks(_videos("only one", 1), 4)
    assert tasks == [] and lone == ["only one"]


def test_make_tasks_groups_prompts_across_indexes_and_is_idempotent(tmp_path: Path) -> None:
    prompts = ["a red ball rolls", "一只猫在跳舞", "solo"]
    ia = make_batch(tmp_path / "gen" / "a", prompts[:2], seed=1)
    ib = make_batch(tmp_path / "gen" / "b", prompts[:2], seed=2)
    ic = make_batch(tmp_path / "gen" / "c", prompts[2:], seed=3)
    db = tmp_path / "l.duckdb"
    res = make_tasks([ia, ib, ic], db, per_task=4)
    assert res.added == 2 and res.lone == ["solo"] and res.missing_files == []
    rows = preferences.read_tasks(db)
    assert {r["prompt"] for r in rows} == set(prompts[:2])
    for r in rows:
        assert sorted(p.split("/")[0] for p in r["video_paths"]) == ["a", "b"]
        assert r["video_ids"] == r["video_paths"]  # no video_id in the index: the relative path
        assert all((tmp_path / "gen" / p).is_file() for p in r["video_paths"])
        assert r["source"] == f"{ia}, {ib}"
    assert make_tasks([ia, ib, ic], db).added == 0  # rerun: nothing new
    assert len(preferences.read_tasks(db)) == 2
    # A third checkpoint: only its videos make new tasks (each paired with one already labelled).
    idx = make_batch(tmp_path / "gen" / "d", prompts[:2], seed=4)
    assert make_tasks([ia, ib, ic, idx], db).added == 2
    new = preferences.read_tasks(db)[2:]
    assert all(any(p.startswith("d/") for p in t["video_paths"]) for t in new)
    assert make_tasks([ia, ib, ic, idx], db).added == 0


def test_index_video_ids_paths_and_errors(tmp_path: Path) -> None:
    out = tmp_path / "eval"
    index = make_batch(out / "videos", ["p"], seed=1)
    docs = read_index(index)
    second = make_batch(out / "videos2", ["p"], seed=2)
    docs2 = read_index(second)
    # eval-style index: ids given, paths relative to the index directory
    lines = [{**docs[0], "video_id": "videos/ck1/p-s0.mp4", "path": "videos/" + Path(docs[0]["path"]).name},
             {**docs2[0], "video_id": "videos/ck2/p-s0.mp4", "path": str(Path(docs2[0]["path"]))},
             {"path": "videos/gone.mp4", "prompt": "p", "video_id": "gone"}]
    eval_index = out / "index.jsonl"
    text = "\n".join(json.dumps(x, ensure_ascii=False) for x in lines) + "\n\n"  # a blank line too
    eval_index.write_text(text, encoding="utf-8")
    db = tmp_path / "l.duckdb"
    res = make_tasks([eval_index], db, per_task=3)
    assert res.added == 1 and res.missing_files == ["videos/gone.mp4"]
    (task,) = preferences.read_tasks(db)
    assert sorted(task["video_ids"]) == ["gone", "videos/ck1/p-s0.mp4", "videos/ck2/p-s0.mp4"]
    assert sorted(task["video_paths"]) == sorted(["videos/gone.mp4", "videos/" + Path(docs[0]["path"]).name,
                                                  "videos2/" + Path(docs2[0]["path"]).name])
    with pytest.raises(ValueError, match="not under the videos directory"):
        make_tasks([eval_index], tmp_path / "x.duckdb", videos_dir=out / "videos2")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"path": "a.mp4", "prompt": "p"}\n{oops\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.jsonl:2: not JSON"):
        read_index(bad)


def test_cli_make_tasks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ia = make_batch(tmp_path / "a", ["p1", "p2"], seed=1)
    ib = make_batch(tmp_path / "b", ["p1", "p2"], seed=2)
    db = tmp_path / "l.duckdb"
    argv = ["annotate", "make-tasks", "--index", str(ia), "--index", str(ib), "--db", str(db),
            "--per-task", "2"]
    assert main(argv) == 0
    assert "2 new tasks, 2 in all" in capsys.readouterr().out
    assert main(argv) == 0
    assert "0 new tasks, 2 in all" in capsys.readouterr().out
    with duckdb.connect(str(db), read_only=True) as con:
        cols = con.execute("SELECT column_name, data_type FROM information_schema.columns "
                           "WHERE table_name = 'annotation_tasks' ORDER BY ordinal_position").fetchall()
    assert cols == [("task_id", "VARCHAR"), ("prompt", "VARCHAR"), ("video_ids", "VARCHAR[]"),
                    ("video_paths", "VARCHAR[]"), ("source", "VARCHAR"), ("created_at", "TIMESTAMP")]
    assert main(["annotate", "make-tasks", "--index", str(tmp_path / "nope.jsonl"), "--db", str(db)]) == 2
