"""``vidloom annotate serve``: the preference-annotation web app (Starlette, served by uvicorn).

Routes:

- ``GET /?labeller=NAME``: the oldest task NAME has not labelled or skipped (a name form without a
  name, a "done" page when none is left). ``GET /task/{task_id}?labeller=NAME``: that task.
- ``GET /media/{path}``: a file of the videos directory (Range requests work, so Chromium can loop an
  mp4). The path is resolved (symlinks too) and must stay inside the directory (403 otherwise); a
  missing file is a 404 with a message. Unicode names are percent-encoded by the page.
- ``POST /api/label``: a submission (evaluation/annotate_submit.py). 200 ``{"status": "recorded"}``;
  400 ``{"error", "field", "message"}`` for a malformed body (nothing is written); 409
  ``{"status": "already recorded", ...}`` when (task, labeller) has a row (the first one stands).
- ``GET /api/progress?labeller=NAME``, ``GET /api/task/{task_id}``: JSON for scripts and tests.
- ``GET /report``: the agreement report (evaluation/annotate_report.py) of the labels so far.

Each request opens the DuckDB file for its own duration (evaluation/preferences.py), serialised by
a lock, so other processes can read the labels while the server runs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from evaluation import annotate_page, preferences
from evaluation.annotate_submit import BadField, parse_body, parse_labeller, validate

STATIC_DIR = Path(__file__).resolve().parent / "static"
MAX_BODY = 256 * 1024
T = TypeVar("T")


class Annotator:
    """The app's state: the DuckDB file, the videos directory and the default labeller."""

    def __init__(self, db: str | Path, videos: str | Path, labeller: str | None = None) -> None:
        self.db = Path(db)
        self.videos = Path(videos).resolve()
        if not self.videos.is_dir():
            raise FileNotFoundError(f"videos directory {videos} does not exist")
        self.labeller = labeller
        self._lock = threading.Lock()

    async def locked(self, fn: Callable[..., T], *args: Any) -> T:
        def run() -> T:
            with self._lock:
                return fn(*args)
        return await run_in_threadpool(run)

    def media_path(self, rel: str) -> Path | None:
        """``rel`` resolved inside the videos directory, or None when it escapes it."""
        path = (self.videos / rel).resolve()
        return path if path.is_relative_to(self.videos) else None

    def playable(self, task: dict[str, Any]) -> set[str]:
        out = set()
        for vid, rel in zip(task["video_ids"], task["video_paths"], strict=True):
            path = self.media_path(rel)
            if path is not None and path.is_file():
                out.add(vid)
        return out

    def who(self, request: Request) -> str | None:
        name = request.query_params.get("labeller") or self.labeller
        try:
            return parse_labeller(name) if name else None
        except BadField:
            return None

    # --- pages -------------------------------------------------------------------------------------

    def _render(self, task: dict[str, Any] | None, labeller: str) -> str:
        prog = preferences.progress(self.db, labeller)
        if task is None:
            return annotate_page.done_page(labeller, prog)
        existing = preferences.get_label(self.db, task["task_id"], labeller)
        return annotate_page.task_page(task, labeller, self.playable(task), prog, existing)

    async def index(self, request: Request) -> Response:
        labeller = self.who(request)
        if labeller is None:
            return HTMLResponse(annotate_page.name_page())
        return HTMLResponse(await self.locked(
            lambda: self._render(preferences.next_task(self.db, labeller), labeller)))

    async def task(self, request: Request) -> Response:
        labeller = self.who(request)
        if labeller is None:
            return HTMLResponse(annotate_page.name_page())
        tid = request.path_params["task_id"]
        task = await self.locked(preferences.get_task, self.db, tid)
        if task is None:
            return PlainTextResponse(f"no task {tid!r}", status_code=404)
        return HTMLResponse(await self.locked(self._render, task, labeller))

    async def media(self, request: Request) -> Response:
        rel = request.path_params["path"]
        path = self.media_path(rel)
        if path is None:
            return PlainTextResponse(f"{rel!r} is outside the videos directory", status_code=403)
        if not path.is_file():
            return PlainTextResponse(f"video file not found: {rel}", status_code=404)
        return FileResponse(path)

    async def report(self, request: Request) -> Response:
        from evaluation.annotate_report import build_report, report_html

        return HTMLResponse(report_html(await self.locked(build_report, self.db)))

    # --- API ---------------------------------------------------------------------------------------

    async def label(self, request: Request) -> Response:
        raw = await request.body()
        if len(raw) > MAX_BODY:
            return JSONResponse({"error": "bad field", "field": "body", "message": "body too large"}, 413)
        try:
            body = parse_body(raw, request.headers.get("content-type", ""))
            return await self.locked(self._record, body)
        except BadField as e:
            return JSONResponse({"error": "bad field", "field": e.field, "message": e.message}, 400)

    def _record(self, body: dict[str, Any]) -> Response:
        sub, task = validate(body, lambda tid: preferences.get_task(self.db, tid), self.playable)
        try:
            row = preferences.insert_label(self.db, task, sub.labeller, sub.scores, sub.best, sub.worst,
                                           sub.skipped)
        except preferences.AlreadyRecorded as e:
            old = e.row
            what = "skipped" if old["skipped"] else "labelled"
            msg = f"task {sub.task_id} was already {what} by {sub.labeller} at {old['created_at']} UTC; " \
                  "this submission is not recorded"
            return JSONResponse({"status": "already recorded", "label_id": old["label_id"],
                                 "skipped": old["skipped"], "created_at": str(old["created_at"]),
                                 "message": msg},
                                409)
        return JSONResponse({"status": "recorded", "label_id": row["label_id"], "skipped": row["skipped"],
                             "progress": preferences.progress(self.db, sub.labeller)})

    async def api_progress(self, request: Request) -> Response:
        labeller = self.who(request)
        if labeller is None:
            return JSONResponse({"error": "bad field", "field": "labeller", "message": "missing"}, 400)
        return JSONResponse(await self.locked(preferences.progress, self.db, labeller))

    async def api_task(self, request: Request) -> Response:
        tid = request.path_params["task_id"]
        task = await self.locked(preferences.get_task, self.db, tid)
        if task is None:
            return JSONResponse({"error": f"no task {tid!r}"}, 404)
        ok = self.playable(task)
        return JSONResponse({"task_id": tid, "prompt": task["prompt"], "video_ids": task["video_ids"],
                             "video_paths": task["video_paths"],
                             "playable": [v for v in task["video_ids"] if v in ok]})


def create_app(db: str | Path, videos: str | Path, labeller: str | None = None) -> Starlette:
    """The ASGI app for ``db`` (created with empty tables if missing) and the ``videos`` directory."""
    ann = Annotator(db, videos, labeller)
    with preferences.connect(ann.db):  # create the tables now: a typo'd path fails at start, not at a submit
        pass
    routes = [
        Route("/", ann.index),
        Route("/task/{task_id}", ann.task),
        Route("/media/{path:path}", ann.media),
        Route("/report", ann.report),
        Route("/api/label", ann.label, methods=["POST"]),
        Route("/api/progress", ann.api_progress),
        Route("/api/task/{task_id}", ann.api_task),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    app = Starlette(routes=routes)
    app.state.annotator = ann
    return app
