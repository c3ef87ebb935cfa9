"""``vidloom bench attention``: decoupled spatial/temporal attention against full 3D attention.

Two layer stacks with the same weights (``models/dit/full3d.py``), built once and timed on the
same inputs for growing latent grids (frames x h x w patches):

- **decoupled**: ``depth`` x (``SpatialBlock``: per-frame [text; frame] attention,
  ``TemporalBlock``: attention across frames inside (wh, ww) windows), the DiT's layers;
- **full3d**: ``depth`` x (``Full3DBlock``: one joint attention over [text; all T*h*w tokens],
  ``Full3DVisualBlock``: attention over all T*h*w tokens), same parameters (asserted equal).

Timed: one training step's forward + backward of the stack (loss = mean square of both output
streams), median (and best) of ``repeats`` after one warm-up, the two stacks' steps interleaved,
``torch.manual_seed`` fixed, inputs identical for both stacks. CUDA: bf16 autocast,
``torch.cuda.synchronize`` around each step. Reported per size: visual tokens, ms of each stack,
ratio full3d / decoupled (above 1: decoupled is faster; target >= 1.5x at the largest size where
both run), parameters of each and a FLOPs estimate (``stack_flops``). Sizes are tried in order;
a stack is skipped from the size whose predicted step time (its previous size's, scaled by the
FLOPs estimate) exceeds ``max_step_s`` or the remaining ``budget_s``, or on out-of-memory.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from contextlib import nullcontext
from typing import Any

import torch
from torch import nn

from bench import record as bench_record

DEFAULT_SIZES: tuple[tuple[int, int, int], ...] = (
    (4, 8, 8),
    (8, 8, 8),
    (8, 16, 16),
    (16, 16, 16),
    (16, 32, 32),
    (32, 32, 32),
    (32, 64, 64),
)


def stack_flops(
    dim: int, depth: int, mlp_ratio: float, window: tuple[int, int], T: int, S: int, L: int, full3d: bool
) -> float:
    """Training FLOPs (forward + backward) of one sample through a stack, as ``model.flops_per_step``.

    ``6 * (linear weights x tokens) + 3 * attn_fwd``; per (spatial, temporal) pair the visual tokens
    (N = T*S) pass two blocks' QKV/out/MLP and the text tokens one. ``attn_fwd`` (QK^T and AV, 2 FLOPs
    per multiply-add) per pair: decoupled ``4 dim (T (L+S)^2 + N T wh ww)``, full3d
    ``4 dim ((L+N)^2 + N^2)``.
    """
    N = T * S
    block = 4 * dim * dim + 2 * dim * int(dim * mlp_ratio)  # QKV + out + MLP weights
    linear = 6 * depth * block * (2 * N + L)
    if full3d:
        attn = 4 * dim * ((L + N) ** 2 + N * N)
    else:
        attn = 4 * dim * (T * (L + S) ** 2 + N * T * window[0] * window[1])
    return float(linear + 3 * depth * attn)


def _step_fn(stack: nn.Module, inputs: dict[str, Any], device: torch.device) -> Any:
    """One forward + backward of ``stack``; returns a callable timing it in seconds."""
    cuda = device.type == "cuda"
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else nullcontext()

    def step() -> float:
        stack.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        with autocast:
            x, text = stack(**inputs)
            loss = x.float().square().mean() + text.float().square().mean()
        loss.backward()
        if cuda:
            torch.cuda.synchronize(device)
        return time.perf_counter() - t0

    return step


def _inputs(
    T: int, H: int, W: int, L: int, dim: int, batch: int, device: torch.device, seed: int
) -> dict[str, Any]:
    from models.dit.rope import text_positions, text_start, visual_positions

    g = torch.Generator().manual_seed(seed)
    return {
        "x": torch.randn(batch, T, H * W, dim, generator=g).to(device),
        "text": torch.randn(batch, L, dim, generator=g).to(device),
        "temb": torch.randn(batch, dim, generator=g).to(device),
        "vis_pos": visual_positions(T, H, W).to(device),
        "txt_pos": text_positions(L, text_start(T, H, W)).to(device),
        "hw": (H, W),
    }


def build_stacks(
    dim: int, heads: int, depth: int, mlp_ratio: float, window: tuple[int, int], seed: int = 0
) -> tuple[nn.Module, nn.Module]:
    """(decoupled, full3d) stacks with identical weights; adaLN modulation re-initialised to N(0, 0.02)
    so that no block is the adaLN-zero identity."""
    from models.dit.attention import AttentionConfig
    from models.dit.blocks import Modulation
    from models.dit.full3d import DecoupledStack, Full3DStack

    torch.manual_seed(seed)
    attn = AttentionConfig(dim=dim, heads=heads, window=window)
    dec = DecoupledStack(attn, depth, mlp_ratio)
    for m in dec.modules():
        if isinstance(m, Modulation):
            nn.init.normal_(m.proj.weight, std=0.02)
    f3d = Full3DStack(attn, depth, mlp_ratio)
    f3d.load_state_dict(dec.state_dict())
    return dec, f3d


def run(
    sizes: tuple[tuple[int, int, int], ...] | list[tuple[int, int, int]] = DEFAULT_SIZES,
    dim: int = 128,
    heads: int = 2,
    depth: int = 2,
    repeats: int = 3,
    device: str = "cpu",
    text_len: int = 64,
    batch: int = 1,
    mlp_ratio: float = 4.0,
    window: tuple[int, int] = (4, 4),
    budget_s: float = 600.0,
    max_step_s: float = 60.0,
    seed: int = 0,
    threads: int | None = None,
) -> dict[str, Any]:
    """Time both stacks on every size; returns {"config", "params", "rows", "largest", ...}.

    Each row: frames, h, w, tokens (T*h*w visual), text_tokens, ms_decoupled, ms_full3d (medians;
    None when skipped, with the reason in skipped_decoupled / skipped_full3d), ms_best_* (minimum),
    ratio (full3d / decoupled, of the medians), ratio_best (of the minimums), params_decoupled,
    params_full3d, gflops_decoupled, gflops_full3d, flops_ratio, loadavg_1m, and on CUDA the peak
    memory of each stack in MiB (peak_mib_*).
    """
    from models.dit.full3d import n_params

    dev = torch.device(device)
    if threads:
        # On a loaded machine one thread is steadier: OpenMP threads that lose their core stall
        # every op at its barrier, which costs per op and not per FLOP (skewing the ratio).
        torch.set_num_threads(threads)
    dec, f3d = build_stacks(dim, heads, depth, mlp_ratio, window, seed)
    p_dec, p_f3d = n_params(dec), n_params(f3d)
    assert p_dec == p_f3d, f"parameter counts differ: decoupled {p_dec}, full3d {p_f3d}"
    stacks = {"decoupled": dec.to(dev), "full3d": f3d.to(dev)}
    start, load0 = time.perf_counter(), round(os.getloadavg()[0], 2)
    last: dict[str, tuple[float, float] | None] = {"decoupled": None, "full3d": None}  # (FLOPs, s)
    stopped: dict[str, str | None] = {"decoupled": None, "full3d": None}
    rows = []
    for T, H, W in sizes:
        if H % window[0] or W % window[1]:
            raise ValueError(f"grid {(H, W)} is not divisible by window {window}")
        S, N = H * W, T * H * W
        inputs = _inputs(T, H, W, text_len, dim, batch, dev, seed)
        row: dict[str, Any] = {"frames": T, "h": H, "w": W, "tokens": N, "text_tokens": text_len}
        fl = {k: batch * stack_flops(dim, depth, mlp_ratio, window, T, S, text_len, k == "full3d")
              for k in stacks}
        active = []
        for name in stacks:
            prev = last[name]
            if stopped[name] is None and prev is not None:
                f0, t0 = prev
                predicted = t0 * max(1.0, fl[name] / f0)
                left = budget_s - (time.perf_counter() - start)
                if predicted > max_step_s:
                    stopped[name] = f"predicted {predicted:.1f} s/step > max_step_s {max_step_s}"
                elif predicted * (repeats + 1) > left:
                    stopped[name] = f"predicted {predicted * (repeats + 1):.0f} s > {left:.0f} s budget left"
            if stopped[name] is None:
                active.append(name)
        times = _time_interleaved({k: stacks[k] for k in active}, inputs, dev, repeats, seed, row, stopped)
        for name in stacks:
            ts = times.get(name)
            row[f"ms_{name}"] = round(1000 * statistics.median(ts), 2) if ts else None
            row[f"ms_best_{name}"] = round(1000 * min(ts), 2) if ts else None
            if ts:
                last[name] = (fl[name], statistics.median(ts))
            else:
                row[f"skipped_{name}"] = stopped[name]
        both = row["ms_full3d"] and row["ms_decoupled"]
        row["ratio"] = round(row["ms_full3d"] / row["ms_decoupled"], 3) if both else None
        row["ratio_best"] = round(row["ms_best_full3d"] / row["ms_best_decoupled"], 3) if both else None
        row["loadavg_1m"] = round(os.getloadavg()[0], 2)
        row["params_decoupled"], row["params_full3d"] = p_dec, p_f3d
        row["gflops_decoupled"] = round(fl["decoupled"] / 1e9, 3)
        row["gflops_full3d"] = round(fl["full3d"] / 1e9, 3)
        row["flops_ratio"] = round(fl["full3d"] / fl["decoupled"], 3)
        rows.append(row)
        if stopped["decoupled"] and stopped["full3d"]:
            break
    both = [r for r in rows if r["ratio"] is not None]
    largest = both[-1] if both else None
    return {
        "config": {
            "dim": dim, "heads": heads, "depth": depth, "mlp_ratio": mlp_ratio, "window": list(window),
            "text_len": text_len, "batch": batch, "repeats": repeats, "device": str(dev),
            "dtype": "bf16 autocast" if dev.type == "cuda" else "float32",
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "budget_s": budget_s, "max_step_s": max_step_s, "seed": seed,
        },
        "params": {"decoupled": p_dec, "full3d": p_f3d, "equal": p_dec == p_f3d},
        "rows": rows,
        "largest": largest,
        "target_ratio": 1.5,
        "target_met": bool(largest and largest["ratio"] >= 1.5),
        "loadavg_1m_start": load0,
        "wall_s": round(time.perf_counter() - start, 2),
    }


def _time_interleaved(
    stacks: dict[str, nn.Module],
    inputs: dict[str, Any],
    dev: torch.device,
    repeats: int,
    seed: int,
    row: dict[str, Any],
    stopped: dict[str, str | None],
) -> dict[str, list[float]]:
    """Seconds of ``repeats`` forward+backward steps of each stack after one warm-up each.

    Rounds are interleaved (a, b, b, a, a, b, ...) so that load from other processes falls on both
    stacks alike. On CUDA the warm-up's peak memory goes to ``row["peak_mib_<name>"]``; a stack that
    runs out of memory is dropped and ``stopped[name]`` set.
    """
    steps = {}
    for name, stack in stacks.items():
        torch.manual_seed(seed)
        step = _step_fn(stack, inputs, dev)
        try:
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats(dev)
            step()  # warm-up
        except torch.cuda.OutOfMemoryError:
            stack.zero_grad(set_to_none=True)
            stopped[name] = "out of memory"
            torch.cuda.empty_cache()
            continue
        if dev.type == "cuda":
            row[f"peak_mib_{name}"] = round(torch.cuda.max_memory_allocated(dev) / 2**20, 1)
        steps[name] = step
    times: dict[str, list[float]] = {name: [] for name in steps}
    order = list(steps)
    for r in range(max(1, repeats)):
        for name in order if r % 2 == 0 else order[::-1]:
            times[name].append(steps[name]())
    for stack in stacks.values():
        stack.zero_grad(set_to_none=True)
    return times


def _parse_sizes(text: str) -> list[tuple[int, int, int]]:
    out = []
    for part in text.split(","):
        t, h, w = (int(v) for v in part.lower().split("x"))
        out.append((t, h, w))
    return out


def print_report(r: dict[str, Any]) -> None:
    from bench.split import print_rows

    c = r["config"]
    print(
        f"\nvidloom bench attention: dim {c['dim']}, heads {c['heads']}, depth {c['depth']} x (spatial + "
        f"temporal), window {tuple(c['window'])}, {c['text_len']} text tokens, batch {c['batch']}, "
        f"{c['device']} ({c['dtype']}, {c['threads']} threads), forward+backward, median of {c['repeats']} "
        f"interleaved; load average {r['loadavg_1m_start']} at start"
    )
    print(f"parameters: decoupled {r['params']['decoupled']:,}, full3d {r['params']['full3d']:,} "
          f"({'equal' if r['params']['equal'] else 'DIFFERENT'})")

    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:.1f}"

    rows = [
        [
            f"{x['frames']}x{x['h']}x{x['w']}",
            x["tokens"],
            ms(x["ms_decoupled"]),
            ms(x["ms_full3d"]),
            "-" if x["ratio"] is None else f"{x['ratio']:.2f}x",
            "-" if x["ratio_best"] is None else f"{x['ratio_best']:.2f}x",
            f"{x['gflops_decoupled']:.1f}",
            f"{x['gflops_full3d']:.1f}",
            f"{x['flops_ratio']:.2f}x",
            f"{x['loadavg_1m']:.2f}",
        ]
        for x in r["rows"]
    ]
    print_rows(
        ["frames x h x w", "tokens", "decoupled ms", "full3d ms", "full3d/decoupled", "(best of)",
         "GFLOP dec", "GFLOP 3d", "FLOP ratio", "load 1m"],
        rows,
    )
    for x in r["rows"]:
        for k in ("decoupled", "full3d"):
            if x.get(f"skipped_{k}"):
                print(f"  {x['frames']}x{x['h']}x{x['w']}: {k} skipped ({x[f'skipped_{k}']})")
    big = r["largest"]
    if big:
        print(
            f"\nlargest size run by both: {big['frames']}x{big['h']}x{big['w']} ({big['tokens']} tokens): "
            f"full3d/decoupled = {big['ratio']:.2f}x (best of: {big['ratio_best']:.2f}x; "
            f"target >= {r['target_ratio']}x: "
            f"{'met' if r['target_met'] else 'NOT met'})"
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="vidloom bench attention", description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=_parse_sizes, default=list(DEFAULT_SIZES),
                   help="comma-separated FRAMESxHxW latent grids in patches (default: %(default)s)")
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--depth", type=int, default=2, help="(spatial, temporal) block pairs")
    p.add_argument("--window", type=int, nargs=2, default=[4, 4], metavar=("WH", "WW"))
    p.add_argument("--text-len", type=int, default=64)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--budget-s", type=float, default=600.0, help="total time budget")
    p.add_argument("--max-step-s", type=float, default=60.0, help="skip sizes predicted slower than this")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    record = bench_record.provenance(
        "vidloom bench attention", argv, "bf16 autocast" if args.device.startswith("cuda") else "fp32",
        torch.get_num_threads())
    r = run(
        sizes=args.sizes, dim=args.dim, heads=args.heads, depth=args.depth, repeats=args.repeats,
        device=args.device, text_len=args.text_len, batch=args.batch, window=tuple(args.window),
        budget_s=args.budget_s, max_step_s=args.max_step_s, threads=args.threads,
    )
    print_report(r)
    print(json.dumps(r, default=str))
    if args.json:
        bench_record.write_result(args.json, record, r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
