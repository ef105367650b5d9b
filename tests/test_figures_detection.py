"""Figures of notebook 08 (detection and defenses) from tiny synthetic shifts, survival frames and images."""
import matplotlib.colors as mcolors
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch

from vitequiv import detection
from vitequiv.figures import METHOD_COLORS
from vitequiv.figures import detection as figures

SIGMAS = [2, 8]


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_detector_draws_histograms_roc_curves_and_auc_over_sigma():
    clean = np.array([[0.01, 0.02], [0.02, 0.03], [0.03, 0.05]])  # (N, S)
    matched = {"plain match": np.array([[0.02, 0.2], [0.04, 0.3]]), "EOT match": np.array([[0.01, 0.01]])}
    auc = detection.detector_auc_table(clean, matched, SIGMAS)
    fig = figures.detector(clean, matched, auc, SIGMAS, 8)
    hist, roc, over_sigma = fig.axes
    assert hist.get_xscale() == "log" and hist.get_xlabel() == "embedding shift 1 - cos at sigma 8/255"
    assert [t.get_text() for t in hist.get_legend().get_texts()] == ["clean (n=3)", "plain match (n=2)",
                                                                   "EOT match (n=1)"]
    assert mcolors.same_color(hist.patches[0].get_facecolor()[:3], METHOD_COLORS["clean"])
    assert roc.get_title() == "ROC at sigma 8/255" and roc.get_ylabel() == "true-positive rate (match flagged)"
    assert [t.get_text() for t in roc.get_legend().get_texts()] == ["plain match: AUC 1.00", "EOT match: AUC 0.00",
                                                                  "chance"]
    assert mcolors.same_color(roc.lines[0].get_color(), METHOD_COLORS["plain"])
    assert over_sigma.get_title() == "Detector AUC vs noise size" and over_sigma.get_ylabel() == "AUC"
    assert [t.get_text() for t in over_sigma.get_xticklabels()] == ["2", "8"]
    with pytest.raises(ValueError):
        figures.detector(clean, matched, auc, SIGMAS, 4)  # a sigma that was not measured


def survival_frame(cos_target: float) -> pd.DataFrame:
    return pd.DataFrame({"transform": ["identity", "identity", "JPEG q75", "JPEG q75"], "pair": [0, 1, 0, 1],
                         "cos_target": [1.0, 1.0, cos_target, cos_target - 0.1], "cos_source": 0.5})


def test_survival_strips_each_matching_with_its_source_crosses_and_threshold():
    fig = figures.survival({"plain": survival_frame(0.9), "EOT": survival_frame(0.95)}, 0.99)
    (ax,) = fig.axes
    assert ax.get_title() == "Do matches survive processing?" and ax.get_ylabel() == "cosine to the target embedding"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["identity", "JPEG q75"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "plain match, per pair", "EOT match, per pair", "mean cosine to the transformed source",
        "match threshold 0.99"]
    assert any(list(line.get_ydata()) == [0.99, 0.99] for line in ax.lines)  # the threshold
    points = np.concatenate([c.get_offsets()[:, 1] for c in ax.collections if len(c.get_offsets())])
    assert sorted(points) == pytest.approx(sorted([1.0, 1.0, 0.9, 0.8, 1.0, 1.0, 0.95, 0.85]), abs=1e-9)


def test_matched_images_shows_source_target_and_each_match_with_its_change():
    sources, targets = torch.zeros(4, 3, 8, 8), torch.ones(4, 3, 8, 8)
    matches = {"plain": (sources + 0.01, np.array([0.5, 0.6, 0.7, 0.8])), "EOT": (sources + 0.02, np.full(4, 0.9))}
    names = ["cat", "dog", "bird", "fish", "tree"]
    fig = figures.matched_images(sources, targets, matches, names, ([0, 1, 2, 3], [4, 3, 2, 1]), gain=10, rows=2)
    axes = fig.axes
    assert len(axes) == 2 * 6
    assert [ax.get_title() for ax in axes[:6]] == ["source: cat", "target: tree", "plain, cos 0.500",
                                                   "plain: 0.5+10dx", "EOT, cos 0.900", "EOT: 0.5+10dx"]
    assert axes[6].get_title() == "source: dog" and axes[7].get_title() == "target: fish"
    assert np.allclose(axes[3].images[0].get_array(), 0.6)  # 0.5 + 10 * 0.01
