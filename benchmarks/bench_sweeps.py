"""Sweeps: a 4-combination sweep in-process against a local Dask cluster of 2 workers (one thread each), and the
overhead Dask adds per task.

The notebooks are fake ones in a temporary checkout (as the tests' suite), not the real suite: each runs a
pure-Python loop of ``LOOP`` iterations (about 4 s of one core on the project's machine; a real smoke notebook
takes one to three minutes) and records a claim, so the measurement is the runner and Dask, not the science.
All runs use ``force=True``: nothing is skipped. The targets assume two free cores: on a machine busy with
other work, two workers cannot run twice as fast as one process.

1. Wall time of the 4-combination sweep on ``--workers 2``, the cluster's start included (its processes, and
   each worker's first import of vitequiv), against in-process.
2. The same on workers started and warmed before.
3. Dask's overhead per task: 4 empty-loop tasks one after the other on 1 warm worker, minus the same 4
   in-process, per task (scheduling, sending the notebook, returning its files, publishing them).
"""
from __future__ import annotations

import contextlib
import io
import os
import tempfile
import time
from pathlib import Path

import nbformat

from vitequiv.run import sweeps
from vitequiv.run.cluster import connect
from vitequiv.run.suite import run_sweep

from .common import Row

LOOP = 60_000_000  # iterations of the notebook's busy loop: about 4 s of one core on the project's machine
BODY = """import json, os, pathlib
total = sum(i * i for i in range(LOOP))
folder = pathlib.Path(os.environ["VITEQUIV_FIGURES"]) / "01_busy"
folder.mkdir(parents=True, exist_ok=True)
claims = {"the loop ran": {"paper": "-", "ours": f"SEED={SEED}, total={total}", "verdict": "holds"}}
(folder / "manifest.json").write_text(json.dumps({"notebook": "01_busy", "claims": claims}))"""


def _fake_checkout(root: Path) -> None:
    for folder in (root / "notebooks" / "profiles", root / "lib" / "vitequiv"):
        folder.mkdir(parents=True)
    (root / "pyproject.toml").write_text("")
    (root / "notebooks" / "profiles" / "bench.yaml").write_text("defaults: {}\n")
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    cell = nbformat.v4.new_code_cell(f"SEED = 0\nLOOP = {LOOP}")
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell, nbformat.v4.new_code_cell(BODY)]
    nbformat.write(nb, root / "notebooks" / "01_busy.ipynb")


def _timed(sweep: sweeps.Sweep, out: Path, executor=None) -> float:
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        result = run_sweep(sweep, out, force=True, executor=executor)
    seconds = time.perf_counter() - start
    if result.exit_status != 0:
        raise RuntimeError(f"the benchmark sweep failed: {[(r.combination, r.error) for r in result.records]}")
    return seconds


def main() -> list[Row]:
    four, one = sweeps.Sweep({"SEED": [0, 1, 2, 3]}, profile="bench"), sweeps.Sweep({"SEED": [9]}, profile="bench")
    empty = sweeps.Sweep({"SEED": [0, 1, 2, 3]}, profile="bench", parameters={"LOOP": 1})
    old_root = os.environ.get("VITEQUIV_ROOT")
    with tempfile.TemporaryDirectory(prefix="vitequiv-bench-") as tmp:
        root = Path(tmp)
        _fake_checkout(root)
        os.environ["VITEQUIV_ROOT"] = str(root)  # workers inherit it: they see the fake checkout
        try:
            _timed(one, root / "warm")  # the first kernel of a process pays for imports
            in_process = _timed(four, root / "inproc")
            in_process_empty = _timed(empty, root / "inproc-empty")
            start = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()), connect(2, None) as two:
                started = time.perf_counter() - start
                cold = started + _timed(four, root / "two", lambda: contextlib.nullcontext(two))
                warm = _timed(four, root / "two-warm", lambda: contextlib.nullcontext(two))
            with contextlib.redirect_stdout(io.StringIO()), connect(1, None) as single:
                _timed(one, root / "single-warm", lambda: contextlib.nullcontext(single))
                serial = _timed(empty, root / "single", lambda: contextlib.nullcontext(single))
        finally:
            if old_root is None:
                os.environ.pop("VITEQUIV_ROOT", None)
            else:
                os.environ["VITEQUIV_ROOT"] = old_root
    overhead = (serial - in_process_empty) / 4
    return [
        Row(f"4-combination sweep (fake 4 s notebooks), --workers 2 from cold ({started:.1f} s to start) vs in-process",
            cold, in_process, "ratio <= 1.1", cold <= 1.1 * in_process),
        Row("4-combination sweep (fake 4 s notebooks), --workers 2 warm vs in-process", warm, in_process,
            "ratio <= 0.7", warm <= 0.7 * in_process),
        Row("Dask overhead per task (1 warm worker, empty notebooks) vs in-process per task", overhead,
            in_process_empty / 4, "overhead <= 0.5 s", overhead <= 0.5),
    ]
