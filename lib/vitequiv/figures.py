"""One look for every figure, and one way for a notebook to save its figures, tables and claims.

A notebook opens ``out = vq.Output("01_embedding_matching", globals())``, then calls ``out.figure(fig, name,
caption)``, ``out.table(frame, name, caption)`` and ``out.claim(vq.Claim(...))``: PNG (for reading)
and PDF (for papers), CSV and Markdown, each written atomically, and a ``manifest.json`` that records every call
beside the profile, the parameters (the notebook's UPPER_CASE names with JSON values) and the library versions
that made them.

Where the files go: a run by the runner (``python -m vitequiv.runner``, which sets ``VITEQUIV_RUN``) writes into
its staging folder, which the runner publishes as ``figures/<notebook>/`` once the notebook has finished. Any
other run (JupyterLab, a bare papermill call, ``PROFILE == "interactive"``) writes to
``figures/_scratch/<notebook>/`` of the notebook's own checkout and says so, unless ``VITEQUIV_FIGURES`` or
``Output(..., root=...)`` names another folder. Published results thus come only from the runner.

The index of what the runner published (``figures/README.md``, ``index.json``) is :mod:`vitequiv.run.index`.
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from .claims import Claim
from .environment import library_versions, now
from .paths import atomic_path, figures_dir, remove_stale_parts, remove_tree, scratch_dir
from .version import __version__

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


INTERACTIVE = "interactive"  # the profile of a run that no profile parameterized (JupyterLab, plain Python)
PARAMETER_NAME = re.compile(r"[A-Z][A-Z0-9_]*")
_NOTEBOOK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def verdict(holds: bool, partly: bool) -> str:
    """A claim's verdict: ``"holds"`` if ``holds``, else ``"partly"`` if ``partly``, else ``"not"``."""
    for name, value in (("holds", holds), ("partly", partly)):
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"verdict({name}=...) must be a bool, got {type(value).__name__} {value!r}")
    return "holds" if holds else "partly" if partly else "not"


def notebook_parameters(namespace: Mapping[str, Any]) -> dict[str, Any]:
    """The UPPER_CASE names of a notebook's namespace whose values JSON can hold, as JSON would hold them."""
    parameters = {}
    for name, value in namespace.items():
        if not PARAMETER_NAME.fullmatch(name):
            continue
        try:
            parameters[name] = json.loads(json.dumps(value, allow_nan=False))  # a copy: later edits do not leak in
        except (TypeError, ValueError, OverflowError, RecursionError):
            continue  # tensors, models, NaN: not parameters
    return parameters


class Output:
    """Where one notebook's figures, tables and claims go, and the ``manifest.json`` that records them.

    ``namespace`` is the notebook's ``globals()``: ``PROFILE`` (default ``"interactive"``, or the runner's
    profile) and the UPPER_CASE parameters are read from it. ``root`` is the folder to write into, instead of
    the runner's staging folder or ``figures/_scratch/<notebook>/`` (see the module docstring).
    """

    def __init__(
        self, notebook: str, namespace: Mapping[str, Any] | None = None, root: str | Path | None = None,
    ) -> None:
        if not isinstance(notebook, str) or not _NOTEBOOK_NAME.fullmatch(notebook):
            raise ValueError(f"Output(notebook={notebook!r}): expected the notebook's file name without .ipynb, "
                             "e.g. '01_embedding_matching'")
        if namespace is not None and not isinstance(namespace, Mapping):
            raise TypeError(f"Output({notebook!r}, namespace): expected the notebook's globals(), "
                            f"got {type(namespace).__name__}")
        namespace = namespace or {}
        self.notebook = notebook
        self.profile = str(namespace.get("PROFILE", os.environ.get("VITEQUIV_PROFILE", INTERACTIVE)))
        runner_run = bool(os.environ.get("VITEQUIV_RUN")) and "VITEQUIV_FIGURES" in os.environ  # it sets both
        self.run_id = os.environ["VITEQUIV_RUN"] if runner_run else None
        self.dir = self._folder(root)
        self.manifest_path = self.dir / "manifest.json"
        self.manifest: dict = {
            "notebook": notebook, "profile": self.profile, "run_id": self.run_id,
            "parameters": notebook_parameters(namespace), "vitequiv_version": __version__,
            "library_versions": library_versions(), "created": now(), "figures": {}, "tables": {}, "claims": {},
        }
        self._write_manifest()

    def _folder(self, root: str | Path | None) -> Path:
        """The folder to write into (created, stale ``.part`` files removed); says where unless the runner runs."""
        if root is not None:
            folder, why = Path(root).expanduser(), "root= was given"
        elif self.run_id:
            expected = os.environ.get("VITEQUIV_NOTEBOOK")
            if expected and expected != self.notebook:
                raise ValueError(f"Output({self.notebook!r}) in notebook {expected!r}: the runner publishes a "
                                 f"notebook's outputs under its own name; use Output({expected!r}, globals())")
            folder, why = figures_dir() / self.notebook, ""  # the runner's staging folder, published at the end
        elif "VITEQUIV_FIGURES" in os.environ:
            folder, why = figures_dir() / self.notebook, "VITEQUIV_FIGURES is set"
        else:
            folder, why = scratch_dir() / self.notebook, "not a runner run: figures/ holds only published results"
            remove_tree(folder)  # one interactive session's outputs at a time, never mixed with an older one's
        folder.mkdir(parents=True, exist_ok=True)
        remove_stale_parts(folder)
        if why:
            print(f"vitequiv: {self.notebook} ({self.profile} profile) writes to {folder} ({why})")
        return folder

    @property
    def science_checks(self) -> bool:
        """Whether the notebook should assert its scientific checks: every profile but ``smoke`` (too short)."""
        return self.profile != "smoke"

    def _write_manifest(self) -> None:
        with atomic_path(self.manifest_path) as tmp:
            tmp.write_text(json.dumps(self.manifest, indent=2))

    def _record(self, kind: str, name: str, entry: dict) -> None:
        self.manifest[kind][name] = entry
        self._write_manifest()

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

    def claim(self, claim: Claim, *legacy: Any, **legacy_keywords: Any) -> Claim:
        """Record a claim (``vq.Claim``: statement, paper's evidence, our measurement, evidence, threshold) in the
        manifest under its statement, with its verdict by rule; return it, so that a cell shows it."""
        if legacy or legacy_keywords or not isinstance(claim, Claim):
            raise TypeError(
                "out.claim(...) takes one vq.Claim: a claim needs its evidence (n and a 95 % interval, from "
                "vq.claims.median, mean, proportion or exact) and a threshold fixed before the run, e.g. "
                "out.claim(vq.Claim(statement, paper, ours, evidence=vq.claims.proportion(flags), threshold=0.95, "
                "direction='>=')); the old form out.claim(claim, paper, ours, verdict) is gone (issue 29)")
        self._record("claims", claim.statement, claim.to_record())
        return claim

    def claims_table(self) -> pd.DataFrame:
        """The claims recorded so far, in order: columns claim, paper, ours, n, value, interval, threshold, verdict.

        ``value`` is the estimate, ``interval`` its 95 % interval as ``"[low, high]"`` (``"exact"`` without sampling
        uncertainty), ``threshold`` with its direction (``">= 0.95"``); ``"-"`` where a claim has no such field.
        """
        rows = [{"claim": claim, "paper": entry.get("paper", ""), "ours": entry.get("ours", ""),
                 **claim_columns(entry), "verdict": entry.get("verdict", "")}
                for claim, entry in self.manifest["claims"].items()]
        return pd.DataFrame(rows, columns=["claim", "paper", "ours", "n", "value", "interval", "threshold", "verdict"])


def claim_columns(entry: Mapping[str, Any]) -> dict[str, Any]:
    """A recorded claim's n, value, interval and threshold for a table (``"-"`` where the record has none)."""
    value, low, high = entry.get("value"), entry.get("low"), entry.get("high")
    interval = ("exact" if entry.get("statistic") == "exact" else
                "-" if low is None or high is None else f"[{low:.3g}, {high:.3g}]")
    threshold = entry.get("threshold")
    return {"n": entry.get("n") if entry.get("n") is not None else "-",
            "value": value if value is not None else "-", "interval": interval,
            "threshold": "-" if threshold is None else f"{entry.get('direction', '>=')} {threshold:g}"}
