"""Small checks and per-pair tensor helpers that the step rules, budgets and search share."""
from __future__ import annotations

import math
import numbers

import torch


def _positive(name: str, value, *, integer: bool = False, allow_zero: bool = False) -> None:
    """Raise a ValueError/TypeError naming ``name`` unless ``value`` is a finite positive number (or int)."""
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind):
        raise TypeError(f"{name} must be {'an integer' if integer else 'a number'}, got {value!r}")
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'} and finite, got {value!r}")


def _per_pair(v: torch.Tensor) -> torch.Tensor:
    return v.view(-1, 1, 1, 1)  # (B,) -> (B, 1, 1, 1), broadcasts over an image batch


def _norms(v: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(v.flatten(1), dim=1)  # (B,) Euclidean norm of each pair's tensor
