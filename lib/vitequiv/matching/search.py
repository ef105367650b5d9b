"""Embedding matching: change a source image's pixels until its embedding equals a target's.

This is the paper's core experiment: find x = x0 + dx, close to the source x0 in pixels, with f(x) = f(x_tg).
``match_embeddings`` runs it for many (source, target) pairs at once; how a gradient becomes a pixel update
is a small pluggable :class:`StepRule` (in the style of MadryLab's ``robustness`` attacker steps), named by
string in :data:`STEP_RULES`, and the allowed perturbation is an optional :class:`Budget` plus a pixel box.

The default step rule, :class:`MinNorm`, looks for the *smallest* change that reaches the cosine threshold, so
that the matched image is visually indistinguishable from its source (see its docstring for why it works the
way it does). The others reproduce the paper (:class:`PaperGD`), or are the usual adversarial steps.

Losses. A rule says which loss it descends. ``"mse"``: each pair's loss is the mean over the D embedding
dimensions of (f(x) - f(x_tg))^2, i.e. what the authors' code computes with ``F.mse_loss`` for one pair; it is
(2 / D) times the paper's 1/2 ||f(x) - f(x_tg)||^2, so the minimizer is the same and the authors' learning
rates carry over to :class:`PaperGD` unchanged. ``"cosine"``: 1 - cos(f(x), f(x_tg)), the stopping criterion
itself, blind to the embedding's length. Pair losses are summed (not averaged) over the batch, so each pair's
gradient is independent of the batch size and a batched run equals running every pair alone.

Gray stays gray. A source whose three channels are equal (a gray photo) gets a perturbation that is equal in
all three channels too, with every rule: the gradient and the new perturbation are averaged over the channels
(``keep_gray=False`` turns this off).

Units. Pixels live in [0, 1]; step sizes are in those units; budgets and the recorded perturbation sizes are in
1/255 units (8-bit gray levels). One *pass* is one forward and one backward of one image through the model.
"""
from __future__ import annotations

import math
import numbers
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from . import metrics
from .precision import Precision, autocast, resolve_precision
from .tensors import as_images, image_shape, model_dtype, model_hw, target_embeddings

State = dict[str, torch.Tensor]  # per-pair rule state, every tensor with leading dimension B
HISTORY_KEYS = ("loss", "cosine", "embed_l2", "l1_255", "l2_255", "linf_255", "psnr", "grad_norm", "passes")
PSNR_40_L2 = math.sqrt(1e-4)  # root-mean-square pixel change of PSNR 40 dB, in [0, 1] units


class MatchingError(RuntimeError):
    """Matching produced a NaN/inf loss or gradient, or a loss that blew up; names the pair and step."""

    def __init__(self, message: str, *, pair: int, step: int, result: MatchResult | None = None) -> None:
        super().__init__(message)
        self.pair, self.step, self.result = pair, step, result  # result: what was found before the failure


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


# ---------------------------------------------------------------------------------------------- step rules


@dataclass(frozen=True)
class Progress:
    """What a step rule may look at besides the gradient, for the pairs that take this step."""

    cosine: torch.Tensor  # (m,) cosine of each pair's embedding to its target now (of the image the model saw)
    feasible: torch.Tensor  # (m,) bool: the pair meets the goal now (cosine >= goal, and stop_dist2 if set)
    step: int  # updates applied so far (0 on the first update)
    max_steps: int
    goal: torch.Tensor | None  # (m,) the cosine each pair aims for: its stop_cos plus the precision's margin


class StepRule:
    """Turns the gradient of each pair's loss into a new perturbation.

    Simple rules implement ``update(grad, state) -> (u, state)`` and the perturbation becomes ``dx - u``.
    Rules that need more (the perturbation itself, how close each pair is to its target) override ``step``.
    ``init_state`` and both methods work on whole rows (pairs): the matcher hands in only the pairs still
    running, so a finished pair's state is never touched; neither may modify ``state`` in place.
    """

    label = ""  # the name readers see (figure legends, tables)
    loss: Literal["mse", "cosine"] = "mse"  # the loss whose gradient the rule is given
    refines = False  # True: a pair that meets the goal keeps stepping (the matcher keeps its smallest such point)

    def init_state(self, x0: torch.Tensor) -> State:
        return {}

    def update(self, grad: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        raise NotImplementedError

    def step(
        self, delta: torch.Tensor, grad: torch.Tensor, state: State, progress: Progress,
    ) -> tuple[torch.Tensor, State]:
        """The new perturbation (m, 3, H, W) of each pair, from its current one and its gradient."""
        update, state = self.update(grad, state)
        return delta - update, state

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"


class PaperGD(StepRule):
    """The authors' plain gradient descent, x <- x - lr * grad of the MSE loss.

    They stepped on the model's normalized input n = (x - mean) / std; in pixels that step is
    lr * std^2 * grad_x. Pass the model's per-channel ``input_std`` to reproduce it exactly (``paper_match``
    and ``make_step_rule("paper-gd", model=...)`` do); leave it None for plain descent on the pixels.
    """

    label = "paper GD"

    def __init__(self, lr: float = 0.08, input_std: torch.Tensor | None = None) -> None:
        _positive("lr", lr)
        self.lr = lr
        self.input_std = input_std

    def update(self, grad: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        if self.input_std is None:
            return self.lr * grad, state
        scale = self.input_std.to(grad).reshape(1, -1, 1, 1).pow(2)  # (1, 3, 1, 1)
        return self.lr * scale * grad, state  # (B, 3, H, W)


class Adam(StepRule):
    """Adam with per-pair moments and step counts; ``lr`` is roughly the per-pixel step in [0, 1] units."""

    label = "Adam"

    def __init__(self, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        _positive("lr", lr)
        if not all(0 <= b < 1 for b in betas):
            raise ValueError(f"betas must lie in [0, 1), got {betas!r}")
        self.lr, self.betas, self.eps = lr, betas, eps

    def init_state(self, x: torch.Tensor) -> State:
        zeros = torch.zeros_like(x)  # (B, 3, H, W)
        return {"m": zeros, "v": zeros, "t": torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)}

    def update(self, grad: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        b1, b2 = self.betas
        t = state["t"] + 1  # (B,)
        m = state["m"].lerp(grad, 1 - b1)  # (B, 3, H, W)
        v = (state["v"] * b2).addcmul_(grad, grad, value=1 - b2)  # (B, 3, H, W)
        # lr * m_hat / (sqrt(v_hat) + eps) with per-pair bias corrections, in as few full-size passes as possible
        denom = v.sqrt().div_(_per_pair((1 - b2**t).sqrt())).add_(self.eps)  # (B, 3, H, W)
        return m.div(denom).mul_(_per_pair(self.lr / (1 - b1**t))), {"m": m, "v": v, "t": t}


class SignGD(StepRule):
    """Signed gradient (FGSM / L-inf PGD step): every pixel moves by exactly ``lr`` (or stays)."""

    label = "signed"

    def __init__(self, lr: float = 1 / 255) -> None:
        _positive("lr", lr)
        self.lr = lr

    def update(self, grad: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        return self.lr * grad.sign(), state


class NormalizedGD(StepRule):
    """Gradient scaled to Euclidean length ``lr`` per pair (L2 PGD step); ``lr`` in [0, 1] units."""

    label = "normalized"

    def __init__(self, lr: float = 0.5) -> None:
        _positive("lr", lr)
        self.lr = lr

    def update(self, grad: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        return self.lr * grad / _per_pair(_norms(grad).clamp_min(1e-12)), state


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


class MinNorm(StepRule):
    """The smallest change that reaches the cosine threshold: the suite's default step rule (FMN, Pintor et al. 2021).

    Each step moves along the normalized gradient of 1 - cos (with momentum), inside a ball around the source
    whose radius the rule controls per pair, in two phases:

    - *Growth*, until the pair first meets the goal: the radius becomes ||dx|| + beta * gap / ||grad||, a fraction
      beta of the first-order distance still to go (gap = goal - cos), and never shrinks. ``beta`` stays at
      ``growth[0]`` for the first ``patience`` of the step cap and then rises quadratically to ``growth[1]``, so an
      easy pair arrives near its smallest radius and a hard one still arrives in time.
    - *Refinement*, after that (``refine=True``): FMN's multiplicative control. While the pair meets the goal the
      radius shrinks to min(radius * (1 - gamma), smallest feasible norm so far); when it falls off it grows by
      (1 + gamma). ``gamma`` is cosine-annealed from ``gamma[0]`` to ``gamma[1]`` over the cap. The matcher keeps
      every pair running to the cap and returns the smallest-norm image that met the goal.

    The step length is ``lr`` times the radius, cosine-annealed to ``anneal_floor`` of that over the cap, so the
    last steps are fine enough to settle on the boundary. ``metric="perceptual"`` measures radius, steps and the
    steepest direction in the metric of :func:`perceptual_weights`, which puts the change where SSIM notices it
    least.

    Why this one. Measured on the embedded DINOv2-S/14 at 224 px (``benchmarks/bench_min_norm.py`` has the final
    comparison on the six pairs of notebook 01):
    - steps along the normalized gradient stay in the span of the Jacobian's rows, the few directions that move
      the embedding; Adam and signed steps scale every pixel alike and spread the change over the null space
      (Adam: PSNR 29-35 dB at the same cosine);
    - a fixed L2 ball needs its radius in advance (2 of 6 pairs at PSNR 40 dB), a radius ramped on a fixed
      schedule wastes passes on easy pairs or runs out on hard ones (5 of 6); the FMN radius adapts per pair and
      to any model's scale (a random tiny ViT needs 24 dB where DINOv2 needs 35-41);
    - growth alone stops at the first crossing, 1-3 dB short of the smallest change: the refinement is what
      finds it (see the benchmark's frontier for the gain per pass);
    - the perceptual metric raises SSIM (median 0.976 against 0.96) for about 1 dB of PSNR;
    - L-BFGS on a norm-penalized loss, and radius control without step annealing, did worse.
    """

    label = "min-norm"
    loss = "cosine"

    def __init__(self, lr: float = 1 / 8, momentum: float = 0.9, growth: tuple[float, float] = (0.05, 0.3),
                 patience: float = 0.6, anneal_floor: float = 0.05, metric: Literal["l2", "perceptual"] = "l2",
                 refine: bool = True, gamma: tuple[float, float] = (0.05, 0.001)) -> None:
        _positive("lr", lr)
        if not (0 <= momentum < 1 and 0 < anneal_floor <= 1 and 0 < growth[0] <= growth[1] and 0 <= patience < 1
                and 0 < gamma[1] <= gamma[0] < 1):
            raise ValueError(f"need 0 <= momentum < 1, 0 < anneal_floor <= 1, 0 < growth[0] <= growth[1], "
                             f"0 <= patience < 1 and 0 < gamma[1] <= gamma[0] < 1, got momentum={momentum!r}, "
                             f"anneal_floor={anneal_floor!r}, growth={growth!r}, patience={patience!r}, "
                             f"gamma={gamma!r}")
        if metric not in ("l2", "perceptual"):
            raise ValueError(f"metric must be 'l2' or 'perceptual', got {metric!r}")
        if not isinstance(refine, bool):
            raise TypeError(f"refine must be True or False, got {refine!r}")
        self.lr, self.momentum, self.growth, self.patience = lr, momentum, tuple(growth), patience
        self.anneal_floor, self.metric, self.refines, self.gamma = anneal_floor, metric, refine, tuple(gamma)

    def init_state(self, x0: torch.Tensor) -> State:
        state = {"m": torch.zeros_like(x0), "radius": x0.new_zeros(x0.shape[0]),  # (B, 3, H, W), (B,)
                 "best": torch.full_like(x0[:, 0, 0, 0], math.inf)}  # (B,) smallest feasible norm so far
        if self.metric == "perceptual":
            state["weights"] = perceptual_weights(x0)  # (B, 3, H, W)
        return state

    def beta(self, u: float) -> float:
        """The growth gain at fraction ``u`` of the step cap."""
        late = max(0.0, (u - self.patience) / (1 - self.patience))
        return self.growth[0] + (self.growth[1] - self.growth[0]) * late**2

    def _annealed(self, start: float, end: float, u: float) -> float:
        return end + (start - end) * 0.5 * (1 + math.cos(math.pi * min(u, 1.0)))

    def step(self, delta, grad, state, progress):
        weights = state.get("weights")

        def norm(v: torch.Tensor) -> torch.Tensor:  # (m,) in the rule's metric
            return _norms(v if weights is None else v * weights.sqrt()).clamp_min(1e-30)

        u = progress.step / max(progress.max_steps, 1)  # fraction of the step cap used
        direction = grad if weights is None else grad / weights  # steepest descent in the metric
        goal = 1.0 if progress.goal is None else progress.goal.to(delta)  # (m,)
        gap = (goal - progress.cosine.to(delta)).clamp_min(0)  # (m,)
        now = norm(delta)  # (m,)
        to_go = now * (progress.step > 0) + self.beta(u) * gap / norm(direction)  # first-order distance left
        radius = torch.maximum(state["radius"], to_go)  # (m,) growth
        best = state["best"]
        if self.refines:
            feasible = progress.feasible.to(delta.device)  # (m,)
            best = torch.where(feasible, torch.minimum(best, now), best)
            gamma = self._annealed(*self.gamma, u)
            refined = torch.where(feasible, torch.minimum(state["radius"] * (1 - gamma), best),
                                  state["radius"] * (1 + gamma))
            radius = torch.where(torch.isfinite(best), refined, radius)  # (m,)
        length = self.lr * radius * self._annealed(1.0, self.anneal_floor, u)
        m = self.momentum * state["m"] + direction / _per_pair(norm(direction))  # (m, 3, H, W)
        new = delta - _per_pair(length) * m / _per_pair(norm(m))
        new = new * _per_pair((radius / norm(new)).clamp(max=1.0))
        return new, dict(state, m=m, radius=radius, best=best)


def make_step_rule(rule: str | StepRule | None = None, *, lr: float | None = None, model=None) -> StepRule:
    """A step rule by name (a key of :data:`STEP_RULES`), or ``rule`` itself; None gives the default, "min-norm".

    ``lr`` overrides the rule's default step size. "paper-gd" steps on the normalized input as the authors did,
    so it takes ``model``'s per-channel ``std`` when a model is given.
    """
    if isinstance(rule, StepRule):
        if lr is not None:
            raise ValueError("lr applies to a step rule given by name; set it on the StepRule object instead")
        return rule
    rule = DEFAULT_STEP_RULE if rule is None else rule
    if not isinstance(rule, str):
        raise TypeError(f"step_rule must be a StepRule or one of {', '.join(STEP_RULES)}, got {rule!r}")
    key = rule.strip().lower().replace(" ", "-").replace("_", "-")
    if key not in STEP_RULES:
        raise ValueError(f"Unknown step rule {rule!r}; choose one of {', '.join(STEP_RULES)} or pass a StepRule.")
    kwargs = {} if lr is None else {"lr": lr}
    if key == "paper-gd" and model is not None and getattr(model, "std", None) is not None:
        kwargs["input_std"] = model.std
    return STEP_RULES[key](**kwargs)


# Step rules by name, as notebooks, profiles and the explorer refer to them.
STEP_RULES: dict[str, type[StepRule]] = {
    "min-norm": MinNorm, "adam": Adam, "paper-gd": PaperGD, "sign": SignGD, "normalized": NormalizedGD,
}
DEFAULT_STEP_RULE = "min-norm"


# ------------------------------------------------------------------------------------------------- budgets


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


# ------------------------------------------------------------------------------------------------- result


@dataclass
class MatchResult:
    """What ``match_embeddings`` found. Arrays indexed by pair are NumPy; images stay on the sources' device.

    ``images`` are each pair's returned image: with a refining rule (min-norm) the smallest change that met the
    goal, otherwise the last one; with ``quantized`` they are exactly 8-bit (k/255) images, what a PNG keeps.

    ``history[key]`` has shape (T, B): row k describes each pair's image after k updates (row 0 is the source),
    as the model saw it (rounded to 8 bits when ``quantized``, run in ``precision``), NaN where the pair did not
    run. Keys: ``loss`` (the loss the step rule descends), ``cosine`` and ``embed_l2`` to the target embedding,
    ``l1_255``/``l2_255``/``linf_255`` of x - x0 in 1/255 units, ``psnr`` (dB) of x against x0, ``grad_norm``
    (Euclidean norm of the pixel gradient; NaN where none was computed) and ``passes`` (forward+backward passes
    spent on the pair so far, this row's included). ``final`` reads each pair's returned image's row, with its
    cosine and embedding distance recomputed in float32 when the search ran in bfloat16 (``checked``).
    """

    images: torch.Tensor  # (B, 3, H, W) in [0, 1], detached
    sources: torch.Tensor  # (B, 3, H, W)
    target_embeddings: torch.Tensor  # (B, D)
    history: dict[str, np.ndarray]  # each (T, B)
    converged: np.ndarray  # (B,) bool: the returned image meets the stop rule (in float32)
    steps: np.ndarray  # (B,) int: the history row of the returned image (updates applied to reach it)
    passes: np.ndarray  # (B,) int: forward+backward passes spent on each pair, all of them
    elapsed_s: float
    stopped_by: Literal["converged", "max_steps", "callback", "interrupted"]
    stop_cos: float | np.ndarray | None  # as given: one cosine, or (B,) one per pair
    step_rule: str = ""
    quantized_cosine: np.ndarray | None = None  # (B,) float32 cosine of f(quantize_8bit(images)) to the target
    precision: str = "float32"  # what the model's forward ran in during the search ("float32" or "bfloat16")
    quantized: bool = False  # the model saw (and the result holds) 8-bit images
    checked: dict[str, np.ndarray] | None = None  # (B,) float32 cosine and embed_l2 of the returned images

    @property
    def interrupted(self) -> bool:
        return self.stopped_by == "interrupted"

    @property
    def final(self) -> dict[str, np.ndarray]:
        """Each history metric at each pair's returned image, shape (B,) (cosine and embed_l2 in float32)."""
        n = len(self.history["loss"])
        if n == 0:
            return {k: np.full(len(self.steps), np.nan) for k in self.history}
        rows = np.minimum(self.steps, n - 1)
        return {k: v[rows, np.arange(v.shape[1])] for k, v in self.history.items()} | (self.checked or {})

    @property
    def survives_8bit(self) -> np.ndarray | None:
        """(B,) bool: the match still meets the cosine threshold after rounding the image to 8 bits."""
        if self.quantized_cosine is None or self.stop_cos is None:
            return None
        return self.quantized_cosine >= self.stop_cos

    @property
    def delta(self) -> torch.Tensor:
        return self.images - self.sources  # (B, 3, H, W)

    def ssim(self) -> np.ndarray:
        """(B,) structural similarity of each matched image to its source."""
        return metrics.ssim(self.images, self.sources)

    def to_frame(self):
        """History as a long pandas DataFrame with columns step, pair and one per metric."""
        import pandas as pd

        t, b = self.history["loss"].shape
        frame = pd.DataFrame({"step": np.repeat(np.arange(t), b), "pair": np.tile(np.arange(b), t)})
        for k, v in self.history.items():
            frame[k] = v.reshape(-1)
        return frame.dropna(subset=["loss"]).reset_index(drop=True)


class _History:
    """Per-step (M, B) rows in a growable buffer, so reading it every step (for a callback) stays cheap."""

    def __init__(self, pairs: int) -> None:
        self.buffer = np.full((64, len(HISTORY_KEYS), pairs), np.nan)
        self.n = 0

    def append(self, columns: np.ndarray, values: np.ndarray) -> None:
        if self.n == len(self.buffer):
            self.buffer = np.concatenate([self.buffer, np.full_like(self.buffer, np.nan)])
        self.buffer[self.n][:, columns] = values  # values (M, b) for the pairs in ``columns``
        self.n += 1

    def view(self) -> dict[str, np.ndarray]:
        return {k: self.buffer[: self.n, i] for i, k in enumerate(HISTORY_KEYS)}


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
    the module docstring. Each step costs one forward and one backward pass of the pairs still running.
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
