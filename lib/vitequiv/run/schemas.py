"""The JSON files the run machinery reads, the shape each must have, and the one reader that checks it.

Records on disk are untrusted input: a file may be half-written by a killed process, edited by hand or left by an
older version. :func:`read_json` returns ``(data, "")`` only for a file that parses *and* has the expected shape,
else ``(None, what is wrong)``, naming the file and the first field that does not fit; callers treat such a file
as stale (the run goes again, the index says why), never as a crash.

A shape is a type or a tuple of types (``None`` among them: the field may be null or absent), a mapping of field
names to shapes (other fields are allowed), :class:`ListOf`, :class:`MapOf` or :class:`OneOf`.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .records import RunStatus

NUMBER = (int, float)
_NAMES = {"str": "a string", "dict": "a JSON object", "int": "an integer", "float": "a number", "list": "a list",
          "bool": "true or false"}


@dataclass(frozen=True)
class ListOf:
    """A list whose every item has ``item``'s shape."""

    item: Any


@dataclass(frozen=True)
class MapOf:
    """A mapping from strings to values of ``value``'s shape."""

    value: Any


@dataclass(frozen=True)
class OneOf:
    """One of ``values`` (or null where ``optional``)."""

    values: tuple
    optional: bool = False


def _describe(value: Any) -> str:
    text = json.dumps(value, default=str)
    return f"{type(value).__name__} {text[:40] + '...' if len(text) > 40 else text}"


def problem(value: Any, shape: Any, where: str = "") -> str:
    """"" when ``value`` has ``shape``, else what does not fit, e.g. ``'run.status' is null, expected ...``."""
    name = f"'{where}'" if where else "the file"
    if isinstance(shape, Mapping):
        if not isinstance(value, Mapping):
            return f"{name} is {_describe(value)}, expected a JSON object"
        for key, inner in shape.items():
            found = problem(value.get(key), inner, f"{where}.{key}" if where else key)
            if found:
                return found
        return ""
    if isinstance(shape, ListOf):
        if not isinstance(value, list):
            return f"{name} is {_describe(value)}, expected a list"
        return next((p for i, item in enumerate(value) if (p := problem(item, shape.item, f"{where}[{i}]"))), "")
    if isinstance(shape, MapOf):
        if not isinstance(value, Mapping):
            return f"{name} is {_describe(value)}, expected a JSON object"
        return next((p for key, item in value.items() if (p := problem(item, shape.value, f"{where}.{key}"))), "")
    if isinstance(shape, OneOf):
        if (value is None and shape.optional) or (isinstance(value, str) and value in shape.values):
            return ""
        return f"{name} is {_describe(value)}, expected one of {', '.join(map(str, shape.values))}"
    alternatives = shape if isinstance(shape, tuple) else (shape,)
    if value is None and None in alternatives:
        return ""
    composite = [a for a in alternatives if a is not None and not isinstance(a, type)]
    classes = tuple(a for a in alternatives if isinstance(a, type))
    if isinstance(value, classes) and not (isinstance(value, bool) and bool not in classes):
        return ""
    found = [problem(value, a, where) for a in composite]
    if composite and not all(found):
        return ""
    if found:
        return found[0]
    expected = " or ".join("null" if a is None else _NAMES.get(a.__name__, f"a {a.__name__}") for a in alternatives)
    return f"{name} is {_describe(value)}, expected {expected}"


def read_json(path: Path, shape: Any = dict) -> tuple[Any, str]:
    """(the JSON in ``path``, "") if it parses and has ``shape``, else (None, what is wrong with it)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeError, ValueError, RecursionError) as err:
        return None, f"{path.name} cannot be read ({type(err).__name__}: {err})"
    found = problem(data, shape)
    return (data, "") if not found else (None, f"{path.name} does not have the expected shape: {found}")


STATUSES = tuple(s.value for s in RunStatus)
# A run as the run record (<out>/.runs/<notebook>.json) and the manifest's "run" entry hold it.
RUN = {"run_id": (str, None), "status": OneOf(STATUSES), "profile": (str, None), "parameters": (dict, None),
       "started": (str, None), "finished": (str, None), "seconds": (*NUMBER, None), "error": (str, None),
       "vitequiv_version": (str, None), "pid": (int, None), "host": (str, None), "combination": (str, None)}
RUN_RECORD = {**RUN, "run_id": str}
_OUTPUT = {"files": ListOf(str), "caption": (str, None)}
# A claim as vq.Claim.to_record writes it (vitequiv.claims); manifests from before issue 29 hold only the first three.
_CLAIM_PART = {"paper": (str, None), "ours": (str, None), "verdict": (str, None), "statement": (str, None),
               "statistic": (str, None), "value": (*NUMBER, None), "n": (int, None), "low": (*NUMBER, None),
               "high": (*NUMBER, None), "method": (str, None), "threshold": (*NUMBER, None),
               "direction": (OneOf((">=", "<="), optional=True))}
_CLAIM = {**_CLAIM_PART, "parts": (ListOf(_CLAIM_PART), None)}
# <out>/<notebook>/manifest.json, as vq.Output writes it and the runner completes it.
MANIFEST = {"notebook": (str, None), "profile": (str, None), "run_id": (str, None), "parameters": (dict, None),
            "vitequiv_version": (str, None), "library_versions": (MapOf((str, None)), None), "created": (str, None),
            "figures": MapOf(_OUTPUT), "tables": MapOf(_OUTPUT), "claims": MapOf(_CLAIM), "run": ({**RUN}, None)}
# A manifest as the kernel leaves it in a staging folder (the runner adds "run" and any list it lacks).
STAGED_MANIFEST = {**MANIFEST, "figures": (MapOf(_OUTPUT), None), "tables": (MapOf(_OUTPUT), None),
                   "claims": (MapOf(_CLAIM), None)}
# <out>/.runs/<notebook>.key.json (vitequiv.run.cache).
CACHE_KEY = {"run_id": str, "finished": (str, None), "inputs": dict, "environment": {"weights": MapOf(str)},
             "outputs": (MapOf(str), None)}
# <out>/sweeps/<name>/sweep.json (vitequiv.run.sweep_report).
SWEEP = {"profile": (str, None), "swept": (MapOf(list), None), "notebooks": (ListOf(str), None),
         "generated": (str, None), "executor": (str, None), "counts": (MapOf(int), None), "files": (MapOf(str), None)}
# <out>/index.json, as the book reads it (vitequiv.run.index writes it).
_ENTRY = {"notebook": str, "status": (str, None), "profile": (str, None),  # status: book_run.from_index checks it
          "parameters": (dict, None), "seconds": (*NUMBER, None), "started": (str, None), "finished": (str, None),
          "error": (str, None), "vitequiv_version": (str, None), "library_versions": (MapOf((str, None)), None),
          "outputs_run": ({"parameters": (dict, None)}, None), "outputs_profile": (str, None),
          "published": (bool, None), "outputs_from_last_run": (bool, None), "notebook_file": (str, None),
          "figures": (ListOf({"name": str, **_OUTPUT}), None), "tables": (ListOf({"name": str, **_OUTPUT}), None),
          "claims": (ListOf({"claim": str, **_CLAIM}), None)}
INDEX = {"notebooks": ListOf(_ENTRY)}
