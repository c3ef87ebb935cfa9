"""``vidloom bench generate``: end-to-end generation time of the teacher and its distilled students.

In one run, same prompts, same fixed noise, same device (``training/post/distill_eval.py:distill_report``):

- **teacher**: ``--steps`` (50) Euler steps with CFG = 2 x 50 = 100 DiT passes (the reference);
- **cfg-distilled**: the guidance-embedding student, 50 steps, 50 passes;
- **tscd-4**: the TSCD student (CFG-distilled too), ``--tscd-steps`` (4) passes;
- **teacher-4**: the teacher at 4 CFG Euler steps (8 passes), the baseline distillation must beat.

Each row: passes (NFE), seconds per video (sampling + VAE decode), speedup over the teacher, latent
relative error and decoded PSNR vs the teacher's output, and, when the built-in rewards exist, the
composite reward and "reward retained" (student / teacher).

Checkpoints come by path (``--teacher``, ``--cfg-student``, ``--tscd-student``: "dit" checkpoints or
run directories, e.g. ``<tscd run>/segments_4``); without ``--teacher`` a tiny random teacher is
built and both students are distilled from it in memory (``--fit-steps``), for the CPU.
``--thin-decoder CKPT`` (``training/post/thin_decoder.py``) adds the thin decoder's decode speedup and PSNR
change on the TSCD latents.

``--adaptive`` runs another benchmark instead: adaptive step counts (``generate --steps auto``)
against a fixed schedule at the same average DiT passes (``bench/generate_adaptive.py``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bench import record as bench_record
from bench.split import print_rows

PROMPTS = ["a red ball rolls across a wooden table", "waves break on a rocky beach at sunset",
           "a city street at night with neon signs"]


def _save_dit(run_dir: Path, cfg: Any, dit: Any, text: Any, vae: Any, stats: dict[str, Any]) -> Path:
    from training.loop.checkpoint import save_dit_run

    save_dit_run(run_dir, 0, dataclasses.replace(cfg, dit=dit.cfg), dit, text, vae, stats)
    return run_dir


def build_tiny(root: Path, guidance: float, fit_steps: int, n_frames: int, size: tuple[int, int],
               seed: int = 0) -> tuple[Path, Path, Path]:
    """A random tiny teacher, and CFG-distilled and TSCD students fitted in memory: three "dit" runs."""
    from models.dit.model import DiT
    from models.text_encoder import ByteEncoder
    from models.vae.causal_vae import VAE
    from training.config import StageConfig, tiny
    from training.post.distill_eval import Prompts, fit_cfg_student, fit_tscd_student, teacher_pairs, wake

    cfg = tiny()
    cfg.stages[-1] = StageConfig("video", 1.0, n_frames=n_frames, size=size, fps=8.0, global_batch=2)
    cfg.timestep_shift = False
    torch.manual_seed(seed)
    teacher = wake(DiT(cfg.dit), 0.2, seed).eval().requires_grad_(False)
    text, vae = ByteEncoder(cfg.text.byte).eval(), VAE(cfg.vae).eval()
    c = cfg.vae.latent_channels
    stats = {"mean": torch.zeros(c), "std": torch.ones(c)}
    bank = Prompts.encode(text, PROMPTS)
    shape = (cfg.dit.in_channels, *cfg.vae.latent_shape(n_frames, *size))
    cfg_student = fit_cfg_student(teacher, bank, shape, steps=fit_steps, batch=8, seed=seed)
    pairs = teacher_pairs(cfg_student, bank, shape, 32, guidance, steps=50, seed=seed)
    tscd = fit_tscd_student(cfg_student, bank, pairs, guidance, segments=(8, 4), steps=fit_steps, batch=8,
                            seed=seed)
    return (_save_dit(root / "teacher", cfg, teacher, text, vae, stats),
            _save_dit(root / "cfg_student", cfg, cfg_student, text, vae, stats),
            _save_dit(root / "tscd_student", cfg, tscd, text, vae, stats))


def thin_decoder_rows(path: str, pipeline: Any, latents: torch.Tensor, reference: torch.Tensor,
                      device: str, repeats: int = 3) -> list[list[Any]]:
    """Decode time (median of ``repeats`` interleaved rounds), PSNR vs the teacher's fully decoded
    reference, and PSNR vs the full decoder on the same latents (the thin decoder's own fidelity), of
    the full and thin decoders."""
    from training.post.distill_eval import psnr
    from training.post.thin_decoder import as_thin_decoder

    thin = as_thin_decoder(path, pipeline.vae.cfg, device)
    decoders = {"full decoder": pipeline.vae.decode, "thin decoder": thin}
    z = pipeline.latent_stats.denormalize(latents.to(device))
    times: dict[str, list[float]] = {name: [] for name in decoders}
    videos: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for decode in decoders.values():
            decode(z[:1])  # warm-up
        for _ in range(max(1, repeats)):
            for name, decode in decoders.items():
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                start = time.perf_counter()
                videos[name] = decode(z).clamp(-1, 1).float().cpu()
                if device.startswith("cuda"):
                    torch.cuda.synchronize()
                times[name].append((time.perf_counter() - start) / z.shape[0])
    rows = [[name, statistics.median(times[name]), psnr(videos[name], reference),
             psnr(videos[name], videos["full decoder"])] for name in decoders]
    rows[1].append(rows[0][1] / max(rows[1][1], 1e-9))
    rows[0].append(1.0)
    return rows


def main(argv: list[str] | None = None) -> int:
    if "--adaptive" in (sys.argv[1:] if argv is None else argv):  # adaptive vs fixed step counts
        from bench.generate_adaptive import main as adaptive_main

        return adaptive_main(argv)
    p = argparse.ArgumentParser(prog="vidloom bench generate", description=__doc__.split("\n\n")[0])
    p.add_argument("--teacher", help="teacher 'dit' checkpoint or run (default: a tiny random one)")
    p.add_argument("--cfg-student", help="CFG-distilled student checkpoint or run")
    p.add_argument("--tscd-student", help="TSCD student checkpoint or run (e.g. <run>/segments_4)")
    p.add_argument("--student", action="append", default=[], metavar="LABEL=RUN",
                   help="another few-step student at --tscd-steps (dmd=runs/dmd/segments_4); repeatable")
    p.add_argument("--prompt", action="append", dest="prompts", help="repeatable (default: 3 built-in)")
    p.add_argument("--steps", type=int, default=50, help="teacher / cfg-student Euler steps")
    p.add_argument("--tscd-steps", type=int, default=4)
    p.add_argument("--guidance", type=float, default=4.0, help="CFG scale (teacher) = guidance input")
    p.add_argument("--frames", type=int, help="pixel frames (default: the teacher's last stage)")
    p.add_argument("--size", help="HxW (default: the teacher's last stage)")
    p.add_argument("--fit-steps", type=int, default=200, help="in-memory distillation steps (tiny mode)")
    p.add_argument("--thin-decoder", help="thin decoder checkpoint (training/post/thin_decoder.py)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=3, help="timing rounds, interleaved; the median counts")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    record = bench_record.provenance(
        "vidloom bench generate", argv,
        "bf16 autocast for the DiT when the run trained in bf16 (CUDA)" if args.device.startswith("cuda")
        else "fp32", torch.get_num_threads())

    from training.loop.checkpoint import load_pipeline
    from training.post.distill_eval import Variant, distill_report, variant_outputs

    size = tuple(int(v) for v in args.size.lower().split("x")) if args.size else None
    prompts = args.prompts or PROMPTS
    with tempfile.TemporaryDirectory() as tmp:
        paths = [args.teacher, args.cfg_student, args.tscd_student]
        if args.teacher is None:
            start = time.perf_counter()
            paths = list(build_tiny(Path(tmp), args.guidance, args.fit_steps, args.frames or 5,
                                    size or (32, 64), args.seed))
            print(f"built a tiny random teacher and distilled students in {time.perf_counter() - start:.1f}s")
        teacher = load_pipeline(paths[0], device=args.device)
        variants = [Variant(f"teacher-{args.tscd_steps}", teacher, args.tscd_steps, args.guidance)]
        if paths[1]:
            student = load_pipeline(paths[1], device=args.device)
            variants.insert(0, Variant("cfg-distilled", student, args.steps, guidance=args.guidance))
        tscd = load_pipeline(paths[2], device=args.device) if paths[2] else None
        if tscd is not None:
            g = args.guidance if tscd.dit.cfg.guidance_embed else None
            variants.insert(-1, Variant(f"tscd-{args.tscd_steps}", tscd, args.tscd_steps, guidance=g))
        for item in args.student:
            label, _, path = item.partition("=")
            extra = load_pipeline(path, device=args.device)
            g = args.guidance if extra.dit.cfg.guidance_embed else None
            variants.insert(-1, Variant(f"{label}-{args.tscd_steps}", extra, args.tscd_steps, guidance=g))
        # warm-up (CUDA kernels, allocator) so the first timed variant is not penalised
        distill_report(teacher, variants[-1:], prompts[:1], reference_steps=2, cfg_scale=args.guidance,
                       seed=args.seed, n_frames=args.frames, size=size, reward=False)
        report = distill_report(teacher, variants, prompts, args.steps, args.guidance, args.seed, args.frames,
                                size, repeats=args.repeats)
    ref = report["reference"]
    cols = ["variant", "passes", "s/video", "speedup", "latent_rel_err", "psnr_db", "reward", "retained",
            "above_noise"]
    rows = [[ref["name"], ref["nfe"], ref["seconds"] / len(prompts), 1.0, 0.0, float("inf"),
             ref.get("reward", "-"), 1.0 if "reward" in ref else "-", 1.0 if "noise_reward" in ref else "-"]]
    for r in report["rows"]:
        rows.append([r["name"], r["nfe"], r["seconds"] / len(prompts), r["speedup_vs_reference"],
                     r["latent_rel_err"], r["psnr_db"], r.get("reward", "-"), r.get("reward_retained", "-"),
                     r.get("reward_retained_above_noise", "-")])
    if "noise_reward" in ref:
        rows.append(["decoded start noise", 0, "-", "-", "-", "-", ref["noise_reward"],
                     ref["noise_reward"] / ref["reward"], 0.0])
    print(json.dumps({"device": args.device, **record["machine"], "prompts": len(prompts)}))
    print_rows(cols, rows)
    result: dict[str, Any] = {"report": report, "device": args.device}
    if args.thin_decoder and tscd is not None:
        noise = _noise(teacher, prompts, args, size)
        tscd_variant = next(v for v in variants if v.pipeline is tscd)
        z = variant_outputs(tscd_variant, prompts, noise, decode=False)["latents"]
        ref_v = Variant("ref", teacher, args.steps, args.guidance)
        ref_video = variant_outputs(ref_v, prompts, noise)["videos"]
        thin = thin_decoder_rows(args.thin_decoder, tscd, z, ref_video, args.device, args.repeats)
        print_rows(["decoder (tscd latents)", "s/video", "psnr_vs_teacher_db", "psnr_vs_full_db",
                    "decode_speedup"], thin)
        result["thin_decoder"] = thin
    if args.json:
        bench_record.write_result(args.json, record, result)
    return 0


def _noise(teacher: Any, prompts: list[str], args: argparse.Namespace, size: Any) -> torch.Tensor:
    """The report's fixed noise (``seed + i`` per prompt)."""
    from training.inference.generate import resolve_settings

    cfg = teacher.config
    n_frames, (h, w), _ = resolve_settings(cfg, args.frames, size, None)
    shape = (cfg.dit.in_channels, *cfg.vae.latent_shape(n_frames, h, w))
    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(args.seed + i))
                        for i in range(len(prompts))])


if __name__ == "__main__":
    sys.exit(main())
