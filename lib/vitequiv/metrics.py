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
# What people see (vitequiv.visibility), also fixed before any run. butteraugli's max-norm distance is in
# just-noticeable differences, and 1.0 is JPEG XL's "visually lossless" distance; it assumes pixels at 1:1 on an
# 80-nit sRGB display. ColorVideoVDP's JOD: 10 is no visible difference and 1 JOD less means 75 % of people prefer
# the reference, so 0.05 JOD is a preference of about 51 %, chance; on its display model standard_4k: a 30-inch
# 3840 x 2160 monitor, peak 200 cd/m^2, contrast 1000:1, 250 lux, seen from 0.747 m (twice its height, 75.4 px
# per degree), sRGB-encoded input.
INVISIBLE_BUTTERAUGLI = 1.0  # at or below: invisible
INVISIBLE_JOD = 9.95  # at or above: invisible


def indistinguishable(psnr_db, ssim_value) -> np.ndarray:
    """(B,) bool: PSNR >= :data:`INDISTINGUISHABLE_PSNR` and SSIM >= :data:`INDISTINGUISHABLE_SSIM`."""
    return (np.asarray(psnr_db) >= INDISTINGUISHABLE_PSNR) & (np.asarray(ssim_value) >= INDISTINGUISHABLE_SSIM)


def invisible_butteraugli(distance) -> np.ndarray:
    """(B,) bool: butteraugli max-norm distance <= :data:`INVISIBLE_BUTTERAUGLI` (NaN, not measured: False)."""
    return np.asarray(distance, dtype=float) <= INVISIBLE_BUTTERAUGLI


def invisible_jod(jod) -> np.ndarray:
    """(B,) bool: ColorVideoVDP JOD >= :data:`INVISIBLE_JOD`."""
    return np.asarray(jod, dtype=float) >= INVISIBLE_JOD
