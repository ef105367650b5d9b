"""Figures of detection and defenses (notebook 08):
each function takes measured data and returns a matplotlib figure for ``out.figure``."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np
import pandas as pd
import torch

from ..detection import roc
from .images import amplify, image_grid
from .style import METHOD_COLORS


def _set_colors(names: Sequence[str]) -> dict[str, str]:
    """One color per image set ("clean", "plain match", "EOT match", ...): its method's color (the name without
    " match") where :data:`METHOD_COLORS` has one, otherwise the next default color."""
    return {name: METHOD_COLORS.get(name.removesuffix(" match"), f"C{i}") for i, name in enumerate(names)}


def _shift_histogram(ax: plt.Axes, shifts: Mapping[str, np.ndarray], colors: Mapping[str, str], sigma_255: float
                     ) -> None:
    """Histograms of one noise size's shifts (N,) per image set, on shared log-spaced bins."""
    lo, hi = min(s.min() for s in shifts.values()), max(s.max() for s in shifts.values())
    bins = np.geomspace(max(lo, 1e-9), hi * 1.01, 25)
    for name, s in shifts.items():
        ax.hist(s, bins=bins, alpha=0.55, color=colors[name], label=f"{name} (n={len(s)})")
    ax.set(xscale="log", xlabel=f"embedding shift 1 - cos at sigma {sigma_255}/255", ylabel="images",
           title="Shift under noise")
    ax.legend(fontsize=9)


def _roc_panel(ax: plt.Axes, clean: np.ndarray, matched: Mapping[str, np.ndarray], colors: Mapping[str, str],
               sigma_255: float) -> None:
    """ROC curve of the shift (N,) as a detector of each matched set against the clean images, with chance."""
    for name, shift in matched.items():
        r = roc(clean, shift)
        ax.plot(r.fpr, r.tpr, color=colors[name], lw=2, drawstyle="steps-post", label=f"{name}: AUC {r.auc:.2f}")
    ax.plot([0, 1], [0, 1], color="gray", ls=":", lw=1, label="chance")
    ax.set(xlabel="false-positive rate (clean flagged)", ylabel="true-positive rate (match flagged)",
           title=f"ROC at sigma {sigma_255}/255", xlim=(-0.02, 1.02), ylim=(-0.02, 1.02))
    ax.legend(loc="lower right", fontsize=9)


def _auc_panel(ax: plt.Axes, auc: pd.DataFrame, colors: Mapping[str, str], sigmas_255: Sequence[float]) -> None:
    """AUC over the noise size, one line per matched set, chance at 0.5."""
    import seaborn as sns

    sns.lineplot(auc, x="sigma (1/255)", y="AUC", hue="matched set", marker="o", ax=ax,
                 palette=[colors[name] for name in auc["matched set"].unique()])
    ax.axhline(0.5, color="gray", ls=":", lw=1)
    ax.set(xscale="log", ylim=(0, 1.05), xlabel="noise sigma (gray levels, 1/255)", title="Detector AUC vs noise size")
    ax.set_xticks(sigmas_255, [str(s) for s in sigmas_255])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.legend(loc="lower left", fontsize=9)


def detector(
    clean_shift: np.ndarray, matched_shift: Mapping[str, np.ndarray], auc: pd.DataFrame,
    sigmas_255: Sequence[float], sigma_255: float,
) -> plt.Figure:
    """The noise-shift detector in three panels: histograms of the shift at ``sigma_255`` for the clean images
    (N, S) and each matched set (name -> (P, S), S = len(sigmas_255)), their ROC curves at that sigma, and the
    AUC over all sigmas (``auc``: :func:`vitequiv.detection.detector_auc_table`)."""
    j = list(sigmas_255).index(sigma_255)
    shifts = {"clean": clean_shift[:, j]} | {name: s[:, j] for name, s in matched_shift.items()}  # each (N,)
    colors = _set_colors(list(shifts))
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    _shift_histogram(axes[0], shifts, colors, sigma_255)
    _roc_panel(axes[1], shifts["clean"], {name: shifts[name] for name in matched_shift}, colors, sigma_255)
    _auc_panel(axes[2], auc, colors, sigmas_255)
    return fig


def survival(frames: Mapping[str, pd.DataFrame], stop_cos: float) -> plt.Figure:
    """Strip plot of each pair's cosine to the target after each transform, one color per matching (name ->
    :func:`vitequiv.detection.survival` frame with sources, e.g. plain and EOT), crosses at the mean cosine to
    the equally transformed source, a dashed line at the match threshold ``stop_cos``."""
    import seaborn as sns

    both = pd.concat([frame.assign(match=name) for name, frame in frames.items()])
    palette = {name: METHOD_COLORS.get(name, f"C{i}") for i, name in enumerate(frames)}
    fig, ax = plt.subplots(figsize=(12, 4.6))
    sns.stripplot(both, x="transform", y="cos_target", hue="match", dodge=True, size=6, ax=ax, palette=palette)
    sns.pointplot(both, x="transform", y="cos_source", hue="match", dodge=0.4, markers="x", linestyles="none",
                  errorbar=None, ax=ax, palette=palette)
    ax.axhline(stop_cos, color="gray", ls="--", lw=1)
    ax.set(xlabel="", ylabel="cosine to the target embedding", title="Do matches survive processing?")
    ax.tick_params(axis="x", rotation=30)
    legend = [plt.Line2D([], [], marker="o", ls="none", color=color, label=f"{name} match, per pair")
              for name, color in palette.items()]
    legend += [plt.Line2D([], [], marker="x", ls="none", color="gray", label="mean cosine to the transformed source"),
               plt.Line2D([], [], ls="--", color="gray", label=f"match threshold {stop_cos}")]
    ax.legend(handles=legend, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=9)
    return fig


def matched_images(
    sources: torch.Tensor, targets: torch.Tensor, matches: Mapping[str, tuple[torch.Tensor, np.ndarray]],
    names: Sequence[str], pairs: tuple[Sequence[int], Sequence[int]], gain: float, rows: int = 3,
) -> plt.Figure:
    """The first ``rows`` pairs, one per row: source, target, then for each matching (name -> (matched images
    (P, 3, H, W), their cosines to the target (P,))) its image, titled with its cosine, and its difference from
    the source shown as 0.5 + ``gain`` dx. ``sources``/``targets`` (P, 3, H, W) in [0, 1]; ``pairs`` = (source
    indices, target indices) into the photos' ``names``."""
    tiles, titles = [], []
    for i, (s, t) in enumerate(zip(*pairs)):
        if i == rows:
            break
        tiles += [sources[i], targets[i]]
        titles += [f"source: {names[s]}", f"target: {names[t]}"]
        for name, (images, cosines) in matches.items():
            tiles += [images[i], amplify(images[i] - sources[i], gain)[0]]
            titles += [f"{name}, cos {cosines[i]:.3f}", f"{name}: 0.5+{gain}dx"]
    return image_grid(torch.stack(tiles).cpu(), titles, ncols=2 + 2 * len(matches), size=2.1)
