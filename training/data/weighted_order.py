"""Weighted epochs: the loader's order when the manifest carries per-sample sampling weights.

A balanced export in weights mode (pipelines/balance_export.py) writes ``balance.weights``
(sample key -> weight) into its manifest. An epoch then has as many draws as the manifest has
samples, and sample ``i`` is drawn ``floor`` or ``ceil`` of ``n * w_i / sum(w)`` times:
systematic sampling over the samples in manifest order with one uniform offset drawn from a
Generator seeded by ``(seed, epoch, n_canonical, 1)`` (a stream no partition seed uses). The
draws, in manifest order, are then arranged by ``global_order(n, seed, epoch, n_canonical)``, so
the order keeps the loader's contract (training/data/__init__.py): a pure function of ``(seed, epoch)``
and the manifest, independent of the world size, resumed by recomputing it and skipping
``samples_seen``. Over an epoch each sample's share of the draws is within ``1 / n`` of its
weight's share; weight 0 is never drawn.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from pipelines.dataset_versions import MANIFEST


def weighted_order(weights: np.ndarray, seed: int, epoch: int, n_canonical: int) -> np.ndarray:
    """The epoch's draws (int64 sample indices, ``len(weights)`` of them) by weight.

    Raises:
        ValueError: on a negative or non-finite weight, or when every weight is 0.
    """
    from training.data import global_order

    w = np.asarray(weights, dtype=np.float64)
    n = len(w)
    if n == 0:
        return np.zeros(0, np.int64)
    if not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueError("sample weights must be finite, >= 0 and not all 0")
    cum = np.cumsum(w / w.sum()) * n
    u = np.random.default_rng([seed, epoch, n_canonical, 1]).random()
    draws = np.searchsorted(cum, u + np.arange(n), side="right")
    draws = np.minimum(draws, n - 1).astype(np.int64)  # float round-off at the top end
    return draws[global_order(n, seed, epoch, n_canonical)]


def sample_weights(dataset: Any) -> np.ndarray | None:
    """The per-index weights of a dataset whose manifest has ``balance.weights``, else None
    (cached on the dataset; keys are read from each shard's tar index, in manifest order).

    Raises:
        ValueError: if weights are given but the dataset cannot list its sample keys.
    """
    cached = getattr(dataset, "_sample_weights", False)
    if cached is not False:
        return cached
    manifest = json.loads((dataset.root / MANIFEST).read_text(encoding="utf-8"))
    by_key = (manifest.get("balance") or {}).get("weights")
    out = None
    if by_key:
        if not hasattr(dataset, "_shard"):
            raise ValueError(f"{dataset.root}: weighted manifest but {type(dataset).__name__} lists no keys")
        keys = [k for s in range(len(dataset.shards)) for k in dataset._shard(s)[0]]
        out = np.array([float(by_key.get(k, 0.0)) for k in keys])
    dataset._sample_weights = out
    return out


def epoch_order(dataset: Any, seed: int, epoch: int, n_canonical: int) -> np.ndarray:
    """The loader's order for ``epoch``: by weight when the manifest has weights, else uniform."""
    from training.data import global_order

    w = sample_weights(dataset)
    if w is None:
        return global_order(len(dataset), seed, epoch, n_canonical)
    return weighted_order(w, seed, epoch, n_canonical)
