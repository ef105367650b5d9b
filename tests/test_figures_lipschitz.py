"""Figures of notebook 05: the eps sweep and the estimates across photos, drawn from tiny synthetic tables."""
import matplotlib.pyplot as plt
import pandas as pd
import pytest

from vitequiv.figures import lipschitz

KINDS = ["top singular", "matching", "random", "null space"]


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_eps_sweep_draws_both_dtypes_per_kind_and_the_exact_limit():
    sweep = pd.DataFrame([{"direction": kind, "dtype": dtype, "eps": eps, "L": 0.0 if eps < 1e-6 else 10.0 / (i + 1),
                           "||Jv||": 10.0 / (i + 1)}
                          for i, kind in enumerate(KINDS) for dtype in ("float32", "float64")
                          for eps in (1e-1, 1e-4, 1e-8)])
    fig = lipschitz.eps_sweep(sweep, "cat", 28)
    (ax,) = fig.axes
    assert ax.get_xscale() == ax.get_yscale() == "log" and ax.xaxis_inverted()
    assert ax.get_xlabel().startswith("eps") and ax.get_ylabel() == "L(x, v, eps) (clipped at 1e-8)"
    assert "'cat' at 28 px" in ax.get_title()
    assert len(ax.lines) == 4 * 2 + 4  # a curve per kind and dtype, a dotted ||Jv|| per kind
    assert min(ax.lines[0].get_ydata()) == 1e-8  # exact zeros clipped onto the plot
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == [f"{kind}, {dtype}" for kind in KINDS for dtype in ("float32", "float64")]


def test_across_photos_shows_each_photo_per_kind():
    estimates = pd.DataFrame([{"photo": photo, "direction": kind, "L": 10.0 ** -i}
                              for photo in ("cat", "coffee") for i, kind in enumerate(KINDS) for _ in range(2)])
    fig = lipschitz.across_photos(estimates, 1e-3, 28, n_top=4, n_random=8)
    (ax,) = fig.axes
    assert ax.get_yscale() == "log" and ax.get_xlabel() == "direction type" and ax.get_ylabel() == "L(x, v, eps=0.001)"
    assert [t.get_text() for t in ax.get_xticklabels()] == KINDS
    assert "over 2 photo(s) (28 px, float64)" in ax.get_title() and "top 4 right-singular" in ax.get_title()
    legend = ax.get_legend()
    assert legend.get_title().get_text() == "photo" and [t.get_text() for t in legend.get_texts()] == ["cat", "coffee"]
