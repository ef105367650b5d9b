"""Figure builders of notebooks 01 and 02 on tiny synthetic results: panels, titles, labels and legends."""
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch

from vitequiv import metrics
from vitequiv.figures import matching as figs
from vitequiv.matching import HISTORY_KEYS, MatchResult

SIZE = 16  # px: enough for SSIM's 7x7 window


def fake_result(pairs: int = 2, rows: int = 5, seed: int = 0) -> MatchResult:
    """A MatchResult of ``pairs`` random 16 px images changed a little, with a ``rows``-step history."""
    g = torch.Generator().manual_seed(seed)
    sources = torch.rand(pairs, 3, SIZE, SIZE, generator=g)  # (B, 3, S, S)
    images = (sources + 0.02 * torch.randn(pairs, 3, SIZE, SIZE, generator=g)).clamp(0, 1)  # (B, 3, S, S)
    history = {key: np.random.default_rng(seed).uniform(1, 2, (rows, pairs)) for key in HISTORY_KEYS}  # (T, B) each
    history["cosine"] = np.linspace(0.2, 0.995, rows)[:, None].repeat(pairs, axis=1)
    history["psnr"][0] = np.inf  # the source itself
    return MatchResult(images=images, sources=sources, target_embeddings=torch.zeros(pairs, 4), history=history,
                       converged=np.ones(pairs, bool), steps=np.full(pairs, rows - 1), passes=np.full(pairs, rows),
                       elapsed_s=1.0, stopped_by="converged", stop_cos=0.99, quantized_cosine=np.full(pairs, 0.99))


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def legend_texts(fig) -> list[str]:
    return [t.get_text() for legend in fig.legends for t in legend.get_texts()]


def test_matched_images_shows_source_target_and_each_methods_image_and_change():
    results = {"min-norm": fake_result(seed=1), "Adam": fake_result(seed=2)}
    sources, targets = torch.rand(2, 3, SIZE, SIZE), torch.rand(2, 3, SIZE, SIZE)
    fig = figs.matched_images(sources, targets, results, ["a -> b", "c -> d"], np.array([0.1, 0.2]), quantile=0.99)
    titles = [ax.get_title() for ax in fig.axes]
    assert len(fig.axes) == 2 * 6  # per pair: source, target, and image + change for each of 2 methods
    assert titles[0] == "a -> b\nsource" and titles[1] == "target\ncos 0.10 to source"
    assert titles[2].startswith("min-norm: cos 0.995\n4 steps") and titles[3].startswith("dx x")
    assert titles[6].startswith("c -> d")


def test_convergence_has_three_labelled_panels_and_one_legend_with_the_thresholds():
    results = {"min-norm": fake_result(), "paper GD": fake_result(seed=3)}
    fig = figs.convergence(results, 0.99, "a title")
    assert len(fig.axes) == 3 and fig.get_suptitle() == "a title"
    assert [ax.get_ylabel() for ax in fig.axes] == [label for _, label, _ in figs.CONVERGENCE_PANELS]
    assert all(ax.get_xlabel() == "step (one forward + backward pass)" for ax in fig.axes)
    assert [ax.get_yscale() for ax in fig.axes] == ["log", "log", "linear"]
    assert legend_texts(fig) == ["min-norm (median)", "paper GD (median)", "stop: cosine 0.99",
                                 f"indistinguishable: PSNR >= {metrics.INDISTINGUISHABLE_PSNR:g} dB"]
    median = fig.axes[1].get_lines()[2]  # per method: 2 pair lines, then the median
    np.testing.assert_allclose(median.get_ydata(), 1 - np.linspace(0.2, 0.995, 5))


def sweep_frame() -> pd.DataFrame:
    stops = [0.95, 0.95, 0.99, 0.99]
    return pd.DataFrame({"stop cos": stops, "pair": ["a", "b"] * 2, "matched": [True] * 4,
                         "PSNR (dB)": [45.0, 43.0, 40.0, 38.0], "SSIM": [0.99, 0.98, 0.97, 0.96],
                         "butteraugli": [1.0, 2.0, 3.0, 4.0], "JOD": [9.9, 9.8, 9.7, 9.6],
                         "noise butteraugli": [0.5] * 4, "noise JOD": [9.95] * 4})


def test_stop_cos_sweep_draws_medians_bands_noise_and_thresholds():
    fig = figs.stop_cos_sweep(sweep_frame(), "sweep")
    assert len(fig.axes) == 3 and fig.get_suptitle() == "sweep"
    assert [ax.get_ylabel() for ax in fig.axes] == [label for _, _, label, _ in figs.SWEEP_PANELS]
    assert set(legend_texts(fig)) == {"min-visible, median over pairs", "lowest to highest pair",
                                      "white noise of equal energy", "threshold (fixed before the run)"}
    np.testing.assert_allclose(fig.axes[1].get_lines()[0].get_ydata(), [1.5, 3.5])  # butteraugli medians
    assert len(fig.axes[0].get_lines()) == 2  # PSNR: the median and the threshold, no noise curve


def test_cosine_matrices_label_photos_shortly_and_frame_the_targets():
    names = ["cat", "motorcycle_left", "grace_hopper"]
    before = np.eye(3)
    fig = figs.cosine_matrices(before, before, np.eye(3), np.ones((3, 3)), names, target=0)
    heatmaps = [ax for ax in fig.axes if ax.get_title()]
    assert len(heatmaps) == 3 and len(fig.axes) == 6  # and a color bar each
    assert [t.get_text() for t in heatmaps[0].get_xticklabels()] == ["cat", "moto_left", "hopper"]
    assert [t.get_text() for t in heatmaps[2].get_xticklabels()] == ["moto_left", "hopper", "cat (target)"]
    assert heatmaps[1].get_yticklabels()[0].get_text() == "cat -> moto_left"
    assert len(heatmaps[1].patches) == 3 and heatmaps[2].get_title().startswith("Class of cat")


def test_pca_arrows_has_a_panel_per_set_with_variance_on_the_axes():
    xy = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    sets = [("to cat", [(1, 0), (2, 0)], np.array([[0.1, 0.0], [0.0, 0.1]])),
            ("cyclic", [(0, 1), (1, 2), (2, 0)], xy[[1, 2, 0]])]
    fig = figs.pca_arrows(xy, sets, ["cat", "grace_hopper", "moon"], np.array([60.4, 20.0]))
    assert [ax.get_title() for ax in fig.axes] == ["to cat", "cyclic"]
    assert fig.axes[0].get_xlabel() == "PC 1 (60 % of variance)"
    assert fig.axes[0].get_ylabel() == "PC 2 (20 % of variance)"
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["original photo", "matched image", "target"]
    assert "hopper" in [t.get_text() for t in fig.axes[0].texts]


def test_equivalence_class_shows_the_target_then_each_member_with_its_numbers():
    result = fake_result(pairs=3)
    fig = figs.equivalence_class(torch.rand(1, 3, SIZE, SIZE), "cat", result, ["moon", "grace_hopper", "coffee"])
    titles = [ax.get_title() for ax in fig.axes]
    assert len(fig.axes) == 4 and titles[0] == "cat (target)"
    assert titles[2].startswith("hopper: cos 0.995\n") and "dB, SSIM 0." in titles[2]
