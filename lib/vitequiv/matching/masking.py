"""Per-pixel metrics in which a step rule may measure a change to an image."""
from __future__ import annotations

import torch


def perceptual_weights(x0: torch.Tensor, *, window: int = 7, psnr_db: float = 40.0, ssim: float = 0.98) -> torch.Tensor:
    """Per-pixel weights m (B, 3, H, W) of the metric ||dx||_m^2 = sum m dx^2 in which :class:`MinNorm` can measure
    a change: the mean of a PSNR term and an SSIM term, each normalized to its budget.

    SSIM compares local contrast: a change of size t in a window of the source with standard deviation s costs
    about t^2 / (2 s^2 + C2) of SSIM (C2 = 0.03^2, scikit-image's constant), so flat regions are expensive and
    textured ones cheap; PSNR charges every pixel alike. With m = (w_ssim / (1 - ssim) + 1 / mse) / 2, where
    mse = 10^(-psnr_db / 10), a change with ||dx||_m^2 = N (N = 3HW) sits at about both budgets on average.
    """
    pad = window // 2
    padded = torch.nn.functional.pad(x0, (pad, pad, pad, pad), mode="reflect")  # (B, 3, H + 2p, W + 2p)
    mean = torch.nn.functional.avg_pool2d(padded, window, stride=1)  # (B, 3, H, W)
    var = (torch.nn.functional.avg_pool2d(padded * padded, window, stride=1) - mean * mean).clamp_min(0)
    ssim_cost = 1 / (2 * var + 0.03**2)  # (B, 3, H, W)
    return (ssim_cost / (1 - ssim) + 10 ** (psnr_db / 10)) / 2
