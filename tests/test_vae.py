"""Causal video VAE: shapes, exact causality, image = one-frame video, KL, loss terms, training."""

from __future__ import annotations

import pytest
import torch

from models.vae import (
    VAE,
    CausalConv3d,
    DiagonalGaussian,
    PatchDiscriminator3d,
    PerceptualDistance,
    VAEConfig,
    discriminator_hinge_loss,
    vae_loss,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest.one_thread


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def vae() -> VAE:
    torch.manual_seed(0)
    return VAE(VAEConfig.tiny()).eval()


@pytest.mark.parametrize("t", [1, 5, 9])
def test_shapes(vae: VAE, t: int) -> None:
    x = torch.randn(2, 3, t, 16, 24)
    posterior = vae.encode(x)
    assert posterior.mean.shape == (2, 16, 1 + (t - 1) // 4, 2, 3)
    assert posterior.logvar.shape == posterior.mean.shape
    recon, _ = vae(x)
    assert recon.shape == x.shape


def test_rejects_bad_frame_count(vae: VAE) -> None:
    with pytest.raises(ValueError, match="T = 1 \\+ 4k"):
        vae.encode(torch.randn(1, 3, 8, 16, 16))


@pytest.mark.parametrize(
    ("preset", "down", "ch"), [(VAEConfig.small, (4, 8, 8), 16), (VAEConfig.seedance, (4, 16, 16), 48)]
)
def test_presets_build(preset, down: tuple[int, int, int], ch: int) -> None:
    cfg = preset()
    assert cfg.downsample == down and cfg.latent_channels == ch
    assert cfg.latent_shape(17, 64, 64) == (5, 64 // down[1], 64 // down[2])
    # levels() validates the level count against the downsampling and places the temporal strides.
    assert [stride for _, stride in cfg.levels()][-2:] == [2, 2]


def test_causal_conv_replicates_first_frame() -> None:
    conv = CausalConv3d(1, 1, (3, 1, 1))
    with torch.no_grad():
        conv.conv.weight.copy_(torch.tensor([1.0, 10.0, 100.0]).view(1, 1, 3, 1, 1))
        conv.conv.bias.zero_()
    x = torch.tensor([1.0, 2.0, 3.0]).view(1, 1, 3, 1, 1)
    # out[t] = x[t-2] + 10 x[t-1] + 100 x[t], with x[-1] = x[-2] = x[0].
    assert conv(x).flatten().tolist() == [111.0, 211.0, 321.0]


@pytest.mark.parametrize("stride", [(1, 1, 1), (2, 2, 2), (1, 2, 2)])
def test_causal_conv_cpu_path_equals_conv3d(stride: tuple[int, int, int]) -> None:
    """On the CPU a batch of one runs as a 2D conv with the temporal taps stacked as channels: forward
    and gradients must equal ``nn.Conv3d`` on the same padded input (the folded form directly, too,
    for a batch of two, which ``forward`` leaves to conv3d)."""
    conv = CausalConv3d(3, 5, stride=stride)
    two = torch.randn(2, 3, 11, 8, 12)
    torch.testing.assert_close(conv._conv_as_2d(two), conv.conv(two), rtol=1e-5, atol=1e-5)
    x = torch.randn(1, 3, 9, 8, 12, requires_grad=True)
    y = conv(x)
    padded = torch.cat([x[:, :, :1].expand(-1, -1, 2, -1, -1), x], dim=2)
    ref = conv.conv(padded)  # nn.Conv3d itself
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
    g = torch.randn_like(ref)
    grads = torch.autograd.grad((y * g).sum(), [x, conv.conv.weight, conv.conv.bias])
    grads_ref = torch.autograd.grad((ref * g).sum(), [x, conv.conv.weight, conv.conv.bias])
    for a, b in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_encoder_is_causal_exactly(vae: VAE) -> None:
    """Latent frame i sees input frames <= 4i: changing frame 5 leaves latent frames 0, 1 bit-identical."""
    x = torch.randn(1, 3, 9, 16, 16)
    x2 = x.clone()
    x2[:, :, 5] += 1.0
    with torch.no_grad():
        a, b = vae.encode(x), vae.encode(x2)
    for m in ("mean", "logvar"):
        assert torch.equal(getattr(a, m)[:, :, :2], getattr(b, m)[:, :, :2])
    assert not torch.equal(a.mean[:, :, 2], b.mean[:, :, 2])  # the change is seen where it should be


def test_decoder_is_causal_exactly(vae: VAE) -> None:
    """Latent frame 2 decodes into frames 5..8: changing it leaves frames 0..4 bit-identical."""
    z = torch.randn(1, 16, 3, 2, 2)
    z2 = z.clone()
    z2[:, :, 2] += 1.0
    with torch.no_grad():
        a, b = vae.decode(z), vae.decode(z2)
    assert torch.equal(a[:, :, :5], b[:, :, :5])
    assert not torch.equal(a[:, :, 5:], b[:, :, 5:])


def test_image_is_a_one_frame_video(vae: VAE) -> None:
    """The same weights encode an image (T=1) exactly like the first frame of a video that starts with it."""
    video = torch.randn(2, 3, 9, 16, 16)
    with torch.no_grad():
        image_latent = vae.encode(video[:, :, :1]).mean
        video_latent = vae.encode(video).mean
        image_recon = vae.decode(image_latent)
        video_recon = vae.decode(video_latent)
    assert image_latent.shape == (2, 16, 1, 2, 2)
    # Bit-identical on this CPU build; the 1e-6 slack covers conv kernels that block differently by T.
    torch.testing.assert_close(image_latent, video_latent[:, :, :1], rtol=0, atol=1e-6)
    torch.testing.assert_close(image_recon, video_recon[:, :, :1], rtol=0, atol=1e-6)


def test_kl_of_standard_normal_posterior_is_zero() -> None:
    zeros = torch.zeros(2, 4, 3, 2, 2)
    assert torch.equal(DiagonalGaussian(zeros, zeros).kl(), torch.zeros(2))
    # Closed form for mean=1, logvar=0: 0.5 per element.
    assert DiagonalGaussian(torch.ones(1, 2, 1, 1, 1), torch.zeros(1, 2, 1, 1, 1)).kl().item() == 1.0


def test_perceptual_distance() -> None:
    lpips = PerceptualDistance()
    x = torch.rand(1, 3, 2, 16, 16) * 2 - 1
    assert lpips(x, x).item() == 0.0
    y = (x + 0.3 * torch.randn_like(x)).requires_grad_()
    d = lpips(x, y)
    assert d.item() > 0
    d.backward()
    assert y.grad is not None and y.grad.abs().sum() > 0
    assert all(p.grad is None for p in lpips.parameters())  # frozen features
    assert torch.equal(PerceptualDistance().layers[0].weight, lpips.layers[0].weight)  # fixed seed


def test_full_loss_with_perceptual_and_adversarial() -> None:
    model = VAE(VAEConfig.tiny())
    disc = PatchDiscriminator3d()
    x = torch.rand(2, 3, 5, 16, 16) * 2 - 1
    recon, posterior = model(x)
    assert disc(x).shape == (2, 1, 5, 4, 4)
    out = vae_loss(x, recon, posterior, 1e-3, perceptual=PerceptualDistance(), adversarial=disc)
    assert out.perceptual is not None and out.adversarial is not None
    expected = out.l1 + 1e-3 * out.kl + out.perceptual + 0.1 * out.adversarial
    torch.testing.assert_close(out.total, expected)
    out.total.backward()
    assert all(p.grad is not None for p in model.parameters())
    d_loss = discriminator_hinge_loss(disc, x, recon)
    assert d_loss.item() >= 0
    d_loss.backward()
    assert all(p.grad is not None for p in disc.parameters())


def _moving_gradient(b: int = 2, t: int = 9, size: int = 16) -> torch.Tensor:
    """A diagonal colour gradient that shifts 1 pixel a frame: [b, 3, t, size, size] in [-1, 1]."""
    ramp = torch.arange(size, dtype=torch.float32)
    frames = []
    for f in range(t):
        u = torch.sin((ramp[None, :] + ramp[:, None] + 2 * f) * 0.35)  # [H, W]
        v = torch.cos((ramp[None, :] - f) * 0.3).expand(size, size)
        frames.append(torch.stack([u, v, 0.5 * (u - v)]))  # [3, H, W]
    video = torch.stack(frames, dim=1)  # [3, T, H, W]
    return torch.stack([video, -video.flip(-1)][:b])


def test_tiny_preset_learns_to_reconstruct() -> None:
    """300 Adam steps on a moving gradient cut L1 reconstruction loss below 30 % (seed 0: 0.61 -> 0.07)."""
    torch.manual_seed(0)
    model = VAE(VAEConfig.tiny())
    x = _moving_gradient()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        start = (model(x, sample=False)[0] - x).abs().mean().item()
    for _ in range(300):
        recon, posterior = model(x, generator=gen)
        loss = vae_loss(x, recon, posterior, kl_weight=1e-4).total
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        end = (model(x, sample=False)[0] - x).abs().mean().item()
    assert end < 0.3 * start, (start, end)
