"""Checks for the classroom exercises: compare a student's answer with vitequiv's reference, explain mismatches.

Every ``check_*`` raises ``AssertionError`` whose message names the quantity, how far off it is, what was
expected, and the most likely cause (a forgotten 1/2, (H, W, C) flattening, a float32 Gram matrix, ...); on
success it prints one line starting with "OK". ``model`` is anything with ``embed(x)``: (B, 3, H, W) -> (B, D).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from ..jacobians import RANK_RTOL, LinearMap, as_batch, jacobian, spectrum
from ..lipschitz import directional_derivative, directional_lipschitz
from ..matching import PaperGD, StopRule, match_embeddings


def _ok(message: str) -> None:
    print(f"OK: {message}")


def _fail(message: str) -> None:
    raise AssertionError(message)


def _ratio_is(ratio: float, expected: float, rtol: float = 1e-3) -> bool:
    return math.isfinite(ratio) and abs(ratio - expected) <= rtol * abs(expected)


def _as_tensor(value, name: str) -> Tensor:
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    if not isinstance(value, Tensor):
        _fail(f"{name} should be a torch tensor (or NumPy array), got {type(value).__name__}.")
    return value.detach()


@torch.no_grad()
def _embed(model, x: Tensor) -> Tensor:
    return model.embed(x)  # (B, D)


# ------------------------------------------------------------------------------- 01 embedding matching


def check_loss(loss_fn: Callable, model, x: Tensor, target: Tensor) -> None:
    """``loss_fn(model, x, target)`` must be the scalar tensor 1/2 ||f(x) - target||^2, differentiable in x."""
    x = x.detach().clone().requires_grad_(True)
    loss = loss_fn(model, x, target)
    if isinstance(loss, (float, int, np.floating)):
        _fail("embedding_loss returned a Python number: return the torch tensor (no .item()), otherwise "
              "no gradient can flow back to the pixels.")
    if not isinstance(loss, Tensor) or loss.numel() != 1:
        shape = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
        _fail(f"embedding_loss should return one number (a 0-d tensor), got {shape}. Sum over the D embedding "
              "dimensions.")
    if not loss.requires_grad:
        _fail("embedding_loss carries no gradient: do not wrap it in torch.no_grad() or detach f(x).")
    reference = 0.5 * (_embed(model, x) - target).pow(2).sum().item()
    value = float(loss.detach())
    D = target.shape[-1]
    if abs(value - reference) <= 1e-4 * abs(reference):
        _ok(f"loss {value:.6g} = 1/2 ||f(x) - f(x_tg)||^2")
        return
    ratio = value / reference if reference else math.inf
    hints = {2.0: "twice the expected value: you forgot the factor 1/2.",
             2.0 / D: f"you averaged over the D = {D} embedding dimensions (as F.mse_loss does); sum them instead.",
             1.0 / D: f"you averaged over the D = {D} dimensions and halved; use 1/2 * sum instead.",
             0.5: "half the expected value: the 1/2 goes outside the square, not inside."}
    hint = next((h for r, h in hints.items() if _ratio_is(ratio, r)), None)
    if hint is None and _ratio_is(value, math.sqrt(2 * reference)):
        hint = "that is the norm ||f(x) - f(x_tg)||; the loss is half its square."
    _fail(f"your loss is {value:.6g}, expected 1/2 ||f(x) - f(x_tg)||^2 = {reference:.6g}: "
          + (hint or "check that you compare model.embed(x) with the target embedding."))


def check_match(
    model, x0: Tensor, x_tg: Tensor, x: Tensor, history: dict[str, Sequence[float]], *, cos_min: float,
    dist2_max: float,
) -> None:
    """The matched image ``x`` must be a valid image near the source whose embedding meets both thresholds,
    and ``history`` (lists "loss" and "cosine", one entry per evaluated image, source first) must describe it."""
    x = _as_tensor(x, "the matched image")
    if x.shape != x0.shape:
        _fail(f"the matched image has shape {tuple(x.shape)}, expected the source's {tuple(x0.shape)}.")
    if not torch.isfinite(x).all():
        _fail("the matched image contains NaN or inf: lower the learning rate.")
    if x.min() < 0 or x.max() > 1:
        _fail(f"pixels leave [0, 1] (min {x.min():.3g}, max {x.max():.3g}): clamp x to [0, 1] after every step.")
    f_x, f_0, f_tg = _embed(model, x), _embed(model, x0), _embed(model, x_tg)
    dist_source, dist_target = (x - x0).norm().item(), (x - x_tg).norm().item()
    if dist_source >= dist_target:
        _fail(f"your image is closer to the target ({dist_target:.3g}) than to the source ({dist_source:.3g}) in "
              "pixels: start from the source x0 and change it, do not copy or start from the target.")
    cos = torch.nn.functional.cosine_similarity(f_x, f_tg).item()
    dist2 = (f_x - f_tg).pow(2).sum().item()
    if cos < cos_min or dist2 > dist2_max:
        _fail(f"the embedding of your image is not a match: cosine {cos:.4f} (need >= {cos_min}), squared distance "
              f"{dist2:.4g} (need <= {dist2_max}). Allow more steps, check the sign of the step (x - lr * grad), "
              "and stop only when both thresholds hold.")
    if not isinstance(history, dict) or not {"loss", "cosine"} <= set(history):
        _fail("history should be a dict with lists 'loss' and 'cosine' (one entry per evaluated image).")
    losses, cosines = np.asarray(history["loss"], float), np.asarray(history["cosine"], float)
    if len(losses) != len(cosines) or len(losses) < 2:
        _fail(f"history has {len(losses)} losses and {len(cosines)} cosines: record both at every step, from the "
              "source image on.")
    first = 0.5 * (f_0 - f_tg).pow(2).sum().item()
    if abs(losses[0] - first) > 1e-3 * first:
        _fail(f"history['loss'][0] is {losses[0]:.6g}, but 1/2 ||f(x0) - f(x_tg)||^2 of the source is {first:.6g}: "
              "record the loss of the image before updating it, starting with the source.")
    if abs(cosines[-1] - cos) > 1e-3:
        _fail(f"the last cosine in your history ({cosines[-1]:.4f}) is not that of the image you returned "
              f"({cos:.4f}): return the image whose loss and cosine you recorded last, not one updated after it.")
    if ((cosines[:-1] >= cos_min) & (2 * losses[:-1] <= dist2_max)).any():  # loss = 1/2 squared distance
        _fail("your history meets both thresholds before its last entry: stop as soon as they hold.")
    _ok(f"matched in {len(losses) - 1} steps: cosine {cos:.4f}, squared distance {dist2:.4g}, "
        f"pixel change L2 {dist_source:.3g} (source to target: {(x_tg - x0).norm().item():.3g})")


def check_match_steps(match_fn: Callable, model, x0: Tensor, x_tg: Tensor, *, lr: float, steps: int = 5) -> None:
    """``steps`` updates of the student's loop must equal plain gradient descent on 1/2 ||f(x) - f(x_tg)||^2
    with pixels clamped to [0, 1], as computed by ``vitequiv.match_embeddings``."""
    x, history = match_fn(model, x0, x_tg, lr=lr, max_steps=steps, cos_min=2.0, dist2_max=-1.0)  # never met
    x = _as_tensor(x, "the matched image")
    if len(history["loss"]) != steps + 1:
        _fail(f"with max_steps={steps} and unreachable thresholds your history has {len(history['loss'])} entries, "
              f"expected {steps + 1} (the source, then one per update): the loop should make exactly max_steps "
              "updates.")
    D = _embed(model, x_tg).shape[1]
    # The library's loss is the mean over D of the squared difference, 2/D times ours: scale lr to compensate.
    reference = match_embeddings(model, x0, x_tg, step_rule=PaperGD(lr * D / 2), box="unit", max_steps=steps,
                                 stop=StopRule(cos=2.0), progress=False).images
    err = (x - reference).abs().max().item()
    if err > 1e-4:
        _fail(f"after {steps} steps at lr={lr} your image differs from plain gradient descent on "
              f"1/2 ||f(x) - f(x_tg)||^2 by {err:.3g} (max abs); expected < 1e-4. Check: x <- clamp(x - lr * grad, "
              "0, 1), with grad taken w.r.t. the pixels of the current x.")
    _ok(f"{steps} steps at lr={lr} equal the reference gradient descent (max abs difference {err:.1e})")


# ------------------------------------------------------------------------------- 02 Jacobian spectrum


def check_jacobian(J, model, x: Tensor) -> None:
    """``J`` must be the (D, 3HW) Jacobian of ``model.embed`` at ``x``, columns in x's (C, H, W) order."""
    x = as_batch(x.detach())
    J = _as_tensor(J, "J")
    reference = jacobian(model, x)  # (D, P)
    D, P = reference.shape
    if J.shape == (P, D) and P != D:
        _fail(f"J has shape {tuple(J.shape)}, i.e. (3HW, D): that is J transposed. Row i should be the gradient "
              "of embedding coordinate i.")
    if J.shape != (D, P):
        hint = " Reshape it to (D, 3*H*W)." if J.numel() == D * P else ""
        _fail(f"J has shape {tuple(J.shape)}, expected (D, 3*H*W) = ({D}, {P}).{hint}")
    J = J.to(reference)
    err = (J - reference).abs().max().item()
    tol = 1e-4 * max(1.0, reference.abs().max().item())
    if err <= tol:
        _ok(f"J ({D} x {P}) matches autograd's (max abs difference {err:.1e})")
        return
    _, C, H, W = x.shape
    hwc = reference.reshape(D, C, H, W).permute(0, 2, 3, 1).reshape(D, P)
    scale = (J * reference).sum().item() / reference.pow(2).sum().item()
    if (J - hwc).abs().max().item() <= tol:
        hint = "it equals autograd's with columns in (H, W, C) order: flatten the gradient (3, H, W) as it is."
    elif (J + reference).abs().max().item() <= tol:
        hint = "it is autograd's with the sign flipped."
    elif D > 1 and (J.diff(dim=0) - reference[1:]).abs().max().item() <= 2 * tol:
        hint = ("each row is the sum of all earlier rows: x.grad accumulates over backward() calls. Use "
                "torch.autograd.grad, or reset x.grad = None before each row.")
    elif abs(scale - 1) > 1e-2 and (J - scale * reference).abs().max().item() <= 10 * tol:
        hint = (f"it is {scale:.4g} times autograd's: differentiate model.embed(x) w.r.t. the [0, 1] pixels x "
                "(normalisation included), not another quantity.")
    else:
        hint = "did you flatten the input in (C, H, W) order, and differentiate model.embed(x)[0, i] for row i?"
    _fail(f"your Jacobian differs from autograd's by {err:.2g} (max abs); expected < {tol:.1g}: {hint}")


def check_singular_values(s, J: Tensor) -> None:
    """``s`` must hold the D singular values of ``J`` (D, P), descending, to 1e-5 of the largest."""
    s = _as_tensor(s, "s").flatten().double()
    reference = spectrum(J, (J.shape[1],)).s.double()  # (D,), from a float64 Gram matrix
    D = len(reference)
    if len(s) != D:
        _fail(f"you have {len(s)} singular values, expected D = {D} (one per eigenvalue of the D x D Gram matrix "
              "J J^T).")
    if torch.isnan(s).any():
        _fail("your singular values contain NaN: tiny eigenvalues of J J^T come out slightly negative; clamp them "
              "at 0 before the square root.")
    err = (s - reference).abs().max().item()
    tol = 1e-5 * reference[0].item()
    if err <= tol:
        _ok(f"{D} singular values, from {reference[0]:.4g} down to {reference[-1]:.3g}")
        return
    if (s.flip(0) - reference).abs().max().item() <= tol:
        hint = "they are in ascending order (as torch.linalg.eigh returns them): sort them descending."
    elif (s - reference.pow(2)).abs().max().item() <= 1e-5 * reference[0].item() ** 2:
        hint = "these are the eigenvalues of J J^T, i.e. the squared singular values: take the square root."
    elif (s[: D // 2] - reference[: D // 2]).abs().max().item() <= 1e-4 * reference[0].item():
        hint = ("the large values are right but the small ones are off: a float32 Gram matrix loses them "
                "(eigenvalues below ~1e-7 of the largest). Compute J J^T in float64: J.double().")
    else:
        hint = "compute the eigenvalues of G = J J^T (D x D), clamp at 0, take square roots, sort descending."
    _fail(f"your singular values differ from the reference by {err:.3g} (max abs); expected < {tol:.2g}: {hint}")


def check_null_fraction(fraction: float, J: Tensor, rtol: float = RANK_RTOL) -> None:
    """``fraction`` must be 1 - rank / P, rank = number of singular values above ``rtol * s_max`` (one either way
    is tolerated: a value right at the threshold may fall on either side)."""
    fraction = float(fraction)
    D, P = J.shape
    rank = spectrum(J, (P,)).rank(rtol)
    expected = 1 - rank / P
    if abs(fraction - expected) <= 1.0 / P + 1e-12:
        _ok(f"null-space fraction {fraction:.4%}: rank {rank} of {P} pixel directions")
        return
    if abs(fraction - rank / P) <= 1.0 / P:
        hint = "that is the normal-space fraction rank / P; the null space is the rest, 1 - rank / P."
    elif abs(fraction - (1 - D / P)) <= 0.5 / P:
        hint = (f"you took the rank to be D = {D}; count the singular values above rtol * s_max instead "
                f"(here {rank}).")
    elif abs(fraction - (P - rank)) <= 1:
        hint = "that is a count of dimensions; divide by the number of pixel values P = 3HW."
    else:
        hint = f"rank = #(s > {rtol:g} * s.max()), fraction = 1 - rank / P with P = 3HW = {P}."
    _fail(f"your null-space fraction is {fraction:.6g}, expected {expected:.6g}: {hint}")


def check_normal_basis(V, J: Tensor, rtol: float = RANK_RTOL) -> None:
    """``V`` (r, P) must have orthonormal rows spanning the row space of ``J``, r = its numerical rank (+-1)."""
    V = _as_tensor(V, "V").double()
    Jd = J.double()
    D, P = J.shape
    rank = spectrum(J, (P,)).rank(rtol)
    if V.dim() != 2 or V.shape[1] != P:
        hint = " (that is V transposed)" if V.dim() == 2 and V.shape[0] == P else ""
        _fail(f"V has shape {tuple(V.shape)}{hint}, expected (r, P) = ({rank}, {P}): one right singular vector "
              "per row.")
    if abs(V.shape[0] - rank) > 1:
        _fail(f"V has {V.shape[0]} rows, but J has numerical rank {rank}: keep only the directions whose singular "
              f"value exceeds {rtol:g} * s_max (the others are float32 noise).")
    gram_err = (V @ V.T - torch.eye(V.shape[0], dtype=V.dtype)).abs().max().item()
    if gram_err > 1e-3:
        _fail(f"the rows of V are not orthonormal (V V^T differs from the identity by {gram_err:.3g}): "
              "V = diag(1/s) U^T J, dividing row i by its singular value s_i.")
    residual = (Jd - (Jd @ V.T) @ V).norm().item() / Jd.norm().item()
    if residual > 1e-4:
        _fail(f"J has a part outside the span of V's rows (relative {residual:.3g}; expected < 1e-4): V should hold "
              "the right singular vectors of the largest singular values.")
    _ok(f"V ({V.shape[0]} x {P}) is an orthonormal basis of J's row space (the normal space)")


def check_null_projection(project_null: Callable, V: Tensor, J: Tensor, *, trials: int = 3, seed: int = 0) -> None:
    """``project_null(v, V)`` must remove from v exactly its part in span(V): J P_null v ~ 0, P_null idempotent,
    and a random v keeps as much of its length as under the reference projector (the null space is most of the
    input space, so that is most of it)."""
    gen = torch.Generator().manual_seed(seed)
    D, P = J.shape
    reference = spectrum(J, (P,))
    s_max = reference.s[0].item()
    for _ in range(trials):
        v = torch.randn(P, generator=gen, dtype=J.dtype)
        pv = _as_tensor(project_null(v, V), "project_null(v, V)")
        if pv.shape != v.shape:
            _fail(f"project_null(v, V) has shape {tuple(pv.shape)}, expected v's {tuple(v.shape)}.")
        pv = pv.to(J.dtype)
        ratio = (J @ pv).norm().item() / (s_max * v.norm().item())
        if ratio > 1e-4:
            raw = (J @ v).norm().item() / (s_max * v.norm().item())
            hint = ("it is as large as for v itself: subtract the projection onto the normal space, "
                    "v - V^T (V v)." if ratio > 0.5 * raw else "use v - V^T (V v) with V's rows orthonormal.")
            _fail(f"||J P_null v|| / (s_max ||v||) = {ratio:.3g}, expected < 1e-4: {hint}")
        again = (_as_tensor(project_null(pv, V), "project_null").to(J.dtype) - pv).norm().item() / v.norm().item()
        if again > 1e-4:
            _fail(f"projecting twice changes the result (relative {again:.3g}): a projection must be idempotent.")
        share = (pv.norm().item() / v.norm().item()) ** 2
        expected = (reference.project_null(v).norm().item() / v.norm().item()) ** 2
        if abs(share - expected) > 0.05:
            _fail(f"a random v keeps {share:.1%} of its squared length, expected {expected:.1%} (its share in the "
                  "null space): remove its normal part and nothing else.")
    _ok(f"J P_null v ~ 0 for {trials} random v (relative < 1e-4); a random v keeps {share:.1%} of its squared length")


def known_linear_map() -> LinearMap:
    """A linear "model" (16 x 192, float64) with known singular values 10 ... 1e-3 (12 of them) and 4 zeros:
    rank 12, null-space fraction 1 - 12/192. Hidden tests run the student's functions on it."""
    known = torch.cat([torch.logspace(1, -3, 12, dtype=torch.float64), torch.zeros(4, dtype=torch.float64)])
    return LinearMap.with_singular_values(known, D=16, input_shape=(3, 8, 8), seed=1)


# ------------------------------------------------------------------------------- 03 directional Lipschitz


def _tolerance(model, x: Tensor, eps: float, exact: float) -> float:
    """Relative tolerance for comparing two estimates computed in different but valid ways: 1e-6 plus 100 times
    the rounding noise u ||f(x)|| / (eps ||Jv||) of x's dtype (they agree only down to that noise)."""
    with torch.no_grad():
        f_norm = model.embed(as_batch(x)).norm().item()
    return 1e-6 + 100 * torch.finfo(x.dtype).eps * f_norm / (eps * exact)


def check_directional_lipschitz(fn: Callable, model, x: Tensor, v: Tensor) -> None:
    """``fn(model, x, v, eps)`` must be ||f(x + eps v/||v||) - f(x)|| / eps, a number, computed in x's dtype;
    compared with ``vitequiv.lipschitz.directional_lipschitz`` at eps = 0.1 and 0.01, with v of length 3."""
    v = 3.0 * v / v.norm()  # a deliberately non-unit direction
    exact = directional_derivative(model, x, v).item()
    references = directional_lipschitz(model, x, v, [1e-1, 1e-2])
    for eps, reference in zip((1e-1, 1e-2), references.tolist()):
        value = fn(model, x, v, eps)
        if isinstance(value, Tensor):
            if value.numel() != 1:
                _fail(f"directional_lipschitz should return one number, got shape {tuple(value.shape)}.")
            value = value.item()
        if abs(value - reference) <= _tolerance(model, x, eps, exact) * reference:
            continue
        ratio = value / reference
        if _ratio_is(ratio, 3.0, 0.05):  # up to the curvature of f over eps
            hint = "you did not normalise v: use the unit direction v / ||v||."
        elif _ratio_is(ratio, eps, 0.05):
            hint = "you forgot to divide by eps."
        elif _ratio_is(ratio, 3.0 * eps, 0.05):
            hint = "normalise v and divide by eps."
        else:
            hint = f"compute ||model.embed(x + eps * u) - model.embed(x)|| / eps with u = v / ||v||, in {x.dtype}."
        _fail(f"at eps={eps:g} with ||v|| = 3 your estimate is {value:.6g}, expected {reference:.6g}: {hint}")
    _ok("directional_lipschitz matches ||f(x + eps v/||v||) - f(x)|| / eps")


def check_jv_norm(value: float, model, x: Tensor, v: Tensor) -> None:
    """``value`` must be ||J u|| at x for the unit direction u = v / ||v||, to 1e-4 relative."""
    value = float(value)
    reference = directional_derivative(model, x, v).item()
    if abs(value - reference) <= 1e-4 * reference:
        _ok(f"||J v|| = {value:.8g}")
        return
    raw = reference * v.norm().item()
    hint = ("that is ||J v|| for v as given; normalise v first." if abs(value - raw) <= 1e-4 * raw else
            "use a Jacobian-vector product (torch.func.jvp) at x in the unit direction v / ||v||.")
    _fail(f"your ||J v|| is {value:.8g}, expected {reference:.8g}: {hint}")


def check_lipschitz_sweep(eps: Sequence[float], L: Sequence[float], model, x: Tensor, v: Tensor) -> None:
    """``L[i]`` must be the directional Lipschitz estimate at ``eps[i]`` in x's dtype: equal to the reference where
    that is accurate (within 1 % of ||Jv||), and also wrong where rounding ruins the reference (off by more than
    100 %; there any value is noise, so only "off by over 10 %" is required)."""
    eps, L = np.asarray(eps, float), np.asarray(L, float)
    if eps.shape != L.shape:
        _fail(f"{len(L)} estimates for {len(eps)} values of eps: one estimate per eps.")
    exact = directional_derivative(model, x, v).item()
    references = directional_lipschitz(model, x, v, eps.tolist()).tolist()
    accurate = 0
    for e, value, reference in zip(eps, L, references):
        error = abs(reference - exact) / exact
        if error <= 1e-2:
            accurate += 1
            if abs(value - reference) > _tolerance(model, x, e, exact) * reference:
                _fail(f"at eps={e:g} ({x.dtype}) your estimate is {value:.6g}, expected {reference:.6g}: use "
                      "directional_lipschitz with the model, image and direction of this dtype.")
        elif error > 1 and abs(value - exact) <= 0.1 * exact:  # rounding-dominated, yet accurate: not this dtype
            _fail(f"at eps={e:g} your estimate {value:.6g} should be ruined by {x.dtype} rounding (the reference "
                  f"gives {reference:.6g}, ||Jv|| = {exact:.6g}): is every entry computed in {x.dtype}?")
    if accurate == 0:
        _fail("no eps in your sweep gives an accurate estimate: sweep eps from 1e-1 down to 1e-16.")
    _ok(f"{x.dtype} sweep matches the reference ({accurate} accurate eps, rounding-dominated ones as broken as they "
        "should be)")


def check_best_eps(best: float, eps: Sequence[float], L: Sequence[float], jv_norm: float) -> None:
    """``best`` must be the eps whose estimate has the smallest relative error |L - ||Jv||| / ||Jv||."""
    eps, L = np.asarray(eps, float), np.asarray(L, float)
    errors = np.abs(L - jv_norm) / jv_norm
    expected = eps[int(np.argmin(errors))]
    if not np.isclose(float(best), expected, rtol=1e-9, atol=0):
        _fail(f"the most accurate eps is {expected:g} (relative error {errors.min():.2g}), you gave {float(best):g}: "
              "take the argmin of |L - ||Jv||| / ||Jv|| over the sweep.")
    _ok(f"most accurate eps {expected:g} (relative error {errors.min():.2g})")
