"""Shards read back with webdataset, split by size, and are byte-identical on rewrite and resume."""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

import pytest
import webdataset as wds
from PIL import Image

from curation.schema import Caption, Clip, ShardSample
from pipelines.shard_samples import bucket_for, sample_for_clip
from pipelines.shard_writer import MANIFEST, write_shards

VIDEO_ID = "00112233445566aa"


def make_clip(out_root: Path, clip_id: str, size: str, seed: int) -> Clip:
    rel = f"clips/{VIDEO_ID}/{clip_id}.mp4"
    (out_root / rel).parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
                    f"testsrc2=size={size}:rate=25:duration=0.2,hue=h={seed * 40}", "-c:v", "libx264",
                    "-pix_fmt", "yuv420p", "-fflags", "+bitexact", "-flags:v", "+bitexact",
                    str(out_root / rel)], check=True)
    width, height = (int(v) for v in size.split("x"))
    duration = 3.0 if seed % 2 else 7.5
    return Clip(clip_id, VIDEO_ID, seed, 0, 5, 0.0, duration, width, height, 25.0, path=rel, n_frames=5)


PASSED = json.dumps({name: {"ok": True} for name in ("lang", "length", "numbers", "colours")})


def captions_for(clip: Clip) -> list[Caption]:
    return [Caption(clip.clip_id, "zh", f"一个测试画面 {clip.clip_id}", backend="signals", checks=PASSED),
            Caption(clip.clip_id, "en", f"A test pattern {clip.clip_id}.", backend="signals", checks=PASSED)]


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Clip]]:
    out_root = tmp_path_factory.mktemp("out")
    made = [make_clip(out_root, f"{i:016x}", "320x180" if i < 6 else "180x320", i) for i in range(9)]
    return out_root, made


def by_bucket(out_root: Path, clips: list[Clip]) -> dict[str, list[ShardSample]]:
    buckets: dict[str, list[ShardSample]] = {}
    for clip in sorted(clips, key=lambda c: c.clip_id):
        sample = sample_for_clip(clip, out_root, captions_for(clip), first_frame_jpg=True)
        buckets.setdefault(bucket_for(clip.width, clip.height, clip.duration_s), []).append(sample)
    return buckets


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_bucket_for_examples() -> None:
    assert bucket_for(854, 480, 3.0) == "480p/16x9/2-5s"
    assert bucket_for(1920, 1080, 12.0) == "1080p/16x9/10-20s"
    assert bucket_for(1080, 1920, 1.0) == "1080p/9x16/0-2s"
    assert bucket_for(640, 480, 5.0) == "480p/4x3/5-10s"
    assert bucket_for(3840, 2160, 25.0) == "4k/16x9/20s+"
    assert bucket_for(2560, 1440, 20.0) == "2k/16x9/20s+"
    assert bucket_for(720, 720, 9.99) == "720p/1x1/5-10s"
    assert bucket_for(2560, 1080, 4.0) == "1080p/21x9/2-5s"
    assert bucket_for(1280, 719, 2.0) == "480p/16x9/2-5s"  # floor, not nearest
    assert bucket_for(100, 100, 50 / 25) == "144p/1x1/2-5s"
    assert bucket_for(320, 180, 1.9999999999) == "144p/16x9/2-5s"
    with pytest.raises(ValueError):
        bucket_for(0, 180, 1.0)


def test_write_then_read_back(tmp_path: Path, clips: tuple[Path, list[Clip]]) -> None:
    out_root, made = clips
    buckets = by_bucket(out_root, made)
    assert sorted(buckets) == ["144p/16x9/2-5s", "144p/16x9/5-10s", "144p/9x16/2-5s", "144p/9x16/5-10s"]
    infos, _ = write_shards(buckets, tmp_path / "shards", target_bytes=10_000_000)
    manifest = json.loads((tmp_path / "shards" / MANIFEST).read_text())
    assert manifest["version"] == 1 and manifest["n_samples"] == len(made) == sum(i.n_samples for i in infos)
    assert [e["shard"] for e in manifest["shards"]] == [i.shard for i in infos]
    assert all(i.shard.endswith("/000000.tar") and i.bucket == i.shard.rsplit("/", 1)[0] for i in infos)
    by_id = {c.clip_id: c for c in made}
    for info, entry in zip(infos, manifest["shards"], strict=True):
        assert Path(info.path).stat().st_size == info.bytes == entry["bytes"]
        samples = list(wds.WebDataset(info.path, shardshuffle=False, empty_check=False))
        keys = [s["__key__"] for s in samples]
        assert keys == sorted(keys) and len(keys) == entry["n_samples"] == info.n_samples
        assert (keys[0], keys[-1]) == (entry["keys_first"], entry["keys_last"])
        for s in samples:
            clip = by_id[s["__key__"]]
            assert set(s) >= {"mp4", "json", "en.txt", "zh.txt", "jpg"}
            assert s["mp4"] == (out_root / str(clip.path)).read_bytes()
            meta = json.loads(s["json"])
            assert meta["clip_id"] == clip.clip_id and meta["width"] == clip.width and "blur" in meta
            assert {c["lang"] for c in meta["captions"]} == {"en", "zh"}
            assert meta["captions"][1]["checks"] == json.loads(PASSED)
            assert s["en.txt"].decode() == f"A test pattern {clip.clip_id}."
            assert s["zh.txt"].decode().startswith("一个测试画面")
            assert Image.open(io.BytesIO(s["jpg"])).size == (clip.width, clip.height)


def test_rewrite_is_byte_identical_and_reuses_shards(tmp_path: Path, clips: tuple[Path, list[Clip]]) -> None:
    out_root, made = clips
    write_shards(by_bucket(out_root, made), tmp_path / "a", target_bytes=20_000)
    write_shards(by_bucket(out_root, made), tmp_path / "b", target_bytes=20_000)
    assert tree(tmp_path / "a") == tree(tmp_path / "b")
    pairs = [(b, s) for b, samples in by_bucket(out_root, made).items() for s in samples]
    write_shards(reversed(pairs), tmp_path / "a", target_bytes=10**9)  # another layout over it
    write_shards(pairs, tmp_path / "a", target_bytes=20_000)
    assert tree(tmp_path / "a") == tree(tmp_path / "b")
    stamps = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (tmp_path / "a").rglob("*.tar")}
    write_shards(pairs, tmp_path / "a", target_bytes=20_000)
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (tmp_path / "a").rglob("*.tar")} == stamps


def test_small_target_splits_into_several_shards(tmp_path: Path, clips: tuple[Path, list[Clip]]) -> None:
    out_root, made = clips
    buckets = by_bucket(out_root, made)
    target = 2 * max(len(s.mp4) + len(s.jpg or b"") for b in buckets.values() for s in b)
    infos, _ = write_shards(buckets, tmp_path / "shards", target_bytes=target)
    manifest = json.loads((tmp_path / "shards" / MANIFEST).read_text())
    assert len(infos) > len(buckets)
    assert all(i.bytes <= target or i.n_samples == 1 for i in infos)
    for bucket, samples in buckets.items():
        mine = [e for e in manifest["shards"] if e["bucket"] == bucket]
        assert [e["shard"].rsplit("/", 1)[1] for e in mine] == [f"{k:06d}.tar" for k in range(len(mine))]
        keys = [s["__key__"] for e in mine for s in wds.WebDataset(str(tmp_path / "shards" / e["shard"]),
                                                                  shardshuffle=False, empty_check=False)]
        assert keys == [s.key for s in samples]
    one_each, _ = write_shards(buckets, tmp_path / "tiny", target_bytes=1)
    assert all(i.n_samples == 1 for i in one_each) and len(one_each) == len(made)


def test_killed_midway_then_rerun_completes(tmp_path: Path, clips: tuple[Path, list[Clip]]) -> None:
    out_root, made = clips
    write_shards(by_bucket(out_root, made), tmp_path / "ref", target_bytes=20_000)
    expected = tree(tmp_path / "ref")
    root = tmp_path / "run"

    def dies_midway() -> object:
        for i, (b, s) in enumerate((b, s) for b, ss in by_bucket(out_root, made).items() for s in ss):
            if i == 5:
                raise KeyboardInterrupt
            yield b, s

    with pytest.raises(KeyboardInterrupt):
        write_shards(dies_midway(), root, target_bytes=20_000)  # type: ignore[arg-type]
    assert not (root / MANIFEST).exists() and not list(root.rglob("*.part"))
    # What a SIGKILL leaves behind: a half-written temp shard, a final shard from an older run
    # with other content, and a shard in a bucket the new manifest will not list.
    done = sorted(root.rglob("*.tar"))
    assert done
    done[0].with_name(f".{done[0].name}.part").write_bytes(done[0].read_bytes()[:3000])
    done[0].write_bytes(done[0].read_bytes()[:-10240] + b"\0" * 10240 + b"old")
    (root / "720p/1x1/0-2s").mkdir(parents=True)
    (root / "720p/1x1/0-2s/000000.tar").write_bytes(b"stale")
    (root / "144p/16x9/2-5s/000009.tar").write_bytes(b"stale")
    write_shards(by_bucket(out_root, made), root, target_bytes=20_000)
    assert tree(root) == expected


def test_rejects_bad_input(tmp_path: Path, clips: tuple[Path, list[Clip]]) -> None:
    out_root, made = clips
    sample = sample_for_clip(made[0], out_root, [], first_frame_jpg=False)
    assert sample.jpg is None and sample.en_txt is None and sample.meta["captions"] == []
    with pytest.raises(ValueError, match="duplicate"):
        write_shards([("144p/16x9/2-5s", sample), ("144p/16x9/2-5s", sample)], tmp_path / "s", 10**6)
    with pytest.raises(ValueError, match="bucket"):
        write_shards([("../escape", sample)], tmp_path / "s", 10**6)
    escaping = Clip("ab" * 8, VIDEO_ID, 0, 0, 5, 0.0, 1.0, 320, 180, 25.0, path="../../etc/passwd")
    with pytest.raises(ValueError, match="leaves"):
        sample_for_clip(escaping, out_root, [], first_frame_jpg=False)
    with pytest.raises(ValueError, match="another clip"):
        sample_for_clip(made[0], out_root, captions_for(made[1]), first_frame_jpg=False)
