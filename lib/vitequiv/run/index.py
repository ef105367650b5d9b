"""The index of what the runner published: :func:`write_index` turns the published folders and the runner's run
records into ``figures/README.md`` (for reading) and ``figures/index.json`` (for tools such as the HTML book),
schema 1::

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
      "claims": [{"claim", "paper", "ours", "verdict",  # vq.Claim.to_record; None below in older manifests
                  "statistic", "value", "n", "low", "high", "method", "threshold", "direction", "parts": [...]}],
      "problems": []}],               # unreadable manifests or run records, in words
     "sweeps": [{                     # figures/sweeps/<name>/, from its sweep.json (see vitequiv.run.sweep_report)
      "name", "folder": "sweeps/<name>", "profile", "swept": {"SEED": [0, 1]}, "notebooks": [...],
      "generated", "executor", "counts": {"ok": 3, "failed": 1, "cached": 2},
      "files": {"markdown": "sweeps/<name>/table.md", "csv", "spread", "png", "pdf", "json",  # from figures/
                "stability_csv", "stability_markdown"},  # the verdict stability table, for a sweep over SEED
      "problems": []}]}

Folders whose names start with ``.`` or ``_`` (staging, run records, scratch) and ``sweeps/`` are not notebooks;
``.runs/<notebook>.key.json`` files are cache keys (:mod:`vitequiv.run.cache`), not run records.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..claims import estimate_text
from ..environment import now
from ..paths import KEY_SUFFIX, RUNS, SWEEPS, atomic_path, figures_dir, is_notebook_folder
from .records import RUN_KEYS, RunStatus, run_record_path, run_view
from .schemas import MANIFEST, RUN_RECORD, SWEEP, read_json


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
        "claims": [claim_view(claim, entry) for claim, entry in (manifest.get("claims") or {}).items()],
    }


CLAIM_TEXT = ("paper", "ours", "verdict")
CLAIM_EVIDENCE = ("statistic", "value", "n", "low", "high", "method", "threshold", "direction")


def claim_view(claim: str, entry: Mapping) -> dict:
    """A manifest's claim (``vq.Claim.to_record``) as the index holds it: claim, paper, ours, verdict, and the
    evidence (statistic, value, n, low, high, method, threshold, direction, parts); an older manifest's claim,
    from before claims carried evidence, has None there."""
    return {"claim": claim, **{k: entry.get(k) or "" for k in CLAIM_TEXT},
            **{k: entry.get(k) for k in CLAIM_EVIDENCE},
            "parts": [claim_view(part.get("statement") or "", part) for part in entry.get("parts") or []
                      if isinstance(part, Mapping)]}


def _number(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"


def claim_cells(claim: Mapping) -> tuple[str, str, str]:
    """A claim's n, "estimate [95 % interval]" and threshold cells ("-" where the record has none, as in manifests
    from before claims carried evidence); an exact quantity reads "0.5 (exact)"."""
    n = claim.get("n")
    estimate = estimate_text(claim.get("value"), claim.get("low"), claim.get("high"), claim.get("statistic"))
    threshold = claim.get("threshold")
    threshold = "-" if threshold is None else f"{claim.get('direction') or '>='} {_number(threshold)}"
    return (str(n) if isinstance(n, int) and not isinstance(n, bool) else "-"), estimate, threshold


CLAIMS_HEADER = ("statement", "paper's evidence", "our measurement", "n", "estimate [95 % interval]", "threshold",
                 "verdict")


def claim_row(claim: Mapping) -> list[str]:
    """A claim's cells under :data:`CLAIMS_HEADER`, Markdown-safe, the verdict in bold."""
    return [markdown_cell(claim.get("claim", "")), markdown_cell(claim.get("paper", "")),
            markdown_cell(claim.get("ours", "")), *map(markdown_cell, claim_cells(claim)),
            f"**{markdown_cell(claim.get('verdict', ''))}**"]


def _entry(root: Path, name: str) -> dict:
    """One notebook's index entry: its last run, and what its folder holds now."""
    problems, record = [], None
    if run_record_path(root, name).exists():
        record, problem = read_json(run_record_path(root, name), RUN_RECORD)
        if problem:
            problems.append(f"run record {problem}")
    folder = root / name
    published = folder.is_dir()
    manifest = {}
    if published:
        manifest, problem = read_json(folder / "manifest.json", MANIFEST)
        if problem:
            problems.append(problem)
    outputs = _published(folder, manifest or {})
    last = run_view(record) if record else outputs["outputs_run"]
    made = outputs["outputs_run"]
    from_last = bool(published and made and last and made["run_id"] == last["run_id"])
    if last is None:  # a folder written outside the runner, with no run on record
        last = {key: None for key in RUN_KEYS} | {"status": RunStatus.AD_HOC, "profile": outputs["outputs_profile"]}
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
        data, problem = read_json(path, SWEEP)
        data = data or {}
        files = data.get("files") or {}
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
    if "stability_markdown" in files:
        grid += f"; [verdict stability]({files['stability_markdown']})"
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
    if entry["status"] != RunStatus.AD_HOC:
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


CLAIMS_NOTE = ("Each verdict follows from the 95 % interval of the estimate and a threshold fixed before the run: "
               "**holds** when the interval lies on the claim's side of the threshold, **not** when it lies on the "
               "other side, **inconclusive (n = ...)** when it straddles it; **partly** only for a claim made of "
               "parts, some of which hold. Intervals: two order statistics (medians, distribution-free), bootstrap "
               "over items (means), exact binomial (proportions); fewer than 6 items give no interval for a median "
               "or a mean, so such a claim is inconclusive; n is the number of items.")


def render_readme(index: Mapping) -> str:
    """``figures/README.md`` from :func:`collect_index`'s result."""
    lines = ["# Figures and tables", "",
             "Generated by the runner (`make figures`, `python -m vitequiv.runner`); do not edit by hand. "
             "`index.json` holds the same in machine-readable form.", ""]
    claims = [(e, c) for e in index["notebooks"] for c in e["claims"]]
    if claims:
        header = "| " + " | ".join((*CLAIMS_HEADER, "notebook", "run")) + " |"
        lines += ["## Reproduction summary", "", CLAIMS_NOTE, "", header, "|---" * (len(CLAIMS_HEADER) + 2) + "|"]
        lines += ["| " + " | ".join((*claim_row(c), e["notebook"], _made_by(e))) + " |" for e, c in claims]
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
