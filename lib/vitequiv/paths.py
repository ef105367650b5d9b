"""Where things live on disk, and how to write them without leaving half a file behind.

Every path is resolved from the repository root, never from the working directory, so a notebook run by
papermill from anywhere writes to the same place. Environment overrides:

- ``VITEQUIV_ROOT``: the repository root (defaults to the checkout holding this package);
- ``VITEQUIV_FIGURES``: where figures and tables go (defaults to ``<root>/figures``);
- ``VITEQUIV_DATA``: where the converted weights and caches go (defaults to ``<root>/data``).
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def repo_root() -> Path:
    """The repository root: ``$VITEQUIV_ROOT``, else the checkout this package was installed from."""
    if "VITEQUIV_ROOT" in os.environ:
        return Path(os.environ["VITEQUIV_ROOT"]).expanduser().resolve()
    checkout = Path(__file__).resolve().parents[2]  # lib/vitequiv/paths.py -> root
    if (checkout / "pyproject.toml").exists():
        return checkout
    return Path.home() / ".cache" / "vitequiv"  # a non-editable install: keep data in the user's cache


def data_dir() -> Path:
    return Path(os.environ.get("VITEQUIV_DATA", repo_root() / "data")).expanduser()


def cache_dir() -> Path:
    return data_dir() / "cache"


def figures_dir() -> Path:
    return Path(os.environ.get("VITEQUIV_FIGURES", repo_root() / "figures")).expanduser()


def notebooks_dir() -> Path:
    return repo_root() / "notebooks"


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; move it into place only if the block succeeds.

    An interrupted or failing write leaves ``target`` as it was (absent or the old version) and no
    temporary file behind.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=target.suffix + ".part", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file ordinary permissions
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
