"""Running the suite, or a sweep of it: the checks at the door, the cache skip, executing and publishing each task,
and the index at the end.

:func:`run_suite` and :func:`run_sweep` share every step but the planning: the profile, selection and notebooks
are checked before anything runs (RunnerError, nothing written); the executor opens (this process, or a Dask
cluster); stale staging folders go; each task unchanged since its last ok run, in an equal environment, is skipped
unless ``force`` (:mod:`vitequiv.run.cache`); the others are executed and published one by one as they finish
(:mod:`vitequiv.run.publish`); a sweep's table is written (:mod:`vitequiv.run.sweep_report`); the index is
always written (:mod:`vitequiv.run.index`). SIGTERM and SIGHUP interrupt like Ctrl-C: what was running ends as
``interrupted`` and publishes nothing, what had not started is ``not run``.
"""
from __future__ import annotations

import ast
import contextlib
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..environment import now
from ..paths import SWEEPS, figures_dir
from . import cache, index
from .execute import Executor, ExecutorFactory, InProcess, Job, Outcome
from .profiles import Profile, check_profile, discover, inspect_all, load_profile, parameters_for
from .publish import clean_stale, publish, staging_folder
from .records import (
    RunnerError,
    RunRecord,
    RunStatus,
    SuiteResult,
    Task,
    error_text,
    live_run,
    new_record,
    new_run_id,
    say,
    write_record,
)
from .sweep_report import write_report
from .sweeps import Planned, Sweep, plan


@dataclass
class SweepResult(SuiteResult):
    """What :func:`run_sweep` did: the records (one per combination and notebook) and where the table went."""

    sweep: Sweep | None = None
    planned: list[Planned] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def run_suite(selection: list[str], profile_name: str, out_root: Path | None = None, *, force: bool = False,
              executor: ExecutorFactory | None = None) -> SuiteResult:
    """Run the selected notebooks under ``profile_name``, publishing into ``out_root`` (default ``figures/``).

    RunnerError (nothing run or written) for a bad profile or selection; a notebook that fails, or that is not
    a valid notebook, is recorded and the others run; Ctrl-C ends the current notebook as ``interrupted``. A
    notebook unchanged since its last ok run is skipped unless ``force``. ``executor`` opens where the
    notebooks run (:func:`vitequiv.run.cluster.executor_factory`; default: this process, one after the other).
    """
    profile, selected, declared, invalid = _checked(profile_name, selection)
    for stem, error in invalid.items():
        if stem not in {nb.stem for nb in selected}:
            print(f"warning: {error} (not selected)", file=sys.stderr)
    with open_executor(executor) as runs_on:
        root = output_root(out_root)
        clean_stale(root)
        tasks = [make_task(nb, parameters_for(nb, profile, profile_name, declared[nb.stem])
                           if nb.stem not in invalid else {}, root, declared[nb.stem], error=invalid.get(nb.stem, ""))
                 for nb in selected]
        records, _, error = _run_and_index(tasks, profile_name, runs_on, force, root)
    return SuiteResult(profile_name, root, records, error)


def run_sweep(sweep: Sweep, out_root: Path | None = None, *, force: bool = False,
              executor: ExecutorFactory | None = None) -> SweepResult:
    """Run every combination of ``sweep`` (see :mod:`vitequiv.run.sweeps`), then write its table and the index.

    Everything is checked before anything runs (RunnerError); combinations that finished ok before, in an
    equal environment, are not run again unless ``force``.
    """
    profile, selected, declared, _ = _checked(sweep.profile, sweep.selection)
    planned, notes = plan(sweep, profile, selected, declared)
    for note in notes:
        print(f"note: {note}", flush=True)
    with open_executor(executor) as runs_on:
        root = output_root(out_root)
        sweep_root = root / SWEEPS / sweep.name
        tasks = [make_task(p.notebook, p.parameters, sweep_root / p.folder, declared[p.notebook.stem],
                           combination=p.folder) for p in planned]
        for folder in {task.out_root for task in tasks if task.out_root.is_dir()}:
            clean_stale(folder)
        print(f"sweep {sweep.name}: {len(tasks)} run(s) of {len({p.notebook for p in planned})} notebook(s), "
              f"{runs_on.description}, outputs in {sweep_root}", flush=True)

        def report(records: list[RunRecord]) -> Path:
            return write_report(sweep_root, sweep, planned, tasks, records, runs_on.description, notes)

        records, table, error = _run_and_index(tasks, sweep.profile, runs_on, force, root, (sweep_root, report))
    return SweepResult(sweep.profile, sweep_root, records, error, table, sweep, planned, notes)


def _checked(profile_name: str, selection: list[str]) -> tuple[Profile, list[Path], dict, dict]:
    """The profile, the selected notebooks, every notebook's declared parameters and the invalid ones' errors,
    checked against each other (RunnerError)."""
    profile = load_profile(profile_name)
    selected = discover(selection)
    declared, invalid = inspect_all()
    check_profile(profile, declared)
    return profile, selected, declared, invalid


def _run_and_index(tasks: list[Task], profile_name: str, executor: Executor, force: bool, root: Path,
                   report: tuple[Path, Callable[[list[RunRecord]], Path]] | None = None,
                   ) -> tuple[list[RunRecord], Path | None, str]:
    """Run ``tasks``, then write the sweep table (``report``: its folder and writer) and the index, even after
    an interrupt; the records, the table's path and what could not be written."""
    table, problems = None, []
    with signals_interrupt():
        records = run_tasks(tasks, profile_name, executor, force)
        if report is not None:
            try:
                table = report[1](records)
            except (OSError, ValueError, KeyboardInterrupt) as err:
                problems.append(f"could not write the sweep table in {report[0]}: {error_text(err)}")
        problems.append(write_index_or_say(root))
    return records, table, "; ".join(p for p in problems if p)


def _literal_defaults(declared: Mapping[str, Mapping]) -> list:
    """The values of a notebook's parameters cell that are Python literals (papermill gives their source)."""
    values = []
    for spec in declared.values():
        with contextlib.suppress(ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            values.append(ast.literal_eval(str(spec.get("default", ""))))
    return values


def make_task(notebook: Path, parameters: dict, out_root: Path, declared: Mapping | None, *, combination: str = "",
              error: str = "") -> Task:
    """A :class:`Task`, reading the notebook's text once; ``declared`` None or ``error``: an invalid notebook."""
    if declared is None or error:
        return Task(notebook, parameters, out_root, combination=combination, error=error or "not a valid notebook")
    try:
        source = notebook.read_text(encoding="utf-8")
    except (OSError, UnicodeError) as err:
        return Task(notebook, parameters, out_root, combination=combination,
                    error=f"notebook {notebook} cannot be read: {err}")
    candidates = cache.strings_in([parameters, _literal_defaults(declared)])
    return Task(notebook, parameters, out_root, source, cache.inputs(source, parameters), frozenset(candidates),
                combination)


@contextlib.contextmanager
def signals_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP interrupt the run like Ctrl-C, so that it ends as ``interrupted``, not half-done."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signals = [getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)]
    old = {sig: signal.signal(sig, interrupt) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def output_root(out_root: Path | None) -> Path:
    """The folder outputs are published into (created; default ``figures/``); RunnerError if it cannot be."""
    root = Path(out_root or figures_dir()).expanduser()
    if root.exists() and not root.is_dir():
        raise RunnerError(f"--output-dir {root}: exists and is not a folder")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RunnerError(f"--output-dir {root}: cannot be created ({err.strerror or err})") from None
    return root.resolve()


def open_executor(factory: ExecutorFactory | None) -> contextlib.AbstractContextManager[Executor]:
    """The executor ``factory`` opens (a Dask cluster), or this process."""
    return factory() if factory else contextlib.nullcontext(InProcess())


def write_index_or_say(root: Path) -> str:
    """Write the index of ``root``; "" or what went wrong (the summary is printed either way)."""
    try:
        index.write_index(root)
    except (OSError, ValueError, KeyboardInterrupt) as err:
        return f"could not write {root / 'README.md'} and index.json: {error_text(err)}"
    return ""


def run_tasks(tasks: list[Task], profile_name: str, executor: Executor, force: bool = False) -> list[RunRecord]:
    """Run ``tasks`` on ``executor``, skipping those unchanged since their last ok run unless ``force``, until
    the end or an interrupt; one record per task, in order. Each ok run's cache key is written beside its run
    record (:mod:`vitequiv.run.cache`)."""
    run_id = new_run_id()
    with live_run(run_id):  # ends before the index: a record this run could not finish reads incomplete
        return _run_tasks(tasks, profile_name, run_id, executor, force)


def _run_tasks(tasks: list[Task], profile_name: str, run_id: str, executor: Executor, force: bool) -> list[RunRecord]:
    records: dict[int, RunRecord] = {}
    for i, task in enumerate(tasks):
        task.position = f"[{i + 1}/{len(tasks)}]"
    valid = [task for task in tasks if not task.error]
    environments = [] if force or not valid else executor.environments(set().union(*(t.candidates for t in valid)))
    jobs, slot = [], {}
    for i, task in enumerate(tasks):
        if task.error:
            records[i] = _invalid(task, profile_name, run_id)
            say(task, f": failed  {task.error}")
            continue
        found = None if force else cache.lookup(task.out_root, task.stem, task.inputs,
                                                [cache.for_task(env, task.candidates) for env in environments])
        if found is not None and found.hit:
            records[i] = RunRecord(task.stem, RunStatus.SKIPPED, 0.0, found.figures, profile=profile_name,
                                   run_id=run_id, parameters=task.parameters, combination=task.combination,
                                   note=f"unchanged since {found.finished}")
            say(task, f": skipped: unchanged since {found.finished} (--force runs it again)")
            continue
        if found is not None and cache.key_path(task.out_root, task.stem).exists():
            say(task, f": runs again, {found.reason}")
        jobs.append(Job(task, profile_name, run_id, staging_folder(task.out_root, task.stem, run_id)))
        slot[id(jobs[-1])] = i
    running: dict[int, RunRecord] = {}

    def started(job: Job) -> None:
        running[id(job)] = record = new_record(job.task, profile_name, run_id)
        with contextlib.suppress(OSError):  # a disk that cannot take it fails the publication later, saying so
            write_record(job.task, record)

    def done(job: Job, outcome: Outcome) -> None:
        record = publish(job, running.get(id(job)) or new_record(job.task, profile_name, run_id), outcome)
        records[slot[id(job)]] = record
        _remember(job.task, record, outcome.environment)
        error = f"  {record.error}" if record.error else ""
        say(job.task, f": {record.status} in {record.seconds:.1f} s, {record.figures} figures{error}")

    caught = False
    try:
        executor.run(jobs, started, done)
    except KeyboardInterrupt:  # between notebooks, or while one was being published
        caught = True
    missing = [slot[id(job)] for job in jobs if slot[id(job)] not in records]
    for n, i in enumerate(missing):  # the first was running when Ctrl-C came between notebooks
        task, interrupted = tasks[i], caught and n == 0
        records[i] = RunRecord(task.stem, RunStatus.INTERRUPTED if interrupted else RunStatus.NOT_RUN, 0.0, 0,
                               "interrupted" if interrupted else "", profile_name, run_id,
                               parameters=task.parameters, combination=task.combination)
    return [records[i] for i in range(len(tasks))]


def _remember(task: Task, record: RunRecord, env: Mapping | None) -> None:
    """Write the cache key of an ok run (``env``: where it ran); forget the old one after any other outcome."""
    try:
        if record.status == RunStatus.OK and env is not None:
            cache.write_key(task.out_root, task.stem, record.run_id, record.finished, task.inputs,
                            cache.for_task(env, task.candidates))
        else:
            cache.remove_key(task.out_root, task.stem)
    except OSError as err:
        print(f"warning: could not write the cache record of {task.stem}: {error_text(err)}; it will run again",
              file=sys.stderr)


def _invalid(task: Task, profile_name: str, run_id: str) -> RunRecord:
    """The record of a notebook that is not a valid notebook: failed, its published folder left alone."""
    stamp = now()
    record = RunRecord(task.stem, RunStatus.FAILED, 0.0, 0, task.error, profile_name, run_id, stamp, stamp,
                       combination=task.combination)
    try:
        write_record(task, record)
    except OSError as err:
        record.error += f"; could not write its run record: {error_text(err)}"
    return record
