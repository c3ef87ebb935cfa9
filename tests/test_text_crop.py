"""Crop rather than drop: overlay text in a band or a corner is cropped off, a centred title rejects.

Pure tests of the crop search on box lists, then one real curate run (tiny preset, sequential
runner, a real DuckDB catalog, real RapidOCR and ffmpeg) over real Sintel trailer footage
(tests/data/real, CC-BY) with text burned in by ffmpeg drawtext: a subtitle that appears half
way through, a corner logo, and a large centred title.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from pipelines.config import FilterConfig
from pipelines.decide import crop_columns, reject_reason
from pipelines.overlay_text import TextBox
from pipelines.text_crop import decode_boxes, encode_boxes, text_crop, union_area, union_boxes

REAL = Path(__file__).resolve().parent / "data" / "real"
FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf")
W, H = 640, 360


def rows_kept(crop: Any) -> range:
    return range(crop.y, crop.y + crop.h)


# ----------------------------------------------------------------- the crop search on box lists


def test_bottom_subtitle_band_is_cut_off_full_width_even_and_padded() -> None:
    sub = (0.2, 0.85, 0.8, 0.95)  # rows 306-342 of 360
    crop = text_crop([sub], W, H, margin=0.02)
    assert crop is not None and crop.reason == "text_bottom_band"
    assert (crop.x, crop.y, crop.w) == (0, 0, W)
    assert crop.h <= 306 - 0.02 * H and crop.h >= 306 - 0.02 * H - 2  # padded by 7.2 px, then even
    assert all(v % 2 == 0 for v in (crop.x, crop.y, crop.w, crop.h))


def test_a_corner_logo_is_cut_by_the_cheaper_side() -> None:
    logo = (0.86, 0.03, 0.97, 0.10)  # top right: cutting 43 rows costs less than 98 columns
    crop = text_crop([logo], W, H)
    assert crop is not None and crop.reason == "text_corner_top_right"
    assert crop.y >= 0.10 * H and (crop.x, crop.w, crop.y + crop.h) == (0, W, H)
    tall = (0.90, 0.05, 0.98, 0.30)  # a vertical logo: now the columns are cheaper
    crop = text_crop([tall], W, H)
    assert crop is not None and crop.reason == "text_corner_top_right"
    assert crop.x + crop.w <= 0.90 * W and (crop.y, crop.h) == (0, H)


def test_titles_in_the_middle_or_scattered_text_leave_no_crop() -> None:
    assert text_crop([(0.35, 0.42, 0.65, 0.58)], W, H) is None  # centred title
    scattered = [(0.05, 0.05, 0.2, 0.1), (0.4, 0.3, 0.6, 0.36), (0.75, 0.85, 0.95, 0.92)]
    assert text_crop(scattered, W, H) is None
    both_bands = [(0.2, 0.02, 0.8, 0.09), (0.2, 0.9, 0.8, 0.97)]  # 2 x ~11% > 20%
    assert text_crop(both_bands, W, H) is None
    assert text_crop(both_bands, W, H, min_area=0.7) is not None
    two_thin = [(0.3, 0.01, 0.7, 0.05), (0.3, 0.93, 0.7, 0.98)]
    crop = text_crop(two_thin, W, H)
    assert crop is not None and crop.reason == "text_top_band+text_bottom_band"


def test_the_text_crop_lies_inside_the_letterbox_picture_and_counts_area_against_it() -> None:
    picture = (0, 44, 640, 272)  # bars of 44 rows above and below
    sub = (0.25, 0.76, 0.75, 0.84)  # inside the picture, near its bottom (rows 274-302)
    crop = text_crop([sub], W, H, picture)
    assert crop is not None and crop.reason == "text_bottom_band+letterbox"
    assert crop.y == 44 and crop.y + crop.h <= 274 - 7 and crop.w == 640
    assert crop.w * crop.h >= 0.8 * 640 * 272  # of the picture, not of the barred frame
    in_bar = (0.3, 0.90, 0.7, 0.96)  # subtitles in the bottom bar: the bars alone are cut
    crop = text_crop([in_bar], W, H, picture)
    assert crop is not None and (crop.x, crop.y, crop.w, crop.h) == (0, 44, 640, 272)
    assert crop.reason == "letterbox"


def test_aspect_limit_narrows_the_crop_about_its_centre() -> None:
    sub = (0.2, 0.7, 0.8, 0.8)  # a 30% band: only with min_area 0.6
    assert text_crop([sub], W, H) is None
    wide = text_crop([sub], W, H, min_area=0.6, max_aspect_change=2.0)
    assert wide is not None and wide.w == W
    narrow = text_crop([sub], W, H, min_area=0.5, max_aspect_change=1.2)
    assert narrow is not None and narrow.w / narrow.h <= 1.2 * W / H + 1e-9
    assert narrow.w < W and abs((narrow.x + narrow.w / 2) - W / 2) <= 2  # centred
    assert text_crop([sub], W, H, min_area=0.6, max_aspect_change=1.2) is None  # narrowing costs area


def test_odd_frame_sizes_give_even_aligned_crops() -> None:
    crop = text_crop([(0.0, 0.88, 1.0, 0.97)], 641, 361)
    assert crop is not None
    assert all(v % 2 == 0 for v in (crop.x, crop.y, crop.w, crop.h)) and crop.x + crop.w <= 641


def test_boxes_pool_over_frames_and_round_outwards() -> None:
    sub = TextBox("hello", 0.9, 50.0, 120.0, 200.0, 136.0)
    inner = TextBox("hell", 0.9, 60.0, 121.0, 150.0, 135.0)
    logo = TextBox("LOGO", 0.9, 220.0, 4.0, 250.0, 14.0)
    frames = [[], [sub], [inner, logo], []]  # text in two of four frames
    pooled = union_boxes(frames, 256, 144)
    want = [(50 / 256, 120 / 144, 200 / 256, 136 / 144), (220 / 256, 4 / 144, 250 / 256, 14 / 144)]
    assert pooled == sorted(want)  # the reading inside another box adds nothing
    stored = decode_boxes(encode_boxes(pooled))
    for (a0, b0, a1, b1), (c0, d0, c1, d1) in zip(pooled, stored, strict=True):
        assert c0 <= a0 and d0 <= b0 and c1 >= a1 and d1 >= b1  # a stored box never shrinks
    assert decode_boxes(None) == [] and decode_boxes("[]") == []
    assert union_area([(0, 0, 0.5, 0.5), (0.25, 0.25, 0.75, 0.75)]) == pytest.approx(0.4375)


def _row(**kw: Any) -> dict[str, Any]:
    base = {"start_s": 0.0, "end_s": 3.0, "width": W, "height": H, "luma": 100.0, "blur": 200.0,
            "motion": 0.05, "crop_x": 0, "crop_y": 0, "crop_w": W, "crop_h": H}
    return {**base, **kw}


def test_the_text_rule_rejects_only_when_no_crop_saves_the_clip() -> None:
    f = FilterConfig()
    band = _row(text_area=0.05, text_boxes=encode_boxes([(0.2, 0.85, 0.8, 0.95)]))
    band.update(crop_columns(band, f))
    assert band["crop_reason"] == "text_bottom_band" and reject_reason(band, f) is None
    title = _row(text_area=0.05, text_boxes=encode_boxes([(0.3, 0.4, 0.7, 0.6)]))
    title.update(crop_columns(title, f))
    assert title["extract_crop_w"] is None and reject_reason(title, f) == "text"
    # a subtitle in one of four OCR frames: text_area (the mean) passes, the union is cropped
    brief = _row(text_area=0.015, text_boxes=encode_boxes([(0.2, 0.85, 0.8, 0.95)]))
    brief.update(crop_columns(brief, f))
    assert brief["crop_reason"] == "text_bottom_band" and reject_reason(brief, f) is None
    little = _row(text_area=0.004, text_boxes=encode_boxes([(0.9, 0.9, 0.95, 0.95)]))  # under the threshold
    assert crop_columns(little, f)["extract_crop_w"] is None
    old = _row(text_area=0.05)  # scored before text_boxes existed: decided as before
    old.update(crop_columns(old, f))
    assert reject_reason(old, f) == "text"
    cropped_file = _row(text_area=0.05, text_boxes=band["text_boxes"], width=640, height=298,
                        source_width=W, source_height=H)  # a rescore after the cropped cut
    assert {k: v for k, v in crop_columns(cropped_file, f).items()} == {
        k: band[k] for k in crop_columns(band, f)
    }


def test_a_cropped_clip_is_always_re_encoded_through_an_even_crop() -> None:
    from pipelines.clip_cut import ffmpeg_args, plan_extraction

    pts, keys = np.arange(48) / 24.0, np.zeros(48, bool)
    keys[0] = True
    copy = plan_extraction(0, 24, pts, keys, True)
    assert copy.mode == "copy" and copy.crop is None
    plan = plan_extraction(0, 24, pts, keys, True, crop=(0, 44, 640, 230))
    assert plan.mode == "reencode" and plan.crop == (0, 44, 640, 230)
    args = ffmpeg_args(plan, "in.mp4", "out.mp4", codec="libx264", crf=18, preset="veryfast", threads=1)
    assert args[args.index("-vf") + 1] == "crop=640:230:0:44:exact=1"
    with pytest.raises(ValueError, match="even"):
        plan_extraction(0, 24, pts, keys, True, crop=(1, 44, 640, 230))


# ----------------------------------------------------------------- real footage through curate


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True, capture_output=True)


def render(src: Path, frames: tuple[int, int], draw: str | None, dst: Path) -> None:
    """Frames [a, b) of a real excerpt, letterbox bars cropped off (640x272), optionally with
    drawtext ``draw`` burned in; x264 at a fixed quality so the clean and the text versions
    differ only where the text is."""
    a, b = frames
    vf = f"trim=start_frame={a}:end_frame={b},setpts=PTS-STARTPTS,crop=640:272:0:44"
    if draw:
        vf += f",drawtext=fontfile={FONT}:fontcolor=white:borderw=3:bordercolor=black:{draw}"
    ffmpeg("-i", str(src), "-vf", vf, "-c:v", "libx264", "-preset", "veryfast", "-crf", "16",
           "-pix_fmt", "yuv420p", "-g", "24", str(dst))


def decode_rgb(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def text_rows_and_cols(clean: Path, text: Path) -> tuple[np.ndarray, np.ndarray]:
    """The rows and columns where the burned-in text changed pixels (any frame, any channel > 48)."""
    diff = np.abs(decode_rgb(text).astype(np.int16) - decode_rgb(clean).astype(np.int16))
    changed = diff.max(axis=(0, 3)) > 48
    return np.flatnonzero(changed.any(axis=1)), np.flatnonzero(changed.any(axis=0))


@pytest.fixture(scope="module")
def curated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    pytest.importorskip("rapidocr")
    if not FONT.exists():
        pytest.skip("no DejaVu Sans Bold font (apt-get install fonts-dejavu-core)")
    from curation.db import Catalog
    from pipelines.config import load_config
    from pipelines.curate import run_curate

    root = tmp_path_factory.mktemp("text_crop")
    src, clean = root / "src", root / "clean"
    src.mkdir(), clean.mkdir()
    title, cuts = REAL / "sintel_title.mp4", REAL / "sintel_cuts.mp4"
    plans = {
        # the desert pan before the real title fades in; the subtitle shows from 1.5 s on
        "subtitle.mp4": (title, (0, 80), "text='I have been looking for you':fontsize=22:"
                         "x=(w-text_w)/2:y=h-text_h-12:enable='gte(t,1.5)'"),
        # one shot between two cuts (frames 31-80) with a station logo in the top right corner
        "logo.mp4": (cuts, (31, 81), "text='VIDLOOM':fontsize=24:x=w-text_w-12:y=10"),
        # a large title in the middle of the desert shot
        "title.mp4": (title, (0, 72), "text='THE DESERT':fontsize=52:x=(w-text_w)/2:y=(h-text_h)/2"),
    }
    for name, (source, span, draw) in plans.items():
        render(source, span, draw, src / name)
        render(source, span, None, clean / name)
    out = root / "out"
    cfg = load_config("tiny")
    cfg.runtime.runner, cfg.runtime.quiet = "sequential", True
    run_curate([str(src)], out, cfg)
    with Catalog(out / "catalog.duckdb", read_only=True) as cat:
        rows = cat.dicts(
            "SELECT c.*, v.path AS source FROM clips c JOIN videos v USING (video_id) "
            "WHERE c.end_frame - c.start_frame > 24 ORDER BY c.start_frame"
        )
    by_name = {Path(r["source"]).name: r for r in rows}
    assert set(by_name) == set(plans), rows
    return {"out": out, "src": src, "clean": clean, "clips": by_name, "cfg": cfg}


@pytest.fixture(scope="module")
def ocr() -> Any:
    from pipelines.stages.text_scorer import load_rapidocr

    return load_rapidocr()


def ocr_text(ocr: Any, frames: np.ndarray) -> str:
    from pipelines.stages.text_scorer import ocr_frames

    return " | ".join(b.text for f in ocr_frames(ocr, frames) for b in f)


def test_a_real_subtitle_band_is_cropped_off_and_the_clip_kept(curated: dict[str, Any], ocr: Any) -> None:
    c = curated["clips"]["subtitle.mp4"]
    assert c["status"] == "kept" and c["reject_reason"] is None
    assert "looking" in (c["ocr_text"] or "").lower() and c["text_area"] > 0  # text scores as before
    assert c["crop_reason"] == "text_bottom_band"
    x, y, w, h = (c[f"extract_crop_{k}"] for k in "xywh")
    rows, _ = text_rows_and_cols(curated["clean"] / "subtitle.mp4", curated["src"] / "subtitle.mp4")
    assert len(rows) > 10
    assert (x, y, w) == (0, 0, 640) and y + h <= rows.min()  # every subtitle row is left out
    assert h >= 0.8 * 272 and all(v % 2 == 0 for v in (x, y, w, h))
    # the extracted clip is exactly the crop of the source, re-encoded (a crop is never a copy)
    clip = curated["out"] / c["path"]
    frames = decode_rgb(clip)
    assert frames.shape[1:3] == (h, w) and (c["width"], c["height"]) == (w, h)
    assert c["extract_mode"] == "reencode" and clip.name.endswith(f"_crop_{x}_{y}_{w}_{h}.mp4")
    clean = decode_rgb(curated["clean"] / "subtitle.mp4")[c["start_frame"] : c["end_frame"]]
    clean = clean[:, y : y + h, x : x + w]
    assert len(frames) == len(clean) and np.abs(frames.astype(float) - clean).mean() < 3.0
    # OCR finds the subtitle in the source's late frames and nothing anywhere in the clip
    source = decode_rgb(curated["src"] / "subtitle.mp4")
    assert "looking" in ocr_text(ocr, source[[50, 70]]).lower()
    assert ocr_text(ocr, frames[::8]) == ""


def test_a_real_corner_logo_is_cropped_off(curated: dict[str, Any], ocr: Any) -> None:
    c = curated["clips"]["logo.mp4"]
    assert c["status"] == "kept" and c["crop_reason"] == "text_corner_top_right", c
    x, y, w, h = (c[f"extract_crop_{k}"] for k in "xywh")
    rows, cols = text_rows_and_cols(curated["clean"] / "logo.mp4", curated["src"] / "logo.mp4")
    assert rows.max() < y or cols.min() >= x + w  # the logo lies outside the crop
    frames = decode_rgb(curated["out"] / c["path"])
    assert frames.shape[1:3] == (h, w)
    assert ocr_text(ocr, frames[::8]) == ""


def test_a_real_centred_title_is_rejected_with_text(curated: dict[str, Any]) -> None:
    c = curated["clips"]["title.mp4"]
    assert c["status"] == "rejected" and c["reject_reason"] == "text", c
    assert c["text_area"] > curated["cfg"].filters.max_text_area and "DESERT" in (c["ocr_text"] or "")
    assert c["crop_reason"] is None and c["extract_crop_w"] is None and c["path"] is None


def test_rescore_changes_the_crop_decision_without_ocr(curated: dict[str, Any], tmp_path: Path) -> None:
    from curation.db import Catalog
    from pipelines.curate import run_curate, run_step_by_name

    out = tmp_path / "out"
    shutil.copytree(curated["out"], out)
    cfg = curated["cfg"]
    strict = dataclasses.replace(cfg, filters=dataclasses.replace(cfg.filters, min_crop_area=0.95))
    query = "SELECT clip_id, coalesce(reject_reason, 'kept'), crop_reason, extract_crop_h FROM clips"
    ids = {curated["clips"][n]["clip_id"]: n for n in ("subtitle.mp4", "logo.mp4")}
    for config, want in ((strict, "text"), (cfg, "kept")):
        run_curate([str(curated["src"])], out, config, rescore=True)  # the filter step alone
        with Catalog(out / "catalog.duckdb", read_only=True) as cat:
            got = {r[0]: r[1:] for r in cat.query(query)[1] if r[0] in ids}
        for clip_id, name in ids.items():
            c = curated["clips"][name]
            crop = (None, None) if want == "text" else (c["crop_reason"], c["extract_crop_h"])
            assert got[clip_id] == (want, *crop), name  # no crop keeps 95%; at 80% as first decided
    # a wider margin moves the subtitle crop: the next export cuts a new file of the new size
    wider = dataclasses.replace(cfg, filters=dataclasses.replace(cfg.filters, text_crop_margin=0.04))
    run_curate([str(curated["src"])], out, wider, rescore=True)
    run_step_by_name("export", [], out, wider)
    sub = curated["clips"]["subtitle.mp4"]
    with Catalog(out / "catalog.duckdb", read_only=True) as cat:
        (row,) = cat.dicts("SELECT * FROM clips WHERE clip_id = ?", [sub["clip_id"]])
    assert row["status"] == "kept" and row["extract_crop_h"] < sub["extract_crop_h"]
    assert row["path"] != sub["path"] and row["height"] == row["extract_crop_h"]
    assert decode_rgb(out / row["path"]).shape[1:3] == (row["extract_crop_h"], row["extract_crop_w"])
