"""The HTML report of a real catalog, checked by its numbers and rendered in a real headless browser."""

from __future__ import annotations

import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from curation.db import Catalog
from curation.report import write_report
from curation.schema import Caption, Clip, ClipScores, InputFile, ShardInfo, Shot, Video

FRAMES_VID = "aaaa000000000001"  # sparse frames on disk
CLIPFILE_VID = "bbbb000000000002"  # frames gone, clip mp4 present
BROKEN_VID = "cccc000000000003"  # ingest error
THRESHOLDS = {"blur": ("min", 60.0), "text_area": ("max", 0.02), "motion": ("min", 0.002),
              "luma": ("min", 40.0)}


def _clip(i: int, vid: str, status: str = "kept", reason: str | None = None, path: str | None = None,
          **scores: Any) -> Clip:
    start = 30 * i
    base = {"blur": 80.0 + 7 * i, "luma": 90.0 + i, "motion": 0.004 * (i + 1), "text_area": 0.001 * i}
    base.update(scores)
    return Clip(f"clip{i:02d}", vid, i // 3, start, start + 60, start / 30, start / 30 + 2.0 + i,
                1280, 720, 30.0 if i % 2 else 24.0, path=path, status=status,  # type: ignore[arg-type]
                reject_reason=reason, scores=ClipScores(**base))


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A catalog like a small curate run leaves it, with frames and one clip file on disk."""
    root = tmp_path_factory.mktemp("out")
    frames_dir = root / ".work" / "frames" / FRAMES_VID
    frames_dir.mkdir(parents=True)
    rng = np.random.default_rng(0)
    sparse = (rng.integers(0, 255, (12, 1, 1, 3)) * np.ones((1, 144, 256, 1))).astype(np.uint8)
    np.save(frames_dir / "sparse.npy", sparse)
    np.save(frames_dir / "sparse_idx.npy", np.arange(0, 360, 30, dtype=np.int64))
    clip_rel = f"clips/{CLIPFILE_VID}/clip10.mp4"
    (root / clip_rel).parent.mkdir(parents=True)
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc2=size=160x90:rate=25:duration=0.2", "-c:v", "libx264", "-pix_fmt", "yuv420p",
                    str(root / clip_rel)], check=True)

    clips = [_clip(i, FRAMES_VID) for i in range(5)]
    clips += [_clip(5, FRAMES_VID, "rejected", "blurry", blur=12.0),
              _clip(6, FRAMES_VID, "rejected", "blurry", blur=30.5),
              _clip(7, FRAMES_VID, "rejected", "text", text_area=0.2, aesthetic=3.0),
              _clip(8, FRAMES_VID, "rejected", "static", motion=0.0005),
              _clip(9, CLIPFILE_VID, "rejected", "blurry", blur=5.0),  # no frames, no file: placeholder
              _clip(10, CLIPFILE_VID, path=clip_rel, aesthetic=5.5)]
    with Catalog(root / "catalog.duckdb") as cat:
        cat.upsert_objects("videos", [
            Video(FRAMES_VID, "in/a.mp4", "a" * 64, width=1280, height=720, fps=30.0),
            Video(CLIPFILE_VID, "in/b.mp4", "b" * 64, width=1280, height=720, fps=24.0),
            Video(BROKEN_VID, "in/c.mp4", "c" * 64, status="error", error="moov atom not found"),
        ])
        cat.upsert_objects("files", [
            InputFile("in/a.mp4", FRAMES_VID, 10, "ok"),
            InputFile("in/a_copy.mp4", FRAMES_VID, 10, "duplicate"),
            InputFile("in/b.mp4", CLIPFILE_VID, 10, "ok"),
            InputFile("in/c.mp4", BROKEN_VID, 3, "error", "bad"),
        ])
        cat.upsert_objects("shots", [
            Shot(v, k, 100 * k, 100 * k + 100, 10 * k / 3, 10 * (k + 1) / 3, "transnetv2")
            for v, n in ((FRAMES_VID, 4), (CLIPFILE_VID, 2)) for k in range(n)
        ])
        cat.upsert_objects("clips", clips)
        cat.upsert_objects("captions", [Caption(c.clip_id, lang, "text")  # type: ignore[arg-type]
                                        for c in clips[:3] for lang in ("en", "zh")])
        cat.upsert_objects("shards", [
            ShardInfo("720p/16x9/2-5s/000000.tar", "s0", 4, 4000, "x", "720p/16x9/2-5s"),
            ShardInfo("720p/16x9/5-10s/000000.tar", "s1", 2, 2000, "y", "720p/16x9/5-10s"),
        ])
    return root / "catalog.duckdb"


def sql_counts(db: Path) -> dict[str, int]:
    """The funnel straight from the catalog, independently of the report's own queries."""
    with Catalog(db, read_only=True) as cat:
        _, rows = cat.query("""SELECT
            (SELECT count(*) FROM videos), (SELECT count(*) FILTER (status = 'ok') FROM videos),
            (SELECT count(*) FILTER (status = 'error') FROM videos), (SELECT count(*) FROM files),
            (SELECT count(*) FILTER (status = 'duplicate') FROM files),
            (SELECT count(*) FILTER (status = 'error') FROM files), (SELECT count(*) FROM shots),
            (SELECT count(*) FROM clips), (SELECT count(*) FILTER (status = 'kept') FROM clips),
            (SELECT count(*) FILTER (status = 'rejected') FROM clips)""")
        names = ["videos", "videos_ok", "videos_error", "files", "files_duplicate", "files_error", "shots",
                 "clips", "clips_kept", "clips_rejected"]
        counts = dict(zip(names, rows[0], strict=True))
        for reason, n in cat.query("SELECT reject_reason, count(*) FROM clips WHERE status = 'rejected' "
                                   "GROUP BY 1")[1]:
            counts[f"rejected:{reason}"] = n
        _, rows = cat.query("SELECT bucket, sum(n_samples) FROM shards GROUP BY 1")
        counts.update({f"bucket:{b}": n for b, n in rows})
    return counts


def scored_columns(db: Path) -> set[str]:
    """Numeric score columns with at least one value."""
    from curation.schema import SCORE_COLUMNS

    with Catalog(db, read_only=True) as cat:
        _, types = cat.query("SELECT column_name FROM information_schema.columns WHERE table_name = 'clips' "
                             "AND data_type IN ('DOUBLE', 'INTEGER', 'BIGINT')")
        numeric = [c for (c,) in types if c in SCORE_COLUMNS]
        return {c for c in numeric if cat.query(f"SELECT count({c}) FROM clips")[1][0][0]}


class Page(HTMLParser):
    """What the tests read from a page: title, h1, body attributes, data-count cells, images, SVGs."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.title = self.h1 = self._in = ""
        self._svg = 0  # inside an <svg>: its <title>s are tooltips, not the page's
        self.body: dict[str, str] = {}
        self.counts: dict[str, str] = {}
        self._count_key: str | None = None
        self.images: list[dict[str, str]] = []
        self.hist: list[str] = []
        self.thresholds = 0
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self._in = tag
        self._svg += tag == "svg"
        if tag == "body":
            self.body = a
        elif tag == "img":
            self.images.append(a)
        elif tag == "svg" and "hist" in a.get("class", ""):
            self.hist.append(a["data-column"])
        elif tag == "line" and a.get("class") == "threshold":
            self.thresholds += 1
        if "data-count" in a:
            self._count_key = a["data-count"]

    def handle_data(self, data: str) -> None:
        if self._in == "title" and not self._svg:
            self.title += data
        elif self._in == "h1":
            self.h1 += data
        if self._count_key is not None and data.strip():
            self.counts[self._count_key] = data.strip()
            self._count_key = None

    def handle_endtag(self, tag: str) -> None:
        self._in = ""
        self._svg -= tag == "svg"


def test_report_numbers_match_catalog(catalog: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    numbers = write_report(catalog, out, thresholds=THRESHOLDS)
    text = out.read_text(encoding="utf-8")
    page = Page(text)
    expected = sql_counts(catalog)
    assert {k: int(v) for k, v in page.counts.items() if k in expected} == expected
    assert numbers["funnel"] == {k: v for k, v in expected.items() if k in numbers["funnel"]}
    assert numbers["rejected"] == {"blurry": 3, "static": 1, "text": 1}
    assert set(page.hist) == set(numbers["histograms"]) == scored_columns(catalog)
    assert page.thresholds == len(THRESHOLDS)
    # Thumbnails: sparse frames where they exist, the clip file next, else a labelled placeholder.
    assert numbers["thumbnails"]["kept"] == {"frames": 5, "mp4": 1, "placeholder": 0}
    assert numbers["thumbnails"]["rejected: blurry"] == {"frames": 2, "mp4": 0, "placeholder": 1}
    assert len(page.images) == 10 and all(i["src"].startswith("data:image/jpeg;base64,") for i in page.images)
    assert text.count('data-source="placeholder"') == 1
    assert "http://" not in text and "https://" not in text and "src=\"file" not in text
    assert numbers["balance"]["pool"] == expected["clips_kept"]
    assert numbers["buckets"] == {"720p/16x9/2-5s": 4, "720p/16x9/5-10s": 2}
    # Same catalog, same bytes.
    write_report(catalog, tmp_path / "again.html", thresholds=THRESHOLDS)
    assert (tmp_path / "again.html").read_text(encoding="utf-8") == text


def test_sparse_thumbnail_is_the_frame_nearest_the_middle(catalog: Path, tmp_path: Path) -> None:
    import base64
    import io
    import re

    out = tmp_path / "r.html"
    write_report(catalog, out)
    text = out.read_text(encoding="utf-8")
    src = re.search(r'<figure data-clip="clip02"><img [^>]*src="data:image/jpeg;base64,([^"]+)"', text)
    assert src is not None
    thumb = np.asarray(Image.open(io.BytesIO(base64.b64decode(src.group(1)))).convert("RGB"), dtype=float)
    sparse = np.load(catalog.parent / ".work" / "frames" / FRAMES_VID / "sparse.npy")
    # clip02 spans frames [60, 120): middle 89.5, nearest sparse frame is index 90 = sparse[3].
    dists = [np.abs(thumb.mean(axis=(0, 1)) - f.mean(axis=(0, 1))).sum() for f in sparse]
    assert int(np.argmin(dists)) == 3


def chromium(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    assert exe is not None
    return subprocess.run(
        [exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-extensions", "--mute-audio",
         f"--user-data-dir={cwd / 'profile'}", *args],
        cwd=cwd, capture_output=True, text=True, timeout=60, check=True,
    )


@pytest.mark.skipif(not (shutil.which("chromium") or shutil.which("chromium-browser")),
                    reason="no chromium binary on PATH (apt-get install chromium)")
def test_report_renders_in_headless_chromium(catalog: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    write_report(catalog, out, thresholds=THRESHOLDS)
    dom = chromium("--dump-dom", "--virtual-time-budget=5000", out.as_uri(), cwd=tmp_path).stdout
    page = Page(dom)
    assert page.title == "vidloom curation report" and page.h1 == "vidloom curation report"
    n_img = len(page.images)
    assert n_img == 10
    # The page's own script ran on load and found every image decoded.
    assert page.body.get("data-images-total") == str(n_img)
    assert page.body.get("data-images-loaded") == str(n_img)
    assert page.body.get("data-images-broken") == "0"
    expected = sql_counts(catalog)
    assert {k: int(v) for k, v in page.counts.items() if k in expected} == expected
    assert set(page.hist) == scored_columns(catalog)

    png = tmp_path / "shot.png"
    chromium(f"--screenshot={png}", "--window-size=1100,1600", "--hide-scrollbars", out.as_uri(),
             cwd=tmp_path)
    image = np.asarray(Image.open(png).convert("RGB"))
    assert image.shape[:2] == (1600, 1100)
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 50  # text, bars and thumbnails, not a blank page
