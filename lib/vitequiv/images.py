"""Real photos that work offline (they ship inside scikit-image, scikit-learn and matplotlib), the user's own
images, and labeled sets built from them (:func:`labeled_set`: views of the photos, or LFW faces).

Everything comes out as float tensors in [0, 1], shape (N, 3, S, S): the shorter side resized to S
(antialiased bicubic), then center-cropped. Image files are read as they mean themselves (see
:func:`read_image`): every mode Pillow opens maps to [0, 1] by its declared range, the EXIF orientation is
applied, transparency is composited on white, and big files are downscaled while they are decoded. Every file
that cannot be read raises an error that names it.
"""
from __future__ import annotations

import difflib
import errno
import functools
import io
import math
import numbers
import os
import re
import struct
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}

# A file is decoded to at least REDUCING_GAP times the requested size, then the antialiased bicubic resize
# finishes the job: the same two-step scheme as Pillow's thumbnail().
REDUCING_GAP = 2

# 8-bit modes: the mode each is converted to before its values are read (then divided by 255).
_EIGHT_BIT_TARGET = {
    "1": "L", "L": "L", "LA": "LA", "P": "RGB", "PA": "RGBA", "RGB": "RGB", "RGBA": "RGBA",
    "CMYK": "RGB", "YCbCr": "RGB", "LAB": "RGB",
}
_WITH_TRANSPARENCY = {"L": "LA", "P": "RGBA", "RGB": "RGBA"}  # when the file declares a transparent color
_HIGH_DEPTH = {"I;16", "I;16B", "I;16L", "I;16N", "I", "F"}


class ImageLoadError(ValueError):
    """An image file exists but cannot be read as an image."""


@dataclass(frozen=True)
class BundledPhoto:
    loader: Callable[[], torch.Tensor]  # () -> (3, H, W) in [0, 1]
    credit: str  # source and license
    subject: str  # what it shows: photos of different subjects are unrelated (see unrelated_pairs)


def _skimage(name: str, index: int | None = None) -> Callable[[], torch.Tensor]:
    def load() -> torch.Tensor:
        from skimage import data

        image = getattr(data, name)()
        return to_unit_float(image[index] if index is not None else image)

    return load


def _sklearn(filename: str) -> Callable[[], torch.Tensor]:
    def load() -> torch.Tensor:
        from sklearn.datasets import load_sample_image

        return to_unit_float(load_sample_image(filename))

    return load


def _grace_hopper() -> torch.Tensor:
    from matplotlib import cbook

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        return read_image(f, "grace_hopper.jpg")


BUNDLED: dict[str, BundledPhoto] = {
    "astronaut": BundledPhoto(_skimage("astronaut"), "Eileen Collins, NASA; public domain (scikit-image)", "person"),
    "cat": BundledPhoto(_skimage("chelsea"), "Chelsea the cat, Stefan van der Walt; CC0 (scikit-image)", "animal"),
    "coffee": BundledPhoto(_skimage("coffee"), "Cup of coffee, Rachel Michetti; CC0 (scikit-image)", "food"),
    "rocket": BundledPhoto(_skimage("rocket"), "Falcon 9 launch, SpaceX; public domain (scikit-image)", "vehicle"),
    "motorcycle_left": BundledPhoto(_skimage("stereo_motorcycle", 0),
                                    "Middlebury stereo 2014, left view (scikit-image)", "vehicle"),
    "motorcycle_right": BundledPhoto(_skimage("stereo_motorcycle", 1),
                                     "Middlebury stereo 2014, right view (scikit-image)", "vehicle"),
    "camera": BundledPhoto(_skimage("camera"), "Cameraman (gray), scikit-image; CC0", "person"),
    "hubble": BundledPhoto(_skimage("hubble_deep_field"),
                           "Hubble eXtreme Deep Field, NASA; public domain (scikit-image)", "sky"),
    "retina": BundledPhoto(_skimage("retina"), "Human retina, Häggström & Ericsson; CC0 (scikit-image)", "medical"),
    "cells": BundledPhoto(_skimage("immunohistochemistry"),
                          "Immunohistochemical staining, NIH; public domain (scikit-image)", "medical"),
    "china": BundledPhoto(_sklearn("china.jpg"), "Chinese temple; CC BY 2.0, see scikit-learn's README", "building"),
    "flower": BundledPhoto(_sklearn("flower.jpg"), "Flower; CC BY 2.0, see scikit-learn's README", "plant"),
    "grace_hopper": BundledPhoto(_grace_hopper, "Grace Hopper, US Navy; public domain (matplotlib sample data)",
                                 "person"),
}

# Bundled photos that repeat another one: the right stereo view embeds at cosine 0.99 to the left one, unmatched.
NEAR_DUPLICATES = ("motorcycle_right",)


def unrelated_pairs(n_pairs: int, seed: int = 0) -> list[tuple[str, str]]:
    """``n_pairs`` (source, target) names of bundled photos of different subjects (near-duplicates apart), drawn
    with ``seed``, no pair twice: the "unrelated image" of the paper, decided by what the photos show, not by a
    model."""
    names = [n for n in BUNDLED if n not in NEAR_DUPLICATES]
    pairs = [(s, t) for s in names for t in names if BUNDLED[s].subject != BUNDLED[t].subject]
    if not 1 <= n_pairs <= len(pairs):
        raise ValueError(f"n_pairs must be 1 to {len(pairs)} (the unrelated pairs of bundled photos), got {n_pairs}")
    chosen = np.random.default_rng(seed).choice(len(pairs), size=n_pairs, replace=False)
    return [pairs[k] for k in chosen]


@dataclass
class ImageSet:
    """Named images (N, 3, S, S) in [0, 1]; index by name or by position as a Python sequence is.

    ``photos["cat"]`` and ``photos[i]`` give one image as a batch of one (1, 3, S, S); negative positions count
    from the end and a position past either end is an IndexError; ``photos[i:j]`` gives those images (k, 3, S, S).
    """

    images: torch.Tensor  # (N, 3, S, S)
    names: list[str]
    credits: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.names)

    def _index(self, name: str) -> int:
        if name not in self.names:
            raise KeyError(f"No image named {name!r} in this set. Names: {', '.join(self.names)}.")
        return self.names.index(name)

    def __getitem__(self, key: int | str | slice) -> torch.Tensor:
        if isinstance(key, str):
            index = self._index(key)
        elif isinstance(key, slice):
            return self.images[key]  # (k, 3, S, S)
        elif isinstance(key, numbers.Integral) and not isinstance(key, bool):
            if not -len(self) <= key < len(self):
                raise IndexError(f"image index {key} out of range for a set of {len(self)} "
                                 f"(use 0..{len(self) - 1}, or -{len(self)}..-1 from the end)")
            index = int(key) % len(self)
        else:
            raise TypeError(f"an ImageSet is indexed by name (str), position (int) or slice, got {key!r} "
                            f"({type(key).__name__})")
        return self.images[index : index + 1]  # (1, 3, S, S)

    def subset(self, names: Sequence[str]) -> ImageSet:
        names = _name_list(names)
        rows = [self._index(n) for n in names]
        return ImageSet(self.images[rows], list(names), {n: self.credits.get(n, "") for n in names})

    def to(self, device: str | torch.device) -> ImageSet:
        return ImageSet(self.images.to(device), self.names, self.credits)


# ----------------------------------------------------------------------------------------------- reading files


def read_image(
    source: str | os.PathLike | bytes | BinaryIO, label: str | None = None, *, size: int | None = None
) -> torch.Tensor:
    """An image file (a path, its bytes or an open binary file) as a (3, H, W) float32 tensor in [0, 1].

    Values map to [0, 1] by the range the file declares, never by the largest value it happens to hold:
    1-bit as 0/1; 8-bit modes (L, RGB, palette, CMYK as (1-C)(1-K), YCbCr, CIELAB to sRGB) by 255;
    16-bit modes by 2**bits - 1, where bits is the TIFF BitsPerSample (e.g. 12) or else 16; 32-bit integers
    by their full range (signed data: the type's minimum maps to 0, its maximum to 1); float images as they
    are when all values lie in [0, 1], otherwise rescaled min-max to [0, 1] with a warning. Transparency
    (LA, RGBA, palette or color-key transparency) is composited on white; gray comes back as 3 equal channels.
    The EXIF orientation is applied. A multi-frame file (GIF, multi-page TIFF, ...) gives its first frame, with
    a warning. Images over PIL.Image.MAX_IMAGE_PIXELS but under twice it (Pillow's decompression-bomb limit)
    load without Pillow's warning; above it an :class:`ImageLoadError` says how to raise the limit.

    ``size``: the shorter side the caller will resize to. When given, the file is downscaled while it is
    decoded (JPEG at 1/2, 1/4 or 1/8 scale, then an integer box reduction) to no less than ``2 * size``, so
    a huge photo never exists at full resolution in float. ``label`` names the file in messages.
    """
    label = label if label is not None else _label_of(source)
    if isinstance(source, bytes):
        source = io.BytesIO(source)
    elif isinstance(source, (str, os.PathLike)):
        _check_file(Path(source))
    elif not hasattr(source, "read"):
        raise TypeError(f"read_image: source must be a path, bytes or a binary file, not {type(source).__name__}.")
    if size is not None:
        size = _positive_int(size, "size")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # big photos are reduced, below
            with Image.open(source) as image:
                return to_unit_float(_decode(image, label, size))
    except Image.DecompressionBombError as err:
        raise ImageLoadError(_bomb_message(label, err)) from err
    except ImageLoadError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as err:
        # no reprs, no paths twice
        reason = re.sub(r"<_io\.\w+ object at 0x[0-9a-f]+>|'?[^']*/[^']*'?", "the file", str(err))
        raise ImageLoadError(f"Cannot read {label} as an image ({reason}). Check the file or remove it.") from err


def _label_of(source: object) -> str:
    if isinstance(source, (str, os.PathLike)):
        return printable(str(source))
    return printable(str(getattr(source, "name", "<image data>")))


def _check_file(path: Path) -> None:
    if not path.exists():
        raise FileNotFoundError(f"Image file not found: {path}")
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder, not an image file (load_images takes folders as folder=...).")
    if path.stat().st_size == 0:
        raise ImageLoadError(f"{path} is empty (0 bytes), so it holds no image. Check the file or remove it.")


def _bomb_message(label: str, err: Exception) -> str:
    found = re.search(r"\((\d+) pixels\)", str(err))
    pixels = f"{int(found[1]):,} pixels" if found else "its pixel count"
    limit = Image.MAX_IMAGE_PIXELS
    return (
        f"{label} declares {pixels}, over Pillow's decompression-bomb limit of {2 * limit:,} pixels "
        f"(2 x PIL.Image.MAX_IMAGE_PIXELS), so it was not decoded. If you trust the file, raise the limit "
        f"before loading, e.g. `PIL.Image.MAX_IMAGE_PIXELS = {int(found[1]) if found else 'None'}` "
        f"(None switches the check off). [{err}]"
    )


def _reduction(short_side: int, size: int | None) -> int:
    """The integer factor that shrinks ``short_side`` to no less than REDUCING_GAP * size (1: keep as is)."""
    return 1 if size is None else max(1, short_side // (REDUCING_GAP * size))


def _decode(image: Image.Image, label: str, size: int | None) -> np.ndarray:
    """An opened Pillow image as an (H, W, C) array, C in 1..4 (alpha last): uint8, or float32 in [0, 1]."""
    frames = getattr(image, "n_frames", 1)
    if frames > 1:
        warnings.warn(f"{label} holds {frames} frames; only the first one is used.", stacklevel=4)
    mode = image.mode
    if mode not in _EIGHT_BIT_TARGET and mode not in _HIGH_DEPTH:
        raise ImageLoadError(f"{label} has image mode {mode!r}, which vitequiv cannot read. Save it as 8-bit RGB.")
    low, high, unsigned32 = _declared_range(image) if mode.startswith("I") else (0.0, 1.0, False)
    k = _reduction(min(image.size), size)
    if k > 1:
        image.draft(mode, (max(1, image.width // k), max(1, image.height // k)))  # only JPEG acts on it
    ImageOps.exif_transpose(image, in_place=True)  # loads the pixels
    k = _reduction(min(image.size), size)
    if mode in _HIGH_DEPTH:
        return _high_depth(image, label, k, low, high, unsigned32)
    target = _WITH_TRANSPARENCY.get(mode, _EIGHT_BIT_TARGET[mode]) if "transparency" in image.info else None
    target = target or _EIGHT_BIT_TARGET[mode]
    if target != mode:
        image = image.convert(target)  # a full-size copy, so only when needed
    if k > 1:
        image = image.reduce(k)  # box average; Pillow premultiplies alpha for LA and RGBA
    return np.asarray(image)  # (H, W[, C]) uint8


def _declared_range(image: Image.Image) -> tuple[float, float, bool]:
    """(value of black, value of white, whether int32 pixels hold unsigned 32-bit data) for an integer mode."""
    tags = getattr(image, "tag_v2", None)
    if tags is not None and 258 in tags:  # TIFF: BitsPerSample, SampleFormat (1 unsigned, 2 signed)
        bits, signed = int(tags[258][0]), tags.get(339, (1,))[0] == 2
    else:
        args = image.tile[0][3] if image.tile else None  # the raw mode and decoder options
        rawmode = args if isinstance(args, str) else args[0] if isinstance(args, tuple) and args else ""
        found = re.fullmatch(r"I;(\d+)(S?)\w*", str(rawmode))  # e.g. PNG's I;16B
        if found:
            bits, signed = int(found[1]), bool(found[2])
        elif image.mode.startswith("I;16") or image.format == "PPM":  # Pillow scales PPM/PGM to 16 bits
            bits, signed = 16, False
        else:
            bits, signed = 32, True
    if signed:
        return -(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1, False
    return 0.0, 2.0**bits - 1, bits == 32 and image.mode == "I"


def _high_depth(image: Image.Image, label: str, k: int, low: float, high: float, unsigned32: bool) -> np.ndarray:
    """A 16-bit, 32-bit integer or float image as (H, W) float32 in [0, 1], box-reduced by ``k``."""
    if image.mode == "F":
        lo, hi = image.getextrema()  # Pillow skips NaN here; _box_reduce's sums keep it
        low, high = 0.0, 1.0
        if math.isfinite(lo) and math.isfinite(hi) and (lo < 0 or hi > 1):
            warnings.warn(f"{label}: float values span [{lo:g}, {hi:g}], outside [0, 1]; rescaled min-max to "
                          f"[0, 1].", stacklevel=5)
            low, high = lo, (hi if hi > lo else lo + 1)
    unit = _box_reduce(image, k, unsigned32)  # (h, w)
    if not np.isfinite(unit).all():
        raise ImageLoadError(f"{label} holds NaN or infinite values; vitequiv reads only finite images.")
    unit -= np.float32(low)
    unit /= np.float32(high - low)
    return np.clip(unit, 0, 1, out=unit)


def _box_reduce(image: Image.Image, k: int, unsigned32: bool = False) -> np.ndarray:
    """A one-band Pillow image -> (ceil(H / k), ceil(W / k)) float32 means over k x k blocks (cut short at the
    far edges, as Pillow's reduce() does). It works through bands of rows, so that only Pillow's own copy of
    the image is ever full size; ``unsigned32`` reads int32 pixels as the uint32 data they hold."""
    width, height = image.size
    step = k * max(1, 2**22 // (k * width))  # rows per band: whole blocks, about 4 M pixels
    cols = np.arange(0, width, k)
    sums = []
    for top in range(0, height, step):
        band = np.asarray(image.crop((0, top, width, min(height, top + step))))  # (rows, W), any byte order
        band = (band.view(np.uint32) if unsigned32 else band).astype(np.float32)
        sums.append(np.add.reduceat(np.add.reduceat(band, np.arange(0, len(band), k), axis=0), cols, axis=1))
    counts = np.outer(np.diff(np.arange(0, height, k), append=height), np.diff(cols, append=width))  # (h, w)
    return np.concatenate(sums) / counts.astype(np.float32)  # (h, w)


def to_unit_float(array: np.ndarray) -> torch.Tensor:
    """An image array (H, W) or (H, W, C), C = 1 (gray), 2 (gray + alpha), 3 (RGB) or 4 (RGBA), to a
    (3, H, W) float32 tensor in [0, 1].

    Unsigned integers map by their type's range (uint8 by 255, uint16 by 65535), booleans to 0/1, floats are
    taken as [0, 1] and clipped; signed integers have no fixed range and are refused. Alpha is composited on
    white. Works in float32 with one full-size copy.
    """
    array = np.asarray(array)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 2, 3, 4):
        raise ValueError(f"to_unit_float: expected an (H, W) or (H, W, 1..4) image array, got shape {array.shape}.")
    if np.issubdtype(array.dtype, np.unsignedinteger):
        scale = float(np.iinfo(array.dtype).max)
    elif array.dtype == np.bool_ or np.issubdtype(array.dtype, np.floating):
        scale = 1.0
    else:
        raise TypeError(f"to_unit_float: {array.dtype} arrays have no fixed range; pass uint8 (0..255), "
                        f"uint16 (0..65535) or floats in [0, 1].")
    chw = np.empty((array.shape[2], *array.shape[:2]), np.float32)
    chw[...] = array.transpose(2, 0, 1)  # the one full-size float32 copy, from any dtype and byte order
    image = torch.from_numpy(chw)  # (C, H, W)
    if scale != 1.0:
        image.div_(scale)
    elif not torch.isfinite(image).all():
        raise ValueError("to_unit_float: the array holds NaN or infinite values.")
    image.clamp_(0, 1)
    if image.shape[0] in (2, 4):  # straight alpha: composite on white
        alpha = image[-1:]  # (1, H, W)
        image = image[:-1].mul_(alpha).add_(1 - alpha)  # (C - 1, H, W)
    return image.expand(3, -1, -1).contiguous() if image.shape[0] == 1 else image  # (3, H, W)


MAX_ASPECT = 3  # a longer side beyond this many times the shorter is cut (centered) before scaling


def resize_center_crop(image: torch.Tensor, size: int) -> torch.Tensor:
    """One image (3, H, W) -> (3, size, size): shorter side to ``size`` (antialiased bicubic), then a center crop.

    Memory stays bounded for any aspect ratio: a longer side beyond ``MAX_ASPECT`` times the shorter one is first
    cut to its central ``MAX_ASPECT`` shorter sides, which keeps the center and the resampling filter's margin
    around it, so the result is that of scaling the whole image up to where the crop falls (within a pixel); a
    100000 x 4 px strip is never scaled up whole. Images within that ratio are scaled whole, as they always were.
    """
    if not isinstance(image, torch.Tensor) or image.dim() != 3 or image.shape[0] != 3:
        got = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"resize_center_crop takes one image (3, H, W), got {got}; for a batch, resize each image")
    size = _positive_int(size, "size")
    _, h, w = image.shape
    short = min(h, w)
    if max(h, w) > MAX_ASPECT * short:
        keep = MAX_ASPECT * short
        top, left = (h - min(h, keep)) // 2, (w - min(w, keep)) // 2
        image = image[:, top : top + min(h, keep), left : left + min(w, keep)]
        _, h, w = image.shape
    scale = size / min(h, w)
    new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
    resized = F.interpolate(image[None], size=(new_h, new_w), mode="bicubic", align_corners=False, antialias=True)[0]
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return resized[:, top : top + size, left : left + size].clamp(0, 1)  # (3, S, S)


# --------------------------------------------------------------------------------------- argument checks


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a positive int (pixels), got {value!r} ({type(value).__name__}).")
    if value < 1:
        raise ValueError(f"{name} must be a positive int (pixels), got {value}.")
    return int(value)


def _name_list(names: Iterable[str] | None) -> list[str] | None:
    """``names`` as a list of strings; a lone string is refused, since it would be read letter by letter."""
    if names is None:
        return None
    if isinstance(names, (str, bytes)):
        raise TypeError(f"names must be a list of bundled photo names, not one string: pass [{names!r}], "
                        f"or files=[{names!r}] for an image file.")
    names = list(names)
    for i, name in enumerate(names):
        if not isinstance(name, str):
            raise TypeError(f"names[{i}] is {name!r} ({type(name).__name__}); bundled photo names are strings. "
                            f"Pass image files as files=[...].")
    twice = [n for n, count in Counter(names).items() if count > 1]
    if twice:
        raise ValueError(f"names lists {', '.join(map(repr, twice))} more than once; each photo appears once.")
    return names


def _check_names(names: Iterable[str]) -> None:
    for name in names:
        if name not in BUNDLED:
            close = difflib.get_close_matches(name, BUNDLED, n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise KeyError(f"No bundled photo named {name!r}.{hint} Available: {', '.join(BUNDLED)}.")


def _file_list(files: Iterable[str | os.PathLike]) -> list[Path]:
    if isinstance(files, (str, bytes, os.PathLike)):
        raise TypeError(f"files must be a list of image paths, not one path: pass files=[{str(files)!r}].")
    paths = []
    for i, file in enumerate(files):
        if not isinstance(file, (str, os.PathLike)):
            raise TypeError(f"files[{i}] is {file!r} ({type(file).__name__}); expected a path (str or Path).")
        path = Path(file)
        if path.is_dir():
            raise IsADirectoryError(f"files[{i}] = {path} is a folder; pass folders as folder={str(path)!r}.")
        problem = _link_problem(path)
        if problem:
            raise FileNotFoundError(f"files[{i}] = {printable(str(path))} {problem}.")
        if not path.exists():
            raise FileNotFoundError(f"Image file not found: {path} (files[{i}])")
        paths.append(path)
    return paths


def _link_problem(path: Path) -> str | None:
    """Why the symbolic link ``path`` leads to no file ("is a broken symbolic link to ..." or "... loop"), or None."""
    if not path.is_symlink():
        return None
    try:
        path.resolve(strict=True)
    except RuntimeError:  # Python < 3.13 reports a loop this way
        return "is a symbolic link that loops back on itself"
    except OSError as err:
        if err.errno == errno.ELOOP:
            return "is a symbolic link that loops back on itself"
        return f"is a broken symbolic link (to {printable(os.readlink(path))}, which does not exist)"
    return None


def _folder_images(folder: str | os.PathLike) -> list[Path]:
    """The image files directly in ``folder``, sorted; hidden files (e.g. macOS's ._cat.jpg) are skipped, and
    links that lead nowhere (broken, or looping) are skipped with a warning that names each."""
    if not isinstance(folder, (str, os.PathLike)):
        raise TypeError(f"folder must be a path (str or Path), got {folder!r} ({type(folder).__name__}).")
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"Image folder not found: {folder}")
    if not folder.is_dir():
        raise NotADirectoryError(f"folder={str(folder)!r} is a file, not a folder; pass files as files=[...].")
    candidates = sorted(p for p in folder.iterdir()
                        if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    dead = {p: problem for p in candidates if (problem := _link_problem(p))}
    for path, problem in dead.items():
        warnings.warn(f"Skipped {printable(str(path))}: it {problem}.", stacklevel=3)
    found = [p for p in candidates if p not in dead and p.is_file()]
    if not found:
        raise FileNotFoundError(f"No images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {folder}")
    return found


def printable(text: str) -> str:
    """``text`` as every writer accepts it: bytes that are not UTF-8 (kept by Python as surrogates in file names)
    and unprintable characters (newlines, controls) become backslash escapes, e.g. ``caf\\xe9``."""
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _file_names(paths: Sequence[Path], taken: Iterable[str]) -> list[str]:
    """Unique, printable names for image files: the stem ("cat"), or the file name ("cat.png", "cat.jpg") when
    another entry shares the stem, then "-2", "-3", ... before the suffix when even that is taken ("cat-2.png").
    Names are made printable first (see :func:`printable`), so that tables and figure files can hold them."""
    taken = set(taken)
    stems = Counter(printable(p.stem) for p in paths)
    names = []
    for path in paths:
        stem, suffix = printable(path.stem), printable(path.suffix)
        name = stem if stems[stem] == 1 and stem not in taken else stem + suffix
        count = 1
        while name in taken:
            count += 1
            name = f"{stem}-{count}{suffix}"
        taken.add(name)
        names.append(name)
    return names


# ------------------------------------------------------------------------------------------- public loaders


@functools.cache
def _bundled_original(name: str) -> torch.Tensor:
    return BUNDLED[name].loader()  # (3, H, W) at full resolution


def load_images(
    names: Sequence[str] | None = None,
    *,
    size: int = 224,
    folder: str | os.PathLike | None = None,
    files: Sequence[str | os.PathLike] = (),
) -> ImageSet:
    """Bundled photos (all of them when ``names`` is None and no folder/files are given), plus the images in
    ``folder`` (sorted) and any ``files``, as an :class:`ImageSet` of ``size`` x ``size``.

    ``names`` is a list of bundled names: a lone string such as ``"cat"`` is refused with a TypeError (pass
    ``["cat"]``). Each image file is named by its stem ("cat"), or by its file name when two entries would
    share that stem ("cat.png" and "cat.jpg"; "cat-2.png" when even the file name repeats); ``credits`` maps
    each name to its source (the bundled photo's credit, or the file's path). Files are read by
    :func:`read_image`, downscaled while decoding.
    """
    size = _positive_int(size, "size")
    names = _name_list(names)
    own = _file_list(files) + (_folder_images(folder) if folder is not None else [])
    if names is None:
        names = [] if own else list(BUNDLED)
    _check_names(names)
    labels = [*names, *_file_names(own, taken=names)]
    tensors = [resize_center_crop(_bundled_original(n), size) for n in names]
    tensors += [resize_center_crop(read_image(p, printable(str(p)), size=size), size) for p in own]
    credits = {n: BUNDLED[n].credit for n in names} | {label: printable(str(p))
                                                       for label, p in zip(labels[len(names):], own)}
    return ImageSet(torch.stack(tensors), labels, credits)


def view_set(
    names: Sequence[str] | None = None,
    *,
    views_per_image: int = 8,
    size: int = 224,
    min_scale: float = 0.35,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """A labeled set of random crop/flip views of bundled photos: images (N, 3, S, S), labels (N,), class names.

    Each view is a random square crop covering ``min_scale``..1 of the shorter side, flipped left-right with
    probability 1/2, drawn from the full-resolution original; the label is the photo it came from.
    """
    names = _name_list(names)
    names = list(BUNDLED) if names is None else names
    _check_names(names)
    views_per_image, size = _positive_int(views_per_image, "views_per_image"), _positive_int(size, "size")
    if not 0 < min_scale <= 1:
        raise ValueError(f"min_scale must be in (0, 1] (the smallest crop, as a share of the shorter side), "
                         f"got {min_scale}.")
    generator = torch.Generator().manual_seed(seed)
    views, labels = [], []
    for label, name in enumerate(names):
        original = _bundled_original(name)  # (3, H, W)
        _, h, w = original.shape
        for _ in range(views_per_image):
            side = int(min(h, w) * (min_scale + (1 - min_scale) * torch.rand(1, generator=generator).item()))
            top = int(torch.randint(0, h - side + 1, (1,), generator=generator))
            left = int(torch.randint(0, w - side + 1, (1,), generator=generator))
            view = resize_center_crop(original[:, top : top + side, left : left + side], size)
            views.append(view.flip(-1) if torch.rand(1, generator=generator).item() < 0.5 else view)
            labels.append(label)
    return torch.stack(views), torch.tensor(labels), names


def lfw_faces(size: int = 224) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """scikit-image's ``lfw_subset``: 200 gray 25x25 crops, the first 100 faces, the rest not.

    Returns images (200, 3, S, S), labels (200,) with 1 = face, and the class names.
    """
    from skimage import data

    size = _positive_int(size, "size")
    crops = data.lfw_subset()  # (200, 25, 25) in [0, 1]
    images = torch.stack([resize_center_crop(to_unit_float(c), size) for c in crops])
    labels = torch.tensor([1] * 100 + [0] * 100)
    return images, labels, ["non-face", "face"]


@dataclass
class LabeledSet:
    """Images (N, 3, S, S) in [0, 1] with class indices (N,) into ``class_names``."""

    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    def split(self, test_fraction: float = 0.5, seed: int = 0) -> tuple[LabeledSet, LabeledSet]:
        """A stratified (train, test) split, the same for the same seed."""
        from sklearn.model_selection import train_test_split

        train, test = train_test_split(
            np.arange(len(self)), test_size=test_fraction, stratify=self.labels.numpy(), random_state=seed
        )
        return self._rows(train), self._rows(test)

    def _rows(self, rows: np.ndarray) -> LabeledSet:
        index = torch.as_tensor(np.sort(rows))
        return LabeledSet(self.images[index], self.labels[index], self.class_names)


def labeled_set(kind: Literal["views", "faces"] = "views", *, size: int = 224, **kwargs) -> LabeledSet:
    """A labeled set that works offline: ``"views"``, crop/flip views of bundled photos labeled by photo
    (``kwargs`` go to :func:`vitequiv.images.view_set`: names, views_per_image, min_scale, seed), or ``"faces"``,
    scikit-image's 200 LFW crops, face vs non-face."""
    if kind == "views":
        return LabeledSet(*view_set(size=size, **kwargs))
    if kind == "faces":
        return LabeledSet(*lfw_faces(size=size))
    raise ValueError(f"Unknown labeled set {kind!r}; use 'views' or 'faces'.")
