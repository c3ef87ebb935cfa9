"""HTML of the annotation page (server-rendered; evaluation/static/annotate.js adds the keyboard).

One task per page: the prompt, its 2..4 videos side by side (``<video autoplay loop muted>``), under
each video a 1..5 score per rubric dimension and best/worst toggles, the rubric's wording, the
labeller's progress, and Submit / Skip. A video whose file is missing is shown as a message (no score
asked for it). Everything the script needs is in ``<script id="task-data" type="application/json">``.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any
from urllib.parse import quote, urlencode

from evaluation.preferences import RUBRIC, RUBRIC_TEXT

LETTERS = "ABCD"
KEYS_HELP = ("<kbd>1</kbd>–<kbd>5</kbd> score the focused cell · <kbd>←</kbd><kbd>→</kbd> other video · "
             "<kbd>↑</kbd><kbd>↓</kbd> other dimension (<kbd>Tab</kbd> also moves) · <kbd>b</kbd> best · "
             "<kbd>w</kbd> worst · <kbd>Enter</kbd> submit · <kbd>s</kbd> skip")


def _doc(title: str, body: str, body_attrs: str = "") -> str:
    return (f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{escape(title)}</title>"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            "<link rel=\"stylesheet\" href=\"/static/annotate.css\"></head>"
            f"<body{body_attrs}>{body}</body></html>")


def _header(labeller: str, prog: dict[str, int] | None) -> str:
    bar = ""
    if prog is not None:
        done = prog["labelled"] + prog["skipped"]
        pct = 100.0 * done / prog["total"] if prog["total"] else 100.0
        skipped = f" ({prog['skipped']} skipped)" if prog["skipped"] else ""
        bar = (f"<div id=\"progress\" data-labelled=\"{prog['labelled']}\" "
               f"data-skipped=\"{prog['skipped']}\" data-total=\"{prog['total']}\">"
               f"<span>{prog['labelled']} of {prog['total']} labelled by {escape(labeller)}{skipped}</span>"
               f"<div class=\"bar\"><div style=\"width:{pct:.1f}%\"></div></div></div>")
    return ("<header><h1>vidloom annotate</h1><form id=\"who\" method=\"get\" action=\"/\">"
            "<label>Labeller <input id=\"labeller\" name=\"labeller\" required maxlength=\"64\" "
            f"value=\"{escape(labeller)}\"></label> <button type=\"submit\">Go</button></form>{bar}</header>")


def _rubric() -> str:
    head = "".join(f"<th>{n}</th>" for n in range(5, 0, -1))
    rows = "".join(
        f"<tr data-dim=\"{d}\"><th>{escape(RUBRIC_TEXT[d]['title'])}</th>"
        + "".join(f"<td>{escape(RUBRIC_TEXT[d]['levels'][n])}</td>" for n in range(5, 0, -1)) + "</tr>"
        for d in RUBRIC)
    return f"<table id=\"rubric\"><thead><tr><th>Rubric</th>{head}</tr></thead><tbody>{rows}</tbody></table>"


def _cell(vid: str, d: str) -> str:
    buttons = "".join(
        f"<button type=\"button\" tabindex=\"-1\" data-score=\"{n}\" title=\"{n}: "
        f"{escape(RUBRIC_TEXT[d]['levels'][n])}\">{n}</button>" for n in range(1, 6))
    return (f"<div class=\"cell\" tabindex=\"0\" role=\"radiogroup\" data-vid=\"{escape(vid)}\" "
            f"data-dim=\"{d}\" aria-label=\"{escape(RUBRIC_TEXT[d]['title'])}\">"
            f"<span class=\"dim\">{escape(RUBRIC_TEXT[d]['title'])}</span>"
            f"<span class=\"scores\">{buttons}</span>"
            "<span class=\"level\"></span></div>")


def _video(i: int, vid: str, rel: str, ok: bool) -> str:
    letter = LETTERS[i]
    if ok:
        media = (f"<video src=\"/media/{quote(rel)}\" autoplay loop muted playsinline preload=\"auto\">"
                 "</video><p class=\"error\" hidden>This video cannot be played.</p>")
        cells = "".join(_cell(vid, d) for d in RUBRIC)
        picks = ("<div class=\"picks\">"
                 "<button type=\"button\" tabindex=\"-1\" class=\"best\">best (b)</button>"
                 "<button type=\"button\" tabindex=\"-1\" class=\"worst\">worst (w)</button></div>")
    else:
        media = (f"<div class=\"missing\">Video file missing (404):<br><code>{escape(rel)}</code><br>"
                 "It is not scored; skip the task if fewer than two videos remain.</div>")
        cells, picks = "", ""
    return (f"<section class=\"video\" data-vid=\"{escape(vid)}\" data-playable=\"{str(ok).lower()}\">"
            f"<h2>{letter}</h2>{media}{cells}{picks}</section>")


def task_page(task: dict[str, Any], labeller: str, playable: set[str], prog: dict[str, int],
              existing: dict[str, Any] | None = None) -> str:
    """The labelling page of ``task`` for ``labeller`` (``existing``: their row, when already recorded)."""
    vids = list(task["video_ids"])
    data = {"task_id": task["task_id"], "labeller": labeller, "video_ids": vids,
            "playable": [v for v in vids if v in playable], "rubric": list(RUBRIC),
            "levels": {d: {str(n): t for n, t in RUBRIC_TEXT[d]["levels"].items()} for d in RUBRIC},
            "recorded": existing is not None,
            "next_url": "/?" + urlencode({"labeller": labeller})}
    blob = json.dumps(data, ensure_ascii=False).replace("</", "<\\/")
    notice = ""
    if existing is not None:
        what = "skipped" if existing["skipped"] else "labelled"
        when = escape(str(existing["created_at"]))
        notice = (f"<p class=\"notice\">You already {what} this task ({when} UTC); a new submission is "
                  f"not recorded. <a href=\"{escape(data['next_url'])}\">Next task</a></p>")
    n_ok = len(data["playable"])
    warn = "" if n_ok >= 2 else (
        f"<p class=\"notice\">Only {n_ok} of this task's videos can be played: "
        "press <kbd>s</kbd> to skip.</p>")
    videos = "".join(_video(i, v, r, v in playable) for i, (v, r) in
                     enumerate(zip(vids, task["video_paths"], strict=True)))
    body = (_header(labeller, prog) + notice + warn +
            f"<main><p id=\"prompt\">{escape(task['prompt'])}</p>"
            f"<div id=\"videos\" class=\"n{len(vids)}\">{videos}</div>"
            "<div id=\"actions\"><button id=\"submit\" type=\"button\">Submit (Enter)</button>"
            "<button id=\"skip\" type=\"button\">Skip (s)</button><span id=\"status\" role=\"status\" "
            f"aria-live=\"polite\"></span></div><p class=\"keys\">{KEYS_HELP}</p>{_rubric()}</main>"
            f"<script id=\"task-data\" type=\"application/json\">{blob}</script>"
            "<script src=\"/static/annotate.js\"></script>")
    return _doc(f"annotate: {task['prompt'][:60]}", body, f" data-task=\"{escape(task['task_id'])}\"")


def name_page() -> str:
    """Asks for the labeller's name (no ?labeller= and no --labeller)."""
    body = _header("", None) + "<main><p class=\"notice\">Enter your name to start labelling.</p></main>"
    return _doc("annotate: who are you?", body)


def done_page(labeller: str, prog: dict[str, int]) -> str:
    body = (_header(labeller, prog) + f"<main><p class=\"notice\" id=\"done\">All {prog['total']} "
            f"tasks are done for {escape(labeller)}. Thank you! "
            "<a href=\"/report\">Agreement report</a></p></main>")
    return _doc("annotate: done", body, " data-done=\"true\"")
