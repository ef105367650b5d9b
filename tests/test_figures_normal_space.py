"""Figures of notebook 03 from tiny synthetic sweeps: their axes, labels, legends and titles."""
import numpy as np
import pytest
import torch

from vitequiv.figures import normal_space as figures
from vitequiv.matching import HISTORY_KEYS, MatchResult
from vitequiv.normal_space import BudgetSweep, SignNoise

LABELS = ["cat → rocket", "coffee → hubble"]
BASELINE = np.array([0.1, 0.2])


def _result(cosine: list[float], linf_255: list[float], quantized: list[float]) -> MatchResult:
    """A two-pair match whose returned images (row 1 of the history) have these cosines and L-inf sizes."""
    sources = torch.full((2, 3, 8, 8), 0.5)
    history = {key: np.zeros((2, 2)) for key in HISTORY_KEYS}
    history["cosine"][1], history["linf_255"][1], history["psnr"][1] = cosine, linf_255, [45.0, 41.0]
    return MatchResult(images=sources + 0.01, sources=sources, target_embeddings=torch.zeros(2, 4), history=history,
                       converged=np.array([True, False]), steps=np.array([1, 1]), passes=np.array([1, 1]),
                       elapsed_s=0.0, stopped_by="max_steps", stop_cos=0.99, quantized_cosine=np.array(quantized))


@pytest.fixture
def sweep():
    matches = {1: _result([0.3, 0.4], [1, 1], [0.29, 0.4]), 4: _result([0.8, 0.9], [4, 4], [0.79, 0.88])}
    return BudgetSweep([1, 4], matches, np.array([[0.99, 0.98], [0.7, 0.6]]))


def test_contrast_plots_matches_noise_and_min_norm_stars_against_the_budget(sweep):
    noise = SignNoise(np.full((2, 3, 2), 0.99), np.full((2, 3, 2), 0.15), np.full((2, 3, 2), 100.0))
    smallest = _result([0.99, 0.99], [3, 16], [0.99, 0.99])  # a star beyond the largest budget
    fig = figures.contrast(sweep, noise, BASELINE, smallest, "tiny")
    (ax,) = fig.axes
    assert ax.get_title() == "Same pixel budget, opposite effects (tiny, 2 pairs)"
    assert ax.get_xscale() == "log" and "gray levels" in ax.get_xlabel() and "cosine" in ax.get_ylabel()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "4", "8", "16"]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert len(legend) == 6 and legend[0] == "matched image: cos(f(x), f(target)) (mean)"
    assert "PSNR 41-45 dB" in legend[4] and legend[5].startswith("before any change")


def test_quantization_compares_float_and_8_bit_cosines_per_pair(sweep):
    fig = figures.quantization(sweep, BASELINE, LABELS)
    left, right = fig.axes
    assert left.get_ylabel() == "cosine to the target's embedding" and right.get_yscale() == "log"
    assert [t.get_text() for t in right.get_legend().get_texts()] == LABELS
    assert np.allclose(right.lines[0].get_ydata(), [0.01 + 1e-6, 0.01 + 1e-6])  # |0.3 - 0.29|, |0.8 - 0.79|
    assert all(ax.get_xlabel() == "L-inf budget (gray levels, 1/255)" for ax in fig.axes)


def test_matched_images_shows_source_match_difference_and_target_per_pair(sweep):
    images = torch.rand(2, 3, 8, 8)
    fig = figures.matched_images(images, images, sweep.matches[4], BASELINE, [("cat", "rocket"), ("a", "b")], 4)
    assert len(fig.axes) == 8
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0] == "source: cat\ncos to target 0.10" and titles[3] == "target: rocket"
    assert titles[2].startswith("difference x32 (0.5 + 32·Δ)") and "cos to target 0.900" in titles[5]
    assert fig._suptitle.get_text().startswith("L-inf budget 4/255")
