"""Tarsier2 checkpoint -> plain Qwen2-VL checkpoint (``vidloom caption-server convert SRC DST``).

Tarsier2 (omni-research/Tarsier2-7b-0115, Tarsier2-Recap-7b) is a Qwen2-VL model saved in a
llava-style layout: a nested config.json (``model_type`` 'llava' or 'tarsier2', the Qwen2-VL text
fields under ``text_config``, the vision tower under ``vision_config``) and weights under
``vision_tower.*`` / ``language_model.model.*`` / ``language_model.lm_head.*``. vLLM's dedicated
``Tarsier2ForConditionalGeneration`` is tied to one transformers era, so we rewrite the checkpoint
once into the layout of Qwen/Qwen2-VL-7B-Instruct, which every vLLM serves as
``Qwen2VLForConditionalGeneration``:

    vidloom caption-server convert /models/Tarsier2-7b-0115 /models/Tarsier2-7b-0115-qwen2vl
    vidloom caption-server --model /models/Tarsier2-7b-0115-qwen2vl

Tensors are streamed one source shard at a time (``safe_open``), so a 7B checkpoint never sits
in memory whole. The output is written to a temporary sibling of DST and renamed when complete.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

# Tarsier2 on-disk prefix -> Qwen2-VL on-disk prefix (the original Qwen/Qwen2-VL-7B-Instruct layout).
# Composed from vLLM's loaders in vllm/model_executor/models/qwen2_vl.py (vllm-project/vllm):
#   Tarsier2ForConditionalGeneration.hf_to_vllm_mapper = {"vision_tower.": "visual."}
#     (its language_model.model.* / language_model.lm_head.* keys already are vLLM's internal names);
#   Qwen2VLForConditionalGeneration.hf_to_vllm_mapper = {"model.language_model.": "language_model.model.",
#     "model.visual.": "visual.", "lm_head.": "language_model.lm_head.", "model.": "language_model.model."}.
# Each Tarsier2 key becomes the HF name that Qwen2-VL's mapper sends to the same internal name. This
# layout (``visual.``, ``model.``, ``lm_head.``) is what the published Qwen2-VL checkpoints use, so
# every vLLM that serves Qwen2-VL loads it, and transformers (4.x and 5.x) does too.
TARSIER2_TO_QWEN2VL: dict[str, str] = {
    "vision_tower.": "visual.",
    "language_model.model.": "model.",
    "language_model.lm_head.": "lm_head.",
}
# Qwen2-VL's projector is the patch merger inside the vision tower (``visual.merger.*``); a separate
# llava projector (Tarsier v1 / non-Qwen2-VL Tarsier variants) has nowhere to go.
UNSUPPORTED_PREFIXES = ("multi_modal_projector.",)

ARCHITECTURE = "Qwen2VLForConditionalGeneration"
TOKEN_ID_KEYS = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id",
                 "vision_token_id", "bos_token_id", "eos_token_id", "pad_token_id")
REQUIRED_TEXT_KEYS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")
_DROP_KEYS = ("architectures", "auto_map", "_name_or_path", "text_config", "vision_config", "model_type")


class ConvertError(RuntimeError):
    """The source is not a convertible Tarsier2 checkpoint, or the destination is not free."""


def map_key(key: str) -> str | None:
    """The Qwen2-VL name of one Tarsier2 weight name, or None when no prefix matches."""
    for old, new in TARSIER2_TO_QWEN2VL.items():
        if key.startswith(old):
            return new + key[len(old):]
    return None


def qwen2vl_config(src_cfg: dict[str, Any]) -> dict[str, Any]:
    """A flat Qwen2VLConfig-style dict from a Tarsier2 (llava-style) config.json dict.

    Text fields go to the top level, ``vision_config`` stays nested; the top-level ``vision_config``
    (the one Tarsier2 builds its vision tower from) wins over one nested in ``text_config``.
    """
    model_type = src_cfg.get("model_type")
    if model_type == "qwen2_vl":
        raise ConvertError("config.json is already model_type 'qwen2_vl': serve it directly, no conversion")
    if model_type not in ("llava", "tarsier2"):
        raise ConvertError(f"config.json model_type is {model_type!r}; Tarsier2 has 'llava' or 'tarsier2'")
    if isinstance(src_cfg.get("text_config"), dict):
        text = dict(src_cfg["text_config"])
    else:  # vLLM's Tarsier2Config (model_type 'tarsier2') is already flat
        text = {k: v for k, v in src_cfg.items() if k != "model_type"}
    if text.get("model_type", "qwen2_vl") != "qwen2_vl":
        raise ConvertError(f"text_config.model_type is {text.get('model_type')!r}: only Tarsier2 checkpoints "
                           "built on Qwen2-VL (text_config.model_type 'qwen2_vl') convert to Qwen2-VL")
    missing = [k for k in REQUIRED_TEXT_KEYS if k not in text]
    if missing:
        raise ConvertError(f"text_config lacks {', '.join(missing)}")
    vision = src_cfg.get("vision_config") or text.get("vision_config")
    if not isinstance(vision, dict):
        raise ConvertError("config.json has no vision_config (neither top-level nor in text_config)")
    out: dict[str, Any] = {"architectures": [ARCHITECTURE], "model_type": "qwen2_vl"}
    out.update({k: v for k, v in text.items() if k not in _DROP_KEYS})
    for key in (*TOKEN_ID_KEYS, "torch_dtype", "dtype", "transformers_version"):
        if key not in out and key in src_cfg and not isinstance(src_cfg[key], dict):
            out[key] = src_cfg[key]
    out["vision_config"] = {k: v for k, v in vision.items() if k not in ("model_type", "architectures")}
    return out


def _source_shards(src: Path) -> list[Path]:
    index = src / "model.safetensors.index.json"
    if index.is_file():
        names = dict.fromkeys(json.loads(index.read_text())["weight_map"].values())
        shards = [src / n for n in sorted(names)]
    else:
        shards = sorted(src.glob("*.safetensors"))
    if not shards:
        raise ConvertError(f"{src} has no *.safetensors weights (save .bin checkpoints as safetensors first)")
    absent = [p.name for p in shards if not p.is_file()]
    if absent:
        raise ConvertError(f"shards named in the index are missing: {', '.join(absent[:5])}")
    return shards


def plan_keys(shards: list[Path]) -> dict[Path, dict[str, str]]:
    """For each shard, {tarsier2 name: qwen2-vl name}; reads only the safetensors headers."""
    from safetensors import safe_open

    plan: dict[Path, dict[str, str]] = {}
    unknown: list[str] = []
    projector: list[str] = []
    seen: set[str] = set()
    for shard in shards:
        with safe_open(str(shard), framework="pt") as f:
            names = list(f.keys())
        plan[shard] = {}
        for name in names:
            new = map_key(name)
            if new is None:
                (projector if name.startswith(UNSUPPORTED_PREFIXES) else unknown).append(name)
            elif new in seen:
                raise ConvertError(f"two source tensors map to {new!r}")
            else:
                seen.add(new)
                plan[shard][name] = new
    if projector:
        raise ConvertError(f"{len(projector)} tensor(s) of a separate llava projector ({projector[0]}, ...): "
                           "Qwen2-VL has no such module (its projector is visual.merger), so this is not a "
                           "Qwen2-VL-based Tarsier2 checkpoint")
    if unknown:
        raise ConvertError(f"{len(unknown)} weight name(s) with no Qwen2-VL mapping, e.g. {unknown[:5]}; "
                           f"known prefixes: {list(TARSIER2_TO_QWEN2VL)}")
    return plan


def _fix_processor_files(out: Path) -> None:
    """Point processor configs at Qwen2-VL's classes; Tarsier2 spells ``size`` as min/max_pixels.

    vLLM's own Tarsier2ImageProcessor remaps size {min_pixels, max_pixels} to
    {shortest_edge, longest_edge}; a plain Qwen2VLImageProcessor needs it written that way.
    """
    pre = out / "preprocessor_config.json"
    if pre.is_file():
        cfg = json.loads(pre.read_text())
        size = cfg.get("size")
        if isinstance(size, dict) and "min_pixels" in size and "max_pixels" in size:
            cfg["size"] = {"shortest_edge": size["min_pixels"], "longest_edge": size["max_pixels"]}
        cfg["image_processor_type"] = "Qwen2VLImageProcessor"
        cfg["processor_class"] = "Qwen2VLProcessor"
        pre.write_text(json.dumps(cfg, indent=2) + "\n")
    tok = out / "tokenizer_config.json"
    if tok.is_file():
        cfg = json.loads(tok.read_text())
        if "processor_class" in cfg:
            cfg["processor_class"] = "Qwen2VLProcessor"
            tok.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")


def has_chat_template(path: Path) -> bool:
    """Whether a checkpoint directory carries a chat template (vLLM's chat endpoint needs one)."""
    if (path / "chat_template.json").is_file() or (path / "chat_template.jinja").is_file():
        return True
    tok = path / "tokenizer_config.json"
    return tok.is_file() and bool(json.loads(tok.read_text()).get("chat_template"))


def convert(src: str | Path, dst: str | Path) -> Path:
    """Write a Qwen2-VL checkpoint at ``dst`` from the Tarsier2 checkpoint at ``src``.

    Returns:
        The destination directory.

    Raises:
        ConvertError: the source is not a Qwen2-VL-based Tarsier2 checkpoint (unknown weight names
            are listed), or ``dst`` exists and is not empty.
    """
    try:
        from safetensors.torch import save_file
    except ImportError as e:  # torch + safetensors: present in the gpu environment (vllm needs both)
        raise ConvertError("convert needs torch and safetensors: pip install torch safetensors") from e
    from safetensors import safe_open

    src, dst = Path(src), Path(dst)
    if not (src / "config.json").is_file():
        raise ConvertError(f"{src} has no config.json")
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise ConvertError(f"{dst} exists and is not empty; refusing to overwrite it")
    config = qwen2vl_config(json.loads((src / "config.json").read_text()))
    shards = _source_shards(src)
    plan = plan_keys(shards)  # every name is checked before any tensor is read

    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent))
    try:
        n = len(shards)
        weight_map: dict[str, str] = {}
        total = 0
        for i, shard in enumerate(shards, 1):
            out_name = "model.safetensors" if n == 1 else f"model-{i:05d}-of-{n:05d}.safetensors"
            tensors = {}
            with safe_open(str(shard), framework="pt") as f:
                for old, new in plan[shard].items():
                    tensors[new] = f.get_tensor(old)
            save_file(tensors, str(tmp / out_name), metadata={"format": "pt"})
            for name, t in tensors.items():
                weight_map[name] = out_name
                total += t.numel() * t.element_size()
            del tensors  # one shard in memory at a time
        if n > 1:
            index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
            (tmp / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        for path in sorted(src.iterdir()):  # tokenizer, processor, chat template, generation config...
            weights = path.name.endswith(_WEIGHT_SUFFIXES) or "index.json" in path.name
            if path.is_file() and path.name != "config.json" and not weights:
                shutil.copy2(path, tmp / path.name)
        _fix_processor_files(tmp)
        if dst.exists():
            dst.rmdir()  # empty (checked above)
        os.replace(tmp, dst)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dst


def main(argv: list[str] | None = None) -> int:
    """``vidloom caption-server convert SRC DST``."""
    parser = argparse.ArgumentParser(
        prog="vidloom caption-server convert",
        description="Convert a Tarsier2 checkpoint to a plain Qwen2-VL checkpoint.",
    )
    parser.add_argument("src", help="Tarsier2 checkpoint directory (e.g. a download of Tarsier2-7b-0115)")
    parser.add_argument("dst", help="output directory (must not exist, or be empty)")
    args = parser.parse_args(argv)
    try:
        out = convert(args.src, args.dst)
    except ConvertError as e:
        print(f"vidloom caption-server convert: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out}; serve it with: vidloom caption-server --model {out}")
    if not has_chat_template(out):
        print("warning: no chat template in the checkpoint; pass one to the server with "
              "--extra --chat-template FILE (Qwen2-VL's template works)", file=sys.stderr)
    return 0
