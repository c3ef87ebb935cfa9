"""The HTML curation report: one self-contained page about a catalog.

The page holds the funnel (videos -> shots -> clips -> kept, with rejections per reason), a histogram of
every numeric score with its threshold, the registered scorers' columns and the decision order
(curation/report_scores.py), thumbnails of kept and rejected clips, the shard buckets and the
multi-view balance of the kept clips (curation/balance.py). Everything is inline: CSS, SVG charts
(curation/report_svg.py) and JPEG thumbnails as data: URIs, so the file can be mailed or archived as is.
Key numbers are also in ``data-count`` attributes for tools and tests. The same catalog gives the same
bytes (everything is sorted; no timestamps).

Thumbnails come from the decode pass's sparse frames (``<catalog dir>/.work/frames/<video_id>/``), the
frame nearest the clip's middle; when those are gone, the first frame of the clip's mp4; else a labelled
placeholder, never a broken image.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from curation import score_columns
from curation.balance import DEFAULT_TARGETS, VIEW_CLASSES, VIEWS, balance, proportions, tv_distance
from curation.db import Catalog
from curation.report_balance import balance_exports_html
from curation.report_scores import scorers_html
from curation.report_svg import fmt, funnel_svg, histogram_svg

THUMBS_PER_GROUP = 6
THUMB_BOX = (192, 108)  # (width, height) px a thumbnail is fitted into
JPEG_QUALITY = 80
# the numeric score columns as of import (the built-in scorers'); _histograms reads the registry
NUMERIC_SCORES: tuple[str, ...] = score_columns.numeric()

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px auto;max-width:1100px;color:#222;padding:0 16px}
h1{margin-bottom:0}.sub{color:#666;margin-top:4px}h2{border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}
th{background:#f4f4f4}td.l,th.l{text-align:left}
.grid{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start}
figure{margin:0;width:192px;font-size:11px;color:#444}figure img,.ph{width:192px;height:108px;
object-fit:contain;background:#111;display:block}.ph{background:#eee;color:#888;display:flex;
align-items:center;justify-content:center;border:1px dashed #bbb;box-sizing:border-box}
svg text{font:11px system-ui,sans-serif;fill:#333}svg text.s{font-size:10px;fill:#666}
.bar{display:inline-block;height:9px;background:#2f8f5b;vertical-align:middle}.bar.t{background:#1d3557}
.warn{color:#c8553d}
"""

# Records in <body data-images-*> how many images decoded, for the browser test and humans alike.
SCRIPT = """addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.dataset.imagesTotal = imgs.length;
  document.body.dataset.imagesLoaded = ok;
  document.body.dataset.imagesBroken = imgs.length - ok;
});"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _count_cell(key: str, n: int) -> str:
    return f'<td data-count="{_e(key)}">{n}</td>'


def _table(head: list[str], rows: list[str]) -> str:
    ths = "".join(f'<th class="l">{_e(h)}</th>' if i == 0 else f"<th>{_e(h)}</th>"
                  for i, h in enumerate(head))
    return f'<table><tr>{ths}</tr>{"".join(rows)}</table>'


# --- funnel -------------------------------------------------------------------------------------------
def _funnel(cat: Catalog) -> dict[str, Any]:
    one = lambda sql: int(cat.query(sql)[1][0][0])
    counts = {
        "videos": one("SELECT count(*) FROM videos"),
        "videos_ok": one("SELECT count(*) FROM videos WHERE status = 'ok'"),
        "videos_error": one("SELECT count(*) FROM videos WHERE status = 'error'"),
        "files": one("SELECT count(*) FROM files"),
        "files_duplicate": one("SELECT count(*) FROM files WHERE status = 'duplicate'"),
        "files_error": one("SELECT count(*) FROM files WHERE status = 'error'"),
        "shots": one("SELECT count(*) FROM shots"),
        "clips": one("SELECT count(*) FROM clips"),
        "clips_kept": one("SELECT count(*) FROM clips WHERE status = 'kept'"),
        "clips_rejected": one("SELECT count(*) FROM clips WHERE status = 'rejected'"),
    }
    rejected = dict(cat.query(
        "SELECT coalesce(reject_reason, '?'), count(*) FROM clips WHERE status = 'rejected' "
        "GROUP BY 1 ORDER BY 2 DESC, 1")[1])
    return {"counts": counts, "rejected": rejected}


def _funnel_html(f: dict[str, Any]) -> str:
    c = f["counts"]
    labels = [
        ("videos", "videos"), ("videos_ok", "videos ok"), ("videos_error", "videos with errors"),
        ("files", "input files"), ("files_duplicate", "duplicate files"), ("files_error", "unreadable files"),
        ("shots", "shots"), ("clips", "clips"), ("clips_kept", "clips kept"),
        ("clips_rejected", "clips rejected"),
    ]
    rows = [f'<tr><td class="l">{_e(label)}</td>{_count_cell(k, c[k])}</tr>' for k, label in labels]
    reasons = [f'<tr><td class="l">{_e(r)}</td>{_count_cell("rejected:" + r, n)}</tr>'
               for r, n in f["rejected"].items()] or ['<tr><td class="l">none</td><td>0</td></tr>']
    svg = funnel_svg([("videos ok", c["videos_ok"]), ("shots", c["shots"]), ("clips", c["clips"]),
                      ("kept", c["clips_kept"])])
    return (f'<section id="funnel"><h2>Funnel</h2>{svg}<div class="grid">'
            f'{_table(["stage", "count"], rows)}{_table(["reject reason", "clips"], reasons)}'
            "</div></section>")


# --- histograms ---------------------------------------------------------------------------------------
def _histograms(
    clips: list[dict[str, Any]], thresholds: Mapping[str, tuple[str, float]]
) -> tuple[str, dict[str, int]]:
    figs: list[str] = []
    numbers: dict[str, int] = {}
    for col in score_columns.numeric():  # every registered scorer's numeric columns
        values = [(float(r[col]), r["status"] == "kept") for r in clips if r.get(col) is not None]
        kept = [v for v, k in values if k and math.isfinite(v)]
        rejected = [v for v, k in values if not k and math.isfinite(v)]
        if kept or rejected:
            figs.append(histogram_svg(col, kept, rejected, thresholds.get(col)))
            numbers[col] = len(kept) + len(rejected)
    legend = ('<p class="sub"><span class="bar" style="width:12px"></span> kept &nbsp; '
              '<span class="bar" style="width:12px;background:#c8553d"></span> rejected &nbsp; '
              "dashed line: threshold</p>")
    body = "".join(figs) or '<p class="sub">no scores recorded</p>'
    return f'<section id="scores"><h2>Scores</h2>{legend}<div class="grid">{body}</div></section>', numbers


# --- thumbnails ---------------------------------------------------------------------------------------
def _jpeg_uri(image: Image.Image) -> str:
    image = image.convert("RGB")
    image.thumbnail(THUMB_BOX)
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=JPEG_QUALITY, optimize=False)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _sparse_frame(root: Path, clip: dict[str, Any], cache: dict[str, Any]) -> Image.Image | None:
    """The sparse frame nearest the clip's middle, or None when the frames are gone."""
    vid = clip["video_id"]
    if vid not in cache:
        d = root / ".work" / "frames" / str(vid)
        try:
            cache[vid] = (np.load(d / "sparse.npy", mmap_mode="r"), np.load(d / "sparse_idx.npy"))
        except (OSError, ValueError):
            cache[vid] = None
    if cache[vid] is None or len(cache[vid][1]) == 0 or clip.get("start_frame") is None:
        return None
    frames, idx = cache[vid]
    middle = (int(clip["start_frame"]) + int(clip["end_frame"]) - 1) / 2  # end_frame is exclusive
    k = int(np.argmin(np.abs(idx.astype(np.float64) - middle)))  # first of equals: deterministic
    if k >= len(frames):
        return None
    return Image.fromarray(np.ascontiguousarray(frames[k]))


def _mp4_frame(root: Path, clip: dict[str, Any]) -> Image.Image | None:
    """The first frame of the clip's own file, or None (no file, unreadable, PyAV not installed)."""
    if not clip.get("path") or not (root / clip["path"]).is_file():
        return None
    try:
        import av
    except ImportError:
        return None
    try:
        with av.open(str(root / clip["path"])) as container:
            frame = next(container.decode(video=0), None)
            return None if frame is None else frame.to_image()
    except (av.FFmpegError, OSError, ValueError):
        return None


def _failing(clip: dict[str, Any], thresholds: Mapping[str, tuple[str, float]]) -> list[str]:
    """'blur 12 < 60'-style notes for every threshold this clip fails."""
    out: list[str] = []
    for col, (side, limit) in sorted(thresholds.items()):
        v = clip.get(col)
        if v is not None and ((side == "min" and v < limit) or (side == "max" and v > limit)):
            out.append(f"{col} {fmt(v)} {'<' if side == 'min' else '>'} {fmt(limit)}")
    return out


def _thumbnails(root: Path, clips: list[dict[str, Any]], reasons: list[str],
                thresholds: Mapping[str, tuple[str, float]]) -> tuple[str, dict[str, dict[str, int]]]:
    cache: dict[str, Any] = {}
    groups = [("kept", [c for c in clips if c["status"] == "kept"])]
    groups += [(f"rejected: {r}", [c for c in clips if c["status"] != "kept"
                                   and (c["reject_reason"] or "?") == r]) for r in reasons]
    parts: list[str] = []
    numbers: dict[str, dict[str, int]] = {}
    for name, members in groups:
        figs: list[str] = []
        used = {"frames": 0, "mp4": 0, "placeholder": 0}
        for clip in members[:THUMBS_PER_GROUP]:
            image, source = _sparse_frame(root, clip, cache), "frames"
            if image is None:
                image, source = _mp4_frame(root, clip), "mp4"
            used["placeholder" if image is None else source] += 1
            pic = (f'<img alt="{_e(clip["clip_id"])}" data-source="{source}" src="{_jpeg_uri(image)}">'
                   if image is not None else '<div class="ph" data-source="placeholder">no frames</div>')
            notes = "; ".join(_failing(clip, thresholds))
            span = float(clip["end_s"] or 0) - float(clip["start_s"] or 0)
            figs.append(f'<figure data-clip="{_e(clip["clip_id"])}">{pic}<figcaption>{_e(clip["clip_id"])} '
                        f'&middot; {span:.1f} s<br><span class="warn">{_e(notes)}</span>'
                        "</figcaption></figure>")
        numbers[name] = used
        more = f" (first {len(figs)} of {len(members)}, by clip_id)" if len(members) > len(figs) else ""
        parts.append(f'<h3>{_e(name)}{_e(more)}</h3><div class="grid">{"".join(figs) or "none"}</div>')
    return f'<section id="clips"><h2>Clips</h2>{"".join(parts)}</section>', numbers


# --- buckets and balance ------------------------------------------------------------------------------
def _buckets(cat: Catalog) -> tuple[str, dict[str, int]]:
    rows = cat.query("SELECT coalesce(bucket, '?'), count(*), coalesce(sum(n_samples), 0), "
                     "coalesce(sum(bytes), 0) FROM shards GROUP BY 1 ORDER BY 1")[1]
    trs = [f'<tr><td class="l">{_e(b)}</td><td>{k}</td>{_count_cell("bucket:" + b, int(n))}'
           f"<td>{int(nbytes) / 1e6:.1f}</td></tr>" for b, k, n, nbytes in rows]
    total = sum(int(r[2]) for r in rows)
    trs.append(f'<tr><th class="l">total</th><th>{sum(r[1] for r in rows)}</th>'
               f'<th data-count="shard_samples">{total}</th><th></th></tr>')
    body = _table(["bucket", "shards", "samples", "MB"], trs)
    return f'<section id="buckets"><h2>Shard buckets</h2>{body}</section>', {b: int(n) for b, _, n, _ in rows}


def _kept_rows(cat: Catalog) -> list[dict[str, Any]]:
    rows = cat.dicts("SELECT clip_id, motion, start_s, end_s, width, height, fps FROM clips "
                     "WHERE status = 'kept' ORDER BY clip_id")
    langs: dict[str, set[str]] = {}
    for clip_id, lang in cat.query("SELECT DISTINCT c.clip_id, c.lang FROM captions c JOIN clips k "
                                   "USING (clip_id) WHERE k.status = 'kept' ORDER BY 1, 2")[1]:
        langs.setdefault(clip_id, set()).add(lang)
    for r in rows:
        r["langs"] = langs.get(r["clip_id"], set())
    return rows


def _bar(share: float, cls: str = "") -> str:
    return f'<span class="bar {cls}" style="width:{share * 80:.1f}px"></span> {share:.1%}'


def _balance(cat: Catalog, targets: Mapping[str, Mapping[str, float]]) -> tuple[str, dict[str, Any]]:
    rows = _kept_rows(cat)
    result = balance(rows, targets)
    pool = proportions(rows)
    pool_distance = {v: tv_distance(pool[v], t) for v, t in result.targets.items()}
    trs: list[str] = []
    for view in VIEWS:
        target = result.targets.get(view, {})
        classes = [c for c in (*VIEW_CLASSES[view], *sorted(pool[view])) if c in target or pool[view].get(c)]
        for i, c in enumerate(dict.fromkeys(classes)):
            head = f'<td class="l" rowspan="{len(dict.fromkeys(classes))}">{_e(view)}</td>' if i == 0 else ""
            t = f"{_bar(target.get(c, 0.0), 't')}" if view in result.targets else "no target"
            trs.append(f'<tr>{head}<td class="l">{_e(c)}</td><td class="l">{t}</td>'
                       f'<td class="l">{_bar(pool[view].get(c, 0.0))}</td>'
                       f'<td>{result.available[view].get(c, 0)}</td>'
                       f'<td class="l">{_bar(result.achieved[view].get(c, 0.0))}</td></tr>')
    dist = [f'<tr><td class="l">{_e(v)}</td><td data-distance-pool="{_e(v)}">{pool_distance[v]:.3f}</td>'
            f'<td data-distance-balanced="{_e(v)}">{result.distance[v]:.3f}</td></tr>'
            for v in result.targets]
    missing = "".join(f'<p class="warn">target class {_e(v)}/{_e(c)} has no kept clips: unreachable</p>'
                      for v, c in result.unreachable)
    body = (f'<p>kept clips (pool): <b data-count="balance_pool">{len(rows)}</b>; balanced subset: '
            f'<b data-count="balance_selected">{len(result.selected)}</b> (largest subset meeting every '
            f"targeted view at once; curation/balance.py)</p>{missing}"
            + _table(["view", "class", "target", "pool (kept)", "clips", "balanced subset"], trs)
            + _table(["view", "TV distance: pool", "balanced"], dist))
    numbers = {"pool": len(rows), "selected": len(result.selected), "distance_pool": pool_distance,
               "distance_balanced": result.distance, "unreachable": result.unreachable}
    return f'<section id="balance"><h2>Balance</h2>{body}</section>', numbers


def write_report(
    db_path: str | Path,
    out_html: str | Path,
    targets: Mapping[str, Mapping[str, float]] = DEFAULT_TARGETS,
    thresholds: Mapping[str, tuple[str, float]] | None = None,
    rules: Sequence[tuple[str, str]] | None = None,
) -> dict[str, Any]:
    """Write the HTML report of the catalog at ``db_path`` (opened read-only) to ``out_html``.

    Args:
        db_path: ``<out>/catalog.duckdb``; frames and clip files are looked up beside it.
        out_html: the page to write (parent directories are created).
        targets: balance targets, view -> class -> ratio (curation/balance.py).
        thresholds: score column -> ('min' | 'max', value), drawn on the histograms and used to
            annotate rejected thumbnails.
        rules: the decision order as (reason, rule owner) (pipelines/decide.py ``rule_table``),
            listed with the clips each rejected; None leaves the list out.
    Returns:
        The numbers rendered: funnel counts, rejections per reason, values per histogram, thumbnail
        sources per group, samples per bucket and the balance summary.
    """
    db_path, thresholds = Path(db_path), dict(thresholds or {})
    with Catalog(db_path, read_only=True) as cat:
        funnel = _funnel(cat)
        clips = cat.dicts("SELECT * FROM clips ORDER BY clip_id")
        hist_html, hist = _histograms(clips, thresholds)
        root = db_path.resolve().parent
        thumbs_html, thumbs = _thumbnails(root, clips, list(funnel["rejected"]), thresholds)
        bucket_html, buckets = _buckets(cat)
        balance_html, bal = _balance(cat, targets)
        exports_html, exports = balance_exports_html(cat)
        scorers_section, scorers = scorers_html(cat, rules)
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>vidloom curation report</title><style>{CSS}</style></head><body>"
        f'<h1>vidloom curation report</h1><p class="sub">catalog {_e(db_path.resolve())}</p>'
        f"{_funnel_html(funnel)}{hist_html}{scorers_section}{thumbs_html}{bucket_html}{balance_html}{exports_html}"
        f"<script>{SCRIPT}</script></body></html>\n"
    )
    out = Path(out_html)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)
    return {"funnel": funnel["counts"], "rejected": funnel["rejected"], "histograms": hist,
            "thumbnails": thumbs, "buckets": buckets, "balance": bal,
            "balanced_exports": exports, "scorers": scorers}
