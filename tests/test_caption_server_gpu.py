"""The real vLLM path: launch the caption server with a small VLM and caption 4 frames.

Needs a CUDA GPU, vllm importable by this interpreter (the gpu extra), and a local copy of a small
VLM (e.g. Qwen/Qwen2-VL-2B-Instruct) named by ``VIDLOOM_TEST_VLM``; skipped with a reason otherwise.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import os
import socket
import subprocess
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.gpu


def _skip_reason() -> str | None:
    try:
        import torch
    except ImportError:
        return "needs torch"
    if not torch.cuda.is_available():
        return "needs a CUDA GPU"
    if importlib.util.find_spec("vllm") is None:
        return "needs vllm (pip install -e '.[gpu]' in a separate environment)"
    if not os.environ.get("VIDLOOM_TEST_VLM"):
        return "set VIDLOOM_TEST_VLM to a local small VLM checkpoint (e.g. Qwen2-VL-2B-Instruct)"
    return None


def _frame_data_uri(i: int) -> str:
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (448, 252), (30 + 40 * i, 90, 200 - 40 * i))
    ImageDraw.Draw(image).ellipse((40 + 80 * i, 80, 140 + 80 * i, 180), fill=(255, 220, 0))
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=90)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


@pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or "")
def test_real_server_captions_four_frames(tmp_path: Path) -> None:
    from captioner.server import ServerConfig, start_server, wait_healthy

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = ServerConfig(model=os.environ["VIDLOOM_TEST_VLM"], port=port, gpu_memory_utilization=0.6,
                       max_model_len=8192, served_model_name="test-vlm",
                       limit_mm_per_prompt={"image": 4, "video": 0}, extra_args=("--enforce-eager",))
    log = tmp_path / "vllm.log"
    proc = start_server(cfg, log)
    try:
        assert wait_healthy(cfg.base_url, proc, timeout_s=900, log_path=log) == ["test-vlm"]
        content = [{"type": "image_url", "image_url": {"url": _frame_data_uri(i)}} for i in range(4)]
        content.append({"type": "text", "text": "These are 4 frames of a video. Describe the video."})
        body = {"model": "test-vlm", "messages": [{"role": "user", "content": content}],
                "max_tokens": 64, "temperature": 0.0}
        request = urllib.request.Request(
            f"{cfg.base_url}/v1/chat/completions",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=300) as resp:
            answer = json.loads(resp.read())
        text = answer["choices"][0]["message"]["content"]
        assert isinstance(text, str) and text.strip()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
