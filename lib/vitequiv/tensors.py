"""One way in for tensors: images, embeddings, directions and step lengths as every public function takes them.

Each converter takes a torch tensor or a NumPy array of any floating dtype (NumPy's float64, float16, bfloat16)
and returns a tensor in the computation dtype (the model's, float32 unless it was cast) on the model's device,
after checking its shape and values. Half-precision inputs are widened, never computed in: bfloat16 has 8 bits of
mantissa, so a matcher's small updates (1e-4 of a pixel) would round away. Integer pixels, channels-last (HWC)
layouts, NaNs and pixels outside [0, 1] are refused rather than guessed at, and every error names the argument,
what it got and what is expected (TypeError for the wrong kind of value, ValueError for the wrong shape or values).
"""
from __future__ import annotations

import math
import numbers

import numpy as np
import torch
from torch import Tensor, nn

Value = Tensor | np.ndarray


# ------------------------------------------------------------------------------------------- the model's side


def _tensors_of(model):
    """The model's floating tensors: parameters and buffers of a module, else tensor attributes of a plain object."""
    if isinstance(model, nn.Module):
        yield from model.parameters()
        yield from model.buffers()
    else:
        yield from (v for v in vars(model).values() if isinstance(v, Tensor)) if hasattr(model, "__dict__") else ()


def model_device(model) -> torch.device | None:
    """Where ``model`` computes: its ``device`` attribute, else its first tensor's device (None: unknown)."""
    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    return next((t.device for t in _tensors_of(model)), None)


def model_dtype(model) -> torch.dtype:
    """What ``model`` computes in: its first floating tensor's dtype, float32 when it holds none."""
    return next((t.dtype for t in _tensors_of(model) if t.is_floating_point()), torch.float32)


def model_hw(model) -> tuple[int, int] | None:
    """The (H, W) images ``model`` takes: from its ``input_size`` (square) or ``input_shape`` (3, H, W); None when
    it declares neither (any size)."""
    size, shape = getattr(model, "input_size", None), getattr(model, "input_shape", None)
    if isinstance(size, int) and not isinstance(size, bool):
        return size, size
    if isinstance(shape, tuple) and len(shape) == 3:
        return tuple(shape[1:])
    return None


# ------------------------------------------------------------------------------------------- converters


def _floating(value: object, name: str, expected: str) -> Tensor:
    """``value`` as a floating tensor (NumPy arrays shared where possible), or a TypeError naming ``name``."""
    if isinstance(value, np.ndarray):
        if value.dtype.kind != "f":
            raise TypeError(f"{name} must hold floating-point values, {expected}; got a NumPy array of dtype "
                            f"{value.dtype}{_integer_hint(value.dtype.kind)}")
        native = value.dtype if value.dtype.itemsize <= 8 else np.dtype(np.float64)  # float128: no torch type
        value = torch.from_numpy(np.ascontiguousarray(value, dtype=native.newbyteorder("=")))
    elif not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or a NumPy array of {expected}, got {type(value).__name__}")
    if not value.is_floating_point():
        kind = "c" if value.is_complex() else "b" if value.dtype == torch.bool else "i"
        raise TypeError(f"{name} must hold floating-point values, {expected}; got dtype {value.dtype}"
                        f"{_integer_hint(kind)}")
    return value


def _integer_hint(kind: str) -> str:
    return "; for 8-bit pixels use x.float() / 255 (NumPy: x / 255)" if kind in "ui" else ""


def _check_finite(t: Tensor, name: str) -> None:
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} holds NaN or infinite values; pass finite numbers")


def _refuse_channels_last(t: Tensor, name: str, batch: bool) -> None:
    if t.dim() in (3, 4) and t.shape[-1] == 3 and t.shape[-3] != 3:
        fix = "x.permute(0, 3, 1, 2)" if t.dim() == 4 else "x.permute(2, 0, 1)" + ("[None]" if batch else "")
        raise ValueError(f"{name} has shape {tuple(t.shape)}, which looks channels-last (H, W, 3); vitequiv takes "
                         f"channels first ({'B' if batch else '1'}, 3, H, W): use {fix} (NumPy: the same axes "
                         "with .transpose)")


def _check_hw(t: Tensor, name: str, hw: tuple[int, int] | None) -> None:
    if hw is not None and tuple(t.shape[-2:]) != tuple(hw):
        raise ValueError(f"{name} are {t.shape[-2]} x {t.shape[-1]} px but the model takes {hw[0]} x {hw[1]}; "
                         "resize them (vitequiv.images.resize_center_crop, or load_images(size=...))")


def _check_pixels(t: Tensor, name: str) -> None:
    _check_finite(t, name)
    lo, hi = float(t.min()), float(t.max())
    if lo < 0 or hi > 1:
        hint = " (pixels in 0-255? divide by 255)" if hi > 1.5 else ""
        raise ValueError(f"{name} must have pixels in [0, 1], got values in [{lo:g}, {hi:g}]{hint}")


def as_images(value: Value, name: str = "images", *, device: torch.device | str | None = None,
              dtype: torch.dtype = torch.float32, hw: tuple[int, int] | None = None) -> Tensor:
    """A batch of images (B, 3, H, W) in [0, 1], B >= 1, in ``dtype`` on ``device`` (None: where it is); with
    ``hw`` (see :func:`model_hw`) H and W must equal it.

    A single image (3, H, W) is refused with the fix (``x[None]``): whether a function wants one image or a batch
    is part of its contract, never guessed.
    """
    t = _floating(value, name, "images (B, 3, H, W) in [0, 1]")
    _refuse_channels_last(t, name, batch=True)
    if t.dim() != 4 or t.shape[1] != 3:
        hint = "; one image? add a batch dimension: x[None]" if t.dim() == 3 and t.shape[0] == 3 else ""
        raise ValueError(f"{name} must have shape (B, 3, H, W), got {tuple(t.shape)}{hint}")
    if t.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (shape {tuple(t.shape)}); pass at least one image")
    if t.numel() == 0:
        raise ValueError(f"{name} has no pixels (shape {tuple(t.shape)})")
    _check_hw(t, name, hw)
    t = t.to(device=device, dtype=dtype)
    _check_pixels(t, name)
    return t


def as_image(value: Value, name: str = "x", *, device: torch.device | str | None = None,
             dtype: torch.dtype = torch.float32, hw: tuple[int, int] | None = None) -> Tensor:
    """One image as a batch of one (1, 3, H, W) in [0, 1], from (3, H, W) or (1, 3, H, W); a larger batch is
    refused. With ``hw`` H and W must equal it."""
    t = _floating(value, name, "one image (1, 3, H, W) in [0, 1]")
    _refuse_channels_last(t, name, batch=False)
    t = t.unsqueeze(0) if t.dim() == 3 else t
    if t.dim() != 4 or t.shape[0] != 1 or t.shape[1] != 3 or t.numel() == 0:
        hint = f"; for image i of a batch pass {name}[i:i+1]" if t.dim() == 4 and t.shape[0] > 1 else ""
        raise ValueError(f"{name} must be one image (1, 3, H, W) or (3, H, W), got shape {tuple(t.shape)}{hint}")
    _check_hw(t, name, hw)
    t = t.to(device=device, dtype=dtype)
    _check_pixels(t, name)
    return t


def as_embeddings(value: Value, name: str = "embeddings", *, width: int | None = None, count: int | None = None,
                  device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """Embeddings (B, D), finite, B >= 1; with ``width`` D must equal it, with ``count`` B must."""
    t = _floating(value, name, "embeddings (B, D)")
    if t.dim() != 2 or 0 in t.shape:
        hint = "; one embedding? add a batch dimension: e[None]" if t.dim() == 1 and len(t) else ""
        raise ValueError(f"{name} must be embeddings (B, D) with B, D >= 1, got shape {tuple(t.shape)}{hint}")
    if width is not None and t.shape[1] != width:
        raise ValueError(f"{name} have width {t.shape[1]}, expected {width} (the width they were fitted or "
                         "computed with)")
    if count is not None and t.shape[0] != count:
        raise ValueError(f"{name} hold {t.shape[0]} embeddings, expected {count}")
    t = t.to(device=device, dtype=dtype)
    _check_finite(t, name)
    return t


def _check_directions(t: Tensor, name: str) -> None:
    norms = t.flatten(1).norm(dim=1)  # (n,)
    bad = ~torch.isfinite(norms) | (norms == 0)
    if bad.any():
        i = int(torch.nonzero(bad)[0])
        which = name if len(t) == 1 else f"{name}[{i}]"
        raise ValueError(f"{which} has norm {float(norms[i]):g}: a direction must be finite and non-zero")


def as_direction(value: Value, name: str = "v", *, like: Tensor) -> Tensor:
    """One pixel direction (3, H, W) for the image ``like`` (1, 3, H, W), in its dtype and on its device.

    Taken as (3, H, W), (1, 3, H, W), or flat (3HW,) as a flattened (3, H, W) (the rows of ``Spectrum.V``); any
    other layout, channels-last included, is refused even when it holds the same number of values.
    """
    shape = tuple(like.shape[1:])
    t = _floating(value, name, f"a pixel direction {shape}")
    if tuple(t.shape) not in (shape, (1, *shape), (math.prod(shape),)):
        _refuse_channels_last(t, name, batch=False)
        raise ValueError(f"{name} must be a pixel direction of shape {shape} (or {(1, *shape)}, or flat "
                         f"({math.prod(shape)},)) for an image {tuple(like.shape)}, got {tuple(t.shape)}")
    t = t.to(like).reshape(shape)
    _check_directions(t[None], name)
    return t


def as_directions(value: Value, name: str = "directions", *, like: Tensor) -> Tensor:
    """Pixel directions (n, 3, H, W), n >= 1, each finite and non-zero, for the image ``like`` (1, 3, H, W)."""
    shape = tuple(like.shape[1:])
    t = _floating(value, name, f"pixel directions (n, {', '.join(map(str, shape))})")
    if t.dim() != 4 or tuple(t.shape[1:]) != shape or len(t) == 0:
        _refuse_channels_last(t, name, batch=True)
        raise ValueError(f"{name} must be pixel directions (n, {', '.join(map(str, shape))}) with n >= 1 for an "
                         f"image {tuple(like.shape)}, got {tuple(t.shape)}")
    t = t.to(like)
    _check_directions(t, name)
    return t


def as_floats(value: Value, name: str, *, like: Tensor | None = None) -> Tensor:
    """Finite floating-point values of any shape (the caller checks it), in ``like``'s dtype and on its device, or
    as they are when ``like`` is None (a NumPy array keeps its float dtype)."""
    t = _floating(value, name, "finite floating-point values")
    t = t if like is None else t.to(like)
    _check_finite(t, name)
    return t


def as_lengths(value: object, name: str, *, dtype: torch.dtype = torch.float64,
               device: torch.device | str | None = None, allow_zero: bool = False) -> Tensor:
    """A non-empty 1-D sequence of finite step lengths or sizes (E,), each > 0 (>= 0 with ``allow_zero``)."""
    if isinstance(value, (str, bytes)) or isinstance(value, numbers.Number) and not isinstance(value, bool):
        hint = f"; one value? pass [{value!r}]" if isinstance(value, numbers.Number) else ""
        raise TypeError(f"{name} must be a sequence of numbers, got {value!r}{hint}")
    try:
        t = torch.as_tensor(np.asarray(value.detach().cpu() if isinstance(value, Tensor) else value, dtype=float))
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be a sequence of numbers, got {value!r}") from err
    if t.dim() != 1 or len(t) == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence, got shape {tuple(t.shape)}")
    ok = torch.isfinite(t) & ((t >= 0) if allow_zero else (t > 0))
    if not ok.all():
        raise ValueError(f"every {name} must be finite and {'>= 0' if allow_zero else '> 0'}, "
                         f"got {t.tolist()}")
    return t.to(device=device, dtype=dtype)


def as_positive(value: object, name: str, *, allow_zero: bool = False) -> float:
    """A finite real number > 0 (>= 0 with ``allow_zero``; bools refused), or a TypeError / ValueError naming it."""
    bound = ">= 0" if allow_zero else "> 0"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number {bound}, got {value!r} ({type(value).__name__})")
    if not (math.isfinite(value) and (value >= 0 if allow_zero else value > 0)):
        raise ValueError(f"{name} must be finite and {bound}, got {value!r}")
    return float(value)


def as_count(value: object, name: str, *, minimum: int = 1) -> int:
    """An integer count >= ``minimum`` (bools and floats refused), or a TypeError / ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int >= {minimum}, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value}")
    return int(value)


def image_shape(shape: object, name: str = "shape") -> tuple[int, int, int]:
    """A per-image shape (3, H, W); a batch shape (B, 3, H, W) is refused with the fix (``x.shape[1:]``)."""
    try:
        dims = tuple(as_count(d, name, minimum=0) for d in shape)
    except TypeError as err:
        raise TypeError(f"{name} must be a per-image shape (3, H, W) of ints, got {shape!r}") from err
    if len(dims) == 4:
        raise ValueError(f"{name} must be a per-image shape (3, H, W), got the batch shape {dims}; pass "
                         "x.shape[1:]")
    if len(dims) != 3 or dims[0] != 3 or min(dims) < 1:
        raise ValueError(f"{name} must be a per-image shape (3, H, W) with H, W >= 1, got {dims}")
    return dims


# ------------------------------------------------------------------------------------------- targets


def target_embeddings(model, targets: Value, name: str = "targets", *, pairs: int | None = None,
                      per: str = "sources", device: torch.device | str | None = None) -> Tensor:
    """Targets as embeddings (B, D): embeddings pass through (checked against ``model.embed_dim`` when it declares
    one), images (B, 3, H, W) in [0, 1] are embedded once, without grad. With ``pairs`` the batch must hold that
    many (one per source, or per ``per``). Computed in the model's dtype on ``device`` (default: the model's)."""
    t = _floating(targets, name, "embeddings (B, D) or images (B, 3, H, W)")
    if t.dim() not in (2, 4):
        raise ValueError(f"{name} must be embeddings (B, D) or images (B, 3, H, W), got shape {tuple(t.shape)}")
    if pairs is not None and t.shape[0] != pairs:
        raise ValueError(f"{pairs} {per} but {t.shape[0]} {name}; pass one target per {per.removesuffix('s')}")
    device = model_device(model) if device is None else device
    dtype = model_dtype(model)
    if t.dim() == 4:
        with torch.no_grad():
            return model.embed(as_images(t, name, device=device, dtype=dtype, hw=model_hw(model))).detach()  # (B, D)
    width = getattr(model, "embed_dim", None)
    if isinstance(width, int) and t.shape[1] != width:
        raise ValueError(f"{name} have embedding width {t.shape[1]} but {getattr(model, 'name', 'the model')} "
                         f"embeds into {width} dimensions; pass target embeddings (B, {width}) or target images")
    return as_embeddings(t, name, device=device, dtype=dtype).detach()
