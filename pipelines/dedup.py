"""Duplicate detection: exact (content hash) and near (perceptual hash), within and across videos.

Both hashes come from the decode pass's frames, so nothing is decoded again:

- ``content_hash``: sha256 of the clip's tiny frames (every frame, 48x27 RGB). Identical
  decoded pictures give identical hashes whatever the container or file bytes (a remux).
- ``phash``: a 64-bit DCT perceptual hash (32x32 luma, the 8x8 lowest frequencies against
  their median) of the clip's first, middle and last sparse frame. Sparse frames are fitted
  into the same box whatever the source size, so a rescaled re-encode hashes alike.

Near-duplicate distance between clips A and B: for each keyframe hash of A, the Hamming
distance to the nearest keyframe hash of B, averaged (so a span that starts a few frames
later still matches), symmetrised by taking the max of both directions.

Which clip of a duplicate group is kept (``keep_order``, a pure function of the catalog rows):
the best technical copy. Fewest compression ``artifacts`` first, compared in bands of
``ARTIFACT_BAND`` (0.05: clean copies of one clip all read 0, or differ by measurement noise);
then the most pixels; then the most ``bits_per_pixel``; then the most frames. Pixels come
before bits per pixel although both measure fidelity: bits per pixel rise as the frame
shrinks (the Sintel trailer at 1280x720: 0.044 bpp, its 176x144 x264 crf 23 copy 0.167), so they
only rank copies of one size. The last tie-break is the content, never a path or file
name: video_id (the sha256 of the file's bytes), then start frame, then clip_id, so a
remux (same packets, same frames) loses or wins all its clips together. Every rejected
member's ``dup_of`` is the kept clip of its group.

Candidate pairs are not all pairs beyond ``dedup_bands.EXACT_MAX`` clips: LSH bit sampling over
the keyframe hashes (and a SimHash of the embeddings) finds them, each verified with the exact
distance above (pipelines/dedup_bands.py: how, its recall, its cost). :func:`duplicate_index`
is the columnar core (numpy arrays in keep order, what the filter step and ``vidloom bench
scale`` call); :func:`find_duplicates` is the same on row dicts.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from pipelines import dedup_bands

N_KEYFRAMES = 3
ARTIFACT_BAND = 0.05  # artifacts closer than this are the same quality for keep_order


def content_hash(tiny: np.ndarray) -> str:
    """sha256 hex of uint8 frames [n, h, w, 3] (shape included)."""
    h = hashlib.sha256(str(tiny.shape).encode())
    h.update(np.ascontiguousarray(tiny).tobytes())
    return h.hexdigest()


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    m = np.cos(np.pi * (2 * np.arange(n)[None, :] + 1) * k / (2 * n))
    m[0] /= np.sqrt(2)
    return m * np.sqrt(2 / n)


_DCT32 = _dct_matrix(32)


def phash64(rgb: np.ndarray) -> int:
    """64-bit perceptual hash of one uint8 RGB frame [h, w, 3]."""
    import cv2

    gray = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
    small = cv2.resize(gray, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float64)
    low = (_DCT32 @ small @ _DCT32.T)[:8, :8].ravel()
    bits = low > np.median(low[1:])  # the DC term sets the brightness, not the structure
    return int(np.packbits(bits.astype(np.uint8)).view(">u8")[0])


def keyframe_positions(k: int) -> list[int]:
    """Indices of the first, middle and last of ``k`` sparse frames (fewer when k < 3)."""
    return sorted({0, k // 2, k - 1}) if k > 0 else []


def clip_phash(sparse: np.ndarray) -> str | None:
    """Hex of the keyframe hashes (16 hex digits each) of a clip's sparse frames, or None."""
    pos = keyframe_positions(len(sparse))
    return "".join(f"{phash64(sparse[i]):016x}" for i in pos) or None


def parse_phash(text: str | None) -> np.ndarray:
    """uint64 [k] of a stored phash string (empty when None)."""
    if not text:
        return np.zeros(0, np.uint64)
    return np.array([int(text[i : i + 16], 16) for i in range(0, len(text), 16)], np.uint64)


def _popcount(x: np.ndarray) -> np.ndarray:
    return np.unpackbits(x.view(np.uint8), axis=-1).reshape(*x.shape, 64).sum(-1)


def phash_distance_matrix(hashes: Sequence[np.ndarray]) -> np.ndarray:
    """float [n, n]: the symmetrised mean-min Hamming distance between clips (inf without hashes)."""
    n = len(hashes)
    k = max((len(h) for h in hashes), default=0)
    if n == 0 or k == 0:
        return np.full((n, n), np.inf)
    mat = np.zeros((n, k), np.uint64)
    valid = np.zeros((n, k), bool)
    for i, h in enumerate(hashes):
        mat[i, : len(h)], valid[i, : len(h)] = h, True
    # ham[a, b, i, j] = popcount(mat[a, i] ^ mat[b, j]); done in row blocks to bound memory
    out = np.full((n, n), np.inf)
    block = max(1, 2_000_000 // max(1, n * k * k))
    for s in range(0, n, block):
        x = mat[s : s + block, None, :, None] ^ mat[None, :, None, :]
        ham = _popcount(x).astype(np.float64)
        ham[~np.broadcast_to(valid[None, :, None, :], ham.shape)] = np.inf
        nearest = ham.min(axis=3)  # [b, n, k]: each of A's keyframes to B's nearest
        va = valid[s : s + block, None, :]
        mean = np.where(va, nearest, 0).sum(-1) / np.maximum(va.sum(-1), 1)
        mean[~va.any(-1).repeat(n, axis=1)] = np.inf
        out[s : s + block] = mean
    return np.maximum(out, out.T)


def encode_embedding(v: np.ndarray) -> str:
    """A unit embedding as base64 float16 (a VARCHAR column: 768 dims are 2 KB of text)."""
    import base64

    return base64.b64encode(np.asarray(v, np.float16).tobytes()).decode("ascii")


def decode_embedding(text: str) -> np.ndarray:
    import base64

    v = np.frombuffer(base64.b64decode(text), np.float16).astype(np.float32)
    return v / max(float(np.linalg.norm(v)), 1e-12)


def keep_order(row: dict[str, Any]) -> tuple[Any, ...]:
    """Sort key: the first clip of a duplicate group is the one that is kept (module docstring).

    Unmeasured ``artifacts`` (None) count as clean, as they never reject.
    """
    band = math.floor((row.get("artifacts") or 0.0) / ARTIFACT_BAND + 1e-9)
    # frames, not seconds: a remux into another container can round the same span's times apart
    quality = (band, -(row["width"] or 0) * (row["height"] or 0), -(row.get("bits_per_pixel") or 0.0),
               -(row["end_frame"] - row["start_frame"]))
    return (*quality, row.get("video_id") or "", row["start_frame"], row["clip_id"])


def keep_rank(cols: dict[str, Any]) -> np.ndarray:
    """Row indices in :func:`keep_order`, from column arrays (the filter step's vectorised sort).

    ``cols``: numpy arrays (or lists) clip_id, video_id, start_frame, end_frame, width, height,
    artifacts, bits_per_pixel, with None/NaN where unmeasured; clip_id and video_id may be given
    as integer sort keys already (``_sort_key``). Same order as sorting the row
    dicts by :func:`keep_order` (tests/test_dedup_scale.py compares them).
    """
    def num(name: str, dtype: Any) -> np.ndarray:
        v = np.asarray(cols[name], dtype=np.float64) if cols.get(name) is not None else None
        return np.zeros(len(cols["clip_id"]), dtype) if v is None else np.nan_to_num(v, nan=0.0).astype(dtype)

    band = np.floor(num("artifacts", np.float64) / ARTIFACT_BAND + 1e-9)
    pixels = -num("width", np.int64) * num("height", np.int64)
    frames = -(num("end_frame", np.int64) - num("start_frame", np.int64))
    video = _sort_key(cols["video_id"])
    return np.lexsort((_sort_key(cols["clip_id"]), num("start_frame", np.int64), video, frames,
                       -num("bits_per_pixel", np.float64), pixels, band))


def _strings(v: Sequence[str | None] | np.ndarray) -> np.ndarray:
    """A numpy string array ('' for None): bytes arrays (from Arrow) pass through as they are."""
    if isinstance(v, np.ndarray) and v.dtype.kind in "SU":
        return v
    return np.asarray([x or "" for x in v], dtype="U")


def _sort_key(v: Sequence[str | None] | np.ndarray) -> np.ndarray:
    """Integers that sort like the strings (None as ''): hex ids parsed, else their ranks.
    Integer arrays are taken as keys already."""
    if isinstance(v, np.ndarray) and v.dtype.kind in "iu":
        return v
    strings = _strings(v)
    key = dedup_bands.hex_key(strings)
    return key if key is not None else np.unique(strings, return_inverse=True)[1]


def content_words(content: Sequence[str | None] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """uint64 [n, 4] and presence [n] of content hashes: sha256 hex parsed; any other non-empty
    string is replaced by the sha256 of it (equal strings stay equal, different ones differ)."""
    strings = _strings(content)
    words, ok = dedup_bands.parse_phashes(strings, 4)
    present = strings != strings.dtype.type()
    ok = ok.all(1) & present
    for i in np.flatnonzero(present & ~ok).tolist():  # not vidloom's hex sha256: rare, in Python
        s = strings[i]
        digest = hashlib.sha256(b"\0other:" + (s if isinstance(s, bytes) else str(s).encode())).hexdigest()
        words[i] = dedup_bands.parse_phashes([digest], 4)[0][0]
    return words, present


def _exact_heads(words: np.ndarray, present: np.ndarray) -> np.ndarray:
    """int64 [n]: for rows in keep order, the first row with the same content hash (-1: none/itself)."""
    n = len(words)
    head = np.full(n, -1, np.int64)
    have = np.flatnonzero(present)
    if not len(have):
        return head
    w_have = words[have]
    order = np.argsort(w_have[:, 0], kind="stable")  # stable: keep order within a group
    w = w_have[order]
    start = np.r_[True, (w[1:] != w[:-1]).any(1)]
    if (start[1:] & (w[1:, 0] == w[:-1, 0])).any():
        # two different hashes share their first word: group on all four (a full lexsort)
        order = np.lexsort((np.arange(len(have)), w_have[:, 3], w_have[:, 2], w_have[:, 1], w_have[:, 0]))
        w = w_have[order]
        start = np.r_[True, (w[1:] != w[:-1]).any(1)]
    first = order[np.maximum.accumulate(np.where(start, np.arange(len(order)), 0))]
    first_of = np.empty(len(have), np.int64)
    first_of[order] = first
    first_pos = have[first_of]
    dup = first_pos != have
    head[have[dup]] = first_pos[dup]
    return head


def duplicate_index(
    content: Sequence[str | None] | np.ndarray | tuple[np.ndarray, np.ndarray],
    phash: Sequence[str | None] | np.ndarray | tuple[np.ndarray, np.ndarray],
    phash_max_distance: float,
    embeddings: np.ndarray | None = None,
    min_cosine: float = 1.1,
    method: str = "auto",
    n_tables: int = dedup_bands.N_TABLES,
    pairs: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """int64 [n]: for rows already in keep order, the row each duplicate points at (-1: not one).

    ``content`` and ``phash``: the stored strings, or already parsed (:func:`content_words`,
    ``dedup_bands.parse_phashes``). ``embeddings``: float32 [n, dim] unit rows, NaN rows for clips
    without one (semantic dedup, cosine >= ``min_cosine``). ``method``: 'auto' | 'exact' | 'lsh'
    (pipelines/dedup_bands.py).
    ``pairs``: the near pairs (row positions) when already known (pipelines/dedup_cache.py): the
    pHash search is skipped, and pairs with an exact copy among them are dropped.
    """
    words, present = content if isinstance(content, tuple) else content_words(content)
    n = len(words)
    dup = _exact_heads(words, present)
    rest = np.flatnonzero(dup < 0)  # near dedup runs on the clips that are not exact copies
    h, valid = phash if isinstance(phash, tuple) else dedup_bands.parse_phashes(_strings(phash), N_KEYFRAMES)
    h, valid = h[rest], valid[rest]
    if pairs is None:
        a, b = dedup_bands.phash_pairs(h, valid, phash_max_distance, method, n_tables)
    else:
        at = np.full(n, -1, np.int64)
        at[rest] = np.arange(len(rest))
        given = (pairs[0] >= 0) & (pairs[1] >= 0)  # -1: a row that takes no part
        pa_, pb_ = at[pairs[0][given]], at[pairs[1][given]]
        ok = (pa_ >= 0) & (pb_ >= 0)
        a, b = np.minimum(pa_[ok], pb_[ok]), np.maximum(pa_[ok], pb_[ok])
    if embeddings is not None and len(rest):
        sub = embeddings[rest]
        have = np.flatnonzero(~np.isnan(sub).any(axis=1))
        if len(have):
            ea, eb = dedup_bands.cosine_pairs(sub[have], min_cosine, method, n_tables)
            a, b = np.concatenate([a, have[ea]]), np.concatenate([b, have[eb]])
            code = np.unique(a * len(rest) + b)
            a, b = code // len(rest), code % len(rest)
    near = dedup_bands.greedy_dup_of(len(rest), a, b)
    has = near >= 0
    dup[rest[has]] = rest[near[has]]
    is_rest = np.zeros(n, bool)
    is_rest[rest] = True
    exact = np.flatnonzero((dup >= 0) & ~is_rest)
    heads = dup[exact]
    # an exact copy of a near duplicate points at the kept clip (near duplicates point at kept ones)
    dup[exact] = np.where(dup[heads] >= 0, dup[heads], heads)
    return dup


def find_duplicates(
    rows: list[dict[str, Any]],
    phash_max_distance: float,
    embeddings: dict[str, np.ndarray] | None = None,
    min_cosine: float = 1.1,
    method: str = "auto",
) -> dict[str, str]:
    """clip_id -> the clip_id it duplicates, for every duplicate among ``rows``.

    Args:
        rows: clip rows with clip_id, video_id, content_hash, phash, width, height,
            start_frame, end_frame and (optional) artifacts and bits_per_pixel.
        phash_max_distance: near-duplicate when the clip distance is at most this (bits of 64).
        embeddings: optional clip_id -> unit embedding (semantic dedup, cosine >= min_cosine).
        method: 'auto' (every pair up to dedup_bands.EXACT_MAX clips, LSH beyond), 'exact', 'lsh'.
    """
    order = sorted(rows, key=keep_order)
    emb = None
    if embeddings:
        dim = len(next(iter(embeddings.values())))
        emb = np.full((len(order), dim), np.nan, np.float32)
        for i, r in enumerate(order):
            if r["clip_id"] in embeddings:
                emb[i] = embeddings[r["clip_id"]]
    dup = duplicate_index([r.get("content_hash") for r in order], [r.get("phash") for r in order],
                          phash_max_distance, emb, min_cosine, method)
    return {order[i]["clip_id"]: order[j]["clip_id"] for i, j in enumerate(dup.tolist()) if j >= 0}
