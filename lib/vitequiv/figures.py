"""One look for every figure, one way to save figures, tables and claims, and the index of what was made.

A notebook opens ``out = vq.Output("01_embedding_matching", globals())``, then calls ``out.figure(fig, name,
caption)``, ``out.table(frame, name, caption)`` and ``out.claim(claim, paper, ours, verdict)``: PNG (for reading)
and PDF (for papers), CSV and Markdown, each written atomically, and a ``manifest.json`` that records every call
beside the profile, the parameters (the notebook's UPPER_CASE names with JSON values) and the library versions
that made them.

Where the files go: a run by the runner (``python -m vitequiv.runner``, which sets ``VITEQUIV_RUN``) writes into
its staging folder, which the runner publishes as ``figures/<notebook>/`` once the notebook has finished. Any
other run (JupyterLab, a bare papermill call, ``PROFILE == "interactive"``) writes to
``figures/_scratch/<notebook>/`` of the notebook's own checkout and says so, unless ``VITEQUIV_FIGURES`` or
``Output(..., root=...)`` names another folder. Published results thus come only from the runner.

:func:`write_index` turns the published folders and the runner's run records into ``figures/README.md`` (for
reading) and ``figures/index.json`` (for tools such as the HTML book), schema 1::

    {"schema": 1, "generated": "<ISO time>", "notebooks": [{
      "notebook": "01_embedding_matching",
      # the last run: status ok | failed | interrupted | incomplete (its runner was killed) | running
      #   | ad hoc (the folder was written outside the runner and no run is on record)
      "status", "run_id", "profile", "started", "finished",   # ISO times, UTC
      "seconds", "error", "vitequiv_version",
      "parameters": {...},    # every UPPER_CASE value of the notebook when the outputs come from the last run,
                              # else the values its profile passed
      # what figures/<notebook>/ holds now; file names are relative to that folder
      "folder": "01_embedding_matching", "published": true,
      "outputs_from_last_run": true,   # false: the last run published nothing (interrupted, killed, invalid)
      "outputs_run": {...} | null,     # the run that made them (keys as above); null: written outside the runner
      "outputs_profile", "outputs_created", "outputs_parameters": {...},
      "library_versions": {...},       # python, torch, timm, ..., device
      "notebook_file": "01_embedding_matching.ipynb" | null, "manifest_file": "manifest.json" | null,
      "figures": [{"name", "caption", "files": ["<name>.png", "<name>.pdf"]}],
      "tables": [{"name", "caption", "files": ["<name>.csv", "<name>.md"]}],
      "claims": [{"claim", "paper", "ours", "verdict"}],
      "problems": []}],               # unreadable manifests or run records, in words
     "sweeps": [{                     # figures/sweeps/<name>/, from its sweep.json (see vitequiv.sweep_report)
      "name", "folder": "sweeps/<name>", "profile", "swept": {"SEED": [0, 1]}, "notebooks": [...],
      "generated", "executor", "counts": {"ok": 3, "failed": 1, "cached": 2},
      "files": {"markdown": "sweeps/<name>/table.md", "csv", "spread", "png", "pdf", "json"},  # from figures/
      "problems": []}]}

Folders whose names start with ``.`` or ``_`` (staging, run records, scratch) and ``sweeps/`` are not notebooks;
``.runs/<notebook>.key.json`` files are cache keys (:mod:`vitequiv.cache`), not run records.
"""
from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from .paths import (
    KEY_SUFFIX,
    RUNS,
    SWEEPS,
    atomic_path,
    figures_dir,
    is_notebook_folder,
    pid_alive,
    remove_stale_parts,
    remove_tree,
    scratch_dir,
)

STYLE = {
    "figure.dpi": 110,
    "savefig.dpi": 150,
    "savefig.bbox": "tight",
    "font.size": 11,
    "axes.titlesize": 12,
    "axes.labelsize": 11,
    "legend.fontsize": 10,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
    "figure.constrained_layout.use": True,
}
VERDICTS = ("holds", "partly", "not")


def use_style() -> None:
    """Seaborn's white grid with readable font sizes; called once by every notebook."""
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook", palette="colorblind", rc=STYLE)


def to_numpy_image(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) or (1, 3, H, W) tensor in [0, 1] -> (H, W, 3) array for ``imshow``."""
    return image.detach().reshape(-1, *image.shape[-2:]).permute(1, 2, 0).clamp(0, 1).cpu().numpy()


def amplify(
    delta: torch.Tensor, gain: float | None = None, *, quantile: float = 1.0, fill: float = 0.5,
) -> tuple[torch.Tensor, float]:
    """A perturbation (..., 3, H, W) made visible: 0.5 + gain * delta, clamped to [0, 1], and the gain used.

    ``gain`` None picks it so that the ``quantile`` of |delta| lands ``fill`` away from mid-grey, rounded to two
    significant digits so that a figure title can quote it.
    """
    if gain is None:
        size = torch.quantile(delta.detach().abs().flatten().float().cpu(), quantile).item()
        gain = float(f"{fill / max(size, 1 / 255 / 8):.2g}")  # the floor keeps an all-zero delta finite
    return (0.5 + gain * delta).clamp(0, 1), gain


def image_grid(
    images: torch.Tensor | Sequence[torch.Tensor],
    titles: Sequence[str] | None = None,
    ncols: int | None = None,
    size: float = 2.2,
    suptitle: str | None = None,
) -> plt.Figure:
    """Images (N, 3, H, W) in [0, 1] on a grid without axes, each with an optional title."""
    images = [im for im in images]
    ncols = ncols or len(images)
    nrows = -(-len(images) // ncols)
    title_height = 0.45 if titles is not None else 0.0  # room for two-line titles between the rows
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, (size + title_height) * nrows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, (ax, image) in enumerate(zip(axes.flat, images)):
        ax.imshow(to_numpy_image(image))
        if titles is not None:
            ax.set_title(titles[i], fontsize=10)
    if suptitle:
        fig.suptitle(suptitle)
    return fig


INTERACTIVE = "interactive"  # the profile of a run that no profile parameterized (JupyterLab, plain Python)
PARAMETER_NAME = re.compile(r"[A-Z][A-Z0-9_]*")
_NOTEBOOK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
ACTIVE_RUNS: set[str] = set()  # run ids that a runner in this process is running now
RUN_KEYS = ("run_id", "status", "profile", "parameters", "started", "finished", "seconds", "error", "vitequiv_version")


def now() -> str:
    """The time in ISO 8601, UTC, to the second: the stamp of manifests and run records."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def verdict(holds: bool, partly: bool) -> str:
    """A claim's verdict: ``"holds"`` if ``holds``, else ``"partly"`` if ``partly``, else ``"not"``."""
    for name, value in (("holds", holds), ("partly", partly)):
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"verdict({name}=...) must be a bool, got {type(value).__name__} {value!r}")
    return "holds" if holds else "partly" if partly else "not"


def notebook_parameters(namespace: Mapping[str, Any]) -> dict[str, Any]:
    """The UPPER_CASE names of a notebook's namespace whose values JSON can hold, as JSON would hold them."""
    parameters = {}
    for name, value in namespace.items():
        if not PARAMETER_NAME.fullmatch(name):
            continue
        try:
            parameters[name] = json.loads(json.dumps(value, allow_nan=False))  # a copy: later edits do not leak in
        except (TypeError, ValueError, OverflowError, RecursionError):
            continue  # tensors, models, NaN: not parameters
    return parameters


class Output:
    """Where one notebook's figures, tables and claims go, and the ``manifest.json`` that records them.

    ``namespace`` is the notebook's ``globals()``: ``PROFILE`` (default ``"interactive"``, or the runner's
    profile) and the UPPER_CASE parameters are read from it. ``root`` is the folder to write into, instead of
    the runner's staging folder or ``figures/_scratch/<notebook>/`` (see the module docstring).
    """

    def __init__(
        self, notebook: str, namespace: Mapping[str, Any] | None = None, root: str | Path | None = None,
    ) -> None:
        if not isinstance(notebook, str) or not _NOTEBOOK_NAME.fullmatch(notebook):
            raise ValueError(f"Output(notebook={notebook!r}): expected the notebook's file name without .ipynb, "
                             "e.g. '01_embedding_matching'")
        if namespace is not None and not isinstance(namespace, Mapping):
            raise TypeError(f"Output({notebook!r}, namespace): expected the notebook's globals(), "
                            f"got {type(namespace).__name__}")
        namespace = namespace or {}
        self.notebook = notebook
        self.profile = str(namespace.get("PROFILE", os.environ.get("VITEQUIV_PROFILE", INTERACTIVE)))
        runner_run = bool(os.environ.get("VITEQUIV_RUN")) and "VITEQUIV_FIGURES" in os.environ  # it sets both
        self.run_id = os.environ["VITEQUIV_RUN"] if runner_run else None
        self.dir = self._folder(root)
        self.manifest_path = self.dir / "manifest.json"
        from . import __version__  # here, not at import: the package imports this module while it initializes
        from .environment import library_versions

        self.manifest: dict = {
            "notebook": notebook, "profile": self.profile, "run_id": self.run_id,
            "parameters": notebook_parameters(namespace), "vitequiv_version": __version__,
            "library_versions": library_versions(), "created": now(), "figures": {}, "tables": {}, "claims": {},
        }
        self._write_manifest()

    def _folder(self, root: str | Path | None) -> Path:
        """The folder to write into (created, stale ``.part`` files removed); says where unless the runner runs."""
        if root is not None:
            folder, why = Path(root).expanduser(), "root= was given"
        elif self.run_id:
            expected = os.environ.get("VITEQUIV_NOTEBOOK")
            if expected and expected != self.notebook:
                raise ValueError(f"Output({self.notebook!r}) in notebook {expected!r}: the runner publishes a "
                                 f"notebook's outputs under its own name; use Output({expected!r}, globals())")
            folder, why = figures_dir() / self.notebook, ""  # the runner's staging folder, published at the end
        elif "VITEQUIV_FIGURES" in os.environ:
            folder, why = figures_dir() / self.notebook, "VITEQUIV_FIGURES is set"
        else:
            folder, why = scratch_dir() / self.notebook, "not a runner run: figures/ holds only published results"
            remove_tree(folder)  # one interactive session's outputs at a time, never mixed with an older one's
        folder.mkdir(parents=True, exist_ok=True)
        remove_stale_parts(folder)
        if why:
            print(f"vitequiv: {self.notebook} ({self.profile} profile) writes to {folder} ({why})")
        return folder

    @property
    def science_checks(self) -> bool:
        """Whether the notebook should assert its scientific checks: every profile but ``smoke`` (too short)."""
        return self.profile != "smoke"

    def _write_manifest(self) -> None:
        with atomic_path(self.manifest_path) as tmp:
            tmp.write_text(json.dumps(self.manifest, indent=2))

    def _record(self, kind: str, name: str, entry: dict) -> None:
        self.manifest[kind][name] = entry
        self._write_manifest()

    def figure(self, fig: plt.Figure, name: str, caption: str) -> Path:
        """Save ``fig`` as ``<name>.png`` and ``<name>.pdf``; return the PNG path."""
        paths = {}
        for ext in ("png", "pdf"):
            with atomic_path(self.dir / f"{name}.{ext}") as tmp:
                fig.savefig(tmp, format=ext)
            paths[ext] = self.dir / f"{name}.{ext}"
        self._record("figures", name, {"files": [p.name for p in paths.values()], "caption": caption})
        return paths["png"]

    def table(self, frame: pd.DataFrame, name: str, caption: str, floatfmt: str = ".4g") -> Path:
        """Save ``frame`` as ``<name>.csv`` and ``<name>.md``; return the Markdown path."""
        with atomic_path(self.dir / f"{name}.csv") as tmp:
            frame.to_csv(tmp, index=False)
        with atomic_path(self.dir / f"{name}.md") as tmp:
            tmp.write_text(f"{caption}\n\n{frame.to_markdown(index=False, floatfmt=floatfmt)}\n")
        self._record("tables", name, {"files": [f"{name}.csv", f"{name}.md"], "caption": caption})
        return self.dir / f"{name}.md"

    def claim(self, claim: str, paper: str, ours: str, verdict: str) -> None:
        """One row of the reproduction summary: the paper's claim and evidence, our measurement, a verdict."""
        if verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {verdict!r}")
        self._record("claims", claim, {"paper": paper, "ours": ours, "verdict": verdict})

    def claims_table(self) -> pd.DataFrame:
        """The claims recorded so far, in order: columns claim, paper, ours, verdict."""
        rows = [{"claim": claim, **entry} for claim, entry in self.manifest["claims"].items()]
        return pd.DataFrame(rows, columns=["claim", "paper", "ours", "verdict"])


# ---- the index: figures/README.md and figures/index.json ------------------------------------------------------

def run_record_path(root: Path, notebook: str) -> Path:
    """Where the runner keeps the record of ``notebook``'s last run: ``<root>/.runs/<notebook>.json``."""
    return root / RUNS / f"{notebook}.json"


def run_view(record: Mapping) -> dict:
    """A run record's public fields; a ``running`` record whose runner is gone reads ``incomplete``."""
    view = {key: record.get(key) for key in RUN_KEYS}
    pid = record.get("pid")
    if pid == os.getpid():  # this process wrote it: it runs only if one of its runners is still at it
        alive = view["run_id"] in ACTIVE_RUNS
    else:
        alive = isinstance(pid, int) and pid_alive(pid, record.get("host"))
    if view["status"] == "running" and not alive:
        view["status"] = "incomplete"
    view["status"] = view["status"] or "incomplete"
    return view


def _read_json(path: Path) -> tuple[Any, str]:
    """(the parsed file, "") or (None, what is wrong with it)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeError, ValueError) as err:
        return None, f"{path.name} cannot be read ({type(err).__name__}: {err})"
    return (data, "") if isinstance(data, dict) else (None, f"{path.name} is not a JSON object")


def _published(folder: Path, manifest: Mapping) -> dict:
    """The index fields that describe a published folder, from its manifest (files relative to the folder)."""
    def entries(kind: str) -> list[dict]:
        return [{"name": key, "caption": entry.get("caption", ""), "files": list(entry.get("files", []))}
                for key, entry in (manifest.get(kind) or {}).items()]

    run = manifest.get("run")
    return {
        "outputs_run": run_view(run) if isinstance(run, Mapping) else None,
        "outputs_profile": manifest.get("profile"),
        "outputs_parameters": manifest.get("parameters") or {},
        "outputs_created": manifest.get("created"),
        "vitequiv_version": manifest.get("vitequiv_version"),
        "library_versions": manifest.get("library_versions") or {},
        "notebook_file": f"{folder.name}.ipynb" if (folder / f"{folder.name}.ipynb").is_file() else None,
        "manifest_file": "manifest.json" if (folder / "manifest.json").is_file() else None,
        "figures": entries("figures"),
        "tables": entries("tables"),
        "claims": [{"claim": claim, **{k: entry.get(k, "") for k in ("paper", "ours", "verdict")}}
                   for claim, entry in (manifest.get("claims") or {}).items()],
    }


def _entry(root: Path, name: str) -> dict:
    """One notebook's index entry: its last run, and what its folder holds now."""
    problems, record = [], None
    if run_record_path(root, name).exists():
        record, problem = _read_json(run_record_path(root, name))
        if problem:
            problems.append(f"run record {problem}")
    folder = root / name
    published = folder.is_dir()
    manifest = {}
    if published:
        manifest, problem = _read_json(folder / "manifest.json")
        if problem:
            problems.append(problem)
    try:
        outputs = _published(folder, manifest or {})
    except (AttributeError, TypeError) as err:  # a manifest of the wrong shape
        problems.append(f"manifest.json is malformed ({err})")
        outputs = _published(folder, {})
    last = run_view(record) if record else outputs["outputs_run"]
    made = outputs["outputs_run"]
    from_last = bool(published and made and last and made["run_id"] == last["run_id"])
    if last is None:  # a folder written outside the runner, with no run on record
        last = {key: None for key in RUN_KEYS} | {"status": "ad hoc", "profile": outputs["outputs_profile"]}
    parameters = outputs["outputs_parameters"] if from_last or not record else last["parameters"] or {}
    return {"notebook": name, **last, "parameters": parameters, "folder": name, "published": published,
            "outputs_from_last_run": from_last, **outputs, "problems": problems}


def collect_index(root: str | Path | None = None) -> dict:
    """The index of ``root`` (default ``figures/``) as written to ``index.json`` (see the module docstring)."""
    root = Path(root or figures_dir())
    names = {p.name for p in root.iterdir() if is_notebook_folder(p)} if root.is_dir() else set()
    names |= {p.stem for p in (root / RUNS).glob("*.json") if not p.name.endswith(KEY_SUFFIX)}
    return {"schema": 1, "generated": now(), "notebooks": [_entry(root, name) for name in sorted(names)],
            "sweeps": collect_sweeps(root)}


def collect_sweeps(root: Path) -> list[dict]:
    """The index entries of the sweeps under ``root/sweeps/`` (one per folder holding a ``sweep.json``)."""
    entries = []
    for path in sorted((root / SWEEPS).glob("*/sweep.json")):
        folder = f"{SWEEPS}/{path.parent.name}"
        data, problem = _read_json(path)
        data = data or {}
        files = data.get("files") if isinstance(data.get("files"), Mapping) else {}
        entries.append({"name": path.parent.name, "folder": folder,
                        **{k: data.get(k) for k in ("profile", "swept", "notebooks", "generated", "executor")},
                        "counts": data.get("counts") or {}, "files": {k: f"{folder}/{v}" for k, v in files.items()},
                        "problems": [f"sweep {problem}"] if problem else []})
    return entries


def _describe_sweep(entry: Mapping) -> str:
    swept = "; ".join(f"{name} = {', '.join(v if isinstance(v, str) else json.dumps(v) for v in values)}"
                      for name, values in (entry["swept"] or {}).items())
    counts = entry["counts"]
    done = ", ".join(f"{n} {status}" for status, n in counts.items() if status != "cached")
    cached = f" ({counts['cached']} reused)" if counts.get("cached") else ""
    files = entry["files"]
    grid = f"; [verdict grid]({files['png']})" if "png" in files else ""
    name = f"[{entry['name']}]({files['markdown']})" if "markdown" in files else entry["name"]
    problems = f"; problems: {'; '.join(entry['problems'])}" if entry["problems"] else ""
    return (f"- {name}: profile `{entry['profile']}`, {', '.join(entry['notebooks'] or [])}; swept {swept}; "
            f"{done}{cached}; {entry['generated']}{grid}{problems}")


def markdown_cell(text: Any) -> str:
    """Text that stays inside one Markdown table cell."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _made_by(entry: Mapping) -> str:
    run = entry["outputs_run"]
    return f"{run['status']}, profile {run['profile']}" if run else f"ad hoc, profile {entry['outputs_profile']}"


def _when(run: Mapping) -> str:
    if not run.get("finished"):
        return f"started {run.get('started')}, never finished"
    seconds = f"{run['seconds']:.0f} s, " if isinstance(run.get("seconds"), (int, float)) else ""
    return f"{seconds}finished {run['finished']}"


def _describe(entry: Mapping) -> list[str]:
    """The Markdown lines of one notebook's section."""
    name, made = entry["notebook"], entry["outputs_run"]
    lines = []
    if entry["status"] != "ad hoc":
        error = f" ({markdown_cell(entry['error'])})" if entry.get("error") else ""
        lines += [f"Last run: **{entry['status']}**, profile `{entry['profile']}`, {_when(entry)}{error}.", ""]
    if not entry["published"]:
        lines.append("No outputs published.")
    else:
        if made is None:
            lines.append(f"The outputs below were written outside the runner (ad hoc, profile "
                         f"`{entry['outputs_profile']}`, {entry['outputs_created']}).")
        elif not entry["outputs_from_last_run"]:
            lines.append(f"That run published nothing; the outputs below are from an earlier run: "
                         f"{made['status']}, profile `{made['profile']}`, {_when(made)}.")
        versions = entry["library_versions"]
        libraries = ", ".join(f"{k} {versions[k]}" for k in ("torch", "timm", "device") if k in versions)
        parameters = ", ".join(f"`{k}={json.dumps(v)}`" for k, v in entry["outputs_parameters"].items())
        parameters = parameters or "none recorded"
        lines += [f"Made by vitequiv {entry['vitequiv_version']} ({libraries}); parameters: {parameters}.", ""]
        if entry["notebook_file"]:
            lines += [f"Executed notebook: [{name}.ipynb]({name}/{entry['notebook_file']})", ""]
        for kind, main_suffix in (("figure", ".png"), ("table", ".md")):
            for item in entry[f"{kind}s"]:
                files = item["files"] or [""]
                first = next((f for f in files if f.endswith(main_suffix)), files[0])
                others = "".join(f" ([{Path(f).suffix[1:]}]({name}/{f}))" for f in files if f != first)
                lines.append(f"- {kind} [{item['name']}]({name}/{first}){others}: {item['caption']}")
    if entry["problems"]:
        lines += ["", f"Problems: {'; '.join(entry['problems'])}"]
    return lines + [""]


def render_readme(index: Mapping) -> str:
    """``figures/README.md`` from :func:`collect_index`'s result."""
    lines = ["# Figures and tables", "",
             "Generated by the runner (`make figures`, `python -m vitequiv.runner`); do not edit by hand. "
             "`index.json` holds the same in machine-readable form.", ""]
    claims = [(e, c) for e in index["notebooks"] for c in e["claims"]]
    if claims:
        header = "| claim | paper's evidence | our measurement | verdict | notebook | run |"
        lines += ["## Reproduction summary", "", header, "|---|---|---|---|---|---|"]
        lines += [f"| {markdown_cell(c['claim'])} | {markdown_cell(c['paper'])} | {markdown_cell(c['ours'])} | "
                  f"**{c['verdict']}** | {e['notebook']} | {_made_by(e)} |" for e, c in claims]
        lines.append("")
    if index.get("sweeps"):
        lines += ["## Sweeps", "", "Every combination of swept parameters, one folder each under `sweeps/`; the "
                  "sweep table sets their verdicts and numbers side by side.", ""]
        lines += [_describe_sweep(entry) for entry in index["sweeps"]] + [""]
    for entry in index["notebooks"]:
        lines += [f"## {entry['notebook']} ({entry['status']})", "", *_describe(entry)]
    return "\n".join(lines)


def write_index(root: str | Path | None = None) -> Path:
    """Write ``figures/README.md`` and ``figures/index.json`` (both or neither); return the README's path."""
    root = Path(root or figures_dir())
    index = collect_index(root)
    with atomic_path(root / "README.md") as readme, atomic_path(root / "index.json") as machine:
        machine.write_text(json.dumps(index, indent=2))
        readme.write_text(render_readme(index))
    return root / "README.md"
