"""``vidloom export DB --out URL``: shards written to an object store (any fsspec URL).

The version is written locally first, under ``<catalog dir>/.work/export-stage/<hash of URL>/``,
by the same deterministic writer as a local export (tar members, ``manifest.json``, the dataset
hash), then uploaded to ``URL/<dataset_hash>/`` with its manifest last, and ``URL/latest`` (an
object holding the hash: buckets have no symlinks) is written after that. A reader that resolves
``URL`` (``training.data``, ``pipelines.dataset_versions.resolve``) therefore never sees a
manifest whose shards are missing. A version already in the bucket is not uploaded again. The
local staging copy is removed once uploaded. The ``shards`` rows then describe the bucket's copy:
``path``/``shard`` are URLs, ``export_root`` is ``URL``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from curation import schema
from curation.db import Catalog
from pipelines.config import CurateConfig
from pipelines.export_step import export
from pipelines.remote import upload_version
from pipelines.runner import Runner


def export_to_url(root: Path, cfg: CurateConfig, runner: Runner, cat: Catalog, clip_ids: list[str],
                  url: str, selection: str) -> dict[str, Any]:
    """``pipelines.export_step.export`` to a staging directory, then upload to ``url``."""
    url = url.rstrip("/")
    staging = (root / ".work" / "export-stage" / schema.short_hash(url)).resolve()
    counts = export(root, cfg, runner, cat, clip_ids, staging, selection)
    version = Path(counts["version"])
    target = upload_version(version, url, counts["dataset"])
    rows = cat.dicts("SELECT * FROM shards WHERE export_root = ?", [str(staging)])
    infos = []
    for r in rows:
        rel = Path(r["path"]).relative_to(version).as_posix()
        info = schema.ShardInfo(**{k: r[k] for k in schema.ShardInfo.__dataclass_fields__})
        info.shard = info.path = f"{target.url}/{rel}"
        info.export_root = url
        infos.append(info)
    with cat.transaction():
        cat.con.execute("DELETE FROM shards WHERE export_root = ?", [str(staging)])
    cat.replace_shards(infos, url)
    shutil.rmtree(staging, ignore_errors=True)
    return {**counts, "version": target.url}
