"""The sweep table and verdict grid: what every combination of a sweep measured, side by side.

Written into ``figures/sweeps/<sweep>/`` at the end of every sweep (an interrupted one too, its rows saying so):

- ``table.csv``: one row per combination and notebook: ``notebook``, ``combination`` (its folder), the swept
  values, ``status`` (``ok`` also for a combination reused from an earlier run, then ``cached`` is ``yes``),
  ``seconds`` and ``finished`` of the run that made the outputs, ``error``, and for every recorded claim
  ``verdict: <claim>`` and ``ours: <claim>`` (empty unless that run is ok and recorded the claim);
- ``table.md``: the same for reading, a section per notebook: claims as C1, C2, ..., the verdict counts per
  claim, each claim's measurements side by side, and the spread of the notebook's own tables;
- ``spread.csv``: for every number in the notebook's tables, its count, min, median and max across the ok
  combinations, where their tables line up (same columns, same rows, same row labels; otherwise the table
  says why it is not aggregated: across models, say, rows are not the same things);
- ``verdicts.png`` / ``.pdf``: claims x combinations, one colored cell per verdict (holds, partly, not,
  inconclusive, missing where the run is not ok or did not record the claim);
- ``stability.csv`` / ``stability.md``, for a sweep over ``SEED``: the verdict stability table, one row per claim
  (and per combination of the other swept values): its verdict under each seed and whether they agree (``yes``:
  every seed gave the same verdict, ``inconclusive (n = ...)`` counting as one verdict whatever its n; ``no``: two
  seeds differ; ``incomplete``: some seed's run failed or did not record the claim, the others agree);
- ``sweep.json``: the sweep's definition, the rows and these files, read by the index.
"""
from __future__ import annotations

import json
import textwrap
import urllib.parse
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import ListedColormap
from matplotlib.patches import Patch

from ..claims import verdict_kind
from ..environment import now
from ..figures import STYLE
from ..paths import atomic_path
from .index import markdown_cell
from .records import RunRecord, RunStatus, Task, run_record_path
from .schemas import MANIFEST, RUN_RECORD, read_json
from .sweeps import Planned, Sweep, render_value

SCHEMA = 1
MISSING = "missing"
VERDICTS = ("holds", "partly", "not", "inconclusive")  # as vitequiv.claims decides them, in the order shown
COLORS = {"holds": "#1a9850", "partly": "#fdb863", "not": "#d73027", "inconclusive": "#9ecae1", MISSING: "#e0e0e0"}
TEXT_COLORS = {"holds": "white", "partly": "black", "not": "white", "inconclusive": "black", MISSING: "#606060"}
FILES = {"csv": "table.csv", "markdown": "table.md", "spread": "spread.csv", "png": "verdicts.png",
         "pdf": "verdicts.pdf", "json": "sweep.json"}
STABILITY_AXIS = "SEED"
STABILITY_FILES = {"stability_csv": "stability.csv", "stability_markdown": "stability.md"}


@dataclass
class Row:
    """One combination of one notebook as the table shows it."""

    planned: Planned
    task: Task
    status: RunStatus  # ok | failed | interrupted | not run
    cached: bool
    seconds: float
    finished: str
    error: str
    claims: dict[str, dict] = field(default_factory=dict)  # claim -> {"paper", "ours", "verdict"}
    tables: dict[str, Path] = field(default_factory=dict)  # table name -> its CSV file

    @property
    def folder(self) -> Path:
        return self.task.out_root / self.task.stem


def make_row(planned: Planned, task: Task, record: RunRecord) -> Row:
    """The row of one finished (or skipped, or never run) task; claims and tables only from an ok run."""
    cached = record.status == RunStatus.SKIPPED
    status, seconds, finished = (RunStatus.OK if cached else record.status), record.seconds, record.finished
    if cached:
        run = read_json(run_record_path(task.out_root, task.stem), RUN_RECORD)[0] or {}
        seconds, finished = float(run.get("seconds") or 0.0), str(run.get("finished") or "")
    row = Row(planned, task, status, cached, seconds, finished, record.error)
    if status == RunStatus.OK:
        manifest = read_json(row.folder / "manifest.json", MANIFEST)[0] or {}
        row.claims = dict(manifest.get("claims") or {})
        for name, entry in (manifest.get("tables") or {}).items():
            csv = next((f for f in entry.get("files", []) if str(f).endswith(".csv")), None)
            if csv and (row.folder / csv).is_file():
                row.tables[str(name)] = row.folder / csv
    return row


def claims_of(rows: Sequence[Row]) -> list[str]:
    """Every claim the rows recorded, in the order they first appear."""
    return list(dict.fromkeys(claim for row in rows for claim in row.claims))


def table(rows: Sequence[Row], axes: Sequence[str]) -> pd.DataFrame:
    """The sweep table (see the module docstring)."""
    claims = claims_of(rows)
    records = []
    for row in rows:
        values = {name: render_value(row.planned.values[name]) if name in row.planned.values else "" for name in axes}
        entry = {"notebook": row.task.stem, "combination": row.planned.folder, **values, "status": row.status,
                 "cached": "yes" if row.cached else "no", "seconds": round(row.seconds, 2), "finished": row.finished,
                 "error": row.error}
        for claim in claims:
            found = row.claims.get(claim, {})
            entry[f"verdict: {claim}"] = found.get("verdict", "")
            entry[f"ours: {claim}"] = found.get("ours", "")
        records.append(entry)
    return pd.DataFrame(records)


# ---- the spread of the notebooks' own numbers -------------------------------------------------------------------

def spread(rows: Sequence[Row]) -> tuple[pd.DataFrame, dict[str, pd.DataFrame], list[str]]:
    """Per number of the notebook's tables: n, min, median, max across the ok rows (one notebook's rows).

    Returns the long form (for ``spread.csv``), one readable frame per table ("median [min, max]"), and notes on
    the tables that were not aggregated and why.
    """
    ok = [row for row in rows if row.status == RunStatus.OK]
    long, readable, notes = [], {}, []
    for name in dict.fromkeys(t for row in ok for t in row.tables):
        try:
            frames = [pd.read_csv(row.tables[name]) for row in ok if name in row.tables]
        except (OSError, ValueError, pd.errors.ParserError) as err:
            notes.append(f"table {name}: a CSV cannot be read ({err})")
            continue
        if len(frames) < 2:
            notes.append(f"table {name}: in one ok combination only, nothing to compare")
            continue
        first = frames[0]
        if any(list(f.columns) != list(first.columns) or len(f) != len(first) for f in frames):
            notes.append(f"table {name}: not aggregated, its columns or row count differ between combinations")
            continue
        numeric = [c for c in first.columns if all(pd.api.types.is_numeric_dtype(f[c])
                                                   and not pd.api.types.is_bool_dtype(f[c]) for f in frames)]
        labels = [c for c in first.columns if c not in numeric]
        if any(not f[labels].astype(str).equals(first[labels].astype(str)) for f in frames):
            notes.append(f"table {name}: not aggregated, its rows ({', '.join(labels)}) differ between combinations")
            continue
        if not numeric:
            continue
        stack = np.stack([f[numeric].to_numpy(dtype=float) for f in frames])  # (combinations, rows, columns)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a cell that is NaN everywhere stays NaN
            low, mid, high = np.nanmin(stack, 0), np.nanmedian(stack, 0), np.nanmax(stack, 0)  # (rows, columns)
        count = (~np.isnan(stack)).sum(0)  # (rows, columns)
        shown = first[labels].copy()
        for k, column in enumerate(numeric):
            shown[column] = [f"{mid[r, k]:.4g} [{low[r, k]:.4g}, {high[r, k]:.4g}]" for r in range(len(first))]
            for r in range(len(first)):
                label = " / ".join(str(first.iloc[r][c]) for c in labels) or f"row {r + 1}"
                long.append({"table": name, "row": label, "column": column, "n": int(count[r, k]),
                             "min": low[r, k], "median": mid[r, k], "max": high[r, k]})
        readable[name] = shown
    return pd.DataFrame(long, columns=["table", "row", "column", "n", "min", "median", "max"]), readable, notes


# ---- the verdict grid ---------------------------------------------------------------------------------------------

def _column_label(row: Row, width: int = 24) -> str:
    """``NAME=value`` per line (a long one broken over at most three), and the status unless ok."""
    lines = []
    for name, value in row.planned.shown.items():
        parts = textwrap.wrap(f"{name}={render_value(value)}", width, break_long_words=True)
        lines += parts[:2] + [textwrap.shorten(" ".join(parts[2:]), width, placeholder="...")] if len(parts) > 3 \
            else parts
    return "\n".join(lines + ([f"({row.status})"] if row.status != RunStatus.OK else []))


def verdict_grid(sections: Sequence[tuple[str, Sequence[Row]]], title: str = "") -> plt.Figure:
    """Claims (rows) x combinations (columns), one panel per notebook; each cell colored and labeled by verdict."""
    order = [*VERDICTS, MISSING]
    cmap = ListedColormap([COLORS[v] for v in order])
    panels = [(nb, rows, claims_of(rows) or ["(no claim recorded)"]) for nb, rows in sections]
    columns = max(len(rows) for _, rows, _ in panels)
    labels = [[_column_label(row) for row in rows] for _, rows, _ in panels]
    column_width = max(1.0, 0.075 * max(len(line) for panel in labels for label in panel
                                        for line in label.split("\n")) + 0.25)
    # inches: the cells, then the column labels and the title above them, so that cells are alike in every panel
    heights = [0.45 * len(claims) + 0.18 * max(label.count("\n") + 1 for label in panel) + 0.45
               for (_, _, claims), panel in zip(panels, labels)]
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(len(panels), 1, figsize=(4.6 + column_width * columns, sum(heights) + 0.7),
                                 gridspec_kw={"height_ratios": heights}, squeeze=False)
        for ax, (notebook, rows, claims), column_labels in zip(axes[:, 0], panels, labels):
            cells = [[row.claims.get(claim, {}).get("verdict", MISSING) if row.status == RunStatus.OK else MISSING
                      for row in rows] for claim in claims]
            cells = [[v if verdict_kind(v) in order else MISSING for v in line] for line in cells]
            codes = np.array([[order.index(verdict_kind(v)) for v in line] for line in cells])  # (claims, combinations)
            ax.imshow(codes, cmap=cmap, vmin=-0.5, vmax=len(order) - 0.5, aspect="auto")
            for i, line in enumerate(cells):
                for j, value in enumerate(line):
                    ax.text(j, i, value.replace(" (", "\n("), ha="center", va="center", fontsize=9,
                            color=TEXT_COLORS[verdict_kind(value)])
            ax.set_xticks(range(len(rows)), column_labels, fontsize=9)
            ax.set_yticks(range(len(claims)),
                          [textwrap.fill(textwrap.shorten(c, 88, placeholder="..."), 46) for c in claims], fontsize=9)
            ax.set_xlim(-0.5, columns - 0.5)  # equal cells in every panel: a shorter one leaves room on the right
            ax.xaxis.tick_top()
            ax.set_xticks(np.arange(len(rows) + 1) - 0.5, minor=True)
            ax.set_yticks(np.arange(len(claims) + 1) - 0.5, minor=True)
            ax.grid(which="minor", color="white", linewidth=2)
            ax.grid(which="major", visible=False)
            ax.tick_params(which="both", length=0)
            for spine in ax.spines.values():
                spine.set_visible(False)
            ax.set_title(notebook, loc="left", fontsize=11, fontweight="bold")
        fig.legend(handles=[Patch(facecolor=COLORS[v], label=v) for v in order], loc="outside lower center",
                   ncol=len(order), frameon=False)
        if title:
            fig.suptitle(title, fontsize=12)
    return fig


# ---- the verdict stability table ---------------------------------------------------------------------------------

def stability(rows: Sequence[Row], axis: str = STABILITY_AXIS) -> pd.DataFrame:
    """Per notebook, claim and combination of the other swept values: the verdict under each value of ``axis``
    (``"missing"`` where that run is not ok or did not record the claim) and whether they agree (see the module
    docstring). Empty when no row sweeps ``axis``."""
    swept = [row for row in rows if axis in row.planned.values]
    if not swept:
        return pd.DataFrame(columns=["notebook", "claim", "agree"])
    seeds = list(dict.fromkeys(render_value(row.planned.values[axis]) for row in swept))
    others = list(dict.fromkeys(name for row in swept for name in row.planned.values if name != axis))
    groups: dict[tuple, dict[str, Row]] = {}
    for row in swept:
        key = (row.task.stem, *[render_value(row.planned.values[n]) if n in row.planned.values else "" for n in others])
        groups.setdefault(key, {})[render_value(row.planned.values[axis])] = row
    records = []
    for key, by_seed in groups.items():
        recorded = [by_seed[s].claims if s in by_seed and by_seed[s].status == RunStatus.OK else {} for s in seeds]
        for claim in dict.fromkeys(c for claims in recorded for c in claims):
            verdicts = [claims[claim].get("verdict") or MISSING if claim in claims else MISSING for claims in recorded]
            kinds = {verdict_kind(v) for v in verdicts if v != MISSING}
            agree = "no" if len(kinds) > 1 else "incomplete" if MISSING in verdicts else "yes"
            records.append({"notebook": key[0], **dict(zip(others, key[1:])), "claim": claim,
                            **{f"{axis}={s}": v for s, v in zip(seeds, verdicts)}, "agree": agree})
    return pd.DataFrame(records, columns=["notebook", *others, "claim", *[f"{axis}={s}" for s in seeds], "agree"])


def render_stability(sweep_name: str, frame: pd.DataFrame, axis: str = STABILITY_AXIS) -> str:
    """``stability.md``: the verdict stability table with a line saying how many claims agree."""
    agree = Counter(frame["agree"])
    lines = [f"# Verdict stability: sweep `{sweep_name}`", "",
             f"Each claim's verdict under each `{axis}`, and whether they agree (`yes`: the same verdict under every "
             f"{axis}, an inconclusive one counting as one verdict whatever its n; `no`: two differ; `incomplete`: "
             f"some run failed or did not record the claim, the others agree). Written {now()} by the runner; do not "
             "edit by hand.", "",
             f"**{agree['yes']} of {len(frame)}** claims agree across {axis}"
             + (f"; {agree['no']} differ" if agree["no"] else "")
             + (f"; {agree['incomplete']} incomplete" if agree["incomplete"] else "") + ".", ""]
    if len(frame):
        lines += ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
        lines += ["| " + " | ".join(f"**{markdown_cell(v)}**" if c == "agree" else markdown_cell(v)
                                    for c, v in row.items()) + " |" for _, row in frame.iterrows()]
    return "\n".join(lines + [""])


# ---- writing it all ---------------------------------------------------------------------------------------------

def _link(path: str) -> str:
    return urllib.parse.quote(path, safe="/")


def _counts(rows: Sequence[Row]) -> dict[str, int]:
    counts = Counter(row.status for row in rows)
    return {**counts, "cached": sum(row.cached for row in rows)}


def _describe_counts(counts: Mapping[str, int]) -> str:
    parts = ", ".join(f"{n} {status}" for status, n in counts.items() if status != "cached")
    return parts + (f" ({counts['cached']} of them reused from earlier runs)" if counts.get("cached") else "")


def render_markdown(sweep: Sweep, sections: Sequence[tuple[str, Sequence[Row]]], spreads: Mapping, executor: str,
                    notes: Sequence[str]) -> str:
    """``table.md`` (see the module docstring)."""
    rows = [row for _, section in sections for row in section]
    swept = "; ".join(f"`{name}` = {', '.join(map(render_value, values))}" for name, values in sweep.swept.items())
    if sweep.combinations:
        crossed = ", crossed with the rest" if sweep.axes else ""
        swept += f" ({len(sweep.combinations)} listed combinations{crossed})"
    fixed = ", ".join(f"`{k}={json.dumps(v)}`" for k, v in sweep.parameters.items())
    lines = [f"# Sweep `{sweep.name}`", "",
             f"Profile `{sweep.profile}`{'; fixed ' + fixed if fixed else ''}; swept: {swept} (from {sweep.source}). "
             f"Ran {executor}; {len(rows)} run(s): {_describe_counts(_counts(rows))}. Written {now()} by the runner; "
             "do not edit by hand.", "",
             f"Files: [table.csv]({FILES['csv']}), [spread.csv]({FILES['spread']}), [sweep.json]({FILES['json']}), "
             f"verdict grid [png]({FILES['png']}) ([pdf]({FILES['pdf']})).", ""]
    lines += [f"Note: {note}." for note in notes] + ([""] if notes else [])
    lines += [f"![Verdicts per claim and combination]({FILES['png']})", ""]
    for notebook, section in sections:
        claims = claims_of(section)
        axes = [name for name in sweep.names if any(name in row.planned.values for row in section)]
        lines += [f"## {notebook}", "", f"{len(section)} combination(s): {_describe_counts(_counts(section))}.", ""]
        if claims:
            lines += ["Claims: " + "; ".join(f"**C{i}** {markdown_cell(c)}" for i, c in enumerate(claims, 1)) + ".", ""]
        header = ["combination", *axes, "status", "time", *[f"C{i}" for i in range(1, len(claims) + 1)], "outputs"]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for row in section:
            status = f"{row.status} (cached)" if row.cached else row.status
            if row.error:
                status += f": {markdown_cell(row.error)}"
            verdicts = [f"**{row.claims[c]['verdict']}**" if c in row.claims else "" for c in claims]
            outputs = f"[{notebook}]({_link(f'{row.planned.folder}/{notebook}/')})" if row.folder.is_dir() else ""
            values = [markdown_cell(render_value(row.planned.values[name])) if name in row.planned.values else ""
                      for name in axes]
            lines.append("| " + " | ".join([row.planned.folder, *values, status, f"{row.seconds:.1f} s", *verdicts,
                                            outputs]) + " |")
        if claims:
            counts = []
            for claim in claims:
                found = Counter(verdict_kind(row.claims[claim].get("verdict", "")) for row in section
                                if claim in row.claims)
                counts.append(", ".join(f"{v} {found[v]}" for v in VERDICTS if found[v]) or "none")
            lines.append("| " + " | ".join(["**verdicts**", *[""] * (len(axes) + 2), *counts, ""]) + " |")
        lines.append("")
        for i, claim in enumerate(claims, 1):
            lines += [f"### C{i}: {markdown_cell(claim)}", "", "| combination | verdict | ours |", "|---|---|---|"]
            lines += [f"| {row.planned.folder} | {row.claims[claim].get('verdict', '')} | "
                      f"{markdown_cell(row.claims[claim].get('ours', ''))} |" for row in section if claim in row.claims]
            lines.append("")
        long, readable, spread_notes = spreads[notebook]
        ok = sum(row.status == RunStatus.OK for row in section)
        if readable or spread_notes:
            lines += [f"### Spread of the tables' numbers across the {ok} ok combination(s)", "",
                      "Each cell: median [min, max] across the combinations.", ""]
            for name, frame in readable.items():
                lines += [f"Table `{name}`:", "", frame.to_markdown(index=False), ""]
            lines += [f"- {note}" for note in spread_notes] + ([""] if spread_notes else [])
    return "\n".join(lines)


def write_report(sweep_root: Path, sweep: Sweep, planned: Sequence[Planned], tasks: Sequence[Task],
                 records: Sequence[RunRecord], executor: str, notes: Sequence[str] = ()) -> Path:
    """Write the sweep table, spread, verdict grid and ``sweep.json`` into ``sweep_root``; the table's path."""
    rows = [make_row(p, t, r) for p, t, r in zip(planned, tasks, records)]
    sections = [(nb, [row for row in rows if row.task.stem == nb]) for nb in dict.fromkeys(r.task.stem for r in rows)]
    spreads = {nb: spread(section) for nb, section in sections}
    sweep_root.mkdir(parents=True, exist_ok=True)
    with atomic_path(sweep_root / FILES["csv"]) as tmp:
        table(rows, sweep.names).to_csv(tmp, index=False)
    with atomic_path(sweep_root / FILES["spread"]) as tmp:
        frames = [s[0].assign(notebook=nb) for nb, s in spreads.items() if not s[0].empty]
        columns = ["notebook", "table", "row", "column", "n", "min", "median", "max"]
        (pd.concat(frames)[columns] if frames else pd.DataFrame(columns=columns)).to_csv(tmp, index=False)
    if rows:
        fig = verdict_grid(sections, f"Sweep {sweep.name} (profile {sweep.profile}): verdicts per claim and "
                                     "combination")
        try:
            for ext in ("png", "pdf"):
                with atomic_path(sweep_root / FILES[ext]) as tmp:
                    fig.savefig(tmp, format=ext)
        finally:
            plt.close(fig)
    with atomic_path(sweep_root / FILES["markdown"]) as tmp:
        tmp.write_text(render_markdown(sweep, sections, spreads, executor, notes))
    files = dict(FILES)
    stable = stability(rows)
    if STABILITY_AXIS in sweep.names and len(stable):
        with atomic_path(sweep_root / STABILITY_FILES["stability_csv"]) as tmp:
            stable.to_csv(tmp, index=False)
        with atomic_path(sweep_root / STABILITY_FILES["stability_markdown"]) as tmp:
            tmp.write_text(render_stability(sweep.name, stable))
        files |= STABILITY_FILES
    summary = {
        "schema": SCHEMA, "name": sweep.name, "profile": sweep.profile, "source": sweep.source,
        "swept": sweep.swept, "combinations": sweep.combinations, "parameters": sweep.parameters,
        "notebooks": [nb for nb, _ in sections],
        "executor": executor, "generated": now(), "counts": _counts(rows), "files": files, "notes": list(notes),
        "rows": [_json_row(row) for row in rows],
    }
    with atomic_path(sweep_root / FILES["json"]) as tmp:
        tmp.write_text(json.dumps(summary, indent=2, default=str))
    return sweep_root / FILES["markdown"]


def _json_row(row: Row) -> dict[str, Any]:
    return {"notebook": row.task.stem, "combination": row.planned.folder, "values": row.planned.values,
            "status": row.status, "cached": row.cached, "seconds": row.seconds, "finished": row.finished,
            "error": row.error, "folder": f"{row.planned.folder}/{row.task.stem}",
            "claims": {claim: {k: entry.get(k, "") for k in ("verdict", "ours")}
                       | {k: entry.get(k) for k in ("n", "value", "low", "high", "threshold", "direction")
                          if entry.get(k) is not None}
                       for claim, entry in row.claims.items()}}
