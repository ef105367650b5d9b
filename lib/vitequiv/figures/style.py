"""One look for every figure: seaborn's white grid, readable font sizes, and one color per method."""
from __future__ import annotations

STYLE = {
    "figure.dpi": 110,
    "savefig.dpi": 150,
    "savefig.bbox": "tight",
    "font.size": 11,
    "axes.titlesize": 12,
    "axes.labelsize": 11,
    "legend.fontsize": 10,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
    "figure.constrained_layout.use": True,
}


def use_style() -> None:
    """Seaborn's white grid with readable font sizes; called once by every notebook."""
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook", palette="colorblind", rc=STYLE)


METHOD_COLORS = {  # the Okabe-Ito colors seaborn's "colorblind" palette uses, one per matcher in every figure
    "min-norm": "#009E73", "min-visible": "#CC79A7", "Adam": "#0072B2", "paper GD": "#D55E00",
    "plain": "#D55E00", "EOT": "#0072B2", "clean": "#009E73",
}
