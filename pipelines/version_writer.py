"""Write a new dataset version: shards into a fresh staging directory (linking unchanged shards from
the latest version), then publish it (pipelines/dataset_versions.py: immutable versions, an atomic
``latest``). Here, not in dataset_versions, because it needs the shard writer, which itself needs
dataset_versions' manifest name and linking.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from pipelines.dataset_versions import HASH, MANIFEST, latest_dir, new_staging, publish, stale_staging
from pipelines.shard_writer import write_shards


def write_version(samples: Any, root: str | Path, target_bytes: int,
                  meta: dict[str, Any] | None = None) -> tuple[list[Any], str, Path, bool]:
    """Write ``samples`` as a new version of the export directory ``root`` and publish it.

    Args:
        samples: what ``pipelines.shard_writer.write_shards`` takes.
        root: the export directory ``DIR``.
        target_bytes: the shard size cap.
        meta: extra manifest fields.

    Returns:
        ``(shard infos with paths inside the version, dataset hash, version dir, new)``; ``new`` is
        False when an identical version existed (only ``latest`` moved, if it pointed elsewhere).
    """
    r = Path(root)
    if HASH.fullmatch(r.resolve().name) and (r / MANIFEST).is_file():
        raise ValueError(f"{root} is a published version (immutable): export to {r.resolve().parent}")
    reference = latest_dir(r) or (r if (r / MANIFEST).is_file() else None)  # a flat layout: link from it
    for dead in stale_staging(r, min_age_s=None):  # a killed export of this host: never published
        shutil.rmtree(dead, ignore_errors=True)
    staging = new_staging(r)
    try:
        infos, dataset = write_shards(samples, staging, target_bytes, meta, reference=reference)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    final, created = publish(r, staging, dataset)
    for info in infos:
        info.path = str(final / info.shard)
    return infos, dataset, final, created
