"""Multi-shot samples on the training side: shot spans of a decoded window, per-shot text routing.

A multi-shot sample (pipelines/multishot.py, docs/data-engineers.md "Shard sample layout") lists its ``shots``
with frame spans in the mp4's frames. The loader maps them onto the frames it decoded
(``window_shots``); the DiT trainer encodes each shot's caption separately, concatenates the
tokens with a shot id per token (``encode_shot_texts``) and gives every latent frame the id of
the shot most of its pixel frames belong to (``latent_shot_ids``), so the DiT's spatial layers
let each frame see only its own shot's caption (models/dit/attention.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch


def window_shots(shots: Sequence[dict[str, Any]], picks: Sequence[int]) -> dict[str, Any]:
    """The shots of a decoded window.

    Args:
        shots: the sample json's ``shots`` (``start_frame``/``end_frame`` in the mp4's frames,
            tiling it in order).
        picks: the mp4 frame index behind each decoded frame (``decode_video``'s ``picks_out``).

    Returns:
        ``shots``: one entry per shot seen in the window, in order, with ``start_frame`` /
        ``end_frame`` now in the decoded frames ``[start, end)``, its ``caption_en`` /
        ``caption_zh`` and catalog ``shot_index``; ``shot_of_frame``: long [T], the position of
        each decoded frame's shot in that list.
    """
    starts = np.array([int(s["start_frame"]) for s in shots])
    which = np.searchsorted(starts, np.asarray(picks, dtype=np.int64), side="right") - 1
    which = np.clip(which, 0, len(shots) - 1)
    seen = list(dict.fromkeys(int(w) for w in which))
    renumber = {w: i for i, w in enumerate(seen)}
    ids = torch.tensor([renumber[int(w)] for w in which], dtype=torch.long)
    out = []
    for w in seen:
        frames = np.flatnonzero(which == w)
        s = shots[w]
        out.append({"start_frame": int(frames[0]), "end_frame": int(frames[-1]) + 1,
                    "caption_en": s.get("caption_en"), "caption_zh": s.get("caption_zh"),
                    "shot_index": s.get("shot_index")})
    return {"shots": out, "shot_of_frame": ids}


def latent_shot_ids(frame_ids: torch.Tensor, temporal_stride: int) -> torch.Tensor:
    """Pixel-frame shot ids [T] -> latent-frame shot ids [1 + (T - 1) // stride] (causal VAE).

    Latent frame 0 is pixel frame 0; latent frame ``j >= 1`` covers pixel frames
    ``(j - 1) * stride + 1 .. j * stride`` and takes the shot most of them belong to (ties: the later
    shot). Frames past the last whole group are dropped, as ``trim_frames`` drops them.
    """
    n_latent = 1 + (len(frame_ids) - 1) // temporal_stride
    out = [int(frame_ids[0])]
    for j in range(1, n_latent):
        group = frame_ids[(j - 1) * temporal_stride + 1 : j * temporal_stride + 1].tolist()
        out.append(max(sorted(set(group), reverse=True), key=group.count))
    return torch.tensor(out, dtype=torch.long)


def encode_shot_texts(encode: Callable[[list[str]], tuple[torch.Tensor, torch.Tensor]],
                      shot_texts: Sequence[Sequence[str]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Encode each shot's caption on its own and concatenate them per sample.

    Args:
        encode: the text encoder (texts -> ([N, L, D] embeddings, [N, L] bool mask)).
        shot_texts: per sample, its shots' captions in order (one entry for a single-shot sample).

    Returns:
        ``text`` [B, L, D] (zero padded), ``text_mask`` [B, L] and ``text_shot`` [B, L] long: the
        shot of each token (padding takes the sample's last shot; the mask hides it anyway).
    """
    flat = [t for texts in shot_texts for t in texts]
    emb, mask = encode(flat)
    rows, shots, k = [], [], 0
    for texts in shot_texts:
        parts, ids = [], []
        for j in range(len(texts)):
            real = emb[k][mask[k].to(emb.device)]
            parts.append(real)
            ids.append(torch.full((real.shape[0],), j, dtype=torch.long))
            k += 1
        rows.append(torch.cat(parts))
        shots.append(torch.cat(ids))
    length = max(r.shape[0] for r in rows)
    text = emb.new_zeros(len(rows), length, emb.shape[-1])
    text_mask = torch.zeros(len(rows), length, dtype=torch.bool)
    text_shot = torch.zeros(len(rows), length, dtype=torch.long)
    for i, (r, s) in enumerate(zip(rows, shots, strict=True)):
        text[i, : r.shape[0]] = r
        text_mask[i, : r.shape[0]] = True
        text_shot[i] = s[-1]
        text_shot[i, : r.shape[0]] = s
    return text, text_mask, text_shot


def shot_inputs(mb: dict[str, Any], langs: list[str | None], temporal_stride: int,
                n_frames: int) -> dict[str, Any] | None:
    """DiTNet keyword arguments routing each shot's caption to its frames, or None when no sample
    of the micro-batch is multi-shot.

    Args:
        mb: a collated micro-batch (``shots`` / ``shot_of_frame`` per sample; None for a single shot).
        langs: the caption language picked per sample; None = dropped (every shot gets "").
        temporal_stride: the VAE's temporal downsampling.
        n_frames: the micro-batch's pixel frames.

    Returns:
        ``shot_texts`` (per sample, per shot) and ``shot_of_frame`` [B, T'] (latent frames).
    """
    shots = mb.get("shots")
    if not shots or not any(shots):
        return None
    n_latent = 1 + (n_frames - 1) // temporal_stride
    texts, ids = [], []
    for i, lang in enumerate(langs):
        if shots[i]:
            texts.append(["" if lang is None else (s.get(f"caption_{lang}") or "") for s in shots[i]])
            ids.append(latent_shot_ids(mb["shot_of_frame"][i][:n_frames], temporal_stride))
        else:  # a single-shot sample in the same micro-batch: one caption for all its frames
            own = mb.get(f"caption_{lang}") if lang is not None else None
            texts.append([(own[i] if own else None) or ""])
            ids.append(torch.zeros(n_latent, dtype=torch.long))
    return {"shot_texts": texts, "shot_of_frame": torch.stack(ids)}


def have_languages(mb: dict[str, Any], i: int) -> list[str]:
    """The languages every shot of sample ``i`` has a caption in (multi-shot), else its own captions."""
    shots = (mb.get("shots") or [None] * (i + 1))[i]
    if shots:
        return [lang for lang in ("en", "zh") if all(s.get(f"caption_{lang}") for s in shots)]
    return [lang for lang in ("en", "zh") if mb.get(f"caption_{lang}") and mb[f"caption_{lang}"][i]]
