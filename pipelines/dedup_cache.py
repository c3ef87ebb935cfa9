"""Near-duplicate pairs kept between filter steps, so a rescore does not search them again.

The pairs within ``phash_max_distance`` depend only on the clips' keyframe hashes, not on the
thresholds: a rescore changes which clips take part in dedup, not which pairs are near. So the
filter step searches the pairs once over every clip of the split (pipelines/dedup_bands.py) and
stores them in ``<catalog dir>/.work/dedup/``, named by a fingerprint of the split's
(clip_id, phash) rows (count, XOR and sum of DuckDB's 64-bit row hashes) and of the search
parameters. A rescore over the same clips reads them back and restricts them to the clips that
take part; any new, removed or re-hashed clip changes the fingerprint and the pairs are searched
again. Losing the directory (``vidloom gc``) costs one search, never a wrong result.

Pairs are stored as positions in the clips' ``clip_id`` order (two int32 or int64 columns of one
``.npy`` file), which the fingerprint pins down.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from pipelines import dedup_bands

VERSION = 1  # bump when the pair search or its parameters change meaning


def fingerprint(cat: Any, split_hash: str, max_distance: float, method: str) -> str:
    """The name of the pairs of this split's hashes under these search parameters."""
    n, x, s = cat.con.execute(
        "SELECT count(*), coalesce(bit_xor(hash(clip_id, coalesce(phash, ''))), 0), "
        "coalesce(sum(hash(clip_id, coalesce(phash, '')))::HUGEINT, 0) FROM clips WHERE split_hash = ?",
        [split_hash],
    ).fetchone()
    params = f"v{VERSION}-d{max_distance:g}-{method}-t{dedup_bands.N_TABLES}"
    return f"{split_hash}-{n}-{int(x) & (2**64 - 1):016x}-{int(s) & (2**64 - 1):016x}-{params}"


def path_for(cat: Any, name: str) -> Path:
    return Path(cat.path).resolve().parent / ".work" / "dedup" / f"{name}.npy"


def near_pairs(
    cat: Any,
    split_hash: str,
    clip_order: np.ndarray,
    h: np.ndarray,
    valid: np.ndarray,
    max_distance: float,
    method: str = "auto",
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Pairs (row a, row b) of every clip of the split within ``max_distance``, and whether they came
    from the store. ``clip_order``: the rows in clip_id order; ``h``, ``valid``: the parsed hashes."""
    name = fingerprint(cat, split_hash, max_distance, method)
    path = path_for(cat, name)
    if path.exists():
        try:
            pos = np.load(path)
            return clip_order[pos[0]], clip_order[pos[1]], True
        except (OSError, ValueError):
            pass  # unreadable: search again
    a, b = dedup_bands.phash_pairs(h, valid, max_distance, method)
    where = np.empty(len(clip_order), np.int64)
    where[clip_order] = np.arange(len(clip_order))
    pos = np.stack([where[a], where[b]]).astype(np.int32 if len(clip_order) < 2**31 else np.int64)
    path.parent.mkdir(parents=True, exist_ok=True)
    for old in path.parent.glob(f"{split_hash}-*.npy"):  # one set of pairs per split
        old.unlink(missing_ok=True)
    tmp = path.with_name(path.name + ".tmp.npy")
    np.save(tmp, pos)
    tmp.replace(path)
    return a, b, False
