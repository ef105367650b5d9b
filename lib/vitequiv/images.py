"""Real photos that work offline (they ship inside scikit-image, scikit-learn and matplotlib), the user's own
images, and labelled view sets built from them.

Everything comes out as float tensors in [0, 1], shape (N, 3, S, S): the shorter side resized to S
(antialiased bicubic), then centre-cropped. Grey, RGBA (composited on white), 16-bit, tiny and huge images are
handled; a missing or unreadable file raises an error that names it.
"""
from __future__ import annotations

import difflib
import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


class ImageLoadError(ValueError):
    """An image file exists but cannot be read as an image."""


@dataclass(frozen=True)
class BundledPhoto:
    loader: Callable[[], np.ndarray]
    credit: str  # source and licence


def _skimage(name: str, index: int | None = None) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from skimage import data

        image = getattr(data, name)()
        return image[index] if index is not None else image

    return load


def _sklearn(filename: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from sklearn.datasets import load_sample_image

        return load_sample_image(filename)

    return load


def _grace_hopper() -> np.ndarray:
    from matplotlib import cbook

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        return _read_pil(f, "grace_hopper.jpg")


BUNDLED: dict[str, BundledPhoto] = {
    "astronaut": BundledPhoto(_skimage("astronaut"), "Eileen Collins, NASA; public domain (scikit-image)"),
    "cat": BundledPhoto(_skimage("chelsea"), "Chelsea the cat, Stefan van der Walt; CC0 (scikit-image)"),
    "coffee": BundledPhoto(_skimage("coffee"), "Cup of coffee, Rachel Michetti; CC0 (scikit-image)"),
    "rocket": BundledPhoto(_skimage("rocket"), "Falcon 9 launch, SpaceX; public domain (scikit-image)"),
    "motorcycle_left": BundledPhoto(_skimage("stereo_motorcycle", 0), "Middlebury stereo 2014, left view (scikit-image)"),
    "motorcycle_right": BundledPhoto(_skimage("stereo_motorcycle", 1), "Middlebury stereo 2014, right view (scikit-image)"),
    "camera": BundledPhoto(_skimage("camera"), "Cameraman (grey), scikit-image; CC0"),
    "hubble": BundledPhoto(_skimage("hubble_deep_field"), "Hubble eXtreme Deep Field, NASA; public domain (scikit-image)"),
    "retina": BundledPhoto(_skimage("retina"), "Human retina, Häggström & Ericsson; CC0 (scikit-image)"),
    "cells": BundledPhoto(_skimage("immunohistochemistry"), "Immunohistochemical staining, NIH; public domain (scikit-image)"),
    "china": BundledPhoto(_sklearn("china.jpg"), "Chinese temple; CC BY 2.0, see scikit-learn's README"),
    "flower": BundledPhoto(_sklearn("flower.jpg"), "Flower; CC BY 2.0, see scikit-learn's README"),
    "grace_hopper": BundledPhoto(_grace_hopper, "Grace Hopper, US Navy; public domain (matplotlib sample data)"),
}


@dataclass
class ImageSet:
    """Named images (N, 3, S, S) in [0, 1]; index by position or by name."""

    images: torch.Tensor  # (N, 3, S, S)
    names: list[str]
    credits: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, key: int | str) -> torch.Tensor:
        index = self.names.index(key) if isinstance(key, str) else key
        return self.images[index : index + 1]  # (1, 3, S, S)

    def subset(self, names: Sequence[str]) -> ImageSet:
        rows = [self.names.index(n) for n in names]
        return ImageSet(self.images[rows], list(names), {n: self.credits.get(n, "") for n in names})

    def to(self, device: str | torch.device) -> ImageSet:
        return ImageSet(self.images.to(device), self.names, self.credits)


def _read_pil(source, label: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(source) as image:
            image.load()
            if image.mode in ("I;16", "I;16B", "I;16L", "I"):
                array = np.asarray(image, dtype=np.float64)
                return array / (65535.0 if array.max() > 255 else 255.0)
            if image.mode in ("RGBA", "LA", "P", "PA"):
                rgba = image.convert("RGBA")
                white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
            return np.asarray(image.convert("RGB") if image.mode not in ("RGB", "L") else image)
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ImageLoadError(f"Cannot read {label} as an image ({err}). Check the file or remove it.") from err


def to_unit_float(array: np.ndarray) -> torch.Tensor:
    """Any image array (H,W), (H,W,3) or (H,W,4), integer or float, to a (3, H, W) float tensor in [0, 1]."""
    array = np.asarray(array)
    if np.issubdtype(array.dtype, np.integer):
        array = array / float(np.iinfo(array.dtype).max if array.max() > 255 else 255)
    image = torch.as_tensor(np.asarray(array, dtype=np.float32))
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[-1] == 4:  # straight alpha: composite on white
        image = image[..., :3] * image[..., 3:] + (1 - image[..., 3:])
    image = image.expand(*image.shape[:2], 3) if image.shape[-1] == 1 else image[..., :3]
    return image.permute(2, 0, 1).clamp(0, 1).contiguous()  # (3, H, W)


def resize_center_crop(image: torch.Tensor, size: int) -> torch.Tensor:
    """(3, H, W) -> (3, size, size): shorter side to ``size`` (antialiased bicubic), then a centre crop."""
    _, h, w = image.shape
    scale = size / min(h, w)
    new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
    resized = F.interpolate(image[None], size=(new_h, new_w), mode="bicubic", align_corners=False, antialias=True)[0]
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return resized[:, top : top + size, left : left + size].clamp(0, 1)  # (3, S, S)


@functools.lru_cache(maxsize=None)
def _bundled_original(name: str) -> torch.Tensor:
    return to_unit_float(BUNDLED[name].loader())  # (3, H, W) at full resolution


def _original(name_or_path: str | Path) -> torch.Tensor:
    if str(name_or_path) in BUNDLED:
        return _bundled_original(str(name_or_path))
    path = Path(name_or_path)
    if not path.exists():
        raise FileNotFoundError(f"Image file not found: {path}")
    return to_unit_float(_read_pil(path, str(path)))


def _check_names(names: Iterable[str]) -> None:
    for name in names:
        if name not in BUNDLED:
            close = difflib.get_close_matches(name, BUNDLED, n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise KeyError(f"No bundled photo named {name!r}.{hint} Available: {', '.join(BUNDLED)}.")


def load_images(
    names: Sequence[str] | None = None,
    *,
    size: int = 224,
    folder: str | Path | None = None,
    files: Sequence[str | Path] = (),
) -> ImageSet:
    """Bundled photos (all of them when ``names`` is None and no folder/files are given), plus the images in
    ``folder`` (sorted, named by file stem) and any ``files``, as an :class:`ImageSet` of ``size`` x ``size``."""
    own: list[Path] = [Path(f) for f in files]
    if folder is not None:
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"Image folder not found: {folder}")
        own += sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not any(p.parent == folder for p in own):
            raise FileNotFoundError(f"No images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {folder}")
    if names is None:
        names = [] if own else list(BUNDLED)
    _check_names(names)
    keys: list[str | Path] = [*names, *own]
    tensors = [resize_center_crop(_original(k), size) for k in keys]
    labels = [*names, *(p.stem for p in own)]
    credits = {n: BUNDLED[n].credit for n in names} | {p.stem: str(p) for p in own}
    return ImageSet(torch.stack(tensors), labels, credits)


def view_set(
    names: Sequence[str] | None = None,
    *,
    views_per_image: int = 8,
    size: int = 224,
    min_scale: float = 0.35,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """A labelled set of random crop/flip views of bundled photos: images (N, 3, S, S), labels (N,), class names.

    Each view is a random square crop covering ``min_scale``..1 of the shorter side, flipped left-right with
    probability 1/2, drawn from the full-resolution original; the label is the photo it came from.
    """
    names = list(BUNDLED) if names is None else list(names)
    _check_names(names)
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
    """scikit-image's ``lfw_subset``: 200 grey 25x25 crops, the first 100 faces, the rest not.

    Returns images (200, 3, S, S), labels (200,) with 1 = face, and the class names.
    """
    from skimage import data

    crops = data.lfw_subset()  # (200, 25, 25) in [0, 1]
    images = torch.stack([resize_center_crop(to_unit_float(c), size) for c in crops])
    labels = torch.tensor([1] * 100 + [0] * 100)
    return images, labels, ["non-face", "face"]
