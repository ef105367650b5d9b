"""Parameter sweeps: every combination of swept values, for each selected notebook, on top of a profile.

    python -m vitequiv.runner --profile smoke --sweep SEED=0,1 --sweep MODEL=embedded,random:vit_small_patch14_dinov2 01
    python -m vitequiv.runner --sweep-file sweep-seeds          # notebooks/sweeps/sweep-seeds.yaml

Values are YAML, separated by commas: ``SEED=0,1,2``; a list value is written in brackets,
``'PHOTOS=[cat],[cat,coffee]'`` (two values); a value holding a comma, or ``': '``, is quoted: ``'NAME="a, b"'``.
A sweep file holds ``profile``, ``notebooks`` (selection prefixes), ``sweep`` (name -> list of values: every
combination of them) and/or ``combinations`` (a list of mappings, each one combination: for values that belong
together, such as a model and its random twin), optionally ``parameters`` (fixed values on top of the
profile) and ``description``. The listed combinations are crossed with the ``sweep`` axes; ``--sweep`` adds axes.

A swept name must be declared by at least one selected notebook; it is swept where declared (the runner says
where not), and a notebook that declares no swept name is left out. Each combination of one notebook runs
as one task and publishes into ``figures/sweeps/<sweep>/<combination>/<notebook>/`` with its own run record
and cache key (a finished combination is never computed twice, see :mod:`vitequiv.run.cache`); the combination's
folder name is ``NAME=value,NAME2=value`` with characters unsafe in file names percent-escaped. The sweep's
name is ``--sweep-name``, else the sweep file's name, else ``<profile>-<NAME>+<NAME2>``. At the end the sweep
table and verdict grid are written (:mod:`vitequiv.run.sweep_report`) and the index links them.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..figures import PARAMETER_NAME
from ..paths import notebooks_dir
from .profiles import Profile, UniqueKeyLoader, close_match, parameters_for, read_yaml
from .records import RunnerError

FILE_KEYS = ("description", "profile", "notebooks", "parameters", "sweep", "combinations")
MAX_FOLDER = 120  # longer combination names are cut and given a hash
_SWEEP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+=@-]{0,99}")
_SAFE = re.compile(r"[A-Za-z0-9._=+,\[\]{}@!()'-]")  # characters a folder name keeps; the rest is %-escaped
_NOT_BARE = re.compile(r"[,\[\]{}\"]")  # a string holding these is quoted, so that names stay unambiguous
# Parameter annotations a swept value is checked against (others are passed on unchecked).
_ANNOTATIONS = {"int": [int], "float": [int, float], "str": [str], "bool": [bool], "list": [list], "dict": [dict],
                "None": [type(None)]}
VALUES_HINT = ("write values separated by commas (SEED=0,1,2), a list value in brackets ('PHOTOS=[cat],[cat,coffee]'), "
               "and quote a value that holds a comma or ': ' ('NAME=\"a, b\"')")


class SweepError(RunnerError):
    """A sweep that cannot run: a bad --sweep value, sweep file or swept name."""


@dataclass
class Sweep:
    """What to sweep on top of ``profile`` for the selected notebooks: every listed combination (if any) crossed
    with every value of each of ``axes`` (name -> values, in order)."""

    axes: dict[str, list]
    profile: str = "default"
    selection: list[str] = field(default_factory=list)
    parameters: dict = field(default_factory=dict)  # fixed values on top of the profile
    name: str = ""
    source: str = "the command line"  # where the axes came from, for messages
    combinations: list[dict] = field(default_factory=list)  # explicit combinations (sweep files)

    def __post_init__(self) -> None:
        if not self.name:
            self.name = f"{self.profile}-{'+'.join(self.names)}"
        if not _SWEEP_NAME.fullmatch(self.name):
            raise SweepError(f"sweep name {self.name!r}: expected letters, digits and _ . + = @ - (at most 100), "
                             "starting with a letter or digit; give one with --sweep-name")

    @property
    def names(self) -> list[str]:
        """Every swept name: those of the listed combinations first, then the axes."""
        return list(dict.fromkeys([name for c in self.combinations for name in c] + list(self.axes)))

    @property
    def swept(self) -> dict[str, list]:
        """Each swept name with its distinct values, in order (for tables and the index)."""
        values: dict[str, dict[str, Any]] = {name: {} for name in self.names}  # name -> canonical JSON -> value
        for name, value in [(n, v) for c in self.combinations for n, v in c.items()] + \
                [(n, v) for n, vs in self.axes.items() for v in vs]:
            values[name].setdefault(json.dumps(value, sort_keys=True), value)
        return {name: list(found.values()) for name, found in values.items()}


@dataclass(frozen=True)
class Planned:
    """One notebook under one combination: its swept values, folder name and all the parameters it receives."""

    notebook: Path
    values: dict
    folder: str
    parameters: dict
    shown: dict = field(default_factory=dict)  # the values that name it (a listed model, not also its control)


# ---- reading sweeps: --sweep options and sweep files ---------------------------------------------------------

def _check_values(where: str, name: str, values: Any) -> list:
    """``values`` as a list of JSON values without repeats; SweepError naming ``where`` otherwise."""
    if not PARAMETER_NAME.fullmatch(str(name)):
        raise SweepError(f"{where}: {name!r} is not a parameter name; notebook parameters are UPPER_CASE, e.g. SEED")
    if name == "PROFILE":
        raise SweepError(f"{where}: PROFILE is set by the runner; sweep profiles by running the runner once each")
    if not isinstance(values, list) or not values:
        raise SweepError(f"{where}: expected a non-empty list of values for {name}, got {values!r}")
    seen = []
    for value in values:
        try:
            canonical = json.dumps(value, sort_keys=True, allow_nan=False)
        except (TypeError, ValueError):
            raise SweepError(f"{where}: the value {value!r} of {name} is not a number, string, list or mapping "
                             f"(YAML reads it as a {type(value).__name__}; quote it to pass a string)") from None
        if canonical in seen:
            raise SweepError(f"{where}: the value {value!r} of {name} is given twice")
        seen.append(canonical)
    return values


def parse_axis(option: str) -> tuple[str, list]:
    """``NAME=V1,V2,...`` -> (NAME, [values]); values are read as one YAML flow sequence."""
    where = f"--sweep {option!r}"
    name, equals, raw = option.partition("=")
    name = name.strip()
    if not equals or not name:
        raise SweepError(f"{where}: expected NAME=V1,V2,... such as SEED=0,1,2")
    if not raw.strip():
        raise SweepError(f"{where}: no values after {name}=; {VALUES_HINT}")
    try:
        values = yaml.load(f"[{raw}]", Loader=UniqueKeyLoader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at character {mark.column} of the values" if mark else ""  # column 0 is the added '['
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise SweepError(f"{where}: the values cannot be read as YAML ({problem}{at}); {VALUES_HINT}") from None
    return name, _check_values(where, name, values)


def sweeps_dir() -> Path:
    return notebooks_dir() / "sweeps"


def available_sweeps() -> list[str]:
    return sorted(p.stem for p in sweeps_dir().glob("*.yaml"))


def _sweep_path(reference: str) -> Path:
    """The sweep file ``reference`` names: a path, or a name in ``notebooks/sweeps/``."""
    if reference.endswith((".yaml", ".yml")) or "/" in reference:
        path = Path(reference).expanduser()
    else:
        path = sweeps_dir() / f"{reference}.yaml"
    if not path.is_file():
        known = ", ".join(available_sweeps()) or "none"
        raise SweepError(f"--sweep-file {reference}: {path} does not exist; sweep files in {sweeps_dir()}: {known}")
    return path


def load_sweep_file(reference: str) -> tuple[Path, dict]:
    """The sweep file's path and contents, checked (SweepError with the file, the line or the key)."""
    path = _sweep_path(reference)
    data = read_yaml(path, "sweep file", SweepError)
    if not isinstance(data, dict):
        raise SweepError(f"sweep file {path}: expected a mapping with {', '.join(FILE_KEYS)}, got "
                         f"{type(data).__name__}")
    problems = [f"unknown key {key!r}{close_match(str(key), list(FILE_KEYS))}; expected {', '.join(FILE_KEYS)}"
                for key in data if key not in FILE_KEYS]
    if "sweep" not in data and "combinations" not in data:
        problems.append("'sweep' (parameter names -> lists of values, e.g. sweep: {SEED: [0, 1, 2]}) or "
                        "'combinations' (a list of mappings of parameter names to values) is needed")
    if "sweep" in data and (not isinstance(data["sweep"], dict) or not data["sweep"]):
        problems.append("'sweep' must map parameter names to lists of values, e.g. sweep: {SEED: [0, 1, 2]}")
    combinations = data.get("combinations", [])
    if not isinstance(combinations, list) or not all(isinstance(c, dict) and c for c in combinations):
        problems.append(f"'combinations' must list mappings of parameter names to values, got {combinations!r}")
    if not isinstance(data.get("profile", "default"), str):
        problems.append(f"'profile' must be a profile name, got {data['profile']!r}")
    notebooks = data.get("notebooks", [])
    if isinstance(notebooks, str):
        data["notebooks"] = notebooks = [notebooks]
    if not isinstance(notebooks, list) or not all(isinstance(n, str) for n in notebooks):
        problems.append(f"'notebooks' must list notebook names or name prefixes, got {notebooks!r} (YAML reads a bare "
                        "07 as the number 7: write '07' or 07_models_and_layers)")
    if not isinstance(data.get("parameters") or {}, dict):
        problems.append(f"'parameters' must map parameter names to values, got {data['parameters']!r}")
    if problems:
        raise SweepError(f"sweep file {path}:\n  - " + "\n  - ".join(problems))
    for name, values in (data.get("sweep") or {}).items():
        _check_values(f"sweep file {path}, sweep.{name}", name, values)
    seen = []
    for i, combination in enumerate(combinations):
        for name, value in combination.items():
            _check_values(f"sweep file {path}, combinations[{i}]", name, [value])
            if name in (data.get("sweep") or {}):
                raise SweepError(f"sweep file {path}: combinations[{i}] sets {name}, which 'sweep' sweeps too")
        canonical = json.dumps(combination, sort_keys=True)
        if canonical in seen:
            raise SweepError(f"sweep file {path}: combinations[{i}] repeats combinations[{seen.index(canonical)}]")
        seen.append(canonical)
    for name in data.get("parameters") or {}:
        if not PARAMETER_NAME.fullmatch(str(name)) or name == "PROFILE":
            raise SweepError(f"sweep file {path}: parameters.{name} is not a parameter a sweep can set")
    return path, data


def from_arguments(options: list[str], file: str | None, name: str | None, profile: str | None,
                   selection: list[str]) -> Sweep:
    """The sweep the command line asks for: the sweep file's axes (if any), then each ``--sweep``."""
    axes: dict[str, list] = {}
    source, fixed, data = "the command line", {}, {}
    if file:
        path, data = load_sweep_file(file)
        axes, fixed, source = dict(data.get("sweep") or {}), dict(data.get("parameters") or {}), f"sweep file {path}"
    listed = {name for c in data.get("combinations", []) for name in c}
    for option in options:
        axis, values = parse_axis(option)
        if axis in axes or axis in listed:
            where = source if axis in (data.get("sweep") or {}) or axis in listed else "an earlier --sweep"
            raise SweepError(f"--sweep {option!r}: {axis} is already swept by {where}")
        axes[axis] = values
    if file and not name:
        name = "+".join([Path(file).stem, *(parse_axis(option)[0] for option in options)])
    if options and file:
        source = f"{source} and the command line"
    return Sweep(axes, profile or data.get("profile") or "default", list(selection or data.get("notebooks", [])),
                 fixed, name or "", source, list(data.get("combinations", [])))


# ---- combinations ---------------------------------------------------------------------------------------------

def _render(value: Any) -> str:
    """A value as compact, unambiguous text: strings bare unless YAML would read them as something else."""
    if isinstance(value, str):
        try:
            bare = bool(value) and not _NOT_BARE.search(value) and yaml.safe_load(value) == value
        except yaml.YAMLError:
            bare = False
        return value if bare else json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ",".join(_render(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{_render(k)}:{_render(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)


def render_value(value: Any) -> str:
    """How a swept value is shown in tables and labels (``[cat,coffee]``, ``random:vit_small_patch14_dinov2``)."""
    return _render(value)


def combination_folder(values: Mapping[str, Any]) -> str:
    """``NAME=value,NAME2=value``, unique per combination: characters outside letters, digits and
    ``._=+,[]{}@!()'-`` are %-escaped (``:`` -> ``%3A``); a name over 120 characters is cut and given a hash."""
    text = ",".join(f"{name}={_render(value)}" for name, value in values.items())
    folder = "".join(c if _SAFE.fullmatch(c) else "".join(f"%{b:02X}" for b in c.encode()) for c in text)
    if len(folder) > MAX_FOLDER:
        digest = hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:12]
        folder = f"{folder[:MAX_FOLDER - 13]}~{digest}"
    return folder


def _telling(listed: list[dict]) -> list[str]:
    """The fewest leading names of the listed combinations that tell them apart: those the folder names show
    (a model's name, not also the control and block models that come with it)."""
    names = list(dict.fromkeys(name for c in listed for name in c))
    for n in range(1, len(names) + 1):
        seen = {json.dumps([c.get(name) for name in names[:n]], sort_keys=True) for c in listed}
        if len(seen) == len(listed):
            return names[:n]
    return names


def _given(sweep: Sweep) -> list[tuple[str, Any]]:
    """Every (name, value) the sweep passes: swept values and fixed parameters, each once."""
    pairs = [(n, v) for n, values in sweep.swept.items() for v in values] + list(sweep.parameters.items())
    return list({json.dumps(pair, sort_keys=True, default=str): pair for pair in pairs}.values())


def _misfits(value: Any, annotation: str | None) -> bool:
    """Whether ``value`` cannot be what a parameter annotated ``annotation`` holds (``int``, ``float or None``...);
    False for an annotation this cannot judge."""
    if annotation in (None, "None"):  # papermill's name for a parameter without an annotation
        return False
    allowed = []
    for name in str(annotation).split(" or "):
        if name.strip() not in _ANNOTATIONS:
            return False
        allowed += _ANNOTATIONS[name.strip()]
    return not any(isinstance(value, t) and not (isinstance(value, bool) and t is not bool) for t in allowed)


def plan(sweep: Sweep, profile: Profile, selected: list[Path], declared: Mapping[str, Mapping | None]) -> tuple[
        list[Planned], list[str]]:
    """Every (notebook, combination) the sweep runs, notebook by notebook, and notes on what is left out.

    SweepError if a swept or fixed name is declared by no selected notebook, or a value does not fit the type a
    notebook declares for it (``--sweep 'SEED=[]'`` for ``SEED: int``): refused before anything runs.
    """
    readable = [nb for nb in selected if declared.get(nb.stem) is not None]
    notes = [f"{nb.stem} cannot be read and is left out of the sweep" for nb in selected if nb not in readable]
    known = sorted({name for nb in readable for name in declared[nb.stem]})
    problems = []
    for kind, names in (("swept", sweep.names), ("fixed", sweep.parameters)):
        for name in names:
            where = [nb.stem for nb in readable if name in declared[nb.stem]]
            if not where:
                problems.append(f"{name} ({kind}, from {sweep.source}) is declared by no selected notebook"
                                f"{close_match(name, known)}; they declare: {', '.join(known) or 'nothing'}")
            elif kind == "swept" and len(where) < len(readable):
                others = [nb.stem for nb in readable if nb.stem not in where]
                notes.append(f"{name} is swept in {', '.join(where)} only: {', '.join(others)} does not declare it")
    problems += [f"{name}={render_value(value)} (from {sweep.source}) does not fit {nb.stem}'s parameter "
                 f"`{name}: {declared[nb.stem][name].get('inferred_type_name')}`"
                 + (f"; {VALUES_HINT}" if isinstance(value, list) else "")
                 for name, value in _given(sweep) for nb in readable
                 if name in declared[nb.stem] and _misfits(value, declared[nb.stem][name].get("inferred_type_name"))]
    if problems:
        raise SweepError(f"sweep {sweep.name}:\n  - " + "\n  - ".join(problems))
    planned, folders = [], {}
    for nb in readable:
        names = declared[nb.stem]
        if not any(name in names for name in sweep.names):
            notes.append(f"{nb.stem} declares none of {', '.join(sweep.names)} and is left out of the sweep")
            continue
        base = parameters_for(nb, profile, profile.name, names)
        fixed = {k: v for k, v in sweep.parameters.items() if k in names}
        listed = [{k: v for k, v in c.items() if k in names} for c in sweep.combinations] or [{}]
        listed = [json.loads(c) for c in dict.fromkeys(json.dumps(c) for c in listed)]  # alike where undeclared
        factors = [listed] + [[{name: v} for v in sweep.axes[name]] for name in sweep.axes if name in names]
        shown = _telling(listed) + [name for name in sweep.axes if name in names]
        for parts in itertools.product(*factors):
            values = {k: v for part in parts for k, v in part.items()}
            label = {k: v for k, v in values.items() if k in shown}
            folder = combination_folder(label)
            if folders.setdefault((nb.stem, folder), values) != values:
                raise SweepError(f"sweep {sweep.name}: two combinations of {nb.stem} share the folder {folder}")
            planned.append(Planned(nb, values, folder, base | fixed | values, label))
    return planned, notes
