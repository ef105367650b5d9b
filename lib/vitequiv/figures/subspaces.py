"""Figures of piecewise linear subspaces (notebook 04):
each function takes measured data and returns a matplotlib figure for ``out.figure``."""
from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np
import torch

from .images import amplify, image_grid

if TYPE_CHECKING:
    from ..jacobians import Spectrum
    from ..linearity import LinearityProfile, Walk


def spectrum(spectra: Mapping[str, Spectrum], model_name: str, size: int) -> plt.Figure:
    """The singular values of each photo's Jacobian (log scale) and the numerical-rank threshold, ``RANK_RTOL``
    times the largest of them all; the photos were ``size`` px for ``model_name``."""
    from ..jacobians import RANK_RTOL

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, s in spectra.items():
        ax.semilogy(np.arange(1, len(s.s) + 1), s.s.cpu().numpy(), label=name)
    ax.axhline(float(max(s.s[0] for s in spectra.values())) * RANK_RTOL, color="gray", ls=":", label="rank threshold")
    pixels = next(iter(spectra.values())).num_pixels
    ax.set(xlabel="singular value index i", ylabel="singular value s_i (embedding units per pixel unit)",
           title=f"Jacobian spectrum, {model_name} at {size} px (P = {pixels:,} pixels)")
    ax.legend()
    return fig


def linearity(profiles: Mapping[str, LinearityProfile], photo: str, size: int) -> plt.Figure:
    """Along each named direction from ``photo`` (``size`` px): the embedding change (solid) and the first-order
    error (dashed) against the step length, log-log."""
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for (name, p), color in zip(profiles.items(), ["C0", "C1", "C2"]):
        ax.loglog(p.ts, p.change.clamp_min(1e-12), color=color, lw=2, label=f"{name}: change")
        ax.loglog(p.ts, p.error.clamp_min(1e-12), color=color, ls="--", marker="x", ms=4,
                  label=f"{name}: linearization error")
    ax.set(xlabel="step length t (pixel L2, [0,1] units)", ylabel="embedding distance (L2)",
           title=f"Embedding change along a direction, '{photo}' at {size} px")
    ax.legend(fontsize=9, loc="upper left")
    return fig


def walk_distances(null_walk: Walk, random_walk: Walk) -> plt.Figure:
    """Against the pixel L2 distance traveled: the embedding's cosine distance to the start (left, symlog) and the
    PSNR to the start (right), for the null-space walk and the random walk of the same step lengths."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for label, w, color, style, size in (("null-space walk", null_walk, "C0", "o-", (6, 7)),
                                         ("random walk", random_walk, "C3", "s--", (4, 4))):
        axes[0].plot(w.pixel_l2_255, 1 - w.embed_cos, style, color=color, ms=size[0], label=label)
        axes[1].plot(w.pixel_l2_255, w.psnr, style, color=color, ms=size[1], label=label)
    axes[0].set_yscale("symlog", linthresh=1e-6)
    axes[0].set(xlabel="pixel distance from start ||x - x0|| (L2, 1/255 units)", ylabel="1 - cosine(f(x), f(x0))",
                title="Embedding moves little along the null space")
    axes[1].set(xlabel="pixel distance from start ||x - x0|| (L2, 1/255 units)", ylabel="PSNR to start (dB)",
                title="while the pixels change as much as a random walk")
    for ax in axes:
        ax.legend()
    return fig


def walk_images(null_walk: Walk, random_walk: Walk, gain: float, suptitle: str) -> plt.Figure:
    """The null-space walk's checkpoints (cosine of the embedding to the start under each), the random walk's end,
    and the null walk's total change x_end - x0 amplified ``gain`` times around mid-gray."""
    change, _ = amplify(null_walk.images[-1] - null_walk.images[0], gain)  # (3, H, W)
    images = [*null_walk.images, random_walk.images[-1], change]
    titles = [f"step {s}\ncos {c:.5f}" for s, c in zip(null_walk.steps, null_walk.embed_cos)]
    titles += [f"random, step {random_walk.steps[-1]}\ncos {float(random_walk.embed_cos[-1]):.4f}",
               f"null walk, total change\n0.5 + {gain}·(x_end - x0)"]
    return image_grid(torch.stack(images), titles, ncols=min(len(images), 5), size=2.0, suptitle=suptitle)
