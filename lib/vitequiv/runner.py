"""Run the notebooks headlessly with papermill under a named profile of parameters, and publish what they make.

    python -m vitequiv.runner                        # every notebook, default profile
    python -m vitequiv.runner --profile smoke 00 03  # notebooks whose names start with 00 or 03
    python -m vitequiv.runner --list                 # notebooks and profiles

A profile is ``notebooks/profiles/<name>.yaml``: ``defaults`` (parameters for every notebook that declares them)
and ``notebooks`` (per-notebook overrides). A notebook receives only the parameters its ``parameters`` cell
declares, plus ``PROFILE``.

Checked before anything runs (exit status 2, nothing written): the profile parses (the YAML error's line is
shown) and has only ``defaults`` and ``notebooks``; every ``defaults`` key is declared by some notebook; every
``notebooks`` key names a notebook, and each of its keys is declared by that notebook; every selection item
matches a notebook. A notebook file that is not a valid notebook is reported with its path and the parser's
line, and fails; the others still run.

Publishing: each notebook runs in ``figures/.staging/<notebook>-<run id>/`` (the kernel gets it through
``VITEQUIV_FIGURES``, and ``VITEQUIV_RUN``, ``VITEQUIV_PROFILE``, ``VITEQUIV_NOTEBOOK`` tell it that the runner
runs it). Every save of the executed notebook replaces it whole. When the notebook has finished, ok or failed,
the runner adds the run to its ``manifest.json`` and renames the staging folder to ``figures/<notebook>/``, which
therefore always holds exactly one finished run. An interrupted run publishes nothing. ``figures/.runs/
<notebook>.json`` records each notebook's last run from its start (status ``running``), so that a run whose
runner was killed reads ``incomplete`` in the index. Stale staging folders and ``.part`` files of dead
processes are removed when the runner starts. The index (``figures/README.md`` and ``figures/index.json``, see
:mod:`vitequiv.figures`) shows each notebook's last status: ok, failed, interrupted or incomplete.

Nothing is computed twice (see :mod:`vitequiv.cache`): a notebook whose last run finished ok from the same
code cells and parameters, in an equal environment, is skipped ("skipped: unchanged since <date>") unless
``--force`` is given; one whose last run failed or was interrupted runs again. ``--sweep NAME=v1,v2`` and
``--sweep-file`` run every combination of swept values (see :mod:`vitequiv.sweeps`); ``--workers N`` and
``--scheduler ADDRESS`` run the notebooks as tasks on a Dask cluster (see :mod:`vitequiv.cluster`).

Exit status: 0 all ok (or skipped); 1 a notebook failed or an output could not be written (the summary says
which); 2 the command line, profile or selection is invalid; 130 interrupted (Ctrl-C, SIGTERM, SIGHUP).
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import difflib
import json
import os
import re
import secrets
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import yaml

from . import cache
from .figures import ACTIVE_RUNS, INTERACTIVE, now, run_record_path, write_index
from .paths import STAGING, atomic_path, figures_dir, notebooks_dir, pid_alive, remove_stale_parts, remove_tree

KERNEL = "python3"
# The kernel logs only errors: its start-up warning about unencrypted local TCP would otherwise repeat per notebook.
KERNEL_ARGUMENTS = ["--IPKernelApp.log_level=ERROR"]
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
REPLACED = "replaced"  # in a staging folder: the published folder a finished run is replacing
ATOMIC_SCHEME = "vitequiv-atomic://"  # papermill saves output paths with this prefix whole (temporary file + rename)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class RunnerError(Exception):
    """A problem found before any notebook runs: the command line, the profile or the selection."""


class ProfileError(RunnerError):
    """A profile that is missing, does not parse, or names parameters or notebooks that do not exist."""


class SelectionError(RunnerError):
    """A selection item that matches no notebook."""


class NotebookError(RunnerError):
    """A notebook file that is not a valid notebook; that notebook fails, the others run."""


@dataclass
class RunRecord:
    """One notebook's run as the summary shows it."""

    notebook: str
    status: str  # "ok", "failed", "interrupted", "skipped" (unchanged since its last ok run) or "not run"
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
    """What :func:`run_suite` did: one record per selected notebook, and whether the index was written."""

    profile: str
    out_root: Path
    records: list[RunRecord]
    index_error: str = ""

    def __iter__(self) -> Iterator[RunRecord]:
        return iter(self.records)

    def by_notebook(self) -> dict[str, RunRecord]:
        return {r.notebook: r for r in self.records}

    @property
    def exit_status(self) -> int:
        if any(r.status in ("interrupted", "not run") for r in self.records):
            return EXIT_INTERRUPTED
        done = ("ok", "skipped")
        return EXIT_FAILED if self.index_error or any(r.status not in done for r in self.records) else EXIT_OK


# ---- profiles, notebooks and selections, checked at the door -------------------------------------------------

class UniqueKeyLoader(yaml.SafeLoader):
    """YAML that refuses a key given twice (PyYAML would silently keep the last one), and reads ``1e-3`` as a
    number as YAML 1.2 does (PyYAML's YAML 1.1 wants ``1.0e-3`` and would pass the string ``"1e-3"`` on)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


UniqueKeyLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))


def read_yaml(path: Path, what: str, error: type[RunnerError]) -> Any:
    """The YAML document at ``path`` (unique keys); ``error`` naming ``what`` and ``path`` (and the line) if it
    cannot be read or parsed."""
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=UniqueKeyLoader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise error(f"{what} {path}: {where}{getattr(err, 'problem', None) or err}") from None
    except (OSError, UnicodeError) as err:
        raise error(f"{what} {path} cannot be read: {err}") from None


def profiles_dir() -> Path:
    return notebooks_dir() / "profiles"


def available_profiles() -> list[str]:
    return sorted(p.stem for p in profiles_dir().glob("*.yaml"))


def close_match(word: str, candidates: list[str] | set[str]) -> str:
    """`` (did you mean X?)`` for the candidate closest to a misspelt ``word``, else ``""``."""
    match = difflib.get_close_matches(word, sorted(candidates), n=1)
    return f" (did you mean {match[0]}?)" if match else ""


def load_profile(name: str) -> dict:
    """``{"name", "path", "defaults", "notebooks"}`` of ``notebooks/profiles/<name>.yaml``; ProfileError if bad."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ProfileError(f"--profile {name!r}: expected a profile name such as smoke, default or full")
    if name == INTERACTIVE:
        raise ProfileError(f"--profile {name!r} is reserved for runs outside the runner; "
                           f"available: {', '.join(available_profiles())}")
    path = profiles_dir() / f"{name}.yaml"
    if not path.is_file():
        raise ProfileError(f"no profile {name!r} ({path} does not exist); available: {', '.join(available_profiles())}")
    data = read_yaml(path, "profile", ProfileError)
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ProfileError(f"profile {path}: expected a mapping with 'defaults:' and 'notebooks:', "
                           f"got a {type(data).__name__}")
    problems = [f"unknown top-level key {key!r}{close_match(str(key), ['defaults', 'notebooks'])}; expected "
                "'defaults' and 'notebooks'" for key in data if key not in ("defaults", "notebooks")]
    defaults, sections = data.get("defaults") or {}, data.get("notebooks") or {}
    if not isinstance(defaults, dict):
        problems.append(f"'defaults' must map parameter names to values, got a {type(defaults).__name__}")
        defaults = {}
    if not isinstance(sections, dict):
        problems.append(f"'notebooks' must map notebook names to parameters, got a {type(sections).__name__}")
        sections = {}
    sections = {nb: {} if params is None else params for nb, params in sections.items()}
    for nb, params in sections.items():
        if not isinstance(params, dict):
            problems.append(f"notebooks.{nb} must map parameter names to values, got a {type(params).__name__}")
    for where, params in [("defaults", defaults)] + [(f"notebooks.{nb}", p) for nb, p in sections.items()]:
        if isinstance(params, dict) and "PROFILE" in params:
            problems.append(f"{where}.PROFILE: PROFILE is set by the runner to the profile's name")
    if problems:
        raise ProfileError(f"profile {path}:\n  - " + "\n  - ".join(problems))
    return {"name": name, "path": path, "defaults": defaults, "notebooks": sections}


def all_notebooks() -> list[Path]:
    """The numbered suite notebooks plus the explorer, in order."""
    folder = notebooks_dir()
    return sorted(folder.glob("[0-9][0-9]_*.ipynb")) + sorted(folder.glob("explorer.ipynb"))


def _selection_key(item: str) -> str:
    """A selection item as a name prefix; a notebook path must lie in this checkout's notebooks folder."""
    if item.endswith(".ipynb"):
        path = Path(item).expanduser()
        if (path.parent != Path(".") or path.exists()) and path.resolve().parent != notebooks_dir().resolve():
            raise SelectionError(f"{item!r} is not a notebook of this checkout ({notebooks_dir()}); run the runner "
                                 "from the checkout that holds it")
        return path.stem
    return item


def discover(selection: list[str]) -> list[Path]:
    """The suite notebooks whose names start with any item of ``selection`` (all when empty), in order.

    SelectionError if an item matches no notebook, even beside items that do.
    """
    notebooks = all_notebooks()
    if not notebooks:
        raise SelectionError(f"no notebooks in {notebooks_dir()}")
    if not selection:
        return notebooks
    keys, problems = [], []
    for item in selection:
        key = _selection_key(item)
        if not key.strip():
            problems.append(f"{item!r} is empty")
        elif not any(nb.stem.startswith(key) for nb in notebooks):
            problems.append(f"{item!r} matches no notebook{close_match(key, [nb.stem for nb in notebooks])}")
        keys.append(key)
    if problems:
        raise SelectionError("; ".join(problems) + f". Notebooks: {', '.join(nb.stem for nb in notebooks)}")
    return [nb for nb in notebooks if any(key and nb.stem.startswith(key) for key in keys)]


def _papermill_path(path: Path | str) -> str:
    return str(path).replace("{", "{{").replace("}", "}}")  # papermill formats paths with the parameters


def inspect(notebook: Path) -> dict[str, Any]:
    """The parameters ``notebook`` declares (name -> papermill's description); NotebookError if it is invalid."""
    import nbformat
    import papermill

    try:
        text = notebook.read_text(encoding="utf-8")
    except (OSError, UnicodeError) as err:
        raise NotebookError(f"notebook {notebook} cannot be read: {err}") from None
    try:
        json.loads(text)
    except json.JSONDecodeError as err:
        raise NotebookError(f"notebook {notebook}: line {err.lineno}, column {err.colno}: "
                            f"not valid JSON ({err.msg})") from None
    try:
        nbformat.validate(nbformat.reads(text, as_version=4))
    except Exception as err:  # nbformat raises ValidationError, and others on JSON that is no notebook at all
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in getattr(err, "absolute_path", []))
        message = " ".join(str(getattr(err, "message", err)).split())
        raise NotebookError(f"notebook {notebook}: not a valid notebook{' at ' + where.lstrip('.') if where else ''}: "
                            f"{message[:200]}") from None
    try:
        return papermill.inspect_notebook(_papermill_path(notebook))
    except Exception as err:  # papermill's parameter parsing
        raise NotebookError(f"notebook {notebook}: its parameters cell cannot be read: {err}") from None


def check_profile(profile: Mapping, declared: Mapping[str, Mapping | None]) -> None:
    """ProfileError listing each profile key that no notebook declares, and each section naming no notebook.

    ``declared`` maps every notebook's name to its declared parameters (None: the notebook is unreadable).
    """
    problems = []
    for nb, params in profile["notebooks"].items():
        if nb not in declared:
            problems.append(f"notebooks.{nb} names no notebook{close_match(str(nb), set(declared))}; "
                            f"notebooks: {', '.join(declared)}")
        elif declared[nb] is not None:
            names = declared[nb]
            problems += [f"notebooks.{nb}.{key} is not a parameter of {nb}{close_match(str(key), set(names))}; "
                         f"it declares: {', '.join(names) or 'nothing'}" for key in params if key not in names]
    known = {name for params in declared.values() if params is not None for name in params}
    unreadable = [nb for nb, params in declared.items() if params is None]
    for key in profile["defaults"]:
        if key not in known:
            unchecked = f"; {', '.join(unreadable)} could not be read" if unreadable else ""
            problems.append(f"defaults.{key} is declared by no notebook{close_match(str(key), known)}{unchecked}; "
                            f"notebooks declare: {', '.join(sorted(known))}")
    if problems:
        raise ProfileError(f"profile {profile['path']}:\n  - " + "\n  - ".join(problems))


def parameters_for(notebook: Path, profile: Mapping, profile_name: str, declared: Mapping | None = None) -> dict:
    """The profile's parameters that ``notebook`` declares (``PROFILE`` is the profile's name)."""
    declared = inspect(notebook) if declared is None else declared
    merged = {"PROFILE": profile_name} | profile["defaults"] | profile["notebooks"].get(notebook.stem, {})
    return {k: v for k, v in merged.items() if k in declared}


# ---- running one notebook -------------------------------------------------------------------------------------

@dataclass
class Task:
    """One notebook to run with its parameters, published into ``out_root / <notebook>``."""

    notebook: Path
    parameters: dict
    out_root: Path
    source: str = ""  # the notebook's JSON text, read once: what a worker runs and what the cache key hashes
    candidates: frozenset[str] = frozenset()  # the strings of its parameters and defaults: possible model names
    combination: str = ""  # in a sweep: the combination's folder name
    error: str = ""  # not a valid notebook: it fails without running
    position: str = ""  # "[3/8]" in the progress lines

    @property
    def stem(self) -> str:
        return self.notebook.stem

    @property
    def inputs(self) -> dict:
        return cache.inputs(self.source, self.parameters)


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
    return Task(notebook, parameters, out_root, source, frozenset(candidates), combination)


class Executor(Protocol):
    """Where tasks run: in this process (:class:`InProcess`) or on a Dask cluster (:mod:`vitequiv.cluster`)."""

    description: str

    def environments(self, candidates: set[str]) -> list[dict]:
        """The environments a task would run in now (:func:`vitequiv.cache.environment` of each place)."""

    def run(self, tasks: list[Task], profile_name: str, run_id: str, done: Callable[..., None]) -> None:
        """Run ``tasks``, calling ``done(task, record, environment)`` as each finishes (environment: where it
        ran, None unless ok); on Ctrl-C either call it for every task or let KeyboardInterrupt through."""


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


def _register_atomic_io() -> None:
    from papermill.iorw import papermill_io

    if not any(scheme == ATOMIC_SCHEME for scheme, _ in papermill_io._handlers):
        papermill_io.register(ATOMIC_SCHEME, _AtomicHandler())


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


def error_text(err: BaseException) -> str:
    lines = _ANSI.sub("", str(err)).strip().splitlines()
    return f"{type(err).__name__}: {lines[-1].strip() if lines else ''}"


def _write_json(path: Path, data: Mapping) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=str))


def _run_entry(record: RunRecord) -> dict:
    """A run as the record file and the manifest hold it."""
    from . import __version__

    entry = {k: v for k, v in asdict(record).items() if k not in ("notebook", "figures", "note")}
    return {"notebook": record.notebook, **entry, "vitequiv_version": __version__,
            "pid": os.getpid(), "host": socket.gethostname()}


def kernel_environment(stem: str, run_id: str, profile_name: str, figures_root: Path) -> dict[str, str | None]:
    """What the runner tells a notebook's kernel: where to write, and that the runner runs it."""
    return {"VITEQUIV_FIGURES": str(figures_root), "VITEQUIV_RUN": run_id, "VITEQUIV_PROFILE": profile_name,
            "VITEQUIV_NOTEBOOK": stem, "MPLBACKEND": None}  # with Agg, executed notebooks would hold no images


def execute(notebook: Path, executed: Path, params: dict, env: Mapping[str, str | None], cwd: Path) -> tuple[str, str]:
    """Run ``notebook`` with papermill in ``cwd``, saving into ``executed``; (status, error)."""
    import papermill

    _register_atomic_io()
    try:
        with _environment(env):
            papermill.execute_notebook(
                _papermill_path(notebook), ATOMIC_SCHEME + _papermill_path(executed), parameters=params,
                kernel_name=KERNEL, cwd=str(cwd), progress_bar=sys.stderr.isatty(), log_output=False,
                extra_arguments=KERNEL_ARGUMENTS,
            )
    except KeyboardInterrupt:
        return "interrupted", "interrupted"
    except Exception as err:  # PapermillExecutionError for a failing cell, or kernel and I/O errors: report, go on
        return "failed", error_text(err)
    return "ok", ""


def _finish_manifest(staging: Path, record: RunRecord) -> int:
    """Add the run to the staged ``manifest.json`` (writing one if the notebook made none); its figure count."""
    from . import __version__
    from .environment import library_versions

    path = staging / "manifest.json"
    manifest = json.loads(path.read_text()) if path.exists() else {}  # the kernel wrote it whole (atomically)
    if not isinstance(manifest, dict):
        raise ValueError(f"{path} is not a JSON object")
    base = {"notebook": record.notebook, "profile": record.profile, "run_id": record.run_id,
            "parameters": record.parameters, "vitequiv_version": __version__, "library_versions": library_versions(),
            "created": record.started, "figures": {}, "tables": {}, "claims": {}}
    manifest = base | manifest | {"run": _run_entry(record)}
    _write_json(path, manifest)
    return len(manifest["figures"])


def _publish(staging: Path, target: Path) -> None:
    """Swap the finished ``staging`` folder into ``target`` by renames; the old ``target`` is left in staging.

    Interrupted between the two renames, the old folder goes back; killed there, :func:`clean_stale` puts it back.
    """
    replaced = staging.parent / REPLACED
    if target.exists() or target.is_symlink():
        os.rename(target, replaced)
    try:
        os.rename(staging, target)
    except BaseException:
        if replaced.exists() and not target.exists():
            os.rename(replaced, target)
        raise


def new_record(task: Task, profile_name: str, run_id: str) -> RunRecord:
    """The record of ``task`` starting now (status ``running``)."""
    return RunRecord(task.stem, "running", 0.0, 0, profile=profile_name, run_id=run_id, started=now(),
                     parameters=task.parameters, combination=task.combination)


def write_record(task: Task, record: RunRecord) -> None:
    """Write ``<out_root>/.runs/<notebook>.json`` from ``record``."""
    _write_json(run_record_path(task.out_root, task.stem), _run_entry(record))


def _stage_and_publish(task: Task, record: RunRecord, produce: Callable[[Path], None]) -> RunRecord:
    """Let ``produce`` fill a staging folder, then publish it as ``<out_root>/<notebook>/`` unless interrupted.

    A full or read-only disk (or an unreadable staged manifest) turns the run into ``failed``, saying so.
    """
    stem, root = task.stem, task.out_root
    staging_root = root / STAGING / f"{stem}-{record.run_id}"
    staging = staging_root / stem
    start, recorded = time.perf_counter(), False
    try:
        staging.mkdir(parents=True)
        produce(staging)
        if record.status != "interrupted":
            record.figures = _finish_manifest(staging, record)
            _publish(staging, root / stem)
        write_record(task, record)
        recorded = True
    except (OSError, ValueError) as err:
        problem = f"could not write the outputs: {error_text(err)}"
        record.status, record.error = "failed", f"{record.error}; {problem}" if record.error else problem
        record.seconds, record.finished = record.seconds or time.perf_counter() - start, record.finished or now()
    finally:
        remove_tree(staging_root)
        with contextlib.suppress(OSError):
            staging_root.parent.rmdir()  # .staging/ itself, once no run uses it
    if not recorded:  # removing the staging folder may have freed the space to say that it failed
        with contextlib.suppress(OSError):
            write_record(task, record)
    return record


def run_one(task: Task, profile_name: str, run_id: str) -> RunRecord:
    """Run one notebook in its staging folder and publish it once it has finished (see the module docstring)."""
    record = new_record(task, profile_name, run_id)

    def produce(staging: Path) -> None:
        write_record(task, record)
        start = time.perf_counter()
        source = staging.parent / f".source-{task.notebook.name}"  # runs the text the cache key hashes
        source.write_text(task.source, encoding="utf-8")
        env = kernel_environment(task.stem, run_id, profile_name, staging.parent)
        record.status, record.error = execute(source, staging / task.notebook.name, task.parameters, env,
                                              task.notebook.parent)
        record.seconds, record.finished = time.perf_counter() - start, now()

    return _stage_and_publish(task, record, produce)


def publish_files(task: Task, record: RunRecord, files: Mapping[str, bytes]) -> RunRecord:
    """Publish what a task made elsewhere (a Dask worker): ``files`` maps paths relative to its folder to bytes."""
    def produce(staging: Path) -> None:
        for name, data in files.items():
            path = (staging / name).resolve()
            if Path(name).is_absolute() or staging.resolve() not in path.parents:
                raise ValueError(f"a task returned the file {name!r}, which lies outside its folder")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)  # the staging folder is published whole, by a rename

    return _stage_and_publish(task, record, produce)


class InProcess:
    """Tasks run one after the other in this process, each notebook's kernel a child of it."""

    description = "in-process"

    def environments(self, candidates: set[str]) -> list[dict]:
        return [cache.environment(candidates)]

    def run(self, tasks: list[Task], profile_name: str, run_id: str, done: Callable[..., None]) -> None:
        for task in tasks:
            _say(task, f" ({profile_name}) ...")
            record = run_one(task, profile_name, run_id)
            done(task, record, cache.environment(task.candidates) if record.status == "ok" else None)
            if record.status == "interrupted":
                return


# ---- the suite ------------------------------------------------------------------------------------------------

def new_run_id() -> str:
    """``<UTC time>-<random>-<pid>``: unique, sortable, and naming the process that owns the staging folders."""
    return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{secrets.token_hex(2)}-{os.getpid()}"


def clean_stale(out_root: Path) -> None:
    """Remove staging folders of runners that are gone, and ``.part`` files of writers that are gone.

    A runner killed while swapping a folder into place leaves the old one in its staging folder: it goes back.
    """
    staging = out_root / STAGING
    if staging.is_dir():
        for folder in staging.iterdir():
            pid = folder.name.rsplit("-", 1)[-1]  # <notebook>-<UTC time>-<random>-<pid>
            if pid.isdigit() and pid_alive(int(pid)):
                continue
            target = out_root / folder.name.rsplit("-", 3)[0]
            if (folder / REPLACED).is_dir() and not target.exists():
                os.rename(folder / REPLACED, target)
            remove_tree(folder)
    remove_stale_parts(out_root)


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


def inspect_all() -> tuple[dict[str, dict | None], dict[str, str]]:
    """Every notebook's declared parameters (None where it is invalid), and the invalid ones' errors."""
    declared: dict[str, dict | None] = {}
    invalid: dict[str, str] = {}
    for notebook in all_notebooks():
        try:
            declared[notebook.stem] = inspect(notebook)
        except NotebookError as err:
            declared[notebook.stem], invalid[notebook.stem] = None, str(err)
    return declared, invalid


ExecutorFactory = Callable[[], contextlib.AbstractContextManager[Executor]]


def open_executor(factory: ExecutorFactory | None) -> contextlib.AbstractContextManager[Executor]:
    """The executor ``factory`` opens (a Dask cluster), or this process."""
    return factory() if factory else contextlib.nullcontext(InProcess())


def write_index_or_say(root: Path) -> str:
    """Write the index of ``root``; "" or what went wrong (the summary is printed either way)."""
    try:
        write_index(root)
    except (OSError, ValueError, KeyboardInterrupt) as err:
        return f"could not write {root / 'README.md'} and index.json: {error_text(err)}"
    return ""


def run_suite(selection: list[str], profile_name: str, out_root: Path | None = None, *, force: bool = False,
              executor: ExecutorFactory | None = None) -> SuiteResult:
    """Run the selected notebooks under ``profile_name``, publishing into ``out_root`` (default ``figures/``).

    RunnerError (nothing run or written) for a bad profile or selection; a notebook that fails, or that is not
    a valid notebook, is recorded and the others run; Ctrl-C ends the current notebook as ``interrupted``. A
    notebook unchanged since its last ok run is skipped unless ``force``. ``executor`` opens where the
    notebooks run (:func:`vitequiv.cluster.executor_factory`; default: this process, one after the other).
    """
    profile = load_profile(profile_name)
    selected = discover(selection)
    declared, invalid = inspect_all()
    check_profile(profile, declared)
    for stem, error in invalid.items():
        if stem not in {nb.stem for nb in selected}:
            print(f"warning: {error} (not selected)", file=sys.stderr)
    with open_executor(executor) as runs_on:
        root = output_root(out_root)
        clean_stale(root)
        tasks = [make_task(nb, parameters_for(nb, profile, profile_name, declared[nb.stem])
                           if nb.stem not in invalid else {}, root, declared[nb.stem], error=invalid.get(nb.stem, ""))
                 for nb in selected]
        with signals_interrupt():
            records = run_tasks(tasks, profile_name, runs_on, force)
            index_error = write_index_or_say(root)
    return SuiteResult(profile_name, root, records, index_error)


def _say(task: Task, text: str) -> None:
    """A progress line: ``[3/8] SEED=1 01_embedding_matching<text>``."""
    where = f"{task.combination} " if task.combination else ""
    print(f"{task.position} {where}{task.stem}{text}".strip(), flush=True)


def run_tasks(tasks: list[Task], profile_name: str, executor: Executor, force: bool = False) -> list[RunRecord]:
    """Run ``tasks`` on ``executor``, skipping those unchanged since their last ok run unless ``force``, until
    the end or an interrupt; one record per task, in order. Each ok run's cache key is written beside its run
    record (:mod:`vitequiv.cache`)."""
    run_id = new_run_id()
    ACTIVE_RUNS.add(run_id)
    try:
        return _run_tasks(tasks, profile_name, run_id, executor, force)
    finally:
        ACTIVE_RUNS.discard(run_id)  # before the index: a record this run could not finish reads incomplete


def _run_tasks(tasks: list[Task], profile_name: str, run_id: str, executor: Executor, force: bool) -> list[RunRecord]:
    records: dict[int, RunRecord] = {}
    index = {id(task): i for i, task in enumerate(tasks)}
    for i, task in enumerate(tasks):
        task.position = f"[{i + 1}/{len(tasks)}]"
    valid = [task for task in tasks if not task.error]
    environments = [] if force or not valid else executor.environments(set().union(*(t.candidates for t in valid)))
    todo = []
    for i, task in enumerate(tasks):
        if task.error:
            records[i] = _invalid(task, profile_name, run_id)
            _say(task, f": failed  {task.error}")
            continue
        found = None if force else cache.lookup(task.out_root, task.stem, task.inputs,
                                                [cache.for_task(env, task.candidates) for env in environments])
        if found is not None and found.hit:
            records[i] = RunRecord(task.stem, "skipped", 0.0, found.figures, profile=profile_name, run_id=run_id,
                                   parameters=task.parameters, combination=task.combination,
                                   note=f"unchanged since {found.finished}")
            _say(task, f": skipped: unchanged since {found.finished} (--force runs it again)")
            continue
        if found is not None and cache.key_path(task.out_root, task.stem).exists():
            _say(task, f": runs again, {found.reason}")
        todo.append(i)

    def done(task: Task, record: RunRecord, env: Mapping | None) -> None:
        records[index[id(task)]] = record
        _remember(task, record, env)
        error = f"  {record.error}" if record.error else ""
        _say(task, f": {record.status} in {record.seconds:.1f} s, {record.figures} figures{error}")

    caught = False
    try:
        executor.run([tasks[i] for i in todo], profile_name, run_id, done)
    except KeyboardInterrupt:  # between notebooks, or while one was being published
        caught = True
    missing = [i for i in todo if i not in records]
    for n, i in enumerate(missing):  # the first was running when Ctrl-C came between notebooks
        task, interrupted = tasks[i], caught and n == 0
        records[i] = RunRecord(task.stem, "interrupted" if interrupted else "not run", 0.0, 0,
                               "interrupted" if interrupted else "", profile_name, run_id,
                               parameters=task.parameters, combination=task.combination)
    return [records[i] for i in range(len(tasks))]


def _remember(task: Task, record: RunRecord, env: Mapping | None) -> None:
    """Write the cache key of an ok run (``env``: where it ran); forget the old one after any other outcome."""
    try:
        if record.status == "ok" and env is not None:
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
    record = RunRecord(task.stem, "failed", 0.0, 0, task.error, profile_name, run_id, stamp, stamp,
                       combination=task.combination)
    try:
        write_record(task, record)
    except OSError as err:
        record.error += f"; could not write its run record: {error_text(err)}"
    return record


def summary_table(result: SuiteResult) -> str:
    """The summary printed at the end: each notebook's status, time and figures, and any error."""
    records = result.records
    swept = any(r.combination for r in records)
    width = max([len(r.combination) for r in records] + [len("combination")]) if swept else 0
    first = f"{'combination':{width}s} " if width else ""
    lines = [f"profile: {result.profile}   outputs: {result.out_root}",
             f"{first}{'notebook':36s} {'status':11s} {'time':>9s} {'figures':>7s}"]
    for r in records:
        error = f"  {r.error or r.note}" if r.error or r.note else ""
        combination = f"{r.combination:{width}s} " if width else ""
        lines.append(f"{combination}{r.notebook:36s} {r.status:11s} {r.seconds:8.1f}s {r.figures:7d}{error}")
    lines.append(f"{'':{width + 1 if width else 0}s}{'total':36s} {'':11s} {sum(r.seconds for r in records):8.1f}s "
                 f"{sum(r.figures for r in records):7d}")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m vitequiv.runner", description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", help="name prefixes to select (e.g. 00 03_local); default: all")
    parser.add_argument("--profile", default=None, help="smoke | default | full (notebooks/profiles/*.yaml); "
                        "default: default, or the sweep file's")
    parser.add_argument("--output-dir", type=Path, default=None, help="where outputs are published (default: figures/)")
    parser.add_argument("--force", action="store_true", help="run even what is unchanged since its last ok run")
    parser.add_argument("--list", action="store_true", help="list notebooks, profiles and sweep files, run nothing")
    sweeps = parser.add_argument_group("sweeps (outputs under figures/sweeps/<sweep name>/)")
    sweeps.add_argument("--sweep", action="append", default=[], metavar="NAME=V1,V2,...",
                        help="run every value of a parameter (YAML values, e.g. SEED=0,1,2 or "
                             "'PHOTOS=[cat],[cat,coffee]'); give it again to sweep the product")
    sweeps.add_argument("--sweep-file", metavar="FILE", help="a sweep file (notebooks/sweeps/<name>.yaml, or <name>)")
    sweeps.add_argument("--sweep-name", metavar="NAME", help="the sweep's folder name (default: the file's or names)")
    cluster = parser.add_argument_group("Dask (default: run in this process, one notebook after the other)")
    cluster.add_argument("--workers", type=int, metavar="N", help="start a local Dask cluster of N worker processes")
    cluster.add_argument("--scheduler", metavar="ADDRESS", help="use a running Dask scheduler, e.g. tcp://host:8786")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.list:
        from .sweeps import available_sweeps

        print("notebooks:", ", ".join(nb.stem for nb in all_notebooks()))
        print("profiles:", ", ".join(available_profiles()))
        print("sweep files:", ", ".join(available_sweeps()) or "none")
        return EXIT_OK
    try:
        from .cluster import executor_factory

        executor = executor_factory(args.workers, args.scheduler)
        if args.sweep or args.sweep_file:
            from . import sweeps

            spec = sweeps.from_arguments(args.sweep, args.sweep_file, args.sweep_name, args.profile, args.notebooks)
            result = sweeps.run_sweep(spec, args.output_dir, force=args.force, executor=executor)
        elif args.sweep_name:
            raise RunnerError(f"--sweep-name {args.sweep_name!r}: name a sweep with --sweep or --sweep-file")
        else:
            result = run_suite(args.notebooks, args.profile or "default", args.output_dir, force=args.force,
                               executor=executor)
    except RunnerError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    print("\n" + summary_table(result))
    failed = [r for r in result.records if r.status == "failed"]
    if failed:
        names = ", ".join(f"{r.combination}/{r.notebook}" if r.combination else r.notebook for r in failed)
        print(f"\n{len(failed)} notebook(s) failed: {names}. Where a failed run was published, its executed copy "
              f"<outputs>/<notebook>/<notebook>.ipynb shows the failing cell.")
    skipped = sum(r.status == "skipped" for r in result.records)
    if skipped:
        print(f"\n{skipped} skipped: unchanged since their last ok run (--force runs them again).")
    if result.exit_status == EXIT_INTERRUPTED:
        print("\nInterrupted: what was running published nothing; the index says so. Run the same command to go on.")
    if getattr(result, "report", None):
        print(f"\nsweep table: {result.report}")
    if result.index_error:
        print(f"\nerror: {result.index_error}", file=sys.stderr)
    return result.exit_status


if __name__ == "__main__":
    from vitequiv import runner  # the package's module, not this __main__ copy: its errors are those raised

    sys.exit(runner.main())
