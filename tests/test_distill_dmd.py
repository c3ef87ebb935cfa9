"""training/post/distill_dmd.py: distribution-matching score distillation.

The loss is checked on its own (its gradient, and that it moves a Gaussian generator onto the data
distribution when given exact real and fake denoisers), then the stage runs on the tiny teacher of
``tests/test_distill_adv.py``: the fake-score critic learns the student's samples, checkpoints stay
"dit" and load, and resume replays the run bit for bit with the critic's state restored.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from tests.test_distill_adv import teacher_run  # noqa: F401  (shared fixture)
from training.loop.checkpoint import latest_checkpoint, load_checkpoint, load_pipeline, sub_state
from training.post.distill import distill_config
from training.post.distill_dmd import ScoreDistillTrainer, dmd_loss
from training.post.inputs import RunInputs

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest.one_thread


def test_dmd_gradient_is_the_normalised_score_difference() -> None:
    torch.manual_seed(0)
    x0 = torch.randn(3, 4, 5, requires_grad=True)
    real, fake = torch.randn(3, 4, 5), torch.randn(3, 4, 5)
    (grad,) = torch.autograd.grad(dmd_loss(x0, real, fake), x0)
    w = (x0 - real).abs().flatten(1).mean(1).view(-1, 1, 1)
    torch.testing.assert_close(grad, (fake - real) / w / x0.numel())
    (zero,) = torch.autograd.grad(dmd_loss(x0, real, real.clone()), x0)  # scores agree: no update
    assert torch.count_nonzero(zero) == 0


def _posterior_mean(x_t: torch.Tensor, t: torch.Tensor, m: float | torch.Tensor) -> torch.Tensor:
    """E[x0 | x_t] for x0 ~ N(m, 1), x_t = (1 - t) x0 + t eps."""
    a = 1 - t
    return m + a / (a**2 + t**2) * (x_t - a * m)


def test_dmd_moves_a_gaussian_generator_onto_the_data() -> None:
    """Generator x0 = mu + eps in 256 dimensions (mu learnable, from 2), data N(-1, I); the real denoiser
    is the data's exact posterior mean, the fake one the generator's own. Descending the DMD loss takes
    mu to -1 (and with the two denoisers swapped it would run away: the sign matters)."""
    gen = torch.Generator().manual_seed(0)
    mu = torch.tensor(2.0, requires_grad=True)
    opt = torch.optim.SGD([mu], lr=0.5)
    for _ in range(150):
        x0 = mu + torch.randn(32, 256, generator=gen)
        t = 0.05 + 0.9 * torch.rand(32, 1, generator=gen)
        x_t = (1 - t) * x0.detach() + t * torch.randn(32, 256, generator=gen)
        loss = dmd_loss(x0, _posterior_mean(x_t, t, -1.0), _posterior_mean(x_t, t, mu.detach()))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert abs(float(mu.detach()) + 1.0) < 0.1, float(mu.detach())


def _trainer(teacher: Path, shards: Path, out: Path, steps: int) -> ScoreDistillTrainer:
    overrides = {"steps": steps, "num_workers": 0, "eval_samples": 1, "warmup_steps": 1, "ckpt_every": 3,
                 "lr": 1e-4}
    post = {"dmd": {"segments": [1], "critic_lr": 1e-2, "fake_updates": 4}, "tscd": {"teacher_steps": 4}}
    cfg = distill_config(teacher, {**overrides, "post": post}, guidance_embed=False)
    return ScoreDistillTrainer(cfg, RunInputs(teacher, data=shards, init=teacher), out, device="cpu")


def _critic_loss(trainer: ScoreDistillTrainer, samples: list[dict], draws: int = 8) -> float:
    """The critic's flow-matching loss on fixed samples, averaged over fixed draws."""
    gen = torch.Generator().manual_seed(123)
    total = 0.0
    with torch.no_grad():
        for s in samples:
            x0 = s["x0"]
            for _ in range(draws):
                t = torch.rand(x0.shape[0], generator=gen)
                eps = torch.randn(x0.shape, generator=gen)
                tb = t.view(-1, 1, 1, 1, 1)
                v = trainer.critic((1 - tb) * x0 + tb * eps, t, text=s["text"], text_mask=s["text_mask"])
                total += float(((v - (eps - x0)) ** 2).mean())
    return total / (len(samples) * draws)


def test_score_distillation_stage(teacher_run: tuple[Path, Path], tmp_path: Path) -> None:  # noqa: F811
    teacher, shards = teacher_run
    out = tmp_path / "dmd"
    trainer = _trainer(teacher, shards, out, steps=6)
    teacher_dit = sub_state(load_checkpoint(latest_checkpoint(teacher))["ema"], "dit")
    for k, v in trainer.critic.state_dict().items():  # the critic starts as the teacher
        assert torch.equal(v, teacher_dit[k]), k
    critic_ids = {id(p) for p in trainer.critic.parameters()}
    assert not critic_ids & {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    critic0 = {k: v.clone() for k, v in trainer.critic.state_dict().items()}

    samples: list[dict] = []  # every step's detached student samples, as the critic sees them
    step = trainer.critic_step
    trainer.critic_step = lambda s, sizes, gen: (samples.extend(s), step(s, sizes, gen))[1]
    summary = trainer.train(progress=False)
    assert summary["steps"] == 6 and len(samples) == 6
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert all(k in rows[0] for k in ("dmd", "reg", "critic_loss"))
    assert all(r["dmd"] > 0 for r in rows)  # guided teacher vs unguided critic: the scores differ
    assert any(not torch.equal(v, critic0[k]) for k, v in trainer.critic.state_dict().items())
    # the critic step fits the student's samples: from the teacher's weights, repeated critic steps on
    # one step's samples lower its held-out-draw loss on them (one noisy batch per step in the run
    # itself moves it only a few per cent)
    trained = {k: v.clone() for k, v in trainer.critic.state_dict().items()}
    trainer.critic.load_state_dict(critic0)
    before = _critic_loss(trainer, samples[:1])
    gen = torch.Generator().manual_seed(7)
    for _ in range(8):
        step(samples[:1], [samples[0]["x0"].shape[0]], gen)
    after = _critic_loss(trainer, samples[:1])
    assert after < 0.8 * before, (before, after)
    trainer.critic.load_state_dict(trained)

    ckpt = load_checkpoint(latest_checkpoint(out))
    assert ckpt["kind"] == "dit" and ckpt["distill"]["mode"] == "dmd" and "critic" in ckpt["dmd"]
    assert not any("critic" in k for k in ckpt["ema"])  # generator weights only
    pipe = load_pipeline(out)
    student = sub_state(ckpt["ema"], "dit")
    assert all(torch.equal(v, student[k]) for k, v in pipe.dit.state_dict().items())

    # exact resume: from the step-3 checkpoint the run replays steps 4-6 bit for bit, critic included
    replay = tmp_path / "replay"
    (replay / "checkpoints").mkdir(parents=True)
    shutil.copy(out / "checkpoints" / "step_0000003.pt", replay / "checkpoints")
    again_trainer = _trainer(teacher, shards, replay, steps=6)
    again_trainer.train(progress=False)
    again = [json.loads(line) for line in (replay / "log.jsonl").read_text().splitlines()]
    assert [(r["step"], r["loss_hex"], r["critic_loss"]) for r in again] == [
        (r["step"], r["loss_hex"], r["critic_loss"]) for r in rows[3:]]
    for a, b in zip(trainer.critic.parameters(), again_trainer.critic.parameters(), strict=True):
        assert torch.equal(a, b)


def test_cli_distill_dmd(teacher_run: tuple[Path, Path], tmp_path: Path,  # noqa: F811
                         capsys: pytest.CaptureFixture) -> None:
    from vidloom.cli import build_parser

    teacher, shards = teacher_run
    argv = ["--teacher", str(teacher), "--data", str(shards), "--out", str(tmp_path / "cli"), "--steps", "1",
            "--segments", "1", "--teacher-steps", "4", "--fake-updates", "2", "--set", "num_workers=0",
            "--set", "eval_samples=1", "--device", "cpu", "--quiet"]
    args = build_parser().parse_args(["distill", "dmd", *argv])
    assert args.fn(args) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[0])["steps"] == 1
    info = load_checkpoint(latest_checkpoint(tmp_path / "cli"))["distill"]
    assert info["mode"] == "dmd" and info["fake_updates"] == 2
