"""A tiny trained run with an early and a late checkpoint, for the "trained longer wins" checks.

``train_tiny_run(root)`` writes synthetic shards (samplegen/synthetic_shards.py: ``clips`` testsrc2
patterns, captions "clip {i}" / "片段 {i}"), trains the tiny preset on them with ``vidloom train``'s
code path (``training.loop.run.train``: the VAE first, then the DiT) on one 9-frame 32x64 stage, and keeps
every ``ckpt_every``-th checkpoint, so ``checkpoints/step_<early>.pt`` is the same run's earlier self.
Used by tests/test_eval_trained.py and bench/eval_tiny.py with the ``synthetic`` suite, whose prompts
are those captions.
"""

from __future__ import annotations

from pathlib import Path

STAGE = "{name: video, fraction: 1.0, n_frames: 9, size: [32, 64], fps: 8.0, global_batch: 4, i2v_share: 0.0}"
VAE_STAGE = "{name: vae, n_frames: 9, size: [32, 64], global_batch: 4}"


def train_tiny_run(root: str | Path, steps: int = 150, vae_steps: int = 40, clips: int = 4,
                   ckpt_every: int = 25, seed: int = 0, progress: bool = False) -> tuple[Path, Path]:
    """(shards directory, run directory) of a tiny run trained for ``steps`` DiT steps.

    Clips are 64x32, 30 frames at 25 fps (so 9 frames at 8 fps fit), hue-rotated 40 degrees apart.
    """
    from samplegen.synthetic_shards import write_test_shards
    from training.config import load_train_config
    from training.loop.run import train

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    shards = write_test_shards(root, [("64x32", 30)] * clips)
    overrides = [f"steps={steps}", f"vae_steps={vae_steps}", f"ckpt_every={ckpt_every}",
                 f"keep_ckpts={steps // ckpt_every + 1}", "num_workers=0", "eval_samples=1",
                 f"eval_every={steps + 1}", "warmup_steps=2", f"log_every={ckpt_every}", f"seed={seed}",
                 f"stages=[{STAGE}]", f"vae_stage={VAE_STAGE}"]
    cfg = load_train_config("tiny", None, overrides)
    run = root / "run"
    train(cfg, shards, run, progress=progress, device="cpu")
    return shards, run


def step_checkpoint(run: str | Path, step: int) -> Path:
    """``<run>/checkpoints/step_<step>.pt`` (FileNotFoundError when that step was not kept)."""
    path = Path(run) / "checkpoints" / f"step_{step:07d}.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} was not kept (ckpt_every / keep_ckpts)")
    return path
