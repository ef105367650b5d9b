"""Figures of embedding matching and equivalence classes (notebooks 01 and 02):
each function takes measured data and returns a matplotlib figure for ``out.figure``."""
from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from .. import metrics
from .images import amplify, image_grid
from .style import METHOD_COLORS

if TYPE_CHECKING:
    from ..matching import MatchResult

SWEEP_COLOR = METHOD_COLORS["min-visible"]  # the stop-cosine sweep runs min-visible


def _legend_below(fig: plt.Figure, axes, ncol: int) -> None:
    """One legend for all panels under the figure, each label once."""
    handles = {h.get_label(): h for ax in axes for h in ax.get_legend_handles_labels()[0]}
    fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncol=ncol)


def matched_images(
    sources: torch.Tensor, targets: torch.Tensor, results: Mapping[str, MatchResult], labels: Sequence[str],
    cos_before: np.ndarray, *, quantile: float,
) -> plt.Figure:
    """Per pair (rows): source, target, then per method its matched image and 0.5 + k (x - x0), k per image.

    ``sources``, ``targets`` (B, 3, H, W); ``cos_before`` (B,) their embeddings' cosine; ``quantile`` of |dx|
    is mapped 0.4 away from mid-gray. Titles: cosine to the target and steps, PSNR and largest change."""
    cells, titles = [], []
    for i, label in enumerate(labels):
        cells += [sources[i], targets[i]]
        titles += [f"{label}\nsource", f"target\ncos {cos_before[i]:.2f} to source"]
        for name, r in results.items():
            diff, k = amplify(r.delta[i], quantile=quantile, fill=0.4)  # (3, H, W), factor k
            cells += [r.images[i], diff]
            titles += [f"{name}: cos {r.final['cosine'][i]:.3f}\n{r.steps[i]} steps",
                       f"dx x{k:g}: PSNR {r.final['psnr'][i]:.1f} dB\nmax {r.final['linf_255'][i]:.0f}/255"]
    return image_grid(torch.stack(cells).cpu(), titles, ncols=2 + 2 * len(results), size=2.0)


CONVERGENCE_PANELS = (("embed_l2", "distance to the target embedding ||f(x) - f(x_tg)||", "log"),
                      ("gap", "1 - cosine similarity to target embedding", "log"),
                      ("psnr", "PSNR of x against x0 (dB)", "linear"))


def _median_curve(ax: plt.Axes, history: np.ndarray, color: str, name: str) -> None:
    """Each pair's curve thin, the median over pairs thick; a pair that stopped keeps its last value."""
    h = history.copy()  # (T, B), NaN after a pair stopped
    h[~np.isfinite(h)] = np.nan  # step 0 has an infinite PSNR
    steps = np.arange(len(h))
    ax.plot(steps, h, color=color, lw=0.7, alpha=0.45)
    filled = pd.DataFrame(h).ffill().to_numpy()  # (T, B)
    with warnings.catch_warnings():  # a row of NaN (step 0's PSNR) has no median, and is left out of the line
        warnings.simplefilter("ignore", RuntimeWarning)
        median = np.nanmedian(filled, axis=1)  # (T,)
    ax.plot(steps, median, color=color, lw=2.5, label=f"{name} (median)")


def convergence(results: Mapping[str, MatchResult], stop_cos: float, title: str) -> plt.Figure:
    """The paper's convergence plot: distance and 1 - cosine to the target embedding and PSNR against the source
    over the steps, per method (colors of :data:`METHOD_COLORS`), with the stop cosine and the PSNR threshold."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.8))
    for ax, (key, ylabel, scale) in zip(axes, CONVERGENCE_PANELS):
        for name, r in results.items():
            history = 1 - r.history["cosine"] if key == "gap" else r.history[key]  # (T, B)
            _median_curve(ax, history, METHOD_COLORS[name], name)
        ax.set(xlabel="step (one forward + backward pass)", ylabel=ylabel, yscale=scale)
    axes[1].axhline(1 - stop_cos, color="gray", ls="--", lw=1, label=f"stop: cosine {stop_cos}")
    axes[2].axhline(metrics.INDISTINGUISHABLE_PSNR, color="gray", ls=":", lw=1,
                    label=f"indistinguishable: PSNR >= {metrics.INDISTINGUISHABLE_PSNR:g} dB")
    _legend_below(fig, axes, ncol=5)
    fig.suptitle(title)
    return fig


SWEEP_PANELS = (("PSNR (dB)", None, "PSNR against the source (dB)", metrics.INDISTINGUISHABLE_PSNR),
                ("butteraugli", "noise butteraugli", "butteraugli (JND, worst spot)", metrics.INVISIBLE_BUTTERAUGLI),
                ("JOD", "noise JOD", "ColorVideoVDP quality (JOD)", metrics.INVISIBLE_JOD))


def stop_cos_sweep(sweep: pd.DataFrame, title: str) -> plt.Figure:
    """PSNR, butteraugli and JOD by stop cosine (the table of :func:`vitequiv.matching.stop_cos_sweep`): median
    over pairs, a band from the lowest to the highest pair, white noise of equal energy and the fixed thresholds."""
    by_stop = sweep.groupby("stop cos").median(numeric_only=True)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6), layout="constrained")
    for ax, (key, noise_key, ylabel, threshold) in zip(axes, SWEEP_PANELS):
        spread = sweep.groupby("stop cos")[key]
        ax.plot(by_stop.index, by_stop[key], "o-", color=SWEEP_COLOR, lw=2, label="min-visible, median over pairs")
        ax.fill_between(by_stop.index, spread.min(), spread.max(), color=SWEEP_COLOR, alpha=0.15,
                        label="lowest to highest pair")
        if noise_key:
            ax.plot(by_stop.index, by_stop[noise_key], "s--", color="gray", lw=1.5, label="white noise of equal energy")
        ax.axhline(threshold, color="black", ls=":", lw=1, label="threshold (fixed before the run)")
        ax.set(xlabel="stop cosine to the target embedding", ylabel=ylabel)
    _legend_below(fig, axes, ncol=4)
    fig.suptitle(title)
    return fig


def short_name(name: str) -> str:
    """A bundled photo's name short enough for a tick label."""
    return name.replace("motorcycle_", "moto_").replace("grace_hopper", "hopper")


def cosine_matrices(
    before: np.ndarray, after_cyclic: np.ndarray, class_before: np.ndarray, class_after: np.ndarray,
    names: Sequence[str], target: int,
) -> plt.Figure:
    """Three heat maps of embedding cosines: the P photos (P, P); each photo's cyclic match (to photo i + 1, framed)
    against the photos (P, P); and the class of photo ``target``, its members then the target (P, P), after
    matching above the diagonal and before below it."""
    import seaborn as sns
    from matplotlib.patches import Rectangle

    short = [short_name(n) for n in names]
    class_names = [s for i, s in enumerate(short) if i != target] + [f"{short[target]} (target)"]
    fig, axes = plt.subplots(1, 3, figsize=(20, 6.6))
    kw = dict(vmin=-0.2, vmax=1, cmap="mako", square=True, cbar_kws={"label": "cosine similarity", "shrink": 0.7})
    sns.heatmap(before, ax=axes[0], xticklabels=short, yticklabels=short, **kw)
    axes[0].set(title="Before: photo vs photo", xlabel="photo j", ylabel="photo i")
    cyclic_rows = [f"{s} -> {short[(i + 1) % len(short)]}" for i, s in enumerate(short)]
    sns.heatmap(after_cyclic, ax=axes[1], xticklabels=short, yticklabels=cyclic_rows, **kw)
    axes[1].set(title="After cyclic matching (target framed)", xlabel="original photo j",
                ylabel="matched image (looks like photo i)")
    for i in range(len(short)):
        axes[1].add_patch(Rectangle(((i + 1) % len(short), i), 1, 1, fill=False, edgecolor="orange", lw=2))
    split = np.triu(class_after, 1) + np.tril(class_before, -1) + np.eye(len(class_names))  # after above, before below
    sns.heatmap(split, ax=axes[2], xticklabels=class_names, yticklabels=class_names, **kw)
    axes[2].plot([0, len(class_names)], [0, len(class_names)], color="orange", lw=2)
    axes[2].set(title=f"Class of {names[target]}: after (above), before (below diagonal)", xlabel="image",
                ylabel="image")
    for ax in axes:
        ax.tick_params(labelsize=9)
    return fig


def _arrows(ax: plt.Axes, xy: np.ndarray, pairs: Sequence[tuple[int, int]], matched_xy: np.ndarray) -> None:
    """Photos (P, 2), an arrow from each pair's source to its matched image (N, 2), and the targets starred."""
    ax.scatter(*xy.T, s=60, color="C0", zorder=3, label="original photo")
    for (s, _), end in zip(pairs, matched_xy):
        ax.annotate("", xy=end, xytext=xy[s],
                    arrowprops=dict(arrowstyle="->", color="gray", lw=1, shrinkA=4, shrinkB=2))
    ax.scatter(*matched_xy.T, s=25, color="C1", marker="o", zorder=4, label="matched image")
    targets = sorted({g for _, g in pairs})
    ax.scatter(*xy[targets].T, s=260, facecolor="none", edgecolor="C3", marker="*", lw=1.5, zorder=5, label="target")


def pca_arrows(
    xy: np.ndarray, sets: Sequence[tuple[str, Sequence[tuple[int, int]], np.ndarray]], names: Sequence[str],
    variance_pct: np.ndarray,
) -> plt.Figure:
    """One panel per (title, pairs, matched_xy) in ``sets``: the photos' 2-D projection ``xy`` (P, 2) labelled by
    ``names``, and arrows from each source to its matched image (N, 2); ``variance_pct`` (2,) labels the axes."""
    fig, axes = plt.subplots(1, len(sets), figsize=(7.5 * len(sets), 6.5), squeeze=False)
    for ax, (title, pairs, matched_xy) in zip(axes.flat, sets):
        _arrows(ax, xy, pairs, matched_xy)
        for i, name in enumerate(names):
            ax.annotate(short_name(name), xy[i], xytext=(5, 5), textcoords="offset points", fontsize=9)
        ax.set(title=title, xlabel=f"PC 1 ({variance_pct[0]:.0f} % of variance)",
               ylabel=f"PC 2 ({variance_pct[1]:.0f} % of variance)")
        ax.legend(loc="best", fontsize=9)
    return fig


def equivalence_class(
    target_image: torch.Tensor, target_name: str, result: MatchResult, member_names: Sequence[str],
) -> plt.Figure:
    """The target (1, 3, H, W) and the images matched to it (N, 3, H, W in ``result``), each titled with its
    cosine to the target embedding, and its PSNR and SSIM against its own original."""
    final, ssim = result.final, result.ssim()  # (N,) each
    titles = [f"{target_name} (target)"] + [f"{short_name(n)}: cos {final['cosine'][k]:.3f}\n"
                                            f"{final['psnr'][k]:.1f} dB, SSIM {ssim[k]:.3f}"
                                            for k, n in enumerate(member_names)]
    images = torch.cat([target_image, result.images]).cpu()  # (N + 1, 3, H, W)
    return image_grid(images, titles, ncols=min(8, len(titles)), size=2.2)
