"""Figures of notebook 07 (models and layers) from tiny synthetic measurements: panels, labels, one line or bar per
model."""
import matplotlib.pyplot as plt
import numpy as np
import pytest

from vitequiv import structure
from vitequiv.figures import layers


def row(model: str, scale: float = 1.0, **labels) -> structure.StructureRow:
    """A StructureRow with positive, model-dependent numbers and a 4-value spectrum at image 0."""
    nan = float("nan")
    matching = structure.MatchingSummary(
        pairs=1, cos0=0.5 * scale, reach_cos=1.0, reach_rel=1.0, steps_cos=5, steps_rel=4, linf_cos=nan, l2_cos=nan,
        psnr_cos=nan, linf_rel=nan, l2_rel=nan, psnr_rel=nan, final_cos=0.99, final_rel=0.1 * scale,
        final_linf=20.0 * scale, final_psnr=30.0, final_steps=6 * scale, s_per_pair=0.1, survives_8bit=1.0)
    jacobian = structure.JacobianSummary(
        D=4, P=48, rank=3, null_fraction=45 / 48, entropy_rank=2.5 * scale, s_max=2.0, s_max_rel=scale,
        s_ratio_10=0.1, method="full", seconds=1.0, eps=(1e-3,), lipschitz_top=(8.0 * scale,), lipschitz_random=(2.0,))
    return structure.StructureRow(model, matching, jacobian, {0: np.array([4.0, 2.0, 1.0, 0.5]) * scale}, labels)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_model_label_names_the_embedded_model_pretrained():
    assert layers.model_label("embedded") == "pretrained (embedded)"
    assert layers.model_label("random, timm init") == "random, timm init"


def test_models_has_five_bar_panels_and_a_spectrum_per_model():
    rows = [row("embedded"), row("random, timm init", 0.5), row("random, LayerScale 1", 2.0)]
    fig = layers.models(rows, image=0, photo="cat", size=28)
    axes = fig.axes
    assert len(axes) == 6 and "Pretrained vs randomly initialized" in fig._suptitle.get_text()
    assert [ax.get_title() for ax in axes[:5]] == [
        "residual distance after matching", "Adam steps used (both criteria or cap)",
        "largest pixel change at the end", "Jacobian effective rank", "top singular value / |f(x)|"]
    assert [len(ax.patches) for ax in axes[:5]] == [3] * 5
    assert axes[0].get_yscale() == "log" and axes[1].get_yscale() == "linear"
    assert [t.get_text() for t in axes[0].get_xticklabels()] == [
        "pretrained (embedded)", "random, timm init", "random, LayerScale 1"]
    assert [p.get_height() for p in axes[2].patches] == [20.0, 10.0, 40.0]  # final L-inf per model
    spectrum = axes[5]
    assert spectrum.get_title() == "Jacobian singular values (cat, 28 px)" and spectrum.get_ylabel() == "s_i / s_1"
    assert len(spectrum.lines) == 3 and np.allclose(spectrum.lines[0].get_ydata(), [1, 0.5, 0.25, 0.125])
    assert [t.get_text() for t in spectrum.get_legend().get_texts()][0] == "pretrained (embedded)"


def test_blocks_has_one_line_per_model_over_the_blocks():
    rows = [row(name, scale, block=b) for name, scale in (("embedded", 1.0), ("random, LayerScale 1", 0.5))
            for b in (0, 3, 11)]
    fig = layers.blocks(rows, eps=1e-3, max_steps=7, size=28)
    axes = fig.axes
    assert len(axes) == 6 and "28 px" in fig._suptitle.get_text()
    assert axes[1].get_title() == "residual distance after matching (cap 7)"
    assert axes[5].get_title() == "directional Lipschitz, top / random (eps 0.001)"
    for ax in axes:
        assert len(ax.lines) == 2 and ax.get_xlabel() == "block (0 = first)" and ax.get_ylabel()
        assert list(ax.get_xticks()) == [0, 3, 11]
    assert np.allclose(axes[5].lines[0].get_ydata(), [4, 4, 4]) and np.allclose(axes[5].lines[1].get_ydata(), 2)
    assert [t.get_text() for t in axes[0].get_legend().get_texts()] == ["pretrained (embedded)", "random, LayerScale 1"]
    with pytest.raises(KeyError, match="not measured"):
        layers.blocks(rows, eps=0.5, max_steps=7, size=28)
