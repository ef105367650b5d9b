"""Mixed precision: run a model's forward under bfloat16 autocast where the hardware does bfloat16 natively.

Matching spends almost all its time in forward+backward passes of the ViT. CPUs with AMX and current GPUs run
bfloat16 matrix products at about twice the float32 rate (measured on a 2-core AMX Intel: 0.45-0.55x the float32
time per pass, gradient cosine 0.9995 to float32); a CPU with AVX512-BF16 alone gains less (a 2-core AMD EPYC:
0.67x), still enough to use it. Autocast keeps what is sensitive in float32 (layer norms, softmax
statistics, the loss computed from ``emb.float()``), and the pixels, the perturbation and the step rule's state
never leave float32: only the model's matrix products change.

It is for *searching*, never for *reporting*: every number a user reads (the final cosine, PSNR, SSIM, the 8-bit
check) is computed in float32, and Jacobians, spectra, linearity and Lipschitz estimates never use it.

``precision`` is one of :data:`PRECISIONS`: ``"float32"``, ``"bfloat16"`` (refused where the device lacks it),
or ``"auto"`` (bfloat16 where supported, else float32, said once).
"""
from __future__ import annotations

import contextlib
import functools
import warnings
from pathlib import Path
from typing import Literal

import torch

Precision = Literal["float32", "bfloat16"]
PRECISIONS = ("auto", "float32", "bfloat16")
_CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # Linux /proc/cpuinfo flags of native bfloat16 matrix products


@functools.cache
def _cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:  # not Linux: no cheap way to know, so assume not (float32 is always correct)
        return False
    return any(flag in flags for flag in _CPU_BF16_FLAGS)


def bf16_supported(device: torch.device | str) -> bool:
    """Whether ``device`` runs bfloat16 matrix products natively (a CPU with AVX512-BF16/AMX, or such a GPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return device.type == "cpu" and _cpu_has_bf16()


@functools.cache
def _say_float32_once(device_type: str) -> None:
    warnings.warn(f"precision='auto': this {device_type.upper()} has no native bfloat16, so matching runs in float32 "
                  "(correct, about twice as slow as on hardware with bfloat16)", stacklevel=3)


def resolve_precision(precision: str, device: torch.device | str) -> Precision:
    """``precision`` ("auto", "float32" or "bfloat16") as the one that will run on ``device``."""
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(map(repr, PRECISIONS))}, got {precision!r}")
    device = torch.device(device)
    supported = bf16_supported(device)
    if precision == "bfloat16" and not supported:
        raise ValueError(f"precision='bfloat16' needs native bfloat16 on the {device.type} device (a CPU with "
                         "AVX512-BF16 or AMX, or a GPU that has it); use precision='auto' or 'float32'")
    if precision == "auto":
        if not supported:
            _say_float32_once(device.type)
        return "bfloat16" if supported else "float32"
    return precision


def autocast(precision: Precision, device: torch.device | str) -> contextlib.AbstractContextManager:
    """The context a model's forward runs in: bfloat16 autocast, or nothing for float32."""
    if precision == "float32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)


def float32_only(fn):
    """Run ``fn`` with autocast off, whatever context it is called in: Jacobians, spectra, linearity and Lipschitz
    estimates measure differences that bfloat16's three significant digits would swamp."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with contextlib.ExitStack() as stack:
            stack.enter_context(torch.autocast("cpu", enabled=False))
            if torch.cuda.is_available():
                stack.enter_context(torch.autocast("cuda", enabled=False))
            return fn(*args, **kwargs)

    return wrapper
