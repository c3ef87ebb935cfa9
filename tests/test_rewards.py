"""Reward models (models/rewards/) and reward-model training (training/post/reward_trainer.py).

Every reward runs for real on tiny generated videos: sinusoid patterns translated over time, random
flicker, checkerboards; the learned heads are trained for real on CPU.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import captioner.vlm_reward  # noqa: F401  (registers vlm_foundational)
from captioner.fake_server import FakeOpenAI, Reply
from models.aesthetic import aesthetic_head
from models.rewards.base import Reward
from models.rewards.builtin import (
    AestheticClipReward,
    CompositeReward,
    build_reward,
    parse_rating,
    term_stats,
)
from models.rewards.learned import MotionHead, TextAlignmentConfig, TextAlignmentHead, save_head
from models.rewards.proxies import AestheticProxyReward, MotionReward, StabilityReward
from training.post.reward_trainer import (
    PreferencePair,
    pairs_from_rewards,
    preference_accuracy,
    train_reward_model,
)

T, S = 8, 32
BYTE = TextAlignmentConfig(text_encoder="byte", channels=(8, 16), embed_dim=32)


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest.one_thread


def pattern(shift: float, period: float = 16.0, size: int = S) -> torch.Tensor:
    """A smooth 2D sinusoid [size, size] in [-0.8, 0.8], shifted right by ``shift`` pixels."""
    x = torch.arange(size).float()[None, :] - shift
    y = torch.arange(size).float()[:, None]
    return 0.8 * torch.sin(2 * math.pi * x / period) * torch.cos(math.pi * y / period)


def video(frames: list[torch.Tensor]) -> torch.Tensor:
    """Grey frames [H, W] -> [1, 3, T, H, W]."""
    return torch.stack(frames)[None, None].expand(1, 3, -1, -1, -1).clone()


def moving(speed: float = 1.0, n: int = T) -> torch.Tensor:
    return video([pattern(speed * t) for t in range(n)])


def jittery(amplitude: int, seed: int, n: int = T) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    shifts = torch.randint(-amplitude, amplitude + 1, (n,), generator=g).tolist()
    return video([pattern(float(s)) for s in shifts])


def noise(seed: int, n: int = T) -> torch.Tensor:
    return torch.rand(1, 3, n, S, S, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def pan(speed: float, seed: int = 0, n: int = T) -> torch.Tensor:
    """A camera pan: a window of a smooth random scene moving ``speed`` pixels right per frame."""
    z = torch.randn(1, 1, 12, 12, generator=torch.Generator().manual_seed(seed))
    scene = (0.6 * F.interpolate(z, size=(96, 96), mode="bicubic", align_corners=False)[0, 0]).clamp(-1, 1)
    frames = [scene[10 : 10 + S, round(10 + speed * t) : round(10 + speed * t) + S] for t in range(n)]
    return video(frames)


def shuffled(v: torch.Tensor, seed: int = 0) -> torch.Tensor:
    return v[:, :, torch.randperm(v.shape[2], generator=torch.Generator().manual_seed(seed))]


def score(reward, v: torch.Tensor, prompt: str = "a video") -> float:
    return float(reward(v, [prompt] * v.shape[0])[0].detach())


# --------------------------------------------------------------------------- proxies


def test_motion_rewards_smooth_motion_over_static_and_flicker() -> None:
    r = MotionReward()
    smooth, static = score(r, moving(1.0)), score(r, video([pattern(0)] * T))
    assert static == pytest.approx(0.0, abs=1e-6)
    assert smooth > 0.5
    assert smooth > score(r, jittery(4, seed=0)) + 0.2
    assert smooth > score(r, noise(0)) + 0.3
    flicker = video([pattern(0) if t % 2 else -pattern(0) for t in range(T)])  # A/B/A/B
    assert score(r, flicker) < 0.05
    for seed in range(3):  # a pan beats the same frames out of order
        assert score(r, pan(2.0, seed)) > score(r, shuffled(pan(2.0, seed), seed)) + 0.3
    for v in (moving(), noise(1), flicker):
        assert 0.0 <= score(r, v) <= 1.0
    assert torch.equal(r(noise(2, n=1), ["x"]), torch.zeros(1))  # an image has no motion to judge


def test_stability_prefers_persistent_structure() -> None:
    r = StabilityReward()
    assert score(r, video([pattern(0)] * T)) == pytest.approx(1.0, abs=1e-5)
    for seed in range(3):
        translated = pan(3.0, seed)
        assert score(r, translated) > 0.85
        assert score(r, translated) > score(r, shuffled(translated, seed)) + 0.1
        assert score(r, translated) > score(r, noise(seed)) + 0.3
    assert abs(score(r, noise(0)) - 0.5) < 0.1  # unrelated frames: cosine ~ 0


def checkerboard(cell: int = 8, size: int = 64) -> torch.Tensor:
    i = torch.arange(size)
    board = ((i[:, None] // cell + i[None, :] // cell) % 2).float() * 1.6 - 0.8
    return board[None, None, None].expand(1, 3, 1, size, size).clone()


def test_aesthetic_proxy_prefers_exposed_contrasty_sharp() -> None:
    r = AestheticProxyReward()
    good = checkerboard()
    dark = 0.1 * good - 0.9
    blurred = F.avg_pool2d(good[:, :, 0], 9, stride=1, padding=4, count_include_pad=False)[:, :, None]
    flat = torch.zeros_like(good)
    for worse in (dark, blurred, flat):
        assert score(r, good) > score(r, worse) + 0.2
    terms = r.terms(torch.cat([good, dark, blurred, flat]))
    assert all(((t >= 0) & (t <= 1)).all() for t in terms.values())
    assert terms["exposure"][1] < terms["exposure"][0]
    assert terms["sharpness"][2] < terms["sharpness"][0]
    assert terms["contrast"][3] < 1e-6


# --------------------------------------------------------------------------- gradients, registry


def _tiny_clip_reward() -> AestheticClipReward:
    """The aesthetic_clip scoring path with small real modules in place of ViT-L/14 (no weights here)."""
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Conv2d(3, 8, 8, stride=8), nn.GELU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                            nn.Linear(8, 16))
    return AestheticClipReward(encoder=encoder, head=aesthetic_head(16, (8, 8, 8, 8)), size=32)


@pytest.mark.parametrize("name", ["motion", "stability", "aesthetic_proxy", "text_alignment",
                                  "motion_learned", "aesthetic_clip"])
def test_differentiable_rewards_give_finite_nonzero_gradients(name: str, tmp_path) -> None:
    if name == "motion_learned":
        save_head(MotionHead(), str(tmp_path / "motion.pt"))
        reward = build_reward(name, weights_path=str(tmp_path / "motion.pt"))
    elif name == "text_alignment":
        reward = build_reward(name, config=BYTE)
    elif name == "aesthetic_clip":
        reward = _tiny_clip_reward()
    else:
        reward = build_reward(name)
    assert isinstance(reward, Reward) and reward.differentiable and reward.name == name
    v = (0.5 * moving(1.0) + 0.1 * noise(3)).repeat(2, 1, 1, 1, 1).requires_grad_(True)
    out = reward(v, ["a red kite", "a blue car"])
    assert out.shape == (2,) and torch.isfinite(out).all()
    out.sum().backward()
    assert v.grad is not None and torch.isfinite(v.grad).all() and v.grad.abs().sum() > 0


def test_registry_rejects_unknown_and_missing_weights(tmp_path) -> None:
    with pytest.raises(ValueError, match="unknown reward 'nope'"):
        build_reward("nope")
    missing = str(tmp_path / "head.pt")
    with pytest.raises(FileNotFoundError, match="head.pt"):
        build_reward("motion_learned", weights_path=missing)
    with pytest.raises(FileNotFoundError, match="head.pt"):
        build_reward("text_alignment", weights_path=missing)
    with pytest.raises(FileNotFoundError, match="clip_weights = ''"):
        build_reward("aesthetic_clip")
    (tmp_path / "clip.bin").write_bytes(b"x")
    with pytest.raises(FileNotFoundError, match="mlp_weights = '.*mlp.pth'"):
        build_reward("aesthetic_clip", clip_weights=str(tmp_path / "clip.bin"),
                     mlp_weights=str(tmp_path / "mlp.pth"))


def test_text_alignment_head_reloads_from_its_file(tmp_path) -> None:
    head = TextAlignmentHead(BYTE)
    with torch.no_grad():
        head.log_scale.fill_(1.234)  # differs from a fresh head
    save_head(head, str(tmp_path / "ta.pt"))
    reward = build_reward("text_alignment", weights_path=str(tmp_path / "ta.pt"))
    v, prompts = torch.cat([moving(), noise(0)]), ["a red kite", "一只蓝色的鸟"]
    assert torch.allclose(reward(v, prompts), head.eval()(v, prompts)[:, 0], atol=1e-6)


def test_composite_is_the_weighted_sum_of_its_terms() -> None:
    weights = {"motion": 2.0, "stability": 0.5, "aesthetic_proxy": -1.0}
    comp = build_reward("composite", weights=weights)
    assert isinstance(comp, CompositeReward) and comp.differentiable
    v = torch.cat([moving(1.0), noise(0), jittery(3, seed=1)])
    prompts = ["a", "b", "c"]
    terms = comp.terms(v, prompts)
    assert set(terms) == set(weights) and all(t.shape == (3,) for t in terms.values())
    expected = sum(w * build_reward(n)(v, prompts) for n, w in weights.items())
    assert torch.allclose(comp(v, prompts), expected, atol=1e-6)
    stats = term_stats(terms)
    assert stats["motion/var"] == pytest.approx(float(terms["motion"].var(correction=0)))


def test_vlm_reward_rates_through_an_openai_compatible_server() -> None:
    def script(body: dict, attempt: int) -> Reply:
        text = body["messages"][0]["content"][-1]["text"]
        return Reply(text="8" if "red" in text else "Rating: 3/10")

    v = torch.cat([moving(), noise(0)])
    with FakeOpenAI(script) as fake:
        reward = build_reward("vlm_foundational", base_url=fake.url, model="fake")
        assert not reward.differentiable
        assert reward(v, ["a red kite", "a blue car"]).tolist() == [8.0, 3.0]
        parts = fake.requests[0]["messages"][0]["content"]
        assert sum(p["type"] == "image_url" for p in parts) == 3  # first, middle, last frame
        comp = CompositeReward({"motion": 1.0, "vlm_foundational": 0.1}, rewards={"vlm_foundational": reward})
        assert not comp.differentiable
    with FakeOpenAI(lambda body, attempt: Reply(text="lovely")) as fake:
        with pytest.raises(RuntimeError, match="no 1-10 rating in 'lovely'"):
            build_reward("vlm_foundational", base_url=fake.url, model="fake")(v, ["a", "b"])
    assert parse_rating("7.5 out of 10") == 7.5 and parse_rating("11") is None


# --------------------------------------------------------------------------- reward training

COLOURS = {"red": (1.0, -1.0, -1.0), "blue": (-1.0, -1.0, 1.0)}


def coloured(colour: str, g: torch.Generator) -> torch.Tensor:
    """[3, 4, 16, 16]: a noisy video whose mean colour is ``colour`` at a random brightness."""
    base = torch.tensor(COLOURS[colour]).view(3, 1, 1, 1) * (0.4 + 0.5 * torch.rand(1, generator=g))
    return (base + 0.3 * torch.randn(3, 4, 16, 16, generator=g)).clamp(-1, 1)


def colour_pairs(n: int, objects: list[str], seed: int) -> list[PreferencePair]:
    """Ground truth: the video whose colour the prompt names is better aligned. Every object comes in
    both colours, so only the colour word predicts the label."""
    g, out = torch.Generator().manual_seed(seed), []
    for i in range(n):
        colour, other = ("red", "blue") if i % 2 else ("blue", "red")
        right, wrong = coloured(colour, g), coloured(other, g)
        if torch.rand(1, generator=g) < 0.5:
            out.append(PreferencePair(f"a {colour} {objects[i // 2 % len(objects)]}", right, wrong,
                                      {"text_alignment": "a"}))
        else:
            out.append(PreferencePair(f"a {colour} {objects[i // 2 % len(objects)]}", wrong, right,
                                      {"text_alignment": "b"}))
    return out


def test_text_alignment_head_learns_colour_preferences() -> None:
    objects = ["ball", "car", "sky", "flower", "house", "shirt"]
    train = colour_pairs(64, objects, seed=0)
    held_out = colour_pairs(32, ["bird", "boat"], seed=1)  # unseen videos and prompts
    head = TextAlignmentHead(BYTE)
    before = preference_accuracy(head, held_out)["text_alignment"]
    metrics = train_reward_model(head, train, steps=60, lr=3e-3, seed=0)
    after = preference_accuracy(head, held_out)["text_alignment"]
    assert before <= 0.7
    assert after >= 0.9
    assert metrics["loss_last"] < metrics["loss_first"]
    # The trained head, live, as the reward RLHF optimises: the named colour scores higher.
    reward = build_reward("text_alignment", head=head)
    g = torch.Generator().manual_seed(2)
    red, blue = coloured("red", g)[None], coloured("blue", g)[None]
    assert score(reward, red, "a red kite") > score(reward, blue, "a red kite")
    assert score(reward, blue, "a blue kite") > score(reward, red, "a blue kite")


def test_motion_head_learns_from_pairs_labelled_by_a_reward() -> None:
    def groups(seed: int) -> list[torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        out = []
        for i in range(12):
            speed = 0.5 + float(torch.rand(1, generator=g))
            out.append(torch.cat([moving(speed), jittery(2 + i % 3, seed=seed * 100 + i),
                                  video([pattern(float(i))] * T), noise(seed * 100 + i)]))
        return out

    proxy = MotionReward()
    train = pairs_from_rewards(groups(0), ["p"] * 12, {"motion": proxy}, margin=0.05)
    held_out = pairs_from_rewards(groups(1), ["p"] * 12, {"motion": proxy}, margin=0.05)
    assert len(train) > 40 and all(set(p.labels) == {"motion"} for p in train)
    head = MotionHead()
    metrics = train_reward_model(head, train, steps=80, lr=3e-3, seed=0)
    assert preference_accuracy(head, held_out)["motion"] >= 0.85
    assert metrics["loss_mean_last10"] < metrics["loss_first"]


def test_pairs_from_rewards_follow_the_reward_and_skip_ties() -> None:
    group = torch.cat([moving(1.0), video([pattern(0)] * T), video([pattern(0)] * T)])
    pairs = pairs_from_rewards([group], ["p"], {"motion": MotionReward(), "stability": StabilityReward()},
                               margin=1e-3)
    by_index = {(0, 1): pairs[0], (0, 2): pairs[1]}  # (1, 2) are identical videos: no label at all
    assert len(pairs) == 2
    for p in by_index.values():
        assert p.labels == {"motion": "a", "stability": "b"}  # moving: more motion, less stable
    with pytest.raises(ValueError, match="'a' or 'b'"):
        PreferencePair("p", group[0], group[1], {"motion": "c"})  # type: ignore[dict-item]
