"""Deterministic, resumable, bucketed video loader over vidloom WebDataset shards.

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
  (training/weighted_order.py).
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
import itertools
import json
import queue
import tarfile
import threading
from collections import deque
from collections.abc import Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import av
import numpy as np
import torch

from pipelines.dataset_versions import MANIFEST, pinned, resolve
from training.weighted_order import epoch_order

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
    behind each output frame (multi-shot samples map them to shots: training/multishot.py).
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
            from training.multishot import window_shots

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


class StreamingLoader:
    """Iterates this rank's micro-batches of one epoch, resuming at ``samples_seen``."""

    def __init__(self, shards_dir: str | Path, seed: int, global_batch: int, n_canonical: int = 16,
                 rank: int = 0, world_size: int = 1, n_frames: int = 16, fps: float = 8.0,
                 size: tuple[int, int] | None = None, sample_mode: SampleMode = "first",
                 num_workers: int = 0, drop_last: bool = False) -> None:
        if global_batch % world_size:
            raise ValueError("world_size must divide global_batch")
        from training.latents import open_dataset  # it imports this module: not at the top

        self.source = shards_dir  # as given (DIR, DIR/latest or a version); the data are pinned now
        self._open = lambda path: open_dataset(path, n_frames, fps, size, sample_mode)  # pixels or latents
        self.dataset = self._open(_same_on_every_rank(resolve(shards_dir), world_size))
        self.state = LoaderState(epoch=0, samples_seen=0, seed=seed, n_canonical=n_canonical,
                                 dataset=self.dataset.dataset)
        self.global_batch, self.rank, self.world_size = global_batch, rank, world_size
        self.num_workers = num_workers
        self.drop_last = drop_last  # skip a short last global batch (data-parallel runs: equal shares)
        self.stats = LoaderStats()

    def state_dict(self) -> dict[str, Any]:
        return asdict(self.state)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume at ``state``; a state of another dataset version re-opens that version.

        Raises:
            FileNotFoundError: if the state's version is no longer in the export directory.
        """
        loaded = LoaderState(**state)
        if loaded.dataset and loaded.dataset != self.dataset.dataset:
            self.dataset = self._open(pinned(self.dataset.root, loaded.dataset))
        loaded.dataset = self.dataset.dataset
        self.state = loaded

    def _batches(self, epoch: int, start: int) -> list[tuple[int, np.ndarray]]:
        """``(global end position, this rank's indices)`` of each global batch of ``epoch`` from ``start``."""
        st = self.state
        order = epoch_order(self.dataset, st.seed, epoch, st.n_canonical)  # by weight, given weights
        per = self.global_batch // self.world_size
        out = []
        for s in range(start, len(order), self.global_batch):
            end = min(s + self.global_batch, len(order))
            if self.drop_last and end - s < self.global_batch:
                break
            out.append((end, order[s + self.rank * per : min(s + (self.rank + 1) * per, end)]))
        return out

    def _plan(self, continuous: bool) -> Iterator[tuple[int, int, bool, np.ndarray]]:
        """``(epoch, end, last of epoch, indices)`` of the remaining batches: this epoch, or all epochs."""
        epoch, start = self.state.epoch, self.state.samples_seen
        while True:
            batches = self._batches(epoch, start)
            for j, (end, idx) in enumerate(batches):
                yield epoch, end, j == len(batches) - 1, idx
            if not continuous or not batches and start == 0:
                return
            epoch, start = epoch + 1, 0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Yield micro-batches; at the end of the epoch move to the next epoch's start."""
        for micro_batches in self.global_batches():
            yield from micro_batches

    def global_batches(self, continuous: bool = False) -> Iterator[list[dict[str, Any]]]:
        """Yield this rank's micro-batches of each global batch, one list per optimizer step.

        ``samples_seen`` already counts a global batch when its list is yielded, so a state saved
        after the step that consumed it resumes at the next global batch; after an epoch's last
        batch the state is the next epoch's start. A rank whose share of the (short) last global
        batch is empty gets an empty list. ``continuous`` runs through the epochs without end, with
        prefetch crossing epoch boundaries (the trainer's mode); otherwise one epoch.

        With workers, whole global batches (decoded, grouped, collated) are assembled by a
        background thread up to ``BATCHES_AHEAD`` ahead, so the consumer only takes a ready list.
        """
        st = self.state
        batches = self._assemble(continuous)
        if self.num_workers > 0:
            batches = _background(batches, BATCHES_AHEAD)
        try:
            for micro, n_samples, epoch, seen in batches:
                self.stats.micro_batches += len(micro)
                self.stats.samples += n_samples
                st.epoch, st.samples_seen = epoch, seen
                yield micro
            if not continuous and st.samples_seen:
                st.epoch, st.samples_seen = st.epoch + 1, 0  # resumed at an epoch's end: nothing left
        finally:
            batches.close()

    def _assemble(self, continuous: bool) -> Generator[Assembled, None, None]:
        """``(micro-batches, samples, state epoch, state samples_seen after it)`` per global batch."""
        seed = self.state.seed
        plan, ahead = itertools.tee(self._plan(continuous))
        samples = ((epoch, int(i)) for epoch, _, _, idx in ahead for i in idx)
        pool = ThreadPoolExecutor(self.num_workers) if self.num_workers > 0 else None
        pending: deque[Future[dict[str, Any]]] = deque()
        depth = max(2 * self.num_workers, 2 * self.global_batch // self.world_size)

        def fetch() -> dict[str, Any]:
            if pool is None:
                epoch, i = next(samples)
                return self.dataset.get(i, seed, epoch)
            while len(pending) <= depth:
                nxt = next(samples, None)
                if nxt is None:
                    break
                pending.append(pool.submit(self.dataset.get, nxt[1], seed, nxt[0]))
            return pending.popleft().result()

        try:
            for epoch, end, last, idx in plan:
                groups: dict[tuple[int, ...], list[dict[str, Any]]] = {}
                for _ in idx:
                    sample = fetch()
                    groups.setdefault(sample_shape(sample), []).append(sample)
                micro = [collate(members) for members in groups.values()]
                yield (micro, len(idx), *((epoch + 1, 0) if last else (epoch, end)))
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)


def _same_on_every_rank(version: Path, world_size: int) -> Path:
    """Rank 0's resolved version on every rank: an export that lands while the ranks start must
    not give them different data. A broadcast when a process group is up (every rank makes its
    loader at the same point of the run), else this rank's own."""
    import torch.distributed as tdist

    if world_size <= 1 or not (tdist.is_available() and tdist.is_initialized()):
        return version
    chosen = [str(version)]
    tdist.broadcast_object_list(chosen, src=0)
    from pipelines.remote import as_path

    return as_path(chosen[0])


BATCHES_AHEAD = 2
POLL_S = 0.002  # the background producer's polling period while the buffer is full


def _background(items: Generator[Any, None, None], ahead: int) -> Generator[Any, None, None]:
    """Run ``items`` in a daemon thread, ``ahead`` results buffered; closing stops the thread."""
    buffer: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=ahead)
    stop = threading.Event()

    def put(item: tuple[str, Any]) -> bool:
        # Poll rather than block on a full buffer: a producer blocked in ``put`` is woken by the very
        # ``get`` that hands the consumer its batch, and then holds the GIL while the consumer returns
        # from ``get`` (measured as data wait). Polling wakes it on its own clock instead.
        while not stop.is_set():
            if not buffer.full():
                buffer.put_nowait(item)  # only this thread puts, so there is room
                return True
            stop.wait(POLL_S)
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(("item", item)):
                    break
            else:
                put(("end", None))
        except BaseException as e:  # noqa: BLE001 - re-raised in the consumer
            put(("error", e))
        finally:
            items.close()

    thread = threading.Thread(target=produce, name="vidloom-loader", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = buffer.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        thread.join()


def sample_shape(sample: dict[str, Any]) -> tuple[int, ...]:
    """The bucketing key: (T, H, W) of the sample's ``video`` (pixels) or ``latent``."""
    tensor = sample["video"] if "video" in sample else sample["latent"]
    return tuple(tensor.shape[1:])
