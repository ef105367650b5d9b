"""Per-pixel metrics in which a step rule may measure a change to an image.

A metric is ||dx||_M = || s dx ||_p: per-pixel, per-channel scales s = sqrt(w) from the source (none: plain) and
the norm's order p. :class:`~vitequiv.matching.MinNorm` measures its radius and steps in it and descends along
the steepest direction, so the change goes where the metric says it costs least.
"""
from __future__ import annotations

from dataclasses import dataclass

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


@dataclass(frozen=True)
class PixelMetric:
    """||v||_M = || s v ||_p over the 3HW values of each pair's change: s = sqrt(``weights``) (None: 1) and ``p``
    the norm's order (2: Euclidean; a larger p charges the largest changes most, towards the max-norm)."""

    weights: torch.Tensor | None  # (m, 3, H, W)
    p: float = 2.0

    def norm(self, v: torch.Tensor) -> torch.Tensor:
        """(m,) the size of each pair's change v (m, 3, H, W) in this metric."""
        scaled = v if self.weights is None else v * self.weights.sqrt()  # (m, 3, H, W)
        return torch.linalg.vector_norm(scaled.flatten(1), ord=self.p, dim=1).clamp_min(1e-30)  # (m,)

    def steepest(self, grad: torch.Tensor) -> torch.Tensor:
        """The direction (m, 3, H, W) of steepest ascent in this metric, up to its length per pair: M^-1 grad for
        p = 2; for other p, sign(g_z) |g_z|^(q - 1) / s with g_z = grad / s (q = p / (p - 1), the dual order)."""
        if self.p == 2:
            return grad if self.weights is None else grad / self.weights
        scale = None if self.weights is None else self.weights.sqrt()  # (m, 3, H, W)
        g = grad if scale is None else grad / scale
        g = g.sign() * g.abs().pow(1 / (self.p - 1))  # q - 1 = 1 / (p - 1)
        return g if scale is None else g / scale

    def dual(self, grad: torch.Tensor) -> torch.Tensor:
        """(m,) the dual norm of each pair's gradient: the first-order change of the loss per unit of this metric."""
        if self.p == 2:
            return self.norm(self.steepest(grad))
        g = grad if self.weights is None else grad / self.weights.sqrt()  # (m, 3, H, W)
        return torch.linalg.vector_norm(g.flatten(1), ord=self.p / (self.p - 1), dim=1).clamp_min(1e-30)
