"""Embedding matching: change a source image's pixels until its embedding equals a target's.

This is the paper's core experiment: find x = x0 + dx, close to the source x0 in pixels, with f(x) = f(x_tg).
``match_embeddings`` runs it for many (source, target) pairs at once; how a gradient becomes a pixel update
is a small pluggable :class:`StepRule` (in the style of MadryLab's ``robustness`` attacker steps) and the
allowed perturbation is an optional :class:`Budget` plus a pixel box.

Loss. Each pair's loss is the mean over the D embedding dimensions of (f(x) - f(x_tg))^2, i.e. what the
authors' code computes with ``F.mse_loss`` for one pair. It is (2 / D) times the paper's 1/2 ||f(x) - f(x_tg)||^2:
the minimiser is the same, and with this scaling the authors' learning rates carry over to :class:`PaperGD`
unchanged. Pair losses are summed (not averaged) over the batch, so each pair's gradient is independent of the
batch size and a batched run equals running every pair alone. Adam, signed and normalised steps are invariant to
the loss scale anyway.

Units. Pixels live in [0, 1]; step sizes are in those units; budgets and the recorded perturbation sizes are in
1/255 units (8-bit grey levels).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from . import metrics

State = dict[str, torch.Tensor]  # per-pair optimiser state, every tensor with leading dimension B
HISTORY_KEYS = ("loss", "cosine", "emb_l2", "l1_255", "l2_255", "linf_255", "psnr", "grad_norm")


class MatchingError(RuntimeError):
    """Matching produced a NaN/inf loss or gradient, or a loss that blew up; names the pair and step."""

    def __init__(self, message: str, *, pair: int, step: int, result: MatchResult | None = None) -> None:
        super().__init__(message)
        self.pair, self.step, self.result = pair, step, result  # result: what was found before the failure


# ---------------------------------------------------------------------------------------------- step rules


def _per_pair(v: torch.Tensor) -> torch.Tensor:
    return v.view(-1, 1, 1, 1)  # (B,) -> (B, 1, 1, 1), broadcasts over an image batch


class StepRule:
    """Turns the gradient of each pair's loss into a pixel update; ``x <- x - update``.

    ``init_state`` and ``update`` work on whole rows (pairs): the matcher hands in only the pairs still
    running, so a finished pair's state is never touched. ``update`` must not modify ``state`` in place.
    """

    lr: float

    def init_state(self, x: torch.Tensor) -> State:
        return {}

    def update(self, grad: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        raise NotImplementedError

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


class PaperGD(StepRule):
    """The authors' plain gradient descent, x <- x - lr * grad.

    They stepped on the model's normalised input n = (x - mean) / std; in pixels that step is
    lr * std^2 * grad_x. Pass the model's per-channel ``input_std`` to reproduce it exactly (``paper_match``
    does); leave it None for plain descent on the pixels.
    """

    def __init__(self, lr: float = 0.08, input_std: torch.Tensor | None = None) -> None:
        self.lr = lr
        self.input_std = input_std

    def update(self, grad: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        if self.input_std is None:
            return self.lr * grad, state
        scale = self.input_std.to(grad).reshape(1, -1, 1, 1).pow(2)  # (1, 3, 1, 1)
        return self.lr * scale * grad, state  # (B, 3, H, W)


class Adam(StepRule):
    """Adam with per-pair moments and step counts; ``lr`` is roughly the per-pixel step in [0, 1] units."""

    def __init__(self, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
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

    def __init__(self, lr: float = 1 / 255) -> None:
        self.lr = lr

    def update(self, grad: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        return self.lr * grad.sign(), state


class NormalizedGD(StepRule):
    """Gradient scaled to Euclidean length ``lr`` per pair (L2 PGD step); ``lr`` in [0, 1] units."""

    def __init__(self, lr: float = 0.5) -> None:
        self.lr = lr

    def update(self, grad: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        norm = torch.linalg.vector_norm(grad.flatten(1), dim=1).clamp_min(1e-12)  # (B,)
        return self.lr * grad / _per_pair(norm), state


# ------------------------------------------------------------------------------------ budgets and stopping


class Budget:
    """A ball around the source that the perturbation is projected back into after every step."""

    eps_255: float

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

    def project(self, delta: torch.Tensor) -> torch.Tensor:
        eps = self.eps_255 / metrics.LEVELS
        norm = torch.linalg.vector_norm(delta.flatten(1), dim=1)  # (B,)
        return delta * _per_pair((eps / norm.clamp_min(1e-12)).clamp(max=1.0))  # (B, 3, H, W)


@dataclass(frozen=True)
class StopRule:
    """A pair is done when cosine(f(x), target) >= ``cos`` and, if ``dist2`` is set, ||f(x) - target||^2 < dist2.

    The authors required both (squared L2 below 1e-4 by default, 4 or 16 in examples; cosine above 0.96-0.99).
    """

    cos: float = 0.99
    dist2: float | None = None

    def done(self, cosine: np.ndarray, emb_l2: np.ndarray) -> np.ndarray:
        ok = cosine >= self.cos  # (b,)
        return ok & (emb_l2**2 < self.dist2) if self.dist2 is not None else ok


# ------------------------------------------------------------------------------------------------- result


@dataclass
class MatchResult:
    """What ``match_embeddings`` found. Arrays indexed by pair are NumPy; images stay on the sources' device.

    ``history[key]`` has shape (T, B): row k describes each pair's image after k updates (row 0 is the source),
    NaN once the pair has stopped. Keys: ``loss`` (the minimised per-pair MSE), ``cosine`` and ``emb_l2`` to the
    target embedding, ``l1_255``/``l2_255``/``linf_255`` of x - x0 in 1/255 units, ``psnr`` (dB) of x against x0,
    and ``grad_norm`` (Euclidean norm of the pixel gradient; NaN where none was computed).
    """

    images: torch.Tensor  # (B, 3, H, W) in [0, 1], detached
    sources: torch.Tensor  # (B, 3, H, W)
    target_embeddings: torch.Tensor  # (B, D)
    history: dict[str, np.ndarray]  # each (T, B)
    converged: np.ndarray  # (B,) bool: met the stop rule
    steps: np.ndarray  # (B,) int: updates applied to each pair
    elapsed_s: float
    stopped_by: Literal["converged", "max_steps", "callback", "interrupted"]
    cos_threshold: float
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
        return None if self.quantized_cosine is None else self.quantized_cosine >= self.cos_threshold

    @property
    def delta(self) -> torch.Tensor:
        return self.images - self.sources  # (B, 3, H, W)

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


# ----------------------------------------------------------------------------------------------- matching


def _rows(t: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
    return t if index is None else t.index_select(0, index)


def _set_rows(t: torch.Tensor, index: torch.Tensor | None, v: torch.Tensor) -> torch.Tensor:
    return v if index is None else t.index_copy(0, index, v)  # a new tensor: earlier references stay valid


def _index(pairs: np.ndarray, total: int, device: torch.device) -> torch.Tensor | None:
    return None if len(pairs) == total else torch.as_tensor(pairs, device=device)


def target_embeddings(model, targets: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Targets given as embeddings (B, D) pass through; images (B, 3, H, W) are embedded once, without grad."""
    targets = targets.to(device)
    if targets.dim() == 4:
        with torch.no_grad():
            return model.embed(targets).detach()  # (B, D)
    if targets.dim() != 2:
        raise ValueError(f"targets must be embeddings (B, D) or images (B, 3, H, W), got shape {tuple(targets.shape)}")
    return targets.detach()


def _box(x0: torch.Tensor, box: Literal["unit", "source"]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pair pixel bounds (B, 1, 1, 1): [0, 1], or the source's own [min, max] as the authors clamped."""
    if box == "unit":
        return torch.zeros_like(x0[:, :1, :1, :1]), torch.ones_like(x0[:, :1, :1, :1])
    if box == "source":
        flat = x0.flatten(1)  # (B, 3*H*W)
        return _per_pair(flat.amin(dim=1).clamp_min(0)), _per_pair(flat.amax(dim=1).clamp_max(1))
    raise ValueError(f"box must be 'unit' or 'source', got {box!r}")


def match_embeddings(
    model,
    sources: torch.Tensor,
    targets: torch.Tensor,
    *,
    step_rule: StepRule | None = None,
    budget: Budget | None = None,
    box: Literal["unit", "source"] = "unit",
    max_steps: int = 300,
    stop: StopRule = StopRule(),
    diverge_factor: float = 1e4,
    progress: bool = True,
    callback: Callable[[int, MatchResult], bool | None] | None = None,
) -> MatchResult:
    """Move each source image (B, 3, H, W) in [0, 1] until its embedding matches its target.

    ``targets``: target embeddings (B, D) or target images (B, 3, H, W). ``step_rule`` defaults to
    ``Adam()``. After every step the perturbation is projected into ``budget`` (if any), then pixels into
    ``box``. A pair that meets ``stop`` is frozen (image and optimiser state untouched from then on); the run
    ends when all are, after ``max_steps`` updates, when ``callback(step, result_so_far)`` returns True, or on
    KeyboardInterrupt; each returns what was found so far. A NaN/inf loss or gradient, or a pair loss above
    ``diverge_factor`` times its initial loss, raises :class:`MatchingError`.
    Each step costs one forward and one backward of the pairs still running.
    """
    start = time.perf_counter()
    device = sources.device
    x0 = sources.detach().clone()  # (B, 3, H, W), private: the caller may reuse its tensor
    pairs = x0.shape[0]
    target = target_embeddings(model, targets, device)  # (B, D)
    if target.shape[0] != pairs:
        raise ValueError(f"{pairs} sources but {target.shape[0]} targets")
    rule = step_rule if step_rule is not None else Adam()
    lo, hi = _box(x0, box)  # each (B, 1, 1, 1)
    state = rule.init_state(x0)
    x = x0  # (B, 3, H, W), replaced (never modified in place) at every step
    active = np.ones(pairs, dtype=bool)
    converged = np.zeros(pairs, dtype=bool)
    steps = np.zeros(pairs, dtype=np.int64)
    history = _History(pairs)
    initial_loss = np.full(pairs, np.nan)
    stopped_by = "max_steps"

    def result(images: torch.Tensor) -> MatchResult:
        return MatchResult(
            images=images, sources=x0, target_embeddings=target, history=history.view(),
            converged=converged.copy(), steps=steps.copy(), elapsed_s=time.perf_counter() - start,
            stopped_by=stopped_by, cos_threshold=stop.cos, step_rule=repr(rule),
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
                loss = (emb - ta).pow(2).mean(dim=1)  # (b,)
            grad = None if last else torch.autograd.grad(loss.sum(), leaf)[0]  # (b, 3, H, W)

            delta = xa - x0a  # (b, 3, H, W)
            emb = emb.detach()
            l2 = metrics.l2_255(delta)  # (b,)
            nan = torch.full_like(loss, float("nan"))
            row = torch.stack([
                loss.detach(), metrics.cosine(emb, ta), torch.linalg.vector_norm(emb - ta, dim=1),
                metrics.l1_255(delta), l2, metrics.linf_255(delta),
                metrics.psnr_from_mse((l2 / metrics.LEVELS) ** 2 / delta[0].numel()),
                nan if grad is None else torch.linalg.vector_norm(grad.flatten(1), dim=1),
            ]).double().cpu().numpy()  # (M, b): one device sync per step
            history.append(running, row)
            x_eval = x
            steps[running] = k

            lv, gn = row[0], row[-1]
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

            done = stop.done(row[1], row[2])  # (b,)
            converged[running[done]] = True
            active[running[done]] = False
            bar.set_postfix(cos_min=f"{np.nanmin(row[1]):.4f}", done=f"{converged.sum()}/{pairs}", refresh=False)
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
            xs = _rows(xa, moving)  # (m, 3, H, W)
            sub_state = {n: _rows(s, update_index) for n, s in state.items()}
            upd, sub_state = rule.update(_rows(grad, moving), sub_state)  # (m, 3, H, W)
            xs = xs.detach() - upd
            if budget is not None:
                x0s = _rows(x0, update_index)  # (m, 3, H, W)
                xs = x0s + budget.project(xs - x0s)
            xs = xs.clamp(_rows(lo, update_index), _rows(hi, update_index))
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
        out.quantized_cosine = metrics.cosine(model.embed(metrics.quantize_8bit(out.images)), target).double().cpu().numpy()
    out.elapsed_s = time.perf_counter() - start
    return out


def paper_match(
    model,
    sources: torch.Tensor,
    targets: torch.Tensor,
    *,
    lr: float = 0.08,
    cos: float = 0.99,
    dist2: float | None = 1e-4,
    max_steps: int = 15_000,
    **kwargs,
) -> MatchResult:
    """The authors' matcher: plain descent on the normalised input (``PaperGD`` with the model's ``std``), pixels
    clamped to the source's own [min, max], stop at cosine >= ``cos`` AND squared L2 < ``dist2``, or the step cap.

    Defaults are those of their public code. They clamped the normalised tensor to its global min/max; here the
    clamp is to the source's min/max in [0, 1] pixels, the same idea without leaving the valid range.
    """
    rule = PaperGD(lr, input_std=getattr(model, "std", None))
    return match_embeddings(
        model, sources, targets, step_rule=rule, box="source", max_steps=max_steps,
        stop=StopRule(cos=cos, dist2=dist2), **kwargs,
    )
