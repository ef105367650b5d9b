"""The "systematic evaluation" of arXiv 2402.08473: match each image to the embedding of an image of another
class, and measure how often a downstream model still gives it its source's label (near 0 when predictions
follow the embedding, as the paper argues they must)."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from .downstream import Array, ClassHead, Downstream, as_labels, as_numpy
from .metrics import linf_255, psnr, ssim
from .models import EmbeddingModel, embed_batched
from .tensors import Value, as_count, as_images, model_dtype, model_hw

if TYPE_CHECKING:
    import pandas as pd


def other_class_targets(labels: Array, seed: int = 0) -> np.ndarray:
    """For each image, the index (N,) of a uniformly drawn image of another class; the same for the same seed."""
    labels = as_labels(labels)  # (N,)
    if len(np.unique(labels)) < 2:
        raise ValueError("Systematic evaluation needs images of at least two classes.")
    rng = np.random.default_rng(seed)
    return np.array([rng.choice(np.flatnonzero(labels != y)) for y in labels])


@dataclass
class SystematicResult:
    """Per image i: the source label, the target's index and label, the downstream's probabilities and
    predictions on the original and on the matched image, and the matched image itself."""

    source_labels: np.ndarray  # (N,)
    target_indices: np.ndarray  # (N,) into the evaluated images
    target_labels: np.ndarray  # (N,)
    clean_proba: np.ndarray  # (N, K) on the originals
    matched_proba: np.ndarray  # (N, K) on the matched images
    matched_images: torch.Tensor  # (N, 3, H, W) in [0, 1], on the CPU
    embedding_cosine: np.ndarray  # (N,) cos(f(matched image), f(target image)): how well matching worked
    class_names: list[str]

    @property
    def clean_pred(self) -> np.ndarray:
        return self.clean_proba.argmax(axis=1)  # (N,)

    def rescored(self, downstream: Downstream, clean_emb: Array, matched_emb: Array) -> SystematicResult:
        """The same matched images judged by another downstream model, from the embeddings (N, D) of the
        originals and of the matched images: matching once serves every classifier of the same embedding."""
        return dataclasses.replace(self, clean_proba=downstream.predict_proba(clean_emb),
                                   matched_proba=downstream.predict_proba(matched_emb),
                                   class_names=downstream.class_names)

    @property
    def matched_pred(self) -> np.ndarray:
        return self.matched_proba.argmax(axis=1)  # (N,)

    @property
    def clean_accuracy(self) -> float:
        return float(np.mean(self.clean_pred == self.source_labels))

    @property
    def systematic_accuracy(self) -> float:
        """Accuracy on the matched images w.r.t. the source label: near 0 when predictions follow the embedding."""
        return float(np.mean(self.matched_pred == self.source_labels))

    @property
    def follows_embedding(self) -> float:
        """Fraction of matched images predicted as the target's label."""
        return float(np.mean(self.matched_pred == self.target_labels))

    @property
    def follows_target_prediction(self) -> float:
        """Fraction of matched images given the prediction the target image itself gets (right or wrong)."""
        return float(np.mean(self.matched_pred == self.clean_pred[self.target_indices]))

    @property
    def matched_target_proba(self) -> np.ndarray:
        """(N,) probability of the target's class on each matched image: near 1 when it follows the embedding."""
        return self.matched_proba[np.arange(len(self.source_labels)), self.target_labels]

    @property
    def matched_source_proba(self) -> np.ndarray:
        """(N,) probability of the source's own class on each matched image."""
        return self.matched_proba[np.arange(len(self.source_labels)), self.source_labels]

    @property
    def clean_source_proba(self) -> np.ndarray:
        """(N,) probability of the true class on each original image: the confidence to compare with."""
        return self.clean_proba[np.arange(len(self.source_labels)), self.source_labels]

    def image_quality(self, originals: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """PSNR (dB) and SSIM (N,) each of every matched image against its original (N, 3, H, W)."""
        return psnr(self.matched_images, originals).numpy(), ssim(self.matched_images, originals)

    def describe_matching(self, originals: torch.Tensor, psnr_db: np.ndarray, ssim_value: np.ndarray) -> str:
        """One line on how far matching went: cosine to the targets, the largest pixel change against the
        originals (N, 3, H, W), median PSNR and SSIM (from :meth:`image_quality`)."""
        return (f"matched {len(originals)} images; cosine to target mean {self.embedding_cosine.mean():.3f} "
                f"(min {self.embedding_cosine.min():.3f}); max |dx| "
                f"{linf_255(self.matched_images - originals).max():.1f}/255, PSNR median "
                f"{np.median(psnr_db):.1f} dB, SSIM median {np.median(ssim_value):.3f}")

    def summary(self) -> dict[str, float]:
        return {
            "images": len(self.source_labels),
            "clean_accuracy": self.clean_accuracy,
            "systematic_accuracy": self.systematic_accuracy,
            "follows_embedding": self.follows_embedding,
            "follows_target_prediction": self.follows_target_prediction,
            "mean_embedding_cosine": float(self.embedding_cosine.mean()),
        }


MatchFn = Callable[..., Any]  # (model, sources (B,3,H,W), targets, **kwargs) -> object with .images (B,3,H,W)


def systematic_evaluation(
    model: EmbeddingModel,
    downstream: Downstream,
    images: Value,
    labels: Array,
    *,
    targets: Array | None = None,
    seed: int = 0,
    match_fn: MatchFn | None = None,
    batch_size: int = 32,
    **match_kwargs,
) -> SystematicResult:
    """Match every image (N, 3, H, W) to the embedding of an image of another class and classify both.

    ``targets`` (N,) are indices into ``images``; by default :func:`other_class_targets` with ``seed``. Matching
    runs ``batch_size`` pairs at a time through ``match_fn`` (default :func:`vitequiv.matching.match_embeddings`,
    given the target images), with ``match_kwargs`` passed through (e.g. ``step_rule``, ``budget``,
    ``max_steps``). ``labels`` index ``downstream.class_names``. ``images`` in [0, 1] as
    :func:`vitequiv.matching.match_embeddings` takes them (tensors or NumPy arrays, any float dtype).
    """
    if match_fn is None:
        from .matching import match_embeddings as match_fn
    images = as_images(images, "images", dtype=model_dtype(model), hw=model_hw(model))  # (N, 3, H, W)
    batch_size = as_count(batch_size, "batch_size")
    labels = as_labels(labels, count=len(images), num_classes=len(downstream.class_names))  # (N,)
    if targets is None:
        targets = other_class_targets(labels, seed)  # (N,)
    else:
        targets = as_labels(targets, "targets", count=len(labels), num_classes=len(labels),
                            indexing="the images")  # (N,)
    if np.any(labels[targets] == labels):
        raise ValueError("Every target must be an image of another class than its source.")
    clean = embed_batched(model, images, batch_size)  # (N, D)
    matched = []
    for rows in torch.arange(len(labels)).split(batch_size):
        sources = images[rows].to(model.device)  # (B, 3, H, W)
        target_images = images[torch.as_tensor(targets[rows.numpy()])].to(model.device)  # (B, 3, H, W)
        matched.append(match_fn(model, sources, target_images, **match_kwargs).images.detach().cpu())
    matched_images = torch.cat(matched)  # (N, 3, H, W)
    matched_emb = embed_batched(model, matched_images, batch_size)  # (N, D)
    return SystematicResult(
        source_labels=labels,
        target_indices=targets,
        target_labels=labels[targets],
        clean_proba=downstream.predict_proba(clean),
        matched_proba=downstream.predict_proba(matched_emb),
        matched_images=matched_images,
        embedding_cosine=as_numpy(F.cosine_similarity(matched_emb, clean[torch.as_tensor(targets)], dim=1)),
        class_names=downstream.class_names,
    )


def evaluate_classifiers(
    model: EmbeddingModel, classifiers: Mapping[str, Downstream], images: Value, labels: Array, clean_emb: Array,
    *, seed: int = 0, **match_kwargs,
) -> dict[str, SystematicResult]:
    """:func:`systematic_evaluation` of every classifier of ``model``'s embedding on the same matched images:
    matching runs once, for the first classifier, and the others are :meth:`~SystematicResult.rescored` from the
    originals' embeddings ``clean_emb`` (N, D) and the matched images' embeddings."""
    (first_name, first), *others = classifiers.items()
    result = systematic_evaluation(model, first, images, labels, seed=seed, **match_kwargs)
    matched_emb = embed_batched(model, result.matched_images)  # (N, D)
    return {first_name: result} | {name: result.rescored(clf, clean_emb, matched_emb) for name, clf in others}


def own_head_evaluation(head_model: EmbeddingModel, images: Value, *, seed: int = 0,
                        **match_kwargs) -> SystematicResult:
    """:func:`systematic_evaluation` of ``head_model``'s own class head (:class:`ClassHead`), each image labeled
    by the head's own prediction on it (images without labels of the head's classes): clean accuracy is 1 by
    construction, systematic accuracy says how often that prediction survives matching."""
    head = ClassHead(head_model)
    own = head.predict(embed_batched(head_model, images))  # (N,) pseudo-labels: the head's own answers
    return systematic_evaluation(head_model, head, images, own, seed=seed, **match_kwargs)


def summary_table(results: Mapping[tuple[str, str], SystematicResult]) -> pd.DataFrame:
    """One row per (labeled set, classifier) evaluated: test images, classes, clean and systematic accuracy, the
    follows-embedding and follows-target's-prediction rates, and the mean cosine of the matched to the target."""
    import pandas as pd

    return pd.DataFrame([
        {"labeled set": name, "classifier": clf, "test images": len(r.source_labels), "classes": len(r.class_names),
         "clean accuracy": r.clean_accuracy, "systematic accuracy": r.systematic_accuracy,
         "follows-embedding rate": r.follows_embedding, "follows target's prediction": r.follows_target_prediction,
         "cosine matched-target (mean)": r.embedding_cosine.mean()}
        for (name, clf), r in results.items()
    ])
