"""The vLLM launcher without vllm: its command line, and its health wait against a real local HTTP
server and real subprocesses."""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from captioner.server import (
    ENTRYPOINT,
    CaptionServerError,
    ServerConfig,
    main,
    parse_mm_limits,
    server_argv,
    wait_healthy,
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _WarmingUp(BaseHTTPRequestHandler):
    """Answers /health with 503 for the first ``n_unready`` probes, then 200; lists one model."""

    n_unready = 3
    health_calls = 0

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        cls = type(self)
        if self.path == "/health":
            cls.health_calls += 1
            self._send(503 if cls.health_calls <= cls.n_unready else 200, b"")
        elif self.path == "/v1/models":
            self._send(200, json.dumps({"object": "list", "data": [{"id": "tiny-vlm"}]}).encode())
        else:
            self._send(404, b"")

    def _send(self, code: int, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def warming_server() -> Iterator[tuple[str, type[_WarmingUp]]]:
    handler = type("Handler", (_WarmingUp,), {"health_calls": 0})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", handler
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_wait_healthy_polls_through_503_until_ready(warming_server: tuple[str, type[_WarmingUp]]) -> None:
    url, handler = warming_server
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        models = wait_healthy(url, alive, timeout_s=10, poll_s=0.05)
    finally:
        alive.kill()
        alive.wait()
    assert models == ["tiny-vlm"]
    assert handler.health_calls == handler.n_unready + 1


def test_wait_healthy_times_out_with_last_status(warming_server: tuple[str, type[_WarmingUp]]) -> None:
    url, handler = warming_server
    handler.n_unready = 10**6
    start = time.monotonic()
    with pytest.raises(CaptionServerError, match=r"not healthy after 0.5 s \(last probe: HTTP 503\)"):
        wait_healthy(url, None, timeout_s=0.5, poll_s=0.05)
    assert time.monotonic() - start < 5


def test_wait_healthy_fails_fast_when_the_process_exits() -> None:
    code = "import sys; print('RuntimeError: CUDA out of memory', file=sys.stderr); sys.exit(3)"
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE)
    start = time.monotonic()
    with pytest.raises(CaptionServerError) as err:
        wait_healthy(f"http://127.0.0.1:{_free_port()}", proc, timeout_s=60, poll_s=0.05)
    assert time.monotonic() - start < 10  # not the 60 s deadline
    assert "exited with code 3" in str(err.value)
    assert "CUDA out of memory" in str(err.value)


def test_wait_healthy_reads_the_tail_of_the_log_file(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)) + "ValueError: unknown architecture\n")
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(1)"])
    with pytest.raises(CaptionServerError) as err:
        wait_healthy(f"http://127.0.0.1:{_free_port()}", proc, timeout_s=60, log_path=log, poll_s=0.05)
    assert "ValueError: unknown architecture" in str(err.value)
    assert "line 0\n" not in str(err.value)  # only the tail


def test_server_argv_is_an_argument_list_with_the_flags() -> None:
    cfg = ServerConfig(model="/models/my ckpt; rm -rf /", port=8123, host="0.0.0.0",
                       gpu_memory_utilization=0.8, max_model_len=16384, served_model_name="tarsier2",
                       dtype="bfloat16",
                       limit_mm_per_prompt={"image": 16, "video": 1}, extra_args=("--enforce-eager",))
    argv = server_argv(cfg)
    assert argv[:3] == [sys.executable, "-m", ENTRYPOINT]
    assert all(isinstance(a, str) for a in argv)
    flags = dict(zip(argv[3:-1:2], argv[4:-1:2], strict=True))
    assert flags["--model"] == "/models/my ckpt; rm -rf /"  # one argument, no shell to split it
    assert flags["--port"] == "8123" and flags["--host"] == "0.0.0.0"
    assert float(flags["--gpu-memory-utilization"]) == 0.8
    assert flags["--max-model-len"] == "16384" and flags["--dtype"] == "bfloat16"
    assert flags["--served-model-name"] == "tarsier2"
    assert json.loads(flags["--limit-mm-per-prompt"]) == {"image": 16, "video": 1}
    assert argv[-1] == "--enforce-eager"
    assert cfg.base_url == "http://127.0.0.1:8123"
    assert "--served-model-name" not in server_argv(ServerConfig(model="m"))


def test_parse_mm_limits_takes_pairs_or_json() -> None:
    assert parse_mm_limits("images=16,video=1") == {"image": 16, "video": 1}
    assert parse_mm_limits('{"image": 4}') == {"image": 4}
    with pytest.raises(ValueError):
        parse_mm_limits("images")


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed here")
def test_main_without_vllm_says_how_to_install_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--model", "Qwen/Qwen2-VL-7B-Instruct", "--port", str(_free_port())]) == 2
    assert "pip install -e '.[gpu]'" in capsys.readouterr().err
