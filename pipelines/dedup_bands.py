"""Near-duplicate search that is not all-pairs: LSH bit sampling over the keyframe pHashes.

pipelines/dedup.py defines the distance and the decision; this module finds the pairs within
the distance without comparing every pair, so that a catalog of 10^7 clips dedups in minutes.

**Candidates.** Every keyframe hash of every clip is an entry (a clip has up to 3). A *table*
draws ``key_bits`` of the 64 bit positions at random (a fixed seed: the same catalog gives the
same pairs); two entries whose hashes agree on all those bits share a bucket, and every two
clips sharing a bucket are a candidate pair. Buckets are found by sorting, not hashing in
Python: the masked hash is mixed to ``64 - IDX_BITS`` bits and packed with the entry's index
into one uint64, so one ``np.sort`` per table groups the entries by bucket. A pair of keyframes
``d`` bits apart collides in one table with probability C(64-d, k) / C(64, k); ``n_tables``
independent tables and up to three keyframe pairs per clip pair multiply the chances.

**Verification.** Every candidate pair gets today's exact distance (the symmetrised mean of
nearest-keyframe Hamming distances, :func:`pair_distance`), so a reported pair is always within
the threshold: banding can only miss pairs (recall), never invent one (precision is 1).

**Why sampling, not pigeonhole bands.** Splitting the 64 bits into ``b`` disjoint bands finds
every pair within ``b - 1`` bits, but the default threshold is 10 bits: 11 bands of 5-6 bits,
each bucket holding ~1/64 of the catalog, which is all-pairs again. Multi-index hashing has the
same problem at this radius (radius 2 in each of four 16-bit substrings: ~10^5 candidates per
entry at 3*10^7 entries). Sampling keeps buckets near one entry each (``key_bits`` ~
log2(entries) + 1) and buys recall with tables. Recall is measured against all-pairs by
``vidloom bench scale`` and tests/test_dedup_scale.py, per distance, and is lowest for the
pairs near the threshold (8-10 bits per keyframe).

**Cost.** Per table: one sort of the entries (n log n) plus the candidate pairs, ~entries / 4
random ones by the choice of ``key_bits`` plus the true near pairs. A bucket that holds many
clips (a flat frame that the rules did not reject) costs the square of its size.

**Semantic dedup** (:func:`cosine_pairs`): the same tables over a 64-bit SimHash of each
embedding (signs of 64 fixed random projections; two unit vectors at angle t differ in each bit
with probability t / pi, ~5 bits at cosine 0.97), verified by the exact cosine. It is an LSH
blocking scheme, not a graph index (faiss/hnswlib are not dependencies); it needs every
embedding in memory as float32 (768 dims: 3 KB a clip).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

IDX_BITS = 26  # entries per call < 2^26 (22 million clips with 3 keyframes)
N_TABLES = 40
EXACT_MAX = 2000  # up to this many clips every pair is verified: exact, and cheap
PAIR_CHUNK = 1 << 21
_MIX = np.uint64(0x9E3779B97F4A7C15)  # odd constant: multiplying by it is a bijection mod 2^64


def parse_phashes(texts: list[str | None] | np.ndarray, k: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """uint64 [n, k] keyframe hashes and bool [n, k] validity of stored phash strings (vectorised).

    A string holds 16 hex digits per keyframe (pipelines/dedup.py ``clip_phash``); None, an
    empty string or a short one leaves the missing keyframes invalid.
    """
    n = len(texts)
    width = 16 * k
    raw = np.asarray(
        [t or "" for t in texts] if not isinstance(texts, np.ndarray) else texts, dtype=f"S{width}"
    )
    if n and raw.dtype.itemsize == width:  # every string complete: C's hex decoder
        try:
            h = np.frombuffer(bytes.fromhex(raw.tobytes().decode("ascii")), ">u8").reshape(n, k)
            return h.astype(np.uint64), np.ones((n, k), bool)
        except ValueError:  # a short, empty or non-hex one: the digit by digit path below
            pass
    buf = np.frombuffer(raw.tobytes(), np.uint8).reshape(n, k, 16) if n else np.zeros((0, k, 16), np.uint8)
    nib = _HEX[buf]
    valid = (nib != 255).all(-1)
    nib = np.where(nib == 255, 0, nib)
    packed = np.ascontiguousarray((nib[..., 0::2] << 4) | nib[..., 1::2])  # [n, k, 8] bytes, big-endian
    h = packed.view(">u8")[..., 0].astype(np.uint64)
    return np.where(valid, h, np.uint64(0)), valid


_HEX = np.full(256, 255, np.uint8)
_HEX[np.frombuffer(b"0123456789abcdef", np.uint8)] = np.arange(16)
_HEX[np.frombuffer(b"ABCDEF", np.uint8)] = np.arange(10, 16)


def hex_key(strings: np.ndarray) -> np.ndarray | None:
    """uint64 keys that sort like ``strings`` (a bytes array), when every one is lowercase hex of the
    full width <= 16 (vidloom's ids); else None."""
    width = strings.dtype.itemsize
    if strings.dtype.kind != "S" or width > 16 or not len(strings):
        return None
    buf = np.frombuffer(strings.tobytes(), np.uint8).reshape(len(strings), width)
    nib = _HEX[buf]
    if (nib > 15).any() or ((buf >= ord("A")) & (buf <= ord("F"))).any():
        return None
    key = np.zeros(len(strings), np.uint64)
    for j in range(width):
        key = (key << np.uint64(4)) | nib[:, j].astype(np.uint64)
    return key


def fixed_bytes(arr: object) -> np.ndarray:
    """A pyarrow string array as numpy fixed-width bytes (null -> b''), without Python objects.

    Strings are padded with NUL, which numpy's bytes comparisons ignore, so the array sorts like
    the Python strings (ASCII ids and hex hashes; non-ASCII text falls back to a Python pass).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    a = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    a = pc.fill_null(a, "")
    n = len(a)
    width = max(int(pc.max(pc.binary_length(a)).as_py() or 0), 1) if n else 1
    padded = pc.utf8_rpad(a, width, padding="\0")
    if n and int(pc.max(pc.binary_length(padded)).as_py()) != width:  # multi-byte characters
        return np.asarray([s.encode() for s in a.to_pylist()], dtype=f"S{4 * width}")
    start = (
        int(np.frombuffer(padded.buffers()[1], np.int32, count=1, offset=4 * padded.offset)[0]) if n else 0
    )
    return (
        np.frombuffer(padded.buffers()[2], dtype=f"S{width}", count=n, offset=start)
        if n
        else (np.zeros(0, "S1"))
    )


def filled(h: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """``h`` with each invalid keyframe replaced by the clip's first valid one: the smallest Hamming
    distance over all keyframe pairs is then the smallest over the valid pairs."""
    first = h[np.arange(len(h)), valid.argmax(1)] if len(h) else np.zeros(0, np.uint64)
    return np.where(valid, h, first[:, None])


def screen(hf: np.ndarray, max_distance: float, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """bool [p]: the smallest keyframe-pair Hamming distance of (a[i], b[i]) is within ``max_distance``.

    A clip distance is at least that smallest distance, so a pair that fails cannot be within the
    threshold; the survivors get the full :func:`pair_distance` (``hf`` = :func:`filled`).
    """
    out = np.zeros(len(a), bool)
    for s in range(0, len(a), PAIR_CHUNK):
        ia, ib = a[s : s + PAIR_CHUNK], b[s : s + PAIR_CHUNK]
        ha, hb = hf[ia], hf[ib]
        m = np.bitwise_count(ha[:, 0] ^ hb[:, 0])
        for i in range(hf.shape[1]):
            for j in range(hf.shape[1]):
                if i or j:
                    np.minimum(m, np.bitwise_count(ha[:, i] ^ hb[:, j]), out=m)
        out[s : s + PAIR_CHUNK] = m <= max_distance
    return out


def pair_distance(h: np.ndarray, valid: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """float64 [p]: the clip distance of pairs (a[i], b[i]), exactly as dedup.py defines it
    (mean over A's keyframes of the nearest of B's, symmetrised by max; inf without hashes)."""
    out = np.empty(len(a))
    for s in range(0, len(a), PAIR_CHUNK):
        ia, ib = a[s : s + PAIR_CHUNK], b[s : s + PAIR_CHUNK]
        va, vb = valid[ia], valid[ib]
        ham = np.bitwise_count(h[ia][:, :, None] ^ h[ib][:, None, :]).astype(np.float64)
        ham[~(va[:, :, None] & vb[:, None, :])] = np.inf
        d_ab = _mean_nearest(ham.min(2), va)
        d_ba = _mean_nearest(ham.min(1), vb)
        out[s : s + PAIR_CHUNK] = np.maximum(d_ab, d_ba)
    return out


def _mean_nearest(nearest: np.ndarray, v: np.ndarray) -> np.ndarray:
    mean = np.where(v, nearest, 0).sum(-1) / np.maximum(v.sum(-1), 1)
    mean[~v.any(-1)] = np.inf
    return mean


def key_bits_for(entries: int) -> int:
    """Bits a table samples: buckets of ~half an entry on average (few random candidates)."""
    return int(min(40, max(12, math.ceil(math.log2(max(entries, 2))) + 1)))


def _masks(n_tables: int, key_bits: int, seed: int) -> list[np.uint64]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_tables):
        bits = rng.choice(64, size=key_bits, replace=False)
        out.append(np.uint64(sum(1 << int(b) for b in bits)))
    return out


def lsh_pairs(
    codes: np.ndarray,
    valid: np.ndarray,
    verify: Callable[[np.ndarray, np.ndarray], np.ndarray],
    n_tables: int = N_TABLES,
    key_bits: int | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """The kept candidate pairs (a < b, int64, unique, sorted) among rows of ``codes`` (uint64 [n, k]).

    ``verify(a, b)`` returns a bool mask of the candidate pairs to keep (a cheap exact screen, or
    the exact test itself). Row order is the
    caller's (dedup passes rows in keep order, so a < b means a ranks first).
    """
    n, k = codes.shape
    entry = np.flatnonzero(valid.ravel()).astype(np.uint64)  # entry = row * k + keyframe
    if len(entry) >= 1 << IDX_BITS:
        raise ValueError(f"{len(entry)} hashes: more than {1 << IDX_BITS} per call")
    flat = codes.ravel()[entry.astype(np.int64)]
    bits = key_bits or key_bits_for(len(entry))
    idx_mask = np.uint64((1 << IDX_BITS) - 1)
    found: list[np.ndarray] = []
    for mask in _masks(n_tables, bits, seed):
        key = ((flat & mask) * _MIX) >> np.uint64(IDX_BITS)
        packed = np.sort((key << np.uint64(IDX_BITS)) | entry)
        key_s = packed >> np.uint64(IDX_BITS)
        row = ((packed & idx_mask) // np.uint64(k)).astype(np.int64)
        keep = np.ones(len(row), bool)  # one entry per (bucket, row): a row's keyframes often agree
        keep[1:] = (key_s[1:] != key_s[:-1]) | (row[1:] != row[:-1])
        key_s, row = key_s[keep], row[keep]
        found.extend(_bucket_pairs(key_s, row, n, verify))
    if not found:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    code = np.unique(np.concatenate(found))
    return code // n, code % n


def _bucket_pairs(
    key: np.ndarray, row: np.ndarray, n_rows: int, verify: Callable[[np.ndarray, np.ndarray], np.ndarray]
) -> list[np.ndarray]:
    """Verified pairs of rows sharing a bucket, as codes a * n + b (rows ascend inside a bucket)."""
    m = len(key)
    if m < 2:
        return []
    start = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    length = np.diff(np.r_[start, m])
    multi = length > 1
    run_start, run_len = np.repeat(start[multi], length[multi]), np.repeat(length[multi], length[multi])
    pos = np.flatnonzero(np.repeat(multi, length))
    pos_in_run = pos - run_start
    out = []
    d = 1
    while len(pos):
        alive = pos_in_run + d < run_len
        pos, pos_in_run, run_len = pos[alive], pos_in_run[alive], run_len[alive]
        if not len(pos):
            break
        a, b = row[pos], row[pos + d]
        ok = verify(a, b)
        if ok.any():
            out.append(a[ok] * n_rows + b[ok])
        d += 1
    return out


def phash_pairs(
    h: np.ndarray,
    valid: np.ndarray,
    max_distance: float,
    method: str = "auto",
    n_tables: int = N_TABLES,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (a < b) of rows within ``max_distance``: 'exact' verifies every pair, 'lsh' bands,
    'auto' is exact up to ``EXACT_MAX`` rows."""
    n = len(h)
    if method == "exact" or (method == "auto" and n <= EXACT_MAX):
        return exact_phash_pairs(h, valid, max_distance)
    if method not in ("lsh", "auto"):
        raise ValueError(f"dedup method {method!r}: one of auto, exact, lsh")
    hf = filled(h, valid)
    a, b = lsh_pairs(h, valid, lambda a, b: screen(hf, max_distance, a, b), n_tables=n_tables, seed=seed)
    ok = pair_distance(h, valid, a, b) <= max_distance  # once per pair, after the tables
    return a[ok], b[ok]


def exact_phash_pairs(
    h: np.ndarray, valid: np.ndarray, max_distance: float, block: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """Every pair within ``max_distance``, by comparing all pairs (the reference LSH is measured on).

    A clip distance is at least the smallest keyframe-to-keyframe Hamming distance of the pair, so
    all pairs are screened on that minimum (numpy popcounts in row blocks, upper triangle only)
    and the survivors get :func:`pair_distance`.
    """
    n, k = h.shape
    far = np.uint8(255)
    outs_a, outs_b = [], []
    for s in range(0, n, block):
        blk, vb = h[s : s + block], valid[s : s + block]
        other, vo = h[s:], valid[s:]
        m = np.full((len(blk), len(other)), far, np.uint8)
        for i in range(k):
            for j in range(k):
                ham = np.bitwise_count(blk[:, i, None] ^ other[None, :, j])
                ham[~(vb[:, i, None] & vo[None, :, j])] = far
                np.minimum(m, ham, out=m)
        ia, ib = np.nonzero(m <= max_distance)
        ia, ib = ia + s, ib + s
        sel = ib > ia
        ia, ib = ia[sel], ib[sel]
        ok = pair_distance(h, valid, ia, ib) <= max_distance
        outs_a.append(ia[ok])
        outs_b.append(ib[ok])
    if not outs_a:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(outs_a).astype(np.int64), np.concatenate(outs_b).astype(np.int64)


def _verified_all_pairs(
    n: int,
    verify: Callable[[np.ndarray, np.ndarray], np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    outs_a, outs_b = [], []
    for s in range(0, n, max(1, PAIR_CHUNK // max(n, 1))):  # row blocks: memory stays bounded
        rows = np.arange(s, min(n, s + max(1, PAIR_CHUNK // max(n, 1))))
        a = np.repeat(rows, n)
        b = np.tile(np.arange(n), len(rows))
        sel = b > a
        a, b = a[sel], b[sel]
        ok = verify(a, b)
        outs_a.append(a[ok])
        outs_b.append(b[ok])
    if not outs_a:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(outs_a).astype(np.int64), np.concatenate(outs_b).astype(np.int64)


def simhash(e: np.ndarray, seed: int = 0) -> np.ndarray:
    """uint64 [n, 1]: signs of 64 fixed random projections of the rows of ``e``."""
    proj = np.random.default_rng(seed).standard_normal((e.shape[1], 64)).astype(np.float32)
    bits = (e.astype(np.float32) @ proj) > 0
    return np.packbits(bits, axis=1).view(">u8").astype(np.uint64)


def cosine_pairs(
    e: np.ndarray, min_cosine: float, method: str = "auto", n_tables: int = N_TABLES, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (a < b) of unit rows of ``e`` with cosine >= ``min_cosine`` (module docstring)."""

    def verify(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        out = np.empty(len(a), bool)
        for s in range(0, len(a), 1 << 16):
            ea, eb = e[a[s : s + (1 << 16)]], e[b[s : s + (1 << 16)]]
            out[s : s + (1 << 16)] = np.einsum("ij,ij->i", ea, eb) >= min_cosine
        return out

    n = len(e)
    if method == "exact" or (method == "auto" and n <= EXACT_MAX):
        return _verified_all_pairs(n, verify)
    codes = simhash(e, seed)
    return lsh_pairs(codes, np.ones(codes.shape, bool), verify, n_tables=n_tables, seed=seed + 1)


def greedy_dup_of(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """int64 [n]: for rows in keep order, the kept row each near duplicate points at (-1: kept).

    Today's rule: in keep order, a row duplicates the first earlier row it is near that is itself
    kept. Pairs (a < b) sorted by (b, a) are walked once; only rows with a near pair cost Python time.
    """
    dup = np.full(n, -1, np.int64)
    if not len(a):
        return dup
    order = np.lexsort((a, b))
    a, b = a[order], b[order]
    starts = np.flatnonzero(np.r_[True, b[1:] != b[:-1]])
    ends = np.r_[starts[1:], len(b)]
    a_list, b_first = a.tolist(), b[starts].tolist()
    kept = np.ones(n, bool).tolist()
    dup_list = dup.tolist()
    for s, e, bb in zip(starts.tolist(), ends.tolist(), b_first, strict=True):
        for i in range(s, e):
            if kept[a_list[i]]:
                dup_list[bb] = a_list[i]
                kept[bb] = False
                break
    return np.asarray(dup_list, np.int64)
