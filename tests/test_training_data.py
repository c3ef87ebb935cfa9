"""The loader's order is a pure, rank-independent permutation; resume, bucketing and decode hold."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.train_shards import write_test_shards
from training.data import global_order, rank_slice
from training.data.loader import StreamingLoader

# (size, frames at 25 fps): two frame shapes and durations both under and over the 6-frame window
CLIPS = [("64x48", 10), ("64x48", 20), ("48x64", 12), ("64x48", 16), ("48x64", 20),
         ("64x48", 4), ("48x64", 14), ("64x48", 18)]


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = write_test_shards(tmp_path_factory.mktemp("data"), CLIPS)
    assert len(json.loads((root / "manifest.json").read_text())["shards"]) > 2  # indices cross shards
    return root


def keys_of(loader: StreamingLoader) -> list[str]:
    return [k for batch in loader for k in batch["key"]]


def test_order_is_pure_permutation_varying_by_seed_and_epoch() -> None:
    a = global_order(103, seed=7, epoch=0, n_canonical=5)
    assert a.dtype == np.int64 and sorted(a.tolist()) == list(range(103))
    assert np.array_equal(a, global_order(103, 7, 0, 5))
    assert not np.array_equal(a, global_order(103, 7, 1, 5))
    assert not np.array_equal(a, global_order(103, 8, 0, 5))
    assert sorted(global_order(5, 1, 0, 8).tolist()) == list(range(5))  # more partitions than samples


@pytest.mark.parametrize("n", [64, 70])
def test_rank_slices_union_to_global_order(n: int) -> None:
    order = global_order(n, 3, 2, 4)
    for world in (1, 2, 4):
        per_rank = [rank_slice(order, r, world, 16) for r in range(world)]
        per = 16 // world
        merged = []
        for b in range(0, n, 16):
            for part in per_rank:
                merged.extend(part[b // world : b // world + per].tolist())
        assert merged == order.tolist()
    with pytest.raises(ValueError):
        rank_slice(order, 0, 3, 16)


def loader(shards: Path, **kw: Any) -> StreamingLoader:
    args: dict[str, Any] = dict(seed=5, global_batch=4, n_canonical=3, n_frames=6, fps=12.5, size=None)
    return StreamingLoader(shards, **{**args, **kw})


def test_world_sizes_see_one_global_order_each_sample_once(shards: Path) -> None:
    ref = keys_of(loader(shards))
    assert sorted(ref) == [f"clip{i:02d}" for i in range(len(CLIPS))]
    for world in (2, 4):
        # compare per global batch as sets: bucketing may reorder inside a rank's slice
        rank_batches = [[set(gb) for gb in _global_batches(loader(shards, rank=r, world_size=world))]
                        for r in range(world)]
        merged = [set().union(*(rb[g] for rb in rank_batches)) for g in range(len(rank_batches[0]))]
        assert merged == [set(ref[i : i + 4]) for i in range(0, len(ref), 4)]
    ld = loader(shards)
    first, second = keys_of(ld), keys_of(ld)  # the loader moves to epoch 1 by itself
    assert ld.state.epoch == 2 and sorted(first) == sorted(second) and first != second


def _global_batches(ld: StreamingLoader) -> list[list[str]]:
    """Keys per global batch (this rank's micro-batches of one optimizer step, flattened)."""
    return [[k for mb in micro for k in mb["key"]] for micro in ld.global_batches()]


def test_resume_mid_epoch_gives_identical_remaining_keys(shards: Path) -> None:
    full = loader(shards, global_batch=2, num_workers=2)
    full.load_state_dict({"epoch": 1, "samples_seen": 0, "seed": 5, "n_canonical": 3})
    expected = keys_of(full)
    killed = loader(shards, global_batch=2)
    killed.load_state_dict({"epoch": 1, "samples_seen": 0, "seed": 5, "n_canonical": 3})
    seen: list[str] = []
    for batch in killed:
        seen.extend(batch["key"])
        if len(seen) == 4 and killed.state.samples_seen == 4:
            break
    state = killed.state_dict()
    dataset = json.loads((shards / "manifest.json").read_text())["dataset_hash"]  # the pinned version
    assert state == {"epoch": 1, "samples_seen": 4, "seed": 5, "n_canonical": 3, "dataset": dataset}
    resumed = loader(shards, global_batch=2, seed=0)
    resumed.load_state_dict(state)
    assert seen + keys_of(resumed) == expected


def test_decoded_shapes_ranges_and_captions(shards: Path) -> None:
    ld = loader(shards, global_batch=8, size=(32, 40), sample_mode="uniform")
    batches = list(ld)
    lengths = {}
    for b in batches:
        v = b["video"]
        assert v.dtype == torch.float32 and v.shape[1:2] == (3,) and v.shape[3:] == (32, 40)
        assert v.min() >= -1.0 and v.max() <= 1.0 and v.std() > 0.05
        for j, k in enumerate(b["key"]):
            i = int(k[4:])
            assert b["caption_en"][j] == f"clip {i}" and b["caption_zh"][j] == f"片段 {i}"
            assert b["meta"][j]["i"] == i
            lengths[i] = v.shape[2]
    # 12.5 fps from 25 fps: at most 6 frames, fewer for a clip of 4 frames (0.12 s -> 2 frames)
    assert lengths == {i: min(6, (f - 1) // 2 + 1) for i, (_, f) in enumerate(CLIPS)}


def test_buckets_hold_one_shape_and_padding_is_zero(shards: Path) -> None:
    ld = loader(shards, global_batch=8)
    shapes = set()
    for b in ld:
        assert b["video"].dim() == 5  # stacking would fail on mixed shapes
        shapes.add(tuple(b["video"].shape[2:]))
    assert {s[1:] for s in shapes} == {(48, 64), (64, 48)}
    assert ld.stats.samples == len(CLIPS) and ld.stats.padding_fraction == 0.0
    assert ld.stats.micro_batches == len(shapes)  # one global batch: one micro-batch per shape


def test_workers_give_same_output(shards: Path) -> None:
    outs = []
    for workers in (0, 3):
        ld = loader(shards, num_workers=workers, sample_mode="uniform")
        outs.append([(b["key"], b["video"]) for b in ld])
    assert [k for k, _ in outs[0]] == [k for k, _ in outs[1]]
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(outs[0], outs[1], strict=True))
