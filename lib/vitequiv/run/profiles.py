"""Profiles and notebooks, checked at the door: nothing runs until the profile, the selection and every name fit.

A profile is ``notebooks/profiles/<name>.yaml``: ``defaults`` (parameters for every notebook that declares them)
and ``notebooks`` (per-notebook overrides). A notebook receives only the parameters its ``parameters`` cell
declares, plus ``PROFILE``. Checked before anything runs: the profile parses (the YAML error's line is shown) and
has only ``defaults`` and ``notebooks``; every ``defaults`` key is declared by some notebook; every ``notebooks``
key names a notebook, and each of its keys is declared by that notebook; every selection item matches a
notebook. A notebook file that is not a valid notebook is reported with its path and the parser's line.
"""
from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..figures import INTERACTIVE
from ..paths import notebooks_dir
from .execute import papermill_path
from .records import NotebookError, ProfileError, RunnerError, SelectionError

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class Profile:
    """A profile's parameters: ``defaults`` for every notebook that declares them, ``notebooks`` per notebook."""

    name: str
    path: Path
    defaults: dict
    notebooks: dict[str, dict]


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


def load_profile(name: str) -> Profile:
    """The profile ``notebooks/profiles/<name>.yaml``; ProfileError if it is missing or bad."""
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
    return Profile(name, path, defaults, sections)


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
        return papermill.inspect_notebook(papermill_path(notebook))
    except Exception as err:  # papermill's parameter parsing
        raise NotebookError(f"notebook {notebook}: its parameters cell cannot be read: {err}") from None


def check_profile(profile: Profile, declared: Mapping[str, Mapping | None]) -> None:
    """ProfileError listing each profile key that no notebook declares, and each section naming no notebook.

    ``declared`` maps every notebook's name to its declared parameters (None: the notebook is unreadable).
    """
    problems = []
    for nb, params in profile.notebooks.items():
        if nb not in declared:
            problems.append(f"notebooks.{nb} names no notebook{close_match(str(nb), set(declared))}; "
                            f"notebooks: {', '.join(declared)}")
        elif declared[nb] is not None:
            names = declared[nb]
            problems += [f"notebooks.{nb}.{key} is not a parameter of {nb}{close_match(str(key), set(names))}; "
                         f"it declares: {', '.join(names) or 'nothing'}" for key in params if key not in names]
    known = {name for params in declared.values() if params is not None for name in params}
    unreadable = [nb for nb, params in declared.items() if params is None]
    for key in profile.defaults:
        if key not in known:
            unchecked = f"; {', '.join(unreadable)} could not be read" if unreadable else ""
            problems.append(f"defaults.{key} is declared by no notebook{close_match(str(key), known)}{unchecked}; "
                            f"notebooks declare: {', '.join(sorted(known))}")
    if problems:
        raise ProfileError(f"profile {profile.path}:\n  - " + "\n  - ".join(problems))


def parameters_for(notebook: Path, profile: Profile, profile_name: str, declared: Mapping | None = None) -> dict:
    """The profile's parameters that ``notebook`` declares (``PROFILE`` is the profile's name)."""
    declared = inspect(notebook) if declared is None else declared
    merged = {"PROFILE": profile_name} | profile.defaults | profile.notebooks.get(notebook.stem, {})
    return {k: v for k, v in merged.items() if k in declared}


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
