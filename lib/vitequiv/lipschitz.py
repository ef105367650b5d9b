"""Directional Lipschitz estimates L(x, v, eps) = ||f(x + eps v) - f(x)|| / eps and the exact ||J v|| they approach.

As the same group defines it: v is a unit pixel direction (we normalize whatever is passed), eps sweeps from
1e-1 down to tiny values. For small eps the estimate converges to the directional derivative ||J v|| until
floating-point rounding takes over: in float32, x + eps v rounds back to x once eps is below ~1e-7 and the
estimate collapses to 0 (or blows up on rounding noise). ``dtype=torch.float64`` pushes that limit to ~1e-15.

Directions of interest: the top right-singular vectors (L = s_i, the largest stretch), null-space directions
(L ~ 0 to first order), and random Gaussian directions (nearly null at 224 px: their max underestimates the
local Lipschitz constant s_max badly, which is why sampling-based estimates such as CLEVER need care).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from .jacobians import Spectrum, jvp, model_input
from .models import embed_batched
from .precision import float32_only
from .tensors import Value, as_count, as_direction, as_directions, as_lengths, as_positive, image_shape

DEFAULT_EPS = torch.logspace(-1, -12, 23, dtype=torch.float64)  # 1e-1 ... 1e-12, half-decade steps


def unit(v: Tensor) -> Tensor:
    """``v`` scaled to unit L2 norm over all its pixels (one direction), or per row for a batch (n, 3, H, W).

    A zero or non-finite direction has no unit vector: ValueError.
    """
    norms = v.flatten(1).norm(dim=1) if v.dim() == 4 else v.norm().reshape(1)  # (n,) or (1,)
    if not torch.isfinite(norms).all() or (norms == 0).any():
        bad = int(torch.nonzero(~torch.isfinite(norms) | (norms == 0))[0])
        raise ValueError(f"direction {bad} has norm {float(norms[bad]):g}: a direction must be finite and non-zero")
    return v / norms.view(-1, 1, 1, 1) if v.dim() == 4 else v / norms[0]


@float32_only
def directional_lipschitz(
    model, x: Value, v: Value, eps: Sequence[float] | Tensor | None = None, *,
    dtype: torch.dtype | None = None, batch_size: int = 32,
) -> Tensor:
    """L(x, v, eps) = ||f(x + eps v) - f(x)|| / eps for each eps (default :data:`DEFAULT_EPS`), v normalized.

    ``x`` one image (1, 3, H, W) or (3, H, W) in [0, 1], ``v`` a direction (3, H, W) (see
    :func:`vitequiv.tensors.as_direction`); tensors or NumPy arrays of any float dtype. All eps go through one
    batched forward (in chunks of ``batch_size``) together with x itself. ``dtype`` evaluates a cast copy of the
    model (e.g. float64), else the model's own dtype. No clamping to [0, 1]: this probes f, not images.
    Returns (len(eps),) in the computation dtype.
    """
    batch_size = as_count(batch_size, "batch_size")
    model, x = model_input(model, x, dtype)
    v = as_direction(v, "v", like=x)  # (3, H, W)
    eps = as_lengths(DEFAULT_EPS if eps is None else eps, "eps", dtype=x.dtype, device=x.device)  # (E,)
    return changes_along(model, x, v, eps, batch_size).norm(dim=1) / eps


@float32_only
def changes_along(model, x: Tensor, v: Tensor, ts: Tensor, batch_size: int = 32) -> Tensor:
    """f(x + t v / ||v||) - f(x) for each step length t in ``ts`` (T,): (T, D), one batched pass with x itself.

    x (1, 3, H, W) and ``ts`` in the computation dtype; no clamping to [0, 1] (this probes f, not images).
    """
    v = unit(v.to(x.dtype)).reshape(x.shape)
    out = embed_batched(model, torch.cat([x, x + ts.view(-1, 1, 1, 1) * v]), batch_size)  # (1 + T, D)
    return out[1:] - out[:1]


def log_interp(at: float, xs: Sequence[float] | Tensor, ys: Sequence[float] | Tensor) -> float:
    """y at ``at``, interpolated linearly in log x between measured points (xs > 0 in any order)."""
    xs, ys = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    order = np.argsort(xs)
    return float(np.interp(np.log(at), np.log(xs[order]), ys[order]))


def breakdown_eps(eps: Sequence[float], L: Sequence[float], exact: float, tol: float = 0.1) -> float:
    """Where rounding takes over: scanning eps downward, the first eps at which L leaves ``exact`` (= ||J v||) by
    more than ``tol`` (relative) after having agreed with it. NaN if L never comes within ``tol``; 0.0 if, once
    there, it never leaves within the sweep.
    """
    eps, L = np.asarray(eps, dtype=float), np.asarray(L, dtype=float)
    order = np.argsort(-eps)  # descending eps
    rel = np.abs(L[order] - exact) / exact
    good = np.flatnonzero(rel <= tol)
    if len(good) == 0:
        return float("nan")
    bad = np.flatnonzero((rel > tol) & (np.arange(len(rel)) > good[0]))
    return float(eps[order][bad[0]]) if len(bad) else 0.0


@float32_only
def directional_derivative(model, x: Value, v: Value, *, dtype: torch.dtype | None = None) -> Tensor:
    """||J v|| for the unit direction v / ||v||: the eps -> 0 limit of :func:`directional_lipschitz` (forward mode)."""
    model, x = model_input(model, x, dtype)
    return jvp(model, x, unit(as_direction(v, "v", like=x))).norm()


# ---------------------------------------------------------------------------------------------- directions


def random_directions(n: int, shape: Sequence[int], *, seed: int = 0, dtype: torch.dtype = torch.float32,
                      device: torch.device | str = "cpu") -> Tensor:
    """``n`` independent Gaussian unit directions (n, *shape), reproducible from ``seed``; ``shape`` is per image,
    (3, H, W) (a batch shape is refused)."""
    n, shape = as_count(n, "n"), image_shape(shape)
    gen = torch.Generator(device=device).manual_seed(seed)
    return unit(torch.randn(n, *shape, generator=gen, dtype=dtype, device=device))


def top_directions(spectrum: Spectrum, n: int) -> Tensor:
    """The top ``n`` right singular vectors (n, 3, H, W): the directions the embedding is most sensitive to."""
    n = as_count(n, "n")
    if n > len(spectrum.V):
        raise ValueError(f"n={n} but the spectrum holds {len(spectrum.V)} singular vectors")
    return spectrum.V[:n].reshape(n, *spectrum.input_shape)


def null_directions(spectrum: Spectrum, n: int, *, seed: int = 0) -> Tensor:
    """``n`` random unit directions (n, 3, H, W) in the null space (approximately so for a top-k spectrum)."""
    v = random_directions(n, spectrum.input_shape, seed=seed, dtype=spectrum.V.dtype, device=spectrum.V.device)
    return unit(spectrum.project_null(v))


@float32_only
def sampled_lipschitz(
    model, x: Value, directions: Value, eps: float = 1e-2, *, dtype: torch.dtype | None = None,
    batch_size: int = 32,
) -> Tensor:
    """L(x, v, eps) for each row v of ``directions`` (n, 3, H, W), batched: (n,)."""
    eps = as_positive(eps, "eps")
    batch_size = as_count(batch_size, "batch_size")
    model, x = model_input(model, x, dtype)
    directions = as_directions(directions, "directions", like=x)  # (n, 3, H, W)
    f0 = embed_batched(model, x, 1)  # (1, D)
    out = embed_batched(model, x + eps * unit(directions), batch_size) - f0  # (n, D)
    return out.norm(dim=1) / eps


@float32_only
def sampled_lipschitz_max(
    model, x: Tensor, n_random: int = 64, eps: float = 1e-2, *, seed: int = 0,
    dtype: torch.dtype | None = None, batch_size: int = 32,
) -> float:
    """Max of L(x, v, eps) over ``n_random`` random Gaussian unit directions: a local Lipschitz estimate.

    A lower bound on the local constant s_max = ||J||_2 (up to O(eps)); a loose one in high dimension, since
    random directions barely touch the D-dimensional normal space (compare with ``top_directions``).
    """
    n_random = as_count(n_random, "n_random")
    _, x = model_input(model, x, dtype)
    dirs = random_directions(n_random, x.shape[1:], seed=seed, dtype=x.dtype, device=x.device)
    return float(sampled_lipschitz(model, x, dirs, eps, dtype=dtype, batch_size=batch_size).max())
