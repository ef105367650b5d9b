"""Figures of downstream overgeneralization (notebook 06):
each function takes measured data and returns a matplotlib figure for ``out.figure``."""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np
import torch

from .images import to_numpy_image

if TYPE_CHECKING:
    import pandas as pd

    from ..systematic import SystematicResult


def softmax_matrix(result: SystematicResult, originals: torch.Tensor, n_rows: int, title: str) -> plt.Figure:
    """The paper's softmax matrix: one row per source class (the first matched image of each, at most
    ``n_rows``), labeled "source → target", with two thumbnails (the matched image, then its target photo from
    ``originals`` (N, 3, H, W)) beside a heatmap of the classifier's probabilities on the matched image (values
    >= 0.1 printed)."""
    import seaborn  # noqa: F401  (registers the "mako_r" colormap)

    rows = np.unique(result.source_labels, return_index=True)[1][:n_rows]  # one matched image per source class
    proba = result.matched_proba[rows]  # (R, K)
    k, names = proba.shape[1], result.class_names
    fig, ax = plt.subplots(figsize=(3.6 + 0.62 * (k + 2), 0.62 * len(rows) + 2.4), layout="compressed")
    mesh = ax.imshow(proba, cmap="mako_r", vmin=0, vmax=1, extent=(2, 2 + k, len(rows), 0), aspect="equal")
    for i, row in enumerate(rows):
        for j, image in enumerate([result.matched_images[row], originals[result.target_indices[row]]]):
            ax.imshow(to_numpy_image(image), extent=(j + 0.04, j + 0.96, i + 0.96, i + 0.04))
        for c in range(k):
            if proba[i, c] >= 0.1:
                ax.text(2.5 + c, i + 0.5, f"{proba[i, c]:.2f}", ha="center", va="center", fontsize=8,
                        color="white" if proba[i, c] > 0.5 else "black")
    ax.set_xticks(np.r_[0.5, 1.5, 2.5 + np.arange(k)], ["matched\nimage", "target\nphoto", *names],
                  rotation=60, ha="right", fontsize=9)
    ax.set_yticks(np.arange(len(rows)) + 0.5,
                  [f"{names[result.source_labels[i]]} → {names[result.target_labels[i]]}" for i in rows], fontsize=9)
    ax.set(xlim=(0, 2 + k), ylim=(len(rows), 0))
    fig.suptitle(title)
    ax.grid(False)
    fig.colorbar(mesh, ax=ax, shrink=0.7, pad=0.02, label="probability")
    return fig


def accuracy(summary: pd.DataFrame, chance: Sequence[float]) -> plt.Figure:
    """Bars per classifier (of :func:`vitequiv.systematic.summary_table`): clean accuracy, systematic accuracy
    and the follows-embedding rate, with a dotted line at each labeled set's ``chance`` level."""
    import seaborn as sns

    long = summary.melt(id_vars=["labeled set", "classifier"],
                        value_vars=["clean accuracy", "systematic accuracy", "follows-embedding rate"],
                        var_name="measure", value_name="rate")
    long["classifier"] = long["labeled set"] + ": " + long["classifier"]
    fig, ax = plt.subplots(figsize=(8.5, 4.5))
    sns.barplot(long, x="classifier", y="rate", hue="measure", ax=ax)
    for level in chance:
        ax.axhline(level, color="gray", ls=":", lw=1)
    ax.set(ylim=(0, 1.05), xlabel="", ylabel="fraction of test images",
           title="Clean vs systematic accuracy (dotted: chance)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=3, fontsize=9)
    return fig
