"""Evaluation history in DuckDB: every ``vidloom eval`` run appends rows under a new ``run_id``.

Tables (created when missing; nothing is ever updated or deleted)::

    eval_runs(run_id, created_at, suite, suite_sha, suite_path, ckpts JSON, settings JSON, out_dir,
              n_videos, elapsed_s)
    eval_videos(run_id, ckpt, ckpt_path, ckpt_step, prompt_id, dimension, lang, seed, video_id, path,
                frames, gen_s, steps (sampled, per shot), dit_passes)
    eval_scores(run_id, ckpt, prompt_id, seed, metric, value)
    eval_winrates(run_id, metric, dimension, ckpt_a, ckpt_b, n, wins, ties, losses, win_rate,
                  ci_low, ci_high, ci_method)

For example, the composite win rate of every run over time::

    SELECT r.created_at, w.ckpt_a, w.ckpt_b, w.win_rate, w.ci_low, w.ci_high
    FROM eval_winrates w JOIN eval_runs r USING (run_id)
    WHERE w.metric = 'composite' AND w.dimension = 'all' ORDER BY r.created_at
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS eval_runs (
    run_id VARCHAR PRIMARY KEY, created_at TIMESTAMP, suite VARCHAR, suite_sha VARCHAR,
    suite_path VARCHAR, ckpts JSON, settings JSON, out_dir VARCHAR, n_videos INTEGER, elapsed_s DOUBLE);
CREATE TABLE IF NOT EXISTS eval_videos (
    run_id VARCHAR, ckpt VARCHAR, ckpt_path VARCHAR, ckpt_step INTEGER, prompt_id VARCHAR,
    dimension VARCHAR, lang VARCHAR, seed INTEGER, video_id VARCHAR, path VARCHAR, frames INTEGER,
    gen_s DOUBLE, steps INTEGER[], dit_passes INTEGER);
CREATE TABLE IF NOT EXISTS eval_scores (
    run_id VARCHAR, ckpt VARCHAR, prompt_id VARCHAR, seed INTEGER, metric VARCHAR, value DOUBLE);
CREATE TABLE IF NOT EXISTS eval_winrates (
    run_id VARCHAR, metric VARCHAR, dimension VARCHAR, ckpt_a VARCHAR, ckpt_b VARCHAR, n INTEGER,
    wins INTEGER, ties INTEGER, losses INTEGER, win_rate DOUBLE, ci_low DOUBLE, ci_high DOUBLE,
    ci_method VARCHAR);
"""


def has_table(db: str | Path, table: str) -> bool:
    """Whether ``db`` exists and holds ``table`` (read-only; waits out another process's lock)."""
    from curation.snapshot import connect_retrying

    if not Path(db).is_file():
        return False
    con = connect_retrying(Path(db), read_only=True)
    try:
        row = con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ?",
                          [table]).fetchone()
    finally:
        con.close()
    return bool(row and row[0])


def record(db: str | Path, result: dict[str, Any], created: datetime.datetime) -> None:
    """Append one run (``harness.run_eval``'s result) in a single transaction."""
    from curation.snapshot import connect_retrying

    run_id = result["run_id"]
    by_label = {c["label"]: c for c in result["ckpts"]}
    videos = [(run_id, v["ckpt"], by_label[v["ckpt"]]["path"], by_label[v["ckpt"]]["step"], v["prompt_id"],
               v["dimension"], v["lang"], v["seed"], v["video_id"], v["path"], v["frames"], v["gen_s"],
               v["steps"], v["dit_passes"])
              for v in result["videos"]]
    scores = [(run_id, v["ckpt"], v["prompt_id"], v["seed"], m, float(x))
              for v in result["videos"] for m, x in v["metrics"].items()]
    wins = [(run_id, w["metric"], w["dimension"], w["a"], w["b"], w["n"], w["wins"], w["ties"], w["losses"],
             w["win_rate"], w["ci_low"], w["ci_high"], w["ci_method"]) for w in result["winrates"]]
    Path(db).parent.mkdir(parents=True, exist_ok=True)
    with connect_retrying(Path(db), read_only=False) as con:
        con.execute(SCHEMA)
        con.execute("BEGIN")
        con.execute("INSERT INTO eval_runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [run_id, created.replace(tzinfo=None), result["suite"], result["suite_sha"],
                     result["suite_path"], json.dumps(result["ckpts"]), json.dumps(result["settings"]),
                     result["out"], len(result["videos"]), result["elapsed_s"]])
        con.executemany("INSERT INTO eval_videos VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", videos)
        if scores:
            con.executemany("INSERT INTO eval_scores VALUES (?, ?, ?, ?, ?, ?)", scores)
        if wins:
            con.executemany("INSERT INTO eval_winrates VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", wins)
        con.execute("COMMIT")
