"""``StreamingLoader``: this rank's micro-batches of the deterministic global order
(training/data/__init__.py), over pixel or latent shards (training/data/latents.py), resumable at
``samples_seen``, prefetched.

The order, the datasets and their decoding are in ``training/data/__init__.py``; this module puts them
together for the trainer, so the datasets module needs nothing from the latent datasets (that
import ran both ways before).
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections import deque
from collections.abc import Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.dataset_versions import pinned, resolve
from training.data import (
    Assembled,
    LoaderState,
    LoaderStats,
    SampleMode,
    collate,
    sample_shape,
)
from training.data.latents import open_dataset
from training.data.weighted_order import epoch_order


class StreamingLoader:
    """Iterates this rank's micro-batches of one epoch, resuming at ``samples_seen``."""

    def __init__(self, shards_dir: str | Path, seed: int, global_batch: int, n_canonical: int = 16,
                 rank: int = 0, world_size: int = 1, n_frames: int = 16, fps: float = 8.0,
                 size: tuple[int, int] | None = None, sample_mode: SampleMode = "first",
                 num_workers: int = 0, drop_last: bool = False) -> None:
        if global_batch % world_size:
            raise ValueError("world_size must divide global_batch")
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
