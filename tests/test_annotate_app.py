"""The annotation app over HTTP (Starlette's TestClient, and a real uvicorn server for concurrent submits):
pages, media serving and its containment, bad input, double submits, skip and progress."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any
from urllib.parse import quote

import duckdb
import httpx
import pytest
from annotate_helpers import live_server, make_batch
from starlette.testclient import TestClient

from evaluation import preferences
from evaluation.annotate_app import create_app
from evaluation.annotate_tasks import make_tasks

PROMPTS = ["a red ball rolls", "一只猫在跳舞", "two dogs run"]


@pytest.fixture()
def setup(tmp_path: Path) -> dict[str, Any]:
    videos = tmp_path / "gen"
    ia = make_batch(videos / "a", PROMPTS, seed=1)
    ib = make_batch(videos / "b", PROMPTS, seed=2)
    db = tmp_path / "labels.duckdb"
    assert make_tasks([ia, ib], db, per_task=2).added == 3
    tasks = preferences.read_tasks(db)
    # the third prompt's task loses one of its files
    (videos / tasks[2]["video_paths"][0]).unlink()
    return {"db": db, "videos": videos, "tasks": tasks, "client": TestClient(create_app(db, videos))}


def _label(task: dict[str, Any], labeller: str = "alice", **kw: Any) -> dict[str, Any]:
    a, b = task["video_ids"]
    body = {"task_id": task["task_id"], "labeller": labeller, "skipped": False,
            "scores": {a: {"motion": 5, "structure": 4, "fidelity": 3, "alignment": 5},
                       b: {"motion": 2, "structure": 2, "fidelity": 3, "alignment": 1}},
            "best": a, "worst": b}
    body.update(kw)
    return body


def _rows(db: Path) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute("SELECT task_id, labeller, skipped, best, worst FROM preferences").fetchall()


def test_page_shows_task_rubric_and_videos(setup: dict[str, Any]) -> None:
    c, t0 = setup["client"], setup["tasks"][0]
    assert "Enter your name" in c.get("/").text
    r = c.get("/?labeller=alice")
    assert r.status_code == 200 and f'data-task="{t0["task_id"]}"' in r.text
    assert t0["prompt"] in r.text and "fully physical" in r.text and "severely broken" in r.text
    assert "0 of 3 labelled by alice" in r.text
    assert r.text.count("<video ") == 2 and "autoplay loop muted" in r.text
    for rel in t0["video_paths"]:
        assert f'src="/media/{quote(rel)}"' in r.text  # Unicode names are percent-encoded
        m = c.get(f"/media/{quote(rel)}")
        assert m.status_code == 200 and m.headers["content-type"] == "video/mp4"
        assert m.content == (setup["videos"] / rel).read_bytes()
        part = c.get(f"/media/{quote(rel)}", headers={"Range": "bytes=0-99"})
        assert part.status_code == 206 and len(part.content) == 100  # Chromium seeks and loops with ranges
    assert c.get("/static/annotate.js").status_code == 200


def test_media_stays_inside_the_videos_dir(setup: dict[str, Any], tmp_path: Path) -> None:
    c = setup["client"]
    secret = tmp_path / "secret.txt"
    secret.write_text("no", encoding="utf-8")
    (setup["videos"] / "link.mp4").symlink_to(secret)
    for url in ["/media/..%2Fsecret.txt", "/media/a/..%2F..%2Fsecret.txt", f"/media/{quote(str(secret))}",
                "/media/link.mp4"]:
        r = c.get(url)
        assert r.status_code in (403, 404) and "no" != r.text, url
    assert c.get("/media/..%2Fsecret.txt").status_code == 403
    assert c.get("/media/link.mp4").status_code == 403  # a symlink out is resolved, then refused
    r = c.get("/media/a/nothing-here.mp4")
    assert r.status_code == 404 and "video file not found: a/nothing-here.mp4" in r.text


def test_missing_video_task_can_be_skipped_not_scored(setup: dict[str, Any]) -> None:
    c, db, t2 = setup["client"], setup["db"], setup["tasks"][2]
    page = c.get(f"/task/{t2['task_id']}?labeller=alice").text
    assert "Video file missing (404)" in page and page.count("<video ") == 1
    assert "press <kbd>s</kbd> to skip" in page
    assert c.get(f"/api/task/{t2['task_id']}").json()["playable"] == [t2["video_ids"][1]]
    r = c.post("/api/label", json=_label(t2))
    assert r.status_code == 400 and r.json()["field"] == "skipped"
    r = c.post("/api/label", json={"task_id": t2["task_id"], "labeller": "alice", "skipped": True})
    assert r.status_code == 200 and r.json()["status"] == "recorded"
    assert _rows(db) == [(t2["task_id"], "alice", True, None, None)]


BAD = [
    ("not json", b"{oops", "application/json", "body"),
    ("array", b"[1]", "application/json", "body"),
    ("content type", b"x", "text/plain", "body"),
    ("no task", {"labeller": "a"}, None, "task_id"),
    ("unknown task", {"task_id": "nope", "labeller": "a"}, None, "task_id"),
    ("no labeller", {"labeller": "  "}, None, "labeller"),
    ("long labeller", {"labeller": "x" * 65}, None, "labeller"),
    ("skipped junk", {"skipped": "maybe"}, None, "skipped"),
    ("no scores", {"scores": None}, None, "scores"),
    ("score 6", {"score": ("A", "motion", 6)}, None, "scores.A.motion"),
    ("score 0", {"score": ("B", "alignment", 0)}, None, "scores.B.alignment"),
    ("score text", {"score": ("A", "fidelity", "good")}, None, "scores.A.fidelity"),
    ("score bool", {"score": ("A", "fidelity", True)}, None, "scores.A.fidelity"),
    ("score float", {"score": ("A", "fidelity", 2.5)}, None, "scores.A.fidelity"),
    ("missing dim", {"drop": ("B", "structure")}, None, "scores.B.structure"),
    ("extra dim", {"score": ("A", "beauty", 3)}, None, "scores.A.beauty"),
    ("missing video", {"drop": ("B", None)}, None, "scores.B"),
    ("stranger video", {"score": ("zzz", None, None)}, None, "scores.zzz"),
    ("no best", {"best": None}, None, "best"),
    ("best elsewhere", {"best": "zzz"}, None, "best"),
    ("best = worst", {"worst": "A"}, None, "worst"),
]


@pytest.mark.parametrize(("name", "change", "ctype", "field"), BAD, ids=[b[0] for b in BAD])
def test_malformed_posts_are_400_with_the_field(setup: dict[str, Any], name: str, change: Any,
                                                ctype: str | None, field: str) -> None:
    c, t0 = setup["client"], setup["tasks"][0]
    a, b = t0["video_ids"]
    names = {"A": a, "B": b, "zzz": "zzz"}
    if isinstance(change, bytes):
        r = c.post("/api/label", content=change, headers={"content-type": ctype})
    else:
        body = _label(t0)
        change = dict(change)
        if "score" in change:
            vid, dim, value = change.pop("score")
            if dim is None:
                body["scores"][names[vid]] = {"motion": 3}
            else:
                body["scores"][names[vid]][dim] = value
        if "drop" in change:
            vid, dim = change.pop("drop")
            if dim is None:
                del body["scores"][names[vid]]
            else:
                del body["scores"][names[vid]][dim]
        for k, v in change.items():
            body[k] = names.get(v, v) if isinstance(v, str) and k in ("best", "worst") else v
        if "task_id" not in change and name == "no task":
            del body["task_id"]
        r = c.post("/api/label", json=body)
    assert r.status_code == 400, r.text
    got = r.json()
    assert got["error"] == "bad field" and got["message"]
    assert got["field"] == field.replace("scores.A", f"scores.{a}").replace("scores.B", f"scores.{b}")
    assert _rows(setup["db"]) == []  # nothing written


def test_form_post_double_submit_progress_and_done(setup: dict[str, Any]) -> None:
    c, db, (t0, t1, t2) = setup["client"], setup["db"], setup["tasks"]
    body = _label(t0)
    form = {k: (json.dumps(v) if k == "scores" else str(v).lower() if isinstance(v, bool) else v)
            for k, v in body.items()}
    r = c.post("/api/label", data=form)  # a URL-encoded form works too (scores as JSON text)
    assert r.status_code == 200 and r.json()["progress"] == {"total": 3, "labelled": 1, "skipped": 0,
                                                             "remaining": 2}
    again = c.post("/api/label", json=_label(t0, best=t0["video_ids"][1], worst=t0["video_ids"][0]))
    assert again.status_code == 409 and again.json()["status"] == "already recorded"
    assert "already labelled by alice" in again.json()["message"]
    first = (t0["task_id"], "alice", False, t0["video_ids"][0], t0["video_ids"][1])
    assert _rows(db) == [first]  # the first submission stands
    assert "You already labelled this task" in c.get(f"/task/{t0['task_id']}?labeller=alice").text
    # bob has his own progress; alice moves on to the next task
    assert c.post("/api/label", json=_label(t0, labeller="bob")).status_code == 200
    assert f'data-task="{t1["task_id"]}"' in c.get("/?labeller=alice").text
    for t, flag in ((t1, True), (t2, "1")):
        r = c.post("/api/label", json={"task_id": t["task_id"], "labeller": "alice", "skipped": flag})
        assert r.status_code == 200
    prog = c.get("/api/progress?labeller=alice").json()
    assert prog == {"total": 3, "labelled": 1, "skipped": 2, "remaining": 0}
    done = c.get("/?labeller=alice").text
    assert 'data-done="true"' in done and "1 of 3 labelled by alice (2 skipped)" in done
    rows = preferences.read_preferences(db)
    assert [(r["labeller"], r["skipped"]) for r in rows] == [("alice", False), ("bob", False),
                                                             ("alice", True), ("alice", True)]
    assert rows[0]["scores"] == body["scores"] and rows[0]["prompt"] == t0["prompt"]
    assert "Agreement per dimension" in c.get("/report").text


def test_default_labeller_from_serve(setup: dict[str, Any]) -> None:
    c = TestClient(create_app(setup["db"], setup["videos"], labeller="carol"))
    assert "0 of 3 labelled by carol" in c.get("/").text
    with pytest.raises(FileNotFoundError):
        create_app(setup["db"], setup["videos"] / "nope")


def test_concurrent_double_submit_on_a_real_server(setup: dict[str, Any]) -> None:
    t0 = setup["tasks"][0]
    with live_server(create_app(setup["db"], setup["videos"])) as url:
        codes: list[int] = []
        barrier = threading.Barrier(4)

        def post() -> None:
            barrier.wait()
            codes.append(httpx.post(f"{url}/api/label", json=_label(t0), timeout=30).status_code)

        threads = [threading.Thread(target=post) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert sorted(codes) == [200, 409, 409, 409]
    assert len(_rows(setup["db"])) == 1


def test_cli_serve_runs_uvicorn(setup: dict[str, Any]) -> None:
    """``vidloom annotate serve`` as a process: it prints the URL and answers on it."""
    import subprocess
    import sys
    import time

    from annotate_helpers import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "vidloom.cli", "annotate", "serve",
                             "--db", str(setup["db"]), "--videos", str(setup["videos"]), "--port", str(port),
                             "--labeller", "dora"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == f"annotation page: http://127.0.0.1:{port}/?labeller=dora"
        deadline = time.monotonic() + 30
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.1)
        assert r.status_code == 200 and "0 of 3 labelled by dora" in r.text
    finally:
        proc.terminate()
        proc.wait(10)
