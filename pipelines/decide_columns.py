"""The filter step on columns: the rules of pipelines/decide.py over numpy arrays, for 10^7 clips.

``vidloom curate --rescore`` decides every clip of the catalog again. Row dicts cost ~2 KB and a
Python call per rule each: minutes and gigabytes at 10^7 clips. Here the catalog hands over the
columns the rules read as Arrow, each rule is one vectorised comparison, and only the clips
whose outcome changed are written back.

:func:`reject_reasons` must say what :func:`pipelines.decide.reject_reason` says for every row:
tests/test_dedup_scale.py compares the two on random rows (nulls, NaN and values on the
thresholds included), and :data:`RULE_ORDER` is checked against ``decide.REASONS`` at import,
so a rule added there without its column form here fails at once. Per-row Python remains where
the rule is not a comparison and few rows take part: the text crop (rows with text boxes) and
the caption checks (rows with failed checks).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipelines.config import CaptionConfig, FilterConfig
from pipelines.decide import CROP_COLUMNS, REASONS, _failed, crop_columns
from pipelines.quality import CLIP_HIGH

RULE_ORDER = ("too_short", "too_long", "low_resolution", "bad_aspect", "black", "dark", "overexposed",
              "compressed", "blurry", "letterbox", "frozen", "text", "static", "too_fast", "low_aesthetic",
              "duplicate", "extract_error", "caption_check", "no_caption")
if RULE_ORDER != REASONS:  # pragma: no cover - a rule changed in decide.py and not here
    raise ImportError(f"pipelines/decide_columns.py rules {RULE_ORDER} != decide.REASONS {REASONS}")
BEFORE_DUPLICATE = RULE_ORDER.index("duplicate")

NUMERIC = ("start_s", "end_s", "width", "height", "black_frac", "luma", "luma_high", "clipped", "artifacts",
           "blur", "black_border", "frozen", "text_area", "motion", "aesthetic")
TEXT = ("score_error", "extract_error", "caption_error", "caption_failed")
CROP_INPUTS = ("text_boxes", "source_width", "source_height", "crop_x", "crop_y", "crop_w", "crop_h")


def _num(cols: dict[str, Any], name: str) -> np.ndarray:
    """float64 with NaN for null (an Arrow column, numpy array or list)."""
    v = cols[name]
    if hasattr(v, "to_numpy"):
        v = v.to_numpy(zero_copy_only=False)
    return np.asarray([np.nan if x is None else x for x in v] if isinstance(v, list) else v, np.float64)


def _present(cols: dict[str, Any], name: str) -> np.ndarray:
    v = cols[name]
    if hasattr(v, "is_null"):
        return ~np.asarray(v.is_null().to_numpy(zero_copy_only=False), bool)
    return np.asarray([x is not None for x in v], bool)


def _above(v: np.ndarray, limit: float) -> np.ndarray:
    return v > limit  # NaN (unmeasured) compares False: never rejects


def _below(v: np.ndarray, limit: float) -> np.ndarray:
    return v < limit


class _Lazy(dict):  # type: ignore[type-arg]
    """Numeric columns converted on first use (a rule that never runs costs nothing)."""

    def __init__(self, cols: dict[str, Any]) -> None:
        super().__init__()
        self.cols = cols

    def __missing__(self, key: str) -> np.ndarray:
        self[key] = _num(self.cols, key)
        return self[key]


def crop_arrays(cols: dict[str, Any], f: FilterConfig) -> dict[str, np.ndarray]:
    """``CROP_COLUMNS`` for every row (object arrays, None = no crop); Python only for rows with boxes."""
    n = len(cols["clip_id"])
    out = {c: np.full(n, None, object) for c in CROP_COLUMNS}
    for i in _sparse(cols, "text_boxes")[0].tolist():
        row = {k: _item(cols[k], i) for k in ("width", "height", *CROP_INPUTS) if k in cols}
        for c, v in crop_columns(row, f).items():
            out[c][i] = v
    return out


def _item(v: Any, i: int) -> Any:
    x = v[i]
    return x.as_py() if hasattr(x, "as_py") else x


def reject_reasons(cols: dict[str, Any], f: FilterConfig, c: CaptionConfig | None = None,
                   upto: int | None = None) -> np.ndarray:
    """int8 [n]: index into ``RULE_ORDER`` of each row's first failing rule, -1 when it passes.

    ``cols``: the rule columns (``NUMERIC``, ``TEXT``, ``extract_crop_w``, and ``dup_of`` unless
    ``upto`` stops before 'duplicate'). ``upto``: evaluate only the rules before this index (the
    dedup candidates are the rows no rule before 'duplicate' rejects). ``score_error`` is not a
    rule: the caller rejects those rows first.
    """
    c = c or CaptionConfig()
    x = _Lazy(cols)
    eps = 1e-6
    dur = x["end_s"] - x["start_s"]
    w, h = np.nan_to_num(x["width"], nan=0.0), np.nan_to_num(x["height"], nan=0.0)
    masks: list[Any] = [
        lambda: dur < f.min_duration_s - eps,
        lambda: dur > f.max_duration_s + eps,
        lambda: (w < f.min_width) | (h < f.min_height),
        lambda: np.maximum(w, h) > f.max_aspect * np.maximum(1, np.minimum(w, h)),
        lambda: _above(x["black_frac"], f.max_black_frac),
        lambda: _below(x["luma"], f.min_luma) & ~_above(x["luma_high"], f.dark_max_highlight),
        lambda: _above(x["luma"], f.max_luma) | (_above(x["clipped"], f.max_clipped)
                                                 & ~_below(x["luma_high"], CLIP_HIGH)),
        lambda: _above(x["artifacts"], f.max_artifacts),
        lambda: _below(x["blur"], f.min_blur),
        lambda: _above(x["black_border"], f.max_black_border),
        lambda: _above(x["frozen"], f.max_frozen),
        lambda: _above(x["text_area"], f.max_text_area) & ~_present(cols, "extract_crop_w"),
        lambda: _below(x["motion"], f.min_motion),
        lambda: _above(x["motion"], f.max_motion),
        lambda: _below(x["aesthetic"], f.min_aesthetic),
        lambda: _present(cols, "dup_of") & bool(f.dedup),
        lambda: _present(cols, "extract_error"),
        lambda: _caption_check(cols, c),
        lambda: (_present(cols, "caption_error") | _failed_any(cols)) if c.require_caption else False,
    ]
    n = len(dur)
    reason = np.full(n, -1, np.int8)
    for i, mask in enumerate(masks[:upto]):
        open_ = reason < 0
        if not open_.any():
            break
        reason[open_ & np.broadcast_to(mask(), (n,))] = i
    return reason


def _sparse(cols: dict[str, Any], name: str) -> tuple[np.ndarray, list[Any]]:
    """Indices and values of the rows where ``name`` is neither null nor empty (few, for Python)."""
    v = cols[name]
    if hasattr(v, "is_null"):
        import pyarrow.compute as pc

        idx = np.flatnonzero(np.asarray(pc.fill_null(pc.not_equal(v, ""), False), bool))
        return idx, v.take(idx).to_pylist()
    idx = np.asarray([i for i, x in enumerate(v) if x not in (None, "")], np.int64)
    return idx, [v[i] for i in idx]


def _failed_any(cols: dict[str, Any]) -> np.ndarray:
    out = np.zeros(len(cols["clip_id"]), bool)
    out[_sparse(cols, "caption_failed")[0]] = True
    return out


def _caption_check(cols: dict[str, Any], c: CaptionConfig) -> np.ndarray:
    out = np.zeros(len(cols["clip_id"]), bool)
    wanted = set(c.reject_failed_checks)
    if wanted:
        idx, values = _sparse(cols, "caption_failed")
        out[idx] = [bool(wanted & _failed({"caption_failed": x})) for x in values]
    return out


def reason_names(reason: np.ndarray, score_error: np.ndarray) -> np.ndarray:
    """Object array of reject reasons (None = kept); a row with a ``score_error`` is 'score_error'."""
    names = np.asarray([*RULE_ORDER, None], object)
    out = names[np.where(reason < 0, len(RULE_ORDER), reason)]
    out[score_error] = "score_error"
    return out


def decide_catalog(cat: Any, f: FilterConfig, c: CaptionConfig, split_hash: str,
                   method: str = "auto") -> dict[str, Any]:
    """The filter step over the catalog's columns (pipelines/score_step.py ``decide``).

    Loads the columns the rules and dedup read as Arrow (not ``SELECT *``: no captions, OCR text or
    embeddings unless some clip has one), decides every clip of ``split_hash``, and writes back only
    the clips whose dup_of, status, reason or crop changed, in one transaction.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    from pipelines.dedup import decode_embedding, duplicate_index, keep_rank
    from pipelines.dedup_bands import fixed_bytes

    keep_cols = ("clip_id", "video_id", "start_frame", "end_frame", "bits_per_pixel", "content_hash", "phash")
    old_cols = ("status", "reject_reason", "dup_of", *CROP_COLUMNS)
    names = dict.fromkeys((*keep_cols, *NUMERIC, *TEXT, *CROP_INPUTS[:1], *CROP_INPUTS[3:], *old_cols))
    select = ", ".join(f"c.{n}" for n in names)
    t = cat.con.sql(
        f"SELECT {select}, v.width AS source_width, v.height AS source_height "
        "FROM clips c JOIN videos v USING (video_id) WHERE c.split_hash = ?", params=[split_hash]
    ).to_arrow_table()
    cols: dict[str, Any] = {n: t.column(n).combine_chunks() for n in t.column_names}
    old = {k: cols[k] for k in old_cols}  # what is stored, to write only the rows that change
    n = t.num_rows
    crops = crop_arrays(cols, f)
    cols["extract_crop_w"] = pa.array(crops["extract_crop_w"], pa.int64())
    cand = np.flatnonzero(reject_reasons(cols, f, c, upto=BEFORE_DUPLICATE) < 0)
    dup_of = pa.nulls(n, pa.string())
    if f.dedup and len(cand):
        sub = {k: cols[k].take(cand) for k in ("clip_id", "video_id", "start_frame", "end_frame", "width",
                                                 "height", "artifacts", "bits_per_pixel")}
        rank = cand[keep_rank({k: _column_values(v) for k, v in sub.items()})]
        emb = _embeddings(cat, split_hash, cols["clip_id"].take(rank), decode_embedding)
        dup = duplicate_index(fixed_bytes(cols["content_hash"].take(rank)), fixed_bytes(cols["phash"].take(rank)),
                              f.phash_max_distance, emb, f.semantic_dedup_min_cosine, method)
        target = np.full(n, -1, np.int64)
        target[rank] = np.where(dup >= 0, rank[np.maximum(dup, 0)], -1)
        dup_of = cols["clip_id"].take(pa.array(target, mask=target < 0))
    cols["dup_of"] = dup_of
    score_error = _present(cols, "score_error")
    reason = pa.array(reason_names(reject_reasons(cols, f, c), score_error), pa.string())
    status = pc.if_else(pc.is_null(reason), "kept", "rejected")
    new = {"dup_of": dup_of, "status": status, "reject_reason": reason,
           **{k: pa.array(v, cols[k].type) for k, v in crops.items()}}
    same = {k: _same(old[k], v) for k, v in new.items()}
    decision_same = same["status"] & same["reject_reason"]
    write = ~np.logical_and.reduce(list(same.values()))
    if write.any():
        idx = np.flatnonzero(write)
        upd = pa.table({"clip_id": cols["clip_id"].take(idx), **{k: v.take(idx) for k, v in new.items()}})
        sets = ", ".join(f"{k} = u.{k}" for k in new)
        with cat.transaction():
            cat.con.register("_vidloom_decide", upd)
            try:
                cat.con.execute(f"UPDATE clips SET {sets} FROM _vidloom_decide u WHERE clips.clip_id = u.clip_id")
            finally:
                cat.con.unregister("_vidloom_decide")
    kept = int(pc.sum(pc.equal(status, "kept")).as_py() or 0)
    cropped = int(pc.sum(pc.and_(pc.equal(status, "kept"), pc.is_valid(new["crop_reason"]))).as_py() or 0)
    return {"clips": n, "kept": kept, "rejected": n - kept, "changed": int((~decision_same).sum()),
            "duplicates": int(n - dup_of.null_count), "cropped": cropped, "written": int(write.sum())}


def _column_values(v: Any) -> Any:
    """Arrow -> numpy for keep_rank: strings as fixed-width bytes, numbers with NaN for null."""
    import pyarrow as pa

    from pipelines.dedup_bands import fixed_bytes

    if pa.types.is_string(v.type) or pa.types.is_large_string(v.type):
        return fixed_bytes(v)
    return v.to_numpy(zero_copy_only=False)


def _same(old: Any, new: Any) -> np.ndarray:
    """bool [n]: old IS NOT DISTINCT FROM new (null equals null)."""
    import pyarrow.compute as pc

    eq = pc.fill_null(pc.equal(old, new.cast(old.type)), False)
    both_null = pc.and_(pc.is_null(old), pc.is_null(new))
    return np.asarray(pc.or_(eq, both_null), bool)


def _embeddings(cat: Any, split_hash: str, ids_in_order: Any, decode: Any) -> np.ndarray | None:
    """float32 [n, dim] unit embeddings of ``ids_in_order`` (NaN rows: none), or None when no clip has one."""
    rows = cat.con.execute("SELECT clip_id, embedding FROM clips WHERE split_hash = ? AND embedding IS NOT NULL",
                           [split_hash]).fetchall()
    if not rows:
        return None
    pos = {cid: i for i, cid in enumerate(ids_in_order.to_pylist())}
    found = [(pos[cid], decode(text)) for cid, text in rows if cid in pos]
    if not found:
        return None
    out = np.full((len(pos), len(found[0][1])), np.nan, np.float32)
    for i, v in found:
        out[i] = v
    return out
