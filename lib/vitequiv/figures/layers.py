"""Figures of models and layers (notebook 07):
each function takes measured data and returns a matplotlib figure for ``out.figure``."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np

from ..structure import StructureRow, by_model

Panel = tuple[Callable[[StructureRow], float], str, str, bool]  # value of a row, title, y label, log scale


def model_label(name: str) -> str:
    """A model's label as readers see it in figures: the embedded model is the pretrained one."""
    return name.replace("embedded", "pretrained (embedded)")


def readable_log(ax: plt.Axes, axis: str = "y") -> None:
    """Log axis with plain-number labels at 1, 2, 5 x 10^k and no minor labels."""
    target = ax.yaxis if axis == "y" else ax.xaxis
    target.set_major_locator(matplotlib.ticker.LogLocator(subs=(1, 2, 5)))
    target.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:.3g}"))
    target.set_minor_formatter(matplotlib.ticker.NullFormatter())


def _panel_axes(ax: plt.Axes, title: str, ylabel: str, log: bool, **labels: str) -> None:
    ax.set(title=title, ylabel=ylabel, yscale="log" if log else "linear", **labels)
    if log:
        readable_log(ax)


def models(rows: Sequence[StructureRow], image: int, photo: str, size: int) -> plt.Figure:
    """Pretrained vs random models side by side (one bar per row, 2 x 3 panels): residual after matching, steps
    used, largest pixel change, Jacobian effective rank and relative top singular value, and each model's
    normalized singular value spectrum at the Jacobian image ``image`` (an index into ``row.spectra``), which is
    the photo ``photo`` at ``size`` px."""
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.4))
    x = np.arange(len(rows))
    panels: list[Panel] = [
        (lambda r: r.matching.final_rel, "residual distance after matching", "|f(x)-f(x_tg)| / |f(x0)-f(x_tg)|", True),
        (lambda r: r.matching.final_steps, "Adam steps used (both criteria or cap)", "steps", False),
        (lambda r: r.matching.final_linf, "largest pixel change at the end", "max |dx| (1/255)", False),
        (lambda r: r.jacobian.entropy_rank, "Jacobian effective rank", "entropy rank (of D)", False),
        (lambda r: r.jacobian.s_max_rel, "top singular value / |f(x)|", "relative gain per unit pixel step", True)]
    for ax, (value, title, ylabel, log) in zip(axes.flat, panels):
        ax.bar(x, [value(r) for r in rows], color=[f"C{i}" for i in x])
        ax.set_xticks(x, [model_label(r.model) for r in rows], rotation=15, ha="right", fontsize=9)
        _panel_axes(ax, title, ylabel, log)
    ax = axes.flat[5]
    for i, r in enumerate(rows):
        s = r.spectra[image]  # (D,) singular values, largest first
        ax.plot(np.arange(1, len(s) + 1), s / s[0], color=f"C{i}", label=model_label(r.model))
    ax.set(xscale="log", yscale="log", xlabel="index i", ylabel="s_i / s_1",
           title=f"Jacobian singular values ({photo}, {size} px)")
    ax.legend(fontsize=9)
    fig.suptitle("Pretrained vs randomly initialized (same architecture): matching cost and Jacobian structure")
    return fig


def blocks(rows: Sequence[StructureRow], eps: float, max_steps: int, size: int) -> plt.Figure:
    """Per transformer block (rows labelled ``block``), one line per model, 2 x 3 panels: the pairs' cosine before
    matching, residual and largest pixel change after matching (cap ``max_steps``), the Jacobian's effective rank,
    relative top singular value and directional Lipschitz ratio top/random at step ``eps``; ``size`` px."""
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.4))
    panels: list[Panel] = [
        (lambda r: r.matching.cos0, "cosine of the pair's embeddings before matching", "cosine", False),
        (lambda r: r.matching.final_rel, f"residual distance after matching (cap {max_steps})",
         "fraction of initial", True),
        (lambda r: r.matching.final_linf, "largest pixel change at the end", "max |dx| (1/255)", False),
        (lambda r: r.jacobian.entropy_rank, "Jacobian effective rank", "entropy rank (of D)", False),
        (lambda r: r.jacobian.s_max_rel, "top singular value / |f(x)|", "relative gain", True),
        (lambda r: r.jacobian.lipschitz_ratio(eps), f"directional Lipschitz, top / random (eps {eps:g})", "ratio",
         True)]
    ticks = sorted({r.labels["block"] for r in rows})
    for ax, (value, title, ylabel, log) in zip(axes.flat, panels):
        for i, (name, group) in enumerate(by_model(rows).items()):
            ax.plot([r.labels["block"] for r in group], [value(r) for r in group], marker="o", color=f"C{i}",
                    label=model_label(name))
        _panel_axes(ax, title, ylabel, log, xlabel="block (0 = first)")
        ax.set_xticks(ticks)
        ax.title.set_fontsize(10.5)
    axes.flat[0].legend(fontsize=9)
    fig.suptitle(f"Where along the depth does the structure appear? CLS token after each block, {size} px")
    return fig
