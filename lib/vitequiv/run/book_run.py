"""What the last run recorded for the book: one :class:`NotebookRun` per notebook of the suite.

It comes from ``figures/index.json`` where the runner wrote one, else from each notebook's ``manifest.json`` and
the papermill record inside its executed copy.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import pandas as pd

from .index import claim_cells, claim_view
from .profiles import discover
from .records import RunStatus
from .schemas import INDEX, MANIFEST, read_json

# How a notebook's last run ended, as the runner's index records it ("running": its runner is still at work;
# "ad hoc": its folder was written outside the runner); "not run": no record of it at all.
INDEX_STATUSES = tuple(RunStatus(s) for s in ("ok", "failed", "start failed", "interrupted", "incomplete", "running",
                                                "ad hoc"))
STATUSES = (*INDEX_STATUSES, RunStatus.NOT_RUN)


class BookError(ValueError):
    """A bad argument, input folder or environment: the message names it and says what is expected."""


@dataclass
class Recorded:
    """One figure or table a notebook recorded: its name, caption and files (relative to the notebook's folder)."""

    name: str
    caption: str
    files: list[str]


@dataclass
class Claim:
    """One row of the reproduction summary; the evidence fields are None for a claim recorded before claims carried
    evidence (issue 29), which the summary shows with n "-"."""

    claim: str
    paper: str
    ours: str
    verdict: str
    n: int | None = None
    statistic: str | None = None
    value: float | None = None
    low: float | None = None
    high: float | None = None
    method: str | None = None
    threshold: float | None = None
    direction: str | None = None
    parts: list[dict] = field(default_factory=list)

    def cells(self) -> tuple[str, str, str]:
        """n, "estimate [95 % interval]" and threshold as the tables show them ("-" where not recorded)."""
        return claim_cells(vars(self))


@dataclass
class NotebookRun:
    """What the last run recorded for one notebook of the suite; ``status`` is one of :data:`STATUSES`."""

    name: str
    status: RunStatus = RunStatus.NOT_RUN
    executed: Path | None = None  # the executed copy, when this run made one
    profile: str = ""
    parameters: dict = field(default_factory=dict)
    seconds: float | None = None
    started: str = ""
    finished: str = ""
    error: str = ""
    note: str = ""  # why a run with a record has no page of output
    versions: dict[str, str] = field(default_factory=dict)
    figures: list[Recorded] = field(default_factory=list)
    tables: list[Recorded] = field(default_factory=list)
    claims: list[Claim] = field(default_factory=list)


def _named(items: dict | list | None, key: str) -> list[tuple[str, dict]]:
    """(name, entry) pairs from a manifest-style mapping {name: entry} or a list of entries holding ``key``."""
    if not items:
        return []
    if isinstance(items, dict):
        return [(name, entry) for name, entry in items.items()]
    return [(entry[key], entry) for entry in items]


def _outputs(items: dict | list | None) -> list[Recorded]:
    return [Recorded(name, e.get("caption", ""), list(e.get("files", []))) for name, e in _named(items, "name")]


def _claims(items: dict | list | None) -> list[Claim]:
    return [Claim(**claim_view(name, e)) for name, e in _named(items, "claim")]


def utc(stamp: str) -> dt.datetime | None:
    """An ISO time stamp as an aware UTC datetime (papermill writes naive UTC), None when absent or unreadable."""
    try:
        when = dt.datetime.fromisoformat(stamp)
    except (TypeError, ValueError):
        return None
    return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)


def from_executed(name: str, folder: Path) -> NotebookRun:
    """A notebook's run from its executed copy (papermill's record) and its manifest.

    The manifest counts only when it was written during this execution: one left from an earlier run (this
    run failed before recording anything) would show stale figures and claims.
    """
    executed = folder / f"{name}.ipynb"
    if not executed.exists():
        return NotebookRun(name)
    nb = nbformat.read(executed, as_version=4)
    record = nb.metadata.get("papermill")
    if not record:
        return NotebookRun(name, note=f"{executed.name} holds no papermill record: it was not run headlessly")
    cells = [c for c in nb.cells if c.cell_type == "code"]
    errors = [o for c in cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    if record.get("exception"):
        status = RunStatus.FAILED
    elif all(c.metadata.get("papermill", {}).get("status") == "completed" for c in cells):
        status = RunStatus.OK
    else:
        status = RunStatus.INCOMPLETE
    parameters = dict(record.get("parameters") or {})
    run = NotebookRun(
        name, status, executed, profile=str(parameters.get("PROFILE", "")), parameters=parameters,
        seconds=record.get("duration"), started=record.get("start_time") or "", finished=record.get("end_time") or "",
        error=f"{errors[0]['ename']}: {errors[0]['evalue']}" if errors else "",
    )
    manifest, started = folder / "manifest.json", utc(run.started)
    if manifest.exists():
        written = dt.datetime.fromtimestamp(manifest.stat().st_mtime, dt.timezone.utc)
        if started is None or written >= started - dt.timedelta(seconds=2):
            entry, problem = read_json(manifest, MANIFEST)
            if entry is None:
                raise BookError(f"{manifest}: {problem}; expected what vq.Output writes")
            run.figures, run.tables = _outputs(entry.get("figures")), _outputs(entry.get("tables"))
            run.claims = _claims(entry.get("claims"))
            run.versions = {str(k): str(v) for k, v in (entry.get("library_versions") or {}).items()}
    if not run.versions and any(t.name == "versions" for t in run.tables) and (folder / "versions.csv").exists():
        frame = pd.read_csv(folder / "versions.csv", dtype=str)  # 00_setup's table of the library versions
        run.versions = dict(zip(frame["component"], frame["version"], strict=True))
    return run


def from_index(entry: dict, name: str, folder: Path) -> NotebookRun:
    """A notebook's run as ``figures/index.json`` (schema 1, see :mod:`vitequiv.figures`) records it.

    Outputs count only when they come from the last run: a run that was interrupted or killed publishes nothing,
    and the folder still holds an earlier run's outputs, which the page then leaves out.
    """
    status = entry.get("status") or RunStatus.INCOMPLETE
    if status not in INDEX_STATUSES:
        raise BookError(f"{folder.parent / 'index.json'}: notebook {name!r} has status {status!r}; "
                        f"expected one of {', '.join(INDEX_STATUSES)}")
    versions = {str(k): str(v) for k, v in (entry.get("library_versions") or {}).items()}
    if entry.get("vitequiv_version"):
        versions = {"vitequiv": str(entry["vitequiv_version"])} | versions
    run = NotebookRun(
        name, RunStatus(status), profile=str(entry.get("profile") or ""),
        parameters=dict(entry.get("parameters") or (entry.get("outputs_run") or {}).get("parameters") or {}),
        seconds=entry.get("seconds"), started=str(entry.get("started") or ""),
        finished=str(entry.get("finished") or ""), error=str(entry.get("error") or ""), versions=versions,
    )
    current = status != RunStatus.AD_HOC and entry.get("published", True) and entry.get("outputs_from_last_run", True)
    executed = folder / entry["notebook_file"] if entry.get("notebook_file") else None
    if current and executed is not None and executed.exists():
        run.executed = executed
        run.figures, run.tables = _outputs(entry.get("figures")), _outputs(entry.get("tables"))
        run.claims = _claims(entry.get("claims"))
    elif status == RunStatus.AD_HOC:
        run.note = (f"figures/{name}/ was written outside the runner (profile {entry.get('outputs_profile')}); "
                    "the book shows only what `make figures` ran")
    elif entry.get("published"):
        run.note = f"figures/{name}/ still holds an earlier run's outputs, not shown here"
    return run


def suite_notebooks() -> list[str]:
    """The suite's notebooks in order (those the runner runs); other folders under figures/ are not pages."""
    return [nb.stem for nb in discover([])]


def read_run(figures: Path) -> list[NotebookRun]:
    """Every suite notebook's record of the run in ``figures`` (index.json if present, else the manifests)."""
    if not figures.is_dir():
        raise BookError(f"--figures {figures}: not a folder; expected the output of `make figures` "
                        "(figures/ by default), holding <notebook>/<notebook>.ipynb")
    names, index = suite_notebooks(), figures / "index.json"
    if index.exists():
        data, problem = read_json(index, INDEX)
        if data is None:
            raise BookError(f"{index}: unreadable ({problem}); expected the index the runner writes, whose "
                            "'notebooks' lists each notebook's record; run `make figures` again to rewrite it")
        entries = dict(_named(data["notebooks"], "notebook"))
        return [from_index(entries[n], n, figures / n) if n in entries else NotebookRun(n) for n in names]
    runs = [from_executed(n, figures / n) for n in names]
    if not any(r.executed for r in runs):
        raise BookError(f"--figures {figures}: no executed notebook in it (looked for <notebook>/<notebook>.ipynb "
                        f"for {', '.join(names)}); run `make figures` first")
    return runs


