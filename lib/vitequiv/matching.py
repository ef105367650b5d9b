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

    cosine: torch.Tensor  # (m,) cosine of each pair's embedding to its target now
    step: int  # updates applied so far (0 on the first update)
    max_steps: int
    stop_cos: float | None  # the pairs' stop threshold (None: no threshold)


class StepRule:
    """Turns the gradient of each pair's loss into a new perturbation.

    Simple rules implement ``update(grad, state) -> (u, state)`` and the perturbation becomes ``dx - u``.
    Rules that need more (the perturbation itself, how close each pair is to its target) override ``step``.
    ``init_state`` and both methods work on whole rows (pairs): the matcher hands in only the pairs still
    running, so a finished pair's state is never touched; neither may modify ``state`` in place.
    """

    label = ""  # the name readers see (figure legends, tables)
    loss: Literal["mse", "cosine"] = "mse"  # the loss whose gradient the rule is given

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
    """The smallest change that reaches the cosine threshold: the suite's default step rule.

    Each step moves along the normalized gradient of 1 - cos (with momentum), inside a ball around the source
    whose radius grows only as the pair needs it, as in FMN (Pintor et al., 2021): while the pair is short of the
    threshold the radius becomes ||dx|| + beta * gap / ||grad||, a fraction beta of the first-order distance
    still to go (gap = stop_cos - cos), and it never shrinks. ``beta`` stays at ``growth[0]`` for the first
    ``patience`` of the step cap (patient: an easy pair stops near its smallest radius) and then rises
    quadratically to ``growth[1]`` at the cap (insistent: a hard pair still arrives in time). The step length is
    ``lr`` times the radius, cosine-annealed to ``anneal_floor`` of that over the cap, so that the last steps are
    fine enough to settle at the threshold. ``metric="perceptual"`` measures radius, steps and the steepest
    direction in the metric of :func:`perceptual_weights`, which puts the change where SSIM notices it least.

    Why this one. Measured on the embedded DINOv2-S/14, the six photo pairs of notebook 01 at 224 px, a cap of
    300 passes (``benchmarks/bench_min_norm.py`` has the final comparison):
    - steps along the normalized gradient stay in the span of the Jacobian's rows, the few directions that move
      the embedding; Adam and signed steps scale every pixel alike and spread the change over the null space
      (Adam: PSNR 29-35 dB at the same cosine);
    - a fixed L2 ball needs its radius in advance: at PSNR 40 dB, with momentum, 2 of 6 pairs got there;
    - a radius ramped on a fixed schedule (PSNR 46 -> 33 dB over the cap) either wastes passes on easy pairs or
      runs out on hard ones (5 of 6; median 37.3 dB);
    - the FMN radius adapts per pair and to any model's scale (a random tiny ViT needs 24 dB where DINOv2 needs
      35-41): with a constant beta of 0.05, 6 of 6 pairs in 131-280 passes at a median 37.4 dB; beta 0.03 waits
      too long (3 of 6), a linear rise from 0.02 to 0.3 arrives early and coarse (median 36.2 dB);
    - the perceptual metric raises SSIM (median 0.976 against 0.96) for about 1 dB of PSNR;
    - L-BFGS on a norm-penalized loss, and radius control without step annealing, did worse.
    """

    label = "min-norm"
    loss = "cosine"

    def __init__(self, lr: float = 1 / 8, momentum: float = 0.9, growth: tuple[float, float] = (0.05, 0.3),
                 patience: float = 0.6, anneal_floor: float = 0.05, metric: Literal["l2", "perceptual"] = "l2") -> None:
        _positive("lr", lr)
        if not (0 <= momentum < 1 and 0 < anneal_floor <= 1 and 0 < growth[0] <= growth[1] and 0 <= patience < 1):
            raise ValueError(f"need 0 <= momentum < 1, 0 < anneal_floor <= 1, 0 < growth[0] <= growth[1] and "
                             f"0 <= patience < 1, got momentum={momentum!r}, anneal_floor={anneal_floor!r}, "
                             f"growth={growth!r}, patience={patience!r}")
        if metric not in ("l2", "perceptual"):
            raise ValueError(f"metric must be 'l2' or 'perceptual', got {metric!r}")
        self.lr, self.momentum, self.growth, self.patience = lr, momentum, tuple(growth), patience
        self.anneal_floor, self.metric = anneal_floor, metric

    def init_state(self, x0: torch.Tensor) -> State:
        state = {"m": torch.zeros_like(x0), "radius": x0.new_zeros(x0.shape[0])}  # (B, 3, H, W), (B,)
        if self.metric == "perceptual":
            state["weights"] = perceptual_weights(x0)  # (B, 3, H, W)
        return state

    def beta(self, u: float) -> float:
        """The growth gain at fraction ``u`` of the step cap."""
        late = max(0.0, (u - self.patience) / (1 - self.patience))
        return self.growth[0] + (self.growth[1] - self.growth[0]) * late**2

    def step(self, delta, grad, state, progress):
        weights = state.get("weights")

        def norm(v: torch.Tensor) -> torch.Tensor:  # (m,) in the rule's metric
            return _norms(v if weights is None else v * weights.sqrt()).clamp_min(1e-30)

        u = progress.step / max(progress.max_steps, 1)  # fraction of the step cap used
        direction = grad if weights is None else grad / weights  # steepest descent in the metric
        goal = 1.0 if progress.stop_cos is None else progress.stop_cos
        gap = (goal - progress.cosine.to(delta)).clamp_min(0)  # (m,)
        to_go = norm(delta) * (progress.step > 0) + self.beta(u) * gap / norm(direction)  # first-order distance left
        radius = torch.maximum(state["radius"], to_go)  # (m,)
        length = self.lr * radius * (self.anneal_floor + (1 - self.anneal_floor) * 0.5 * (1 + math.cos(math.pi * u)))
        m = self.momentum * state["m"] + direction / _per_pair(norm(direction))  # (m, 3, H, W)
        new = delta - _per_pair(length) * m / _per_pair(norm(m))
        new = new * _per_pair((radius / norm(new)).clamp(max=1.0))
        return new, dict(state, m=m, radius=radius)


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
        """The ball whose surface has PSNR ``psnr_db`` against the source, for images of ``shape`` (3, H, W)."""
        return cls(math.sqrt(math.prod(shape) * 10 ** (-psnr_db / 10)) * metrics.LEVELS)

    def project(self, delta: torch.Tensor) -> torch.Tensor:
        eps = self.eps_255 / metrics.LEVELS
        return delta * _per_pair((eps / _norms(delta).clamp_min(1e-12)).clamp(max=1.0))  # (B, 3, H, W)


# ------------------------------------------------------------------------------------------------- result


@dataclass
class MatchResult:
    """What ``match_embeddings`` found. Arrays indexed by pair are NumPy; images stay on the sources' device.

    ``history[key]`` has shape (T, B): row k describes each pair's image after k updates (row 0 is the source),
    NaN once the pair has stopped. Keys: ``loss`` (the loss the step rule descends), ``cosine`` and
    ``embed_l2`` to the target embedding, ``l1_255``/``l2_255``/``linf_255`` of x - x0 in 1/255 units,
    ``psnr`` (dB) of x against x0, ``grad_norm`` (Euclidean norm of the pixel gradient; NaN where none was
    computed) and ``passes`` (forward+backward passes spent on the pair so far, this row's included).
    """

    images: torch.Tensor  # (B, 3, H, W) in [0, 1], detached
    sources: torch.Tensor  # (B, 3, H, W)
    target_embeddings: torch.Tensor  # (B, D)
    history: dict[str, np.ndarray]  # each (T, B)
    converged: np.ndarray  # (B,) bool: met the stop rule
    steps: np.ndarray  # (B,) int: updates applied to each pair
    passes: np.ndarray  # (B,) int: forward+backward passes spent on each pair
    elapsed_s: float
    stopped_by: Literal["converged", "max_steps", "callback", "interrupted"]
    stop_cos: float | None
    step_rule: str = ""
    quantized_cosine: np.ndarray | None = None  # (B,) cosine of f(quantize_8bit(images)) to the target

    @property
    def interrupted(self) -> bool:
        return self.stopped_by == "interrupted"

    @property
    def final(self) -> dict[str, np.ndarray]:
        """Each history metric at each pair's final image, shape (B,)."""
        n = len(self.history["loss"])
        if n == 0:
            return {k: np.full(len(self.steps), np.nan) for k in self.history}
        rows = np.minimum(self.steps, n - 1)
        return {k: v[rows, np.arange(v.shape[1])] for k, v in self.history.items()}

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


def check_images(images, name: str = "sources") -> torch.Tensor:
    """``images`` as a (B, 3, H, W) floating tensor in [0, 1] with B >= 1, or a ValueError/TypeError naming it."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of images (B, 3, H, W) in [0, 1], got {type(images).__name__}")
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"{name} must have shape (B, 3, H, W), got {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (shape {tuple(images.shape)}); pass at least one image")
    if not images.is_floating_point():
        raise TypeError(f"{name} must be floating point in [0, 1], got dtype {images.dtype}; use images.float() / 255")
    if not torch.isfinite(images).all():
        raise ValueError(f"{name} holds NaN or infinite pixels")
    lo, hi = float(images.min()), float(images.max())
    if lo < 0 or hi > 1:
        hint = " (pixels in 0-255? divide by 255)" if hi > 1.5 else ""
        raise ValueError(f"{name} must have pixels in [0, 1], got values in [{lo:g}, {hi:g}]{hint}")
    return images


def target_embeddings(model, targets: torch.Tensor, device: torch.device, pairs: int | None = None) -> torch.Tensor:
    """Targets given as embeddings (B, D) pass through; images (B, 3, H, W) are embedded once, without grad.

    With ``pairs``, the batch size must equal it; the embedding width must equal ``model.embed_dim`` when the
    model declares one.
    """
    if not isinstance(targets, torch.Tensor):
        raise TypeError("targets must be a tensor of embeddings (B, D) or images (B, 3, H, W), "
                        f"got {type(targets).__name__}")
    if targets.dim() not in (2, 4):
        raise ValueError(f"targets must be embeddings (B, D) or images (B, 3, H, W), got shape {tuple(targets.shape)}")
    if pairs is not None and targets.shape[0] != pairs:
        raise ValueError(f"{pairs} sources but {targets.shape[0]} targets; pass one target per source")
    targets = targets.to(device)
    if targets.dim() == 4:
        with torch.no_grad():
            return model.embed(check_images(targets, "targets")).detach()  # (B, D)
    width = getattr(model, "embed_dim", None)
    if isinstance(width, int) and targets.shape[1] != width:
        raise ValueError(f"targets have embedding width {targets.shape[1]} but {getattr(model, 'name', 'the model')} "
                         f"embeds into {width} dimensions; pass target embeddings (B, {width}) or target images")
    if not torch.isfinite(targets).all():
        raise ValueError("targets hold NaN or infinite values")
    return targets.detach()


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


def match_embeddings(
    model,
    sources: torch.Tensor,
    targets: torch.Tensor,
    *,
    step_rule: StepRule | str | None = None,
    budget: Budget | None = None,
    box: Literal["unit", "source"] = "unit",
    max_steps: int = 300,
    stop_cos: float | None = 0.99,
    stop_dist2: float | np.ndarray | None = None,
    keep_gray: bool = True,
    diverge_factor: float = 1e4,
    progress: bool = True,
    callback: Callable[[int, MatchResult], bool | None] | None = None,
) -> MatchResult:
    """Move each source image (B, 3, H, W) in [0, 1] until its embedding matches its target.

    ``targets``: target embeddings (B, D) or target images (B, 3, H, W). ``step_rule``: a :class:`StepRule` or
    its name in :data:`STEP_RULES`; None is the default, :class:`MinNorm` (the smallest change that reaches the
    threshold). After every step the perturbation is projected into ``budget`` (if any), then pixels into
    ``box``. A pair is done once cosine(f(x), f(x_tg)) >= ``stop_cos`` and, if ``stop_dist2`` is set (a number,
    or one per pair), ||f(x) - f(x_tg)||^2 < ``stop_dist2``, as the authors required both (squared L2 below 1e-4
    by default, 4 or 16 in examples; cosine above 0.96-0.99); ``stop_cos=None`` runs every pair for
    ``max_steps``. A done pair is frozen (image and rule state untouched from then on); the run ends when all
    are, after ``max_steps`` updates, when ``callback(step, result_so_far)`` returns True, or on
    KeyboardInterrupt; each returns what was found so far. A NaN/inf loss or gradient, or a pair loss above
    ``diverge_factor`` times its initial loss, raises :class:`MatchingError`. ``keep_gray``: see the module
    docstring. Each step costs one forward and one backward pass of the pairs still running.
    """
    start = time.perf_counter()
    check_images(sources)
    _positive("max_steps", max_steps, integer=True, allow_zero=True)
    _positive("diverge_factor", diverge_factor)
    if stop_cos is not None and (not isinstance(stop_cos, numbers.Real) or not -1 <= stop_cos <= 1):
        raise ValueError(f"stop_cos must be a cosine in [-1, 1] or None, got {stop_cos!r}")
    if budget is not None and not isinstance(budget, Budget):
        raise TypeError(f"budget must be a LinfBall, an L2Ball or None, got {budget!r}")
    rule = make_step_rule(step_rule, model=model)
    device = sources.device
    x0 = sources.detach().clone()  # (B, 3, H, W), private: the caller may reuse its tensor
    pairs = x0.shape[0]
    target = target_embeddings(model, targets, device, pairs)  # (B, D)
    dist2 = None if stop_dist2 is None else np.broadcast_to(np.asarray(stop_dist2, dtype=float), (pairs,))
    lo, hi = _box(x0, box)  # each (B, 1, 1, 1)
    gray = gray_pairs(x0) if keep_gray else torch.zeros(pairs, dtype=torch.bool, device=device)  # (B,)
    state = rule.init_state(x0)
    x = x0  # (B, 3, H, W), replaced (never modified in place) at every step
    active = np.ones(pairs, dtype=bool)
    converged = np.zeros(pairs, dtype=bool)
    steps = np.zeros(pairs, dtype=np.int64)
    passes = np.zeros(pairs, dtype=np.int64)
    history = _History(pairs)
    initial_loss = np.full(pairs, np.nan)
    stopped_by = "max_steps"

    def result(images: torch.Tensor) -> MatchResult:
        return MatchResult(
            images=images, sources=x0, target_embeddings=target, history=history.view(),
            converged=converged.copy(), steps=steps.copy(), passes=passes.copy(),
            elapsed_s=time.perf_counter() - start, stopped_by=stopped_by, stop_cos=stop_cos, step_rule=repr(rule),
        )

    x_eval = x  # the latest image whose metrics are in the history
    bar = tqdm(total=max_steps, desc="matching", disable=not progress)
    try:
        for k in range(max_steps + 1):
            running = np.flatnonzero(active)
            index = _index(running, pairs, device)
            xa, x0a, ta = _rows(x, index), _rows(x0, index), _rows(target, index)  # (b, 3, H, W), ..., (b, D)
            last = k == max_steps
            leaf = xa.detach().requires_grad_(not last)
            with torch.set_grad_enabled(not last):
                emb = model.embed(leaf)  # (b, D)
                loss = _pair_losses(rule.loss, emb, ta)  # (b,)
            grad = None if last else torch.autograd.grad(loss.sum(), leaf)[0]  # (b, 3, H, W)
            if not last:
                passes[running] += 1

            delta = xa - x0a  # (b, 3, H, W)
            emb = emb.detach()
            cosine = metrics.cosine(emb, ta)  # (b,)
            l2 = metrics.l2_255(delta)  # (b,)
            nan = torch.full_like(loss, float("nan"))
            row = torch.stack([
                loss.detach(), cosine, torch.linalg.vector_norm(emb - ta, dim=1),
                metrics.l1_255(delta), l2, metrics.linf_255(delta),
                metrics.psnr_from_mse((l2 / metrics.LEVELS) ** 2 / delta[0].numel()),
                nan if grad is None else _norms(grad), torch.as_tensor(passes[running]).to(loss),
            ]).double().cpu().numpy()  # (M, b): one device sync per step
            history.append(running, row)
            x_eval = x
            steps[running] = k

            lv, gn = row[0], row[-2]
            if k == 0:
                initial_loss[:] = lv
            bad = ~np.isfinite(lv) | (~np.isfinite(gn) & (grad is not None))
            blown = (lv > diverge_factor * initial_loss[running]) & (initial_loss[running] > 0)
            if bad.any() or blown.any():
                j = int(np.flatnonzero(bad | blown)[0])
                what = "a non-finite loss or gradient" if bad[j] else f"a loss {diverge_factor:g}x its initial value"
                raise MatchingError(
                    f"matching pair {running[j]} hit {what} at step {k} (loss {lv[j]:.4g}); "
                    "lower the step size or check the model and inputs",
                    pair=int(running[j]), step=k, result=result(x_eval),
                )

            done = np.zeros(len(running), dtype=bool) if stop_cos is None else row[1] >= stop_cos  # (b,)
            if dist2 is not None:
                done &= row[2] ** 2 < dist2[running]
            converged[running[done]] = True
            active[running[done]] = False
            bar.set_postfix(lowest_cos=f"{np.nanmin(row[1]):.4f}", done=f"{converged.sum()}/{pairs}", refresh=False)
            if callback is not None and callback(k, result(x_eval)):
                stopped_by = "callback"
                break
            if not active.any():
                stopped_by = "converged"
                break
            if last:
                break

            keep = np.flatnonzero(~done)  # positions (within the running pairs) that take this step
            moving = _index(keep, len(running), device)
            update_index = _index(running[keep], pairs, device)
            x0s, gray_s = _rows(x0, update_index), _rows(gray, update_index)  # (m, 3, H, W), (m,)
            sub_state = {n: _rows(s, update_index) for n, s in state.items()}
            info = Progress(cosine=_rows(cosine, moving), step=k, max_steps=max_steps, stop_cos=stop_cos)
            g = _to_gray(_rows(grad, moving), gray_s)  # (m, 3, H, W)
            new_delta, sub_state = rule.step(_rows(delta, moving).detach(), g, sub_state, info)
            new_delta = _to_gray(new_delta, gray_s)
            if budget is not None:
                new_delta = budget.project(new_delta)
            xs = (x0s + new_delta).clamp(_rows(lo, update_index), _rows(hi, update_index))  # (m, 3, H, W)
            state = {n: _set_rows(state[n], update_index, s) for n, s in sub_state.items()}
            x = _set_rows(x, update_index, xs)
            bar.update(1)
    except KeyboardInterrupt:
        stopped_by = "interrupted"
    finally:
        bar.close()

    out = result(x_eval.detach())
    out.history = {n: v.copy() for n, v in out.history.items()}  # compact, detached from the growable buffer
    with torch.no_grad():
        quantized = model.embed(metrics.quantize_8bit(out.images))  # (B, D)
        out.quantized_cosine = metrics.cosine(quantized, target).double().cpu().numpy()
    out.elapsed_s = time.perf_counter() - start
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
