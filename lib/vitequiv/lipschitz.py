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

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from .jacobians import Spectrum, cast_model, jvp, model_input
from .models import embed_batched
from .precision import float32_only
from .tensors import Value, as_count, as_direction, as_directions, as_lengths, as_positive, image_shape

if TYPE_CHECKING:
    import pandas as pd

    from .matching import MatchResult

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


def directions_by_kind(spectrum: Spectrum, matching: Tensor, n_top: int, n_random: int, *,
                       seed: int = 0) -> dict[str, Tensor]:
    """The four kinds of directions compared, each (n, 3, H, W): the top ``n_top`` singular ones (at most as
    many as the spectrum holds), the ``matching`` ones given (unit perturbations of a matching run), and
    ``n_random`` random and ``n_random`` null-space ones drawn from ``seed``."""
    return {"top singular": top_directions(spectrum, min(n_top, len(spectrum.V))), "matching": matching,
            "random": random_directions(n_random, spectrum.input_shape, seed=seed, device=matching.device),
            "null space": null_directions(spectrum, n_random, seed=seed)}


# ---------------------------------------------------------------------------------------------- tables


def sensitivity_table(spectra: Mapping[str, Spectrum], match: MatchResult) -> pd.DataFrame:
    """One row per photo: its Jacobian's rank and s_max, and the cosine to the target and the L2 size of the
    perturbation its matching run (``match``, one pair per photo in the same order) reached."""
    import pandas as pd

    return pd.DataFrame({"photo": list(spectra), "rank": [s.rank() for s in spectra.values()],
                         "s_max": [float(s.s[0]) for s in spectra.values()],
                         "match cosine to target": match.final["cosine"], "match L2 (1/255)": match.final["l2_255"]})


def eps_sweep(model, x: Tensor, directions: Mapping[str, Tensor], jacobian: Tensor, eps: Tensor) -> pd.DataFrame:
    """L(x, v, eps) of one image x (1, 3, H, W) along each named direction (3, H, W) for every eps, in float32
    (the model as given) and float64 (a cast copy): columns direction, dtype, eps, L and the exact ||J v|| from
    ``jacobian`` (D, 3HW), the eps -> 0 limit."""
    import pandas as pd

    models = {"float32": model, "float64": cast_model(model, torch.float64)}
    rows = []
    for kind, v in directions.items():
        jv = float((jacobian.double() @ v.flatten().double()).norm())
        for dtype, dtype_model in models.items():
            L = directional_lipschitz(dtype_model, x, v, eps)  # (E,), x cast to the model's dtype
            rows += [{"direction": kind, "dtype": dtype, "eps": float(e), "L": float(estimate), "||Jv||": jv}
                     for e, estimate in zip(eps, L)]
    return pd.DataFrame(rows)


def breakdown_table(sweep: pd.DataFrame, at_eps: float) -> pd.DataFrame:
    """Per direction of an :func:`eps_sweep`: ||J v||, and per dtype L at ``at_eps`` (interpolated in log eps)
    and the :func:`breakdown_eps` where L leaves ||J v|| by more than 10 %."""
    import pandas as pd

    rows = []
    for kind, group in sweep.groupby("direction", sort=False):
        jv = group["||Jv||"].iloc[0]
        row = {"direction": kind, "||Jv||": jv}
        for dtype in ("float32", "float64"):
            d = group[group.dtype == dtype].reset_index(drop=True)
            row[f"L at eps={at_eps:g} ({dtype})"] = log_interp(at_eps, d.eps, d.L)
            row[f"breakdown eps ({dtype})"] = breakdown_eps(d.eps, d.L, jv)
        rows.append(row)
    return pd.DataFrame(rows)


def breakdown_decades(breakdown: pd.DataFrame, kind: str, floor: float) -> tuple[float, float, float]:
    """For direction ``kind`` of a :func:`breakdown_table`: the float32 and float64 breakdown eps and how many
    decades apart they are, a breakdown of 0 (none within the sweep) counted as ``floor``, NaN (never within
    10 %) as 0 decades."""
    row = breakdown.set_index("direction").loc[kind]
    e32, e64 = row["breakdown eps (float32)"], row["breakdown eps (float64)"]
    return e32, e64, np.nan_to_num(np.log10(max(e32, floor) / max(e64, floor)))


def across_photos(
    model, images: Tensor, spectra: Mapping[str, Spectrum], matching: Tensor, eps: float, *, n_top: int,
    n_random: int, n_sampled: int, direction_seed: int, sample_seed: int, dtype: torch.dtype = torch.float64,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """L at one ``eps`` in ``dtype`` along each kind of :func:`directions_by_kind` of every photo (images
    (N, 3, H, W), ``spectra`` and unit ``matching`` directions (N, 3, H, W) in the same order), and each photo's
    s_max against the max over ``n_sampled`` random directions (:func:`sampled_lipschitz_max`).

    Returns (one row per direction: photo, direction, L) and (one row per photo: photo, s_max, the sampled max
    and their ratio).
    """
    import pandas as pd

    estimates, summary = [], []
    for i, (name, spectrum) in enumerate(spectra.items()):
        x = images[i:i + 1]  # (1, 3, H, W)
        for kind, dirs in directions_by_kind(spectrum, matching[i:i + 1], n_top, n_random,
                                             seed=direction_seed).items():
            L = sampled_lipschitz(model, x, dirs, eps, dtype=dtype)  # (n,)
            estimates += [{"photo": name, "direction": kind, "L": float(estimate)} for estimate in L]
        sampled = sampled_lipschitz_max(model, x, n_sampled, eps, seed=sample_seed, dtype=dtype)
        summary.append({"photo": name, "s_max": float(spectrum.s[0]), f"max over {n_sampled} random": sampled,
                        "s_max / sampled max": float(spectrum.s[0]) / sampled})
    return pd.DataFrame(estimates), pd.DataFrame(summary)


def photo_table(estimates: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """One row per photo of :func:`across_photos`: the median L per direction kind beside s_max and the sampled
    max."""
    medians = estimates.groupby(["photo", "direction"], sort=False).L.median().unstack()  # (photos, kinds)
    return medians.add_prefix("median L, ").reset_index().merge(summary, on="photo")


def relative_estimates(estimates: pd.DataFrame, kind: str, reference: str) -> pd.Series:
    """L of each ``kind`` direction of :func:`across_photos` over its photo's median L along ``reference``
    directions: how much less (or more) it stretches the embedding."""
    medians = estimates[estimates.direction == reference].groupby("photo").L.median()  # (photos,)
    chosen = estimates[estimates.direction == kind]
    return chosen.L / chosen.photo.map(medians)
