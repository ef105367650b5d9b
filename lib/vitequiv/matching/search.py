"""The search: ``match_embeddings`` steps every pair with its rule, keeps what each returns, checks for
divergence and settles bfloat16 matches in float32; ``paper_match`` is the authors' procedure on top of it."""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import metrics
from ..precision import Precision, autocast, resolve_precision
from ..tensors import as_images, model_dtype, model_hw, target_embeddings
from ._util import _norms, _per_pair, _positive
from .budgets import Budget
from .result import HISTORY_KEYS, MatchingError, MatchResult, _History
from .rules import PaperGD, Progress, State, StepRule, make_step_rule

# ------------------------------------------------------------------------------------------- input checks


def _box(x0: torch.Tensor, box: Literal["unit", "source"]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pair pixel bounds (B, 1, 1, 1): [0, 1], or the source's own [min, max] as the authors clamped."""
    if box == "unit":
        return torch.zeros_like(x0[:, :1, :1, :1]), torch.ones_like(x0[:, :1, :1, :1])
    if box == "source":
        flat = x0.flatten(1)  # (B, 3*H*W)
        return _per_pair(flat.amin(dim=1).clamp_min(0)), _per_pair(flat.amax(dim=1).clamp_max(1))
    raise ValueError(f"box must be 'unit' or 'source', got {box!r}")


def gray_pairs(x0: torch.Tensor) -> torch.Tensor:
    """(B,) bool: the source's three channels are equal everywhere (a gray photo)."""
    return (x0.amax(dim=1) - x0.amin(dim=1)).flatten(1).amax(dim=1) == 0


def _to_gray(v: torch.Tensor, gray: torch.Tensor) -> torch.Tensor:
    """Rows of ``v`` (m, 3, H, W) where ``gray`` (m,) holds replaced by their channel mean."""
    if not gray.any():
        return v
    return torch.where(_per_pair(gray), v.mean(dim=1, keepdim=True).expand_as(v), v)


# ----------------------------------------------------------------------------------------------- matching


def _rows(t: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
    return t if index is None else t.index_select(0, index)


def _set_rows(t: torch.Tensor, index: torch.Tensor | None, v: torch.Tensor) -> torch.Tensor:
    return v if index is None else t.index_copy(0, index, v)  # a new tensor: earlier references stay valid


def _index(pairs: np.ndarray, total: int, device: torch.device) -> torch.Tensor | None:
    return None if len(pairs) == total else torch.as_tensor(pairs, device=device)


def _pair_losses(kind: str, emb: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if kind == "mse":
        return (emb - target).pow(2).mean(dim=1)  # (b,)
    if kind == "cosine":
        return 1 - metrics.cosine(emb, target)  # (b,)
    raise ValueError(f"a step rule's loss must be 'mse' or 'cosine', got {kind!r}")


@dataclass
class _Search:
    """A matching run's state, shared by its phases: the search, float32 settling and the final check.

    Tensors hold every pair (leading dimension B); a phase reads and replaces the rows of the pairs it runs.
    """

    model: object
    rule: StepRule
    x0: torch.Tensor  # (B, 3, H, W) sources
    target: torch.Tensor  # (B, D) target embeddings
    lo: torch.Tensor  # (B, 1, 1, 1) pixel box
    hi: torch.Tensor
    gray: torch.Tensor  # (B,) bool: keep the perturbation equal in the three channels
    budget: Budget | None
    stop_cos: np.ndarray | None  # (B,) cosine each pair must reach, or None
    dist2: np.ndarray | None  # (B,) squared embedding distance to stay below, or None
    quantize: bool
    diverge_factor: float
    x: torch.Tensor  # (B, 3, H, W) the iterates, replaced (never modified in place) at every step
    state: State
    out: torch.Tensor  # (B, 3, H, W) what each pair returns: its smallest feasible image seen, else its latest
    out_x: torch.Tensor  # (B, 3, H, W) the iterate ``out`` was seen from (continuous; out is its rounding)
    out_l2: np.ndarray  # (B,) ||out - x0|| of the feasible ones (inf until then)
    active: np.ndarray  # (B,) bool
    converged: np.ndarray  # (B,) bool
    steps: np.ndarray  # (B,) history row of ``out``
    passes: np.ndarray  # (B,)
    history: _History
    initial_loss: np.ndarray  # (B,)

    def seen(self, x: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
        """The image the model is shown: when quantizing, rounded to the 8-bit levels inside the pixel box (so a
        source box stays kept), with a straight-through gradient."""
        if not self.quantize:
            return x
        levels = metrics.LEVELS
        lo, hi = (_rows(self.lo, index) * levels).ceil(), (_rows(self.hi, index) * levels).floor()  # (b, 1, 1, 1)
        rounded = torch.minimum(torch.maximum((x * levels).round(), lo), hi) / levels  # (b, 3, H, W)
        return x + (rounded - x).detach()

    def meets(self, cosine: np.ndarray, embed_l2: np.ndarray, pairs: np.ndarray, goal: np.ndarray | None) -> np.ndarray:
        """(b,) bool: these pairs meet the stop rule at cosine ``goal`` (B,) (every pair's; None: never)."""
        if goal is None:
            return np.zeros(len(pairs), dtype=bool)
        ok = cosine >= goal[pairs]
        return ok if self.dist2 is None else ok & (embed_l2**2 < self.dist2[pairs])


def _evaluate(search: _Search, running: np.ndarray, k: int, precision: Precision, with_grad: bool):
    """One forward (and backward) of the running pairs, recorded as history row k.

    Returns the images the model saw (b, 3, H, W), the iterates' perturbations (b, 3, H, W) for the step rule
    (continuous, not rounded: the rule's small steps must add up), the gradient and the history row (M, b)."""
    device = search.x0.device
    index = _index(running, len(search.x0), device)
    x0a, ta = _rows(search.x0, index), _rows(search.target, index)  # (b, 3, H, W), (b, D)
    leaf = _rows(search.x, index).detach().requires_grad_(with_grad)
    with torch.set_grad_enabled(with_grad):
        seen = search.seen(leaf, index)
        with autocast(precision, device):
            emb = search.model.embed(seen)  # (b, D)
        emb = emb.float()
        loss = _pair_losses(search.rule.loss, emb, ta.float())  # (b,)
    grad = torch.autograd.grad(loss.sum(), leaf)[0] if with_grad else None  # (b, 3, H, W)
    if with_grad:
        search.passes[running] += 1
    seen = seen.detach()
    delta = seen - x0a  # (b, 3, H, W) as seen: what the metrics describe
    l2 = metrics.l2_255(delta)  # (b,)
    nan = torch.full_like(loss, float("nan"))
    emb = emb.detach()
    row = torch.stack([
        loss.detach(), metrics.cosine(emb, ta), torch.linalg.vector_norm(emb - ta, dim=1),
        metrics.l1_255(delta), l2, metrics.linf_255(delta),
        metrics.psnr_from_mse((l2 / metrics.LEVELS) ** 2 / delta[0].numel()),
        nan if grad is None else _norms(grad), torch.as_tensor(search.passes[running]).to(loss),
    ]).double().cpu().numpy()  # (M, b): one device sync per step
    search.history.append(running, row)

    return seen, leaf.detach() - x0a, grad, row


def _check_divergence(search: _Search, running: np.ndarray, row: np.ndarray, k: int, has_grad: bool) -> None:
    """Raise on a non-finite loss or gradient, or a loss ``diverge_factor`` times its initial value."""
    lv, gn = row[0], row[-2]
    if k == 0:
        search.initial_loss[running] = lv
    bad = ~np.isfinite(lv) | (~np.isfinite(gn) & has_grad)
    blown = (lv > search.diverge_factor * search.initial_loss[running]) & (search.initial_loss[running] > 0)
    if bad.any() or blown.any():
        j = int(np.flatnonzero(bad | blown)[0])
        what = "a non-finite loss or gradient" if bad[j] else f"a loss {search.diverge_factor:g}x its initial value"
        raise _Diverged(f"matching pair {running[j]} hit {what} at step {k} (loss {lv[j]:.4g}); "
                        "lower the step size or check the model and inputs", pair=int(running[j]), step=k)


class _Diverged(Exception):
    def __init__(self, message: str, *, pair: int, step: int) -> None:
        super().__init__(message)
        self.pair, self.step = pair, step


def _keep(search: _Search, running: np.ndarray, seen: torch.Tensor, delta: torch.Tensor, row: np.ndarray,
          feasible: np.ndarray, k: int) -> None:
    """Update what each running pair returns: a smaller feasible image, or the latest while none was feasible."""
    l2 = row[HISTORY_KEYS.index("l2_255")]
    better = feasible & (l2 < search.out_l2[running])
    take = better | ~(search.converged[running] | feasible)
    search.out_l2[running[better]] = l2[better]
    search.converged[running[feasible]] = True
    search.steps[running[take]] = k
    if take.any():
        idx = torch.as_tensor(np.flatnonzero(take), device=seen.device)
        rows = torch.as_tensor(running[take], device=seen.device)
        search.out = search.out.index_copy(0, rows, seen[idx])
        search.out_x = search.out_x.index_copy(0, rows, search.x0.index_select(0, rows) + delta[idx])


def _apply_step(search: _Search, running: np.ndarray, moving: np.ndarray, delta: torch.Tensor, grad: torch.Tensor,
                progress: Progress) -> None:
    """The step rule's update for the pairs at positions ``moving`` of ``running``, projected and boxed."""
    device = search.x0.device
    pick = _index(moving, len(running), device)
    update_index = _index(running[moving], len(search.x0), device)
    x0s, gray_s = _rows(search.x0, update_index), _rows(search.gray, update_index)  # (m, 3, H, W), (m,)
    sub_state = {n: _rows(s, update_index) for n, s in search.state.items()}
    g = _to_gray(_rows(grad, pick), gray_s)  # (m, 3, H, W)
    new_delta, sub_state = search.rule.step(_rows(delta, pick), g, sub_state, progress)
    new_delta = _to_gray(new_delta, gray_s)
    if search.budget is not None:
        new_delta = search.budget.project(new_delta)
    xs = (x0s + new_delta).clamp(_rows(search.lo, update_index), _rows(search.hi, update_index))  # (m, 3, H, W)
    search.state = {n: _set_rows(search.state[n], update_index, s) for n, s in sub_state.items()}
    search.x = _set_rows(search.x, update_index, xs)


def _observe(search: _Search, running: np.ndarray, k: int, precision: Precision, goal: np.ndarray | None,
             with_grad: bool):
    """Evaluate the running pairs as history row k, keep what each returns, and check for divergence.

    Returns the iterates' perturbations and gradient (for :func:`_advance`), the history row and which pairs
    meet ``goal`` (b,)."""
    seen, delta, grad, row = _evaluate(search, running, k, precision, with_grad)
    feasible = search.meets(row[1], row[2], running, goal)  # (b,)
    _keep(search, running, seen, delta, row, feasible, k)
    _check_divergence(search, running, row, k, has_grad=with_grad)
    return delta, grad, row, feasible


def _advance(search: _Search, running: np.ndarray, moving: np.ndarray, delta: torch.Tensor, grad: torch.Tensor,
             row: np.ndarray, feasible: np.ndarray, step: int, max_steps: int, goal: np.ndarray | None) -> None:
    """The rule's update for the pairs at positions ``moving`` of ``running``, at ``step`` of its schedule."""
    progress = Progress(cosine=torch.as_tensor(row[1][moving], dtype=torch.float32),
                        feasible=torch.as_tensor(feasible[moving]), step=step, max_steps=max_steps,
                        goal=None if goal is None else torch.as_tensor(goal[running[moving]], dtype=torch.float32))
    _apply_step(search, running, moving, delta, grad, progress)


def _search(search: _Search, max_steps: int, goal: np.ndarray | None, precision: Precision, bar,
            callback: Callable[[int], bool | None] | None) -> str:
    """The main phase: step every running pair until it is done (met the goal, for rules that do not refine),
    the cap, or the callback says stop. Returns why it stopped."""
    for k in range(max_steps + 1):
        running = np.flatnonzero(search.active)
        last = k == max_steps
        delta, grad, row, feasible = _observe(search, running, k, precision, goal, with_grad=not last)
        done = feasible & (not search.rule.refines)
        search.active[running[done]] = False
        bar.set_postfix(lowest_cos=f"{np.nanmin(row[1]):.4f}", done=f"{search.converged.sum()}/{len(search.x0)}",
                        refresh=False)
        if callback is not None and callback(k):
            return "callback"
        if not search.active.any():
            return "converged"
        if last:
            return "max_steps"
        moving = np.flatnonzero(~done)  # positions (within the running pairs) that take this step
        _advance(search, running, moving, delta, grad, row, feasible, k, max_steps, goal)
        bar.update(1)
    return "max_steps"


def _check_float32(search: _Search, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(B,) float32 cosine and embedding distance of each pair's image (B, 3, H, W) to its target."""
    with torch.no_grad():
        emb = search.model.embed(images).float()  # (B, D)
    target = search.target.float()
    cosine = metrics.cosine(emb, target).double().cpu().numpy()
    return cosine, torch.linalg.vector_norm(emb - target, dim=1).double().cpu().numpy()


SETTLE_STEPS = 24  # float32 steps a pair whose bfloat16 match falls short in float32 may take


def _settle_float32(search: _Search, pairs: np.ndarray, first_row: int, max_steps: int) -> None:
    """Pairs whose bfloat16 match falls short in float32 go on searching in float32, from the iterate their
    returned image was seen from and with fresh rule state, until the image meets the goal (at most
    :data:`SETTLE_STEPS` steps). A pair that still falls short keeps the image it had and is reported as not converged.

    Why the rule and not a jump to the linearized boundary: on the 8-bit lattice a step below half a gray level
    rounds away, and a step large enough to survive rounding is no longer first order (such jumps wrecked a pair
    at stop cosine 0.95 down to PSNR 7 dB). The rule's own steps are small and stay near the boundary.
    """
    index = torch.as_tensor(pairs, device=search.x0.device)
    kept, kept_steps = search.out.index_select(0, index), search.steps[pairs].copy()  # (p, 3, H, W), (p,)
    search.x = search.out_x.clone()
    search.state = {n: _set_rows(search.state[n], index, s)
                    for n, s in search.rule.init_state(search.x0.index_select(0, index)).items()}
    search.active[:] = False
    search.active[pairs] = True
    search.converged[pairs] = False  # judged again, in float32
    search.out_l2[pairs] = np.inf
    for j in range(SETTLE_STEPS + 1):
        k, last = first_row + j, j == SETTLE_STEPS
        running = np.flatnonzero(search.active)
        delta, grad, row, feasible = _observe(search, running, k, "float32", search.stop_cos, with_grad=not last)
        search.active[running[feasible]] = False  # done once it holds, whether or not the rule refines
        if last or not search.active.any():
            break
        _advance(search, running, np.flatnonzero(~feasible), delta, grad, row, feasible, max_steps + j, max_steps,
                 search.stop_cos)  # past the cap: the rule's schedule at its end
    search.active[:] = False
    short = ~search.converged[pairs]  # (p,)
    if short.any():  # never return a worse image than the search found
        rows = torch.as_tensor(np.flatnonzero(short), device=index.device)
        search.out = search.out.index_copy(0, index[rows], kept.index_select(0, rows))
        search.steps[pairs[short]] = kept_steps[short]


def match_embeddings(
    model,
    sources: torch.Tensor,
    targets: torch.Tensor,
    *,
    step_rule: StepRule | str | None = None,
    budget: Budget | None = None,
    box: Literal["unit", "source"] = "unit",
    max_steps: int = 300,
    stop_cos: float | np.ndarray | None = 0.99,
    stop_dist2: float | np.ndarray | None = None,
    keep_gray: bool = True,
    quantize: bool | None = None,
    precision: str = "auto",
    diverge_factor: float = 1e4,
    progress: bool = True,
    callback: Callable[[int, MatchResult], bool | None] | None = None,
) -> MatchResult:
    """Move each source image (B, 3, H, W) in [0, 1] until its embedding matches its target.

    ``targets``: target embeddings (B, D) or target images (B, 3, H, W). ``step_rule``: a :class:`StepRule` or
    its name in :data:`STEP_RULES`; None is the default, :class:`MinNorm` (the smallest change that reaches the
    threshold). After every step the perturbation is projected into ``budget`` (if any), then pixels into
    ``box``. A pair meets the goal once cosine(f(x), f(x_tg)) >= ``stop_cos`` (a number, or one per pair: a sweep
    of stop cosines runs as one batch) and, if ``stop_dist2`` is set (a number, or one per pair),
    ||f(x) - f(x_tg)||^2 < ``stop_dist2``, as the authors required both (squared L2 below 1e-4 by default, 4 or 16
    in examples; cosine above 0.96-0.99); ``stop_cos=None`` runs every pair for ``max_steps``. A pair that meets
    the goal is frozen, unless its rule refines (min-norm): then it keeps looking for a smaller change until the
    cap, and the smallest one that met the goal is returned.

    ``quantize`` (the default without a ``budget``): the model is shown each image rounded to 8 bits
    (straight-through gradient), so the returned images are 8-bit images that meet the goal as saved PNGs do.
    With a budget it defaults to False: the ball is a hard limit on the float image, which rounding could cross.
    ``precision``: "auto" runs the model's forward in bfloat16 where the hardware does it natively (see
    :mod:`vitequiv.precision`); it aims :func:`bf16_margin` above ``stop_cos``, the result is checked in float32,
    and a pair that falls short there goes on in float32 until it holds (or keeps its image, not converged).
    ``MatchResult.precision`` says which ran.

    The run ends when every pair is done, after ``max_steps`` updates, when ``callback(step, result_so_far)``
    returns True, or on KeyboardInterrupt; each returns what was found so far. A NaN/inf loss or gradient, or a
    pair loss above ``diverge_factor`` times its initial loss, raises :class:`MatchingError`. ``keep_gray``: see
    :mod:`vitequiv.matching`. Each step costs one forward and one backward pass of the pairs still running.
    """
    start = time.perf_counter()
    search = _start(model, sources, targets, step_rule=step_rule, budget=budget, box=box,
                               max_steps=max_steps, stop_cos=stop_cos, stop_dist2=stop_dist2, keep_gray=keep_gray,
                               quantize=quantize, diverge_factor=diverge_factor)
    precision = resolve_precision(precision, search.x0.device)
    stop = search.stop_cos  # (B,) or None
    reported_stop = stop if stop is None or np.ndim(stop_cos) else float(stop[0])  # as given: one, or one per pair
    goal = None if stop is None else np.minimum(stop + (bf16_margin(stop) if precision == "bfloat16" else 0.0), 1.0)

    def result(stopped_by: str) -> MatchResult:
        return MatchResult(
            images=search.out, sources=search.x0, target_embeddings=search.target, history=search.history.view(),
            converged=search.converged.copy(), steps=search.steps.copy(), passes=search.passes.copy(),
            elapsed_s=time.perf_counter() - start, stopped_by=stopped_by, stop_cos=reported_stop,
            step_rule=repr(search.rule), precision=precision, quantized=search.quantize,
        )

    bar = tqdm(total=max_steps, desc="matching", disable=not progress)
    stopped_by = "max_steps"
    try:
        stopped_by = _search(search, max_steps, goal, precision, bar,
                             None if callback is None else lambda k: callback(k, result("callback")))
        out = _finish(search, result(stopped_by), max_steps)
    except KeyboardInterrupt:
        stopped_by = "interrupted"
    except _Diverged as e:
        raise MatchingError(str(e), pair=e.pair, step=e.step, result=result(stopped_by)) from None
    finally:
        bar.close()
    if stopped_by == "interrupted":
        out = _finish(search, result(stopped_by), max_steps)
    out.elapsed_s = time.perf_counter() - start
    return out


BF16_COS_MARGIN = 2e-3  # bfloat16 searches aim bf16_margin(stop_cos) above stop_cos


def bf16_margin(stop_cos: float | np.ndarray) -> float | np.ndarray:
    """How far above ``stop_cos`` (a number or one per pair) a bfloat16 search aims. bfloat16 perturbs the
    embedding by a small relative error e, which moves the cosine by about e * sin(angle to the target)
    = e * sqrt(1 - cos^2): on the embedded model its error was about 1e-4 at cosine 0.99 and 8e-4 at 0.95."""
    return BF16_COS_MARGIN * np.sqrt(np.maximum(1 - np.square(stop_cos), 0.0))


def _start(model, sources, targets, *, step_rule, budget, box, max_steps, stop_cos, stop_dist2, keep_gray,
           quantize, diverge_factor) -> _Search:
    """Check the arguments and set up every pair's state."""
    sources = as_images(sources, "sources", dtype=model_dtype(model), hw=model_hw(model))  # (B, 3, H, W)
    _positive("max_steps", max_steps, integer=True, allow_zero=True)
    _positive("diverge_factor", diverge_factor)
    if budget is not None and not isinstance(budget, Budget):
        raise TypeError(f"budget must be a LinfBall, an L2Ball or None, got {budget!r}")
    if quantize is None:
        quantize = budget is None
    if not isinstance(quantize, bool):
        raise TypeError(f"quantize must be True, False or None (True without a budget), got {quantize!r}")
    rule = make_step_rule(step_rule, model=model)
    device = sources.device
    x0 = sources.detach().clone()  # (B, 3, H, W), private: the caller may reuse its tensor
    pairs = x0.shape[0]
    target = target_embeddings(model, targets, pairs=pairs, device=device)  # (B, D)
    lo, hi = _box(x0, box)  # each (B, 1, 1, 1)
    gray = gray_pairs(x0) if keep_gray else torch.zeros(pairs, dtype=torch.bool, device=device)  # (B,)
    search = _Search(
        model=model, rule=rule, x0=x0, target=target, lo=lo, hi=hi, gray=gray, budget=budget,
        stop_cos=_stop_cos(stop_cos, pairs), dist2=_stop_dist2(stop_dist2, pairs), quantize=quantize,
        diverge_factor=diverge_factor,
        x=x0, state=rule.init_state(x0), out=x0, out_x=x0, out_l2=np.full(pairs, np.inf),
        active=np.ones(pairs, dtype=bool), converged=np.zeros(pairs, dtype=bool), steps=np.zeros(pairs, dtype=np.int64),
        passes=np.zeros(pairs, dtype=np.int64), history=_History(pairs), initial_loss=np.full(pairs, np.nan),
    )
    return search


def _stop_cos(stop_cos, pairs: int) -> np.ndarray | None:
    """``stop_cos`` as (B,) cosines in [-1, 1], or None."""
    if stop_cos is None:
        return None
    bad = ValueError(f"stop_cos must be a cosine in [-1, 1], one per pair ({pairs}), or None, got {stop_cos!r}")
    if isinstance(stop_cos, (bool, str, bytes, np.bool_)):
        raise bad
    try:
        values = (stop_cos.detach().double().cpu().numpy() if isinstance(stop_cos, torch.Tensor)
                  else np.asarray(stop_cos))
    except (TypeError, ValueError, RuntimeError):
        raise bad from None
    if values.dtype.kind not in "iuf" or values.ndim > 1 or (values.ndim == 1 and len(values) != pairs):
        raise bad
    values = values.astype(float)
    if not (np.isfinite(values).all() and (np.abs(values) <= 1).all()):
        raise bad
    return np.broadcast_to(values, (pairs,)).copy()


def _stop_dist2(stop_dist2, pairs: int) -> np.ndarray | None:
    """``stop_dist2`` as (B,) positive finite thresholds, or None."""
    if stop_dist2 is None:
        return None
    values = np.asarray(stop_dist2, dtype=float) if not isinstance(stop_dist2, torch.Tensor) else \
        stop_dist2.detach().double().cpu().numpy()
    if values.ndim > 1 or (values.ndim == 1 and len(values) != pairs):
        raise ValueError(f"stop_dist2 must be a number or one per pair ({pairs}), got shape {values.shape}")
    if not (np.isfinite(values).all() and (values > 0).all()):
        raise ValueError(f"stop_dist2 must be > 0 and finite (a squared embedding distance), got {stop_dist2!r}")
    return np.broadcast_to(values, (pairs,))


def _finish(search: _Search, out: MatchResult, max_steps: int) -> MatchResult:
    """The result with compact history and float32 checks of the returned images; after a bfloat16 search, a pair
    that falls short in float32 is settled in float32 first."""
    def check() -> tuple[np.ndarray, np.ndarray]:  # float32, of the 8-bit images (what a PNG keeps)
        return _check_float32(search, metrics.quantize_8bit(search.out))

    quantized = check()
    if out.precision != "float32":
        checked = quantized if search.quantize else _check_float32(search, search.out)
        everyone = np.arange(len(search.x0))
        short = np.flatnonzero(search.converged & ~search.meets(*checked, everyone, search.stop_cos))
        if len(short) and out.stopped_by != "interrupted":
            _settle_float32(search, short, first_row=search.history.n, max_steps=max_steps)
            quantized = check()
            checked = quantized if search.quantize else _check_float32(search, search.out)
        out.checked = {"cosine": checked[0], "embed_l2": checked[1]}
        search.converged &= search.meets(*checked, everyone, search.stop_cos)
    out.images, out.converged, out.steps, out.passes = search.out, search.converged.copy(), search.steps.copy(), \
        search.passes.copy()
    out.history = {n: v.copy() for n, v in search.history.view().items()}  # compact, off the growable buffer
    out.quantized_cosine = quantized[0]
    return out


def paper_match(
    model,
    sources: torch.Tensor,
    targets: torch.Tensor,
    *,
    lr: float = 0.08,
    stop_cos: float = 0.99,
    stop_dist2: float | None = 1e-4,
    max_steps: int = 15_000,
    **kwargs,
) -> MatchResult:
    """The authors' matcher: plain descent on the normalized input (``PaperGD`` with the model's ``std``), pixels
    clamped to the source's own [min, max], stop at cosine >= ``stop_cos`` AND squared L2 < ``stop_dist2``, or
    the step cap.

    Defaults are those of their public code. They clamped the normalized tensor to its global min/max; here the
    clamp is to the source's min/max in [0, 1] pixels, the same idea without leaving the valid range.
    """
    rule = PaperGD(lr, input_std=getattr(model, "std", None))
    return match_embeddings(
        model, sources, targets, step_rule=rule, box="source", max_steps=max_steps, stop_cos=stop_cos,
        stop_dist2=stop_dist2, **kwargs,
    )
