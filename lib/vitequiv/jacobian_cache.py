"""Full Jacobians kept on disk, so that notebooks measuring the same model at the same photo compute it once.

A (384, 3·224²) Jacobian of the embedded model costs about 20 s on a 2-core CPU and 231 MB; notebooks 04, 05 and
07 all need it at the same photos. :func:`vitequiv.jacobian` with ``cache=True`` looks here first.

An entry is keyed by everything that determines the matrix: a digest of the model (the source of its vitequiv
classes, every module's plain settings, every weight and buffer), the image's bytes, the dtype, the device type
and the torch and timm versions. So a stale entry is never read: a changed model or image is a different key, and
deleting ``data/cache/jacobians/`` only costs time. A model that cannot be digested (a plain object, a class
without source) is simply not cached. Entries are written atomically, with the sha256 of the payload's exact bytes
in their header; an entry that is unreadable, truncated, of the wrong shape or whose bytes no longer match that
checksum (finite garbage included) is recomputed and replaced, said once in a warning naming the file, and a full
disk costs the cache, never the result.
"""
from __future__ import annotations

import hashlib
import inspect
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from .paths import atomic_path, cache_dir

FORMAT = "1"  # bump when the stored layout changes (it is part of the key)
CHECKSUM = "sha256"  # header metadata: sha256 of the payload's bytes; an entry without it is recomputed
_PLAIN = (bool, int, float, str, tuple, type(None))


def folder() -> Path:
    return cache_dir() / "jacobians"


def model_digest(model) -> str | None:
    """A digest of what ``model.embed`` computes, or None when it cannot be vouched for (not an ``nn.Module``, or
    a vitequiv class whose source cannot be read)."""
    if getattr(model, "is_model_embedding", False):  # a BlockEmbedding that computes exactly model.embed
        return model_digest(model.model)
    if not isinstance(model, nn.Module):
        return None
    import timm

    h = hashlib.blake2b(digest_size=20)
    h.update(f"torch {torch.__version__} timm {timm.__version__}".encode())
    for name, module in model.named_modules():
        cls = type(module)
        h.update(f"{name}:{cls.__module__}.{cls.__qualname__}".encode())
        if cls.__module__.startswith("vitequiv"):
            try:
                h.update(inspect.getsource(cls).encode())
            except (OSError, TypeError):
                return None
        plain = sorted((k, repr(v)) for k, v in vars(module).items() if not k.startswith("_") and isinstance(v, _PLAIN))
        h.update(repr(plain).encode())
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}{tuple(t.shape)}{t.dtype}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def key(model, x: Tensor) -> str | None:
    """The entry name for the Jacobian of ``model`` at one image ``x`` (1, 3, H, W), or None (not cacheable)."""
    digest = model_digest(model)
    if digest is None:
        return None
    image = x.detach().cpu().contiguous()
    h = hashlib.blake2b(digest_size=20)
    h.update(f"{FORMAT} {digest} {x.device.type} {x.dtype} {tuple(x.shape)}".encode())
    h.update(image.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _path(entry: str) -> Path:
    return folder() / f"{entry}.safetensors"


def has(model, x: Tensor) -> bool:
    """Whether an entry for the Jacobian of ``model`` at ``x`` is stored (it may still prove unreadable)."""
    entry = key(model, x)
    return entry is not None and _path(entry).is_file()


def payload_sha256(J: Tensor) -> str:
    """sha256 of the exact bytes of ``J`` (C order, on the CPU), as stored in an entry's header."""
    return hashlib.sha256(J.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes()).hexdigest()


def load(entry: str, x: Tensor) -> Tensor | None:
    """The stored Jacobian (D, P) for ``entry`` on x's device, or None if there is none or it is unusable (said)."""
    from safetensors import SafetensorError, safe_open

    path = _path(entry)
    if not path.is_file():
        return None
    J, why = None, None
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            recorded = (f.metadata() or {}).get(CHECKSUM)
            J = f.get_tensor("jacobian") if "jacobian" in f.keys() else None
    except (OSError, SafetensorError, RuntimeError, ValueError) as err:
        J, why = None, f"unreadable ({err})"
    else:
        if J is None:
            why = "not a Jacobian of this image"
        elif J.dim() != 2 or J.shape[1] != x.numel() or J.dtype != x.dtype:
            J, why = None, f"shape {tuple(J.shape)} {J.dtype}, not (D, {x.numel()}) {x.dtype}"
        elif recorded is None:
            J, why = None, "without a checksum of its payload"
        elif payload_sha256(J) != recorded:
            J, why = None, "damaged (its payload's sha256 differs from the one in its header)"
        elif not torch.isfinite(J).all():
            J, why = None, "holds non-finite values"
    if J is None:
        warnings.warn(f"cached Jacobian {path} is {why}: computing it again", stacklevel=3)
        return None
    return J.to(x.device)


def save(entry: str, J: Tensor) -> None:
    """Store ``J`` under ``entry`` (atomically, with the sha256 of its bytes in the header); a failed write (a full
    disk) is said and costs only the cache."""
    from safetensors.torch import save_file

    path = _path(entry)
    payload = J.detach().cpu().contiguous()
    try:
        with atomic_path(path) as tmp:
            save_file({"jacobian": payload}, str(tmp), metadata={"format": FORMAT, CHECKSUM: payload_sha256(payload)})
    except OSError as err:
        warnings.warn(f"the Jacobian could not be cached in {path.parent} ({err}); it was computed all the same",
                      stacklevel=3)
