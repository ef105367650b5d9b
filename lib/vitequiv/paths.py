"""Where things live on disk, and how to write them without leaving half a file behind.

Every path is resolved from the repository root, never from a bare working directory, so that a notebook
writes to the same place however it is started. The root is the checkout the notebook belongs to: the first
folder at or above the working directory that holds ``pyproject.toml``, ``notebooks/`` and ``lib/vitequiv/``
(JupyterLab and the runner both start a kernel in the notebook's folder), else the checkout this package was
installed from. So a notebook of a second clone writes into that clone, never into the installed one.
Environment overrides:

- ``VITEQUIV_ROOT``: the repository root;
- ``VITEQUIV_FIGURES``: where figures and tables go (defaults to ``<root>/figures``);
- ``VITEQUIV_DATA``: where the converted weights and caches go (defaults to ``<root>/data``).

Each must name an existing folder, and ``VITEQUIV_ROOT`` a checkout: anything else (a typo) is a
:class:`LocationError` naming the variable, and nothing is created there.

Inside ``figures/`` the runner publishes one folder per notebook; the names below are not notebooks:
``.staging/`` (runs in progress), ``.runs/`` (run records and cache keys), ``_scratch/`` (interactive runs) and
``sweeps/`` (one folder per sweep, each combination an output folder of its own).
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

STAGING = ".staging"  # figures/.staging/<notebook>-<run id>/: a runner run in progress
RUNS = ".runs"  # figures/.runs/<notebook>.json: the record of each notebook's last runner run
SCRATCH = "_scratch"  # figures/_scratch/<notebook>/: interactive and ad-hoc runs
KEY_SUFFIX = ".key.json"  # figures/.runs/<notebook>.key.json: what determined its last ok run (vitequiv.run.cache)
SWEEPS = "sweeps"  # figures/sweeps/<sweep>/<combination>/<notebook>/: parameter sweeps (vitequiv.run.sweeps)
RESERVED = frozenset({SWEEPS})  # figures/ folders that hold no notebook's outputs
# atomic_path's temporary files: .<stem>.<pid>-<random><suffix>.part (the pid tells whether the writer lives)
_PART = re.compile(r"^\..*\.(\d+)-[a-z0-9_]{8}(\.[^.]*)?\.part$")


class LocationError(ValueError):
    """``VITEQUIV_ROOT``, ``VITEQUIV_DATA`` or ``VITEQUIV_FIGURES`` names a folder that does not exist, or a root
    that is not a checkout."""


def _named_folder(variable: str) -> Path | None:
    """The existing folder ``$variable`` names, None when it is unset; LocationError otherwise."""
    value = os.environ.get(variable)
    if value is None:
        return None
    path = Path(value).expanduser()
    if not value.strip() or not path.is_dir():
        what = "is empty" if not value.strip() else "is not a folder" if path.exists() else "does not exist"
        raise LocationError(f"{variable}={value!r} {what}; point it at an existing folder (it is not created), "
                            "or unset it to use the default")
    return path


def is_checkout(folder: Path) -> bool:
    """Whether ``folder`` is a vitequiv checkout: ``pyproject.toml``, ``notebooks/`` and ``lib/vitequiv/``."""
    return ((folder / "pyproject.toml").is_file() and (folder / "notebooks").is_dir()
            and (folder / "lib" / "vitequiv").is_dir())


def repo_root() -> Path:
    """``$VITEQUIV_ROOT``, else the checkout at or above the working directory, else the installed checkout."""
    named = _named_folder("VITEQUIV_ROOT")
    if named is not None:
        if not is_checkout(named):
            raise LocationError(f"VITEQUIV_ROOT={os.environ['VITEQUIV_ROOT']!r} is not a vitequiv checkout (it needs "
                                "pyproject.toml, notebooks/ and lib/vitequiv/); point it at the repository's top "
                                "folder, or unset it")
        return named.resolve()
    try:
        here = Path.cwd()
    except OSError:  # the working directory was deleted
        here = None
    if here is not None:
        for folder in (here, *here.parents):
            if is_checkout(folder):
                return folder
    checkout = Path(__file__).resolve().parents[2]  # lib/vitequiv/paths.py -> root
    if (checkout / "pyproject.toml").exists():
        return checkout
    return Path.home() / ".cache" / "vitequiv"  # a non-editable install: keep data in the user's cache


def data_dir() -> Path:
    return _named_folder("VITEQUIV_DATA") or repo_root() / "data"


def cache_dir() -> Path:
    return data_dir() / "cache"


def figures_dir() -> Path:
    return _named_folder("VITEQUIV_FIGURES") or repo_root() / "figures"


def scratch_dir() -> Path:
    """``figures/_scratch/`` of the notebook's own checkout, where interactive runs write."""
    return repo_root() / "figures" / SCRATCH


def notebooks_dir() -> Path:
    return repo_root() / "notebooks"


def is_notebook_folder(path: Path) -> bool:
    """Whether a folder directly under ``figures/`` holds a notebook's outputs (not staging, scratch, sweeps)."""
    return path.is_dir() and not path.name.startswith((".", "_")) and path.name not in RESERVED


def pid_alive(pid: int, host: str | None = None) -> bool:
    """Whether process ``pid`` runs on this machine (a zombie counts as dead); False for another ``host``."""
    if pid <= 0 or (host is not None and host != socket.gethostname()):
        return False  # 0 and negative pids name process groups, not a process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists but belongs to another user
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):  # no /proc (macOS): trust kill
        return True
    return state not in ("Z", "X")


def remove_stale_parts(folder: Path) -> list[Path]:
    """Delete the ``.part`` files under ``folder`` whose writer is no longer running; return them."""
    removed = []
    for path in folder.rglob(".*.part"):
        match = _PART.match(path.name)
        if match and pid_alive(int(match.group(1))):
            continue  # a live process is writing it
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(path)
    return removed


def remove_tree(path: Path) -> None:
    """Delete ``path`` (a folder or a file) if it exists."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; move it into place only if the block succeeds.

    An interrupted or failing write leaves ``target`` as it was (absent or the old version) and no temporary
    file behind; a killed writer's temporary file carries its pid, so :func:`remove_stale_parts` can clear it.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{target.stem}.{os.getpid()}-", suffix=target.suffix + ".part", dir=target.parent)
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
