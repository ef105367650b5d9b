"""What a matching run returns (:class:`MatchResult`, its per-step history) and how it fails
(:class:`MatchingError`)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch

from .. import metrics

if TYPE_CHECKING:
    import pandas as pd

HISTORY_KEYS = ("loss", "cosine", "embed_l2", "l1_255", "l2_255", "linf_255", "psnr", "grad_norm", "passes")


class MatchingError(RuntimeError):
    """Matching produced a NaN/inf loss or gradient, or a loss that blew up; names the pair and step."""

    def __init__(self, message: str, *, pair: int, step: int, result: MatchResult | None = None) -> None:
        super().__init__(message)
        self.pair, self.step, self.result = pair, step, result  # result: what was found before the failure


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

    def projected_steps(self, stop_cos: float) -> np.ndarray:
        """(B,) total steps each unmatched pair would need to reach ``stop_cos`` at its recent pace (its mean
        cosine gain per step over the last fifth of the steps): a rough, linear projection; NaN for a matched pair
        and where the cosine did not rise recently."""
        cosine = self.history["cosine"]  # (T, B)
        tail = max(len(cosine) // 5, 1)
        pace = (cosine[-1] - cosine[-1 - tail]) / tail  # (B,) cosine gained per step, recently
        remaining = (stop_cos - cosine[-1]) / np.where(pace > 0, pace, np.nan)  # (B,)
        return np.where(self.converged, np.nan, remaining + self.steps)

    def table(self, labels: Sequence[str] | None = None, method: str | None = None) -> pd.DataFrame:
        """One row per pair: cosine to the target before and after, whether it matched, steps, PSNR, SSIM, whether
        it is indistinguishable by :func:`metrics.indistinguishable`, L-inf, L2 and mean |dx| (1/255 units) and the
        cosine after 8-bit rounding. ``labels`` name the pairs (default 0, 1, ...); ``method`` adds its column."""
        import pandas as pd

        final, ssim = self.final, self.ssim()  # (B,) each
        quantized = self.quantized_cosine if self.quantized_cosine is not None else np.full(len(self.steps), np.nan)
        frame = pd.DataFrame({
            "pair": list(labels) if labels is not None else range(len(self.steps)),
            "cos before": self.history["cosine"][0], "cos after": final["cosine"], "matched": self.converged,
            "steps": self.steps, "PSNR (dB)": final["psnr"], "SSIM": ssim,
            "indistinguishable": metrics.indistinguishable(final["psnr"], ssim), "L-inf (1/255)": final["linf_255"],
            "L2 (1/255)": final["l2_255"], "mean |dx| (1/255)": final["l1_255"], "cos after 8-bit": quantized,
        })
        if method is not None:
            frame.insert(1, "method", method)
        return frame

    def to_frame(self) -> pd.DataFrame:
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
