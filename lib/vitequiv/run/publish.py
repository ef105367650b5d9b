"""Staging and publishing: a notebook's outputs appear in ``<outputs>/<notebook>/`` whole, or not at all.

Each notebook runs in ``<outputs>/.staging/<notebook>-<run id>/`` (the kernel gets it through
``VITEQUIV_FIGURES``). When it has finished, ok or failed, its run is added to the staged ``manifest.json`` and the
staging folder is renamed to ``<outputs>/<notebook>/``, which therefore always holds exactly one finished run; an
interrupted run publishes nothing. Stale staging folders and ``.part`` files of dead processes are removed when
a runner starts (:func:`clean_stale`).
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path

from ..environment import library_versions, now
from ..paths import STAGING, pid_alive, remove_stale_parts, remove_tree
from ..version import __version__
from .execute import Job, Outcome
from .records import RunRecord, RunStatus, error_text, run_entry, write_json, write_record
from .schemas import STAGED_MANIFEST, read_json

REPLACED = "replaced"  # in a staging folder: the published folder a finished run is replacing
UNPUBLISHED = (RunStatus.INTERRUPTED, RunStatus.START_FAILED)  # runs that never ran the whole notebook


def staging_folder(out_root: Path, stem: str, run_id: str) -> Path:
    """``<out_root>/.staging/<notebook>-<run id>``: where a run of ``stem`` writes until it is published."""
    return out_root / STAGING / f"{stem}-{run_id}"


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


def finish_manifest(staging: Path, record: RunRecord) -> int:
    """Add the run to the staged ``manifest.json`` (writing one if the notebook made none); its figure count."""
    path = staging / "manifest.json"
    manifest, problem = read_json(path, STAGED_MANIFEST) if path.exists() else ({}, "")  # Output writes it whole
    if manifest is None:
        raise ValueError(problem)
    base = {"notebook": record.notebook, "profile": record.profile, "run_id": record.run_id,
            "parameters": record.parameters, "vitequiv_version": __version__, "library_versions": library_versions(),
            "created": record.started, "figures": {}, "tables": {}, "claims": {}}
    manifest = base | {k: v for k, v in manifest.items() if v is not None} | {"run": run_entry(record)}
    write_json(path, manifest)
    return len(manifest["figures"])


def swap(staging: Path, target: Path) -> None:
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


def _unpack(staging: Path, files: Mapping[str, bytes]) -> None:
    """Write what a job made elsewhere into ``staging``; ValueError for a path outside it."""
    staging.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        path = (staging / name).resolve()
        if Path(name).is_absolute() or staging.resolve() not in path.parents:
            raise ValueError(f"a task returned the file {name!r}, which lies outside its folder")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)  # the staging folder is published whole, by a rename


def publish(job: Job, record: RunRecord, outcome: Outcome) -> RunRecord:
    """Record ``outcome`` in ``record`` and publish the job's folder as ``<out_root>/<notebook>/`` unless the run
    was interrupted, its kernel did not start, or it made nothing; write the run record. A full or read-only disk
    (or a staged manifest that cannot be read or has the wrong shape) turns the run into ``failed``, saying so."""
    task = job.task
    record.status, record.error, record.seconds = outcome.status, outcome.error, outcome.seconds
    record.started, record.finished = outcome.started or record.started, outcome.finished or now()
    staging = job.folder / task.stem
    recorded = False
    try:
        if outcome.files is not None:
            _unpack(staging, outcome.files)
        if record.status not in UNPUBLISHED and staging.is_dir():
            record.figures = finish_manifest(staging, record)
            swap(staging, task.out_root / task.stem)
        write_record(task, record)
        recorded = True
    except (OSError, ValueError) as err:
        problem = f"could not write the outputs: {error_text(err)}"
        record.status, record.error = RunStatus.FAILED, f"{record.error}; {problem}" if record.error else problem
    finally:
        remove_tree(job.folder)
        with contextlib.suppress(OSError):
            job.folder.parent.rmdir()  # .staging/ itself, once no run uses it
    if not recorded:  # removing the staging folder may have freed the space to say that it failed
        with contextlib.suppress(OSError):
            write_record(task, record)
    return record
