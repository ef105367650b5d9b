"""One look for every figure, and one way for a notebook to save its figures, tables and claims.

A notebook opens ``out = vq.Output("01_embedding_matching", globals())``, then calls ``out.figure(fig, name,
caption)``, ``out.flicker(source, match, name, caption)``, ``out.table(frame, name, caption)`` and
``out.claim(vq.Claim(...))``: PNG (for reading) and PDF (for papers), an animated PNG (the
reader's flicker test), CSV and Markdown, each written atomically, and a ``manifest.json`` that records every
call beside the profile, the parameters (the notebook's UPPER_CASE names with JSON values) and the library
versions that made them.

Where the files go: a run by the runner (``python -m vitequiv.runner``, which sets ``VITEQUIV_RUN``) writes into
its staging folder, which the runner publishes as ``figures/<notebook>/`` once the notebook has finished. Any
other run (JupyterLab, a bare papermill call, ``PROFILE == "interactive"``) writes to
``figures/_scratch/<notebook>/`` of the notebook's own checkout and says so, unless ``VITEQUIV_FIGURES`` or
``Output(..., root=...)`` names another folder. Published results thus come only from the runner.

The index of what the runner published (``figures/README.md``, ``index.json``) is :mod:`vitequiv.run.index`.
"""
from __future__ import annotations

import io
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
from .metrics import quantize_8bit
from .paths import atomic_path, figures_dir, remove_stale_parts, remove_tree, scratch_dir
from .tensors import as_image
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


def where_visible(
    sources: torch.Tensor, matched: Mapping[str, torch.Tensor], maps: Mapping[str, np.ndarray],
    row_titles: Sequence[str], *, quantile: float = 0.995, map_label: str = "visible difference",
) -> plt.Figure:
    """Where a change shows, per source (rows): the source, then for each method its matched image's difference
    0.5 + k (x - x0) (k per image, in its title) and its visibility map (B, H, W), one color scale for all maps.

    ``matched[name]`` (B, 3, H, W) are the matched images of ``sources`` (B, 3, H, W), ``maps[name]`` (B, H, W).
    """
    import matplotlib.colors as mcolors

    rows, names = len(sources), list(matched)
    vmax = max(float(np.quantile(maps[n], 0.999)) for n in names) or 1.0
    fig, axes = plt.subplots(rows, 1 + 2 * len(names), figsize=(2.3 * (1 + 2 * len(names)) + 0.8, 2.5 * rows + 0.6),
                             squeeze=False, layout="constrained")
    for ax in axes.flat:
        ax.set(xticks=[], yticks=[])
    for i in range(rows):
        axes[i, 0].imshow(to_numpy_image(sources[i]))
        axes[i, 0].set_title(f"{row_titles[i]}\nsource", fontsize=10)
        for j, name in enumerate(names):
            diff, gain = amplify(matched[name][i] - sources[i], quantile=quantile, fill=0.4)
            axes[i, 1 + 2 * j].imshow(to_numpy_image(diff))
            axes[i, 1 + 2 * j].set_title(f"{name}: dx x{gain:g}", fontsize=10)
            shown = axes[i, 2 + 2 * j].imshow(maps[name][i], cmap="magma", norm=mcolors.Normalize(0, vmax))
            axes[i, 2 + 2 * j].set_title(f"{name}: where visible", fontsize=10)
    fig.colorbar(shown, ax=axes, shrink=0.6, label=map_label)
    return fig


def pixels_8bit(image: torch.Tensor) -> np.ndarray:
    """One image (3, H, W) or (1, 3, H, W) in [0, 1] -> its exact 8-bit pixels (H, W, 3) uint8, as a PNG keeps them."""
    levels = quantize_8bit(image.detach().float().cpu().reshape(3, *image.shape[-2:])) * 255  # (3, H, W), whole
    return levels.permute(1, 2, 0).round().to(torch.uint8).numpy()  # (H, W, 3)


def zoom_nearest(pixels: np.ndarray, zoom: int) -> np.ndarray:
    """Pixels (H, W, C) enlarged ``zoom`` times by repeating each one (nearest neighbor: no new values)."""
    return pixels.repeat(zoom, axis=0).repeat(zoom, axis=1)  # (zoom H, zoom W, C)


def png_8bit(image: torch.Tensor, zoom: int = 1) -> bytes:
    """One image in [0, 1] as lossless PNG bytes of its 8-bit pixels, ``zoom`` times enlarged (nearest neighbor)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(zoom_nearest(pixels_8bit(image), zoom)).save(buffer, format="png")
    return buffer.getvalue()


FLICKER_GAP = 8  # pixels between the zoomed copies
FLICKER_LABEL_HEIGHT = 16  # the strip above the images that says which one is shown
FLICKER_BACKGROUND = (255, 255, 255)


def flicker_frame(pixels: np.ndarray, label: str, zooms: Sequence[int]) -> np.ndarray:
    """One frame of a flicker: ``label`` in a strip on top, below it ``pixels`` (H, W, 3) at each zoom, left to
    right, top-aligned, every copy's pixels exact."""
    from PIL import Image, ImageDraw

    h, w = pixels.shape[:2]
    width = sum(z * w for z in zooms) + FLICKER_GAP * (len(zooms) - 1)
    frame = Image.new("RGB", (width, FLICKER_LABEL_HEIGHT + max(zooms) * h), FLICKER_BACKGROUND)
    ImageDraw.Draw(frame).text((2, 2), f"{label} ({', '.join(f'{z}x' for z in zooms)})", fill=(0, 0, 0))
    canvas = np.array(frame)  # (label + max zoom H, width, 3)
    left = 0
    for z in zooms:
        canvas[FLICKER_LABEL_HEIGHT:FLICKER_LABEL_HEIGHT + z * h, left:left + z * w] = zoom_nearest(pixels, z)
        left += z * w + FLICKER_GAP
    return canvas


def flicker(
    source: torch.Tensor | np.ndarray, match: torch.Tensor | np.ndarray, *,
    labels: tuple[str, str] = ("source", "matched"), zooms: Sequence[int] = (1, 2), interval_ms: int = 600,
) -> bytes:
    """An animated PNG (APNG, lossless) that alternates ``source`` and ``match`` forever, ``interval_ms`` each,
    each frame showing its image at every zoom (nearest neighbor) under a label saying which it is.

    The reader's own test of "visually indistinguishable": flicking between two images, enlarged, is how people
    find differences. Pixels are the exact 8-bit values (images in [0, 1] rounded as a PNG keeps them); GIF would
    not do, its 256-color palette changes the very pixels being compared.
    """
    from PIL import Image

    a = as_image(source, "source")  # (1, 3, H, W)
    b = as_image(match, "match")  # (1, 3, H, W)
    if a.shape != b.shape:
        raise ValueError(f"source and match must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if len(labels) != 2 or labels[0] == labels[1]:
        raise ValueError(f"labels must be two different texts (which image is shown), got {labels!r}")
    if not zooms or any(isinstance(z, bool) or not isinstance(z, int) or z < 1 for z in zooms):
        raise ValueError(f"zooms must be whole numbers >= 1, got {zooms!r}")
    if isinstance(interval_ms, bool) or not isinstance(interval_ms, int) or interval_ms < 20:
        raise ValueError(f"interval_ms must be a whole number of milliseconds >= 20, got {interval_ms!r}")
    frames = [Image.fromarray(flicker_frame(pixels_8bit(x), label, zooms)) for x, label in zip((a, b), labels)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="png", save_all=True, append_images=frames[1:], duration=interval_ms, loop=0)
    return buffer.getvalue()


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
                "-" if low is None or high is None else f"[{low:.3g}, {high:.3g}]")
    threshold = entry.get("threshold")
    return {"n": entry.get("n") if entry.get("n") is not None else "-",
            "value": value if value is not None else "-", "interval": interval,
            "threshold": "-" if threshold is None else f"{entry.get('direction', '>=')} {threshold:g}"}
