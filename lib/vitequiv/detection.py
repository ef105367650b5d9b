"""Detecting matched images with noise, how matches survive common image transforms, and matching robustly (EOT).

The paper group's follow-up (arXiv 2402.08473) notes that an embedding-matched image sits in a fragile spot:
a little Gaussian noise moves its embedding much further than it moves a clean photo's. This module measures

- :func:`clean_images`: the clean images a detector must pass (photos and random views, 8-bit);
  :func:`cosine_to_targets`: how close matched images are to their targets, as a model sees them;
- :func:`noise_shift`: the embedding shift 1 - cos(f(x + noise), f(x)) at several noise sizes sigma (in 1/255
  units), averaged over seeded noise draws, per image;
- :func:`roc`: a detector's ROC curve and AUC from scores of clean (label 0) and matched (label 1) images;
  :func:`auc_evidence`: the AUC with its 95 % interval (a bootstrap over both sets of images), for a claim;
  :func:`detector_auc_table` / :func:`auc_by_sigma`: the AUC per matched set and noise size;
- :func:`standard_transforms` / :func:`survival`: how a match survives 8-bit rounding, JPEG, resizing, small
  crops and blur: survival = cosine of f(T(x_matched)) to the target embedding; :func:`survival_summary`,
  :func:`survival_comparison`, :func:`transform_medians`, :func:`follows_rate` and :func:`processed_cosines` sum
  it up;
- :class:`EOTModel`: expectation over transformation (Athalye et al. 2018): ``embed(x)`` averages
  ``model.embed(T(x))`` over random differentiable transforms, so ``match_embeddings(EOTModel(...), ...)``
  looks for matches that hold across the transforms.

Images are (B, 3, H, W) floats in [0, 1]; every transform maps such a batch to one of the same shape and range.
"""
from __future__ import annotations

import io
import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import metrics
from .models import embed_batched, forward_attribute
from .tensors import (
    Value,
    as_count,
    as_images,
    as_lengths,
    as_positive,
    model_dtype,
    model_hw,
    target_embeddings,
)

Transform = Callable[[Tensor], Tensor]


# -------------------------------------------------------------------------------------------- image sets


def clean_images(photos: Tensor, n_views: int = 0, *, seed: int = 0) -> Tensor:
    """The clean images (N, 3, S, S) a detector must let pass, rounded to 8 bits (what an image file holds):
    ``photos`` (the bundled photos, (B, 3, S, S)), then ``n_views`` seeded random crop/flip views of each
    (:func:`vitequiv.images.view_set`) on the photos' device."""
    from .images import view_set

    clean = [metrics.quantize_8bit(photos)]
    if n_views:
        views, _, _ = view_set(views_per_image=n_views, size=photos.shape[-1], seed=seed)  # (B n_views, 3, S, S)
        clean.append(metrics.quantize_8bit(views.to(photos.device)))
    return torch.cat(clean)


@torch.no_grad()
def cosine_to_targets(model, images: Tensor, targets: Tensor) -> np.ndarray:
    """(N,) cosine of the model's embeddings of ``images`` (N, 3, H, W) to ``targets`` (N, D): how close each
    matched image is to its target as ``model`` sees it (e.g. the plain model looking at an EOT match)."""
    return metrics.cosine(model.embed(images), targets).cpu().numpy()


# -------------------------------------------------------------------------------------------- noise detector


@torch.no_grad()
def noisy_embeddings(
    model, images: Value, size_255: float, *, n_draws: int = 4, kind: Literal["gaussian", "sign"] = "gaussian",
    generator: torch.Generator | None = None, seed: int = 0, batch_size: int = 16, clamp: bool = True,
) -> tuple[Tensor, Tensor]:
    """Embeddings (n_draws, N, D) of ``images`` (N, 3, H, W) plus random noise, and the noise's L2 size (n_draws, N)
    in 1/255 units, measured after clipping to [0, 1] (when ``clamp``).

    ``kind="gaussian"``: n ~ N(0, (size/255)^2) per pixel value; ``kind="sign"``: +-size/255 per pixel value with
    random signs (a corner of the L-inf ball of that radius, the strongest random change it allows). Draws come
    from ``generator`` (default: a new one on the images' device seeded with ``seed``), so a shared generator
    continues one random stream across calls. ``images`` may be a NumPy array or of any float dtype (computed in
    the model's dtype); pixels outside [0, 1] are refused.
    """
    _check_noise(kind, n_draws, batch_size, clamp, seed)
    size_255 = as_positive(size_255, "size_255", allow_zero=True)
    images = as_images(images, "images", dtype=model_dtype(model), hw=model_hw(model))  # (N, 3, H, W)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    gen = generator if generator is not None else torch.Generator(device=images.device).manual_seed(seed)
    embeddings, sizes = [], []
    for _ in range(n_draws):
        if kind == "gaussian":
            noise = torch.randn(images.shape, generator=gen, device=gen.device, dtype=images.dtype).to(images)
        else:
            noise = (torch.randint(0, 2, images.shape, generator=gen, device=gen.device) * 2 - 1).to(images)
        noisy = images + noise * (size_255 / metrics.LEVELS)
        noisy = noisy.clamp(0, 1) if clamp and size_255 > 0 else noisy
        embeddings.append(embed_batched(model, noisy, batch_size))  # (N, D)
        sizes.append(metrics.l2_255(noisy - images))  # (N,)
    return torch.stack(embeddings), torch.stack(sizes)


def _check_noise(kind: str, n_draws: int, batch_size: int, clamp: bool, seed: int) -> None:
    if kind not in ("gaussian", "sign"):
        raise ValueError(f"kind must be 'gaussian' or 'sign', got {kind!r}")
    as_count(n_draws, "n_draws")
    as_count(batch_size, "batch_size")
    as_count(seed, "seed", minimum=0)
    if not isinstance(clamp, bool):
        raise TypeError(f"clamp must be True or False, got {clamp!r}")


@torch.no_grad()
def noise_shift(
    model, images: Value, sigmas_255: Sequence[float], *, n_draws: int = 4,
    kind: Literal["gaussian", "sign"] = "gaussian", seed: int = 0, batch_size: int = 16, clamp: bool = True,
) -> np.ndarray:
    """Embedding shift under random noise, shape (N, S): mean over ``n_draws`` of 1 - cos(f(x + n), f(x)).

    Noise of each size in ``sigmas_255`` as in :func:`noisy_embeddings` (Gaussian by default), from one generator
    seeded with ``seed`` (the same draws for every image set given the same seed and shapes). A size of 0 gives
    a shift of 0 (up to float rounding). ``images`` (N, 3, H, W) in [0, 1] as :func:`match_embeddings` takes them:
    0-255 pixels are refused.
    """
    _check_noise(kind, n_draws, batch_size, clamp, seed)
    images = as_images(images, "images", dtype=model_dtype(model), hw=model_hw(model))  # (N, 3, H, W)
    sigmas_255 = as_lengths(sigmas_255, "sigmas_255", allow_zero=True).tolist()  # (S,)
    gen = torch.Generator(device=images.device).manual_seed(seed)
    clean = embed_batched(model, images, batch_size).double()  # (N, D)
    out = np.zeros((len(images), len(sigmas_255)))
    for j, sigma in enumerate(sigmas_255):
        noisy, _ = noisy_embeddings(model, images, sigma, n_draws=n_draws, kind=kind, generator=gen,
                                    batch_size=batch_size, clamp=clamp)  # (n_draws, N, D)
        shift = 1 - F.cosine_similarity(noisy.double(), clean[None], dim=-1)  # (n_draws, N)
        out[:, j] = shift.mean(dim=0).cpu().numpy()
    return out


@dataclass
class ROC:
    """A detector's ROC curve (false/true positive rates at each threshold) and its area."""

    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray
    auc: float

    def tpr_at(self, fpr: float) -> float:
        """True-positive rate at the largest threshold whose false-positive rate is at most ``fpr``."""
        ok = self.fpr <= fpr
        return float(self.tpr[ok].max()) if ok.any() else 0.0


def roc(clean_scores: Sequence[float], matched_scores: Sequence[float]) -> ROC:
    """ROC and AUC of "score above threshold means matched", clean images negative, matched positive."""
    from sklearn.metrics import roc_auc_score, roc_curve

    clean, matched = np.asarray(clean_scores, float).ravel(), np.asarray(matched_scores, float).ravel()
    y = np.r_[np.zeros(len(clean)), np.ones(len(matched))]
    s = np.r_[clean, matched]
    fpr, tpr, thr = roc_curve(y, s)
    return ROC(fpr, tpr, thr, float(roc_auc_score(y, s)))


def _auc(clean: np.ndarray, matched: np.ndarray, axis: int = -1) -> np.ndarray:
    """AUC as the share of (clean, matched) pairs the score orders right (ties count half), over the last axis;
    leading axes are resamples."""
    c, m = np.moveaxis(clean, axis, -1)[..., None, :], np.moveaxis(matched, axis, -1)[..., :, None]
    return (m > c).mean(axis=(-2, -1)) + 0.5 * (m == c).mean(axis=(-2, -1))


def auc_evidence(clean_scores: Sequence[float], matched_scores: Sequence[float],
                 reference_scores: Sequence[float] | None = None, *, seed: int = 0):
    """The detector's AUC (clean negative, matched positive) with its 95 % interval, as claim evidence: a
    bootstrap that resamples the clean and the matched images independently (``scipy.stats.bootstrap``,
    9,999 resamples, percentile). With ``reference_scores`` (another matched set, e.g. plain matches) it is the
    difference AUC(matched) - AUC(reference) against the same clean images, all three sets resampled. n is the
    number of matched images, the smaller set that limits the interval; fewer than ``claims.MIN_ITEMS`` give no
    interval (``claims.UNBOUNDED``)."""
    from scipy import stats

    from .claims import CONFIDENCE, N_RESAMPLES, Evidence, too_few

    samples = [np.asarray(s, float).ravel() for s in (clean_scores, matched_scores, reference_scores)
               if s is not None]
    if any(len(s) == 0 or not np.all(np.isfinite(s)) for s in samples):
        raise ValueError("auc_evidence: every set needs at least one score, all finite")

    def statistic(clean, matched, *reference, axis=-1):
        value = _auc(clean, matched, axis)
        return value - _auc(clean, reference[0], axis) if reference else value

    value = float(statistic(*samples))
    n = min(len(s) for s in samples[1:])
    what = "AUC" if reference_scores is None else "AUC difference"
    few = too_few("mean", value, n, f"{what} (mean over clean x matched pairs)")
    if few is not None:
        return few
    varied = [i for i, s in enumerate(samples) if len(s) >= 2]  # a set of one image cannot be resampled: held fixed

    def resampled(*data, axis=-1):
        full = list(samples)
        for i, d in zip(varied, data):
            full[i] = d
        shape = np.broadcast_shapes(*(d.shape[:-1] for d in data))
        return statistic(*(np.broadcast_to(f, (*shape, f.shape[-1])) for f in full), axis=axis)

    batch = max(1, 2_000_000 // (len(samples[0]) * max(len(s) for s in samples[1:])))
    result = stats.bootstrap(tuple(samples[i] for i in varied), resampled, n_resamples=N_RESAMPLES, batch=batch,
                             vectorized=True, paired=False, confidence_level=CONFIDENCE, method="percentile",
                             rng=np.random.default_rng(seed))
    low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
    fixed = "" if len(varied) == len(samples) else "; a set of one image held fixed"
    return Evidence("mean", value, n, min(low, value), max(high, value),
                    f"{what} (mean over clean x matched pairs); bootstrap over clean and matched images, "
                    f"{N_RESAMPLES:,} resamples, percentile, seed {seed}{fixed}")


def detector_auc_table(clean_shift: np.ndarray, matched_shift: dict[str, np.ndarray],
                       sigmas_255: Sequence[float]) -> pd.DataFrame:
    """AUC of the noise-shift detector at each sigma, one row per (matched set, sigma)."""
    rows = []
    for name, shift in matched_shift.items():
        for j, sigma in enumerate(sigmas_255):
            r = roc(clean_shift[:, j], shift[:, j])
            rows.append({"matched set": name, "sigma (1/255)": sigma, "AUC": r.auc, "TPR at 5% FPR": r.tpr_at(0.05),
                         "median shift clean": float(np.median(clean_shift[:, j])),
                         "median shift matched": float(np.median(shift[:, j]))})
    return pd.DataFrame(rows)


def auc_by_sigma(auc_table: pd.DataFrame, sets: Sequence[str]) -> np.ndarray:
    """The AUC column of :func:`detector_auc_table` as an array (len(sets), S): one row per matched set in
    ``sets``, sigmas in increasing order."""
    by_sigma = auc_table.set_index(["matched set", "sigma (1/255)"])["AUC"].unstack(0)  # (S, matched sets)
    return by_sigma[list(sets)].T.values


# ------------------------------------------------------------------------------------- fixed transforms


def jpeg(x: Tensor, quality: int) -> Tensor:
    """JPEG round trip through PIL in memory (4:2:0 chroma subsampling, PIL's default), per image."""
    from PIL import Image

    out = []
    for im in metrics.quantize_8bit(x.detach()).cpu():
        array = (im.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)  # (H, W, 3)
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format="JPEG", quality=int(quality))
        buffer.seek(0)
        with Image.open(buffer) as decoded:
            out.append(torch.from_numpy(np.asarray(decoded.convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1))
    return torch.stack(out).to(x)  # (B, 3, H, W)


def resize_round_trip(x: Tensor, scale: float) -> Tensor:
    """Resize to ``scale`` of the side (antialiased bilinear), then back to the original size."""
    h, w = x.shape[-2:]
    small = F.interpolate(x, size=(max(1, round(h * scale)), max(1, round(w * scale))), mode="bilinear",
                          align_corners=False, antialias=scale < 1)
    return F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False).clamp(0, 1)


def crop_resize(x: Tensor, frac: float, top: float = 0.5, left: float = 0.5) -> Tensor:
    """Crop ``frac`` of each side (its position: ``top``/``left`` in [0, 1] of the free margin), resize back."""
    h, w = x.shape[-2:]
    ch, cw = max(1, round(h * frac)), max(1, round(w * frac))
    i, j = round((h - ch) * top), round((w - cw) * left)
    return F.interpolate(x[..., i:i + ch, j:j + cw], size=(h, w), mode="bilinear", align_corners=False).clamp(0, 1)


def blur(x: Tensor, sigma: float) -> Tensor:
    """Gaussian blur with standard deviation ``sigma`` pixels (kernel 2*ceil(3 sigma)+1), differentiable."""
    import torchvision.transforms.functional as TF

    k = 2 * math.ceil(3 * sigma) + 1
    return TF.gaussian_blur(x, kernel_size=[k, k], sigma=[sigma, sigma])


def standard_transforms(
    jpeg_qualities: Sequence[int] = (95, 75, 50), resize_scales: Sequence[float] = (0.75, 0.5),
    crop_fracs: Sequence[float] = (0.9,), blur_sigmas: Sequence[float] = (0.5, 1.0),
) -> dict[str, Transform]:
    """Common "benign" transforms an image meets on its way to a model, by name (identity first)."""
    t: dict[str, Transform] = {"identity": lambda x: x, "8-bit rounding": metrics.quantize_8bit}
    t |= {f"JPEG q{q}": (lambda x, q=q: jpeg(x, q)) for q in jpeg_qualities}
    t |= {f"resize x{s:g} and back": (lambda x, s=s: resize_round_trip(x, s)) for s in resize_scales}
    t |= {f"crop {f:.0%} + resize": (lambda x, f=f: crop_resize(x, f)) for f in crop_fracs}
    t |= {f"blur sigma {s:g} px": (lambda x, s=s: blur(x, s)) for s in blur_sigmas}
    return t


@torch.no_grad()
def survival(
    model, matched: Value, targets: Value, transforms: dict[str, Transform], *, sources: Value | None = None,
    stop_cos: float = 0.99, batch_size: int = 16,
) -> pd.DataFrame:
    """How matches survive each transform: one row per (transform, pair).

    ``matched`` (N, 3, H, W) in [0, 1]; ``targets`` as :func:`match_embeddings` takes them: target embeddings
    (N, D) or target images (N, 3, H, W), one per matched image. Columns: ``cos_target`` = cosine of
    f(T(x_matched)) to the target embedding; ``survives`` = cos_target >= ``stop_cos``; with ``sources`` (the
    unmodified source images, (N, 3, H, W)) also ``cos_source`` = cosine of f(T(x_matched)) to f(T(source)) and
    ``follows_target`` = cos_target > cos_source (a nearest-neighbor downstream would still take the target's
    label).
    """
    dtype = model_dtype(model)
    matched = as_images(matched, "matched", dtype=dtype, hw=model_hw(model))  # (N, 3, H, W)
    targets = target_embeddings(model, targets, "targets", pairs=len(matched), per="matched images")
    targets = targets.to(matched.device).double()  # (N, D)
    if sources is not None:
        sources = as_images(sources, "sources", device=matched.device, dtype=dtype)
        if sources.shape != matched.shape:
            raise ValueError(f"sources must have the shape of matched {tuple(matched.shape)}, got "
                             f"{tuple(sources.shape)}")
    _check_transforms(transforms)
    if isinstance(stop_cos, bool) or not isinstance(stop_cos, numbers.Real) or not -1 <= stop_cos <= 1:
        raise ValueError(f"stop_cos must be a cosine in [-1, 1], got {stop_cos!r}")
    batch_size = as_count(batch_size, "batch_size")
    rows = []
    for name, T in transforms.items():
        emb = embed_batched(model, T(matched), batch_size).double()  # (N, D)
        cos_t = F.cosine_similarity(emb, targets, dim=1).cpu().numpy()
        frame = {"transform": name, "pair": np.arange(len(matched)), "cos_target": cos_t,
                 "survives": cos_t >= stop_cos}
        if sources is not None:
            cos_s = F.cosine_similarity(emb, embed_batched(model, T(sources), batch_size).double(), dim=1).cpu().numpy()
            frame |= {"cos_source": cos_s, "follows_target": cos_t > cos_s}
        rows.append(pd.DataFrame(frame))
    return pd.concat(rows, ignore_index=True)


def _check_transforms(transforms: object) -> None:
    if not isinstance(transforms, dict) or not transforms:
        raise TypeError(f"transforms must be a non-empty dict of name -> callable (see standard_transforms()), "
                        f"got {type(transforms).__name__}")
    for name, t in transforms.items():
        if not callable(t):
            raise TypeError(f"transforms[{name!r}] must be a callable (B, 3, H, W) -> (B, 3, H, W), got {t!r}")


def survival_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Per transform: median cosine to the target and the fractions that survive / still follow the target."""
    agg = {"median cos to target": ("cos_target", "median"), "survival rate": ("survives", "mean")}
    if "follows_target" in frame:
        agg["follows target"] = ("follows_target", "mean")
    return frame.groupby("transform", sort=False).agg(**agg).reset_index()


def survival_comparison(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """:func:`survival_summary` of several matchings (name -> :func:`survival` frame, e.g. plain and EOT) one
    below the other, the matching's name in a first column ``match``."""
    summary = pd.concat([survival_summary(frame).assign(match=name) for name, frame in frames.items()])
    return summary[["match", *summary.columns.drop("match")]]


def _processed(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["transform"] != "identity"]


def transform_medians(frame: pd.DataFrame) -> pd.Series:
    """Median cosine to the target per transform of a :func:`survival` frame, identity left out (transform order
    kept)."""
    return _processed(frame).groupby("transform", sort=False)["cos_target"].median()


def follows_rate(frame: pd.DataFrame) -> float:
    """Fraction of the (transform, pair) rows of a :func:`survival` frame, identity left out, whose image still
    embeds closer to the target than to the transformed source."""
    return _processed(frame)["follows_target"].mean()


def processed_cosines(frame: pd.DataFrame) -> pd.Series:
    """Cosine to the target of the (transform, pair) rows of a :func:`survival` frame whose transform processes the
    image (JPEG, resizing, cropping, blur): all but identity and 8-bit rounding, in the frame's order and index."""
    return frame.loc[~frame["transform"].isin(["identity", "8-bit rounding"]), "cos_target"]


# ------------------------------------------------------------------------------------- random transforms (EOT)

RandomTransform = Callable[[Tensor, torch.Generator], Tensor]


def _uniform(gen: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=gen))


def random_noise(max_sigma_255: float = 8.0) -> RandomTransform:
    """Gaussian noise with sigma ~ U(0, max_sigma_255)/255, clipped to [0, 1] (the clip passes gradients inside)."""
    def t(x: Tensor, gen: torch.Generator) -> Tensor:
        sigma = _uniform(gen, 0, max_sigma_255) / metrics.LEVELS
        noise = torch.randn(x.shape, generator=gen, dtype=x.dtype).to(x.device)
        return (x + sigma * noise).clamp(0, 1)
    return t


def random_resize(min_scale: float = 0.5) -> RandomTransform:
    """Resize to a scale ~ U(min_scale, 1) of the side and back (bilinear), differentiable."""
    return lambda x, gen: resize_round_trip(x, _uniform(gen, min_scale, 1.0))


def random_crop(min_frac: float = 0.85) -> RandomTransform:
    """A crop of ~U(min_frac, 1) of each side at a random position, resized back."""
    return lambda x, gen: crop_resize(x, _uniform(gen, min_frac, 1.0), _uniform(gen, 0, 1), _uniform(gen, 0, 1))


def random_blur(max_sigma: float = 1.0) -> RandomTransform:
    """Gaussian blur with sigma ~ U(0.1, max_sigma) pixels."""
    return lambda x, gen: blur(x, _uniform(gen, 0.1, max_sigma))


def random_jpeg(min_quality: int = 50, max_quality: int = 95) -> RandomTransform:
    """JPEG at a random quality with a straight-through gradient: the forward pass is the real JPEG round trip,
    the backward pass treats it as the identity (JPEG's rounding has no useful derivative)."""
    def t(x: Tensor, gen: torch.Generator) -> Tensor:
        q = int(round(_uniform(gen, min_quality, max_quality)))
        return x + (jpeg(x, q) - x).detach()
    return t


def random_choice(*options: RandomTransform) -> RandomTransform:
    """One of ``options``, drawn uniformly each call."""
    def t(x: Tensor, gen: torch.Generator) -> Tensor:
        return options[int(torch.randint(len(options), (), generator=gen))](x, gen)
    return t


def default_eot_transforms(jpeg_st: bool = False) -> list[RandomTransform]:
    """The EOT distribution used in the notebooks: each sample applies one of noise, resize, crop, blur
    (and a straight-through JPEG if ``jpeg_st``)."""
    options = [random_noise(8.0), random_resize(0.5), random_crop(0.85), random_blur(1.0)]
    return [random_choice(*options, *([random_jpeg()] if jpeg_st else []))]


class EOTModel(nn.Module):
    """``embed(x)`` = mean over ``n_draws`` draws of ``model.embed(T_k(...T_1(x)))``, T_i from ``transforms``.

    Each draw applies every callable in ``transforms`` in turn (each ``(x, generator) -> x``, e.g.
    :func:`random_choice` of several). Draws come from a generator seeded with ``seed`` that advances with every
    call, so two EOTModels with the same seed give the same sequence of outputs; :meth:`reset` rewinds it.
    Differentiable w.r.t. x (JPEG only through :func:`random_jpeg`'s straight-through). The whole batch shares
    one draw per sample. Costs ``n_draws`` forward/backward passes per call.
    """

    def __init__(self, model, transforms: Sequence[RandomTransform], n_draws: int = 4, seed: int = 0) -> None:
        if not callable(getattr(model, "embed", None)):
            raise TypeError(f"model must have an embed method (an EmbeddingModel), got {type(model).__name__}")
        if isinstance(transforms, (str, bytes)) or not isinstance(transforms, Sequence) or not all(
                callable(t) for t in transforms):
            raise TypeError("transforms must be a list of callables (x, generator) -> x (see "
                            f"default_eot_transforms()), got {transforms!r}")
        n_draws, seed = as_count(n_draws, "n_draws"), as_count(seed, "seed", minimum=0)
        super().__init__()
        self.model = model
        self.transforms = list(transforms)
        self.n_draws, self.seed = n_draws, seed
        self.reset()

    def reset(self) -> None:
        self.generator = torch.Generator().manual_seed(self.seed)

    def __getattr__(self, name: str):  # mean, std, device, input_size, embed_dim, name of the wrapped model
        return forward_attribute(self, name)

    def embed(self, x: Tensor) -> Tensor:
        total = 0
        for _ in range(self.n_draws):
            z = x
            for t in self.transforms:
                z = t(z, self.generator)
            total = total + self.model.embed(z)  # (B, D)
        return total / self.n_draws

    forward = embed
