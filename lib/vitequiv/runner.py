"""Run the notebooks headlessly with papermill under a named profile of parameters.

    python -m vitequiv.runner                        # every notebook, default profile
    python -m vitequiv.runner --profile smoke 00 03  # notebooks whose names start with 00 or 03
    python -m vitequiv.runner --list                 # notebooks and profiles

A profile is ``notebooks/profiles/<name>.yaml``: ``defaults`` (parameters for every notebook) and ``notebooks``
(per-notebook overrides). A notebook receives only the parameters its ``parameters`` cell declares. Executed
copies land next to the figures (``figures/<notebook>/<notebook>.ipynb``); a failing notebook does not stop the
others; the summary lists each notebook's status, time and figures, and the exit status is 1 if any failed.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from .figures import write_index
from .paths import figures_dir, notebooks_dir

KERNEL = "python3"
# The kernel logs only errors: its start-up warning about unencrypted local TCP would otherwise repeat per notebook.
KERNEL_ARGUMENTS = ["--IPKernelApp.log_level=ERROR"]


@dataclass
class RunRecord:
    notebook: str
    status: str  # "ok" or "failed"
    seconds: float
    figures: int
    error: str = ""


def profiles_dir() -> Path:
    return notebooks_dir() / "profiles"


def available_profiles() -> list[str]:
    return sorted(p.stem for p in profiles_dir().glob("*.yaml"))


def load_profile(name: str) -> dict:
    path = profiles_dir() / f"{name}.yaml"
    if not path.exists():
        raise SystemExit(f"error: no profile {name!r}; available: {', '.join(available_profiles())}")
    profile = yaml.safe_load(path.read_text()) or {}
    return {"defaults": profile.get("defaults") or {}, "notebooks": profile.get("notebooks") or {}}


def discover(selection: list[str]) -> list[Path]:
    """The numbered suite notebooks plus the explorer, in order; ``selection`` keeps names starting with any item."""
    notebooks = sorted(notebooks_dir().glob("[0-9][0-9]_*.ipynb")) + sorted(notebooks_dir().glob("explorer.ipynb"))
    if selection:
        notebooks = [nb for nb in notebooks if any(nb.stem.startswith(s) for s in selection)]
        if not notebooks:
            raise SystemExit(f"error: no notebook matches {selection}; see --list")
    return notebooks


def parameters_for(notebook: Path, profile: dict, profile_name: str) -> dict:
    """The profile's parameters that ``notebook`` declares (``PROFILE`` is the profile's name)."""
    import papermill

    declared = papermill.inspect_notebook(str(notebook))
    merged = {"PROFILE": profile_name} | profile["defaults"] | profile["notebooks"].get(notebook.stem, {})
    return {k: v for k, v in merged.items() if k in declared}


def run_one(notebook: Path, profile: dict, profile_name: str, out_root: Path) -> RunRecord:
    import papermill

    out_dir = out_root / notebook.stem
    out_dir.mkdir(parents=True, exist_ok=True)
    params = parameters_for(notebook, profile, profile_name)
    start = time.perf_counter()
    status, error = "ok", ""
    try:
        papermill.execute_notebook(
            str(notebook), str(out_dir / notebook.name), parameters=params, kernel_name=KERNEL,
            cwd=str(notebook.parent), progress_bar=sys.stderr.isatty(), log_output=False,
            extra_arguments=KERNEL_ARGUMENTS,
        )
    except Exception as err:  # papermill raises PapermillExecutionError, or kernel/IO errors: report, go on
        status, error = "failed", f"{type(err).__name__}: {str(err).strip().splitlines()[-1] if str(err).strip() else ''}"
    seconds = time.perf_counter() - start
    manifest = out_dir / "manifest.json"
    figures = len(json.loads(manifest.read_text())["figures"]) if manifest.exists() else 0
    return RunRecord(notebook.stem, status, seconds, figures, error)


def summary_table(records: list[RunRecord], profile_name: str) -> str:
    lines = [f"profile: {profile_name}", f"{'notebook':36s} {'status':7s} {'time':>9s} {'figures':>7s}"]
    for r in records:
        lines.append(f"{r.notebook:36s} {r.status:7s} {r.seconds:8.1f}s {r.figures:7d}" + (f"  {r.error}" if r.error else ""))
    lines.append(f"{'total':36s} {'':7s} {sum(r.seconds for r in records):8.1f}s {sum(r.figures for r in records):7d}")
    return "\n".join(lines)


def run_suite(selection: list[str], profile_name: str, out_root: Path | None = None) -> list[RunRecord]:
    """Run the selected notebooks under ``profile_name``, writing into ``out_root`` (default ``figures/``)."""
    profile = load_profile(profile_name)
    out_root = (out_root or figures_dir()).resolve()
    os.environ["VITEQUIV_FIGURES"] = str(out_root)  # the kernels inherit it: figures land in out_root
    os.environ.pop("MPLBACKEND", None)  # with Agg inherited, executed notebooks would hold no images
    notebooks = discover(selection)
    records = []
    for i, notebook in enumerate(notebooks, 1):
        print(f"[{i}/{len(notebooks)}] {notebook.stem} ({profile_name}) ...", flush=True)
        record = run_one(notebook, profile, profile_name, out_root)
        print(f"[{i}/{len(notebooks)}] {notebook.stem}: {record.status} in {record.seconds:.1f} s, "
              f"{record.figures} figures{'  ' + record.error if record.error else ''}", flush=True)
        records.append(record)
    write_index(out_root, {r.notebook: f"{r.status}, {r.seconds:.0f} s, profile {profile_name}" for r in records})
    return records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vitequiv.runner", description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", help="name prefixes to select (e.g. 00 03_local); default: all")
    parser.add_argument("--profile", default="default", help="smoke | default | full (notebooks/profiles/*.yaml)")
    parser.add_argument("--output-dir", type=Path, default=None, help="where figures go (default: figures/)")
    parser.add_argument("--list", action="store_true", help="list notebooks and profiles, run nothing")
    args = parser.parse_args(argv)
    if args.list:
        print("notebooks:", ", ".join(nb.stem for nb in discover([])))
        print("profiles:", ", ".join(available_profiles()))
        return 0
    records = run_suite(args.notebooks, args.profile, args.output_dir)
    print("\n" + summary_table(records, args.profile))
    failed = [r.notebook for r in records if r.status != "ok"]
    if failed:
        print(f"\n{len(failed)} notebook(s) failed: {', '.join(failed)}. Open the executed copies under "
              f"{(args.output_dir or figures_dir())}/<notebook>/ to see the failing cell.")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
