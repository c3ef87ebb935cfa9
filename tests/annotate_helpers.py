"""Shared fixtures' helpers for tests/test_annotate*.py: tiny generated videos, indexes, a live server,
and a minimal Chrome DevTools Protocol client (headless Chromium over a websocket)."""

from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from training.inference.generate import write_mp4


def moving_square(seed: int, frames: int = 8, size: int = 32, speed: int = 2) -> torch.Tensor:
    """[3, T, size, size] in [-1, 1]: a coloured background and a bright square moving ``speed`` px/frame."""
    g = torch.Generator().manual_seed(seed)
    bg = torch.rand(3, 1, 1, 1, generator=g) * 1.2 - 0.9
    v = bg.expand(3, frames, size, size).clone()
    colour = torch.rand(3, generator=g) * 0.6 + 0.4
    for t in range(frames):
        x = (2 + t * speed) % (size - 8)
        v[:, t, 10:18, x:x + 8] = colour[:, None, None]
    return v


def make_batch(out: Path, prompts: list[str], seed: int, speed: int = 2) -> Path:
    """A ``generate --prompts``-style directory: one mp4 per prompt and index.jsonl; returns the index."""
    out.mkdir(parents=True, exist_ok=True)
    index = out / "index.jsonl"
    with index.open("w", encoding="utf-8") as f:
        for i, prompt in enumerate(prompts):
            video = moving_square(seed * 100 + i, speed=speed)
            path = write_mp4(video, out / f"{i + 1:03d}-视频-{i}.mp4", 8.0)
            doc = {"path": str(path), "prompt": prompt, "seed": seed}
            f.write(json.dumps(doc, ensure_ascii=False) + "\n")
    return index


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def live_server(app: Any) -> Iterator[str]:
    """``app`` under a real uvicorn server in a thread; yields its base URL."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(10)


def chromium_exe() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Browser:
    """Headless Chromium driven over the DevTools protocol (one page, synchronous calls)."""

    def __init__(self, profile: Path, width: int = 1280, height: int = 900) -> None:
        from websockets.sync.client import connect

        exe = chromium_exe()
        assert exe is not None
        self.proc = subprocess.Popen(
            [exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--mute-audio",
             "--disable-background-networking", "--disable-extensions", "--remote-debugging-port=0",
             "--autoplay-policy=no-user-gesture-required", f"--user-data-dir={profile}",
             f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.is_file() and port_file.read_text().strip()):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.close()
                raise RuntimeError("chromium did not open its DevTools port")
            time.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10))
        page = next(t for t in targets if t["type"] == "page")
        self.ws = connect(page["webSocketDebuggerUrl"], max_size=64 * 2**20, open_timeout=10)
        self._id = 0
        self.call("Page.enable")
        self.call("Runtime.enable")
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                  mobile=False)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=30))
            if msg.get("id") == self._id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return dict(msg.get("result", {}))

    def js(self, expression: str) -> Any:
        res = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in res:
            raise RuntimeError(f"{expression}: {res['exceptionDetails']}")
        return res["result"].get("value")

    def wait(self, expression: str, timeout: float = 10.0) -> Any:
        deadline = time.monotonic() + timeout
        # document.body is briefly null while a page is replaced: count an error as "not yet"
        guarded = f"(() => {{ try {{ return ({expression}); }} catch (e) {{ return false; }} }})()"
        while True:
            value = self.js(guarded)
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"waited {timeout}s for {expression}")
            time.sleep(0.05)

    def goto(self, url: str) -> None:
        self.call("Page.navigate", url=url)
        self.wait("document.readyState === 'complete'")

    def key(self, key: str) -> None:
        """A real key press (keyDown with its text, then keyUp), as a person typing it."""
        special = {"Enter": (13, "\r"), "ArrowLeft": (37, ""), "ArrowUp": (38, ""), "ArrowRight": (39, ""),
                   "ArrowDown": (40, ""), "Tab": (9, "")}
        if key in special:
            vk, text = special[key]
            code = key
        else:
            vk, text = ord(key.upper()), key
            code = f"Digit{key}" if key.isdigit() else f"Key{key.upper()}"
        down: dict[str, Any] = {"type": "keyDown", "key": key, "code": code, "windowsVirtualKeyCode": vk}
        if text:
            down["text"] = text
        self.call("Input.dispatchKeyEvent", **down)
        self.call("Input.dispatchKeyEvent", type="keyUp", key=key, code=code, windowsVirtualKeyCode=vk)

    def screenshot(self) -> bytes:
        return base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"])

    def close(self) -> None:
        try:
            if getattr(self, "ws", None) is not None:
                self.ws.close()
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
