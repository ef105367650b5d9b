"""Figures of notebook 04 from tiny synthetic spectra, profiles and walks: their axes, labels, legends and titles."""
import numpy as np
import pytest
import torch

from vitequiv.figures import subspaces as figures
from vitequiv.jacobians import RANK_RTOL, LinearMap, spectrum
from vitequiv.linearity import LinearityProfile, Walk

SHAPE = (3, 4, 4)


def _walk(cosines: list[float], seed: int) -> Walk:
    """A walk of len(cosines) checkpoints, 5 steps apart, over random 8 px images."""
    n = len(cosines)
    distance = torch.arange(n, dtype=torch.float32)
    images = torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(seed))
    return Walk(steps=[5 * i for i in range(n)], images=images,
                pixel_l2_255=100 * distance, pixel_linf_255=distance, pixel_l1_255=distance,
                psnr=torch.tensor([float("inf")] + [40.0] * (n - 1)), embed_l2=distance,
                embed_cos=torch.tensor(cosines), embed_norm=10.0, relinearizations=1)


def test_spectrum_plots_each_photos_singular_values_and_the_rank_threshold():
    spectra = {name: spectrum(LinearMap.with_singular_values(torch.tensor(s), D=4, input_shape=SHAPE).A, SHAPE)
               for name, s in (("cat", [4.0, 2.0, 1.0]), ("coffee", [8.0, 1.0]))}
    fig = figures.spectrum(spectra, "tiny", 4)
    (ax,) = fig.axes
    assert ax.get_yscale() == "log" and ax.get_title() == "Jacobian spectrum, tiny at 4 px (P = 48 pixels)"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["cat", "coffee", "rank threshold"]
    assert ax.lines[-1].get_ydata()[0] == pytest.approx(8.0 * RANK_RTOL, rel=1e-6)
    assert len(ax.lines[0].get_xdata()) == 4  # min(D, P) singular values


def test_linearity_draws_change_and_error_per_direction():
    ts = torch.logspace(-2, 1, 4)
    profiles = {name: LinearityProfile(ts, ts * k, ts**2, k) for name, k in (("top singular", 3.0), ("random", 0.5))}
    fig = figures.linearity(profiles, "cat", 28)
    (ax,) = fig.axes
    assert ax.get_xscale() == ax.get_yscale() == "log" and ax.get_title().endswith("'cat' at 28 px")
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["top singular: change", "top singular: linearization error", "random: change",
                      "random: linearization error"]


def test_walk_distances_sets_the_null_walk_beside_the_random_one():
    fig = figures.walk_distances(_walk([1.0, 0.9999, 0.9998], 0), _walk([1.0, 0.95, 0.8], 1))
    left, right = fig.axes
    assert left.get_yscale() == "symlog" and left.get_ylabel() == "1 - cosine(f(x), f(x0))"
    assert right.get_ylabel() == "PSNR to start (dB)" and "L2, 1/255 units" in right.get_xlabel()
    assert [t.get_text() for t in right.get_legend().get_texts()] == ["null-space walk", "random walk"]
    assert np.allclose(left.lines[1].get_ydata(), [0.0, 0.05, 0.2])


def test_walk_images_shows_checkpoints_the_random_end_and_the_amplified_change():
    fig = figures.walk_images(_walk([1.0, 0.99999, 0.99998, 0.99997], 0), _walk([1.0, 0.8], 1), 12.0, "a walk")
    titles = [ax.get_title() for ax in fig.axes if ax.get_images()]
    assert len(titles) == 6 and len(fig.axes) == 10  # 4 checkpoints, the random end, the change; 5 columns
    assert titles[1] == "step 5\ncos 0.99999" and titles[4] == "random, step 5\ncos 0.8000"
    assert titles[5] == "null walk, total change\n0.5 + 12.0·(x_end - x0)" and fig._suptitle.get_text() == "a walk"
