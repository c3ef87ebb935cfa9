"""Deterministic, resumable, bucketed video loading over vidloom WebDataset shards: the order and
the datasets (the loader that combines them is ``training/data/loader.py``).

docs/architecture.md "Training side: Loader", in the manner of MosaicML streaming:

- The global sample order is a pure function ``global_order(n, seed, epoch, n_canonical)``:
  sample indices (counted over the manifest's shards in order) are cut into ``n_canonical``
  contiguous partitions; the partitions are shuffled, then the samples inside each one, with
  numpy Generators seeded from ``(seed, epoch)`` and ``(seed, epoch, partition)``. It does not
  depend on the world size, so any world size that divides ``global_batch`` sees one order.
- Rank ``r`` of ``w`` takes positions ``[r*b/w, (r+1)*b/w)`` of every global batch of size ``b``
  (``rank_slice``); the ranks' slices, concatenated batch by batch, are the global order.
- Weighted epochs: a manifest with per-sample weights (``balance.weights``, a balanced export in
  weights mode) draws each epoch's samples by weight instead, in the same order contract
  (training/data/weighted_order.py).
- ``LoaderState(epoch, samples_seen, seed, n_canonical, dataset)`` is the whole resume state: the
  order is recomputed and reading goes on at global position ``samples_seen``.
- Pinned data: an export directory ``DIR`` holds immutable versions ``DIR/<dataset_hash>/`` and a
  ``DIR/latest`` link that each export moves (pipelines/dataset_versions.py). The loader resolves
  ``DIR`` (or ``DIR/latest``) once, when it is made, to a concrete version directory and reads only
  that one; the state's ``dataset`` is that version's hash, and ``load_state_dict`` of a state with
  another hash re-opens that version (``DIR/<hash>``), so a resume reads the data the run started
  on even if ``latest`` moved. A version that ``vidloom gc`` removed is an error, not other data.
  With a process group up, every rank takes rank 0's version (one broadcast per loader).
- Bucketing without padding: inside a rank's slice of one global batch, samples are grouped by
  their decoded shape ``(T, H, W)`` (groups in order of first appearance) and each group is
  emitted as its own micro-batch. A micro-batch therefore holds only same-shape samples and the
  padding fraction is 0; the cost is a variable micro-batch size (see ``LoaderStats``).
- ``samples_seen`` advances when a global batch is handed out (``global_batches`` yields its
  micro-batches as one list; plain iteration flattens them), so a state saved after the optimizer
  step that consumed it resumes at the next global batch.
- Prefetch: a thread pool decodes ahead; results are consumed in submission order, so the
  output is identical for any ``num_workers``.
"""

from __future__ import annotations

import io
import json
import tarfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import av
import numpy as np
import torch

from pipelines.dataset_versions import MANIFEST, resolve

SampleMode = Literal["uniform", "first"]
Assembled = tuple[list[dict[str, Any]], int, int, int]  # micro-batches, samples, state epoch, samples_seen


def global_order(n_samples: int, seed: int, epoch: int, n_canonical: int) -> np.ndarray:
    """The epoch's global sample order: a permutation of ``range(n_samples)`` (int64).

    Args:
        n_samples: number of samples in the manifest.
        seed: run seed.
        epoch: epoch number (a new order each epoch).
        n_canonical: number of contiguous partitions; fixed for a run, independent of world size.
    """
    if n_canonical <= 0:
        raise ValueError("n_canonical must be positive")
    bounds = np.linspace(0, n_samples, n_canonical + 1).astype(np.int64)
    rng = np.random.default_rng([seed, epoch])
    parts = []
    for p in rng.permutation(n_canonical):
        lo, hi = int(bounds[p]), int(bounds[p + 1])
        part_rng = np.random.default_rng([seed, epoch, int(p)])
        parts.append(lo + part_rng.permutation(hi - lo))
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


def rank_slice(order: np.ndarray, rank: int, world_size: int, global_batch: int) -> np.ndarray:
    """This rank's samples: positions ``[r*b/w, (r+1)*b/w)`` of every global batch, in order.

    The last global batch may be short; it is cut at the same positions, so a rank's share of
    it may be short or empty. Concatenating the ranks' parts batch by batch gives ``order``.
    """
    if global_batch % world_size or not 0 <= rank < world_size:
        raise ValueError(f"bad rank {rank} / world_size {world_size} for global_batch {global_batch}")
    per = global_batch // world_size
    parts = [order[s + rank * per : min(s + (rank + 1) * per, len(order))]
             for s in range(0, len(order), global_batch)]
    return np.concatenate(parts) if parts else order[:0]


@dataclass
class LoaderState:
    """Everything a resumed loader needs: it recomputes the order and skips ``samples_seen``."""

    epoch: int
    samples_seen: int  # global samples (all ranks) of this epoch already handed out
    seed: int
    n_canonical: int
    dataset: str = ""  # the pinned version's dataset hash ("" in a state saved before versions)


@dataclass
class LoaderStats:
    """Bucketing cost: micro-batches emitted and samples in them. Nothing is padded."""

    micro_batches: int = 0
    samples: int = 0
    padding_fraction: float = 0.0  # per-shape micro-batches instead of padding to the max

    @property
    def mean_micro_batch(self) -> float:
        return self.samples / max(self.micro_batches, 1)


def _tar_index(path: Path) -> dict[str, dict[str, tuple[int, int]]]:
    """``{key: {ext: (data offset, size)}}``; the key is the member name up to its first dot."""
    index: dict[str, dict[str, tuple[int, int]]] = {}
    with path.open("rb") as f, tarfile.open(fileobj=f, mode="r:") as tar:  # a Path or a RemoteDir
        for m in tar:
            if not m.isfile():
                continue
            key, _, ext = m.name.rpartition("/")[2].partition(".")
            index.setdefault(key, {})[ext] = (m.offset_data, m.size)
    return index


def decode_video(data: bytes, n_frames: int, fps: float, size: tuple[int, int] | None,
                 start_s: float | None, rng: np.random.Generator,
                 picks_out: list[int] | None = None) -> torch.Tensor:
    """Decode an mp4 to ``[C, T, H, W]`` float32 in [-1, 1], frames picked by timestamp.

    Target times are ``t0 + i / fps``; each takes the last frame shown at that time. ``T`` is
    ``n_frames``, or fewer when the clip is too short. ``t0`` is ``start_s`` when given,
    else drawn uniformly from the valid starts with ``rng``.

    With ``start_s`` given, decoding stops at the first frame past the last target, and only the
    picked frames are converted to RGB and resized (swscale, area filter).

    ``picks_out``, when given, receives the index (in the mp4's presentation order) of the frame
    behind each output frame (multi-shot samples map them to shots: training/data/multishot.py).
    """
    frames: list[tuple[float, av.VideoFrame]] = []
    with av.open(io.BytesIO(data), mode="r") as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        last_target = None
        for frame in container.decode(stream):
            t = float(frame.time or 0.0)
            if last_target is None and start_s is not None:
                last_target = t + start_s + (n_frames - 1) / fps
            frames.append((t, frame))
            if last_target is not None and t > last_target + 1e-6:
                break
        if not frames:
            raise ValueError("no video frames")
        times = np.array([t for t, _ in frames])
        span = times[-1] - times[0]
        n = int(min(n_frames, np.floor(span * fps + 1e-6) + 1))
        slack = max(span - (n - 1) / fps, 0.0)
        t0 = times[0] + (start_s if start_s is not None else float(rng.uniform(0.0, slack)) if slack else 0.0)
        targets = t0 + np.arange(n) / fps
        picks = np.clip(np.searchsorted(times, targets + 1e-6, side="right") - 1, 0, len(frames) - 1)
        if picks_out is not None:
            picks_out.extend(int(i) for i in picks)
        h, w = size if size is not None else (None, None)
        arrays = [frames[i][1].reformat(width=w, height=h, format="rgb24", interpolation="AREA").to_ndarray()
                  for i in picks]
    video = torch.from_numpy(np.stack(arrays)).permute(3, 0, 1, 2).float()
    return (video / 127.5 - 1.0).clamp(-1.0, 1.0).contiguous()


class ShardDataset:
    """Random access to the samples of a shards directory by global index (manifest order).

    ``shards_dir`` is resolved once to a concrete version (``DIR`` -> ``DIR/<hash>``, see
    pipelines/dataset_versions.py): ``root`` is that version and ``dataset`` its hash.
    """

    def __init__(self, shards_dir: str | Path, n_frames: int = 16, fps: float = 8.0,
                 size: tuple[int, int] | None = None, sample_mode: SampleMode = "first") -> None:
        self.root = resolve(shards_dir)
        manifest = json.loads((self.root / MANIFEST).read_text(encoding="utf-8"))
        self.dataset: str = manifest.get("dataset_hash", "")
        self.shards = [e["shard"] for e in manifest["shards"]]
        self.offsets = np.cumsum([0] + [e["n_samples"] for e in manifest["shards"]])
        self.n_frames, self.fps, self.size, self.sample_mode = n_frames, fps, size, sample_mode
        self._index: dict[int, tuple[list[str], dict[str, dict[str, tuple[int, int]]]]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def _shard(self, s: int) -> tuple[list[str], dict[str, dict[str, tuple[int, int]]]]:
        with self._lock:
            if s not in self._index:
                members = _tar_index(self.root / self.shards[s])
                self._index[s] = (list(members), members)  # dict keeps the tar's member order
            return self._index[s]

    def raw(self, index: int) -> tuple[str, dict[str, bytes]]:
        """The key and ``{ext: bytes}`` of sample ``index``."""
        s = int(np.searchsorted(self.offsets, index, side="right") - 1)
        keys, members = self._shard(s)
        key = keys[index - int(self.offsets[s])]
        fields = {}
        with (self.root / self.shards[s]).open("rb") as f:  # a local file or an fsspec URL
            for ext, (offset, size) in members[key].items():
                f.seek(offset)
                fields[ext] = f.read(size)
        return key, fields

    def get(self, index: int, seed: int = 0, epoch: int = 0) -> dict[str, Any]:
        """Sample ``index`` decoded: key, video ``[C, T, H, W]``, captions, meta; a multi-shot sample
        also has ``shots`` (spans in the decoded frames, captions) and ``shot_of_frame`` [T].

        ``uniform`` mode draws the window start from a Generator seeded by (seed, epoch, index),
        so the pick is reproducible across resumes and worker counts.
        """
        key, fields = self.raw(index)
        rng = np.random.default_rng([seed, epoch, index])
        start = 0.0 if self.sample_mode == "first" else None
        picks: list[int] = []
        video = decode_video(fields["mp4"], self.n_frames, self.fps, self.size, start, rng, picks)
        sample = {
            "index": index,
            "key": key,
            "video": video,
            "caption_en": fields["en.txt"].decode("utf-8") if "en.txt" in fields else None,
            "caption_zh": fields["zh.txt"].decode("utf-8") if "zh.txt" in fields else None,
            "meta": json.loads(fields["json"]) if "json" in fields else {},
        }
        if sample["meta"].get("shots"):  # a multi-shot sample: each shot's captions and frames
            from training.data.multishot import window_shots

            sample.update(window_shots(sample["meta"]["shots"], picks))
        return sample


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack same-shape samples: ``video``/``latent`` become ``[B, C, T, H, W]``, other fields lists."""
    tensors = ("video", "latent")
    keys = dict.fromkeys(k for s in samples for k in s)  # multi-shot and single-shot samples mix
    batch: dict[str, Any] = {k: [s.get(k) for s in samples] for k in keys if k not in tensors}
    for k in tensors:
        if k in samples[0]:
            batch[k] = torch.stack([s[k] for s in samples])
    return batch


def sample_shape(sample: dict[str, Any]) -> tuple[int, ...]:
    """The bucketing key: (T, H, W) of the sample's ``video`` (pixels) or ``latent``."""
    tensor = sample["video"] if "video" in sample else sample["latent"]
    return tuple(tensor.shape[1:])
