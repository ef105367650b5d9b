"""What the runner knows about a run: tasks, statuses, run records, results, errors, and reading and writing them.

A run record, ``<outputs>/.runs/<notebook>.json``, holds a notebook's last runner run from its start (status
``running``) to its end; the published folder's ``manifest.json`` carries the same entry under ``run``. They are
read back through :func:`vitequiv.run.schemas.read_json`, which checks their shape.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import socket
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any

from ..environment import now
from ..paths import RUNS, atomic_path, pid_alive
from ..version import __version__

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
# The public fields of a run, as the run record, the manifest's "run" entry and the index hold them.
RUN_KEYS = ("run_id", "status", "profile", "parameters", "started", "finished", "seconds", "error", "vitequiv_version")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
ACTIVE_RUNS: set[str] = set()  # run ids that a runner in this process is running now (see live_run)


class RunStatus(str, Enum):
    """How a notebook's run stands. A ``str``, so records, tables and JSON hold the bare word."""

    OK = "ok"
    FAILED = "failed"
    START_FAILED = "start failed"  # its kernel did not start (twice): nothing ran, nothing was published
    INTERRUPTED = "interrupted"
    SKIPPED = "skipped"  # unchanged since its last ok run: not run again
    NOT_RUN = "not run"  # the run was interrupted before it came to this one
    RUNNING = "running"  # on record while its runner works on it
    INCOMPLETE = "incomplete"  # on record as running, but its runner is gone
    AD_HOC = "ad hoc"  # outputs written outside the runner, no run on record

    __str__ = str.__str__
    __format__ = str.__format__


class RunnerError(Exception):
    """A problem found before any notebook runs: the command line, the profile or the selection."""


class ProfileError(RunnerError):
    """A profile that is missing, does not parse, or names parameters or notebooks that do not exist."""


class SelectionError(RunnerError):
    """A selection item that matches no notebook."""


class NotebookError(RunnerError):
    """A notebook file that is not a valid notebook; that notebook fails, the others run."""


@dataclass
class Task:
    """One notebook to run with its parameters, published into ``out_root / <notebook>``."""

    notebook: Path
    parameters: dict
    out_root: Path
    source: str = ""  # the notebook's JSON text, read once: what a worker runs and what the cache key hashes
    inputs: dict = field(default_factory=dict)  # what the cache key records of it (vitequiv.run.cache.inputs)
    candidates: frozenset[str] = frozenset()  # the strings of its parameters and defaults: possible model names
    combination: str = ""  # in a sweep: the combination's folder name
    error: str = ""  # not a valid notebook: it fails without running
    position: str = ""  # "[3/8]" in the progress lines

    @property
    def stem(self) -> str:
        return self.notebook.stem


@dataclass
class RunRecord:
    """One notebook's run as the summary shows it."""

    notebook: str
    status: RunStatus
    seconds: float
    figures: int
    error: str = ""
    profile: str = ""
    run_id: str = ""
    started: str = ""
    finished: str = ""
    parameters: dict = field(default_factory=dict)
    combination: str = ""  # in a sweep: the combination's folder name, e.g. "SEED=1,MODEL=embedded"
    note: str = ""  # for "skipped": "unchanged since <when its last run finished>"


@dataclass
class SuiteResult:
    """What a suite or sweep run did: one record per task, and whether the index (and sweep table) was written."""

    profile: str
    out_root: Path
    records: list[RunRecord]
    index_error: str = ""
    report: Path | None = None  # a sweep's table (table.md); None for a plain run or when it could not be written

    def __iter__(self) -> Iterator[RunRecord]:
        return iter(self.records)

    def by_notebook(self) -> dict[str, RunRecord]:
        return {r.notebook: r for r in self.records}

    @property
    def exit_status(self) -> int:
        if any(r.status in (RunStatus.INTERRUPTED, RunStatus.NOT_RUN) for r in self.records):
            return EXIT_INTERRUPTED
        done = (RunStatus.OK, RunStatus.SKIPPED)
        return EXIT_FAILED if self.index_error or any(r.status not in done for r in self.records) else EXIT_OK


def say(task: Task, text: str) -> None:
    """A progress line: ``[3/8] SEED=1 01_embedding_matching<text>``."""
    where = f"{task.combination} " if task.combination else ""
    print(f"{task.position} {where}{task.stem}{text}".strip(), flush=True)


def new_run_id() -> str:
    """``<UTC time>-<random>-<pid>``: unique, sortable, and naming the process that owns the staging folders."""
    return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{secrets.token_hex(2)}-{os.getpid()}"


def plain(text: str) -> str:
    """``text`` without terminal colors (tracebacks from a kernel carry them)."""
    return _ANSI.sub("", text)


def error_text(err: BaseException) -> str:
    """``Type: last line of the message``, without terminal colors: an error as one line of a summary."""
    lines = plain(str(err)).strip().splitlines()
    return f"{type(err).__name__}: {lines[-1].strip() if lines else ''}"


# ---- run records ------------------------------------------------------------------------------------------------

def write_json(path: Path, data: Mapping) -> None:
    """Write ``data`` into ``path`` whole (a temporary file, then a rename)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=str))


def run_record_path(root: Path, notebook: str) -> Path:
    """Where the runner keeps the record of ``notebook``'s last run: ``<root>/.runs/<notebook>.json``."""
    return root / RUNS / f"{notebook}.json"


def run_entry(record: RunRecord) -> dict:
    """A run as the record file and the manifest hold it."""
    entry = {k: v for k, v in asdict(record).items() if k not in ("notebook", "figures", "note")}
    return {"notebook": record.notebook, **entry, "vitequiv_version": __version__,
            "pid": os.getpid(), "host": socket.gethostname()}


def new_record(task: Task, profile_name: str, run_id: str) -> RunRecord:
    """The record of ``task`` starting now (status ``running``)."""
    return RunRecord(task.stem, RunStatus.RUNNING, 0.0, 0, profile=profile_name, run_id=run_id, started=now(),
                     parameters=task.parameters, combination=task.combination)


def write_record(task: Task, record: RunRecord) -> None:
    """Write ``<out_root>/.runs/<notebook>.json`` from ``record``."""
    write_json(run_record_path(task.out_root, task.stem), run_entry(record))


@contextlib.contextmanager
def live_run(run_id: str) -> Iterator[None]:
    """Mark ``run_id`` as running in this process while the block runs, so that its records read ``running``."""
    ACTIVE_RUNS.add(run_id)
    try:
        yield
    finally:
        ACTIVE_RUNS.discard(run_id)


def run_view(record: Mapping) -> dict[str, Any]:
    """A run record's public fields; a ``running`` record whose runner is gone reads ``incomplete``."""
    view = {key: record.get(key) for key in RUN_KEYS}
    pid = record.get("pid")
    if pid == os.getpid():  # this process wrote it: it runs only if one of its runners is still at it
        alive = view["run_id"] in ACTIVE_RUNS
    else:
        alive = isinstance(pid, int) and pid_alive(pid, record.get("host"))
    if view["status"] == RunStatus.RUNNING and not alive:
        view["status"] = RunStatus.INCOMPLETE.value
    view["status"] = view["status"] or RunStatus.INCOMPLETE.value
    return view
