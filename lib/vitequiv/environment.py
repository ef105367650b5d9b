"""What a run ran on: library versions and the device, recorded beside the figures it made."""
from __future__ import annotations

import importlib.metadata
import platform

import torch

LIBRARIES = ("vitequiv", "torch", "torchvision", "timm", "numpy", "scikit-image", "scikit-learn", "matplotlib",
             "seaborn", "papermill", "safetensors", "onnx")


def library_versions() -> dict[str, str]:
    """Python, the key libraries (``not installed`` where absent) and the compute device."""
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    versions["device"] = (torch.cuda.get_device_name() if torch.cuda.is_available()
                          else f"cpu ({torch.get_num_threads()} threads)")
    return versions
