"""Catalog columns in compact form for the column-wise filter step (pipelines/decide_columns.py).

:func:`load_columns` streams a query's Arrow batches into numpy arrays (numbers as float64 with
NaN for null, ids and hashes parsed to integers) and :class:`Sparse` lists (mostly-null text);
:func:`num`, :func:`present`, :func:`sparse_rows` and :func:`item` read a column in any of the
forms the rules meet (Arrow, numpy, list, Sparse). ``KEEP_KEYS`` are the columns dedup's keep
order reads (pipelines/dedup.py ``keep_rank``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

KEEP_KEYS = (
    "clip_id",
    "video_id",
    "start_frame",
    "end_frame",
    "width",
    "height",
    "artifacts",
    "bits_per_pixel",
)


class Sparse:
    """A mostly-null string column: the rows holding a non-empty value, and those values."""

    def __init__(self, n: int, idx: np.ndarray, values: list[Any], nulls: np.ndarray) -> None:
        self.n, self.idx, self.values, self.nulls = n, idx, values, nulls

    def __len__(self) -> int:
        return self.n


def num(cols: dict[str, Any], name: str) -> np.ndarray:
    """float64 with NaN for null (an Arrow column, numpy array or list)."""
    v = cols[name]
    if hasattr(v, "to_numpy"):
        v = v.to_numpy(zero_copy_only=False)
    return np.asarray([np.nan if x is None else x for x in v] if isinstance(v, list) else v, np.float64)


def present(cols: dict[str, Any], name: str) -> np.ndarray:
    v = cols[name]
    if isinstance(v, Sparse):
        return ~v.nulls
    if isinstance(v, np.ndarray) and v.dtype.kind == "f":
        return ~np.isnan(v)
    if hasattr(v, "is_null"):
        return ~np.asarray(v.is_null().to_numpy(zero_copy_only=False), bool)
    return np.asarray([x is not None for x in v], bool)


def sparse_rows(cols: dict[str, Any], name: str) -> tuple[np.ndarray, list[Any]]:
    """Indices and values of the rows where ``name`` is neither null nor empty (few, for Python)."""
    v = cols[name]
    if isinstance(v, Sparse):
        return v.idx, v.values
    if hasattr(v, "is_null"):
        import pyarrow.compute as pc

        idx = np.flatnonzero(np.asarray(pc.fill_null(pc.not_equal(v, ""), False), bool))
        return idx, v.take(idx).to_pylist()
    idx = np.asarray([i for i, x in enumerate(v) if x not in (None, "")], np.int64)
    return idx, [v[i] for i in idx]


def item(v: Any, i: int) -> Any:
    if isinstance(v, Sparse):
        j = np.searchsorted(v.idx, i)
        return v.values[j] if j < len(v.idx) and v.idx[j] == i else None
    x = v[i]
    x = x.as_py() if hasattr(x, "as_py") else x
    if isinstance(x, float | np.floating) and np.isnan(x):
        return None
    return x.item() if isinstance(x, np.generic) else x


def fixed_width(arr: Any) -> np.ndarray:
    """pipelines/dedup_bands.py ``fixed_bytes`` (strings as NUL-padded numpy bytes, null -> b''),
    from the Arrow buffers in numpy: one view when every string has the same length and none is
    null (ids, content hashes), else one gather per distinct length (phashes: full, one keyframe,
    null). ``fixed_bytes`` itself pads in Arrow kernels, seconds per 10^6 strings; it still takes
    what this does not (non-ASCII text, many distinct lengths, non-string types)."""
    import pyarrow as pa

    from pipelines.dedup_bands import fixed_bytes

    a = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    n = len(a)
    if not n or a.type not in (pa.string(), pa.large_string()):
        return fixed_bytes(a)
    bufs = a.buffers()
    off_t = np.int32 if a.type == pa.string() else np.int64
    off = np.frombuffer(bufs[1], off_t, count=n + 1, offset=a.offset * np.dtype(off_t).itemsize)
    off = off.astype(np.int64)
    data = np.frombuffer(bufs[2], np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
    lens = np.diff(off)
    if a.null_count:
        lens = np.where(np.asarray(a.is_valid().to_numpy(zero_copy_only=False), bool), lens, 0)
    width = max(int(lens.max()), 1)
    used = data[off[0] : off[-1]]
    if len(used) and int(used.max()) >= 0x80:  # multi-byte characters: fixed_bytes's own path
        return fixed_bytes(a)
    if not a.null_count and int(lens.min()) == width:
        return used.view(f"S{width}")
    distinct = np.unique(lens)
    if len(distinct) > 8:
        return fixed_bytes(a)
    out = np.zeros(n * width, np.uint8)
    full = lens == width
    # runs of full-width rows are one block in the data and in ``out``: a slice copy each
    edges = np.flatnonzero(np.diff(np.r_[0, full.astype(np.int8), 0]))
    starts, ends = edges[0::2], edges[1::2]
    if len(starts) <= max(64, n // 16):
        for i, j in zip(starts.tolist(), ends.tolist(), strict=True):
            out[i * width : j * width] = data[off[i] : off[j]]
        lens = np.where(full, 0, lens)
    grid = out.reshape(n, width)
    for length in distinct.tolist():
        rows = np.flatnonzero(lens == length) if length else ()
        for lo in range(0, len(rows), 1 << 16):
            r = rows[lo : lo + (1 << 16)]
            grid[r, :length] = data[off[r, None] + np.arange(length)]
    return out.view(f"S{width}")


def parse_phash_column(raw: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """pipelines/dedup_bands.py ``parse_phashes`` of fixed-width bytes, row by row the same: the
    full-width rows in one C hex decode, the others (short, empty, non-hex) digit by digit."""
    from pipelines.dedup_bands import parse_phashes

    n = len(raw)
    width = raw.dtype.itemsize
    # a full-width row ends in a digit, a shorter one in NUL padding (which way a row goes only
    # decides its speed: parse_phashes reads every row on its own)
    full = raw.view(np.uint8).reshape(n, width)[:, -1] != 0 if width == 16 * k and n else np.zeros(n, bool)
    if full.all() or not full.any():
        return parse_phashes(raw, k)
    h, valid = np.zeros((n, k), np.uint64), np.zeros((n, k), bool)
    for sel in (full, ~full):
        h[sel], valid[sel] = parse_phashes(raw[sel], k)
    return h, valid


def load_columns(
    con: Any, sql: str, params: list[Any], kinds: dict[str, str], batch: int = 1 << 18
) -> dict[str, Any]:
    """Run ``sql`` and keep each column in its compact form, one Arrow batch at a time.

    kinds: 'num' float64 (NaN for null); 'sparse' :class:`Sparse` (strings that are mostly null);
    'key' an integer sort key of the strings (pipelines/dedup.py ``_sort_key``); 'content' parsed
    content hashes; 'phash' parsed keyframe hashes; 'arrow' the Arrow array as it is.
    Strings never become Python objects except the sparse ones.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    from pipelines.dedup import N_KEYFRAMES, content_words

    parts: dict[str, list[Any]] = {k: [] for k in kinds}
    offset = 0
    for rb in con.sql(sql, params=params).to_arrow_reader(batch):
        for name, kind in kinds.items():
            col = rb.column(name)
            if kind == "num":
                parts[name].append(np.asarray(col.to_numpy(zero_copy_only=False), np.float64))
            elif kind == "sparse":
                idx = np.flatnonzero(np.asarray(pc.fill_null(pc.not_equal(col, ""), False), bool))
                nulls = np.asarray(col.is_null().to_numpy(zero_copy_only=False), bool)
                parts[name].append((idx + offset, col.take(pa.array(idx)).to_pylist(), nulls))
            elif kind == "key":
                parts[name].append(fixed_width(col).copy())
            elif kind == "content":
                parts[name].append(content_words(fixed_width(col)))
            elif kind == "phash":
                parts[name].append(parse_phash_column(fixed_width(col), N_KEYFRAMES))
            else:
                parts[name].append(col)
        offset += rb.num_rows
    out: dict[str, Any] = {}
    for name, kind in kinds.items():
        got = parts[name]
        if kind == "num":
            out[name] = np.concatenate(got) if got else np.zeros(0)
        elif kind == "sparse":
            out[name] = Sparse(
                offset,
                np.concatenate([g[0] for g in got]) if got else np.zeros(0, np.int64),
                [v for g in got for v in g[1]],
                np.concatenate([g[2] for g in got]) if got else np.zeros(0, bool),
            )
        elif kind == "key":
            from pipelines.dedup import _sort_key

            out[name] = _sort_key(np.concatenate(got) if got else np.zeros(0, "S1"))
        elif kind in ("content", "phash"):
            out[name] = (
                (np.concatenate([g[0] for g in got]), np.concatenate([g[1] for g in got]))
                if got
                else (
                    np.zeros((0, 4 if kind == "content" else N_KEYFRAMES), np.uint64),
                    np.zeros(0 if kind == "content" else (0, N_KEYFRAMES), bool),
                )
            )
        else:
            out[name] = (
                pa.concat_arrays([c for g in got for c in (g.chunks if hasattr(g, "chunks") else [g])])
                if got
                else pa.array([], pa.string())
            )
    return out
