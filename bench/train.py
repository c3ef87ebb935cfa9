"""``vidloom bench train``: does the loader keep the trainer fed, and how fast is the step?

For each preset (``tiny``, ``small``), on one of its video stages, in one process:

Each runs on pixel shards (mp4s decoded by PyAV) and on latent shards (``vidloom encode``).

1. **loader** samples/s: a fresh ``StreamingLoader`` (the preset's workers and prefetch) iterated
   for ``--batches`` global batches, nothing else running;
2. **trainer** samples/s: ``forward_backward_step`` + clip + AdamW + EMA on global batches already
   in memory (the frozen VAE's encode of the pixels included: it is part of what a step consumes);
3. **data wait**: the real loop (``Trainer.train``) for ``--steps`` steps; the share of step time
   spent blocked on the loader, after ``--warmup`` steps.

Targets: loader >= 2x trainer, data wait < 3 %. The VAE is randomly initialised (its weights do
not change the cost). Data: ``--data`` shards (default: the demo's, else generated test patterns).
With ``--mfu`` on a GPU the ``b1`` preset's model FLOPs utilisation is measured as well:
``flops_per_step(cfg, T', H', W', L) * samples/s / peak``, peak = ``--peak-tflops`` (H100 SXM
dense bf16: 989).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bench import record as bench_record
from bench.split import print_rows

DEMO_SHARDS = Path("out/demo/shards")


def bench_data(root: Path) -> Path:
    """The demo shards when present, else 16 generated 3 s clips at 640x360."""
    if (DEMO_SHARDS / "latest" / "manifest.json").is_file() or (DEMO_SHARDS / "manifest.json").is_file():
        return DEMO_SHARDS
    from samplegen.synthetic_shards import write_test_shards

    return write_test_shards(root, [("640x360", 75)] * 16, target_bytes=5_000_000)


def random_vae_checkpoint(cfg: Any, run_dir: Path) -> Path:
    """A "vae" checkpoint with initial weights (for timing only)."""
    from models.vae.causal_vae import VAE
    from training.config import to_dict
    from training.loop.checkpoint import save_checkpoint

    state = {f"vae.{k}": v for k, v in VAE(cfg.vae).state_dict().items()}
    return save_checkpoint(run_dir, 0, {"kind": "vae", "config": to_dict(cfg), "net": state, "ema": state,
                                        "latent_stats": None})


def _config(preset: str, stage_name: str, batch: int | None, workers: int, steps: int) -> Any:
    from training.config import load_train_config

    cfg = load_train_config(preset)
    stage = next(s for s in cfg.stages if s.name == stage_name)
    if batch:
        stage = dataclasses.replace(stage, global_batch=batch)
    cfg.stages = [dataclasses.replace(stage, fraction=1.0)]
    cfg.num_workers, cfg.steps, cfg.ckpt_every, cfg.eval_samples = workers, steps, 10**9, 0
    cfg.warmup_steps = 1
    return cfg


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_preset(preset: str, data: Path, work: Path, stage: str, batch: int | None, workers: int,
                 batches: int, steps: int, warmup: int, device: str, kind: str = "pixels") -> dict[str, Any]:
    from training.loop.dit_trainer import DiTTrainer

    cfg = _config(preset, stage, batch, workers, steps + warmup)
    vae = random_vae_checkpoint(cfg, work / f"{preset}-vae")
    if kind == "latents":  # `vidloom encode` first, outside the timing
        from training.data.latents import encode_shards
        from training.loop.run import adapt_stages_to_latents

        st = cfg.stages[0]
        latents = work / f"{preset}-latents"
        manifest = encode_shards(data, vae, latents, st.n_frames, tuple(st.size), st.fps, device=device)
        adapt_stages_to_latents(cfg, manifest)
        data = latents
    trainer = DiTTrainer(cfg, data, work / f"{preset}-run", vae, device=device)
    trainer._enter_stage(0)
    gb = cfg.stages[0].global_batch

    loader = trainer.make_loader(cfg.stages[0])
    it = loader.global_batches(continuous=True)
    next(it)  # pool start and first decode outside the timing
    t0 = time.perf_counter()
    cached = [next(it) for _ in range(batches)]
    loader_sps = batches * gb / (time.perf_counter() - t0)
    it.close()

    from training.loop.trainer import step_generator

    def step(i: int, micro: list[dict[str, Any]]) -> None:
        trainer.optimizer.zero_grad(set_to_none=True)
        trainer.forward_backward_step(micro, step_generator(0, i))
        torch.nn.utils.clip_grad_norm_(trainer.net.parameters(), cfg.grad_clip)
        trainer.optimizer.step()
        trainer._update_ema()

    for i in range(warmup):
        step(i, cached[i % len(cached)])
    _sync(trainer.device)
    t0 = time.perf_counter()
    for i in range(steps):
        step(i, cached[i % len(cached)])
    _sync(trainer.device)
    trainer_sps = steps * gb / (time.perf_counter() - t0)

    loop = DiTTrainer(cfg, data, work / f"{preset}-loop", vae, device=device)
    loop.train(progress=False)
    rows = [json.loads(line) for line in (loop.out / "log.jsonl").read_text().splitlines()][warmup:]
    wait = sum(r["data_wait_s"] for r in rows)
    busy = sum(r["step_s"] for r in rows)
    return {"preset": preset, "data": kind, "stage": stage, "global_batch": gb, "workers": workers,
            "frames": cfg.stages[0].n_frames, "size": list(cfg.stages[0].size),
            "dit_params_m": round(sum(p.numel() for p in trainer.net.parameters()) / 1e6, 2),
            "loader_samples_per_s": round(loader_sps, 2), "trainer_samples_per_s": round(trainer_sps, 2),
            "loader_over_trainer": round(loader_sps / trainer_sps, 2),
            "data_wait_share": round(wait / max(wait + busy, 1e-9), 4), "loop_steps": len(rows),
            "loop_samples_per_s": round(len(rows) * gb / max(wait + busy, 1e-9), 2)}


def measure_mfu(preset: str = "b1", stage: str = "video-high", batch: int = 1, steps: int = 10,
                warmup: int = 3, peak_tflops: float = 989.0, text_tokens: int = 256,
                device: str = "cuda", compile: bool = False) -> dict[str, Any]:
    """Model FLOPs utilisation of the DiT training step (forward, backward, AdamW) at ``stage``'s
    latent shape, on random latents and text embeddings (no VAE, no loader: the model alone).

    MFU = ``flops_per_step(cfg, T', H', W', L) * batch / step_s / (peak_tflops * 1e12)``.
    """
    from models.dit.model import DiT, flops_per_step
    from training.config import load_train_config
    from training.loop.flow_matching import flow_matching_loss

    cfg = load_train_config(preset)
    st = next(s for s in cfg.stages if s.name == stage)
    T, H, W = cfg.vae.latent_shape(st.n_frames, *st.size)
    dev = torch.device(device)
    torch.manual_seed(0)
    model = DiT(cfg.dit).to(dev)
    if compile:
        model.compile_blocks()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=dev.type == "cuda")
    x0 = torch.randn(batch, cfg.dit.in_channels, T, H, W, device=dev)
    text = torch.randn(batch, text_tokens, cfg.dit.text_dim, device=dev)
    autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda")

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with autocast:
            loss, _ = flow_matching_loss(lambda x, t, c: model(x, t, text=c), x0, text)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    _sync(dev)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(dev)
    step_s = (time.perf_counter() - t0) / steps
    flops = flops_per_step(cfg.dit, T, H, W, text_tokens) * batch
    pt, ph, pw = cfg.dit.patch
    return {"preset": preset, "stage": stage, "compile": compile, "latent": [T, H, W], "batch": batch,
            "text_tokens": text_tokens,
            "visual_tokens": (T // pt) * (H // ph) * (W // pw),
            "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
            "step_s": round(step_s, 4), "tflops_per_step": round(flops / 1e12, 2),
            "achieved_tflops": round(flops / step_s / 1e12, 1), "peak_tflops": peak_tflops,
            "mfu": round(flops / step_s / (peak_tflops * 1e12), 4),
            "max_memory_gb": round(torch.cuda.max_memory_allocated() / 2**30, 1) if dev.type == "cuda"
            else None}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="vidloom bench train", description=__doc__.splitlines()[0])
    p.add_argument("--presets", default="tiny,small", help="comma-separated presets")
    p.add_argument("--stage", default="video-low", help="which stage of each preset")
    p.add_argument("--kinds", default="pixels,latents",
                   help="data kinds: pixels (decode mp4s) and/or latents (`vidloom encode` shards)")
    p.add_argument("--data", type=Path, help="shards directory (default: demo shards or generated)")
    p.add_argument("--batch", type=int, help="override the stage's global batch (e.g. small on CPU)")
    p.add_argument("--workers", type=int, default=2, help="loader threads")
    p.add_argument("--batches", type=int, default=12, help="global batches timed for the loader")
    p.add_argument("--steps", type=int, default=20, help="timed trainer steps")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--mfu", action="store_true", help="only measure the b1 preset's MFU (GPU)")
    p.add_argument("--mfu-stage", default="video-high")
    p.add_argument("--mfu-batch", type=int, default=1)
    p.add_argument("--compile", action="store_true", help="with --mfu: also time the compiled blocks")
    p.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak (H100 SXM: 989)")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    precision = "bf16 autocast (CUDA)" if args.device.startswith("cuda") else "fp32 (CPU: no autocast)"
    record = bench_record.provenance("vidloom bench train", argv, precision,
                                     {"torch": torch.get_num_threads(), "loader_workers": args.workers})
    info = record["machine"]
    if args.mfu:
        rows = []
        for compiled in ([False, True] if args.compile else [False]):
            if args.device == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            rows.append(measure_mfu("b1", args.mfu_stage, args.mfu_batch, args.steps, args.warmup,
                                    args.peak_tflops, device=args.device, compile=compiled))
            print(json.dumps(rows[-1]))
        print_rows(["stage", "batch", "tokens", "compile", "step s", "TFLOP/s", "MFU", "peak GB"],
                   [[r["stage"], r["batch"], r["visual_tokens"], r["compile"], r["step_s"],
                     r["achieved_tflops"], f"{100 * r['mfu']:.1f}%", r["max_memory_gb"]] for r in rows])
        if args.json:
            bench_record.write_result(args.json, record, {"mfu": rows})
        return 0
    results = []
    with tempfile.TemporaryDirectory(prefix="vidloom-bench-train-") as tmp:
        data = args.data or bench_data(Path(tmp))
        for preset in args.presets.split(","):
            for kind in args.kinds.split(","):
                steps = args.steps if preset == "tiny" else max(3, args.steps // 5)
                results.append(bench_preset(
                    preset, data, Path(tmp) / kind, args.stage, args.batch, args.workers, args.batches,
                    steps, args.warmup, args.device, kind))
    print(f"\nvidloom bench train on {args.device}: {info['cores']} cores ({info['cpu_model']}), "
          f"load average {info['loadavg_1_5_15']}")
    print_rows(["preset", "data", "stage", "batch", "T", "HxW", "DiT M params", "loader smp/s",
                "trainer smp/s", "loader/trainer", "loop smp/s", "data wait"],
               [[r["preset"], r["data"], r["stage"], r["global_batch"], r["frames"],
                 "x".join(map(str, r["size"])),
                 r["dit_params_m"], r["loader_samples_per_s"], r["trainer_samples_per_s"],
                 f"{r['loader_over_trainer']:.2f}x", r["loop_samples_per_s"],
                 f"{100 * r['data_wait_share']:.1f}%"] for r in results])
    print("targets: loader >= 2x trainer, data wait < 3%")
    if args.json:
        bench_record.write_result(args.json, record, {"results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
