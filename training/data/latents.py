"""Precomputed-latent shards: encode pixel shards once with the frozen VAE, then train without video.

``encode_shards`` reads every sample of a pixel shards directory (manifest order, the first
``n_frames`` frames at ``fps``, resized to ``size``), trims it to the ``1 + dt * k`` frames the
causal VAE accepts, and writes WebDataset shards (``pipelines.shard_writer.write_shards``: fixed tar
headers, atomic renames, byte-identical reruns) bucketed by latent shape, ``t{T'}-h{H'}-w{W'}``.
Members of one sample::

    {key}.latent.npy   posterior mean [C, T', H', W'] float32, raw (not normalised), np.save bytes
    {key}.en.txt       caption, copied when present (likewise zh.txt)
    {key}.json         the source meta plus {"source_key", "frames": pixel frames encoded}
    {key}.emb_en.npy   frozen text encoder only: [L, D] float16, the caption's real tokens (no mask)
    {key}.emb_zh.npy   likewise

``manifest.json`` holds the shard writer's fields (``version``, ``shards`` entries with ``shard``,
``bucket``, ``n_samples``, ``bytes``, ``sha256``, ``keys_first``/``keys_last``, ``n_samples``,
``dataset_hash``) plus ``kind: "latents"``, ``vae`` (``checkpoint``, ``sha256``, ``config``),
``latent_stats`` (``mean``, ``std``), ``text_encoder`` (null or ``kind``, ``dim``), ``n_frames``,
``size``, ``fps`` and ``source`` (``dir``, ``dataset_hash``).

A trainable text encoder (the byte encoder) changes during training, so its embeddings are never
stored; the DiT trainer encodes captions on the fly when a sample has no ``emb_*``.

``open_dataset`` gives the loader a ``LatentShardDataset`` for such a directory and a
``ShardDataset`` otherwise. Because the VAE is causal, latent frames ``:1 + (n - 1) // dt`` are the
latent of the first ``n`` pixel frames, so a stage asking for fewer frames (e.g. images, n = 1)
reads a prefix of the stored latents; a different size, fps or more frames needs another encode.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from curation.schema import ShardSample
from pipelines.dataset_versions import resolve
from pipelines.remote import as_path
from pipelines.shard_writer import MANIFEST, write_shards
from training.data import SampleMode, ShardDataset

if TYPE_CHECKING:
    from models.text_encoder import TextEncoder, TextEncoderConfig
    from models.vae.causal_vae import VAE

KIND = "latents"
FROZEN_TEXT_KINDS = ("minilm", "hf")
DEFAULT_SHARD_BYTES = 256 << 20


@dataclass(slots=True)
class _LatentSample(ShardSample):
    """A shard sample with arbitrary members (``{ext: bytes}``) instead of the pixel fields."""

    members: dict[str, bytes] = field(default_factory=dict)

    def to_wds(self) -> dict[str, Any]:
        return {"__key__": self.key, **self.members}


def _npy(array: np.ndarray) -> bytes:
    """``np.save`` bytes of a C-contiguous array (no pickle)."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def _load_npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _read_manifest(root: Path) -> dict[str, Any]:
    """The manifest of the version ``root`` names (an export directory resolves to its ``latest``)."""
    return json.loads((resolve(root) / MANIFEST).read_text(encoding="utf-8"))


def _frozen_text(cfg: TextEncoderConfig | None) -> TextEncoder | None:
    """The frozen text encoder ``cfg`` names; None without a config. A trainable kind is refused."""
    if cfg is None:
        return None
    if cfg.kind not in FROZEN_TEXT_KINDS:
        raise ValueError(
            f"text encoder {cfg.kind!r} is trained with the DiT, so its embeddings cannot be precomputed; "
            f"pass no text encoder (captions are encoded during training) or a frozen one {FROZEN_TEXT_KINDS}"
        )
    from models.text_encoder import build_text_encoder

    return build_text_encoder(cfg)


def _decoded(dataset: ShardDataset, num_workers: int) -> Iterator[dict[str, Any]]:
    """``dataset.get(i)`` for every index in order; decoded ahead by a thread pool when asked."""
    if num_workers <= 0:
        for i in range(len(dataset)):
            yield dataset.get(i)
        return
    pending: deque[Future[dict[str, Any]]] = deque()
    with ThreadPoolExecutor(num_workers) as pool:
        try:
            for i in range(len(dataset)):
                pending.append(pool.submit(dataset.get, i))
                if len(pending) > 2 * num_workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for f in pending:
                f.cancel()


def _encode_group(group: list[dict[str, Any]], vae: VAE, text: TextEncoder | None,
                  device: str | torch.device) -> Iterator[tuple[str, _LatentSample]]:
    """Encode same-shape samples in one VAE batch; yields ``(bucket, sample)`` in input order."""
    video = torch.stack([s["video"] for s in group]).to(device)
    with torch.no_grad():
        z = vae.encode(video).mean.float().cpu().numpy()
    embs: dict[tuple[int, str], np.ndarray] = {}
    if text is not None:
        for lang in ("en", "zh"):
            which = [i for i, s in enumerate(group) if s[f"caption_{lang}"] is not None]
            if not which:
                continue
            with torch.no_grad():
                emb, mask = text.encode([group[i][f"caption_{lang}"] for i in which])
            emb, mask = emb.float().cpu(), mask.cpu()
            for j, i in enumerate(which):
                embs[(i, lang)] = emb[j][mask[j]].to(torch.float16).numpy()
    _, t, h, w = z.shape[1:]
    bucket = f"t{t}-h{h}-w{w}"
    for i, s in enumerate(group):
        meta = {**s["meta"], "source_key": s["key"], "frames": int(s["video"].shape[1])}
        members = {
            "latent.npy": _npy(z[i]),
            "json": json.dumps(meta, sort_keys=True, ensure_ascii=False).encode("utf-8"),
        }
        for lang in ("en", "zh"):
            if s[f"caption_{lang}"] is not None:
                members[f"{lang}.txt"] = s[f"caption_{lang}"].encode("utf-8")
            if (i, lang) in embs:
                members[f"emb_{lang}.npy"] = _npy(embs[(i, lang)])
        yield bucket, _LatentSample(key=s["key"], mp4=b"", meta={}, members=members)


def _encoded(dataset: ShardDataset, vae: VAE, text: TextEncoder | None, batch_size: int,
             device: str | torch.device, num_workers: int) -> Iterator[tuple[str, _LatentSample]]:
    """Every sample of ``dataset`` encoded; samples are batched with others of their shape.

    Each shape's batch is filled in manifest order and encoded when full (the rest at the end), so
    a bucket's samples keep manifest order and the batches, hence the bytes, are the same each run.
    """
    dt = vae.cfg.downsample[0]
    groups: dict[tuple[int, ...], list[dict[str, Any]]] = {}
    for sample in _decoded(dataset, num_workers):
        video = sample["video"]
        video = video[:, : 1 + dt * ((video.shape[1] - 1) // dt)]
        try:
            vae.cfg.latent_shape(*video.shape[1:])
        except ValueError as e:
            raise ValueError(f"sample {sample['key']}: {e} (pass a size divisible by the VAE's)") from e
        shape = tuple(video.shape)
        group = groups.setdefault(shape, [])
        group.append({**sample, "video": video})
        if len(group) >= batch_size:
            yield from _encode_group(groups.pop(shape), vae, text, device)
    for shape in list(groups):
        yield from _encode_group(groups.pop(shape), vae, text, device)


def encode_shards(shards_dir: str | Path, vae_ckpt: str | Path, out_dir: str | Path, n_frames: int,
                  size: tuple[int, int] | None, fps: float, text_encoder: TextEncoderConfig | None = None,
                  batch_size: int = 8, device: str | torch.device = "cpu", num_workers: int = 2,
                  shard_bytes: int = DEFAULT_SHARD_BYTES) -> dict[str, Any]:
    """Encode every sample of a pixel shards directory into latent shards under ``out_dir``.

    Args:
        shards_dir: pixel shards (``vidloom curate``/``export``) with their ``manifest.json``.
        vae_ckpt: a "vae" or "dit" checkpoint, or a run directory (its newest checkpoint).
        out_dir: the latent shards directory; it should hold nothing but this function's output.
        n_frames: pixel frames read per sample (from the first frame); trimmed to ``1 + dt * k``.
        size: (H, W) frames are resized to (divisible by the VAE's spatial stride), None = native.
        fps: frame rate the frames are sampled at.
        text_encoder: a frozen text encoder ("minilm" or "hf") whose caption embeddings are stored
            too; None stores none. It runs on its own config's device.
        batch_size: samples per VAE batch (samples of one shape only).
        device: torch device of the VAE.
        num_workers: threads decoding video ahead of the VAE (0 = decode inline).
        shard_bytes: target shard size.

    Returns:
        The manifest written to ``out_dir/manifest.json`` (format: module docstring).

    Raises:
        ValueError: a trainable text encoder, ``out_dir`` equal to ``shards_dir``, latent input
            shards, or a frame size the VAE cannot encode.
    """
    from training.loop.checkpoint import load_vae, resolve_checkpoint

    src, out = resolve(shards_dir), Path(out_dir)  # an export directory: the version latest names now
    if batch_size <= 0:
        raise ValueError("batch_size must be positive")
    if out.resolve() in (src, Path(shards_dir).resolve()):
        raise ValueError("out_dir must differ from shards_dir (the writer replaces its manifest)")
    source = _read_manifest(src)
    if source.get("kind") == KIND:
        raise ValueError(f"{src} already holds latents; encode the pixel shards instead")
    text = _frozen_text(text_encoder)
    ckpt = resolve_checkpoint(vae_ckpt).resolve()
    vae, stats = load_vae(ckpt)
    vae.to(device)
    meta = {
        "kind": KIND,
        "vae": {"checkpoint": str(ckpt), "sha256": _sha256(ckpt), "config": dataclasses.asdict(vae.cfg)},
        "latent_stats": {"mean": stats.mean.float().tolist(), "std": stats.std.float().tolist()},
        "text_encoder": None if text is None else {"kind": text_encoder.kind, "dim": int(text.dim)},
        "n_frames": n_frames,
        "size": None if size is None else [int(size[0]), int(size[1])],
        "fps": fps,
        "source": {"dir": str(src.resolve()), "dataset_hash": source.get("dataset_hash")},
    }
    dataset = ShardDataset(src, n_frames, fps, size, sample_mode="first")
    write_shards(_encoded(dataset, vae, text, batch_size, device, num_workers), out, shard_bytes, meta)
    return _read_manifest(out)


class LatentShardDataset(ShardDataset):
    """Random access to latent shards by global index (manifest order); ``ShardDataset``'s interface.

    ``n_frames``, ``fps``, ``size`` and ``sample_mode`` are what the caller (a training stage) wants;
    None skips a check. Fewer frames than encoded read a prefix of the latent frames (exact: the
    VAE is causal); a different size, another fps, more frames or "uniform" windows raise.
    """

    def __init__(self, shards_dir: str | Path, n_frames: int | None = None, fps: float | None = None,
                 size: tuple[int, int] | None = None, sample_mode: SampleMode = "first") -> None:
        shards_dir = resolve(shards_dir)  # one version for the manifest and the tars
        manifest = _read_manifest(shards_dir)
        if manifest.get("kind") != KIND:
            raise ValueError(f"{shards_dir} holds pixel shards, not latents (kind {manifest.get('kind')})")
        enc_frames, enc_fps = int(manifest["n_frames"]), float(manifest["fps"])
        enc_size = None if manifest["size"] is None else (int(manifest["size"][0]), int(manifest["size"][1]))
        super().__init__(shards_dir, enc_frames, enc_fps, enc_size, "first")
        self.manifest = manifest
        where = f"latent shards {shards_dir} (encoded: {enc_frames} frames at {enc_fps} fps, size {enc_size})"
        if sample_mode != "first":
            raise ValueError(f"{where} hold the first frames; sample_mode {sample_mode!r} needs pixels")
        if size is not None and tuple(size) != enc_size:
            raise ValueError(f"{where}: a stage at size {tuple(size)} needs latents encoded at that size")
        self.latent_frames: int | None = None
        if n_frames is not None:
            if n_frames < 1 or n_frames > enc_frames:
                raise ValueError(f"{where}: cannot give {n_frames} frames")
            if fps is not None and n_frames > 1 and abs(fps - enc_fps) > 1e-9:
                raise ValueError(f"{where}: a stage at {fps} fps needs latents encoded at that fps")
            dt = int(manifest["vae"]["config"]["downsample"][0])
            self.latent_frames = 1 + (n_frames - 1) // dt

    def get(self, index: int, seed: int = 0, epoch: int = 0) -> dict[str, Any]:
        """Sample ``index``: key, raw ``latent`` [C, T', H', W'] float32, captions, meta, and the stored
        text embeddings ``emb_en``/``emb_zh`` ([L, D] float32, None when absent). ``seed`` and
        ``epoch`` are unused: the latents are fixed."""
        key, fields = self.raw(index)
        latent = torch.from_numpy(_load_npy(fields["latent.npy"]))
        if self.latent_frames is not None and latent.shape[1] > self.latent_frames:
            latent = latent[:, : self.latent_frames].contiguous()
        sample: dict[str, Any] = {
            "index": index,
            "key": key,
            "latent": latent,
            "caption_en": fields["en.txt"].decode("utf-8") if "en.txt" in fields else None,
            "caption_zh": fields["zh.txt"].decode("utf-8") if "zh.txt" in fields else None,
            "meta": json.loads(fields["json"]) if "json" in fields else {},
        }
        for lang in ("en", "zh"):
            data = fields.get(f"emb_{lang}.npy")
            sample[f"emb_{lang}"] = None if data is None else torch.from_numpy(_load_npy(data)).float()
        return sample


def open_dataset(shards_dir: str | Path, n_frames: int = 16, fps: float = 8.0,
                 size: tuple[int, int] | None = None, sample_mode: SampleMode = "first") -> ShardDataset:
    """A ``LatentShardDataset`` when the manifest's kind is "latents", else a pixel ``ShardDataset``."""
    if _read_manifest(as_path(shards_dir)).get("kind") == KIND:
        return LatentShardDataset(shards_dir, n_frames, fps, size, sample_mode)
    return ShardDataset(shards_dir, n_frames, fps, size, sample_mode)
