"""Multi-shot samples: planning runs of shots, the sample layout, the loader's spans, text routing.

The planning tests build a real DuckDB catalog row by row (shots with their opening transition,
their clips and captions); the end-to-end test curates a rendered video with planted hard cuts
and a dissolve, exports it with ``vidloom export --multi-shot``, reads it back with the loader and
trains a few tiny DiT steps that route each shot's caption to its own latent frames.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from curation import schema
from curation.db import Catalog
from pipelines.config import ShardConfig
from pipelines.multishot import plan_samples
from training.data.multishot import encode_shot_texts, latent_shot_ids, window_shots

VIDEO = "ab" * 8
SPLIT = "cd" * 8
FPS = 25.0
OK_CHECKS = json.dumps({name: {"ok": True} for name in ("lang", "length", "numbers", "colours")})


def _catalog(tmp_path: Path, shots: list[tuple[int, str]],
             clips_per_shot: dict[int, list[tuple[int, int]]] | None = None,
             no_caption: tuple[int, ...] = (), rejected: tuple[int, ...] = ()) -> tuple[Catalog, list[str]]:
    """A catalog with one video whose shots have the given (frames, opening transition); each shot
    gets one clip (its frames minus one at each end) unless ``clips_per_shot`` says otherwise."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    cat = Catalog(tmp_path / "catalog.duckdb")
    rows, clips, caps, pos = [], [], [], 0
    for i, (n, kind) in enumerate(shots):
        rows.append(schema.Shot(VIDEO, i, pos, pos + n, pos / FPS, (pos + n) / FPS, "test", kind))  # type: ignore[arg-type]
        for a, b in (clips_per_shot or {}).get(i, [(pos + 1, pos + n - 1)]):
            cid = schema.clip_id_for(VIDEO, a, b, SPLIT)
            clips.append(schema.Clip(cid, VIDEO, i, a, b, a / FPS, b / FPS, 320, 180, FPS, split_hash=SPLIT,
                                     status="rejected" if i in rejected else "kept"))
            for lang in ("en", "zh"):
                checks = json.dumps({"lang": {"ok": False}}) if i in no_caption else OK_CHECKS
                caps.append(schema.Caption(cid, lang, f"{lang} caption of shot {i} clip {a}", checks=checks))  # type: ignore[arg-type]
        pos += n
    cat.upsert_objects("shots", rows)
    cat.upsert_objects("clips", clips)
    cat.upsert_objects("captions", caps)
    return cat, [c.clip_id for c in clips]


def _shot_lists(plan: Any) -> list[list[int]]:
    return [[p.shot.shot_index for p in s.parts] for s in plan.samples]


def test_a_gradual_transition_breaks_a_multishot_sample(tmp_path: Path) -> None:
    cat, ids = _catalog(tmp_path, [(40, "start"), (40, "cut"), (40, "dissolve"), (40, "cut"), (30, "fade")])
    with cat:
        plan = plan_samples(cat, ids, ShardConfig())
    assert _shot_lists(plan) == [[0, 1], [2, 3]]
    assert plan.breaks == {"gradual": 2} and plan.short_runs == 1  # shot 4 (after the fade) stands alone
    first, second = plan.samples
    assert (first.start_frame, first.end_frame) == (1, 79)  # shot 0's clip start .. shot 1's clip end
    assert first.shot_spans() == [(0, 39), (39, 78)]  # the catalog shots [0, 40), [40, 80) made relative
    assert second.shot_spans() == [(0, 39), (39, 78)] and second.start_frame == 81
    assert [p.caption_en for p in first.parts] == [
        "en caption of shot 0 clip 1", "en caption of shot 1 clip 41"]
    assert [p.caption_zh for p in second.parts] == [
        "zh caption of shot 2 clip 81", "zh caption of shot 3 clip 121"]


def test_missing_caption_rejection_and_limits_end_a_sample(tmp_path: Path) -> None:
    shots = [(40, "start")] + [(40, "cut")] * 6
    cat, ids = _catalog(tmp_path, shots, no_caption=(2,), rejected=(5,))
    with cat:
        plan = plan_samples(cat, ids, ShardConfig())
        assert _shot_lists(plan) == [[0, 1], [3, 4]]  # shot 6 alone after the rejected shot 5
        assert plan.breaks == {"no_caption": 1, "not_accepted": 1} and plan.short_runs == 1
        # the selection decides too: a kept clip left out of --where is not part of any sample
        without_1 = [i for k, i in enumerate(ids) if k != 1]
        assert _shot_lists(plan_samples(cat, without_1, ShardConfig())) == [[3, 4]]
    cat, ids = _catalog(tmp_path / "b", [(40, "start")] + [(40, "cut")] * 6)
    with cat:
        plan = plan_samples(cat, ids, ShardConfig(multishot_max_shots=3))
        assert _shot_lists(plan) == [[0, 1, 2], [3, 4, 5]]
        assert plan.breaks == {"limit": 2} and plan.short_runs == 1
        by_time = plan_samples(cat, ids, ShardConfig(multishot_max_s=4.0))  # 1.56 s a shot + cut trims
        assert _shot_lists(by_time) == [[0, 1], [2, 3], [4, 5]]
        assert all((s.end_frame - s.start_frame) / FPS <= 4.0 for s in by_time.samples)
        with pytest.raises(ValueError, match="multishot_min_shots"):
            plan_samples(cat, ids, ShardConfig(multishot_min_shots=1))


def test_only_the_clips_next_to_a_cut_join(tmp_path: Path) -> None:
    # shot 1 is long: two windows [41, 141) and [141, 239). It joins shot 0 with its first window
    # and shot 2 with its last one, but cannot be a middle shot (that would skip frames).
    cat, ids = _catalog(tmp_path, [(40, "start"), (200, "cut"), (40, "cut")],
                        clips_per_shot={0: [(1, 39)], 1: [(41, 141), (141, 239)], 2: [(241, 279)]})
    with cat:
        plan = plan_samples(cat, ids, ShardConfig())
    assert [[(p.shot.shot_index, p.clip.start_frame) for p in s.parts] for s in plan.samples] == [
        [(0, 1), (1, 41)], [(1, 141), (2, 241)]]
    assert plan.breaks == {"long_shot": 1} and plan.short_runs == 0
    # shot 1 ends at frame 240, the second sample starts at 141
    assert plan.samples[1].shot_spans() == [(0, 99), (99, 138)]


def test_window_shots_and_latent_ids() -> None:
    shots = [{"start_frame": 0, "end_frame": 10, "caption_en": "a", "shot_index": 4},
             {"start_frame": 10, "end_frame": 12, "caption_en": "b", "shot_index": 5},
             {"start_frame": 12, "end_frame": 30, "caption_en": "c", "shot_index": 6}]
    picks = [0, 4, 8, 13, 17, 21, 25, 29, 29]  # shot 5 falls between two picks: not in the window
    got = window_shots(shots, picks)
    assert got["shot_of_frame"].tolist() == [0, 0, 0, 1, 1, 1, 1, 1, 1]
    assert [(s["start_frame"], s["end_frame"], s["caption_en"], s["shot_index"]) for s in got["shots"]] == [
        (0, 3, "a", 4), (3, 9, "c", 6)]
    # latent 0 = frame 0; latent j covers frames 4j-3 .. 4j, by majority, ties to the later shot
    assert latent_shot_ids(torch.tensor([0, 0, 0, 1, 1, 1, 1, 2, 2]), 4).tolist() == [0, 1, 2]
    assert latent_shot_ids(torch.tensor([0, 0, 0, 0, 0, 1, 1, 1, 1, 1]), 4).tolist() == [0, 0, 1]


def test_shot_inputs_mix_multi_and_single_shot_samples() -> None:
    from training.data import collate
    from training.data.multishot import shot_inputs

    multi = {"key": "m", "video": torch.zeros(3, 9, 2, 2), "caption_en": "a\nb", "caption_zh": "甲\n乙",
             **window_shots([{"start_frame": 0, "end_frame": 6, "caption_en": "a", "caption_zh": "甲"},
                             {"start_frame": 6, "end_frame": 9, "caption_en": "b", "caption_zh": "乙"}],
                            list(range(9)))}
    single = {"key": "s", "video": torch.zeros(3, 9, 2, 2), "caption_en": "c", "caption_zh": "丙"}
    mb = collate([single, multi])  # the first sample has no shots: its keys must not decide
    assert mb["shots"][0] is None and mb["video"].shape == (2, 3, 9, 2, 2)
    got = shot_inputs(mb, ["zh", None], 4, 9)  # the multi-shot sample's captions dropped (CFG)
    assert got is not None and got["shot_texts"] == [["丙"], ["", ""]]
    assert got["shot_of_frame"].tolist() == [[0, 0, 0], [0, 0, 1]]  # pixel 5-8: shot 0 once, shot 1 thrice
    assert shot_inputs(collate([single, single]), ["en", "en"], 4, 9) is None  # nothing to route


def test_each_shot_caption_reaches_only_its_frames() -> None:
    from training.config import load_train_config
    from training.loop.dit_trainer import DiTNet

    cfg = load_train_config("tiny", None, [])
    cfg.dit = dataclasses.replace(cfg.dit, temporal=False)  # only spatial layers: no mixing across frames
    torch.manual_seed(0)
    net = DiTNet(cfg).eval()
    with torch.no_grad():
        for p in net.dit.parameters():
            if not p.any():
                p.normal_(0.0, 0.1)  # adaLN-zero and the final projection as after training
    pair = ["a red ball", "a blue sky over the sea"]
    text, mask, text_shot = encode_shot_texts(net.encode_text, [pair, ["x"]])
    n0, n1 = (int(net.encode_text([t])[1].sum()) for t in pair)
    assert text_shot[0, :n0 + n1].tolist() == [0] * n0 + [1] * n1 and int(mask[0].sum()) == n0 + n1
    assert int(mask[1].sum()) == int(net.encode_text(["x"])[1].sum())
    with torch.no_grad():  # each shot's tokens are its caption encoded on its own
        torch.testing.assert_close(text[0, n0:n0 + n1], net.encode_text([pair[1]])[0][0, :n1])
    x = torch.randn(1, cfg.dit.in_channels, 3, 4, 8)
    t = torch.full((1,), 0.5)
    frames = torch.tensor([[0, 0, 1]])
    with torch.no_grad():
        v = net(x, t, shot_texts=[["a red ball", "a blue sky over the sea"]], shot_of_frame=frames)
        v2 = net(x, t, shot_texts=[["a big cube", "a blue sky over the sea"]], shot_of_frame=frames)
    # a caption of the same length (the tokens keep their positions) in shot 0 only
    assert not torch.allclose(v[:, :, :2], v2[:, :, :2])  # shot 0's frames read shot 0's caption
    torch.testing.assert_close(v[:, :, 2], v2[:, :, 2])  # shot 1's frame never sees it


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def curated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    from pipelines.config import load_config
    from pipelines.curate import run_step_by_name
    from samplegen.cut_videos import Segment, make_transition_video

    root = tmp_path_factory.mktemp("multishot")
    plan = [Segment("testsrc2_pan", 40, seed=21), Segment("mandelbrot_valley", 40, seed=22),
            Segment("mandelbrot_bands", 40, seed=23),
            Segment("mandelbrot_outz_pan", 40, enter="dissolve", transition=8, seed=24),
            Segment("testsrc2_pan", 40, seed=25)]
    gt = make_transition_video(root / "src" / "多镜头 cuts.mp4", 320, 180, FPS, plan)
    cfg = load_config("tiny")
    cfg.runtime.runner, cfg.runtime.quiet = "sequential", True
    for step in ("ingest", "split", "clips", "score", "filter", "extract", "caption"):
        run_step_by_name(step, [str(root / "src")], root / "out", cfg)
    return root, gt


def _decode(path: Path | bytes) -> np.ndarray:
    import io

    import av

    with av.open(io.BytesIO(path) if isinstance(path, bytes) else str(path)) as c:
        return np.stack([f.to_ndarray(format="gray").astype(np.float32) for f in c.decode(video=0)])


@pytest.mark.slow
def test_curate_export_multishot_load_and_train(curated: tuple[Path, Any], tmp_path: Path) -> None:
    from training.config import load_train_config
    from training.data import ShardDataset
    from training.loop.run import train
    from vidloom.cli import main

    root, gt = curated
    db = root / "out" / "catalog.duckdb"
    with Catalog(db, read_only=True) as cat:
        shots = cat.dicts("SELECT * FROM shots ORDER BY shot_index")
        clips = {r["shot_index"]: r for r in cat.dicts("SELECT * FROM clips WHERE status = 'kept'")}
        captions = {(r["clip_id"], r["lang"]): r["text"]
                    for r in cat.dicts("SELECT * FROM captions WHERE kind = 'dense'")}
    assert [s["transition"] for s in shots] == ["start", "cut", "cut", "dissolve", "cut"]
    assert [s["start_frame"] for s in shots if s["transition"] == "cut"] == gt.cuts
    assert len(clips) == 5

    shards = tmp_path / "shards"
    assert main(["export", str(db), "--multi-shot", "--out", str(shards)]) == 0
    manifest = json.loads((shards / "latest" / "manifest.json").read_text())
    assert manifest["multi_shot"]["breaks"] == {"gradual": 1} and manifest["multi_shot"]["errors"] == []
    ds = ShardDataset(shards, n_frames=1000, fps=FPS, size=(36, 64))  # every frame, at the source rate
    assert len(ds) == 2
    source = _decode(root / "src" / "多镜头 cuts.mp4")
    seen = []
    for i in range(len(ds)):
        sample = ds.get(i)
        meta = sample["meta"]
        lo, hi = meta["start_frame"], meta["end_frame"]
        mine = [s for s in shots if s["start_frame"] < hi and s["end_frame"] > lo]
        # the loader's spans are the catalog's shots, relative to the sample
        want = [(max(s["start_frame"], lo) - lo, min(s["end_frame"], hi) - lo) for s in mine]
        assert [(s["start_frame"], s["end_frame"]) for s in sample["shots"]] == want
        assert want[0][0] == 0 and want[-1][1] == hi - lo == sample["video"].shape[1]
        assert [s["shot_index"] for s in sample["shots"]] == [s["shot_index"] for s in mine]
        for s in sample["shots"]:  # each shot keeps its own clip's captions
            cid = clips[s["shot_index"]]["clip_id"]
            assert (s["caption_en"], s["caption_zh"]) == (captions[(cid, "en")], captions[(cid, "zh")])
        ids = sample["shot_of_frame"].tolist()
        assert ids == [k for k, (a, b) in enumerate(want) for _ in range(b - a)]
        # the mp4 is the source span: each frame matches its source frame, also next to the cuts
        frames = _decode(ds.raw(i)[1]["mp4"])
        assert len(frames) == hi - lo
        err = np.abs(frames - source[lo:hi]).mean(axis=(1, 2))
        assert err.max() < 6.0, err.max()
        for a, _ in want[1:]:  # across a cut the picture changes: the span does not drift by a frame
            assert np.abs(frames[a] - source[lo + a - 1]).mean() > 3 * err[a]
        seen.append([s["shot_index"] for s in sample["shots"]])
    assert sorted(seen) == [[0, 1, 2], [3, 4]]  # the dissolve into shot 3 splits the video
    # a re-export reuses the cut spans, even with the source gone, and gives the same bytes
    src = root / "src" / "多镜头 cuts.mp4"
    src.rename(root / "moved.mp4")
    try:
        assert main(["export", str(db), "--multi-shot", "--out", str(shards)]) == 0
    finally:
        (root / "moved.mp4").rename(src)
    again = json.loads((shards / "latest" / "manifest.json").read_text())
    assert again["dataset_hash"] == manifest["dataset_hash"]
    assert len([d for d in shards.iterdir() if d.name != "latest"]) == 1

    captured: list[dict[str, Any]] = []
    cfg = load_train_config("tiny", None, [
        "vae_steps=2", "steps=3", "num_workers=0", "eval_samples=1", "warmup_steps=1", "log_every=1",
        "ckpt_every=100", "text_dropout=0",
        "vae_stage={name: vae, n_frames: 5, size: [32, 64], global_batch: 2}",
        "stages=[{name: video, fraction: 1.0, n_frames: 9, fps: 4.0, size: [32, 64], global_batch: 2,"
        " i2v_share: 0.0}]"])
    import training.loop.dit_trainer as dt

    original = dt.DiT.forward

    def spy(self: Any, *args: Any, **kwargs: Any) -> torch.Tensor:
        captured.append({k: kwargs.get(k) for k in ("shot_of_frame", "text_shot", "text_mask")})
        return original(self, *args, **kwargs)

    dt.DiT.forward = spy  # records what the trainer feeds the DiT; the DiT itself runs unchanged
    try:
        summary = train(cfg, shards, tmp_path / "run", progress=False)
    finally:
        dt.DiT.forward = original
    rows = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    _export_with_the_source_gone(root, db, tmp_path / "gone")
    assert [r["step"] for r in rows] == [1, 2, 3] and all(np.isfinite(r["loss"]) for r in rows)
    assert summary["dit"]["steps"] == 3
    assert captured and all(c["shot_of_frame"] is not None and c["text_shot"] is not None for c in captured)
    # 9 frames at 4 fps from the start: each sample's window reaches its second shot, and the
    # last latent frame (pixel frames 5-8) belongs to it
    for c in captured:
        assert c["shot_of_frame"].tolist() == [[0, 0, 1]] * c["shot_of_frame"].shape[0]
        for row, m in zip(c["text_shot"], c["text_mask"], strict=True):
            assert set(row[m].tolist()) == {0, 1}  # two shots' captions, tokens in shot order
            assert row[m].tolist() == sorted(row[m].tolist())


def _export_with_the_source_gone(root: Path, db: Path, out: Path) -> None:
    """A span that cannot be cut is reported with its error in the manifest; the export goes on."""
    import shutil

    from vidloom.cli import main

    src = root / "src" / "多镜头 cuts.mp4"
    shutil.rmtree(root / "out" / "multishot")
    src.rename(root / "moved.mp4")
    try:
        assert main(["export", str(db), "--multi-shot", "--out", str(out)]) == 0
    finally:
        (root / "moved.mp4").rename(src)
    manifest = json.loads((out / "latest" / "manifest.json").read_text())
    errors = manifest["multi_shot"]["errors"]
    assert manifest["n_samples"] == 0 and len(errors) == 2
    assert all("No such file" in e["error"] and "多镜头 cuts.mp4" in e["error"] for e in errors)
