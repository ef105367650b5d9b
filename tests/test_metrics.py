"""Image metrics against hand computations."""
import math

import numpy as np
import torch

from vitequiv import metrics


def test_psnr_of_known_mse():
    x = torch.zeros(2, 3, 8, 8)
    y = torch.stack([torch.full((3, 8, 8), 0.1), torch.full((3, 8, 8), 0.01)])  # MSE 1e-2 and 1e-4
    assert torch.allclose(metrics.psnr(x, y), torch.tensor([20.0, 40.0]), atol=1e-4)
    assert math.isinf(metrics.psnr(x, x)[0].item())


def test_perturbation_norms_in_255_units():
    delta = torch.zeros(2, 3, 4, 4)
    delta[0, 1, 2, 3] = -3 / 255  # one value changed by three gray levels
    delta[1] = 1 / 255  # all 48 values up one gray level
    assert torch.allclose(metrics.linf_255(delta), torch.tensor([3.0, 1.0]))
    assert torch.allclose(metrics.l2_255(delta), torch.tensor([3.0, math.sqrt(48)]))
    assert torch.allclose(metrics.l1_255(delta), torch.tensor([3 / 48, 1.0]))


def test_ssim_identical_is_one_and_noise_lowers_it():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 16, 16, generator=gen)
    same = metrics.ssim(x, x)
    assert isinstance(same, np.ndarray) and same.shape == (2,)
    assert np.allclose(same, 1.0)
    noisy = (x + 0.2 * torch.randn(x.shape, generator=gen)).clamp(0, 1)
    assert (metrics.ssim(x, noisy) < 0.95).all()


def test_cosine_rows():
    a = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    b = torch.tensor([[0.0, 2.0], [2.0, 2.0]])
    assert torch.allclose(metrics.cosine(a, b), torch.tensor([0.0, 1.0]))


def test_quantize_8bit_rounds_to_gray_levels():
    x = torch.tensor([-0.1, 0.0, 0.31, 1 / 255 + 0.4 / 255, 1 / 255 + 0.6 / 255, 1.2])
    q = metrics.quantize_8bit(x)
    assert torch.allclose(q * 255, torch.tensor([0.0, 0.0, 79.0, 1.0, 2.0, 255.0]))
    assert torch.equal(metrics.quantize_8bit(q), q)
    y = torch.rand(1000)
    assert (metrics.quantize_8bit(y) - y).abs().max() <= 0.5 / 255 + 1e-7
