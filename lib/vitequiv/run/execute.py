"""Executing notebooks: the papermill call, whole-file saves, and the in-process executor.

An executor only executes. It is handed :class:`Job` s, says when each starts and hands back an :class:`Outcome`
(status, error, times, and the files made where they are not in the job's folder already); writing run records
and publishing are the caller's (:mod:`vitequiv.run.suite`, :mod:`vitequiv.run.publish`). Two executors exist:
:class:`InProcess` (one notebook after the other, each kernel a child of this process) and the Dask executor of
:mod:`vitequiv.run.cluster`.
"""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ..environment import now
from ..paths import atomic_path
from . import cache
from .records import RunStatus, Task, error_text, plain, say

KERNEL = "python3"
# The kernel logs only errors: its start-up warning about unencrypted local TCP would otherwise repeat per notebook.
KERNEL_ARGUMENTS = ["--IPKernelApp.log_level=ERROR"]
ATOMIC_SCHEME = "vitequiv-atomic://"  # papermill saves output paths with this prefix whole (temporary file + rename)
# What jupyter_client says when a kernel process never answered: a start failure, retried once.
_START_FAILURES = ("Kernel died before replying to kernel_info", "Kernel didn't respond")
MESSAGE_CHARS = 400  # of a failing cell's error message in the summary


@dataclass(frozen=True)
class Job:
    """One task to execute: the kernel writes into ``folder`` (its ``VITEQUIV_FIGURES``), the notebook's files
    into ``folder / <notebook>``."""

    task: Task
    profile: str
    run_id: str
    folder: Path


@dataclass
class Outcome:
    """What executing a job did."""

    status: RunStatus  # ok, failed, interrupted or start failed
    error: str = ""
    seconds: float = 0.0
    started: str = ""  # "" where it never started (the run record keeps the time it was handed over)
    finished: str = ""
    files: dict[str, bytes] | None = None  # made elsewhere (a Dask worker), relative to the notebook's folder;
    #                                        None: whatever it made is in the job's folder already
    environment: dict | None = None  # where it ran (vitequiv.run.cache.environment), None unless ok


class Executor(Protocol):
    """Where jobs run: in this process (:class:`InProcess`) or on a Dask cluster (:mod:`vitequiv.run.cluster`)."""

    description: str

    def environments(self, candidates: set[str]) -> list[dict]:
        """The environments a job would run in now (:func:`vitequiv.run.cache.environment` of each place)."""

    def run(self, jobs: list[Job], started: Callable[[Job], None], done: Callable[[Job, Outcome], None]) -> None:
        """Run ``jobs``, calling ``started(job)`` as each is handed over and ``done(job, outcome)`` as each ends;
        on Ctrl-C either call ``done`` for every job or let KeyboardInterrupt through."""


ExecutorFactory = Callable[[], contextlib.AbstractContextManager[Executor]]  # opens an executor, closes it after


class _AtomicHandler:
    """papermill I/O for ``vitequiv-atomic://<path>``: every save replaces the file whole, never half of it."""

    @staticmethod
    def _path(path: str) -> Path:
        return Path(path[len(ATOMIC_SCHEME):])

    def read(self, path: str) -> str:
        return self._path(path).read_text(encoding="utf-8")

    def listdir(self, path: str) -> list[str]:
        return [str(p) for p in self._path(path).iterdir()]

    def write(self, buf: str, path: str) -> None:
        with atomic_path(self._path(path)) as tmp:
            tmp.write_text(buf, encoding="utf-8")

    def pretty_path(self, path: str) -> str:
        return str(self._path(path))


def register_atomic_io() -> None:
    """Teach papermill the ``vitequiv-atomic://`` scheme (once per process)."""
    from papermill.iorw import papermill_io

    if not any(scheme == ATOMIC_SCHEME for scheme, _ in papermill_io._handlers):
        papermill_io.register(ATOMIC_SCHEME, _AtomicHandler())


def papermill_path(path: Path | str) -> str:
    """A path as papermill takes it: it formats paths with the parameters, so braces are doubled."""
    return str(path).replace("{", "{{").replace("}", "}}")


@contextlib.contextmanager
def _environment(values: Mapping[str, str | None]) -> Iterator[None]:
    """Set (or, for None, unset) environment variables for the kernels started inside; restore them after."""
    def apply(settings: Mapping[str, str | None]) -> None:
        for key, value in settings.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    old = {key: os.environ.get(key) for key in values}
    try:
        apply(values)
        yield
    finally:
        apply(old)


# glibc's malloc for the kernels: keep freed blocks up to 32 MB in the heap and the heap's top up to 1 GB, instead
# of handing every step's activations back to the OS and faulting them in again. Measured on the embedded model
# (2-core CPU): a bfloat16 matching step of 6 pairs 0.282 -> 0.261 s, page faults 180k -> 8k per 10 steps; a
# 224 px Jacobian 3 % faster; peak memory unchanged. A value the user has set wins; other allocators ignore them.
KERNEL_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(32 * 2**20), "MALLOC_TRIM_THRESHOLD_": str(2**30)}


def kernel_environment(stem: str, run_id: str, profile_name: str, figures_root: Path) -> dict[str, str | None]:
    """What the runner tells a notebook's kernel: where to write, that the runner runs it, and how to allocate."""
    return {"VITEQUIV_FIGURES": str(figures_root), "VITEQUIV_RUN": run_id, "VITEQUIV_PROFILE": profile_name,
            "VITEQUIV_NOTEBOOK": stem, "MPLBACKEND": None,  # with Agg, executed notebooks would hold no images
            **{key: os.environ.get(key, value) for key, value in KERNEL_MALLOC.items()}}


def execute(notebook: Path, executed: Path, params: dict, env: Mapping[str, str | None],
            cwd: Path) -> tuple[RunStatus, str]:
    """Run ``notebook`` with papermill in ``cwd``, saving into ``executed``; (status, error).

    A kernel that fails to start is started once more; failing again, the run ends as ``start failed``.
    """
    register_atomic_io()
    problem = ""
    for _ in range(2):
        try:
            with _environment(env), _kernel_sockets() as config:
                _papermill(notebook, executed, params, cwd, config)
        except KeyboardInterrupt:
            return RunStatus.INTERRUPTED, "interrupted"
        except Exception as err:  # a failing cell, or kernel and I/O errors: report, go on
            if not _start_failure(err):
                return RunStatus.FAILED, _failure_text(err)
            problem = error_text(err)
        else:
            return RunStatus.OK, ""
    return RunStatus.START_FAILED, f"its kernel did not start, twice: {problem}"


def _papermill(notebook: Path, executed: Path, params: dict, cwd: Path, config: object) -> None:
    import papermill

    papermill.execute_notebook(
        papermill_path(notebook), ATOMIC_SCHEME + papermill_path(executed), parameters=params,
        kernel_name=KERNEL, cwd=str(cwd), progress_bar=sys.stderr.isatty(), log_output=False,
        extra_arguments=KERNEL_ARGUMENTS, **({"config": config} if config is not None else {}),
    )


@contextlib.contextmanager
def _kernel_sockets() -> Iterator[object]:
    """A kernel configuration with IPC sockets in a private folder (POSIX): kernels started side by side never
    race for a TCP port (jupyter_client picks free ports, releases them, and the kernel binds them later). None
    elsewhere (TCP)."""
    if os.name != "posix":
        yield None
        return
    from traitlets.config import Config

    base = tempfile.gettempdir()
    base = "/tmp" if len(base) > 60 and os.path.isdir("/tmp") else base  # socket paths hold about 100 characters
    with tempfile.TemporaryDirectory(prefix="vq-kernel-", dir=base) as folder:
        yield Config({"KernelManager": {"transport": "ipc", "ip": os.path.join(folder, "kernel")}})


def _start_failure(err: BaseException) -> bool:
    """Whether ``err`` says the kernel never came up (as opposed to a cell failing or the kernel dying later)."""
    import zmq

    return isinstance(err, zmq.ZMQError) or any(text in str(err) for text in _START_FAILURES)


def _failure_text(err: BaseException) -> str:
    """A failure as one summary line; for a failing cell its error's type and whole message, and which cell."""
    from papermill.exceptions import PapermillExecutionError

    if not isinstance(err, PapermillExecutionError):
        return error_text(err)
    message = " ".join(plain(str(err.evalue)).split())
    source = next((line.strip() for line in (err.source or "").splitlines() if line.strip()), "")
    where = f"cell [{err.exec_count}]" if err.exec_count else f"cell {err.cell_index}"
    return f"{err.ename}: {message[:MESSAGE_CHARS]} (in {where}: {source[:80]})"


def execute_here(job: Job) -> Outcome:
    """Execute ``job`` in this process, its files made in ``job.folder / <notebook>``; the notebook runs the text
    the cache key hashes, from its own folder (relative paths resolve as in JupyterLab)."""
    task = job.task
    try:
        (job.folder / task.stem).mkdir(parents=True)
        source = job.folder / f".source-{task.notebook.name}"
        source.write_text(task.source, encoding="utf-8")
    except OSError as err:
        return Outcome(RunStatus.FAILED, f"could not write the outputs: {error_text(err)}", finished=now())
    env = kernel_environment(task.stem, job.run_id, job.profile, job.folder)
    started, start = now(), time.perf_counter()
    status, error = execute(source, job.folder / task.stem / task.notebook.name, task.parameters, env,
                            task.notebook.parent)
    seconds, finished = time.perf_counter() - start, now()
    environment = cache.environment(task.candidates) if status == RunStatus.OK else None
    return Outcome(status, error, seconds, started, finished, None, environment)


class InProcess:
    """Jobs run one after the other in this process, each notebook's kernel a child of it."""

    description = "in-process"

    def environments(self, candidates: set[str]) -> list[dict]:
        return [cache.environment(candidates)]

    def run(self, jobs: list[Job], started: Callable[[Job], None], done: Callable[[Job, Outcome], None]) -> None:
        for job in jobs:
            say(job.task, f" ({job.profile}) ...")
            started(job)
            outcome = execute_here(job)
            done(job, outcome)
            if outcome.status == RunStatus.INTERRUPTED:
                return
