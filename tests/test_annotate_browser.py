"""The annotation page in a real browser: uvicorn serving the app, headless Chromium driven over the
DevTools protocol. The videos play, labels are typed on the keyboard, rows land in DuckDB, a screenshot
is taken.

``VIDLOOM_ANNOTATE_SCREENSHOT=docs/images/annotate.png`` also writes the screenshot there (the README's
image: ``VIDLOOM_ANNOTATE_SCREENSHOT=docs/images/annotate.png .venv/bin/python -m pytest -q
tests/test_annotate_browser.py``).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import duckdb
import numpy as np
import pytest
from annotate_helpers import Browser, chromium_exe, live_server, make_batch
from PIL import Image

from evaluation import preferences
from evaluation.annotate_app import create_app
from evaluation.annotate_tasks import make_tasks

pytestmark = pytest.mark.skipif(chromium_exe() is None,
                                reason="no chromium binary (apt-get install chromium)")

PROMPTS = ["A red ball rolls to the left across a wooden floor, the camera stays still.",
           "一只橙色的猫在窗台上跳跃。"]


def _save_screenshot(png: bytes, dest: Path) -> None:
    """A palette PNG (small enough for the README, < 150 kB)."""
    img = Image.open(io.BytesIO(png)).convert("RGB")
    dest.parent.mkdir(parents=True, exist_ok=True)
    img.quantize(colors=64, method=Image.Quantize.MEDIANCUT).save(dest, optimize=True)
    assert dest.stat().st_size < 150_000


def test_label_in_headless_chromium(tmp_path: Path) -> None:
    videos = tmp_path / "gen"
    ia = make_batch(videos / "ckpt-a", PROMPTS, seed=1, speed=1)
    ib = make_batch(videos / "ckpt-b", PROMPTS, seed=2, speed=3)
    db = tmp_path / "labels.duckdb"
    assert make_tasks([ia, ib], db, per_task=2).added == 2
    second = preferences.read_tasks(db)[1]
    (videos / second["video_paths"][0]).unlink()  # the second task has lost a file: shown, then skipped
    app = create_app(db, videos)
    with live_server(app) as url:
        browser = Browser(tmp_path / "profile")
        try:
            browser.goto(f"{url}/?labeller=alice")
            assert browser.js("document.querySelectorAll('video').length") == 2
            # The videos really play: decoded frames (readyState >= HAVE_CURRENT_DATA) and time moving.
            browser.wait("Array.from(document.querySelectorAll('video')).every("
                         "v => v.readyState >= 2 && v.currentTime > 0 && !v.error)", timeout=15)
            assert browser.js("document.getElementById('progress').dataset.labelled") == "0"
            first = browser.js("document.body.dataset.task")
            ids = browser.js("window.annotate.data.video_ids")
            # Video A (focused first): 5 4 4 5; then video B: 2 3 1 2. Then back to A, mark it best.
            for k in "5445" "2312":
                browser.key(k)
            browser.key("ArrowLeft")
            browser.key("b")
            state = browser.js("({best: window.annotate.state.best, worst: window.annotate.state.worst})")
            assert state == {"best": ids[0], "worst": ids[1]}  # with two videos, worst follows best
            png = browser.screenshot()
            browser.key("Enter")
            browser.wait(f"document.body.dataset.task && document.body.dataset.task !== '{first}'")
            assert browser.js("document.getElementById('progress').dataset.labelled") == "1"
            assert browser.js("document.body.dataset.task") == second["task_id"]
            assert "Video file missing (404)" in browser.js("document.querySelector('.missing').textContent")
            browser.wait("(v => v.readyState >= 2 && v.currentTime > 0)(document.querySelector('video'))")
            browser.key("Enter")  # refused on the page: one playable video cannot be compared
            assert "skip" in browser.wait("document.getElementById('status').textContent")
            browser.key("s")  # skip the second task
            browser.wait("document.body.dataset.done === 'true'")
        finally:
            browser.close()
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute("SELECT task_id, labeller, video_ids, scores::VARCHAR, best, worst, skipped "
                           "FROM preferences ORDER BY created_at").fetchall()
    assert len(rows) == 2
    (tid, who, vids, scores, best, worst, skipped), skip_row = rows
    assert (tid, who, vids, best, worst, skipped) == (first, "alice", ids, ids[0], ids[1], False)
    import json

    assert json.loads(scores) == {ids[0]: {"motion": 5, "structure": 4, "fidelity": 4, "alignment": 5},
                                  ids[1]: {"motion": 2, "structure": 3, "fidelity": 1, "alignment": 2}}
    assert skip_row[1] == "alice" and skip_row[6] is True and skip_row[3] is None
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    assert image.shape[:2] == (900, 1280)
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 50  # text, videos, buttons: not a blank page
    if os.environ.get("VIDLOOM_ANNOTATE_SCREENSHOT"):
        _save_screenshot(png, Path(os.environ["VIDLOOM_ANNOTATE_SCREENSHOT"]))
