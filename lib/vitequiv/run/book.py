"""The suite as a browsable, offline HTML book, built from the executed notebooks of the last ``make figures`` run.

Its command line is ``python -m vitequiv.book`` (:mod:`vitequiv.book`). What the run recorded is read by
:mod:`vitequiv.run.book_run`, the pages are written by :mod:`vitequiv.run.book_pages`. The book has a front page
(reproduction summary, the run's profile, dates and library versions, the paper), one page per notebook of the
suite, an index of every figure and table with its caption and files, and the classroom exercises as students get
them.

Built with Sphinx, MyST-NB and the Sphinx Book Theme (Jupyter Book 1's engine), with MathJax from the
``sphinx-mathjax-offline`` wheel: every script, style sheet and font is inside the site, nothing is fetched at
build or view time. Jupyter Book 2 and mystmd are not used because their HTML needs the ``book-theme`` site
template, which the CLI downloads from api.mystmd.org at build time; no PyPI or npm package carries it.
"""
from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ..paths import figures_dir
from .book_pages import write_sources
from .book_run import BookError, read_run

MARKER = ".vitequiv-book"  # marks a folder this module built, so that a rebuild may replace it
# What the build runs on (module name: package name); all are PyPI packages listed in pyproject.toml.
BUILD_PACKAGES = {"sphinx": "sphinx", "myst_nb": "myst-nb", "sphinx_book_theme": "sphinx-book-theme",
                  "sphinx-mathjax-offline": "sphinx-mathjax-offline"}


def build(figures: Path | None = None, out: Path | None = None) -> Path:
    """Build the book from the run in ``figures`` (default figures/) into ``out`` (default figures/_book/: a name
    starting with "_" is no notebook's folder to the runner's index).

    The site is built beside ``out`` and moved into place only when Sphinx succeeds, so a failed build leaves the
    previous book (or nothing) there; ``out`` is replaced only if this module built it.
    """
    missing = [package for module, package in BUILD_PACKAGES.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise BookError(f"the book needs {', '.join(missing)}, not installed in {sys.prefix}; "
                        "`make setup` installs them")
    figures = (figures or figures_dir()).resolve()
    out = (out or figures / "_book").resolve()
    if out.exists() and not (out / MARKER).exists() and any(out.iterdir()):
        raise BookError(f"--out {out}: exists, is not empty and is not a book built by vitequiv.book; "
                        "give a new or empty folder")
    runs = read_run(figures)
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}-build-", dir=out.parent))
    try:
        src, html = work / "src", work / "html"
        src.mkdir()
        write_sources(runs, figures, src)
        done = subprocess.run(
            [sys.executable, "-m", "sphinx", "-b", "html", "-q", "-d", str(work / "doctrees"),
             "-w", str(work / "warnings.txt"), str(src), str(html)],
            capture_output=True, text=True,
        )
        if done.returncode != 0:
            raise RuntimeError(f"Sphinx failed (exit {done.returncode}):\n{done.stderr.strip()[-4000:]}")
        warnings = (work / "warnings.txt").read_text().strip()
        if warnings:
            print(f"Sphinx warnings:\n{warnings}", file=sys.stderr)
        (html / MARKER).write_text("built by python -m vitequiv.book\n")
        old = work / "previous"
        if out.exists():
            out.rename(old)
        html.rename(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out

