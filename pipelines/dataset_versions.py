"""Immutable dataset versions: ``DIR/<dataset_hash>/`` directories and an atomic ``DIR/latest``.

Layout of an export directory ``DIR``::

    DIR/<dataset_hash>/manifest.json            one complete version (its own manifest)
    DIR/<dataset_hash>/<bucket>/NNNNNN.tar
    DIR/latest -> <dataset_hash>                a relative symlink, switched atomically
    DIR/.staging-<host>-<pid>-<rand>/           an export being written (never read)

Decisions:

- A version is written into a staging directory, then renamed to ``DIR/<dataset_hash>`` in one
  ``rename`` (the hash, sha256 over the shards' sha256s, is known only once every shard is
  written). ``latest`` is then switched by creating a symlink under a temporary name and
  ``os.replace``-ing it over ``latest``: a reader sees the old version or the new one, never a
  mix, and never a version without its manifest.
- No file of a published version is ever opened for writing, renamed over or deleted, except by
  ``gc``. An identical re-export (same bytes, same hash) writes nothing new: its staging
  directory is dropped and ``latest`` points at the existing version.
- Shards equal to the ``latest`` version's shard at the same path are not rewritten: the writer
  compares bytes as it streams and hard-links the old file into the new version (same inode,
  read only by both; nothing writes to a published inode). A filesystem without hard links gets
  a copy.
- A reader (the training loader, ``vidloom train``) resolves ``DIR`` once with ``resolve`` to a
  concrete ``DIR/<hash>`` and keeps that path: a later export moves ``latest`` but not the
  files it is reading. A directory holding ``manifest.json`` itself (a version directory, the
  older flat layout, latent shards from ``vidloom encode``) resolves to itself.
- ``gc(DIR, keep)`` removes all but the ``keep`` most recently published versions, never the one
  ``latest`` points at, plus the staging directories of dead export processes. Nothing else
  deletes a version. Recency is the version directory's mtime, set each time it is published
  (a re-export that points ``latest`` back at an old version makes it the newest again).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"  # the shard writer's manifest name (pipelines/shard_writer.py)
LATEST = "latest"
STAGING_PREFIX = ".staging-"
HASH = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class Version:
    """One published version of an export directory."""

    dataset: str  # the dataset hash, also the directory name
    path: Path
    published: float  # mtime of the version directory: when it last became ``latest`` (s, epoch)
    n_samples: int
    bytes: int
    latest: bool


def resolve(path: str | Path) -> Path:
    """The concrete shards directory that ``path`` names, symlinks resolved.

    ``DIR`` (an export directory) gives the version ``DIR/latest`` points at; ``DIR/latest``
    or ``DIR/<hash>`` give that version; a directory with its own ``manifest.json`` (flat
    layout, latent shards) gives itself.

    Raises:
        FileNotFoundError: if ``path`` holds neither ``latest`` nor ``manifest.json``.

    A URL (``s3://…``, pipelines/remote.py) gives a ``RemoteDir`` of its version the same way.
    """
    from pipelines.remote import is_url, resolve_url

    if is_url(path):
        return resolve_url(path, MANIFEST)  # type: ignore[return-value]
    p = Path(path)
    if (p / LATEST).exists():
        p = p / LATEST
    if not (p / MANIFEST).is_file():
        raise FileNotFoundError(f"{path} has no {MANIFEST} and no {LATEST} version: pass a shards directory "
                                "from `vidloom curate`/`vidloom export` or `vidloom encode`")
    return p.resolve()


def read_manifest(path: str | Path) -> dict[str, Any]:
    """The manifest of the version ``path`` resolves to."""
    return json.loads((resolve(path) / MANIFEST).read_text(encoding="utf-8"))


def export_root(version_dir: str | Path) -> Path | None:
    """The export directory a resolved version directory belongs to (None for a flat layout)."""
    p = Path(version_dir).resolve()
    return p.parent if HASH.fullmatch(p.name) else None


def pinned(source: str | Path, dataset: str) -> Path:
    """The directory of version ``dataset`` of the export ``source`` names (for a resume).

    Raises:
        FileNotFoundError: if that version is gone (``vidloom gc``) or was never in ``source``.
    """
    current = resolve(source)
    if _read_hash(current) == dataset:
        return current
    from pipelines.remote import is_url

    root = current.parent if is_url(current) else export_root(current)
    candidate = root / dataset if root is not None else None
    if candidate is not None and (candidate / MANIFEST).is_file() and _read_hash(candidate) == dataset:
        return candidate.resolve()
    have = (_read_hash(current) or "?")[:16]
    raise FileNotFoundError(f"dataset version {dataset[:16]} of {source} is gone (removed by `vidloom gc`?) "
                            f"and {current} holds {have}; resuming on other data would not reproduce the run")


def _read_hash(version_dir: Path) -> str | None:
    try:
        return json.loads((version_dir / MANIFEST).read_text(encoding="utf-8")).get("dataset_hash")
    except (OSError, ValueError):
        return None


def latest_dir(root: str | Path) -> Path | None:
    """The version ``root/latest`` points at, or None."""
    link = Path(root) / LATEST
    return link.resolve() if link.exists() else None


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname()) or "host"


def new_staging(root: str | Path) -> Path:
    """A fresh staging directory under ``root`` (its name holds this host and process id)."""
    r = Path(root)
    r.mkdir(parents=True, exist_ok=True)
    staging = r / f"{STAGING_PREFIX}{_host()}-{os.getpid()}-{secrets.token_hex(4)}"
    staging.mkdir()
    return staging


def publish(root: str | Path, staging: Path, dataset: str) -> tuple[Path, bool]:
    """Make the complete ``staging`` directory version ``dataset`` of ``root`` and point ``latest`` at it.

    Returns:
        The version directory and whether it is new (False: an identical version existed; the
        staging directory is deleted and nothing of the old version is touched).
    """
    r = Path(root)
    final = r / dataset
    created = False
    if not (final / MANIFEST).is_file():
        _fsync_tree(staging)
        try:
            os.rename(staging, final)
            created = True
        except OSError:  # another export published the same bytes first
            if not (final / MANIFEST).is_file():
                raise
    if not created:
        shutil.rmtree(staging)
    switch_latest(r, dataset)
    return final, created


def switch_latest(root: str | Path, dataset: str) -> None:
    """Point ``root/latest`` at ``root/<dataset>``: a symlink made under a temp name, then ``os.replace``."""
    r = Path(root)
    if not (r / dataset / MANIFEST).is_file():
        raise FileNotFoundError(f"no version {dataset} in {r}")
    tmp = r / f".{LATEST}-{os.getpid()}-{secrets.token_hex(4)}"
    os.symlink(dataset, tmp)  # relative: the directory can be moved or copied as a whole
    link = r / LATEST
    if link.is_dir() and not link.is_symlink():
        # a copy of the tree made by a tool that followed the link (shutil.copytree, cp -rL):
        # 'latest' is a plain copy of a version, no version's own files; set it aside for the link
        aside = r / f".{LATEST}-copy-{secrets.token_hex(4)}"
        os.rename(link, aside)
        os.replace(tmp, link)
        shutil.rmtree(aside)
    else:
        os.replace(tmp, link)
    os.utime(r / dataset)  # published now: gc's recency
    _fsync_dir(r)


def versions(root: str | Path) -> list[Version]:
    """The published versions of ``root``, newest first."""
    r = Path(root)
    current = latest_dir(r)
    out = []
    for p in r.iterdir() if r.is_dir() else ():
        if not (HASH.fullmatch(p.name) and p.is_dir() and not p.is_symlink() and (p / MANIFEST).is_file()):
            continue
        manifest = json.loads((p / MANIFEST).read_text(encoding="utf-8"))
        out.append(Version(p.name, p, p.stat().st_mtime, int(manifest.get("n_samples", 0)),
                           sum(int(e.get("bytes", 0)) for e in manifest.get("shards", [])),
                           current is not None and p.resolve() == current))
    return sorted(out, key=lambda v: (-v.published, v.dataset))


def stale_staging(root: str | Path, min_age_s: float | None = 3600.0) -> list[Path]:
    """Staging directories of exports that are gone: this host's with a pid no longer running,
    and another host's older than ``min_age_s`` (None: never judge another host's)."""
    r = Path(root)
    out = []
    for p in sorted(r.glob(f"{STAGING_PREFIX}*")) if r.is_dir() else ():
        host, _, rest = p.name.removeprefix(STAGING_PREFIX).rpartition("-")[0].rpartition("-")
        pid = rest if host else ""
        if host == _host():
            stale = not (pid.isdigit() and _pid_alive(int(pid)))
        else:
            stale = min_age_s is not None and time.time() - p.stat().st_mtime > min_age_s
        if stale:
            out.append(p)
    return out


def gc(root: str | Path, keep: int = 1, dry_run: bool = False,
       log: Callable[[str], None] | None = None) -> list[Path]:
    """Delete all versions of ``root`` but the ``keep`` newest, never the one ``latest`` points at,
    and the staging directories of dead exports. Returns what was (or, dry run, would be) deleted."""
    if keep < 1:
        raise ValueError("--keep must be at least 1 (the version latest points at is always kept)")
    found = versions(root)
    keepers = {v.dataset for v in found[:keep]} | {v.dataset for v in found if v.latest}
    doomed = [v.path for v in found if v.dataset not in keepers] + stale_staging(root)
    for p in doomed:
        if log is not None:
            log(f"{'would delete' if dry_run else 'deleting'} {p}")
        if not dry_run:
            shutil.rmtree(p)
    return doomed


def link_or_copy(src: Path, dst: Path) -> None:
    """``dst`` becomes the same bytes as ``src``: a hard link, or a copy where links are refused."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _fsync_tree(root: Path) -> None:
    """Directory entries durable before the rename publishes them (the shard files are fsynced)."""
    for dirpath, _, _ in os.walk(root):
        _fsync_dir(Path(dirpath))
