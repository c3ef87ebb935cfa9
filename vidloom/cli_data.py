"""``vidloom gc DIR``: delete what is no longer needed, in an export directory or an output root.

``vidloom gc SHARDS_DIR [--keep N] [--dry-run]`` deletes old dataset versions of an export
directory. Exports never delete (pipelines/dataset_versions.py); this is the only command that
does. It keeps the ``N`` most recently published versions and always the one ``DIR/latest``
points at. A trainer still reading a collected version fails at its next file open, and a
resume from a checkpoint of it fails with a message naming the version: pick ``--keep`` to
cover the runs still going.

``vidloom gc OUT [--keep-frames POLICY] [--keep N] [--dry-run]`` on a curation output root (it
holds ``catalog.duckdb``) drops what a finished run no longer needs (pipelines/scratch.py): the
decode pass's pixel frames under the policy (``--keep-frames``, else ``runtime.keep_frames`` of
``OUT/config.yaml``), the debris of killed processes, and, only when ``--keep`` is given, all
but ``N`` dataset versions under ``OUT/shards``. It takes the catalog's write lock first and
refuses (exit 1) while a run or an export holds it; while gc runs, a run's next step waits.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def cmd_gc(args: argparse.Namespace) -> int:
    if is_output_root(Path(args.dir)):
        return gc_output_root(args)
    from pipelines import dataset_versions as dv

    if args.keep_frames is not None:
        raise ValueError(f"--keep-frames needs a curation output root; {args.dir} holds no catalog.duckdb")
    found = dv.versions(args.dir)
    if not found and not (Path(args.dir) / dv.LATEST).exists():
        raise FileNotFoundError(
            f"{args.dir} holds no dataset versions (an export directory has DIR/latest) and no catalog"
        )
    for v in found:
        mark = "latest" if v.latest else ""
        print(f"  {v.dataset[:16]}  {v.n_samples:>8} samples  {v.bytes / 1e6:>10.1f} MB  {mark}")
    keep = 1 if args.keep is None else args.keep
    removed = dv.gc(args.dir, keep=keep, dry_run=args.dry_run, log=print)
    verb = "would delete" if args.dry_run else "deleted"
    print(f"vidloom gc: {verb} {len(removed)} of {len(found)} versions and staging dirs in {args.dir}")
    return 0


def is_output_root(d: Path) -> bool:
    from curation.snapshot import live_path

    return (d / "catalog.duckdb").is_file() or live_path(d / "catalog.duckdb").is_file()


def gc_output_root(args: argparse.Namespace) -> int:
    from curation import snapshot
    from curation.db import Catalog
    from pipelines import scratch
    from pipelines.config import load_config

    root = Path(args.dir).resolve()
    config = root / "config.yaml"
    cfg = load_config("default", config if config.is_file() else None)
    policy = scratch.check_policy(args.keep_frames or cfg.runtime.keep_frames)
    if args.keep is not None and args.keep < 1:
        raise ValueError("--keep must be at least 1 (the version latest points at is always kept)")
    live = snapshot.live_path(root / "catalog.duckdb")
    if live.exists():  # a short wait: a run holds the lock for a whole step
        try:
            snapshot.connect_retrying(live, read_only=False, wait_s=args.wait).close()
        except snapshot.CatalogBusy:
            print(f"vidloom gc: {root} is being written (a curation run or an export holds its catalog); "
                  "nothing deleted. Run gc when it has finished.", file=sys.stderr)
            return 1
    with Catalog(root / "catalog.duckdb") as cat:  # held: no step starts while gc deletes
        freed = scratch.gc_output_root(root, cfg, cat, policy, args.keep, args.dry_run)
    verb = "would free" if args.dry_run else "freed"
    mb = {k: freed.bytes(k) / 1e6 for k in ("frames", "debris", "versions")}
    frames = (f"frames of {freed.count('frames')} videos {mb['frames']:.1f} MB (keep_frames={policy})"
              if policy != "keep" else "frames kept (keep_frames=keep: --keep-frames after_score|none)")
    versions = (f"{freed.count('versions')} dataset versions {mb['versions']:.1f} MB" if args.keep is not None
                else "dataset versions kept (--keep N collects them)")
    print(f"  {frames}\n  {freed.count('debris')} leftovers of killed processes {mb['debris']:.1f} MB\n"
          f"  {versions}")
    print(f"vidloom gc: {verb} {freed.bytes()} bytes ({freed.bytes() / 1e6:.1f} MB) in {root}")
    return 0


def add_commands(sub: Any) -> None:
    g = sub.add_parser("gc", help="delete old dataset versions of an export directory (never DIR/latest), "
                       "or what a finished run no longer needs in an output root")
    g.add_argument("dir", help="an export directory (DIR/<dataset_hash>/..., DIR/latest) or a curation "
                   "output root (OUT/catalog.duckdb)")
    g.add_argument("--keep", type=int, default=None, help="dataset versions to keep, newest first (export "
                   "directory: default 1, latest; output root: versions are collected only when given)")
    g.add_argument("--keep-frames", choices=("keep", "after_score", "none"), default=None,
                   help="output root: which frames go (default: runtime.keep_frames in OUT/config.yaml)")
    g.add_argument("--wait", type=float, default=2.0, help="output root: seconds to wait for the catalog's "
                   "lock before refusing (default 2)")
    g.add_argument("--dry-run", action="store_true", help="only list what would be deleted")
    g.set_defaults(fn=cmd_gc)
