"""What people see: human-calibrated visibility of a change, from maintained implementations of published models.

PSNR and SSIM (:mod:`vitequiv.metrics`) count pixel error; whether people see a change depends on where it lands
(flat regions, color, masking by texture). Two models calibrated on human judgments measure that here, each
through its authors' own implementation, never a port:

- **butteraugli** (libjxl's reference tool ``butteraugli_main``, Debian/Ubuntu ``libjxl-devtools``, Homebrew
  ``jpeg-xl``): a distance in just-noticeable differences, max-norm over the image (and a 3-norm, less dominated
  by one spot). 1.0 is JPEG XL's "visually lossless" distance. It assumes pixels shown at 1:1 on an 80-nit sRGB
  display (``intensity_target``). The tool is a separate program: :func:`butteraugli` raises
  :class:`VisibilityUnavailable` with the install hint where it is missing, :func:`visibility_table` says "not
  measured" instead.
- **ColorVideoVDP** (PyPI ``cvvdp``, Mantiuk et al., SIGGRAPH 2024): a quality in JOD, just-objectionable
  differences; 10 means no visible difference and 1 JOD less means 75 % of people prefer the reference. Images
  are taken as display-encoded sRGB on the ``standard_4k`` display model: a 30-inch 3840 x 2160 monitor, peak
  200 cd/m^2, contrast 1000:1, 250 lux office light, seen from 0.747 m (twice its height): 75.4 pixels per degree.

Both judge the 8-bit image a PNG would hold (:func:`vitequiv.metrics.quantize_8bit`), so float and 8-bit inputs
score alike. The thresholds every verdict uses, fixed before any run, are
:data:`vitequiv.metrics.INVISIBLE_BUTTERAUGLI` and :data:`vitequiv.metrics.INVISIBLE_JOD`.

Summaries: :func:`visibility_table` (one set of images) and :func:`compare` (several, e.g. one per matcher), and
what claims quote of them: :func:`spread`, :func:`invisible_parts` and :func:`less_visible_parts`.
"""
from __future__ import annotations

import functools
import logging
import math
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from .claims import Claim, median
from .metrics import (
    INVISIBLE_BUTTERAUGLI,
    INVISIBLE_JOD,
    LEVELS,
    invisible_butteraugli,
    invisible_jod,
    quantize_8bit,
)
from .tensors import Value, as_floats, as_images, as_positive

BUTTERAUGLI_TOOL = "butteraugli_main"  # looked up on PATH at each call
BUTTERAUGLI_TIMEOUT_S = 60.0  # per image; a 224 px image takes about 0.1 s of CPU
BUTTERAUGLI_INSTALL = ("install Debian/Ubuntu's `libjxl-devtools` (apt-get install libjxl-devtools), Homebrew's "
                       "`jpeg-xl` on macOS, or build libjxl's tools")
DISPLAY = "standard_4k"  # ColorVideoVDP's display model (see the module docstring)
DIGITS = {"butteraugli": 2, "butteraugli 3-norm": 2, "JOD": 3}  # decimals a claim quotes each measure with


class VisibilityUnavailable(RuntimeError):
    """A visibility measure cannot run here (its tool is missing); the message says how to get it."""


class VisibilityToolError(RuntimeError):
    """A visibility tool ran and failed (exit status, time-out, unreadable output); the message names the tool."""


def _pairs(images: Value, references: Value, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and their references (B, 3, H, W) each, checked, on ``device`` (None: the images'), rounded to 8 bits:
    float32 on the 8-bit grid, which is what a PNG holds and what ColorVideoVDP makes of uint8 input (x / 255)."""
    x = as_images(images, "images", device=device)  # (B, 3, H, W)
    ref = as_images(references, "references", device=x.device)  # (B, 3, H, W)
    if ref.shape != x.shape:
        raise ValueError(f"references must have the images' shape {tuple(x.shape)} (one reference per image, the "
                         f"same size), got {tuple(ref.shape)}")
    return quantize_8bit(x), quantize_8bit(ref)


# ------------------------------------------------------------------------------------------- butteraugli


@dataclass(frozen=True)
class Butteraugli:
    """butteraugli of each image against its reference, in just-noticeable differences."""

    distance: np.ndarray  # (B,) max-norm: the most visible spot; the number JPEG XL's "distance" means
    pnorm: np.ndarray  # (B,) p-norm over the distance map (p = 3 by default)
    distmap: np.ndarray | None = None  # (B, H, W) per-pixel distances, when asked for
    heatmap: np.ndarray | None = None  # (B, 3, H, W) in [0, 1]: the tool's colored rendering, when asked for


def butteraugli_available() -> bool:
    """Whether ``butteraugli_main`` is on PATH, i.e. whether :func:`butteraugli` can run."""
    return shutil.which(BUTTERAUGLI_TOOL) is not None


def _tool() -> str:
    path = shutil.which(BUTTERAUGLI_TOOL)
    if path is None:
        raise VisibilityUnavailable(f"butteraugli not measured: `{BUTTERAUGLI_TOOL}` is not installed; "
                                    f"{BUTTERAUGLI_INSTALL}")
    return path


@functools.lru_cache(maxsize=8)
def _has_rawdistmap(tool: str) -> bool:
    """Whether this build writes raw distance maps (``--rawdistmap``, newer libjxl; 0.7 writes only a heat map)."""
    try:
        usage = subprocess.run([tool], capture_output=True, text=True, timeout=BUTTERAUGLI_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "--rawdistmap" in usage.stdout + usage.stderr


def _write_png(image: torch.Tensor, path: Path) -> None:
    """One image (3, H, W) in [0, 1], already on the 8-bit grid, as an 8-bit RGB PNG."""
    hwc = (image.permute(1, 2, 0) * LEVELS).round().to(torch.uint8).cpu().numpy()  # (H, W, 3)
    Image.fromarray(hwc).save(path, compress_level=1)


def read_pfm(path: str | Path) -> np.ndarray:
    """A PFM file as float32, top row first: (H, W) for ``Pf`` (gray), (H, W, 3) for ``PF`` (color)."""
    with open(path, "rb") as file:
        kind = file.readline().strip()
        width, height = (int(v) for v in file.readline().split())
        scale = float(file.readline())
        data = np.fromfile(file, dtype="<f4" if scale < 0 else ">f4")
    if kind not in (b"Pf", b"PF"):
        raise ValueError(f"{path} is not a PFM file (header {kind!r})")
    shape = (height, width) if kind == b"Pf" else (height, width, 3)
    return data.reshape(shape)[::-1].astype(np.float32)  # PFM stores the bottom row first


def _run_tool(tool: str, args: list[str], index: int, timeout_s: float) -> tuple[float, float]:
    """Run the tool on image ``index``; its max-norm distance and p-norm, or a VisibilityToolError."""
    try:
        done = subprocess.run([tool, *args], capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as err:
        raise VisibilityToolError(f"{BUTTERAUGLI_TOOL} ({tool}) took more than {timeout_s:g} s on image "
                                  f"{index}") from err
    stderr = done.stderr.strip()[-2000:]
    if done.returncode != 0:
        raise VisibilityToolError(f"{BUTTERAUGLI_TOOL} ({tool}) failed on image {index} with exit status "
                                  f"{done.returncode}: {stderr or '(no stderr)'}")
    lines = done.stdout.splitlines()  # "<max-norm distance>", "<p>-norm: <value>"
    try:
        return float(lines[0]), float(lines[1].split("-norm:")[1])
    except (IndexError, ValueError) as err:
        raise VisibilityToolError(f"{BUTTERAUGLI_TOOL} ({tool}) printed no distance and p-norm for image {index}: "
                                  f"stdout {done.stdout.strip()[:500]!r}, stderr {stderr!r}") from err


def butteraugli(images: Value, references: Value, *, pnorm: float = 3.0, intensity_target: float = 80.0,
                distmap: bool = False, heatmap: bool = False,
                timeout_s: float = BUTTERAUGLI_TIMEOUT_S) -> Butteraugli:
    """butteraugli of ``images`` (B, 3, H, W) against ``references`` (B, 3, H, W), both in [0, 1] and saved as
    8-bit PNGs first, through libjxl's ``butteraugli_main`` (one call per image, each timed out after
    ``timeout_s``). ``intensity_target`` is the display's white in nits (80: sRGB's). ``distmap`` adds the
    per-pixel distances (tools with ``--rawdistmap``; libjxl 0.7's only writes the colored ``heatmap``).

    Raises :class:`VisibilityUnavailable` where the tool (or a raw distance map) is missing,
    :class:`VisibilityToolError` when it fails.
    """
    x, ref = _pairs(images, references, "cpu")  # (B, 3, H, W) each
    pnorm = as_positive(pnorm, "pnorm")
    intensity_target = as_positive(intensity_target, "intensity_target")
    timeout_s = as_positive(timeout_s, "timeout_s")
    tool = _tool()
    if distmap and not _has_rawdistmap(tool):
        raise VisibilityUnavailable(f"butteraugli distance maps not measured: this `{BUTTERAUGLI_TOOL}` ({tool}) has "
                                    "no --rawdistmap (libjxl 0.7 writes only a colored heat map: pass heatmap=True); "
                                    "a newer libjxl's tools have it")
    distances, norms, maps, heats = [], [], [], []
    with tempfile.TemporaryDirectory(prefix="vitequiv-butteraugli-") as folder:
        folder = Path(folder)
        for i in range(len(x)):
            ref_png, img_png = folder / f"{i}-reference.png", folder / f"{i}-image.png"
            _write_png(ref[i], ref_png)
            _write_png(x[i], img_png)
            args = [str(ref_png), str(img_png), "--pnorm", f"{pnorm:g}", "--intensity_target", f"{intensity_target:g}"]
            args += ["--rawdistmap", str(folder / f"{i}-distmap.pfm")] if distmap else []
            args += ["--distmap", str(folder / f"{i}-heatmap.png")] if heatmap else []
            distance, norm = _run_tool(tool, args, i, timeout_s)
            distances.append(distance)
            norms.append(norm)
            if distmap:
                maps.append(read_pfm(folder / f"{i}-distmap.pfm"))  # (H, W)
            if heatmap:
                rgb = np.asarray(Image.open(folder / f"{i}-heatmap.png").convert("RGB"))  # (H, W, 3) uint8
                heats.append(rgb.transpose(2, 0, 1).astype(np.float32) / LEVELS)  # (3, H, W)
    return Butteraugli(np.array(distances), np.array(norms),
                       np.stack(maps) if distmap else None,  # (B, H, W)
                       np.stack(heats) if heatmap else None)  # (B, 3, H, W)


# ------------------------------------------------------------------------------------------- ColorVideoVDP

_CVVDP: dict[tuple[str, str | None], object] = {}  # (device, heatmap kind) -> one pycvvdp.cvvdp per process


def _pycvvdp():
    """``pycvvdp``, imported without torch's "No CUDA runtime is found" warning (its torchvision import pulls in
    torch.utils.cpp_extension, which logs it on CPU-only machines with a CUDA_HOME)."""
    logger = logging.getLogger("torch.utils.cpp_extension")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        import pycvvdp
    finally:
        logger.setLevel(level)
    return pycvvdp


def _cvvdp_metric(device: torch.device, heatmap: str | None):
    """The process's ColorVideoVDP metric on ``device`` for :data:`DISPLAY`, built once (it loads its tables)."""
    key = (str(device), heatmap)
    if key not in _CVVDP:
        _CVVDP[key] = _pycvvdp().cvvdp(display_name=DISPLAY, device=device, heatmap=heatmap, quiet=True)
    return _CVVDP[key]


def jod(images: Value, references: Value, *, device: torch.device | str | None = None) -> np.ndarray:
    """ColorVideoVDP quality (JOD, 10 = no visible difference) of ``images`` (B, 3, H, W) against
    ``references``, both in [0, 1] and rounded to 8 bits, on the ``standard_4k`` display; computed on
    ``device`` (default: where the images are). Shape (B,)."""
    x, ref = _pairs(images, references, device)
    metric = _cvvdp_metric(x.device, None)
    with torch.no_grad():
        scores = [metric.predict(x[i], ref[i], dim_order="CHW")[0] for i in range(len(x))]
    return np.array([float(s) for s in scores])  # (B,)


def jod_map(images: Value, references: Value, *, device: torch.device | str | None = None) -> np.ndarray:
    """Where ColorVideoVDP sees the difference: its raw heat map, in JOD below 10 at each pixel (its
    ``heatmap="raw"`` times 10; 0 = invisible, 1 = one JOD), shape (B, H, W)."""
    x, ref = _pairs(images, references, device)
    metric = _cvvdp_metric(x.device, "raw")
    maps = []
    with torch.no_grad():
        for i in range(len(x)):
            stats = metric.predict(x[i], ref[i], dim_order="CHW")[1]
            maps.append(10 * stats["heatmap"][0, 0, 0].float().numpy())  # (H, W)
    return np.stack(maps)  # (B, H, W)


# ------------------------------------------------------------------------------------------- summaries


def visibility_table(images: Value, references: Value, *, names: list[str] | None = None) -> pd.DataFrame:
    """One row per image: ``butteraugli`` (max-norm), ``butteraugli 3-norm`` and ``JOD`` against its reference.

    Never raises for a missing ``butteraugli_main``: its cells are NaN and ``frame.attrs["note"]`` says "not
    measured" with the install hint (empty when everything was measured).
    """
    try:
        scores = butteraugli(images, references)
        distance, norm, note = scores.distance, scores.pnorm, ""
    except VisibilityUnavailable as err:
        distance = norm = np.full(len(as_images(images, "images")), math.nan)
        note = str(err)
    frame = pd.DataFrame({"butteraugli": distance, "butteraugli 3-norm": norm, "JOD": jod(images, references)},
                         index=names)
    frame.attrs["note"] = note
    return frame


def compare(images: Mapping[str, Value], references: Value, *, names: list[str] | None = None) -> pd.DataFrame:
    """:func:`visibility_table` of each set of images (say, each matcher's matches) against the same
    ``references``, one after the other: columns method, pair, butteraugli, butteraugli 3-norm, JOD, and
    ``invisible`` by both fixed thresholds. ``attrs["note"]`` is the first table's (what was not measured)."""
    tables = {name: visibility_table(x, references, names=names) for name, x in images.items()}
    frame = pd.concat(tables, names=["method", "pair"]).reset_index()
    frame["invisible"] = invisible_butteraugli(frame["butteraugli"]) & invisible_jod(frame["JOD"])
    frame.attrs["note"] = next(iter(tables.values())).attrs["note"]
    return frame


def spread(frame: pd.DataFrame, column: str) -> str:
    """A measure (``column`` of a visibility table) over the table's rows as a claim quotes it, e.g.
    "JOD 9.541-9.902 (median 9.870)"; "nan" where it was not measured."""
    values, digits = frame[column].to_numpy(dtype=float), DIGITS[column]  # (N,)
    return f"{column} {values.min():.{digits}f}-{values.max():.{digits}f} (median {np.median(values):.{digits}f})"


def _measured(frame: pd.DataFrame) -> bool:
    return bool(frame["butteraugli"].notna().all())  # butteraugli was measured (the tool was there)


def invisible_parts(frame: pd.DataFrame) -> tuple[Claim, ...]:
    """The parts of "people do not see these changes" over a visibility table's rows: median JOD at least
    :data:`~vitequiv.metrics.INVISIBLE_JOD` and, where butteraugli was measured, median butteraugli at most
    :data:`~vitequiv.metrics.INVISIBLE_BUTTERAUGLI`."""
    parts = (Claim("median JOD", "", "", evidence=median(frame["JOD"]), threshold=INVISIBLE_JOD, direction=">="),)
    if _measured(frame):
        parts += (Claim("median butteraugli", "", "", evidence=median(frame["butteraugli"]),
                        threshold=INVISIBLE_BUTTERAUGLI, direction="<="),)
    return parts


def less_visible_parts(better: pd.DataFrame, worse: pd.DataFrame, names: tuple[str, str]) -> tuple[Claim, ...]:
    """The parts of "the changes of ``better`` are less visible than those of ``worse``", two visibility tables
    of the same pairs in the same order, named by ``names``: median JOD gain (better - worse) at least 0 and,
    where butteraugli was measured, median butteraugli ratio (better / worse) at most 1."""
    gain = better["JOD"].to_numpy() - worse["JOD"].to_numpy()  # (N,) JOD, higher is less visible
    parts = (Claim(f"median JOD gain of {names[0]} over {names[1]}", "", "", evidence=median(gain), threshold=0.0,
                   direction=">="),)
    if _measured(better) and _measured(worse):
        ratio = better["butteraugli"].to_numpy() / worse["butteraugli"].to_numpy()  # (N,)
        parts += (Claim(f"median butteraugli ratio {names[0]} / {names[1]}", "", "", evidence=median(ratio),
                        threshold=1.0, direction="<="),)
    return parts


def equal_energy_noise(x0: Value, delta: Value, *, seed: int) -> torch.Tensor:
    """``x0`` plus random sign noise of the same L2 energy as the perturbation ``delta`` (B, 3, H, W), per image:
    the white-noise reference a change is compared with. 8-bit throughout: ``x0`` is rounded to 8 bits and each
    value moves up or down by whole gray levels, floor(a) or ceil(a) of them where a is delta's RMS in levels, in
    the mix that gives delta's energy exactly. A sign that would leave [0, 1] flips, so the energy stays exact
    (for delta's RMS up to 127 levels)."""
    x = quantize_8bit(as_images(x0, "x0"))  # (B, 3, H, W)
    d = as_floats(delta, "delta", like=x)
    if d.shape != x.shape:
        raise ValueError(f"delta must have x0's shape {tuple(x.shape)}, got {tuple(d.shape)}")
    g = torch.Generator().manual_seed(seed)
    n = x[0].numel()
    energy = d.flatten(1).double().pow(2).sum(dim=1) * LEVELS**2  # (B,) in squared levels
    levels = []
    for e in energy.tolist():
        lo = math.floor(math.sqrt(e / n))
        hi_count = round((e - n * lo**2) / (2 * lo + 1))  # values at lo + 1 levels: n lo^2 + k (2 lo + 1) = e
        k = torch.full((n,), float(lo))  # (3HW,)
        k[torch.randperm(n, generator=g)[:hi_count]] += 1
        levels.append(k)
    signs = torch.randint(0, 2, (len(x), n), generator=g).float() * 2 - 1  # (B, 3HW)
    size = (torch.stack(levels) / LEVELS).reshape(x.shape).to(x)  # (B, 3, H, W)
    signs = signs.reshape(x.shape).to(x)  # (B, 3, H, W)
    signs = torch.where(x + size * signs > 1, -1.0, torch.where(x + size * signs < 0, 1.0, signs))
    return quantize_8bit(x + size * signs)  # (B, 3, H, W)
