"""WebDataset shard writer: bucketed, size-capped, byte-reproducible and resumable.

Layout (docs/architecture.md "Shards"): ``<root>/<bucket>/000000.tar`` with buckets such as
``480p/16x9/2-5s``, plus ``<root>/manifest.json`` listing every shard's sample count, bytes,
sha256 and first/last key. Reproducibility: samples keep the caller's order, tar headers
have a fixed mtime/uid/gid/uname/gname/mode and the manifest holds no timestamps, so the
same inputs give the same bytes. Crash safety: a shard is written to ``.NNNNNN.tar.part``
and renamed when complete; the manifest is removed when a run starts and written
(atomically) only when every shard is in place, so a manifest always describes the files
beside it. Resume: while a shard's bytes equal the existing final file nothing is written;
a shard that matches all the way is kept as it is.

Exports (``vidloom export``, the curate flow's export step) never write into a published
directory: they write this layout into a fresh staging directory, with the previous version as
``reference`` (equal shards are hard-linked, not rewritten), and publish it as an immutable
``DIR/<dataset_hash>/`` with an atomic ``DIR/latest`` (pipelines/dataset_versions.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import av
from av.video.reformatter import Interpolation
from PIL import Image
from webdataset import TarWriter

from curation.schema import Caption, Clip, ShardInfo, ShardSample, clip_row
from pipelines.dataset_versions import MANIFEST, link_or_copy

JPEG_QUALITY = 90
_TAR_OWNER = "vidloom"  # uname/gname; uid/gid stay 0 and mtime is _TAR_MTIME
_TAR_MTIME = 0
_BLOCK, _RECORD = 512, 20 * 512  # tar block; tarfile pads the archive to whole records
_PART = ".part"
_BUCKET = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*(/[A-Za-z0-9][A-Za-z0-9_.+-]*)*")
_KEY = re.compile(r"[A-Za-z0-9_-]+")  # webdataset splits a member name at its first dot

# Resolution classes by the short side, largest first (a clip takes the largest class it reaches).
RESOLUTIONS: tuple[tuple[int, str], ...] = (
    (2160, "4k"),
    (1440, "2k"),
    (1080, "1080p"),
    (720, "720p"),
    (480, "480p"),
    (360, "360p"),
    (240, "240p"),
    (144, "144p"),
)
ASPECTS: tuple[tuple[str, float], ...] = (
    ("21x9", 21 / 9),
    ("16x9", 16 / 9),
    ("4x3", 4 / 3),
    ("1x1", 1.0),
    ("3x4", 3 / 4),
    ("9x16", 9 / 16),
    ("9x21", 9 / 21),
)
DURATIONS: tuple[tuple[float, str], ...] = (
    (2.0, "0-2s"),
    (5.0, "2-5s"),
    (10.0, "5-10s"),
    (20.0, "10-20s"),
    (math.inf, "20s+"),
)


def bucket_for(width: int, height: int, duration_s: float) -> str:
    """The bucket ``<resolution>/<aspect>/<duration>`` of a clip, e.g. ``480p/16x9/2-5s``.

    Args:
        width: frame width in pixels.
        height: frame height in pixels.
        duration_s: clip length in seconds; bins are [lo, hi), 20 s and longer is ``20s+``.

    Returns:
        The resolution class is the largest one the short side reaches (smaller clips count
        as ``144p``); the aspect is the nearest standard ratio in log space.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"bad frame size {width}x{height}")
    short = min(width, height)
    res = next((name for side, name in RESOLUTIONS if short >= side), RESOLUTIONS[-1][1])
    ratio = math.log(width / height)
    aspect = min(ASPECTS, key=lambda a: abs(ratio - math.log(a[1])))[0]
    duration = round(duration_s, 6)  # 50 frames at 25 fps is 2-5s even with float noise
    dur = next(name for hi, name in DURATIONS if duration < hi)
    return f"{res}/{aspect}/{dur}"


def first_frame_jpeg(path: str | Path, quality: int = JPEG_QUALITY) -> bytes:
    """The first decoded frame of ``path`` as a JPEG (bit-exact colour conversion, fixed settings)."""
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0), None)
        if frame is None:
            raise ValueError(f"{path}: no video frame to decode")
        # BITEXACT/ACCURATE_RND: the same RGB on every CPU, not just on this one.
        rgb = frame.reformat(
            format="rgb24",
            interpolation=Interpolation.BILINEAR | Interpolation.ACCURATE_RND | Interpolation.BITEXACT,
        ).to_ndarray()
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality, subsampling=2, optimize=False)
    return buf.getvalue()


def _caption_meta(caption: Caption) -> dict[str, Any]:
    meta = {k: v for k, v in dataclasses.asdict(caption).items() if k != "clip_id"}
    for col in ("checks", "subjects", "actions", "text_overlays", "fields"):  # the JSON columns
        with contextlib.suppress(ValueError, TypeError):  # not JSON (or None): keep it as recorded
            meta[col] = json.loads(meta[col])
    return meta


def sample_for_clip(
    clip: Clip, out_root: Path, captions: Sequence[Caption], first_frame_jpg: bool
) -> ShardSample:
    """The WebDataset sample of one extracted clip.

    Args:
        clip: a clip with ``path`` set (relative to ``out_root``).
        out_root: the curation output root.
        captions: this clip's captions. Only a valid en + zh pair of a kind goes in
            (``captioner.validate.exportable``: a caption that failed a check, or whose other
            half failed, is left out of ``en.txt``, ``zh.txt`` and the json); the dense pair
            becomes ``en.txt`` / ``zh.txt``.
        first_frame_jpg: add the first frame as ``jpg`` (image-to-video conditioning).

    Returns:
        The sample; its ``json`` is the clip's catalog row plus ``captions`` and, when an
        exported dense caption carries a structured description, ``fields`` (that description,
        captioner/caption_schema.py) and ``fields_version``.

    Raises:
        ValueError: if the clip has no file, its path leaves ``out_root``, or a caption
            belongs to another clip.
    """
    if clip.path is None:
        raise ValueError(f"clip {clip.clip_id} has no extracted file")
    root = Path(out_root).resolve()
    path = (root / clip.path).resolve()
    if not path.is_relative_to(root):
        raise ValueError(f"clip path {clip.path!r} leaves {root}")
    if any(c.clip_id != clip.clip_id for c in captions):
        raise ValueError(f"captions of another clip passed for {clip.clip_id}")
    from captioner.validate import exportable

    ordered = sorted(exportable(captions), key=lambda c: (c.lang, c.kind, c.model))
    dense = {c.lang: c.text for c in ordered if c.kind == "dense"}
    meta: dict[str, Any] = {**clip_row(clip), "captions": [_caption_meta(c) for c in ordered]}
    described = [c for c in ordered if c.kind == "dense" and c.fields]
    if described:
        meta["fields"] = json.loads(described[0].fields or "")
        meta["fields_version"] = described[0].fields_version
    return ShardSample(
        key=clip.clip_id,
        mp4=path.read_bytes(),
        meta=meta,
        en_txt=dense.get("en"),
        zh_txt=dense.get("zh"),
        jpg=first_frame_jpeg(path) if first_frame_jpg else None,
    )


def _tar_bytes(content: int) -> int:
    """Archive size for ``content`` bytes of members: two zero blocks, padded to whole records."""
    return -(-(content + 2 * _BLOCK) // _RECORD) * _RECORD


def _member_bytes(sample: dict[str, Any]) -> int:
    return sum(_BLOCK + -(-len(v) // _BLOCK) * _BLOCK for k, v in sample.items() if not k.startswith("_"))


class _ShardSink:
    """The file a shard's tar stream goes to; skips writing while it equals the existing shard.

    While the bytes so far equal the final file's prefix nothing is written (resume). At the
    first difference the equal prefix is copied to the temp file and writing goes on there.
    """

    def __init__(self, final: Path, tmp: Path, ref: Path | None = None) -> None:
        self.final, self.tmp = final, tmp
        self.ref_path = final if ref is None else ref  # another version's shard: linked when equal
        self.sha = hashlib.sha256()
        self.size = 0
        self._aborted = False
        self._ref: BinaryIO | None = open(self.ref_path, "rb") if self.ref_path.is_file() else None
        self._out: BinaryIO | None = None if self._ref else open(tmp, "wb")

    def write(self, data: bytes) -> int:
        if self._aborted:  # tarfile flushes its buffer again when it is garbage-collected
            return len(data)
        data = bytes(data)
        self.sha.update(data)
        if self._ref is not None and self._ref.read(len(data)) != data:
            self._diverge()
        if self._out is not None:
            self._out.write(data)
        self.size += len(data)
        return len(data)

    def _diverge(self) -> None:
        assert self._ref is not None
        ref, self._ref = self._ref, None
        ref.seek(0)
        self._out = open(self.tmp, "wb")
        left = self.size
        while left:
            chunk = ref.read(min(left, 1 << 20))
            self._out.write(chunk)
            left -= len(chunk)
        ref.close()

    def commit(self) -> None:
        """Keep the existing shard if it is byte-identical, else rename the temp file into place."""
        if self._ref is not None:
            if self._ref.read(1) == b"":
                self._ref.close()
                if self.ref_path != self.final:
                    link_or_copy(self.ref_path, self.final)
                return
            self._diverge()
        assert self._out is not None
        self._out.flush()
        os.fsync(self._out.fileno())
        self._out.close()
        os.replace(self.tmp, self.final)

    def abort(self) -> None:
        self._aborted = True
        for f in (self._ref, self._out):
            if f is not None:
                f.close()
        self.tmp.unlink(missing_ok=True)


@dataclass
class _Shard:
    """A shard being written."""

    bucket: str
    index: int
    sink: _ShardSink
    writer: TarWriter
    content: int = 0  # member bytes so far (headers + padded data)
    keys: list[str] = field(default_factory=list)

    @property
    def rel(self) -> str:
        return f"{self.bucket}/{self.index:06d}.tar"


def _open_shard(root: Path, bucket: str, index: int, reference: Path | None = None) -> _Shard:
    final = root / bucket / f"{index:06d}.tar"
    final.parent.mkdir(parents=True, exist_ok=True)
    ref = None if reference is None else reference / bucket / final.name
    sink = _ShardSink(final, final.with_name(f".{final.name}{_PART}"), ref)
    writer = TarWriter(
        sink, user=_TAR_OWNER, group=_TAR_OWNER, mode=0o444, mtime=_TAR_MTIME, encoder=False, compress=False
    )
    return _Shard(bucket, index, sink, writer)


def _close_shard(shard: _Shard) -> dict[str, Any]:
    shard.writer.close()
    shard.sink.commit()
    return {
        "shard": shard.rel,
        "bucket": shard.bucket,
        "n_samples": len(shard.keys),
        "bytes": shard.sink.size,
        "sha256": shard.sink.sha.hexdigest(),
        "keys_first": shard.keys[0],
        "keys_last": shard.keys[-1],
    }


def _pairs(
    samples: Mapping[str, Iterable[ShardSample]] | Iterable[tuple[str, ShardSample]],
) -> Iterator[tuple[str, ShardSample]]:
    if isinstance(samples, Mapping):
        for bucket in sorted(samples):
            for sample in samples[bucket]:
                yield bucket, sample
    else:
        yield from samples


def write_shards(
    samples: Mapping[str, Iterable[ShardSample]] | Iterable[tuple[str, ShardSample]],
    shards_root: str | Path,
    target_bytes: int,
    meta: dict[str, Any] | None = None,
    reference: str | Path | None = None,
) -> tuple[list[ShardInfo], str]:
    """Write bucketed WebDataset shards and ``manifest.json`` under ``shards_root``.

    Args:
        samples: ``{bucket: samples}`` or ``(bucket, sample)`` pairs (buckets may interleave).
            Within a bucket samples are written in the given order; sort them by key first.
        shards_root: the shards directory; it should hold nothing but this writer's output.
        target_bytes: a shard is closed before a sample would take it past this size (a
            sample larger than this gets a shard of its own).

        meta: extra manifest fields (e.g. the SQL selection); they do not enter the hash.
        reference: another shards directory (the previous dataset version): a shard whose bytes
            equal its shard at the same path is hard-linked from it instead of written
            (pipelines/dataset_versions.py). None: compare with the files in ``shards_root``.

    Returns:
        One ShardInfo per shard, ordered by shard path as in the manifest, and the dataset
        version hash (sha256 over the shards' sha256s, in order).

    Raises:
        ValueError: on a malformed bucket or key, a duplicate key, or target_bytes <= 0.
    """
    if target_bytes <= 0:
        raise ValueError("target_bytes must be positive")
    root = Path(shards_root)
    root.mkdir(parents=True, exist_ok=True)
    (root / MANIFEST).unlink(missing_ok=True)  # no manifest until it matches the shards again
    open_shards: dict[str, _Shard] = {}
    entries: list[dict[str, Any]] = []
    seen: set[str] = set()
    try:
        for bucket, sample in _pairs(samples):
            if not _BUCKET.fullmatch(bucket) or ".." in bucket:
                raise ValueError(f"bad bucket {bucket!r}")
            if not _KEY.fullmatch(sample.key) or sample.key in seen:
                raise ValueError(f"bad or duplicate sample key {sample.key!r}")
            seen.add(sample.key)
            wds = sample.to_wds()
            size = _member_bytes(wds)
            shard = open_shards.get(bucket)
            if shard is not None and shard.keys and _tar_bytes(shard.content + size) > target_bytes:
                entries.append(_close_shard(shard))
                shard = None
            if shard is None:
                index = 0 if bucket not in open_shards else open_shards[bucket].index + 1
                shard = open_shards[bucket] = _open_shard(
                    root, bucket, index, None if reference is None else Path(reference))
            shard.writer.write(wds)
            shard.content += size
            shard.keys.append(sample.key)
        for bucket in sorted(open_shards):
            entries.append(_close_shard(open_shards.pop(bucket)))
    except BaseException:
        for shard in open_shards.values():
            shard.sink.abort()
        raise
    entries.sort(key=lambda e: e["shard"])
    dataset = _write_manifest(root, entries, meta or {})
    _remove_stale(root, {e["shard"] for e in entries})
    return [
        ShardInfo(
            shard=e["shard"],
            path=str(root / e["shard"]),
            n_samples=e["n_samples"],
            bytes=e["bytes"],
            sha256=e["sha256"],
            bucket=e["bucket"],
        )
        for e in entries
    ], dataset


def _write_manifest(root: Path, entries: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    dataset = hashlib.sha256("\n".join(e["sha256"] for e in entries).encode()).hexdigest()
    manifest = {
        **meta,
        "version": 1,
        "shards": entries,
        "n_samples": sum(e["n_samples"] for e in entries),
        "dataset_hash": dataset,
    }
    tmp = root / f".{MANIFEST}{_PART}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, root / MANIFEST)
    return dataset


def _remove_stale(root: Path, keep: set[str]) -> None:
    """Delete shards the manifest no longer lists and temp files of killed runs, then empty dirs."""
    for path in sorted(root.rglob("*.tar")) + sorted(root.rglob(f".*.tar{_PART}")):
        if path.is_file() and path.relative_to(root).as_posix() not in keep:
            path.unlink()
    for dirpath, _, _ in os.walk(root, topdown=False):
        if Path(dirpath) != root and not any(Path(dirpath).iterdir()):
            os.rmdir(dirpath)
