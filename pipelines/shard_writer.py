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

What goes into a sample (its bucket, first frame and captions) is pipelines/shard_samples.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from webdataset import TarWriter

from curation.schema import ShardInfo, ShardSample
from pipelines.dataset_versions import MANIFEST, link_or_copy

_TAR_OWNER = "vidloom"  # uname/gname; uid/gid stay 0 and mtime is _TAR_MTIME
_TAR_MTIME = 0
_BLOCK, _RECORD = 512, 20 * 512  # tar block; tarfile pads the archive to whole records
_PART = ".part"
_BUCKET = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*(/[A-Za-z0-9][A-Za-z0-9_.+-]*)*")
_KEY = re.compile(r"[A-Za-z0-9_-]+")  # webdataset splits a member name at its first dot

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
