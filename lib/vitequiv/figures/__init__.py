"""One look for every figure, the figures of each finding, and one way for a notebook to save its figures,
tables and claims.

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

Modules: :mod:`.style` (the look), :mod:`.images` (image grids, amplified changes, flickers), :mod:`.output`
(:class:`Output`), and one module of figure builders per finding, named after its library module
(:mod:`.matching`, ...), each returning a matplotlib figure for ``out.figure``.
"""
from __future__ import annotations

from . import detection, downstream, layers, lipschitz, matching, normal_space, subspaces  # the figures by finding
from .images import (
    FLICKER_BACKGROUND,
    FLICKER_GAP,
    FLICKER_LABEL_HEIGHT,
    amplify,
    flicker,
    flicker_frame,
    image_grid,
    pixels_8bit,
    png_8bit,
    to_numpy_image,
    where_visible,
    zoom_nearest,
)
from .output import INTERACTIVE, PARAMETER_NAME, Output, claim_columns, notebook_parameters, show_png
from .style import METHOD_COLORS, STYLE, use_style

__all__ = [
    "detection", "downstream", "layers", "lipschitz", "matching", "normal_space", "subspaces",
    "FLICKER_BACKGROUND", "FLICKER_GAP", "FLICKER_LABEL_HEIGHT", "INTERACTIVE", "METHOD_COLORS", "PARAMETER_NAME",
    "STYLE", "Output", "amplify", "claim_columns", "flicker", "flicker_frame", "image_grid", "notebook_parameters",
    "pixels_8bit", "png_8bit", "show_png", "to_numpy_image", "use_style", "where_visible", "zoom_nearest",
]
