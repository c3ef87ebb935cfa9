"""Tarsier2 -> Qwen2-VL conversion on a tiny checkpoint written in Tarsier2's layout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")
from safetensors import safe_open  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from captioner.convert import ConvertError, convert, map_key  # noqa: E402
from captioner.server import main as caption_server_main  # noqa: E402

VISION = {"model_type": "qwen2_vl", "depth": 1, "embed_dim": 8, "hidden_size": 16, "num_heads": 2,
          "mlp_ratio": 4, "in_chans": 3, "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2}
TEXT = {"model_type": "qwen2_vl", "architectures": ["Qwen2VLForConditionalGeneration"], "hidden_size": 16,
        "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1, "intermediate_size": 32,
        "vocab_size": 64, "rms_norm_eps": 1e-6, "rope_theta": 1e6, "tie_word_embeddings": False,
        "rope_scaling": {"type": "mrope", "mrope_section": [2, 1, 1]}, "max_position_embeddings": 4096,
        "image_token_id": 60, "video_token_id": 61, "vision_start_token_id": 58, "vision_end_token_id": 59}
TARSIER2_CONFIG = {"architectures": ["TarsierForConditionalGeneration"], "model_type": "llava",
                   "text_config": TEXT, "vision_config": VISION, "projection_head": None,
                   "image_token_index": 60, "vision_feature_layer": -1, "torch_dtype": "bfloat16"}
SHARDS = {
    "model-00001-of-00002.safetensors": [
        "vision_tower.patch_embed.proj.weight", "vision_tower.blocks.0.attn.qkv.weight",
        "vision_tower.merger.mlp.0.weight", "language_model.model.embed_tokens.weight"],
    "model-00002-of-00002.safetensors": [
        "language_model.model.layers.0.self_attn.q_proj.weight", "language_model.model.norm.weight",
        "language_model.lm_head.weight"],
}
EXTRA_FILES = {
    "tokenizer_config.json": {"model_max_length": 32768, "processor_class": "TarsierProcessor",
                              "chat_template": "{% for m in messages %}{{ m.content }}{% endfor %}"},
    "preprocessor_config.json": {"image_processor_type": "Qwen2VLImageProcessor", "patch_size": 14,
                                 "size": {"min_pixels": 3136, "max_pixels": 460800}},
    "generation_config.json": {"do_sample": False},
}


def _write_tarsier2(root: Path, shards: dict[str, list[str]] = SHARDS, config: dict = TARSIER2_CONFIG
                    ) -> dict[str, torch.Tensor]:
    """A tiny checkpoint in Tarsier2's on-disk layout; returns every tensor by its source name."""
    root.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(0)
    everything, weight_map = {}, {}
    for i, (shard, names) in enumerate(shards.items()):
        tensors = {n: torch.randn(4, 3 + i, generator=gen).to(torch.bfloat16 if i else torch.float32)
                   for n in names}
        save_file(tensors, str(root / shard), metadata={"format": "pt"})
        everything.update(tensors)
        weight_map.update(dict.fromkeys(names, shard))
    index = {"metadata": {"total_size": 0}, "weight_map": weight_map}
    (root / "model.safetensors.index.json").write_text(json.dumps(index))
    (root / "config.json").write_text(json.dumps(config))
    for name, content in EXTRA_FILES.items():
        (root / name).write_text(json.dumps(content))
    (root / "merges.txt").write_text("#version: 0.2\n")
    return everything


def _read_all(root: Path) -> dict[str, torch.Tensor]:
    out = {}
    for path in sorted(root.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as f:
            out.update({k: f.get_tensor(k) for k in f.keys()})
    return out


def test_every_tensor_lands_under_its_qwen2vl_name_unchanged(tmp_path: Path) -> None:
    source = _write_tarsier2(tmp_path / "tarsier2")
    dst = convert(tmp_path / "tarsier2", tmp_path / "qwen2vl")
    converted = _read_all(dst)
    assert len(converted) == len(source)
    for name, tensor in source.items():
        new = map_key(name)
        assert new is not None and new in converted, name
        assert converted[new].dtype == tensor.dtype and torch.equal(converted[new], tensor)
    assert {k.split(".")[0] for k in converted} == {"visual", "model", "lm_head"}
    assert "visual.merger.mlp.0.weight" in converted
    assert "model.layers.0.self_attn.q_proj.weight" in converted
    index = json.loads((dst / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(converted)
    for name, shard in index["weight_map"].items():
        with safe_open(str(dst / shard), framework="pt") as f:
            assert name in f.keys()
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in source.values())


def test_config_is_flat_qwen2vl_and_extra_files_are_copied(tmp_path: Path) -> None:
    _write_tarsier2(tmp_path / "tarsier2")
    dst = convert(tmp_path / "tarsier2", tmp_path / "qwen2vl")
    cfg = json.loads((dst / "config.json").read_text())
    assert cfg["model_type"] == "qwen2_vl"
    assert cfg["architectures"] == ["Qwen2VLForConditionalGeneration"]
    assert "text_config" not in cfg
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size", "rope_scaling",
                "image_token_id", "video_token_id", "vision_start_token_id"):
        assert cfg[key] == TEXT[key], key
    assert cfg["torch_dtype"] == "bfloat16"
    assert cfg["vision_config"]["depth"] == 1 and cfg["vision_config"]["embed_dim"] == 8
    assert "model_type" not in cfg["vision_config"]
    assert (dst / "merges.txt").read_text() == "#version: 0.2\n"
    assert json.loads((dst / "generation_config.json").read_text()) == {"do_sample": False}
    tok = json.loads((dst / "tokenizer_config.json").read_text())
    assert tok["chat_template"] == EXTRA_FILES["tokenizer_config.json"]["chat_template"]
    assert tok["processor_class"] == "Qwen2VLProcessor"
    pre = json.loads((dst / "preprocessor_config.json").read_text())
    assert pre["size"] == {"shortest_edge": 3136, "longest_edge": 460800}
    assert not list(tmp_path.glob(".qwen2vl.*"))  # the temporary directory was renamed


def test_single_shard_is_written_as_model_safetensors(tmp_path: Path) -> None:
    one = {"model.safetensors": [n for names in SHARDS.values() for n in names]}
    _write_tarsier2(tmp_path / "tarsier2", shards=one)
    dst = convert(tmp_path / "tarsier2", tmp_path / "out")
    assert sorted(p.name for p in dst.glob("*.safetensors")) == ["model.safetensors"]
    assert not (dst / "model.safetensors.index.json").exists()


def test_refuses_a_non_empty_destination(tmp_path: Path) -> None:
    _write_tarsier2(tmp_path / "tarsier2")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    with pytest.raises(ConvertError, match="not empty"):
        convert(tmp_path / "tarsier2", tmp_path / "taken")
    assert [p.name for p in (tmp_path / "taken").iterdir()] == ["keep.txt"]
    (tmp_path / "empty").mkdir()
    assert convert(tmp_path / "tarsier2", tmp_path / "empty") == tmp_path / "empty"


def test_unknown_keys_are_listed_and_nothing_is_written(tmp_path: Path) -> None:
    shards = {**SHARDS, "model-00002-of-00002.safetensors": [*SHARDS["model-00002-of-00002.safetensors"],
                                                               "temporal_adapter.weight"]}
    _write_tarsier2(tmp_path / "tarsier2", shards=shards)
    with pytest.raises(ConvertError, match=r"1 weight name\(s\) with no Qwen2-VL mapping.*temporal_adapter"):
        convert(tmp_path / "tarsier2", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out.*"))


def test_a_separate_llava_projector_is_refused(tmp_path: Path) -> None:
    names = ["vision_tower.patch_embed.proj.weight", "multi_modal_projector.linear_1.weight"]
    shards = {"model.safetensors": names}
    _write_tarsier2(tmp_path / "tarsier2", shards=shards)
    with pytest.raises(ConvertError, match="multi_modal_projector.linear_1.weight"):
        convert(tmp_path / "tarsier2", tmp_path / "out")


def test_non_qwen2vl_configs_are_refused(tmp_path: Path) -> None:
    llama_text = {**TEXT, "model_type": "llama"}
    _write_tarsier2(tmp_path / "a", config={**TARSIER2_CONFIG, "text_config": llama_text})
    with pytest.raises(ConvertError, match="qwen2_vl"):
        convert(tmp_path / "a", tmp_path / "out")
    _write_tarsier2(tmp_path / "b", config=TEXT)  # already a Qwen2-VL checkpoint
    with pytest.raises(ConvertError, match="serve it directly"):
        convert(tmp_path / "b", tmp_path / "out")


def test_caption_server_convert_subcommand(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _write_tarsier2(tmp_path / "tarsier2")
    assert caption_server_main(["convert", str(tmp_path / "tarsier2"), str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "config.json").is_file()
    assert caption_server_main(["convert", str(tmp_path / "tarsier2"), str(tmp_path / "out")]) == 2
    assert "not empty" in capsys.readouterr().err


def _qwen2vl_class() -> type:
    """transformers' Qwen2VLForConditionalGeneration, or a skip that says why it cannot import."""
    try:
        from transformers import Qwen2VLForConditionalGeneration
    except Exception as e:  # e.g. torchvision beside the CPU torch (see README "Environment")
        pytest.skip(f"transformers' Qwen2VLForConditionalGeneration does not import here: "
                    f"{type(e).__name__}: {e}")
    return Qwen2VLForConditionalGeneration


# transformers' own parameter names -> Tarsier2's on-disk names (the inverse of the conversion,
# through transformers 5's layout: model.visual.*, model.language_model.*, lm_head.*)
TO_TARSIER2 = {"model.visual.": "vision_tower.", "model.language_model.": "language_model.model.",
               "lm_head.": "language_model.lm_head.", "visual.": "vision_tower.",
               "model.": "language_model.model."}  # the last two: transformers 4's layout


def _to_tarsier2(name: str) -> str:
    prefix = next(p for p in TO_TARSIER2 if name.startswith(p))
    return TO_TARSIER2[prefix] + name[len(prefix):]


def test_converted_checkpoint_loads_in_transformers_and_runs_a_forward_pass(tmp_path: Path) -> None:
    """A tiny random Qwen2-VL saved in Tarsier2's layout converts into a checkpoint that
    transformers' Qwen2VLForConditionalGeneration loads with no missing or unexpected weight,
    every tensor equal, and the same logits on an image + text prompt as the original."""
    qwen2vl = _qwen2vl_class()
    from transformers import Qwen2VLConfig

    torch.manual_seed(0)
    tokens = {k: TEXT[k] for k in ("image_token_id", "video_token_id", "vision_start_token_id",
                                    "vision_end_token_id")}
    text = {k: v for k, v in TEXT.items() if k not in tokens and k not in ("model_type", "architectures")}
    vision = {k: v for k, v in VISION.items() if k != "model_type"}
    original = qwen2vl(Qwen2VLConfig(text_config=text, vision_config=vision, **tokens)).eval()
    weights = {_to_tarsier2(k): v.detach().clone().contiguous() for k, v in original.state_dict().items()}
    src = tmp_path / "tarsier2"
    src.mkdir()
    save_file(weights, str(src / "model.safetensors"), metadata={"format": "pt"})
    (src / "config.json").write_text(json.dumps({**TARSIER2_CONFIG, "torch_dtype": "float32"}))

    dst = convert(src, tmp_path / "qwen2vl")
    loaded, info = qwen2vl.from_pretrained(str(dst), dtype=torch.float32, output_loading_info=True)
    loaded.eval()
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    original_sd = original.state_dict()
    for name, tensor in loaded.state_dict().items():
        assert torch.equal(tensor, original_sd[name]), name

    # one 28x28 image: a 2x2 grid of 14-px patches (x2 frames), merged 2x2 into one image token
    grid = torch.tensor([[1, 2, 2]])
    patch_dim = VISION["in_chans"] * VISION["temporal_patch_size"] * VISION["patch_size"] ** 2
    pixels = torch.randn(4, patch_dim)
    ids = torch.tensor([[5, tokens["vision_start_token_id"], tokens["image_token_id"],
                         tokens["vision_end_token_id"], 7, 9, 11]])
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "pixel_values": pixels,
              "image_grid_thw": grid,  # what the processor adds: 1 marks image tokens (for M-RoPE)
              "mm_token_type_ids": (ids == tokens["image_token_id"]).long()}
    with torch.no_grad():
        got, want = loaded(**inputs).logits, original(**inputs).logits
    assert got.shape == (1, ids.shape[1], TEXT["vocab_size"]) and torch.isfinite(got).all()
    assert torch.equal(got, want)
