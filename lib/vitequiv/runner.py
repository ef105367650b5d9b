"""Run the notebooks headlessly with papermill under a named profile of parameters, and publish what they make.

This module is the command line only: it reads the arguments, calls the :mod:`vitequiv.run` package and prints
the summary.

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
:mod:`vitequiv.run.index`) shows each notebook's last status: ok, failed, interrupted or incomplete.

Nothing is computed twice (see :mod:`vitequiv.run.cache`): a notebook whose last run finished ok from the same
code cells and parameters, in an equal environment, is skipped ("skipped: unchanged since <date>") unless
``--force`` is given; one whose last run failed or was interrupted runs again. ``--sweep NAME=v1,v2`` and
``--sweep-file`` run every combination of swept values (see :mod:`vitequiv.run.sweeps`); ``--workers N`` and
``--scheduler ADDRESS`` run the notebooks as tasks on a Dask cluster (see :mod:`vitequiv.run.cluster`).

Exit status: 0 all ok (or skipped); 1 a notebook failed, its kernel did not start, or an output could not be
written (the summary says which); 2 the command line, profile or selection is invalid, or ``VITEQUIV_ROOT``,
``VITEQUIV_DATA`` or ``VITEQUIV_FIGURES`` names no folder (``--list`` too); 130 interrupted (Ctrl-C, SIGTERM,
SIGHUP).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .environment import lock_digest, lock_mismatches
from .paths import LocationError
from .run.cluster import executor_factory
from .run.profiles import all_notebooks, available_profiles
from .run.records import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, RunnerError, RunStatus, SuiteResult
from .run.suite import run_suite, run_sweep
from .run.sweeps import available_sweeps, from_arguments


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


def lock_note() -> str:
    """One line for the summary when the installed versions of locked packages differ from uv.lock's; else ""."""
    differ = lock_mismatches()
    if not differ:
        return ""
    shown = ", ".join(differ[:6]) + (f" and {len(differ) - 6} more" if len(differ) > 6 else "")
    return (f"note: this environment does not match the lock (uv.lock {lock_digest()}): {shown}. The run went ahead; "
            f"its manifests record the installed versions. `make setup` installs the locked ones.")


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
    try:
        if args.list:
            print("notebooks:", ", ".join(nb.stem for nb in all_notebooks()))
            print("profiles:", ", ".join(available_profiles()))
            print("sweep files:", ", ".join(available_sweeps()) or "none")
            return EXIT_OK
        executor = executor_factory(args.workers, args.scheduler)
        if args.sweep or args.sweep_file:
            spec = from_arguments(args.sweep, args.sweep_file, args.sweep_name, args.profile, args.notebooks)
            result: SuiteResult = run_sweep(spec, args.output_dir, force=args.force, executor=executor)
        elif args.sweep_name:
            raise RunnerError(f"--sweep-name {args.sweep_name!r}: name a sweep with --sweep or --sweep-file")
        else:
            result = run_suite(args.notebooks, args.profile or "default", args.output_dir, force=args.force,
                               executor=executor)
    except (RunnerError, LocationError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    print("\n" + summary_table(result))
    if note := lock_note():
        print("\n" + note)
    failed = [r for r in result.records if r.status == RunStatus.FAILED]
    if failed:
        names = ", ".join(f"{r.combination}/{r.notebook}" if r.combination else r.notebook for r in failed)
        print(f"\n{len(failed)} notebook(s) failed: {names}. Where a failed run was published, its executed copy "
              f"<outputs>/<notebook>/<notebook>.ipynb shows the failing cell.")
    skipped = sum(r.status == RunStatus.SKIPPED for r in result.records)
    if skipped:
        print(f"\n{skipped} skipped: unchanged since their last ok run (--force runs them again).")
    if result.exit_status == EXIT_INTERRUPTED:
        print("\nInterrupted: what was running published nothing; the index says so. Run the same command to go on.")
    if result.report:
        print(f"\nsweep table: {result.report}")
    if result.index_error:
        print(f"\nerror: {result.index_error}", file=sys.stderr)
    return result.exit_status


if __name__ == "__main__":
    sys.exit(main())
