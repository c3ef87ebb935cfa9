"""TransNetV2's convolution blocks rebuilt for CPU inference; the same function, fewer passes.

Each of the model's six DilatedDCNNV2 layers runs four (2+1)D convolutions (a 1x3x3 spatial
conv, then a 3x1x1 temporal conv dilated 1, 2, 4 or 8), concatenates them, then batch-norms.
``FusedDDCNN`` computes the same thing with:

- the batch norm folded into the temporal convolutions' weights and bias (inference: running
  statistics, so it is a per-channel affine map of each branch's output);
- a dilated temporal convolution computed as an undilated one on a view: for dilation d the
  frames t - d, t, t + d of a channels-last [T, H, W, C] tensor are the rows q - 1, q, q + 1 of
  its [T/d, d*H, W, C] view (T padded with zero frames to a multiple of d, which is the
  convolution's own zero padding). oneDNN's dilated kernels are 2-4x slower at d = 4, 8;
- the four branch outputs concatenated straight into one channels-last tensor (torch.cat would
  otherwise pick a channels-first result and every later layer would reorder it back);
- weights stored once in the compute dtype, so autocast does not cast them on every window.

Measured at 1 thread, bf16 (AMX), 2-core VM: a 32-frame window 57.7 -> 49.9 ms, a 100-frame one
185 -> 168 ms (bench/transnet_windows.py records the current figures). Outputs are the same
function; bf16 rounding moves the probabilities about as far from fp32 as the package's bf16
path does (tests/test_transnet_fast.py).

With ``int8`` (``split.precision=int8``) the spatial convolutions, about 85% of the model's
multiply-adds, run as oneDNN u8 x s8 convolutions (``Int8Spatial``): weights per output channel,
each layer's input quantized once per window with its own max as the scale (the input is
non-negative: frames / 255 or a block's ReLU + shortcut output), outputs in the compute dtype.
The temporal convolutions stay in that dtype: in int8 they were slower (their signed inputs need
a quantize pass of their own each) and twice as far from fp32. A window's output still depends
on its frames alone. Measured at 1 thread on a 2-core AMD EPYC (AVX512-BF16/VNNI, no AMX): an
82-frame window 338 -> 230 ms; probabilities within 0.02 of fp32 (bf16: 0.011); the same
transitions as bf16 on all 33 files of the dev set + the 5-min 720p file
(bench/results/transnet_precisions.json).
"""

from __future__ import annotations

import functools
from typing import Any


def temporal_conv(torch: Any, y: Any, w: Any, b: Any, d: int) -> Any:
    """``conv3d(y, w, b, padding=(d, 0, 0), dilation=(d, 1, 1))`` for a 3x1x1 kernel ``w`` and a
    channels-last [N, C, T, H, W] ``y``, as an undilated convolution on the [T/d, d*H] view."""
    functional = torch.nn.functional
    if d == 1:
        return functional.conv3d(y, w, b, padding=(1, 0, 0))
    n, c, t, h, width = y.shape
    tp = -(-t // d) * d
    if tp != t:
        y = functional.pad(y, (0, 0, 0, 0, 0, tp - t)).contiguous(memory_format=torch.channels_last_3d)
    out = functional.conv3d(y.view(n, c, tp // d, d * h, width), w, b, padding=(1, 0, 0))
    out = out.view(n, w.shape[0], tp, h, width)[:, :, :t]
    # A batch of one comes back with a batch stride of C; torch.cat then takes its slow strided
    # path (3.2 instead of 1.2 ms for four [1, 16, 100, 27, 48] bf16 parts). Same memory.
    return out.as_strided(out.shape, (out.numel(), *out.stride()[1:])) if n == 1 else out


@functools.cache
def cpu_flags() -> frozenset[str]:
    """This CPU's feature flags (/proc/cpuinfo, read once; empty where there is none)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            lines = [line for line in f if line.startswith("flags")]
    except OSError:
        return frozenset()
    return frozenset(flag for line in lines for flag in line.split(":", 1)[1].split())


def cpu_has_int8() -> bool:
    """Whether this CPU has int8 dot products (AVX512-VNNI, AVX-VNNI or AMX): without them oneDNN
    emulates u8 x s8 convolutions, slower than bf16."""
    return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & cpu_flags())


class Int8Spatial:
    """A 1x3x3 convolution as a oneDNN u8 x s8 one: the weights quantized per output channel
    (symmetric, max / 127), the input by ``quantize`` (per tensor), the output in ``dtype``."""

    def __init__(self, torch: Any, weight: Any, dtype: Any) -> None:
        if not hasattr(torch.ops.onednn, "qconv_pointwise"):
            raise RuntimeError(f"torch {torch.__version__} has no oneDNN quantized convolution "
                               "(torch.ops.onednn.qconv_pointwise): use split.precision 'bf16' or 'fp32'")
        w = weight.detach().float()
        self.scales = (w.abs().amax(dim=(1, 2, 3, 4)) / 127).clamp_min(1e-12)
        q = torch.round(w / self.scales.view(-1, 1, 1, 1, 1)).clamp(-127, 127).to(torch.int8)
        q = q.contiguous(memory_format=torch.channels_last_3d)
        self.zero_points = torch.zeros(len(self.scales), dtype=torch.long)
        # x_scale / x_zp here only seed oneDNN's weight layout; each call passes the real ones
        self.packed = torch.ops.onednn.qconv_prepack(q, self.scales, 1.0, 0, [1, 1, 1], [0, 1, 1],
                                                     [1, 1, 1], 1, None)
        self.torch, self.dtype = torch, dtype

    @staticmethod
    def quantize(torch: Any, x: Any) -> tuple[Any, float]:
        """(u8 tensor, scale) of a non-negative tensor: scale = its max / 255, zero point 0, each
        value rounded half up (x / scale + 0.5 lies in [0.5, 255.5]: the cast truncates). The
        float copy is a new tensor: ``x.float()`` would be ``x`` itself in fp32, and the in-place
        scaling would then overwrite the layer's input."""
        scale = max(float(x.amax()), 1e-8) / 255
        xf = torch.empty_like(x, dtype=torch.float32).copy_(x)
        return xf.mul_(1 / scale).add_(0.5).to(torch.uint8), scale

    def __call__(self, q: Any, scale: float) -> Any:
        return self.torch.ops.onednn.qconv_pointwise(
            q, scale, 0, self.packed, self.scales, self.zero_points, None, [1, 1, 1], [0, 1, 1],
            [1, 1, 1], 1, 1.0, 0, self.dtype, "none", [], "")


def fuse_blocks(torch: Any, model: Any, dtype: Any, int8: bool = False) -> None:
    """Replace each SDDCNN block's DDCNN layers of a loaded TransNetV2 by ``FusedDDCNN`` ones in
    ``dtype`` (float32 or bfloat16), and store its Linear weights in ``dtype`` too. ``int8``: the
    spatial convolutions as ``Int8Spatial`` ones (their outputs in ``dtype``)."""
    nn = torch.nn

    class FusedDDCNN(nn.Module):  # type: ignore[misc, name-defined]
        def __init__(self, layer: Any) -> None:
            super().__init__()
            bn = layer.bn
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            shift = bn.bias - bn.running_mean * scale
            cl = torch.channels_last_3d
            self.branches = []
            convs = (layer.Conv3D_1, layer.Conv3D_2, layer.Conv3D_4, layer.Conv3D_8)
            f = scale.numel() // len(convs)
            for i, conv in enumerate(convs):
                spatial, temp = conv.layers
                s = scale[i * f : (i + 1) * f].view(-1, 1, 1, 1, 1)
                self.branches.append((
                    spatial.weight.detach().to(dtype).contiguous(memory_format=cl),
                    (temp.weight.detach() * s).to(dtype).contiguous(memory_format=cl),
                    shift[i * f : (i + 1) * f].detach().to(dtype),
                    temp.dilation[0],
                ))
            self.int8 = [Int8Spatial(torch, conv.layers[0].weight, dtype) for conv in convs] if int8 else None
            self.activate = layer.activation is not None

        def forward(self, x: Any) -> Any:
            if self.int8 is not None:
                q, scale = Int8Spatial.quantize(torch, x)  # once for the four branches
                spatial = [conv(q, scale) for conv in self.int8]
            else:
                conv3d = torch.nn.functional.conv3d
                spatial = [conv3d(x, s, padding=(0, 1, 1)) for s, _, _, _ in self.branches]
            parts = [temporal_conv(torch, y, t, b, d)
                     for y, (_, t, b, d) in zip(spatial, self.branches, strict=True)]
            p = parts[0]
            out = torch.empty((p.shape[0], len(parts) * p.shape[1], *p.shape[2:]), dtype=p.dtype,
                              device=p.device, memory_format=torch.channels_last_3d)
            x = torch.cat(parts, 1, out=out)
            return torch.relu_(x) if self.activate else x

    class FusedSDDCNN(nn.Module):  # type: ignore[misc, name-defined]
        def __init__(self, block: Any) -> None:
            super().__init__()
            assert block.shortcut is not None and block.stochastic_depth_drop_prob == 0.0
            # int8 quantizes each layer's input as non-negative: the block's input (frames, or the
            # previous block's ReLU + shortcut) and, after the first, a ReLU layer's output
            assert not int8 or all(layer.activation is not None for layer in block.DDCNN[:-1])
            self.layers = nn.ModuleList([FusedDDCNN(layer) for layer in block.DDCNN])
            self.pool = block.pool

        def forward(self, x: Any) -> Any:
            x = x.to(dtype)
            shortcut = None
            for layer in self.layers:
                x = layer(x)
                shortcut = x if shortcut is None else shortcut
            x = torch.relu_(x)
            x += shortcut
            return self.pool(x)

    with torch.no_grad():
        model.SDDCNN = nn.ModuleList([FusedSDDCNN(b) for b in model.SDDCNN])
        for m in model.modules():
            if isinstance(m, nn.Linear):
                m.to(dtype)
