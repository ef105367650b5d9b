"""Checks for the classroom exercises: compare a student's answer with vitequiv's reference, explain mismatches.

Every ``check_*`` raises ``AssertionError`` whose message names the quantity, how far off it is, what was
expected, and the most likely cause (a forgotten 1/2, (H, W, C) flattening, a float32 Gram matrix, a notebook
global used instead of an argument, ...); on success it prints one line starting with "OK". ``model`` is
anything with ``embed(x)``: (B, 3, H, W) -> (B, D).

Checks that are handed a student's function call it themselves: on other inputs than the notebook's (a function
that reads a notebook variable instead of its argument is then named as such), and watching for a call of the
library function that answers the task outright (:data:`REFERENCES`). Every check silences torch's
:data:`KNOWN_WARNINGS`, and only those: nbgrader scores a graded cell that writes to stderr as failed.
"""
from __future__ import annotations

import functools
import inspect
import math
import re
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple, TypeVar

import numpy as np
import torch
from torch import Tensor

from ..jacobians import RANK_RTOL, LinearMap, Spectrum, jacobian, model_input, spectrum, top_spectrum
from ..lipschitz import changes_along, directional_derivative, directional_lipschitz
from ..matching import StepRule, match_embeddings, paper_match

# Warnings that torch writes for correct code; in a graded cell nbgrader would count them as a failure.
KNOWN_WARNINGS: tuple[tuple[type[Warning], str], ...] = (
    # vmap over the fused CPU attention backward (torch.func.jacrev, vq.jacobian): a slower loop, same numbers
    (UserWarning, "There is a performance drop because we have not yet implemented the batching rule"),
    # once per process, at the first forward-mode derivative: torch loads its jit-scripted jvp decompositions
    (FutureWarning, "`torch.jit.script` is deprecated"),
)


class Reference(NamedTuple):
    """The library functions that answer one task outright, and what to use instead."""

    functions: dict[Callable, str]  # function -> the name a notebook would call it by
    instead: str


# The tasks whose answer the library holds, by the name of the student's function.
REFERENCES: dict[str, Reference] = {
    "match": Reference({match_embeddings: "vq.match_embeddings", paper_match: "vq.paper_match"},
                       "a loop of torch.autograd.grad steps"),
    "compute_jacobian": Reference({jacobian: "vq.jacobian"},
                                  "torch.autograd.grad row by row, or torch.func.jacrev"),
    "singular_values": Reference({spectrum: "vq.spectrum", top_spectrum: "vq.top_spectrum"},
                                 "torch.linalg.eigvalsh of the Gram matrix J J^T"),
    "null_space_fraction": Reference({Spectrum.rank: "Spectrum.rank",
                                      Spectrum.null_fraction: "Spectrum.null_fraction"},
                                     "count the singular values above rtol * s.max()"),
    "normal_basis": Reference({spectrum: "vq.spectrum", top_spectrum: "vq.top_spectrum",
                               Spectrum.basis: "Spectrum.basis"},
                              "torch.linalg.eigh of J J^T, then V = diag(1/s) U^T J"),
    "project_null": Reference({Spectrum.project_null: "Spectrum.project_null",
                               Spectrum.project_normal: "Spectrum.project_normal"}, "v - V^T (V v)"),
    "directional_lipschitz": Reference({directional_lipschitz: "vq.directional_lipschitz",
                                        changes_along: "vq.lipschitz.changes_along"}, "two model.embed calls"),
}

Check = TypeVar("Check", bound=Callable[..., None])


def _ok(message: str) -> None:
    print(f"OK: {message}")


def _fail(message: str) -> None:
    raise AssertionError(message)


@contextmanager
def quiet() -> Iterator[None]:
    """Silence :data:`KNOWN_WARNINGS` (and nothing else) while the block runs."""
    with warnings.catch_warnings():
        for category, message in KNOWN_WARNINGS:
            warnings.filterwarnings("ignore", message=re.escape(message), category=category)
        yield


def _quietly(check: Check) -> Check:
    """``check`` run under :func:`quiet`: the student's code it calls included."""
    @functools.wraps(check)
    def run(*args, **kwargs):
        with quiet():
            return check(*args, **kwargs)
    return run  # type: ignore[return-value]


def _run_student(task: str, fn: Callable, *args, **kwargs) -> Any:
    """``fn(*args, **kwargs)``; fails if it called a library function listed in ``REFERENCES[task]``.

    A profile hook sees every Python call while ``fn`` runs, so ``vq.jacobian``, ``vitequiv.jacobians.jacobian``
    and a ``from vitequiv import jacobian`` alias are all caught; a copy of the library's code is not.
    """
    reference = REFERENCES.get(task)
    if reference is None:
        return fn(*args, **kwargs)
    codes = {inspect.unwrap(f).__code__: name for f, name in reference.functions.items()}
    called: list[str] = []

    def watch(frame, event, arg) -> None:
        if event == "call" and frame.f_code in codes:
            called.append(codes[frame.f_code])

    previous = sys.getprofile()
    sys.setprofile(watch)
    try:
        return fn(*args, **kwargs)
    finally:  # also when fn raised: the library call is the thing to report
        sys.setprofile(previous)
        if called:
            _fail(f"{task} calls {called[0]}, the library's own answer to this task: build it yourself "
                  f"({reference.instead}).")


def _other(t: Tensor) -> Tensor:
    """A different tensor of the same shape and dtype (mirrored along the last axis): a probe input."""
    return t.flip(-1)


def _unused_argument(task: str, probes: dict[str, tuple[Callable[[], bool], str]]) -> str | None:
    """A hint naming the first argument whose change leaves the student's result unchanged (so ``task`` must read
    a notebook variable instead), or None. ``probes``: argument -> (reruns with it changed and says whether the
    result stayed the same, the notebook variable it is likely replaced by)."""
    for argument, (unchanged, variable) in probes.items():
        if unchanged():
            return (f"{task} gives the same result when its argument {argument} changes: use the argument "
                    f"{argument}, not a notebook variable such as {variable}.")
    return None


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


def _loss_of(loss_fn: Callable, model, x: Tensor, target: Tensor) -> Any:
    """The student's loss at a fresh leaf copy of ``x`` (so that gradients can flow to it)."""
    return _run_student("embedding_loss", loss_fn, model, x.detach().clone().requires_grad_(True), target)


@_quietly
def check_loss(loss_fn: Callable, model, x: Tensor, target: Tensor) -> None:
    """``loss_fn(model, x, target)`` must be the scalar tensor 1/2 ||f(x) - target||^2, differentiable in x."""
    loss = _loss_of(loss_fn, model, x, target)
    if isinstance(loss, (float, int, np.floating)):
        _fail("embedding_loss returned a Python number: return the torch tensor (no .item()), otherwise "
              "no gradient can flow back to the pixels.")
    if not isinstance(loss, Tensor) or loss.numel() != 1:
        shape = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
        _fail(f"embedding_loss should return one number (a 0-d tensor), got {shape}. Sum over the D embedding "
              "dimensions.")
    value = float(loss.detach())

    def unchanged(x_: Tensor, target_: Tensor) -> bool:
        return abs(float(_loss_of(loss_fn, model, x_, target_).detach()) - value) <= 1e-6 * abs(value)

    ignores_x = {"x": (lambda: unchanged(_other(x), target), "x0")}
    if not loss.requires_grad:
        _fail("embedding_loss carries no gradient: " + (_unused_argument("embedding_loss", ignores_x) or
                                                        "do not wrap it in torch.no_grad() or detach f(x)."))
    reference = 0.5 * (_embed(model, x) - target).pow(2).sum().item()
    D = target.shape[-1]
    if abs(value - reference) <= 1e-4 * abs(reference):
        _ok(f"loss {value:.6g} = 1/2 ||f(x) - f(x_tg)||^2")
        return
    hint = _unused_argument("embedding_loss", {"target": (lambda: unchanged(x, _other(target)), "f_tg")} | ignores_x)
    ratio = value / reference if reference else math.inf
    hints = {2.0: "twice the expected value: you forgot the factor 1/2.",
             2.0 / D: f"you averaged over the D = {D} embedding dimensions (as F.mse_loss does); sum them instead.",
             1.0 / D: f"you averaged over the D = {D} dimensions and halved; use 1/2 * sum instead.",
             0.5: "half the expected value: the 1/2 goes outside the square, not inside."}
    hint = hint or next((h for r, h in hints.items() if _ratio_is(ratio, r)), None)
    if hint is None and _ratio_is(value, math.sqrt(2 * reference)):
        hint = "that is the norm ||f(x) - f(x_tg)||; the loss is half its square."
    _fail(f"your loss is {value:.6g}, expected 1/2 ||f(x) - f(x_tg)||^2 = {reference:.6g}: "
          + (hint or "check that you compare model.embed(x) with the target embedding."))


@_quietly
def check_match(
    model, x0: Tensor, x_tg: Tensor, x: Tensor, history: dict[str, Sequence[float]], *, stop_cos: float,
    stop_dist2: float,
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
    if cos < stop_cos or dist2 > stop_dist2:
        _fail(f"the embedding of your image is not a match: cosine {cos:.4f} (need >= {stop_cos}), squared "
              f"distance {dist2:.4g} (need <= {stop_dist2}). Allow more steps, check the sign of the step "
              "(x - lr * grad), and stop only when both thresholds hold.")
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
    if ((cosines[:-1] >= stop_cos) & (2 * losses[:-1] <= stop_dist2)).any():  # loss = 1/2 squared distance
        _fail("your history meets both thresholds before its last entry: stop as soon as they hold.")
    _ok(f"matched in {len(losses) - 1} steps: cosine {cos:.4f}, squared distance {dist2:.4g}, "
        f"pixel change L2 {dist_source:.3g} (source to target: {(x_tg - x0).norm().item():.3g})")


class _PlainStep(StepRule):
    """x <- x - lr * grad for any sign of ``lr``: a negative one climbs (the reference for a flipped step)."""

    def __init__(self, lr: float) -> None:
        self.lr = lr

    def update(self, grad: Tensor, state: dict) -> tuple[Tensor, dict]:
        return self.lr * grad, state


def _reference_descent(model, x0: Tensor, x_tg: Tensor, lr: float, steps: int) -> Tensor:
    """``steps`` plain gradient steps x <- clamp(x - lr * grad, 0, 1) on 1/2 ||f(x) - f(x_tg)||^2 from ``x0``, as
    computed by ``vitequiv.match_embeddings`` (every step taken, the channels of a gray source left independent)."""
    D = _embed(model, x_tg).shape[1]
    # The library's loss is the mean over D of the squared difference, 2/D times ours: scale lr to compensate.
    return match_embeddings(model, x0, x_tg, step_rule=_PlainStep(lr * D / 2), box="unit", max_steps=steps,
                            stop_cos=None, keep_gray=False, quantize=False, precision="float32",
                            progress=False).images


@_quietly
def check_match_steps(match_fn: Callable, model, x0: Tensor, x_tg: Tensor, *, lr: float, steps: int = 5) -> None:
    """``steps`` updates of the student's loop must equal plain gradient descent on 1/2 ||f(x) - f(x_tg)||^2
    with pixels clamped to [0, 1], as computed by ``vitequiv.match_embeddings``."""

    def run(source: Tensor, target: Tensor) -> tuple[Tensor, dict]:
        x, history = _run_student("match", match_fn, model, source, target, lr=lr, max_steps=steps,
                                  stop_cos=2.0, stop_dist2=-1.0)  # thresholds that never hold
        return _as_tensor(x, "the matched image"), history

    def same(a: Tensor, b: Tensor) -> bool:
        return (a - b).abs().max().item() <= 1e-4

    D = _embed(model, x_tg).shape[1]
    x, history = run(x0, x_tg)
    if len(history["loss"]) != steps + 1:
        _fail(f"with max_steps={steps} and unreachable thresholds your history has {len(history['loss'])} entries, "
              f"expected {steps + 1} (the source, then one per update): the loop should make exactly max_steps "
              "updates.")
    if x.min() < 0 or x.max() > 1:
        _fail(f"after {steps} steps at lr={lr} your pixels leave [0, 1] (min {x.min():.3g}, max {x.max():.3g}): "
              "clamp x to [0, 1] after every step.")
    reference = _reference_descent(model, x0, x_tg, lr, steps)
    err = (x - reference).abs().max().item()
    if err > 1e-4:
        hint = _unused_argument("match", {"x_tg": (lambda: same(run(x0, _other(x_tg))[0], x), "f_tg or x_tg"),
                                          "x0": (lambda: same(run(_other(x0), x_tg)[0], x), "x0")})
        if hint is None and same(x, _reference_descent(model, x0, x_tg, -lr, steps)):
            hint = "you step uphill: x <- x - lr * grad, with a minus."
        if hint is None and same(x, _reference_descent(model, x0, x_tg, lr * 2 / D, steps)):
            hint = ("your steps are 2/D times too small: the loss is 1/2 * sum over the D dimensions, not their mean "
                    "(F.mse_loss).")
        _fail(f"after {steps} steps at lr={lr} your image differs from plain gradient descent on "
              f"1/2 ||f(x) - f(x_tg)||^2 by {err:.3g} (max abs); expected < 1e-4: "
              + (hint or "check x <- clamp(x - lr * grad, 0, 1), with grad taken w.r.t. the pixels of the current x."))
    _ok(f"{steps} steps at lr={lr} equal the reference gradient descent (max abs difference {err:.1e})")


# ------------------------------------------------------------------------------- 02 Jacobian spectrum


@_quietly
def check_jacobian(J: Tensor | Callable, model, x: Tensor) -> None:
    """``J`` must be the (D, 3HW) Jacobian of ``model.embed`` at ``x``, columns in x's (C, H, W) order; or the
    student's ``compute_jacobian``, which is then called as ``J(model, x)``."""
    x = model_input(model, x.detach())[1]
    from_function = callable(J)
    if from_function:
        J = _run_student("compute_jacobian", J, model, x.clone())
    J = _as_tensor(J, "J")
    reference = jacobian(model, x)  # (D, P)
    D, P = reference.shape
    if J.shape == (P, D) and P != D:
        _fail(f"J has shape {tuple(J.shape)}, i.e. (3HW, D): that is J transposed. Row i should be the gradient "
              "of embedding coordinate i.")
    if J.shape != (D, P):
        if J.numel() == D * P:
            hint = " Reshape it to (D, 3*H*W)."
        else:
            hint = (" Does compute_jacobian use its arguments model and x, not the notebook's model or x?"
                    if from_function else "")
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
                "(normalization included), not another quantity.")
    else:
        hint = "did you flatten the input in (C, H, W) order, and differentiate model.embed(x)[0, i] for row i?"
    _fail(f"your Jacobian differs from autograd's by {err:.2g} (max abs); expected < {tol:.1g}: {hint}")


@_quietly
def check_singular_values(s: Tensor | Callable, J: Tensor) -> None:
    """``s`` must hold the D singular values of ``J`` (D, P), descending, to 1e-5 of the largest; or be the
    student's ``singular_values``, which is then called as ``s(J)``."""
    from_function = callable(s)
    if from_function:
        s = _run_student("singular_values", s, J.clone())
    s = _as_tensor(s, "s").flatten().double()
    reference = spectrum(J, (J.shape[1],)).s.double()  # (D,), from a float64 Gram matrix
    D = len(reference)
    if len(s) != D:
        hint = " Does singular_values use its argument J, not the notebook's J?" if from_function else ""
        _fail(f"you have {len(s)} singular values, expected D = {D} (one per eigenvalue of the D x D Gram matrix "
              f"J J^T).{hint}")
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


@_quietly
def check_null_fraction(fraction: float | Callable, J: Tensor, rtol: float = RANK_RTOL) -> None:
    """``fraction`` must be 1 - rank / P, rank = number of singular values above ``rtol * s_max`` (one either way
    is tolerated: a value right at the threshold may fall on either side); or be the student's
    ``null_space_fraction``, which is then called as ``fraction(s, P, rtol)`` with the reference singular values."""
    D, P = J.shape
    reference = spectrum(J, (P,))
    if callable(fraction):
        fraction = _run_student("null_space_fraction", fraction, reference.s.clone(), P, rtol)
    fraction = float(fraction)
    rank = reference.rank(rtol)
    expected = 1 - rank / P
    if abs(fraction - expected) <= 1.0 / P + 1e-12:
        _ok(f"null-space fraction {fraction:.4%}: rank {rank} of {P} pixel directions")
        return
    used = rank / (1 - fraction) if fraction < 1 else math.inf  # the P that fraction = 1 - rank / P implies
    if abs(fraction - rank / P) <= 1.0 / P:
        hint = "that is the normal-space fraction rank / P; the null space is the rest, 1 - rank / P."
    elif abs(fraction - (1 - D / P)) <= 0.5 / P:
        hint = (f"you took the rank to be D = {D}; count the singular values above rtol * s_max instead "
                f"(here {rank}).")
    elif abs(fraction - (P - rank)) <= 1:
        hint = "that is a count of dimensions; divide by the number of pixel values P = 3HW."
    elif math.isfinite(used) and round(used) != P and abs(used - round(used)) <= 1e-6 * used:
        hint = (f"that is 1 - rank / {round(used)}, but here P = {P}: divide by the argument num_pixels, not a "
                "notebook variable such as P.")
    else:
        hint = f"rank = #(s > {rtol:g} * s.max()), fraction = 1 - rank / P with P = 3HW = {P}."
    _fail(f"your null-space fraction is {fraction:.6g}, expected {expected:.6g}: {hint}")


@_quietly
def check_normal_basis(V: Tensor | Callable, J: Tensor, rtol: float = RANK_RTOL) -> None:
    """``V`` (r, P) must have orthonormal rows spanning the row space of ``J``, r = its numerical rank (+-1); or be
    the student's ``normal_basis``, which is then called as ``V(J, rtol)``."""
    from_function = callable(V)
    if from_function:
        V = _run_student("normal_basis", V, J.clone(), rtol)
    V = _as_tensor(V, "V").double()
    Jd = J.double()
    D, P = J.shape
    rank = spectrum(J, (P,)).rank(rtol)
    if V.dim() != 2 or V.shape[1] != P:
        if V.dim() == 2 and V.shape[0] == P:
            hint = " (that is V transposed)"
        else:
            hint = " (does normal_basis use its argument J, not the notebook's J?)" if from_function else ""
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


@_quietly
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
        pv = _as_tensor(_run_student("project_null", project_null, v.clone(), V), "project_null(v, V)")
        if pv.shape != v.shape:
            _fail(f"project_null(v, V) has shape {tuple(pv.shape)}, expected v's {tuple(v.shape)}.")
        pv = pv.to(J.dtype)
        ratio = (J @ pv).norm().item() / (s_max * v.norm().item())
        if ratio > 1e-4:
            raw = (J @ v).norm().item() / (s_max * v.norm().item())
            hint = ("it is as large as for v itself: subtract the projection onto the normal space, "
                    "v - V^T (V v)." if ratio > 0.5 * raw else "use v - V^T (V v) with V's rows orthonormal.")
            _fail(f"||J P_null v|| / (s_max ||v||) = {ratio:.3g}, expected < 1e-4: {hint}")
        twice = _as_tensor(_run_student("project_null", project_null, pv.clone(), V), "project_null").to(J.dtype)
        again = (twice - pv).norm().item() / v.norm().item()
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
        f_norm = model.embed(model_input(model, x)[1]).norm().item()
    return 1e-6 + 100 * torch.finfo(x.dtype).eps * f_norm / (eps * exact)


def _estimate_hint(value: float, model, x: Tensor, v: Tensor, eps: float, rtol: float, otherwise: str) -> str:
    """The likely mistake behind a wrong estimate ``value`` at ``eps`` for the direction ``v`` (not unit length),
    found by recomputing each mistake with the library (``rtol``: the relative agreement to ask for), else
    ``otherwise``."""
    norm = v.norm().item()
    reference, raw = directional_lipschitz(model, x, v, [eps, eps * norm]).tolist()
    raw *= norm  # ||f(x + eps v) - f(x)|| / eps, with v as given

    def near(expected: float) -> bool:
        return abs(value - expected) <= rtol * abs(expected)

    if near(raw):
        return f"you did not normalize v (here ||v|| = {norm:.3g}): use the unit direction v / ||v||."
    if near(reference * eps):
        return "you forgot to divide by eps."
    if near(raw * eps):
        return "normalize v and divide by eps."
    return otherwise


@_quietly
def check_directional_lipschitz(fn: Callable, model, x: Tensor, v: Tensor) -> None:
    """``fn(model, x, v, eps)`` must be ||f(x + eps v/||v||) - f(x)|| / eps, a number, computed in x's dtype;
    compared with ``vitequiv.lipschitz.directional_lipschitz`` at eps = 0.1 and 0.01, with v of length 3."""
    v = 3.0 * v / v.norm()  # a deliberately non-unit direction
    exact = directional_derivative(model, x, v).item()
    references = directional_lipschitz(model, x, v, [1e-1, 1e-2])

    def estimate(direction: Tensor, eps: float) -> float:
        value = _run_student("directional_lipschitz", fn, model, x.clone(), direction.clone(), eps)
        if isinstance(value, Tensor):
            if value.numel() != 1:
                _fail(f"directional_lipschitz should return one number, got shape {tuple(value.shape)}.")
            value = value.item()
        return float(value)

    for eps, reference in zip((1e-1, 1e-2), references.tolist()):
        value = estimate(v, eps)
        tolerance = _tolerance(model, x, eps, exact)
        if abs(value - reference) <= tolerance * reference:
            continue
        # Only v is probed: for a linear model the estimate does not depend on x at all.
        hint = _unused_argument("directional_lipschitz", {
            "v": (lambda eps=eps, value=value: abs(estimate(_other(v), eps) - value) <= 1e-9 * abs(value), "v64")})
        _fail(f"at eps={eps:g} with ||v|| = 3 your estimate is {value:.6g}, expected {reference:.6g}: "
              + (hint or _estimate_hint(value, model, x, v, eps, max(1e-3, tolerance), otherwise=(
                  f"compute ||model.embed(x + eps * u) - model.embed(x)|| / eps with u = v / ||v||, in {x.dtype}."))))
    _ok("directional_lipschitz matches ||f(x + eps v/||v||) - f(x)|| / eps")


@_quietly
def check_jv_norm(value: float, model, x: Tensor, v: Tensor) -> None:
    """``value`` must be ||J u|| at x for the unit direction u = v / ||v||, to 1e-4 relative."""
    value = float(value)
    reference = directional_derivative(model, x, v).item()
    if abs(value - reference) <= 1e-4 * reference:
        _ok(f"||J v|| = {value:.8g}")
        return
    raw = reference * v.norm().item()
    hint = ("that is ||J v|| for v as given; normalize v first." if abs(value - raw) <= 1e-4 * raw else
            "use a Jacobian-vector product (torch.func.jvp) at x in the unit direction v / ||v||.")
    _fail(f"your ||J v|| is {value:.8g}, expected {reference:.8g}: {hint}")


@_quietly
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
            tolerance = _tolerance(model, x, e, exact)
            if abs(value - reference) > tolerance * reference:
                hint = _estimate_hint(value, model, x, v, e, max(1e-3, tolerance), otherwise=(
                    "use directional_lipschitz with the model, image and direction of this dtype."))
                _fail(f"at eps={e:g} ({x.dtype}) your estimate is {value:.6g}, expected {reference:.6g}: {hint}")
        elif error > 1 and abs(value - exact) <= 0.1 * exact:  # rounding-dominated, yet accurate: not this dtype
            _fail(f"at eps={e:g} your estimate {value:.6g} should be ruined by {x.dtype} rounding (the reference "
                  f"gives {reference:.6g}, ||Jv|| = {exact:.6g}): is every entry computed in {x.dtype}?")
    if accurate == 0:
        _fail("no eps in your sweep gives an accurate estimate: sweep eps from 1e-1 down to 1e-16.")
    _ok(f"{x.dtype} sweep matches the reference ({accurate} accurate eps, rounding-dominated ones as broken as they "
        "should be)")


@_quietly
def check_best_eps(best: float, eps: Sequence[float], L: Sequence[float], jv_norm: float) -> None:
    """``best`` must be the eps whose estimate has the smallest relative error |L - ||Jv||| / ||Jv||."""
    eps, L = np.asarray(eps, float), np.asarray(L, float)
    errors = np.abs(L - jv_norm) / jv_norm
    expected = eps[int(np.argmin(errors))]
    if np.isclose(float(best), expected, rtol=1e-9, atol=0):
        _ok(f"most accurate eps {expected:g} (relative error {errors.min():.2g})")
        return
    if not np.isclose(float(best), eps, rtol=1e-9, atol=0).any():
        hint = ("that is not one of the eps values given: return an element of the argument eps_values, not of a "
                "notebook variable.")
    elif np.isclose(float(best), eps[int(np.argmin(L - jv_norm))], rtol=1e-9, atol=0):
        hint = "you took the smallest signed error L - ||Jv||: take its absolute value."
    else:
        hint = "take the argmin of |L - ||Jv||| / ||Jv|| over the sweep."
    _fail(f"the most accurate eps is {expected:g} (relative error {errors.min():.2g}), you gave {float(best):g}: "
          + hint)
