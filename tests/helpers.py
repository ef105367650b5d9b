"""Helpers the tests share: fixed random images, a tiny fake checkout of notebooks, and running the runner."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import torch


def random_images(n: int, seed: int = 0, size: int = 32) -> torch.Tensor:
    """``n`` fixed uniform-noise images (n, 3, size, size) in [0, 1], the same for the same seed."""
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


# A tiny fake repository: 01 makes a figure, a table and a claim through vq.Output; 02 fails; 03 writes a file
# into its output folder without vitequiv (a fast kernel), leaves its pid in notebooks/kernel.pid, then sleeps.
GOOD = ("import vitequiv as vq, matplotlib.pyplot as plt, pandas as pd\n"
        "out = vq.Output('01_good', globals())\nfig, ax = plt.subplots(); ax.plot([X, X])\n"
        "out.figure(fig, 'line', 'a line at X')\nout.table(pd.DataFrame({'x': [X]}), 'values', 'the value of X')\n"
        "out.claim(vq.Claim('X is three', 'none', f'X={X}', evidence=vq.claims.exact(X, 1), threshold=3))")
SLEEPER = ("import os, pathlib, time\n"
           "folder = pathlib.Path(os.environ.get('VITEQUIV_FIGURES', 'unset')) / '03_sleep'\n"
           "folder.mkdir(parents=True, exist_ok=True)\n(folder / 'new.png').write_text(f'SLEEP={SLEEP}')\n"
           "pathlib.Path('kernel.pid').write_text(str(os.getpid()))\ntime.sleep(SLEEP)\n"
           "(folder / 'new.pdf').write_text('after the sleep')")
PROFILE = "defaults:\n  X: 2\nnotebooks:\n  01_good:\n    X: 3\n"
SLOW_PROFILE = "defaults:\n  X: 2\nnotebooks:\n  03_sleep:\n    SLEEP: 60\n"


def make_notebook(path: Path, body: str, params: str = "X = 1  # a parameter") -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    cell = nbformat.v4.new_code_cell(params)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell, nbformat.v4.new_code_cell(body)]
    nbformat.write(nb, path)


def make_suite(root: Path) -> Path:
    """The fake repository under ``root`` (a checkout: pyproject.toml, notebooks/, lib/vitequiv/)."""
    (root / "notebooks" / "profiles").mkdir(parents=True)
    (root / "lib" / "vitequiv").mkdir(parents=True)
    (root / "pyproject.toml").write_text("")
    (root / "notebooks" / "profiles" / "tiny.yaml").write_text(PROFILE)
    (root / "notebooks" / "profiles" / "slow.yaml").write_text(SLOW_PROFILE)
    make_notebook(root / "notebooks" / "01_good.ipynb", GOOD, "X = 1  # a parameter\nMODEL = 'a'  # another")
    make_notebook(root / "notebooks" / "02_bad.ipynb", "raise RuntimeError('boom')")
    make_notebook(root / "notebooks" / "03_sleep.ipynb", SLEEPER, "SLEEP = 0  # seconds")
    return root


def private_copy(published: Path, folder: Path, monkeypatch) -> Path:
    """A copy of a published fake checkout as ``folder/suite``, made the root (``VITEQUIV_ROOT``), to spoil."""
    root = folder / "suite"
    shutil.copytree(published, root)
    monkeypatch.setenv("VITEQUIV_ROOT", str(root))
    return root


def files_under(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def _interruptible() -> None:
    """In the child: Ctrl-C interrupts, as in a terminal. A test run started in the background (``make test &``,
    some CI shells) inherits SIGINT ignored, and Python then never raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_runner(root: Path, *args: str) -> subprocess.Popen:
    env = os.environ | {"VITEQUIV_ROOT": str(root), "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-m", "vitequiv.runner", "--output-dir", str(root / "out"), *args],
                            cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_interruptible)
