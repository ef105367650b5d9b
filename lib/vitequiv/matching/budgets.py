"""Perturbation budgets: balls around the source that the perturbation is projected back into."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .. import metrics
from ..tensors import image_shape
from ._util import _norms, _per_pair, _positive

PSNR_40_L2 = math.sqrt(1e-4)  # root-mean-square pixel change of PSNR 40 dB, in [0, 1] units


class Budget:
    """A ball around the source that the perturbation is projected back into after every step."""

    eps_255: float

    def __post_init__(self) -> None:
        _positive("eps_255", self.eps_255)

    def project(self, delta: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


@dataclass(frozen=True)
class LinfBall(Budget):
    """max |dx| <= eps_255 / 255 for every pixel value."""

    eps_255: float

    def project(self, delta: torch.Tensor) -> torch.Tensor:
        eps = self.eps_255 / metrics.LEVELS
        return delta.clamp(-eps, eps)  # (B, 3, H, W)


@dataclass(frozen=True)
class L2Ball(Budget):
    """||dx||_2 over all 3*H*W values <= eps_255 / 255."""

    eps_255: float

    @classmethod
    def from_psnr(cls, psnr_db: float, shape: tuple[int, ...]) -> L2Ball:
        """The ball whose surface has PSNR ``psnr_db`` against the source, for one image of ``shape`` (3, H, W)
        (a batch shape is refused: the radius is per image)."""
        return cls(math.sqrt(math.prod(image_shape(shape, "shape")) * 10 ** (-psnr_db / 10)) * metrics.LEVELS)

    def project(self, delta: torch.Tensor) -> torch.Tensor:
        eps = self.eps_255 / metrics.LEVELS
        return delta * _per_pair((eps / _norms(delta).clamp_min(1e-12)).clamp(max=1.0))  # (B, 3, H, W)
