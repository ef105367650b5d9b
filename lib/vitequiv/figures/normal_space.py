"""Figures of the local normal space (notebook 03):
each function takes measured data and returns a matplotlib figure for ``out.figure``."""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np
import torch

from .images import amplify, image_grid
from .style import METHOD_COLORS

if TYPE_CHECKING:
    from ..matching import MatchResult
    from ..normal_space import BudgetSweep, SignNoise


def _budget_axis(ax: plt.Axes, ticks: Sequence[float]) -> None:
    """A log2 x axis labelled at ``ticks`` (gray levels) as plain numbers."""
    ax.set_xscale("log", base=2)
    ax.set_xticks(ticks, [f"{b:g}" for b in ticks])


def contrast(
    sweep: BudgetSweep, noise: SignNoise, baseline: np.ndarray, smallest: MatchResult, model_name: str,
) -> plt.Figure:
    """Cosines against the L-inf budget: the matched images' to their targets (per pair and mean, range shaded)
    and to their sources, sign noise's to its source (range shaded) and to the targets, the source-target
    ``baseline`` (P,) before any change (mean, range as a band), and the min-norm ``smallest`` matches (stars at
    their largest pixel change), for the model ``model_name``."""
    budgets, matched = np.array(sweep.budgets_255), sweep.cosine  # (E,), (E, P)
    fig, ax = plt.subplots(figsize=(9, 6))
    for series, label, color, marker, shaded in [
        (matched, "matched image: cos(f(x), f(target))", METHOD_COLORS["Adam"], "o", True),
        (noise.to_source.mean(axis=1), "sign noise: cos(f(x0 + noise), f(x0))", "C2", "s", True),
        (noise.to_target.mean(axis=1), "sign noise: cos(f(x0 + noise), f(target))", "C3", "^", False),
        (sweep.to_source, "matched image: cos(f(x), f(x0))", "C4", "D", False),
    ]:  # each (E, P), noise averaged over its draws; noise to target spreads as the baseline does (gray band)
        ax.plot(budgets, series.mean(axis=1), marker=marker, color=color, lw=2, label=label + " (mean)")
        if shaded:
            ax.fill_between(budgets, series.min(axis=1), series.max(axis=1), color=color, alpha=0.15, lw=0)
    ax.plot(budgets, matched, color=METHOD_COLORS["Adam"], lw=0.8, alpha=0.5)
    final = smallest.final
    ax.scatter(final["linf_255"], final["cosine"], marker="*", s=180, color="C1", zorder=5,
               label=f"min-norm, no L-inf budget: its largest change (PSNR {final['psnr'].min():.0f}-"
                     f"{final['psnr'].max():.0f} dB)")
    ax.axhline(baseline.mean(), color="gray", ls="--", lw=1.5,
               label="before any change: cos(f(source), f(target)) (mean; gray band: range)")
    ax.axhspan(baseline.min(), baseline.max(), color="gray", alpha=0.12, lw=0)
    top = int(np.ceil(np.log2(max(final["linf_255"].max(), budgets.max()))))  # the stars may lie beyond the budgets
    _budget_axis(ax, sorted(set(budgets) | {2 ** k for k in range(int(np.log2(budgets.max())) + 1, top + 1)}))
    ax.set(xlabel="L-inf budget, or the largest change of a min-norm match (gray levels, 1/255)",
           ylabel="cosine similarity of embeddings", ylim=(-0.05, 1.05),
           title=f"Same pixel budget, opposite effects ({model_name}, {len(baseline)} pairs)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, fontsize=9)
    return fig


def quantization(sweep: BudgetSweep, baseline: np.ndarray, labels: Sequence[str]) -> plt.Figure:
    """Left: the matches' mean cosine to the target before and after rounding to 8 bits against the budget, with
    the ``baseline`` (P,) before any change; right: how much rounding changed it, per pair (``labels``), log scale."""
    budgets, matched, rounded = np.array(sweep.budgets_255), sweep.cosine, sweep.quantized_cosine  # (E,), (E, P) x2
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    axes[0].plot(budgets, matched.mean(axis=1), "o-", lw=2, label="float image (mean over pairs)")
    axes[0].plot(budgets, rounded.mean(axis=1), "x--", lw=2, ms=9, label="rounded to 8 bits (mean over pairs)")
    axes[0].axhline(baseline.mean(), color="gray", ls="--", lw=1, label="before any change (mean)")
    axes[0].set(ylabel="cosine to the target's embedding", ylim=(-0.05, 1.05),
                title="Cosine to target, before and after rounding")
    axes[0].legend(loc="lower right", fontsize=9)
    for p, label in enumerate(labels):
        axes[1].plot(budgets, np.abs(matched[:, p] - rounded[:, p]) + 1e-6, "o-", lw=1.2, label=label)
    axes[1].set_yscale("log")
    axes[1].set(ylabel="|cosine lost to rounding|", title="Change of the cosine caused by rounding")
    axes[1].legend(loc="upper right", fontsize=9)
    for ax in axes:
        _budget_axis(ax, budgets)
        ax.set_xlabel("L-inf budget (gray levels, 1/255)")
    return fig


def matched_images(
    sources: torch.Tensor, targets: torch.Tensor, match: MatchResult, baseline: np.ndarray,
    pairs: Sequence[tuple[str, str]], budget_255: float,
) -> plt.Figure:
    """One row per pair: the source (P, 3, H, W), its match within ±``budget_255``/255, their difference amplified
    so that the budget spans the full gray range, and the target photo (P, 3, H, W); ``pairs`` name (source,
    target), ``baseline`` (P,) is the source-target cosine before any change."""
    final = match.final
    diff, gain = amplify(match.delta, 0.5 * 255 / budget_255)  # ±budget_255/255 -> [0, 1]
    grid, titles = [], []
    for p, (source_name, target_name) in enumerate(pairs):
        grid += [sources[p], match.images[p], diff[p], targets[p]]
        titles += [f"source: {source_name}\ncos to target {baseline[p]:.2f}",
                   f"matched, max |Δ| = {final['linf_255'][p]:.0f}/255\ncos to target {final['cosine'][p]:.3f}",
                   f"difference x{gain:.0f} (0.5 + {gain:.0f}·Δ)\nPSNR {final['psnr'][p]:.1f} dB",
                   f"target: {target_name}"]
    return image_grid(torch.stack(grid), titles, ncols=4, size=2.6,
                      suptitle=f"L-inf budget {budget_255}/255: the matched image looks like the source, "
                      "embeds like the target")
