"""What a run ran on and when: library versions, the device and the time stamp, recorded beside its figures."""
from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import platform
import re
from datetime import datetime, timezone
from pathlib import Path

import torch

from .precision import bf16_supported

# The lock (`make lock`): uv.lock, and the same pins exported with hashes for pip; both beside pyproject.toml of the
# checkout this code runs from (absent from a non-editable install).
CHECKOUT = Path(__file__).resolve().parents[2]
LOCK = CHECKOUT / "uv.lock"
LOCK_REQUIREMENTS = CHECKOUT / "requirements.lock.txt"

LIBRARIES = ("vitequiv", "torch", "torchvision", "timm", "numpy", "scikit-image", "scikit-learn", "matplotlib",
             "seaborn", "papermill", "safetensors", "onnx")


def library_versions() -> dict[str, str]:
    """Python, the key libraries (``not installed`` where absent), the compute device and the precision that
    matching runs in on it."""
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    versions["device"] = (torch.cuda.get_device_name() if torch.cuda.is_available()
                          else f"cpu ({torch.get_num_threads()} threads)")
    # what precision="auto" (matching's default) runs here: part of run records, manifests and cache keys
    versions["matching precision"] = "bfloat16" if bf16_supported("cuda" if torch.cuda.is_available() else "cpu") \
        else "float32"
    versions["lock"] = lock_digest()  # which uv.lock the environment was installed from (the cache key holds it)
    return versions


@functools.cache
def lock_digest(lock: Path = LOCK) -> str:
    """The lock's identity: ``sha256:`` and the first 12 hex digits of uv.lock's digest; ``none`` without one."""
    try:
        return "sha256:" + hashlib.sha256(lock.read_bytes()).hexdigest()[:12]
    except OSError:
        return "none"


_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$")


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked_versions(requirements: Path = LOCK_REQUIREMENTS) -> dict[str, str]:
    """The lock's pins that apply to this Python and platform (their markers hold): normalized name -> version."""
    from packaging.markers import Marker

    pins = {}
    for line in requirements.read_text().splitlines():
        if (m := _PIN.match(line)) and (m[3] is None or Marker(m[3]).evaluate()):
            pins[_normal(m[1])] = m[2]
    return pins


@functools.cache
def lock_mismatches(requirements: Path = LOCK_REQUIREMENTS) -> tuple[str, ...]:
    """The locked packages installed here at another version than the lock's, as ``name installed (lock version)``;
    empty when the environment matches the lock, or when there is no lock to compare with. Missing packages are
    not counted (``make figures`` installs only the runtime part of the lock)."""
    try:
        pins = locked_versions(requirements)
    except OSError:
        return ()
    installed: dict[str, str] = {}
    for d in importlib.metadata.distributions():  # the first on sys.path, as imports find it (setuptools appends
        if d.metadata["Name"]:                     # its _vendor folder, whose older copies must not count)
            installed.setdefault(_normal(d.metadata["Name"]), d.version)
    return tuple(f"{name} {installed[name]} (lock {version})" for name, version in sorted(pins.items())
                 if name in installed and installed[name] != version)


def now() -> str:
    """The time in ISO 8601, UTC, to the second: the stamp of manifests and run records."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
