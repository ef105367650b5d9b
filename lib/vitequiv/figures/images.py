"""Images as figures: grids, amplified changes, where a change is visible, and the reader's flicker test."""
from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

from ..metrics import quantize_8bit
from ..tensors import as_image


def to_numpy_image(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) or (1, 3, H, W) tensor in [0, 1] -> (H, W, 3) array for ``imshow``."""
    return image.detach().reshape(-1, *image.shape[-2:]).permute(1, 2, 0).clamp(0, 1).cpu().numpy()


def amplify(
    delta: torch.Tensor, gain: float | None = None, *, quantile: float = 1.0, fill: float = 0.5,
) -> tuple[torch.Tensor, float]:
    """A perturbation (..., 3, H, W) made visible: 0.5 + gain * delta, clamped to [0, 1], and the gain used.

    ``gain`` None picks it so that the ``quantile`` of |delta| lands ``fill`` away from mid-grey, rounded to two
    significant digits so that a figure title can quote it.
    """
    if gain is None:
        size = torch.quantile(delta.detach().abs().flatten().float().cpu(), quantile).item()
        gain = float(f"{fill / max(size, 1 / 255 / 8):.2g}")  # the floor keeps an all-zero delta finite
    return (0.5 + gain * delta).clamp(0, 1), gain


def image_grid(
    images: torch.Tensor | Sequence[torch.Tensor],
    titles: Sequence[str] | None = None,
    ncols: int | None = None,
    size: float = 2.2,
    suptitle: str | None = None,
) -> plt.Figure:
    """Images (N, 3, H, W) in [0, 1] on a grid without axes, each with an optional title."""
    images = [im for im in images]
    ncols = ncols or len(images)
    nrows = -(-len(images) // ncols)
    title_height = 0.45 if titles is not None else 0.0  # room for two-line titles between the rows
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, (size + title_height) * nrows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, (ax, image) in enumerate(zip(axes.flat, images)):
        ax.imshow(to_numpy_image(image))
        if titles is not None:
            ax.set_title(titles[i], fontsize=10)
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def where_visible(
    sources: torch.Tensor, matched: Mapping[str, torch.Tensor], maps: Mapping[str, np.ndarray],
    row_titles: Sequence[str], *, quantile: float = 0.995, map_label: str = "visible difference",
) -> plt.Figure:
    """Where a change shows, per source (rows): the source, then for each method its matched image's difference
    0.5 + k (x - x0) (k per image, in its title) and its visibility map (B, H, W), one color scale for all maps.

    ``matched[name]`` (B, 3, H, W) are the matched images of ``sources`` (B, 3, H, W), ``maps[name]`` (B, H, W).
    """
    import matplotlib.colors as mcolors

    rows, names = len(sources), list(matched)
    vmax = max(float(np.quantile(maps[n], 0.999)) for n in names) or 1.0
    fig, axes = plt.subplots(rows, 1 + 2 * len(names), figsize=(2.3 * (1 + 2 * len(names)) + 0.8, 2.5 * rows + 0.6),
                             squeeze=False, layout="constrained")
    for ax in axes.flat:
        ax.set(xticks=[], yticks=[])
    for i in range(rows):
        axes[i, 0].imshow(to_numpy_image(sources[i]))
        axes[i, 0].set_title(f"{row_titles[i]}\nsource", fontsize=10)
        for j, name in enumerate(names):
            diff, gain = amplify(matched[name][i] - sources[i], quantile=quantile, fill=0.4)
            axes[i, 1 + 2 * j].imshow(to_numpy_image(diff))
            axes[i, 1 + 2 * j].set_title(f"{name}: dx x{gain:g}", fontsize=10)
            shown = axes[i, 2 + 2 * j].imshow(maps[name][i], cmap="magma", norm=mcolors.Normalize(0, vmax))
            axes[i, 2 + 2 * j].set_title(f"{name}: where visible", fontsize=10)
    fig.colorbar(shown, ax=axes, shrink=0.6, label=map_label)
    return fig


def pixels_8bit(image: torch.Tensor) -> np.ndarray:
    """One image (3, H, W) or (1, 3, H, W) in [0, 1] -> its exact 8-bit pixels (H, W, 3) uint8, as a PNG keeps them."""
    levels = quantize_8bit(image.detach().float().cpu().reshape(3, *image.shape[-2:])) * 255  # (3, H, W), whole
    return levels.permute(1, 2, 0).round().to(torch.uint8).numpy()  # (H, W, 3)


def zoom_nearest(pixels: np.ndarray, zoom: int) -> np.ndarray:
    """Pixels (H, W, C) enlarged ``zoom`` times by repeating each one (nearest neighbor: no new values)."""
    return pixels.repeat(zoom, axis=0).repeat(zoom, axis=1)  # (zoom H, zoom W, C)


def png_8bit(image: torch.Tensor, zoom: int = 1) -> bytes:
    """One image in [0, 1] as lossless PNG bytes of its 8-bit pixels, ``zoom`` times enlarged (nearest neighbor)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(zoom_nearest(pixels_8bit(image), zoom)).save(buffer, format="png")
    return buffer.getvalue()


FLICKER_GAP = 8  # pixels between the zoomed copies
FLICKER_LABEL_HEIGHT = 16  # the strip above the images that says which one is shown
FLICKER_BACKGROUND = (255, 255, 255)


def flicker_frame(pixels: np.ndarray, label: str, zooms: Sequence[int]) -> np.ndarray:
    """One frame of a flicker: ``label`` in a strip on top, below it ``pixels`` (H, W, 3) at each zoom, left to
    right, top-aligned, every copy's pixels exact."""
    from PIL import Image, ImageDraw

    h, w = pixels.shape[:2]
    width = sum(z * w for z in zooms) + FLICKER_GAP * (len(zooms) - 1)
    frame = Image.new("RGB", (width, FLICKER_LABEL_HEIGHT + max(zooms) * h), FLICKER_BACKGROUND)
    ImageDraw.Draw(frame).text((2, 2), f"{label} ({', '.join(f'{z}x' for z in zooms)})", fill=(0, 0, 0))
    canvas = np.array(frame)  # (label + max zoom H, width, 3)
    left = 0
    for z in zooms:
        canvas[FLICKER_LABEL_HEIGHT:FLICKER_LABEL_HEIGHT + z * h, left:left + z * w] = zoom_nearest(pixels, z)
        left += z * w + FLICKER_GAP
    return canvas


def flicker(
    source: torch.Tensor | np.ndarray, match: torch.Tensor | np.ndarray, *,
    labels: tuple[str, str] = ("source", "matched"), zooms: Sequence[int] = (1, 2), interval_ms: int = 600,
) -> bytes:
    """An animated PNG (APNG, lossless) that alternates ``source`` and ``match`` forever, ``interval_ms`` each,
    each frame showing its image at every zoom (nearest neighbor) under a label saying which it is.

    The reader's own test of "visually indistinguishable": flicking between two images, enlarged, is how people
    find differences. Pixels are the exact 8-bit values (images in [0, 1] rounded as a PNG keeps them); GIF would
    not do, its 256-color palette changes the very pixels being compared.
    """
    from PIL import Image

    a = as_image(source, "source")  # (1, 3, H, W)
    b = as_image(match, "match")  # (1, 3, H, W)
    if a.shape != b.shape:
        raise ValueError(f"source and match must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if len(labels) != 2 or labels[0] == labels[1]:
        raise ValueError(f"labels must be two different texts (which image is shown), got {labels!r}")
    if not zooms or any(isinstance(z, bool) or not isinstance(z, int) or z < 1 for z in zooms):
        raise ValueError(f"zooms must be whole numbers >= 1, got {zooms!r}")
    if isinstance(interval_ms, bool) or not isinstance(interval_ms, int) or interval_ms < 20:
        raise ValueError(f"interval_ms must be a whole number of milliseconds >= 20, got {interval_ms!r}")
    frames = [Image.fromarray(flicker_frame(pixels_8bit(x), label, zooms)) for x, label in zip((a, b), labels)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="png", save_all=True, append_images=frames[1:], duration=interval_ms, loop=0)
    return buffer.getvalue()

