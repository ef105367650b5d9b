"""How linear is the embedding locally, and how far can pixels move while the embedding stays put?

- :func:`linearization_profile`: along a unit direction v, for a log-spaced range of step lengths t, the change
  ||f(x + t v) - f(x)|| and the error of the first-order prediction ||f(x + t v) - f(x) - t J v||;
  :meth:`LinearityProfile.radius` is the largest t for which the relative error stays below a tolerance.
- :func:`direction_profiles`: that profile along the three kinds of direction (top singular, null, random), and
  :func:`radius_table` the table of their ||J v||, linear radii and changes.
- :func:`null_space_walk`: many small pixel steps, each projected onto the null space of the *current*
  Jacobian (re-linearized every few steps), so the picture changes while the embedding barely does;
  :func:`walk_table` lists the checkpoints of several walks.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from . import metrics
from .jacobians import Spectrum, jacobian, jvp, model_input, spectrum, top_spectrum
from .lipschitz import changes_along, log_interp, null_directions, random_directions, top_directions, unit
from .precision import float32_only
from .tensors import Value, as_count, as_direction, as_floats, as_image, as_lengths, as_positive, model_device

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_TS = torch.logspace(-3, 2, 26, dtype=torch.float64)  # pixel-space L2 step lengths 1e-3 ... 1e2


# ---------------------------------------------------------------------------------------------- linearization error


@dataclass
class LinearityProfile:
    """f along x + t v for unit v: change and first-order error per t (all (T,) tensors on the CPU)."""

    ts: Tensor  # (T,) step lengths, ascending
    change: Tensor  # ||f(x + t v) - f(x)||
    error: Tensor  # ||f(x + t v) - (f(x) + t J v)||
    jv_norm: float  # ||J v||

    @property
    def relative_error(self) -> Tensor:
        """error / change: 0 means the linearization predicts the change exactly (0 where both vanish)."""
        return torch.where(self.change > 0, self.error / self.change, torch.zeros_like(self.error))

    def radius(self, tol: float = 0.1) -> float:
        """Largest t with relative error <= ``tol`` from the first t where it is, through every t in between.

        Leading points above ``tol`` (tiny t, where rounding swamps the change) are skipped; 0.0 if no t qualifies,
        ts[-1] (a lower bound) if all do.
        """
        ok = (self.relative_error <= tol).tolist()
        if True not in ok:
            return 0.0
        first = ok.index(True)
        last = first
        while last + 1 < len(ok) and ok[last + 1]:
            last += 1
        return float(self.ts[last])

    def change_at(self, t: float) -> float:
        """||f(x + t v) - f(x)|| at step length t, interpolated linearly in log t between the measured steps."""
        return log_interp(t, self.ts, self.change)


@float32_only
def linearization_profile(
    model, x: Value, v: Value, ts: Tensor | None = None, *, jac: Tensor | None = None,
    dtype: torch.dtype | None = None, batch_size: int = 32,
) -> LinearityProfile:
    """Change and linearization error of f along the unit direction v / ||v|| for each t in ``ts`` (each > 0).

    ``x`` one image in [0, 1], ``v`` a direction (3, H, W) (tensors or NumPy arrays, any float dtype; see
    :mod:`vitequiv.tensors`). J v comes from ``jac`` (a (D, P) Jacobian) when given, else from one forward-mode
    product. All t go through batched forwards with x itself. No clamping to [0, 1]: this probes the function,
    not valid images.
    """
    batch_size = as_count(batch_size, "batch_size")
    model, x = model_input(model, x, dtype)
    ts = as_lengths(DEFAULT_TS if ts is None else ts, "ts", dtype=x.dtype, device=x.device).sort().values  # (T,)
    v = unit(as_direction(v, "v", like=x))  # (3, H, W)
    if jac is not None:
        jac = as_floats(jac, "jac", like=x)
        if jac.dim() != 2 or jac.shape[1] != v.numel():
            raise ValueError(f"jac must be the Jacobian (D, {v.numel()}) at x, got shape {tuple(jac.shape)}")
    jv = jvp(model, x, v) if jac is None else jac @ v.flatten()  # (D,)
    delta = changes_along(model, x, v, ts, batch_size)  # (T, D)
    error = (delta - ts[:, None] * jv).norm(dim=1)
    return LinearityProfile(ts.cpu(), delta.norm(dim=1).cpu(), error.cpu(), float(jv.norm()))


@float32_only
def linear_region_radius(model, x: Tensor, v: Tensor, tol: float = 0.1, ts: Tensor | None = None, **kw) -> float:
    """Largest step t along unit v for which the relative linearization error stays below ``tol`` (see radius)."""
    return linearization_profile(model, x, v, ts, **kw).radius(tol)


def direction_profiles(model, x: Tensor, spec: Spectrum, jac: Tensor, *, seed: int = 0) -> dict[str, LinearityProfile]:
    """Linearization profiles at one image ``x`` along a unit direction of each kind: the top right-singular vector
    of ``spec`` (the largest stretch), a random direction projected onto its null space, and a plain random one
    (both from ``seed``); J v from the Jacobian ``jac`` (D, P) at ``x``."""
    directions = {"top singular": top_directions(spec, 1)[0], "null space": null_directions(spec, 1, seed=seed)[0],
                  "random": random_directions(1, x.shape[1:], seed=seed, device=model_device(model))[0]}  # (3, H, W)
    return {kind: linearization_profile(model, x, v, jac=jac) for kind, v in directions.items()}


def radius_table(profiles: Mapping[str, LinearityProfile], tol: float = 0.1) -> pd.DataFrame:
    """One row per named direction: ||J v||, the linear radius at relative error ``tol`` (:meth:`radius`) and the
    embedding change at step lengths 1 and 10."""
    import pandas as pd

    return pd.DataFrame([{"direction": name, "||J v||": p.jv_norm,
                          f"linear radius (rel. error <= {tol})": p.radius(tol),
                          "change at t=1": p.change_at(1.0), "change at t=10": p.change_at(10.0)}
                         for name, p in profiles.items()])


# ---------------------------------------------------------------------------------------------- null-space walk


@dataclass
class Walk:
    """Checkpoints of a walk from x0: images and how far pixels and embedding have moved (tensors (C,) on CPU)."""

    steps: list[int]  # step index of each checkpoint (0 = start)
    images: Tensor  # (C, 3, H, W) in [0, 1]
    pixel_l2_255: Tensor  # ||x - x0||_2 over all 3HW values, in units of 1/255
    pixel_linf_255: Tensor  # max |x - x0| in units of 1/255
    pixel_l1_255: Tensor  # mean |x - x0| in units of 1/255 (the authors' "pixel L1 distance")
    psnr: Tensor  # dB, peak 1 (inf at the start)
    embed_l2: Tensor  # ||f(x) - f(x0)||_2
    embed_cos: Tensor  # cos(f(x), f(x0))
    embed_norm: float  # ||f(x0)||, to read embed_l2 as a fraction
    relinearizations: int


def _correct(model, x: Tensor, f0: Tensor, spec: Spectrum, steps: int, damping: float = 0.05) -> Tensor:
    """Damped Gauss-Newton steps x -= V^T diag(s / (s^2 + (damping s_max)^2)) U^T (f(x) - f0).

    A gradient step preconditioned by the current linearization: it undoes drift along the large singular
    directions in one step where plain gradient descent would crawl, while the damping keeps steps along
    tiny singular values (1 / s) from overshooting out of the linear region.
    """
    s = spec.s[:len(spec.V)]  # (r,) the singular values that have vectors
    gain = s / (s**2 + (damping * s[0]) ** 2)
    for _ in range(steps):
        with torch.no_grad():
            r = model.embed(x)[0] - f0  # (D,)
        x = (x - (((spec.U.T @ r) * gain) @ spec.V).view_as(x)).clamp(0, 1)
    return x


@float32_only
def null_space_walk(
    model, x: Tensor, *, toward: Tensor | None = None, n_steps: int = 40, step_size: float = 1.0,
    relinearize_every: int = 5, k: int | None = None, tol: float = 1e-2, project: bool = True,
    correct_steps: int = 0, checkpoint_every: int = 5, seed: int = 0, start: Spectrum | None = None,
) -> Walk:
    """Walk ``n_steps`` pixel steps of L2 length ``step_size`` from x, each projected onto the null space.

    Direction: a fixed random Gaussian direction (reproducible from ``seed``), or ``toward - x`` (re-read every
    step) to morph the picture into another image ``toward`` while the embedding stays near f(x0).
    Every ``relinearize_every`` steps the Jacobian is recomputed at the current point: in full when ``k`` is
    None (small models or images), else only its top-``k`` singular directions matrix-free
    (:func:`top_spectrum` to relative accuracy ``tol``: a rough normal space is enough here); the latter
    leaves the smaller normal directions in, so the step is only approximately null. ``project=False`` walks
    the raw direction: the control of the same pixel length. Steps are clamped to [0, 1]. ``correct_steps``
    damped Gauss-Newton steps after each step pull the embedding back toward f(x0) (one forward each).
    ``start``: the spectrum of the Jacobian at ``x``, where the caller has it already: the first linearization
    uses it instead of computing it again.
    ``x`` and ``toward`` are single images of one size in [0, 1] (tensors or NumPy arrays, any float dtype).
    """
    n_steps = as_count(n_steps, "n_steps", minimum=0)
    correct_steps = as_count(correct_steps, "correct_steps", minimum=0)
    relinearize_every = as_count(relinearize_every, "relinearize_every")
    checkpoint_every = as_count(checkpoint_every, "checkpoint_every")
    step_size = as_positive(step_size, "step_size")
    k = None if k is None else as_count(k, "k")
    model, x0 = model_input(model, x)
    x0 = x0.detach()
    if start is not None and (not isinstance(start, Spectrum) or start.num_pixels != x0[0].numel()):
        raise ValueError(f"start must be the Spectrum of the Jacobian at x ({x0[0].numel()} pixels), got "
                         f"{getattr(start, 'num_pixels', type(start).__name__)!r}")
    if toward is not None:
        toward = as_image(toward, "toward", device=x0.device, dtype=x0.dtype)
        if toward.shape != x0.shape:
            raise ValueError(f"toward must be an image of x's shape {tuple(x0.shape)}, got {tuple(toward.shape)}")
    x = x0.clone()
    with torch.no_grad():
        f0 = model.embed(x0)[0]  # (D,)
    gen = torch.Generator(device=x.device).manual_seed(seed)
    fixed = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)  # used when toward is None
    record = {"steps": [], "images": [], "f": []}

    def checkpoint(step: int) -> None:
        with torch.no_grad():
            record["f"].append(model.embed(x)[0])
        record["steps"].append(step)
        record["images"].append(x[0].cpu())

    checkpoint(0)
    spec, relinearizations = None, 0
    for step in range(1, n_steps + 1):
        if project and (step - 1) % relinearize_every == 0:
            if step == 1 and start is not None:
                spec = start
            elif k is None:
                spec = spectrum(jacobian(model, x), x.shape[1:])
            else:
                spec = top_spectrum(model, x, k, tol=tol, seed=seed)
            relinearizations += 1
        d = fixed if toward is None else toward - x
        if spec is not None:
            d = spec.project_null(d)
        length = min(step_size, float(d.norm()))  # toward: never overshoot what is left of the difference
        if length > 0:
            x = (x + length * unit(d)).clamp(0, 1)
        if spec is not None and correct_steps:
            x = _correct(model, x, f0, spec, correct_steps)
        if step % checkpoint_every == 0 or step == n_steps:
            checkpoint(step)

    images = torch.stack(record["images"])  # (C, 3, H, W)
    delta = images - x0.cpu()  # (C, 3, H, W)
    fs, f0 = torch.stack(record["f"]).cpu(), f0.cpu()  # (C, D), (D,)
    return Walk(
        steps=record["steps"], images=images, pixel_l2_255=metrics.l2_255(delta),
        pixel_linf_255=metrics.linf_255(delta), pixel_l1_255=metrics.l1_255(delta), psnr=metrics.psnr(images, x0.cpu()),
        embed_l2=(fs - f0).norm(dim=1), embed_cos=metrics.cosine(fs, f0.expand_as(fs)), embed_norm=float(f0.norm()),
        relinearizations=relinearizations,
    )


def walk_table(walks: Mapping[str, Walk]) -> pd.DataFrame:
    """Every checkpoint of each named walk: pixel L2 and L-inf distance to the start (1/255 units), PSNR, and the
    embedding's L2 distance (also relative to ||f(x0)||) and cosine to the start."""
    import pandas as pd

    return pd.concat([pd.DataFrame({"walk": name, "step": w.steps, "pixel L2 (1/255)": w.pixel_l2_255.numpy(),
                                    "pixel Linf (1/255)": w.pixel_linf_255.numpy(), "PSNR (dB)": w.psnr.numpy(),
                                    "embedding L2": w.embed_l2.numpy(),
                                    "embedding L2 / ||f(x0)||": (w.embed_l2 / w.embed_norm).numpy(),
                                    "cosine to start": w.embed_cos.numpy()})
                      for name, w in walks.items()])
