"""One way for a notebook to save its figures, tables and claims (:class:`Output`), and the manifest that records
them; see :mod:`vitequiv.figures` for where the files go."""
from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
import torch

from ..claims import NO_INTERVAL, Claim
from ..environment import library_versions, now
from ..paths import atomic_path, figures_dir, remove_stale_parts, remove_tree, scratch_dir
from ..version import __version__
from .images import flicker

INTERACTIVE = "interactive"  # the profile of a run that no profile parameterized (JupyterLab, plain Python)
PARAMETER_NAME = re.compile(r"[A-Z][A-Z0-9_]*")
_NOTEBOOK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


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


def show_png(data: bytes) -> None:
    """Display PNG bytes as they are (an animated PNG stays animated) where IPython runs; nothing elsewhere."""
    from IPython import get_ipython
    from IPython.display import Image, display

    if get_ipython() is not None:
        display(Image(data=data, format="png"))


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

    def flicker(self, source: torch.Tensor, match: torch.Tensor, name: str, caption: str, **options: Any) -> Path:
        """Save :func:`flicker` of the two images as ``<name>.png`` (an animated PNG), record it as a figure and show
        it in the notebook; return its path. ``options`` go to :func:`flicker` (labels, zooms, interval_ms)."""
        data = flicker(source, match, **options)
        with atomic_path(self.dir / f"{name}.png") as tmp:
            tmp.write_bytes(data)
        self._record("figures", name, {"files": [f"{name}.png"], "caption": caption})
        show_png(data)
        return self.dir / f"{name}.png"

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
                (NO_INTERVAL if entry.get("statistic") else "-") if low is None or high is None else
                f"[{low:.3g}, {high:.3g}]")
    threshold = entry.get("threshold")
    return {"n": entry.get("n") if entry.get("n") is not None else "-",
            "value": value if value is not None else "-", "interval": interval,
            "threshold": "-" if threshold is None else f"{entry.get('direction', '>=')} {threshold:g}"}
