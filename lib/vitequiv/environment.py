"""What a run ran on and when: library versions, the device and the time stamp, recorded beside its figures."""
from __future__ import annotations

import importlib.metadata
import platform
from datetime import datetime, timezone

import torch

from .precision import bf16_supported

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
    return versions


def now() -> str:
    """The time in ISO 8601, UTC, to the second: the stamp of manifests and run records."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
