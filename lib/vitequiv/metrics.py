"""Image and embedding metrics, batched over the leading dimension B.

Conventions: images are (B, 3, H, W) floats in [0, 1]. Perturbation sizes are reported in 1/255 units (one
8-bit gray level), the unit adversarial-example papers quote budgets in. Every function returns a torch tensor
of shape (B,) on the input's device, except :func:`ssim` (through scikit-image) and :func:`cosine_matrix`,
which return NumPy arrays.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from skimage.metrics import structural_similarity

LEVELS = 255  # 8-bit gray levels above black


def psnr(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB, peak 1: 10 log10(1 / MSE). Identical images give +inf."""
    return psnr_from_mse((x - y).pow(2).flatten(1).mean(dim=1))  # (B,)


def psnr_from_mse(mse: torch.Tensor) -> torch.Tensor:
    """PSNR (dB, peak 1) from a mean squared pixel error (B,), for callers that already have it."""
    return -10 * torch.log10(mse)  # (B,)


def ssim(x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """Structural similarity (scikit-image, default 7x7 window, data_range 1, color channels), shape (B,)."""
    xs = x.detach().cpu().double().numpy()  # (B, 3, H, W)
    ys = y.detach().cpu().double().numpy()  # (B, 3, H, W)
    return np.array([structural_similarity(a, b, channel_axis=0, data_range=1.0) for a, b in zip(xs, ys)])


def linf_255(delta: torch.Tensor) -> torch.Tensor:
    """Largest absolute pixel change of a perturbation (B, 3, H, W), in 1/255 units."""
    return torch.linalg.vector_norm(delta.flatten(1), ord=float("inf"), dim=1) * LEVELS  # (B,)


def l2_255(delta: torch.Tensor) -> torch.Tensor:
    """Euclidean norm of a perturbation over all 3*H*W values, in 1/255 units."""
    return torch.linalg.vector_norm(delta.flatten(1), dim=1) * LEVELS  # (B,)


def l1_255(delta: torch.Tensor) -> torch.Tensor:
    """Mean absolute pixel change of a perturbation (the authors' "pixel L1 distance"), in 1/255 units."""
    flat = delta.flatten(1)  # (B, 3*H*W)
    return torch.linalg.vector_norm(flat, ord=1, dim=1) / flat.shape[1] * LEVELS  # (B,)


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of embeddings (B, D) row by row."""
    return F.cosine_similarity(a, b, dim=1)  # (B,)


def quantize_8bit(x: torch.Tensor) -> torch.Tensor:
    """Round images in [0, 1] to the nearest k/255, i.e. what saving them as 8-bit PNG keeps."""
    return torch.round(x.clamp(0, 1) * LEVELS) / LEVELS  # (B, 3, H, W)


def cosine_matrix(a: torch.Tensor, b: torch.Tensor | None = None) -> np.ndarray:
    """Cosine similarity of every row of ``a`` (N, D) with every row of ``b`` (M, D; default ``a``): (N, M) array."""
    b = a if b is None else b
    a, b = F.normalize(a.detach().double(), dim=1), F.normalize(b.detach().double(), dim=1)
    return (a @ b.T).cpu().numpy()  # (N, M)


# "Visually indistinguishable", fixed before any run: every verdict on imperceptibility in the suite uses these.
INDISTINGUISHABLE_PSNR = 40.0  # dB against the source
INDISTINGUISHABLE_SSIM = 0.98


def indistinguishable(psnr_db, ssim_value) -> np.ndarray:
    """(B,) bool: PSNR >= :data:`INDISTINGUISHABLE_PSNR` and SSIM >= :data:`INDISTINGUISHABLE_SSIM`."""
    return (np.asarray(psnr_db) >= INDISTINGUISHABLE_PSNR) & (np.asarray(ssim_value) >= INDISTINGUISHABLE_SSIM)
