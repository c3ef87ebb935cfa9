"""``vidloom caption-server``: launch vLLM's OpenAI-compatible server with a video LLM.

This is the only vidloom module that touches vllm, and it never imports it: the server runs as a
subprocess (``python -m vllm.entrypoints.openai.api_server ...``, an argument list, never a shell
string), so vidloom's CPU environment works without vllm installed. vllm pins its own torch and
transformers; install it in a separate environment with ``pip install -e '.[gpu]'``.

Models:
- default: Tarsier2-7B rewritten as a plain Qwen2-VL checkpoint (vLLM's own Tarsier2 class was
  tied to the transformers v4 era)::

      # download omni-research/Tarsier2-7b-0115 to /models/Tarsier2-7b-0115, then
      vidloom caption-server convert /models/Tarsier2-7b-0115 checkpoints/Tarsier2-7b-0115-qwen2vl
      vidloom caption-server --model checkpoints/Tarsier2-7b-0115-qwen2vl

- served directly: ``Qwen/Qwen2-VL-7B-Instruct``, ``Qwen/Qwen2.5-VL-7B-Instruct``; also
  ``omni-research/Tarsier2-Recap-7b`` on a vLLM that still has Tarsier2 (<= 0.23), with
  ``--extra --hf-overrides '{"architectures": ["Tarsier2ForConditionalGeneration"]}'``.

The launcher waits for ``GET /health`` and ``GET /v1/models`` with a deadline and fails fast, with
the tail of the server's log, when the process exits first.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_MODEL = "checkpoints/Tarsier2-7b-0115-qwen2vl"
GPU_INSTALL_HINT = "install the gpu extra: pip install -e '.[gpu]' in a separate environment"
ENTRYPOINT = "vllm.entrypoints.openai.api_server"
_MM_ALIASES = {"images": "image", "videos": "video"}
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # the server is local: no proxy


class CaptionServerError(RuntimeError):
    """The server could not be started, exited early, or did not become healthy in time."""


@dataclass(slots=True)
class ServerConfig:
    """How to launch the vLLM server.

    Attributes:
        model: HF id or local path of the checkpoint.
        limit_mm_per_prompt: most items per request, per modality (16 frames sent as images).
        extra_args: further vLLM flags, appended verbatim (e.g. ``--chat-template FILE``).
        python: the interpreter that has vllm (another environment's, if need be).
    """

    model: str = DEFAULT_MODEL
    port: int = 8000
    host: str = "127.0.0.1"
    gpu_memory_utilization: float = 0.9
    max_model_len: int = 32768
    served_model_name: str | None = None
    limit_mm_per_prompt: dict[str, int] = field(default_factory=lambda: {"image": 16, "video": 1})
    dtype: str = "auto"
    extra_args: tuple[str, ...] = ()
    python: str = sys.executable

    @property
    def base_url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"


def parse_mm_limits(text: str) -> dict[str, int]:
    """``'images=16,video=1'`` or ``'{"image": 16, "video": 1}'`` -> ``{"image": 16, "video": 1}``."""
    text = text.strip()
    if text.startswith("{"):
        raw = json.loads(text)
    else:
        raw = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, sep, value = part.partition("=")
            if not sep:
                raise ValueError(f"bad --limit-mm-per-prompt item {part!r}; expected modality=count")
            raw[key.strip()] = value.strip()
    return {_MM_ALIASES.get(k, k): int(v) for k, v in raw.items()}


def server_argv(cfg: ServerConfig) -> list[str]:
    """The vLLM server command line as an argument list (run without a shell).

    ``--limit-mm-per-prompt`` is JSON, the form recent vLLM versions take.
    """
    argv = [cfg.python, "-m", ENTRYPOINT, "--model", cfg.model, "--host", cfg.host, "--port", str(cfg.port),
            "--gpu-memory-utilization", str(cfg.gpu_memory_utilization),
            "--max-model-len", str(cfg.max_model_len), "--dtype", cfg.dtype,
            "--limit-mm-per-prompt", json.dumps(cfg.limit_mm_per_prompt, separators=(",", ":"))]
    if cfg.served_model_name:
        argv += ["--served-model-name", cfg.served_model_name]
    return argv + list(cfg.extra_args)


def _status(url: str, timeout_s: float) -> tuple[int | None, bytes, str]:
    """(HTTP status or None, body, a short description) of one GET."""
    try:
        with _DIRECT.open(url, timeout=timeout_s) as resp:
            return resp.status, resp.read(), f"HTTP {resp.status}"
    except urllib.error.HTTPError as e:
        return e.code, b"", f"HTTP {e.code}"
    except (urllib.error.URLError, OSError) as e:
        return None, b"", f"{type(e).__name__}: {getattr(e, 'reason', e)}"


def _tail(proc: subprocess.Popen[bytes] | None, log_path: Path | None, n_lines: int = 30) -> str:
    text = ""
    if log_path is not None and log_path.is_file():
        text = log_path.read_bytes()[-20_000:].decode(errors="replace")
    elif proc is not None and proc.stderr is not None and proc.poll() is not None:
        text = proc.stderr.read().decode(errors="replace")  # safe: the process has exited
    return "\n".join(text.splitlines()[-n_lines:])


def wait_healthy(base_url: str, proc: subprocess.Popen[bytes] | None, timeout_s: float, *,
                 log_path: Path | None = None, poll_s: float = 1.0) -> list[str]:
    """Wait until the server answers ``GET /health`` and ``GET /v1/models`` with 200.

    Args:
        base_url: e.g. ``http://127.0.0.1:8000``.
        proc: the server process; when it exits first we fail at once. None: poll only.
        timeout_s: the deadline, in seconds from now.
        log_path: the server's log file, whose tail goes into the error message; without it the
            tail comes from ``proc.stderr`` when that is a pipe.
        poll_s: seconds between polls.

    Returns:
        The model ids the server lists (what clients pass as ``model``).

    Raises:
        CaptionServerError: the process exited, or the deadline passed.
    """
    base_url = base_url.rstrip("/")
    deadline = time.monotonic() + timeout_s
    last = "no answer yet"
    while True:
        if proc is not None and (rc := proc.poll()) is not None:
            raise CaptionServerError(f"the vLLM server exited with code {rc} before it was healthy "
                                     f"(last probe: {last}); its log ends with:\n{_tail(proc, log_path)}")
        request_timeout = max(0.1, min(5.0, deadline - time.monotonic()))
        status, _, last = _status(f"{base_url}/health", request_timeout)
        if status == 200:
            status, body, last = _status(f"{base_url}/v1/models", request_timeout)
            if status == 200:
                return [m["id"] for m in json.loads(body).get("data", [])]
        if time.monotonic() >= deadline:
            raise CaptionServerError(f"the vLLM server at {base_url} was not healthy after {timeout_s:g} s "
                                     f"(last probe: {last})")
        time.sleep(poll_s)


def vllm_available(python: str) -> bool:
    """Whether ``python`` can import vllm (checked without importing it here)."""
    if python == sys.executable:
        return importlib.util.find_spec("vllm") is not None
    probe = "import importlib.util, sys; sys.exit(importlib.util.find_spec('vllm') is None)"
    return subprocess.run([python, "-c", probe], capture_output=True).returncode == 0


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1" if host in ("0.0.0.0", "") else host, port)) == 0


def start_server(cfg: ServerConfig, log_path: Path) -> subprocess.Popen[bytes]:
    """Check the preconditions, then start the server with its output going to ``log_path``."""
    if not vllm_available(cfg.python):
        raise CaptionServerError(f"vllm is not importable by {cfg.python}: {GPU_INSTALL_HINT}")
    if cfg.model == DEFAULT_MODEL and not Path(cfg.model).is_dir():
        raise CaptionServerError(
            f"the default model {DEFAULT_MODEL} does not exist: download omni-research/Tarsier2-7b-0115, "
            f"run 'vidloom caption-server convert <download dir> {DEFAULT_MODEL}', or pass --model "
            "(e.g. Qwen/Qwen2-VL-7B-Instruct)")
    if port_in_use(cfg.host, cfg.port):
        raise CaptionServerError(f"port {cfg.port} on {cfg.host} is already in use; pick another --port")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        return subprocess.Popen(server_argv(cfg), stdout=log, stderr=subprocess.STDOUT)


def _parser() -> argparse.ArgumentParser:
    """vidloom's flags. Any other flag is vLLM's and is passed to its server verbatim, so no
    abbreviation of a vidloom flag is accepted (``--max-model`` would shadow a vLLM flag)."""
    p = argparse.ArgumentParser(
        prog="vidloom caption-server",
        description="Launch vLLM's OpenAI-compatible server with a video LLM. Flags not listed here "
        "are vLLM's and are passed to it unchanged (e.g. --tensor-parallel-size 2).",
        epilog=f"vLLM's own flags: 'vidloom caption-server --vllm-help' (needs vllm: {GPU_INSTALL_HINT}). "
        "'vidloom caption-server convert SRC DST' converts a Tarsier2 checkpoint to Qwen2-VL.",
        allow_abbrev=False,
    )
    d = ServerConfig()
    p.add_argument("--model", default=d.model, help=f"HF id or local path (default: {DEFAULT_MODEL})")
    p.add_argument("--port", type=int, default=d.port)
    p.add_argument("--host", default=d.host)
    p.add_argument("--gpu-memory-utilization", type=float, default=d.gpu_memory_utilization)
    p.add_argument("--max-model-len", type=int, default=d.max_model_len)
    p.add_argument("--served-model-name", default=None)
    p.add_argument("--limit-mm-per-prompt", type=parse_mm_limits, default=d.limit_mm_per_prompt,
                   help="e.g. images=16,video=1 (or JSON)")
    p.add_argument("--dtype", default=d.dtype)
    p.add_argument("--python", default=d.python, help="an interpreter with vllm (default: this one)")
    p.add_argument("--startup-timeout", type=float, default=1200.0, help="seconds to wait for /health")
    p.add_argument("--log-file", type=Path, help="server log (default: a file in the temp directory)")
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[],
                   help="further vLLM flags, verbatim (unknown flags are passed on as well)")
    p.add_argument("--vllm-help", action="store_true", help="print vLLM's server help (--python's vllm)")
    return p


def main(argv: list[str] | None = None) -> int:
    """``vidloom caption-server [flags] [vLLM flags]`` or ``vidloom caption-server convert SRC DST``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["convert"]:
        from captioner.convert import main as convert_main

        return convert_main(argv[1:])
    args, vllm_flags = _parser().parse_known_args(argv)
    if args.vllm_help:
        if not vllm_available(args.python):
            print(f"vidloom caption-server: error: vllm is not importable by {args.python}: "
                  f"{GPU_INSTALL_HINT}", file=sys.stderr)
            return 2
        return subprocess.run([args.python, "-m", ENTRYPOINT, "--help"]).returncode
    cfg = ServerConfig(model=args.model, port=args.port, host=args.host,
                       gpu_memory_utilization=args.gpu_memory_utilization, max_model_len=args.max_model_len,
                       served_model_name=args.served_model_name, limit_mm_per_prompt=args.limit_mm_per_prompt,
                       dtype=args.dtype, extra_args=(*vllm_flags, *args.extra), python=args.python)
    log_path = args.log_file or Path(tempfile.gettempdir()) / f"vidloom-caption-server-{cfg.port}.log"
    try:
        proc = start_server(cfg, log_path)
    except CaptionServerError as e:
        print(f"vidloom caption-server: error: {e}", file=sys.stderr)
        return 2
    print(f"starting vLLM ({cfg.model}); log: {log_path}", file=sys.stderr)
    signal.signal(signal.SIGTERM, lambda *_: proc.terminate())
    try:
        models = wait_healthy(cfg.base_url, proc, args.startup_timeout, log_path=log_path)
        print(f"caption server ready at {cfg.base_url}/v1 serving {', '.join(models)}", flush=True)
        return proc.wait()
    except CaptionServerError as e:
        print(f"vidloom caption-server: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
