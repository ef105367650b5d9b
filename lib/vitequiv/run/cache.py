"""Nothing computed twice: what determines a finished run, recorded beside its run record, checked before the next.

A runner run of a notebook is determined by its *inputs*, the notebook's code cells (sources and which one is
tagged ``parameters``; not outputs, not Markdown) and the parameters passed, and by the *environment* it ran
in: vitequiv's version and a digest of the library's source files, the versions of Python and the key
libraries, the device kind (``cpu`` or ``cuda:<device name>``), and the identity of the weights of every model
that a parameter names (the sha256 sidecar of the embedded weights; for a hub model the Hugging Face cache's
resolved commit of its weights file). After a finished ``ok`` run the runner writes both into
``<root>/.runs/<notebook>.key.json``; the next run with equal inputs, in an equal environment, is skipped.

The library's source is hashed because an editable install changes without a version bump, and a result made
by older code must not pass for one made by today's. What the key does not see: files a notebook reads from
outside the library and its parameters (another notebook's outputs), environment variables, and models whose
weights come from neither the embedded file nor timm's hub entries (an open_clip text tower is known by its
name only). A run made while a named model's weights were unavailable is never reused, because its result
depended on that absence. The key also records the sha256 of the published manifest and of every file it lists:
a published output changed or damaged since (a claim's verdict edited, a table cut short) is not trusted, and the
notebook runs again, saying which file.
"""
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..environment import library_versions
from ..models import EMBEDDED, RANDOM_PREFIX
from ..paths import KEY_SUFFIX, RUNS, atomic_path
from ..version import __version__
from ..weights import checksum_path, sha256_of, weights_path
from .records import run_record_path
from .schemas import CACHE_KEY, MANIFEST, RUN_RECORD, read_json

SCHEMA = 1
UNAVAILABLE = "unavailable"  # the start of a weights identity that names no weights
_TIMM_NAME = re.compile(r"[a-z][a-z0-9_]*(\.[a-z0-9_]+)?")  # a string that may be a timm model name


def key_path(root: Path, notebook: str) -> Path:
    """``<root>/.runs/<notebook>.key.json``: what determined the notebook's last finished ok run."""
    return root / RUNS / f"{notebook}{KEY_SUFFIX}"


def _digest(data: Any) -> str:
    return "sha256:" + hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def code_digest(notebook_text: str) -> str:
    """sha256 of a notebook's code cells (source, and whether tagged ``parameters``), from its JSON text."""
    cells = json.loads(notebook_text).get("cells", [])
    code = []
    for cell in cells:
        if cell.get("cell_type") == "code":
            source = cell.get("source", "")
            source = "".join(source) if isinstance(source, list) else source
            code.append([source, "parameters" in (cell.get("metadata", {}).get("tags") or [])])
    return _digest(code)


def library_digest() -> str:
    """sha256 over the path and bytes of every ``.py`` file of the imported vitequiv package (fresh each call:
    a kernel started later imports the files on disk now, whatever this process imported)."""
    package = Path(__file__).resolve().parents[1]  # lib/vitequiv/run/cache.py -> lib/vitequiv
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes() + b"\0")
    return "sha256:" + digest.hexdigest()


def strings_in(value: Any) -> set[str]:
    """Every string inside a parameter value (lists and mappings searched): the candidates for model names."""
    if isinstance(value, str):
        return {value}
    if isinstance(value, Mapping):
        return set().union(*(strings_in(v) for v in value.values()), set())
    if isinstance(value, (list, tuple)):
        return set().union(*(strings_in(v) for v in value), set())
    return set()


def _embedded_identity() -> str:
    sidecar = checksum_path(weights_path())
    try:
        recorded = sidecar.read_text(encoding="ascii").split()
    except (OSError, UnicodeError):
        return f"{UNAVAILABLE}: the embedded weights are not built ({sidecar} is missing)"
    return f"sha256:{recorded[0]}" if recorded else f"{UNAVAILABLE}: {sidecar} is empty"


def _hub_identity(name: str) -> str | None:
    """The cached weights of timm model ``name`` (``hf:<repo>@<commit>/<file>``); None if timm knows no such
    pretrained model. Only the local cache is read, never the network."""
    import timm

    base = name.partition(".")[0]
    if not timm.is_model(base):
        return None
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None:
        return None
    if cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache

        repo, _, revision = cfg.hf_hub_id.partition("@")
        files = [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]
        for filename in [*files, "open_clip_model.safetensors", "open_clip_pytorch_model.bin"]:
            path = try_to_load_from_cache(repo, filename, revision=revision or None)
            if isinstance(path, str):
                parts = Path(path).parts
                commit = parts[parts.index("snapshots") + 1] if "snapshots" in parts else "unknown commit"
                return f"hf:{repo}@{commit}/{filename}"
        return f"{UNAVAILABLE}: {repo} is not in the Hugging Face cache"
    if cfg.url:
        import torch

        file = Path(torch.hub.get_dir()) / "checkpoints" / Path(cfg.url).name
        return f"file:{file.name} ({file.stat().st_size} bytes)" if file.is_file() else f"{UNAVAILABLE}: {cfg.url}"
    return None


def weights_identity(name: str) -> str | None:
    """What identifies the weights of the model ``name`` names, or None when ``name`` is not a pretrained model
    (a ``random:`` control is fully determined by its name, the seed and timm's version, all in the key)."""
    if name == EMBEDDED:
        return _embedded_identity()
    if name.startswith(RANDOM_PREFIX) or not _TIMM_NAME.fullmatch(name):
        return None
    return _hub_identity(name)


def device_kind() -> str:
    """``cuda:<device name>`` when CUDA is available, else ``mps`` or ``cpu``: what the notebooks run on."""
    import torch

    if torch.cuda.is_available():
        return f"cuda:{torch.cuda.get_device_name()}"
    return "mps" if torch.backends.mps.is_available() else "cpu"


def environment(candidates: Iterable[str] = ()) -> dict[str, Any]:
    """This process's environment as a key records it; ``weights`` for those ``candidates`` that name models."""
    versions = {k: v for k, v in library_versions().items() if k != "device"}
    weights = {name: identity for name in sorted(set(candidates)) if (identity := weights_identity(name))}
    return {"vitequiv": __version__, "library_source": library_digest(), "libraries": versions,
            "device": device_kind(), "weights": weights}


def inputs(notebook_text: str, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """The inputs part of a key: the code cells' digest and the parameters passed."""
    return {"code": code_digest(notebook_text), "parameters": json.loads(json.dumps(dict(parameters), default=str))}


def for_task(env: Mapping[str, Any], candidates: Iterable[str]) -> dict[str, Any]:
    """``env`` narrowed to the weights of one task's model names (an environment holds those of many)."""
    names = set(candidates)
    return {**env, "weights": {k: v for k, v in env["weights"].items() if k in names}}


def _listed(manifest: Mapping) -> list[str]:
    """The files a published manifest lists (figures and tables), relative to the notebook's folder."""
    return [f for kind in ("figures", "tables") for entry in manifest.get(kind, {}).values()
            for f in entry.get("files", [])]


def output_checksums(root: Path, notebook: str) -> dict[str, str]:
    """sha256 of ``<root>/<notebook>/manifest.json`` and of every file it lists, by path relative to that folder
    (those that exist; a manifest that cannot be read gives only its own)."""
    folder = root / notebook
    manifest, _ = read_json(folder / "manifest.json", MANIFEST)
    names = ["manifest.json", *(_listed(manifest) if manifest else [])]
    return {name: sha256_of(folder / name) for name in names if (folder / name).is_file()}


def write_key(root: Path, notebook: str, run_id: str, finished: str, task_inputs: Mapping,
              env: Mapping) -> Path:
    """Record what determined the finished ok run ``run_id`` of ``notebook`` (see the module docstring), and the
    checksums of what it published."""
    record = {"schema": SCHEMA, "notebook": notebook, "run_id": run_id, "finished": finished,
              "digest": _digest({"inputs": task_inputs, "environment": env}),
              "inputs": dict(task_inputs), "environment": dict(env),
              "outputs": output_checksums(root, notebook)}
    path = key_path(root, notebook)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(record, indent=2, sort_keys=True))
    return path


def remove_key(root: Path, notebook: str) -> None:
    key_path(root, notebook).unlink(missing_ok=True)


@dataclass(frozen=True)
class Lookup:
    """Whether a finished run can stand in for a new one: ``hit``; else ``reason`` says why it cannot."""

    hit: bool
    reason: str = ""
    finished: str = ""  # when the reusable run finished
    seconds: float = 0.0  # how long it took
    figures: int = 0


def _changed(old: Mapping, new: Mapping) -> str:
    """Which parts of a key differ, in words."""
    parts = []
    for name in sorted(set(old) | set(new)):
        if old.get(name) == new.get(name):
            continue
        if isinstance(old.get(name), Mapping) and isinstance(new.get(name), Mapping):
            keys = sorted(k for k in set(old[name]) | set(new[name]) if old[name].get(k) != new[name].get(k))
            parts.append(f"{name} ({', '.join(map(str, keys))})")
        else:
            parts.append(name)
    return ", ".join(parts)


def lookup(root: Path, notebook: str, task_inputs: Mapping, environments: Sequence[Mapping]) -> Lookup:
    """Whether ``<root>/<notebook>/`` holds a finished ok run made from ``task_inputs`` in one of
    ``environments`` (the places the run would go now), with every file its manifest lists."""
    key_file = key_path(root, notebook)
    if not key_file.exists():
        return Lookup(False, "no finished ok run on record")
    key, problem = read_json(key_file, CACHE_KEY)
    if key is None:
        return Lookup(False, f"its cache record {problem}")
    run, problem = read_json(run_record_path(root, notebook), RUN_RECORD)
    if run is None:
        return Lookup(False, f"its run record {problem}")
    manifest, problem = read_json(root / notebook / "manifest.json", MANIFEST)
    if manifest is None:
        return Lookup(False, f"its published manifest {problem}")
    if run.get("run_id") != key["run_id"]:
        return Lookup(False, f"its last run is not the one {key_file.name} describes")
    if run.get("status") != "ok":
        return Lookup(False, f"its last run is {run.get('status')}")
    published = manifest.get("run") or {}
    if published.get("run_id") != key["run_id"]:
        return Lookup(False, "its published outputs are not from that run")
    missing = [f for f in _listed(manifest) if not (root / notebook / f).is_file()]
    if missing:
        return Lookup(False, f"its published outputs lack {', '.join(missing[:3])}")
    recorded = key.get("outputs")
    if not recorded:
        return Lookup(False, f"{key_file.name} holds no checksums of its published outputs")
    unlisted = [f for f in ["manifest.json", *_listed(manifest)] if f not in recorded]
    if unlisted:
        return Lookup(False, f"its published outputs list {', '.join(unlisted[:3])}, which that run did not write")
    changed = [f for f, sha in recorded.items()
               if not (root / notebook / f).is_file() or sha256_of(root / notebook / f) != sha]
    if changed:
        return Lookup(False, f"its published {', '.join(changed[:3])} changed since that run (sha256 differs)")
    if key["inputs"] != dict(task_inputs):
        return Lookup(False, f"its {_changed(key['inputs'], task_inputs)} changed")
    unavailable = [k for k, v in key["environment"].get("weights", {}).items() if str(v).startswith(UNAVAILABLE)]
    if unavailable:
        return Lookup(False, f"it ran without the weights of {', '.join(unavailable)}")
    if not any(key["environment"] == dict(env) for env in environments):
        closest = environments[0] if environments else {}
        return Lookup(False, f"its environment changed: {_changed(key['environment'], closest)}")
    seconds = run.get("seconds") if isinstance(run.get("seconds"), (int, float)) else 0.0
    return Lookup(True, finished=str(run.get("finished")), seconds=seconds, figures=len(manifest["figures"]))
