"""``vidloom gc DIR [--keep N] [--dry-run]``: delete old dataset versions of an export directory.

Exports never delete (pipelines/dataset_versions.py); this is the only command that does. It keeps
the ``N`` most recently published versions and always the one ``DIR/latest`` points at. A trainer
still reading a collected version fails at its next file open, and a resume from a checkpoint of it
fails with a message naming the version: pick ``--keep`` to cover the runs still going.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def cmd_gc(args: argparse.Namespace) -> int:
    from pipelines import dataset_versions as dv

    found = dv.versions(args.dir)
    if not found and not (Path(args.dir) / dv.LATEST).exists():
        raise FileNotFoundError(f"{args.dir} holds no dataset versions (an export directory has DIR/latest)")
    for v in found:
        mark = "latest" if v.latest else ""
        print(f"  {v.dataset[:16]}  {v.n_samples:>8} samples  {v.bytes / 1e6:>10.1f} MB  {mark}")
    removed = dv.gc(args.dir, keep=args.keep, dry_run=args.dry_run, log=print)
    verb = "would delete" if args.dry_run else "deleted"
    print(f"vidloom gc: {verb} {len(removed)} of {len(found)} versions and staging dirs in {args.dir}")
    return 0


def add_commands(sub: Any) -> None:
    g = sub.add_parser("gc", help="delete old dataset versions of an export directory (never DIR/latest)")
    g.add_argument("dir", help="an export directory (DIR/<dataset_hash>/..., DIR/latest)")
    g.add_argument("--keep", type=int, default=1, help="versions to keep, newest first (default 1: latest)")
    g.add_argument("--dry-run", action="store_true", help="only list what would be deleted")
    g.set_defaults(fn=cmd_gc)
