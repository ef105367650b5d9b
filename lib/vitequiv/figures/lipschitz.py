"""Figures of local directional Lipschitz estimates (notebook 05):
each function takes measured data and returns a matplotlib figure for ``out.figure``."""
from __future__ import annotations

from typing import TYPE_CHECKING

import matplotlib.pyplot as plt

if TYPE_CHECKING:
    import pandas as pd


def eps_sweep(sweep: pd.DataFrame, photo: str, size: int) -> plt.Figure:
    """L(x, v, eps) over eps (log-log, eps decreasing to the right) per direction kind of
    :func:`vitequiv.lipschitz.eps_sweep`: float32 solid, float64 dashed, the exact ||J v|| dotted, in one color
    per kind; L clipped at 1e-8 so that exact zeros (x + eps v rounded back to x) stay on the plot."""
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(9, 6))
    for (kind, group), color in zip(sweep.groupby("direction", sort=False), sns.color_palette("colorblind")):
        for dtype, line, marker in (("float32", "-", "o"), ("float64", "--", "s")):
            d = group[group.dtype == dtype]
            ax.loglog(d.eps, d.L.clip(lower=1e-8), ls=line, marker=marker, ms=3.5, color=color,
                      label=f"{kind}, {dtype}")
        ax.axhline(group["||Jv||"].iloc[0], color=color, ls=":", lw=1.2)
    ax.invert_xaxis()
    ax.set(xlabel="eps (pixel L2 step, [0,1] units; decreasing to the right)",
           ylabel="L(x, v, eps) (clipped at 1e-8)",
           title=f"Directional Lipschitz estimate, '{photo}' at {size} px (dotted: exact ||Jv||)")
    fig.legend(fontsize=9, ncol=4, loc="outside lower center")
    return fig


def across_photos(estimates: pd.DataFrame, eps: float, size: int, n_top: int, n_random: int) -> plt.Figure:
    """One dot per direction: L at ``eps`` (log scale) per direction kind and photo, from the first table of
    :func:`vitequiv.lipschitz.across_photos` (``n_top`` top singular, ``n_random`` random and null directions per
    photo, at ``size`` px, float64)."""
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(8, 4.6))
    sns.stripplot(data=estimates, x="direction", y="L", hue="photo", dodge=True, log_scale=True, ax=ax, size=5,
                  jitter=0.15)
    ax.set(xlabel="direction type", ylabel=f"L(x, v, eps={eps:g})",
           title=f"Directional Lipschitz estimates over {estimates.photo.nunique()} photo(s) ({size} px, float64)\n"
                 f"top singular = top {n_top} right-singular vectors; {n_random} random and null directions per photo")
    ax.legend(title="photo", fontsize=9, loc="center right")
    return fig
