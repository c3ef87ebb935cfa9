"""``vidloom bench generate --adaptive``: adaptive vs fixed step counts at the same average DiT passes.

For each budget ``N`` (``--budgets``, fixed-schedule steps), on a prompt set (``PROMPTS``, 10; or
``--prompt``), prompt ``i`` from the noise of seed ``seed + i`` (the same for every schedule):

- **teacher**: ``--teacher-steps`` (50) CFG Euler steps, the reference;
- **fixed-N**: N CFG Euler steps for every prompt: ``2 N`` DiT passes each;
- **adaptive-N**: the probe (training/inference/adaptive_steps.py: ``len(probe_ts)`` guided evaluations, 4
  passes, the first of which is the first Euler step's, so 2 are extra) and then the steps
  ``AdaptiveSteps.allocate`` gives each prompt, so that the set's mean, probe included, is ``2 N``
  passes too (at most: the allocation rounds down).

Rows: mean passes, mean / min / max steps, latent relative error against the teacher (mean over
prompts of ``||z - z_ref|| / ||z_ref||``), and the composite reward (``motion + stability +
aesthetic_proxy``, training/post/distill_eval.py ``load_reward``) of the decoded videos, with the
teacher's for scale. A diagnostic row per budget: the Spearman correlation between the probe's
estimate and fixed-N's per-prompt error (does the probe see which prompts are hard?), and an
**oracle-N** row: steps allocated by fixed-N's own per-prompt errors with no probe paid, the bound
on what any allocation could gain at that budget (not a schedule one can run).

Checkpoint: ``--ckpt RUN`` (a "dit" checkpoint or run directory), else a tiny model is trained
here (``--train-steps``) on toy clips whose captions are the prompts: a static colour screen is
easy, a scrolling pattern or flickering noise is hard, so prompts differ in difficulty. That is
minutes on two CPU cores.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench import record as bench_record
from bench.split import print_rows

# (caption, kind): the toy clips the bench trains on; the captions are the evaluation prompts
TOY_CLIPS = (
    ("a plain red screen", "solid:255,40,40"), ("a plain blue screen", "solid:40,60,255"),
    ("a plain white screen", "solid:240,240,240"), ("a grey screen slowly brightens", "fade"),
    ("a white square slides to the right on a black background", "square"),
    ("vertical colour stripes scroll to the left", "stripes"),
    ("a yellow ball bounces on a green field", "ball"), ("a checkerboard flickers", "checker"),
    ("random coloured noise flickers quickly", "noise"), ("a red and blue gradient rotates", "gradient"),
)
PROMPTS = [c for c, _ in TOY_CLIPS]
SIZE, FRAMES, FPS = (32, 64), 9, 8.0


def toy_video(kind: str, phase: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 [T, H, W, 3] of one toy clip; ``phase`` shifts where the motion starts."""
    h, w = SIZE
    t = np.arange(FRAMES)[:, None, None]
    y, x = (g[None] for g in np.mgrid[0:h, 0:w])
    if kind.startswith("solid:"):
        rgb = np.array([int(v) for v in kind[6:].split(",")], dtype=np.float64)
        v = np.broadcast_to(rgb, (FRAMES, h, w, 3)).copy()
    elif kind == "fade":
        v = np.repeat(((60 + 15 * (t + phase)) * np.ones((1, h, w)))[..., None], 3, -1)
    elif kind == "square":
        v = np.zeros((FRAMES, h, w, 3))
        for i in range(FRAMES):
            x0 = (4 * (i + phase)) % (w - 10)
            v[i, 10:22, x0:x0 + 10] = 255
    elif kind == "stripes":
        s = ((x + 3 * (t + phase)) // 8) % 4
        v = np.stack([s * 80, 255 - s * 60, (s * 130) % 256], -1).astype(np.float64)
    elif kind == "ball":
        v = np.broadcast_to(np.array([40, 170, 60.0]), (FRAMES, h, w, 3)).copy()
        for i in range(FRAMES):
            cy, cx = 8 + abs(((i + phase) * 5) % 32 - 16), 10 + 5 * (i + phase) % 44
            v[i][(y[0] - cy) ** 2 + (x[0] - cx) ** 2 < 25] = [250, 230, 40]
    elif kind == "checker":
        c = ((x // 8 + y // 8 + t + phase) % 2) * 255
        v = np.repeat(c[..., None], 3, -1).astype(np.float64)
    elif kind == "noise":
        v = rng.integers(0, 256, (FRAMES, h, w, 3)).astype(np.float64)
    else:  # gradient
        ang = 0.4 * (t + phase)
        g = (np.cos(ang) * x / w + np.sin(ang) * y / h + 1) / 2
        v = np.stack([255 * g, np.zeros_like(g), 255 * (1 - g)], -1)
    return np.clip(v, 0, 255).astype(np.uint8)


def toy_shards(root: Path, variants: int = 3, seed: int = 0) -> Path:
    """Shards of ``TOY_CLIPS`` (``variants`` phases each), captioned in en (and the same in zh)."""
    from curation.schema import ShardSample
    from pipelines.shard_writer import write_shards
    from training.inference.generate import write_mp4

    rng = np.random.default_rng(seed)
    pairs = []
    for i, (caption, kind) in enumerate(TOY_CLIPS):
        for j in range(variants):
            frames = torch.from_numpy(toy_video(kind, 3 * j, rng)).permute(3, 0, 1, 2).float() / 127.5 - 1
            path = write_mp4(frames, root / "clips" / f"{i:02d}-{j}.mp4", FPS)
            pairs.append(("64x32", ShardSample(key=f"toy{i:02d}{j}", mp4=path.read_bytes(),
                                               meta={"i": i, "kind": kind}, en_txt=caption, zh_txt=caption)))
    write_shards(pairs, root / "shards", target_bytes=200_000)
    return root / "shards"


def train_tiny(root: Path, steps: int, vae_steps: int) -> Path:
    """A tiny DiT (and its VAE) trained on ``toy_shards``: the run directory."""
    from training.config import load_train_config
    from training.loop.run import train

    shards = toy_shards(root)
    stages = ("stages=[{name: image, fraction: 0.2, n_frames: 1, size: [32, 64], global_batch: 8},"
              " {name: video, fraction: 0.8, n_frames: 5, size: [32, 64], fps: 8.0, global_batch: 8}]")
    cfg = load_train_config("tiny", None, [stages, f"steps={steps}", f"vae_steps={vae_steps}",
                                           "eval_every=100000", "ckpt_every=100000"])
    train(cfg, shards, root / "run", progress=False)
    return root / "run"


@torch.no_grad()
def run_schedule(pipeline: Any, prompts: list[str], steps: list[int], seed: int, cfg_scale: float,
                 n_frames: int, size: tuple[int, int], firsts: list[Any] | None = None) -> dict[str, Any]:
    """Latents [P, ...] and decoded videos of each prompt at its own step count (Euler, CFG);
    ``firsts``: the probe's t = 1 velocities, reused as the first steps' (as ``generate`` does)."""
    from training.inference.adaptive_steps import sample_euler
    from training.inference.generate import prepare

    zs, videos = [], []
    for i, (prompt, n) in enumerate(zip(prompts, steps, strict=True)):
        noise, kw, uncond, scale, shift = prepare(pipeline, prompt, None, n_frames, size, cfg_scale, "",
                                                  seed + i)
        first = firsts[i] if firsts is not None else None
        z = sample_euler(pipeline.dit, noise, kw, n, shift, scale, uncond, first).float()
        zs.append(z)
        videos.append(pipeline.vae.decode(pipeline.latent_stats.denormalize(z)).clamp(-1, 1).float())
    return {"latents": torch.cat(zs).cpu(), "videos": torch.cat(videos).cpu()}


def _spearman(a: list[float], b: list[float]) -> float | None:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    if np.std(ra) == 0 or np.std(rb) == 0:
        return None
    return round(float(np.corrcoef(ra, rb)[0, 1]), 4)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="vidloom bench generate --adaptive",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--adaptive", action="store_true", help="this benchmark (bench generate --adaptive)")
    p.add_argument("--ckpt", help="'dit' checkpoint or run directory (default: train a tiny one here)")
    p.add_argument("--save-run", help="train the tiny model into this directory (kept; reuse it with --ckpt)")
    p.add_argument("--train-steps", type=int, default=400, help="DiT steps of the tiny model trained here")
    p.add_argument("--vae-steps", type=int, default=150, help="VAE steps of the tiny model trained here")
    p.add_argument("--prompt", action="append", dest="prompts", help="repeatable (default: the toy captions)")
    p.add_argument("--budgets", default="4,8,16", help="fixed-schedule step counts to match, comma-separated")
    p.add_argument("--teacher-steps", type=int, default=50)
    p.add_argument("--power", type=float, help="AdaptiveSteps.power (default: its default)")
    p.add_argument("--probe-ts", help="AdaptiveSteps.probe_ts, comma-separated (default: its default)")
    p.add_argument("--cfg", type=float, default=4.0, help="CFG scale")
    p.add_argument("--seed", type=int, default=0, help="prompt i starts from the noise of seed + i")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (1: a tiny model's many small ops only slow down with more)")
    p.add_argument("--json", help="also write the results here (bench/results/generate_adaptive.json)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    record = bench_record.provenance("vidloom bench generate", argv, "fp32", torch.get_num_threads())

    from training.inference.adaptive_steps import AdaptiveSteps, allocate, probe_prepared
    from training.inference.generate import Timer, prepare, resolve_settings
    from training.loop.checkpoint import load_pipeline
    from training.post.distill_eval import load_reward

    prompts = args.prompts or PROMPTS
    budgets = [int(b) for b in args.budgets.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        ckpt, trained = args.ckpt, None
        if ckpt is None:
            start = time.perf_counter()
            ckpt = train_tiny(Path(args.save_run or tmp), args.train_steps, args.vae_steps)
            trained = {"train_steps": args.train_steps, "vae_steps": args.vae_steps,
                       "seconds": round(time.perf_counter() - start, 1), "clips": len(TOY_CLIPS) * 3}
            print(f"trained a tiny model in {trained['seconds']}s")
        pipeline = load_pipeline(ckpt, device=args.device)
    n_frames, size, _ = resolve_settings(pipeline.config)
    reward = load_reward()
    start = time.perf_counter()
    options: dict[str, Any] = {}
    if args.power is not None:
        options["power"] = args.power
    if args.probe_ts:
        options["probe_ts"] = tuple(float(t) for t in args.probe_ts.split(","))
    picker = AdaptiveSteps(budget=budgets[0], **options)
    timer, estimates, firsts = Timer(), [], []
    for i, prompt in enumerate(prompts):
        prepared = prepare(pipeline, prompt, None, n_frames, size, args.cfg, "", args.seed + i)
        found, first = probe_prepared(pipeline, prepared, picker, timer)
        estimates.append(found["estimate"])
        firsts.append(first)
    guided = args.cfg != 1.0 and not pipeline.config.dit.guidance_embed
    k = 2 if guided else 1
    extra = picker.extra_passes(guided)  # the probe's passes that sampling does not reuse

    def score(out: dict[str, Any], ref: dict[str, Any]) -> dict[str, Any]:
        z, zr = out["latents"], ref["latents"]
        errs = [float((z[i] - zr[i]).norm() / zr[i].norm().clamp_min(1e-12)) for i in range(len(prompts))]
        r = reward(out["videos"], list(prompts)).float() if reward is not None else None
        return {"latent_rel_err": round(statistics.fmean(errs), 5),
                "per_prompt_err": [round(e, 5) for e in errs],
                "reward": None if r is None else round(float(r.mean()), 5)}

    teacher = run_schedule(pipeline, prompts, [args.teacher_steps] * len(prompts), args.seed, args.cfg,
                           n_frames, size)
    ref_row = {"name": f"teacher-{args.teacher_steps}", "passes": args.teacher_steps * k,
               **score(teacher, teacher)}
    rows, diagnostics = [], []
    for n in budgets:
        same = [n] * len(prompts)
        fixed = score(run_schedule(pipeline, prompts, same, args.seed, args.cfg, n_frames, size), teacher)
        steps = AdaptiveSteps(budget=n, min_steps=1, **options).allocate(estimates, guided)
        adaptive = score(run_schedule(pipeline, prompts, steps, args.seed, args.cfg, n_frames, size, firsts),
                         teacher)
        rows.append({"name": f"fixed-{n}", "budget": n, "passes": n * k, "steps": same, **fixed})
        passes = round(extra + statistics.fmean(steps) * k, 3)
        rows.append({"name": f"adaptive-{n}", "budget": n, "passes": passes, "steps": steps, **adaptive})
        # a bound, not a method: steps ~ sqrt(the fixed schedule's own per-prompt error), no probe paid
        best = allocate(fixed["per_prompt_err"], n * len(prompts), 1, 4 * n, 0.5)
        oracle = score(run_schedule(pipeline, prompts, best, args.seed, args.cfg, n_frames, size), teacher)
        rows.append({"name": f"oracle-{n}", "budget": n, "passes": round(statistics.fmean(best) * k, 3),
                     "steps": best, **oracle})
        diagnostics.append({"budget": n, "spearman_estimate_vs_fixed_err": _spearman(estimates,
                                                                                    fixed["per_prompt_err"])})
    table = [[r["name"], r["passes"], statistics.fmean(r.get("steps", [args.teacher_steps])),
              min(r.get("steps", [args.teacher_steps])), max(r.get("steps", [args.teacher_steps])),
              f"{r['latent_rel_err']:.5f}", "-" if r["reward"] is None else f"{r['reward']:.5f}"]
             for r in [ref_row, *rows]]
    print_rows(["schedule", "passes/prompt", "mean steps", "min", "max", "latent_rel_err", "reward"], table)
    result = {"device": args.device, "prompts": prompts, "n_frames": n_frames, "size": list(size),
              "cfg_scale": args.cfg, "seed": args.seed, "checkpoint": args.ckpt or "trained here",
              "trained": trained,
              "probe": {"ts": list(picker.probe_ts), "passes": picker.probe_passes(guided),
                        "extra_passes": extra, "estimates": estimates, "power": picker.power},
              "oracle": "oracle-N: steps ~ sqrt(fixed-N's per-prompt error), no probe: the best an "
                        "allocation could do if it knew the errors; not a usable schedule",
              "reward": "composite(motion, stability, aesthetic_proxy)" if reward is not None else None,
              "reference": ref_row, "rows": rows, "diagnostics": diagnostics,
              "seconds": round(time.perf_counter() - start, 1)}
    if args.json:
        bench_record.write_result(args.json, record, result)
    return 0
