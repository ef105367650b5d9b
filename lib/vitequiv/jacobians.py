"""The Jacobian J = d embed / d pixels of one image, its SVD, and the null / normal spaces it splits pixels into.

The paper's central object: for an embedding f: R^P -> R^D with P = 3HW >> D, the rows of J span at most D
directions (the local *normal space*); every pixel direction orthogonal to them (the *null space*, over 99 % of
the input space at 224 px) leaves the embedding unchanged to first order.

- :func:`jacobian`: the full (D, P) Jacobian by batched reverse mode (one forward, D/batch_size batched backwards),
  with its memory need checked before anything large is allocated.
- :class:`Spectrum`: singular values and vectors, obtained from the small Gram matrix J J^T (D x D) rather than
  an SVD of the D x P matrix; ranks, null-space fraction, and projectors that never build a P x P matrix.
- :func:`photo_spectra`: both for each of a set of photos, timed, with a table of their ranks.
- :func:`top_spectrum`: the top-k singular triplets matrix-free (block Krylov on J^T J with reverse-mode
  products only), for models whose full Jacobian is too large or too slow.
- :func:`jvp` / :func:`vjp`: single products J v and J^T u.

``model`` is anything with ``embed(x)`` mapping (B, 3, H, W) to (B, D) differentiably; :class:`LinearMap` is an
analytic example with known singular values, used by the tests.
"""
from __future__ import annotations

import copy
import math
import numbers
import time
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from . import jacobian_cache
from .precision import float32_only
from .tensors import Value, as_count, as_floats, as_image, model_device, model_dtype, model_hw

if TYPE_CHECKING:
    import pandas as pd

    from .images import ImageSet

RANK_RTOL = 1e-5  # numerical rank: singular values above RANK_RTOL * s_max (float32 Jacobian noise is ~1e-6)


class JacobianMemoryError(MemoryError):
    """The full Jacobian (plus its working memory) does not fit in the memory allowed for it."""


# ---------------------------------------------------------------------------------------------- helpers


def model_input(model, x: Value, dtype: torch.dtype | None = None, name: str = "x") -> tuple[object, Tensor]:
    """``(model, x)`` ready to compute: x one image (1, 3, H, W) in [0, 1] (from (3, H, W), NumPy or any float
    dtype) on the model's device, in ``dtype`` with a cast copy of the model, or else in the model's own dtype."""
    x = as_image(x, name, device=model_device(model), dtype=dtype or model_dtype(model), hw=model_hw(model))
    if dtype is not None and dtype != model_dtype(model):
        model = cast_model(model, dtype)
    return model, x


def cast_model(model, dtype: torch.dtype):
    """A copy of ``model`` computing in ``dtype`` (e.g. float64), the original untouched.

    An ``nn.Module`` is deep-copied and ``.to(dtype)``; any other object is deep-copied and its floating-point
    tensor attributes are cast (enough for plain objects such as :class:`LinearMap`).
    """
    twin = copy.deepcopy(model)
    if isinstance(twin, nn.Module):
        return twin.to(dtype)
    for name, value in vars(twin).items():
        if isinstance(value, Tensor) and value.is_floating_point():
            setattr(twin, name, value.to(dtype))
    return twin


def _embed_one(model):
    """f: (1, 3, H, W) -> (D,), the embedding of one image."""
    return lambda z: model.embed(z)[0]


def _cgroup_headroom() -> int | None:
    """Bytes the process's cgroup (v2, or v1) still allows, or None when no limit is set."""
    from pathlib import Path

    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit = Path(limit_file).read_text().strip()
            usage = int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 1 << 60:  # "max" or a huge number: no limit
            return max(int(limit) - usage, 0)
    return None


def _rlimit_headroom() -> int | None:
    """Bytes of address space the process may still map under RLIMIT_AS / RLIMIT_DATA, or None if unlimited."""
    import resource

    import psutil

    limits = [resource.getrlimit(r)[0] for r in (resource.RLIMIT_AS, resource.RLIMIT_DATA)]
    limits = [v for v in limits if v != resource.RLIM_INFINITY]
    if not limits:
        return None
    return max(min(limits) - psutil.Process().memory_info().vms, 0)


def available_memory(device: torch.device) -> int:
    """Bytes that can still be allocated on ``device``: free GPU memory; on the CPU the least of the OS's
    MemAvailable, what the process's cgroup still allows, and what its rlimits (address space, data) allow."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    import psutil

    limits = [psutil.virtual_memory().available, _cgroup_headroom(), _rlimit_headroom()]
    return min(v for v in limits if v is not None)


# ---------------------------------------------------------------------------------------------- products


@float32_only
def vjp(model, x: Tensor, u: Tensor) -> Tensor:
    """J^T u for cotangents ``u`` (D,) or (B, D): pixel-space vectors (3, H, W) or (B, 3, H, W)."""
    model, x = model_input(model, x)
    u = as_floats(u, "u", like=x)
    out, vjp_fn = torch.func.vjp(_embed_one(model), x)  # out: (D,)
    if u.dim() not in (1, 2) or u.shape[-1:] != out.shape or 0 in u.shape:
        raise ValueError(f"u must be cotangents ({len(out)},) or (B, {len(out)}) for embeddings of width {len(out)}, "
                         f"got shape {tuple(u.shape)}")
    if u.dim() == 1:
        return vjp_fn(u)[0][0]  # (3, H, W)
    return torch.func.vmap(vjp_fn)(u)[0][:, 0]  # (B, 3, H, W)


@float32_only
def jvp(model, x: Tensor, v: Tensor) -> Tensor:
    """J v for pixel directions ``v`` (3, H, W) or (B, 3, H, W): (D,) or (B, D). Forward mode, one pass.

    Runs under the MATH attention kernel: the fused CPU kernel has no forward-mode derivative.
    """
    model, x = model_input(model, x)
    v = as_floats(v, "v", like=x)
    if v.shape not in (x.shape[1:], (len(v), *x.shape[1:])):
        raise ValueError(f"v must be pixel directions {tuple(x.shape[1:])} or (B, {', '.join(map(str, x.shape[1:]))})"
                         f" for an image {tuple(x.shape)}, got {tuple(v.shape)}")
    f = _embed_one(model)
    with sdpa_kernel(SDPBackend.MATH):
        if v.dim() == 3:
            return torch.func.jvp(f, (x,), (v[None],))[1]  # (D,)
        return torch.func.vmap(lambda t: torch.func.jvp(f, (x,), (t[None],))[1])(v)  # (B, D)


# ---------------------------------------------------------------------------------------------- full Jacobian


def jacobian_bytes(D: int, P: int, batch_size: int, itemsize: int) -> int:
    """Memory the Jacobian needs beyond the model's own forward: J itself plus one batch of rows in flight."""
    return (D + batch_size) * P * itemsize


def _check_jacobian_memory(D: int, P: int, batch_size: int, x: Tensor, limit: int) -> None:
    need = jacobian_bytes(D, P, batch_size, x.element_size())
    if need > limit:
        raise JacobianMemoryError(
            f"The full Jacobian ({D} x {P} {x.dtype}) needs about {need / 2**20:,.0f} MiB but only "
            f"{limit / 2**20:,.0f} MiB are allowed. Use top_spectrum(model, x, k) (matrix-free top-k singular "
            "directions), a smaller batch_size, a smaller image, or float32 instead of float64."
        )


@float32_only
def jacobian(
    model, x: Tensor, *, batch_size: int = 8, dtype: torch.dtype | None = None, max_bytes: int | None = None,
    cache: bool | Literal["refresh"] = False,
) -> Tensor:
    """The (D, P) Jacobian of ``model.embed`` at one image ``x`` (1, 3, H, W), P = 3HW, rows = output dims.

    One forward, then D/batch_size batched backward passes (vmap over one-hot cotangents), each batch written
    into a preallocated result so that peak memory stays near the Jacobian's own size. Before the forward pass
    (when the model declares ``embed_dim``; else right after it) the need (:func:`jacobian_bytes`) is checked
    against ``max_bytes`` (default: :func:`available_memory` on x's device, which respects cgroup and rlimit
    limits) and a :class:`JacobianMemoryError` says what to do instead. ``x`` may also be (3, H, W), a NumPy array,
    or of any float dtype: it is computed in ``dtype`` (on a cast copy of the model), else in the model's dtype.

    ``cache=True`` reads the Jacobian from :mod:`vitequiv.jacobian_cache` (``data/cache/jacobians/``, keyed by the
    model's weights and code and the image's bytes) when an earlier call stored it, else computes and stores it;
    ``"refresh"`` always computes and stores (for a caller that times the computation). About 231 MB an entry at
    224 px; models that cannot be digested are computed as without a cache.
    """
    if not (isinstance(cache, bool) or (isinstance(cache, str) and cache == "refresh")):
        raise ValueError(f"cache must be False, True or 'refresh', got {cache!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if max_bytes is not None and (isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0):
        raise ValueError(f"max_bytes must be a non-negative integer or None, got {max_bytes!r}")
    model, x = model_input(model, x, dtype)
    entry = jacobian_cache.key(model, x) if cache else None
    stored = jacobian_cache.load(entry, x) if entry and cache is True else None
    if stored is not None:
        return stored
    J = _full_jacobian(model, x, batch_size, max_bytes)
    if entry:
        jacobian_cache.save(entry, J)
    return J


def _full_jacobian(model, x: Tensor, batch_size: int, max_bytes: int | None) -> Tensor:
    """:func:`jacobian`'s computation: memory check, one forward, batched backwards into a preallocated (D, P)."""
    limit = available_memory(x.device) if max_bytes is None else max_bytes
    P, width = x.numel(), getattr(model, "embed_dim", None)
    if isinstance(width, int):  # known before any forward pass: refuse at once
        _check_jacobian_memory(width, P, batch_size, x, limit)
    out, vjp_fn = torch.func.vjp(_embed_one(model), x)  # out: (D,)
    D = out.numel()
    _check_jacobian_memory(D, P, batch_size, x, limit)
    J = x.new_empty(D, P)
    eye = torch.eye(D, dtype=x.dtype, device=x.device)
    with warnings.catch_warnings():  # vmap loops over the fused attention backward; as fast as MATH in our runs
        warnings.filterwarnings("ignore", message="There is a performance drop")
        for start in range(0, D, batch_size):
            rows = eye[start:start + batch_size]  # (c, D)
            J[start:start + len(rows)] = torch.func.vmap(vjp_fn)(rows)[0].reshape(len(rows), P)
    return J


# ---------------------------------------------------------------------------------------------- spectrum


@dataclass
class Spectrum:
    """Singular values and vectors of a Jacobian J = U diag(s) V (rows of V are the right singular vectors).

    ``complete`` says whether ``s`` holds all min(D, P) singular values (from a full Jacobian) or only the top
    k (from :func:`top_spectrum`); ranks and the null fraction need a complete spectrum. Vectors are kept only
    for singular values above ``RANK_RTOL * s_max`` when built from a full Jacobian (the others are noise).
    """

    s: Tensor  # (k,) singular values, descending
    U: Tensor  # (D, r) left singular vectors (columns), r <= k
    V: Tensor  # (r, P) right singular vectors (rows, unit length)
    input_shape: tuple[int, ...]  # (3, H, W)
    complete: bool = True
    extra: dict = field(default_factory=dict)  # e.g. products used by the matrix-free solver

    @property
    def num_pixels(self) -> int:
        return math.prod(self.input_shape)

    def rank(self, rtol: float = RANK_RTOL) -> int:
        """Numerical rank: the number of singular values above ``rtol * s_max``."""
        self._need_complete("rank")
        return int((self.s > rtol * self.s[0]).sum())

    def entropy_rank(self, rtol: float = RANK_RTOL) -> float:
        """Effective rank of Roy & Vetterli (2007): exp(entropy of p), p_i = s_i / sum(s), over s > rtol * s_max.

        A real number between 1 and :meth:`rank`: how many directions carry the stretching, weighted by size.
        """
        self._need_complete("entropy_rank")
        s = self.s[self.s > rtol * self.s[0]].double()
        p = s / s.sum()
        return float(torch.exp(-(p * p.log()).sum()))

    def null_fraction(self, rtol: float = RANK_RTOL) -> float:
        """Fraction of pixel-space dimensions in the null space: 1 - rank / P."""
        return 1.0 - self.rank(rtol) / self.num_pixels

    def basis(self, k: int | None = None) -> Tensor:
        """The first ``k`` right singular vectors (k, P) (all kept ones by default): an orthonormal normal basis."""
        return self.V if k is None else self.V[:k]

    def project_normal(self, v: Tensor, k: int | None = None) -> Tensor:
        """P_normal v = V^T (V v): onto the top ``k`` right singular vectors. v is (..., 3, H, W) or (..., P)."""
        V = self.basis(k)
        flat = v.reshape(-1, V.shape[1]).to(V.dtype)  # (B, P)
        return ((flat @ V.T) @ V).to(v.dtype).reshape(v.shape)

    def project_null(self, v: Tensor, k: int | None = None) -> Tensor:
        """P_null v = v - P_normal v: the part of v that does not move the embedding to first order.

        With a complete spectrum this is the exact null space; with only the top-k directions removed it is
        "approximately null": the remaining normal directions with smaller singular values still act.
        """
        return v - self.project_normal(v, k)

    def _need_complete(self, what: str) -> None:
        if not self.complete:
            raise ValueError(f"{what} needs every singular value; this spectrum holds only the top {len(self.s)}. "
                             "Compute it from the full Jacobian: spectrum(jacobian(model, x), x.shape).")


def spectrum(J: Tensor, input_shape: tuple[int, ...], *, batch_size: int = 8192) -> Spectrum:
    """SVD of J (D, P) through the eigen-decomposition of its Gram matrix J J^T (D x D), in float64.

    J J^T = U diag(s^2) U^T and V = diag(1/s) U^T J. Cheap for P >> D (no D x P SVD), and exact enough: a float64
    Gram resolves singular values down to about sqrt(D * 1e-16) ~ 1e-7 of s_max, below float32 Jacobian noise.
    Batches of ``batch_size`` columns keep the float64 working copy small. ``J`` may be a NumPy array;
    ``input_shape`` is per image, (3, H, W) (or (P,)): a batch shape (1, 3, H, W) is refused.
    """
    J = as_floats(J, "J")
    if J.dim() != 2 or 0 in J.shape:
        raise ValueError(f"J must be a non-empty 2-D Jacobian (D, P), got shape {tuple(J.shape)}")
    input_shape = tuple(input_shape)
    if len(input_shape) == 4:
        raise ValueError(f"input_shape must be per image, (3, H, W), got the batch shape {input_shape}; pass "
                         "x.shape[1:]")
    if math.prod(input_shape) != J.shape[1]:
        raise ValueError(f"input_shape {tuple(input_shape)} holds {math.prod(input_shape)} pixels but J has "
                         f"{J.shape[1]} columns")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    D, P = J.shape
    G = J.new_zeros(D, D, dtype=torch.float64)
    for c in range(0, P, batch_size):
        block = J[:, c:c + batch_size].double()  # (D, p)
        G += block @ block.T
    lam, U = torch.linalg.eigh(G)  # ascending
    s = lam.flip(0).clamp_min(0).sqrt()  # (D,)
    U = U.flip(1)  # (D, D)
    keep = int((s > RANK_RTOL * s[0]).sum()) if s[0] > 0 else 0
    V = J.new_empty(keep, P)
    scale = U[:, :keep] / s[:keep]  # (D, r)
    for c in range(0, P, batch_size):
        V[:, c:c + batch_size] = (scale.T @ J[:, c:c + batch_size].double()).to(J.dtype)
    return Spectrum(s.to(J.dtype), U[:, :keep].to(J.dtype), V, tuple(input_shape))


def photo_spectra(
    model, photos: ImageSet, *, cache: bool | Literal["refresh"] = False,
) -> tuple[dict[str, Tensor], dict[str, Spectrum], pd.DataFrame]:
    """The full Jacobian (D, P) and its :class:`Spectrum` at each photo of ``photos``, and one table row per photo:
    pixels P, embedding D, numerical and entropy rank, null fraction, largest and smallest kept singular value and
    the seconds both took. ``cache`` as in :func:`jacobian` (``"refresh"`` times the computation and stores it)."""
    import pandas as pd

    jacobians, spectra, rows = {}, {}, []
    for name in photos.names:
        start = time.perf_counter()
        J = jacobians[name] = jacobian(model, photos[name], cache=cache)  # (D, P)
        s = spectra[name] = spectrum(J, photos[name].shape[1:])
        rows.append({"photo": name, "pixels P": s.num_pixels, "embedding D": J.shape[0], "rank": s.rank(),
                     "entropy rank": s.entropy_rank(), "null fraction": s.null_fraction(), "s_max": float(s.s[0]),
                     "s_min kept": float(s.s[s.rank() - 1]), "seconds": time.perf_counter() - start})
    return jacobians, spectra, pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------- matrix-free top-k


def _orthonormalize(Z: Tensor, Q: Tensor | None) -> Tensor:
    """Rows of Z (b, P) made orthonormal and orthogonal to the rows of Q (m, P) (two Gram-Schmidt passes)."""
    for _ in range(2):
        if Q is not None:
            Z = Z - (Z @ Q.T) @ Q
        Z = torch.linalg.qr(Z.T).Q.T
    return Z


@float32_only
def top_spectrum(
    model, x: Tensor, k: int = 16, *, batch_size: int = 4, tol: float = 1e-3, max_products: int | None = None,
    seed: int = 0,
) -> Spectrum:
    """Top-``k`` singular triplets of the Jacobian at ``x`` without forming it: block Krylov (Golub-Kahan) on J^T J.

    Starts from J^T Omega (a random output-space block, so the subspace lies in the row space from the outset),
    grows span{Q0, (J^T J) Q0, ...} by ``batch_size`` vectors (one block) per iteration, and reads singular values and
    vectors off the small matrix J Q^T by Rayleigh-Ritz (Ritz values approach the true ones from below). Stops
    once the top-k values change by less than ``tol`` (relative) in one iteration, or after ``max_products``
    Jacobian-vector products (default 2 D). Each iteration costs 2 * batch_size products.

    One forward of ``batch_size`` copies of x serves every product: J^T W is a backward through it, and J Q
    the derivative of J^T w with respect to w (the "double-vjp" trick, several times faster than forward mode
    here). That needs a twice-differentiable attention, so the MATH kernel is used. The model must treat
    batch elements independently (eval mode).

    ``k`` may not exceed min(D, P), the number of singular values the Jacobian has; when ``max_products`` runs
    out before ``k`` values are found, a ValueError says so rather than returning fewer.
    """
    for name, value in (("k", k), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if isinstance(tol, bool) or not isinstance(tol, numbers.Real) or not 0 < tol < 1:
        raise ValueError(f"tol must lie in (0, 1), got {tol!r}")
    if max_products is not None:
        as_count(max_products, "max_products")
    model, x = model_input(model, x)
    b = batch_size
    with sdpa_kernel(SDPBackend.MATH), torch.enable_grad():
        xb = x.detach().repeat(b, 1, 1, 1).requires_grad_(True)  # (b, 3, H, W)
        out = model.embed(xb)  # (b, D)
        w = torch.zeros_like(out, requires_grad=True)
        (g,) = torch.autograd.grad(out, xb, w, create_graph=True)  # row i: J^T w_i, linear in w

        def JT(W: Tensor) -> Tensor:  # (b, D) -> (b, P)
            return torch.autograd.grad(out, xb, W, retain_graph=True)[0].flatten(1)

        def J(Q: Tensor) -> Tensor:  # (b, P) -> (b, D)
            return torch.autograd.grad(g, w, Q.view_as(g), retain_graph=True)[0]

        D = out.shape[1]
        if k > min(D, x[0].numel()):
            raise ValueError(f"k={k} but the Jacobian ({D} x {x[0].numel()}) has only {min(D, x[0].numel())} singular "
                             "values; ask for at most that many")
        max_products = max_products or 2 * D
        gen = torch.Generator(device=x.device).manual_seed(seed)
        omega = torch.randn(b, D, generator=gen, device=x.device, dtype=x.dtype)
        Q = _orthonormalize(JT(omega), None)  # (b, P)
        Qs, JQs, prev, products = [], [], None, b
        while True:
            Qs.append(Q)
            JQs.append(J(Q))  # (b, D)
            products += b
            Ub, s, Vb = torch.linalg.svd(torch.cat(JQs).T.double(), full_matrices=False)  # J Q^T = Ub diag(s) Vb
            converged = prev is not None and len(s) >= k and ((s[:k] - prev) / s[:k]).abs().max() < tol
            if converged or products + 2 * b > max_products:
                break
            prev = s[:k] if len(s) >= k else None
            Q = _orthonormalize(JT(JQs[-1]), torch.cat(Qs))
            products += b
    if len(s) < k:
        raise ValueError(f"top_spectrum found {len(s)} of the k={k} singular values within max_products="
                         f"{max_products} Jacobian products; raise max_products (about 2 k + 4 batch_size), or "
                         "compute the complete spectrum: spectrum(jacobian(model, x), x.shape[1:])")
    V = Vb[:k].to(x.dtype) @ torch.cat(Qs)  # (k, P)
    return Spectrum(s[:k].to(x.dtype), Ub[:, :k].to(x.dtype), V, tuple(x.shape[1:]), complete=False,
                    extra={"products": products, "converged": bool(converged)})


# ---------------------------------------------------------------------------------------------- analytic model


class LinearMap:
    """An analytic model ``embed(x) = flatten(x) @ A^T`` with known Jacobian A (D, P); not an nn.Module on purpose."""

    def __init__(self, A: Tensor, input_shape: tuple[int, ...]) -> None:
        self.A = A
        self.input_shape = tuple(input_shape)

    def embed(self, x: Tensor) -> Tensor:
        return x.flatten(1) @ self.A.T  # (B, D)

    @classmethod
    def with_singular_values(
        cls, s: Tensor, D: int, input_shape: tuple[int, ...], *, seed: int = 0, dtype: torch.dtype = torch.float64,
    ) -> LinearMap:
        """A = U diag(s) V^T with random orthonormal U (D, r), V (P, r); rank r = len(s) <= D (pad with zeros)."""
        P, r = math.prod(input_shape), len(s)
        gen = torch.Generator().manual_seed(seed)
        U = torch.linalg.qr(torch.randn(D, r, generator=gen, dtype=torch.float64)).Q
        V = torch.linalg.qr(torch.randn(P, r, generator=gen, dtype=torch.float64)).Q
        return cls(((U * s.double()) @ V.T).to(dtype), input_shape)
