"""One look for every figure, and one way to save figures, tables and claims.

A notebook opens ``out = vq.Output("01_embedding_matching")``, then calls ``out.figure(fig, name, caption)`` and
``out.table(frame, name, caption)``: PNG (for reading) and PDF (for papers), CSV and Markdown, all under
``figures/<notebook>/``, written atomically. Each call is recorded in ``figures/<notebook>/manifest.json``; the
runner turns the manifests into ``figures/README.md``, an index a reader can browse without running anything,
and ``out.claim(...)`` rows into the reproduction summary.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from .paths import atomic_path, figures_dir

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
VERDICTS = ("holds", "partly", "not")


def use_style() -> None:
    """Seaborn's white grid with readable font sizes; called once by every notebook."""
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook", palette="colorblind", rc=STYLE)


def to_numpy_image(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) or (1, 3, H, W) tensor in [0, 1] -> (H, W, 3) array for ``imshow``."""
    return image.detach().reshape(-1, *image.shape[-2:]).permute(1, 2, 0).clamp(0, 1).cpu().numpy()


def amplify(
    delta: torch.Tensor, gain: float | None = None, *, quantile: float = 1.0, fill: float = 0.5,
) -> tuple[torch.Tensor, float]:
    """A perturbation (..., 3, H, W) made visible: 0.5 + gain * delta, clamped to [0, 1], and the gain used.

    ``gain`` None picks it so that the ``quantile`` of |delta| lands ``fill`` away from mid-grey, rounded to two
    significant digits so that a figure title can quote it.
    """
    if gain is None:
        size = torch.quantile(delta.detach().abs().flatten().float().cpu(), quantile).item()
        gain = float(f"{fill / max(size, 1 / 255 / 8):.2g}")  # the floor keeps an all-zero delta finite
    return (0.5 + gain * delta).clamp(0, 1), gain


def image_grid(
    images: torch.Tensor | Sequence[torch.Tensor],
    titles: Sequence[str] | None = None,
    ncols: int | None = None,
    size: float = 2.2,
    suptitle: str | None = None,
) -> plt.Figure:
    """Images (N, 3, H, W) in [0, 1] on a grid without axes, each with an optional title."""
    images = [im for im in images]
    ncols = ncols or len(images)
    nrows = -(-len(images) // ncols)
    title_height = 0.45 if titles is not None else 0.0  # room for two-line titles between the rows
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, (size + title_height) * nrows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, (ax, image) in enumerate(zip(axes.flat, images)):
        ax.imshow(to_numpy_image(image))
        if titles is not None:
            ax.set_title(titles[i], fontsize=10)
    if suptitle:
        fig.suptitle(suptitle)
    return fig


class Output:
    """Where one notebook's figures, tables and claims go: ``figures/<notebook>/``."""

    def __init__(self, notebook: str, root: str | Path | None = None) -> None:
        self.notebook = notebook
        self.dir = Path(root) if root is not None else figures_dir() / notebook
        self.dir.mkdir(parents=True, exist_ok=True)
        self.manifest_path = self.dir / "manifest.json"
        self.manifest: dict = {"notebook": notebook, "figures": {}, "tables": {}, "claims": {}}

    def _record(self, kind: str, name: str, entry: dict) -> None:
        self.manifest[kind][name] = entry
        with atomic_path(self.manifest_path) as tmp:
            tmp.write_text(json.dumps(self.manifest, indent=2))

    def figure(self, fig: plt.Figure, name: str, caption: str) -> Path:
        """Save ``fig`` as ``<name>.png`` and ``<name>.pdf``; return the PNG path."""
        paths = {}
        for ext in ("png", "pdf"):
            with atomic_path(self.dir / f"{name}.{ext}") as tmp:
                fig.savefig(tmp, format=ext)
            paths[ext] = self.dir / f"{name}.{ext}"
        self._record("figures", name, {"files": [p.name for p in paths.values()], "caption": caption})
        return paths["png"]

    def table(self, frame: pd.DataFrame, name: str, caption: str, floatfmt: str = ".4g") -> Path:
        """Save ``frame`` as ``<name>.csv`` and ``<name>.md``; return the Markdown path."""
        with atomic_path(self.dir / f"{name}.csv") as tmp:
            frame.to_csv(tmp, index=False)
        with atomic_path(self.dir / f"{name}.md") as tmp:
            tmp.write_text(f"{caption}\n\n{frame.to_markdown(index=False, floatfmt=floatfmt)}\n")
        self._record("tables", name, {"files": [f"{name}.csv", f"{name}.md"], "caption": caption})
        return self.dir / f"{name}.md"

    def claim(self, claim: str, paper: str, ours: str, verdict: str) -> None:
        """One row of the reproduction summary: the paper's claim and evidence, our measurement, a verdict."""
        if verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {verdict!r}")
        self._record("claims", claim, {"paper": paper, "ours": ours, "verdict": verdict})


def write_index(root: Path | None = None, statuses: dict[str, str] | None = None) -> Path:
    """``figures/README.md``: every figure and table by notebook, with captions, and the reproduction summary."""
    root = root or figures_dir()
    manifests = [json.loads(p.read_text()) for p in sorted(root.glob("*/manifest.json"))]
    lines = ["# Figures and tables", "", "Generated by `make figures` (the runner); do not edit by hand.", ""]
    claims = [(m["notebook"], c, e) for m in manifests for c, e in m["claims"].items()]
    if claims:
        lines += ["## Reproduction summary", "", "| claim | paper's evidence | our measurement | verdict | notebook |",
                  "|---|---|---|---|---|"]
        lines += [f"| {c} | {e['paper']} | {e['ours']} | **{e['verdict']}** | {nb} |" for nb, c, e in claims]
        lines.append("")
    for m in manifests:
        nb = m["notebook"]
        status = f" ({statuses[nb]})" if statuses and nb in statuses else ""
        lines += [f"## {nb}{status}", "", f"Executed notebook: [{nb}.ipynb]({nb}/{nb}.ipynb)", ""]
        for name, e in m["figures"].items():
            lines.append(f"- figure [{name}]({nb}/{e['files'][0]}) ([pdf]({nb}/{e['files'][1]})): {e['caption']}")
        for name, e in m["tables"].items():
            lines.append(f"- table [{name}]({nb}/{e['files'][1]}) ([csv]({nb}/{e['files'][0]})): {e['caption']}")
        lines.append("")
    with atomic_path(root / "README.md") as tmp:
        tmp.write_text("\n".join(lines))
    return root / "README.md"
