"""What an evaluation run writes: per-dimension tables, win-rate tables, an HTML page, JSON and index.

In ``--out``:

- ``report-<run_id>.html`` (and ``report.html``, a copy of the newest): the tables, then every prompt
  with its videos side by side (one column per checkpoint, one row per seed), looping. Self-contained
  (inline CSS, no script, no external asset) except for the mp4 files, linked by their video ids,
  which are paths relative to this directory;
- ``runs/<run_id>/results.json``: the whole result (settings, checkpoints, every video's metrics, tables);
- ``runs/<run_id>/index.jsonl`` and ``index.jsonl`` (newest run): one line per video in the shape of
  ``vidloom generate --prompts``' index (path, prompt, seed, step, frames, fps, ...) plus video_id,
  ckpt, prompt_id, dimension, lang and shots, for ``vidloom annotate make-tasks``.
"""

from __future__ import annotations

import html
import io
import json
import shutil
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

MAIN_METRICS = ("composite", "motion", "stability", "aesthetic_proxy", "cross_shot_consistency",
                "data_psnr_db", "text_alignment", "motion_learned", "human_mean")


def _mean(xs: Sequence[float]) -> float | None:
    xs = [x for x in xs if x == x]
    return sum(xs) / len(xs) if xs else None


def dimension_tables(videos: Sequence[dict[str, Any]], labels: Sequence[str]) -> list[dict[str, Any]]:
    """Rows {dimension, ckpt, n, <metric>: mean}: one per (dimension, checkpoint), then "all" rows.
    ``n`` counts videos (prompt x seed); ``human_n`` (when present) counts the labelled ones."""
    dims = list(dict.fromkeys(v["dimension"] for v in videos)) + ["all"]
    metrics = list(dict.fromkeys(m for v in videos for m in v["metrics"] if m != "human_n"))
    rows = []
    for d in dims:
        for c in labels:
            group = [v for v in videos if v["ckpt"] == c and (d == "all" or v["dimension"] == d)]
            if not group:
                continue
            row: dict[str, Any] = {"dimension": d, "ckpt": c, "n": len(group)}
            for m in metrics:
                mean = _mean([v["metrics"][m] for v in group if m in v["metrics"]])
                if mean is not None:
                    row[m] = mean
            labelled = [v for v in group if "human_mean" in v["metrics"]]
            if labelled:
                row["human_n"] = len(labelled)
            rows.append(row)
    return rows


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 100 else f"{v:.1f}"
    return "" if v is None else str(v)


def dimension_table(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    rows = result["dimensions"]
    present = [m for m in MAIN_METRICS if any(m in r for r in rows)]
    extra = ["human_n"] if any("human_n" in r for r in rows) else []
    cols = ["dimension", "ckpt", "n", *present, *extra]
    return cols, [[_fmt(r.get(c)) for c in cols] for r in rows]


def winrate_table(result: dict[str, Any], metrics: Sequence[str] = ("composite", "human_mean")
                  ) -> tuple[list[str], list[list[str]]]:
    """Rows for each unordered pair (A listed before B in --ckpt order): B over A is 1 - that."""
    order = [c["label"] for c in result["ckpts"]]
    cols = ["metric", "dimension", "A", "B", "n", "W-T-L", "A wins", "95% CI"]
    rows = []
    for w in result["winrates"]:
        if w["metric"] in metrics and order.index(w["a"]) > order.index(w["b"]):
            rows.append([w["metric"], w["dimension"], w["a"], w["b"], str(w["n"]),
                         f"{w['wins']}-{w['ties']}-{w['losses']}", f"{w['win_rate']:.3f}",
                         f"[{w['ci_low']:.3f}, {w['ci_high']:.3f}] {w['ci_method']}"])
    return cols, rows


def text_table(cols: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    from curation.tables import print_table

    buf = io.StringIO()
    print_table(list(cols), [tuple(r) for r in rows], out=buf)
    return buf.getvalue()


def format_report(result: dict[str, Any]) -> str:
    """The stdout report: the per-dimension means, then the win rates (later --ckpt over earlier)."""
    parts = [f"vidloom eval run {result['run_id']}: suite {result['suite']} ({result['suite_sha'][:12]}), "
             f"{len(result['videos'])} videos in {result['elapsed_s']}s\n",
             "\nMean score per dimension and checkpoint (n = prompts x seeds):\n",
             text_table(*dimension_table(result))]
    if result["winrates"]:
        parts += ["\nWin rates (ties count half; per prompt x seed):\n", text_table(*winrate_table(result))]
    return "".join(parts)


CSS = """body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:2px 8px;
text-align:right}th{background:#f3f3f3}td:first-child,td:nth-child(2){text-align:left}
.prompt{border-top:2px solid #888;margin-top:1.2em;padding-top:.5em}.grid{display:flex;gap:10px;
flex-wrap:wrap}figure{margin:0}figcaption{font-size:12px;color:#555}video{width:256px;background:#000}
.meta{font-size:13px;color:#666}"""


def _html_table(cols: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def render_html(result: dict[str, Any]) -> str:
    """The side-by-side page (see the module docstring)."""
    labels = [c["label"] for c in result["ckpts"]]
    by_key = {(v["prompt_id"], v["seed"], v["ckpt"]): v for v in result["videos"]}
    prompts = list(dict.fromkeys((v["prompt_id"], v["dimension"]) for v in result["videos"]))
    seeds = list(dict.fromkeys(v["seed"] for v in result["videos"]))
    esc = html.escape
    gen = result["settings"]["generation"]
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>vidloom eval {esc(result['run_id'])}"
           f"</title><style>{CSS}</style></head><body>",
           f"<h1>vidloom eval {esc(result['run_id'])}</h1><p class='meta'>suite {esc(result['suite'])} "
           f"({esc(result['suite_sha'][:12])}), {len(result['videos'])} videos, {gen['n_frames']} frames "
           f"{gen['size'][0]}x{gen['size'][1]} at {gen['fps']} fps, {gen['steps']} steps, CFG "
           f"{gen['cfg_scale']}</p><ul>"]
    for c in result["ckpts"]:
        out.append(f"<li><b>{esc(c['label'])}</b>: {esc(c['path'])} (step {c['step']})</li>")
    out.append("</ul><h2>Mean score per dimension</h2>" + _html_table(*dimension_table(result)))
    if result["winrates"]:
        out.append("<h2>Win rates</h2>" + _html_table(*winrate_table(result)))
    current = None
    for pid, dim in prompts:
        if dim != current:
            out.append(f"<h2>{esc(dim)}</h2>")
            current = dim
        first = next(v for v in result["videos"] if v["prompt_id"] == pid)
        shots = "".join(f"<li>{esc(s)}</li>" for s in first["shots"])
        out.append(f"<div class='prompt' id='{esc(pid)}'><b>{esc(pid)}</b> [{esc(first['lang'])}]: "
                   f"{esc(first['prompt'])}" + (f"<ol class='meta'>{shots}</ol>" if shots else ""))
        for seed in seeds:
            out.append("<div class='grid'>")
            for label in labels:
                v = by_key.get((pid, seed, label))
                if v is None:
                    continue
                src = urllib.parse.quote(v["video_id"])
                score = v["metrics"].get("composite")
                out.append(f"<figure><video src='{src}' autoplay loop muted playsinline controls></video>"
                           f"<figcaption>{esc(label)} &middot; seed {seed} &middot; composite "
                           f"{_fmt(score)}</figcaption></figure>")
            out.append("</div>")
        out.append("</div>")
    out.append("</body></html>\n")
    return "".join(out)


def index_lines(result: dict[str, Any]) -> list[dict[str, Any]]:
    by_label = {c["label"]: c for c in result["ckpts"]}
    gen = result["settings"]["generation"]
    return [{"path": v["path"], "prompt": v["prompt"], "frames": v["frames"], "size": gen["size"],
             "fps": gen["fps"], "seconds": v["frames"] / gen["fps"], "step": by_label[v["ckpt"]]["step"],
             "seed": v["seed"], "steps": v["steps"][0] if len(v["steps"]) == 1 else v["steps"],
             "dit_passes": v["dit_passes"], "cfg_scale": gen["cfg_scale"], "image": None,
             "elapsed_s": v["gen_s"], "video_id": v["video_id"], "ckpt": v["ckpt"],
             "ckpt_path": by_label[v["ckpt"]]["path"], "prompt_id": v["prompt_id"],
             "dimension": v["dimension"], "lang": v["lang"], "shots": v["shots"], "run_id": result["run_id"]}
            for v in result["videos"]]


def write_outputs(out: Path, result: dict[str, Any]) -> dict[str, Path]:
    """Write the page, the results JSON and the index (see the module docstring); returns their paths."""
    run_dir = out / "runs" / result["run_id"]
    run_dir.mkdir(parents=True, exist_ok=True)
    paths = {"results": run_dir / "results.json", "index": run_dir / "index.jsonl",
             "html": out / f"report-{result['run_id']}.html"}
    paths["results"].write_text(json.dumps(result, indent=1, ensure_ascii=False, default=str) + "\n",
                                encoding="utf-8")
    paths["index"].write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in index_lines(result)),
                              encoding="utf-8")
    paths["html"].write_text(render_html(result), encoding="utf-8")
    shutil.copyfile(paths["html"], out / "report.html")
    shutil.copyfile(paths["index"], out / "index.jsonl")
    return paths
