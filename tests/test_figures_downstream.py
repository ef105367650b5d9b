"""Figures of notebook 06: the softmax matrix and the accuracy bars, drawn from tiny synthetic results."""
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch

from vitequiv.figures import downstream
from vitequiv.systematic import SystematicResult

NAMES = ["cat", "coffee", "rocket"]


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def result() -> SystematicResult:
    """Four matched images: two of class 0, one each of classes 1 and 2, each sent to another class."""
    matched_proba = np.array([[0.05, 0.9, 0.05], [0.1, 0.1, 0.8], [0.7, 0.25, 0.05], [0.3, 0.3, 0.4]])  # (4, 3)
    return SystematicResult(
        source_labels=np.array([0, 0, 1, 2]), target_indices=np.array([2, 3, 0, 2]),
        target_labels=np.array([1, 2, 0, 1]), clean_proba=np.eye(3)[[0, 0, 1, 2]], matched_proba=matched_proba,
        matched_images=torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0)),
        embedding_cosine=np.full(4, 0.97), class_names=NAMES,
    )


def test_softmax_matrix_shows_one_row_per_source_class():
    originals = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))  # (4, 3, 8, 8)
    fig = downstream.softmax_matrix(result(), originals, n_rows=8, title="probe on tiny")
    ax, colorbar = fig.axes
    assert colorbar.get_ylabel() == "probability" and fig.get_suptitle() == "probe on tiny"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["matched\nimage", "target\nphoto", *NAMES]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["cat → coffee", "coffee → cat", "rocket → coffee"]
    assert len(ax.images) == 1 + 2 * 3  # the heatmap, two thumbnails per row
    assert sorted(t.get_text() for t in ax.texts) == ["0.25", "0.30", "0.30", "0.40", "0.70", "0.90"]  # >= 0.1
    fewer = downstream.softmax_matrix(result(), originals, n_rows=2, title="")
    assert len(fewer.axes[0].get_yticklabels()) == 2


def test_accuracy_bars_per_classifier_with_chance_lines():
    summary = pd.DataFrame({"labeled set": ["views", "views"], "classifier": ["linear probe", "3-NN (cosine)"],
                            "clean accuracy": [0.9, 0.8], "systematic accuracy": [0.0, 0.1],
                            "follows-embedding rate": [0.5, 0.6]})
    fig = downstream.accuracy(summary, chance=[1 / 3])
    (ax,) = fig.axes
    assert ax.get_ylabel() == "fraction of test images" and ax.get_xlabel() == ""
    assert ax.get_title() == "Clean vs systematic accuracy (dotted: chance)" and ax.get_ylim() == (0, 1.05)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["views: linear probe", "views: 3-NN (cosine)"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["clean accuracy", "systematic accuracy",
                                                                   "follows-embedding rate"]
    assert len(ax.patches) >= 2 * 3  # a bar per classifier and measure (and the legend's)
    assert [line.get_ydata()[0] for line in ax.lines if line.get_linestyle() == ":"] == [pytest.approx(1 / 3)]
