"""Downstream models that see only an image's embedding: a linear probe, k-NN and the model's own class head.

The paper's point: whatever sits on top of a ViT embedding follows the embedding, not the picture. Every
classifier here (and CLIP zero-shot in :mod:`vitequiv.clip`) therefore has the same small interface on
embeddings (N, D): ``predict_proba -> (N, K)`` and ``predict -> (N,)``, with ``class_names``;
:mod:`vitequiv.systematic` measures how often their predictions follow the embedding of a matched image.

Probabilities, predictions and labels come back as NumPy arrays (what notebooks plot); embeddings may be given
as torch tensors on any device or as arrays.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from .models import EmbeddingModel
from .tensors import as_count, as_embeddings, as_positive

Array = torch.Tensor | np.ndarray


def as_numpy(x: Array) -> np.ndarray:
    """A tensor (any device) or array-like as a NumPy array (float32 for tensors)."""
    return x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def as_labels(labels: object, name: str = "labels", *, count: int | None = None, num_classes: int | None = None,
              indexing: str = "the class names") -> np.ndarray:
    """Class indices (N,) as int64: integers (or whole floats) >= 0, below ``num_classes`` when given, ``count``
    of them when given; anything else is a TypeError / ValueError naming ``name`` (and what it indexes)."""
    if isinstance(labels, (str, bytes)):
        raise TypeError(f"{name} must be a sequence of class indices, got the string {labels!r}")
    values = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if values.dtype == np.bool_ or values.dtype.kind not in "uif":
        raise TypeError(f"{name} must be integer class indices, got dtype {values.dtype}")
    if values.ndim != 1 or len(values) == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence of class indices, got shape {values.shape}")
    if count is not None and len(values) != count:
        raise ValueError(f"{name} must be {count} class indices (one per embedding or image), got {len(values)}")
    if not (np.isfinite(values).all() and (values == np.round(values)).all()):
        raise ValueError(f"{name} must be whole numbers (class indices), got {values.tolist()[:8]}")
    top = "" if num_classes is None else f"..{num_classes - 1}"
    if values.min() < 0 or (num_classes is not None and values.max() >= num_classes):
        raise ValueError(f"{name} must index {indexing} (0{top}), got values {values.min():g}..{values.max():g}")
    return values.astype(np.int64)


def _class_names(class_names: object) -> list[str]:
    if isinstance(class_names, (str, bytes)) or not isinstance(class_names, Sequence):
        raise TypeError(f"class_names must be a list of names, got {class_names!r}")
    names = list(class_names)
    if not names or not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
        raise ValueError(f"class_names must be distinct strings, at least one, got {names!r}")
    return names


# ------------------------------------------------------------------------------------------ classifiers


class Downstream(ABC):
    """A classifier of embeddings: all a downstream task ever sees of an image."""

    class_names: list[str]

    @abstractmethod
    def predict_proba(self, embeddings: Array) -> np.ndarray:
        """Class probabilities (N, K) of embeddings (N, D); rows sum to 1."""

    def predict(self, embeddings: Array) -> np.ndarray:
        return self.predict_proba(embeddings).argmax(axis=1)  # (N,)


class _Fitted(Downstream):
    """A scikit-learn classifier fitted on labeled embeddings; labels are class indices 0..K-1."""

    def __init__(self, estimator) -> None:
        self.estimator = estimator
        self.class_names: list[str] = []
        self.width: int | None = None  # the embedding width it was fitted on

    def fit(self, embeddings: Array, labels: Array, class_names: Sequence[str] | None = None) -> _Fitted:
        """Fit on embeddings (N, D) with ``labels`` (N,) indexing ``class_names`` (default: "0".."K-1" for
        K = max label + 1); a label outside the class names (or -1) is refused here, not at predict time."""
        x = as_embeddings(embeddings, "embeddings").cpu().numpy()  # (N, D)
        names = None if class_names is None else _class_names(class_names)
        labels = as_labels(labels, count=len(x), num_classes=None if names is None else len(names))  # (N,)
        self.class_names = names if names is not None else [str(k) for k in range(int(labels.max()) + 1)]
        self.estimator.fit(x, labels)
        self.width = x.shape[1]
        return self

    def predict_proba(self, embeddings: Array) -> np.ndarray:
        if self.width is None:
            raise ValueError(f"this {type(self).__name__} is not fitted yet; call fit(embeddings, labels) first")
        x = as_embeddings(embeddings, "embeddings", width=self.width).cpu().numpy()  # (N, D)
        seen = self.estimator.classes_  # the labels present in the training set, as columns
        proba = np.zeros((len(x), len(self.class_names)))  # (N, K)
        proba[:, seen] = self.estimator.predict_proba(x)
        return proba


class LinearProbe(_Fitted):
    """Multinomial logistic regression on standardized embeddings (scikit-learn, L-BFGS).

    scikit-learn rather than a torch layer: the fit is deterministic and needs no tuning, and nothing here
    differentiates through the probe (matching targets embeddings, not labels). ``C`` is the inverse L2 strength.
    """

    def __init__(self, C: float = 1.0, max_iter: int = 5000) -> None:
        C, max_iter = as_positive(C, "C"), as_count(max_iter, "max_iter")
        super().__init__(make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter)))


class KNN(_Fitted):
    """k-nearest neighbors by cosine distance; probabilities are the neighbors' vote fractions."""

    def __init__(self, k: int = 5) -> None:
        k = as_count(k, "k")
        super().__init__(KNeighborsClassifier(n_neighbors=k, metric="cosine"))
        self.k = k

    def fit(self, embeddings: Array, labels: Array, class_names: Sequence[str] | None = None) -> KNN:
        self.estimator.set_params(n_neighbors=min(self.k, len(as_embeddings(embeddings, "embeddings"))))
        return super().fit(embeddings, labels, class_names)


def probe_and_knn(embeddings: Array, labels: Array, class_names: Sequence[str], k: int = 5) -> dict[str, _Fitted]:
    """A :class:`LinearProbe` and a cosine :class:`KNN` with ``k`` neighbors, both fitted on the same labeled
    embeddings (N, D), by name ("linear probe", "<k>-NN (cosine)"): the two downstream models fitted offline."""
    return {"linear probe": LinearProbe().fit(embeddings, labels, class_names),
            f"{k}-NN (cosine)": KNN(k=k).fit(embeddings, labels, class_names)}


class ClassHead(Downstream):
    """The model's own classifier head, applied to its embedding: ``softmax(head(embed(x)))``.

    For timm ViTs the head is a linear layer on exactly the embedding ``embed`` returns, so this equals
    ``softmax(model.classify(x))``; the constructor checks that on one random image and refuses models where it
    does not hold. Class names are ImageNet's (first synonym) when the head size tells the subset.
    """

    def __init__(self, model: EmbeddingModel) -> None:
        from timm.data import ImageNetInfo, infer_imagenet_subset

        if model.num_classes == 0:
            raise ValueError(f"{model.name} has no class head; fit a LinearProbe or KNN on its embeddings instead.")
        self.head = model.backbone.get_classifier()
        x = torch.rand(1, 3, model.input_size, model.input_size, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            x = x.to(model.device)
            if not isinstance(self.head, torch.nn.Module) or not torch.allclose(
                self.head(model.embed(x)), model.classify(x), rtol=1e-3, atol=1e-4
            ):
                raise ValueError(f"The head of {model.name} is not a layer on its embedding; ClassHead cannot wrap it.")
        subset = infer_imagenet_subset(model.backbone)
        info = ImageNetInfo(subset) if subset else None
        self.class_names = [
            info.index_to_description(k).split(",")[0] if info else f"class {k}" for k in range(model.num_classes)
        ]

    @torch.no_grad()
    def predict_proba(self, embeddings: Array) -> np.ndarray:
        weight = next(self.head.parameters())
        x = as_embeddings(embeddings, "embeddings", width=weight.shape[1], device=weight.device, dtype=weight.dtype)
        logits = self.head(x)  # (N, K)
        return as_numpy(logits.softmax(dim=1).double())


PHOTO_PROMPTS = {  # what CLIP's text tower is told each bundled photo shows, where its name does not say it
    "motorcycle_left": "motorcycle", "motorcycle_right": "motorcycle", "grace_hopper": "woman in uniform",
    "cells": "microscope image of stained cells", "hubble": "galaxies in deep space", "china": "temple",
    "camera": "man with a camera", "retina": "retina",
}


def photo_prompts(class_names: Sequence[str]) -> list[str]:
    """Zero-shot text prompts for classes named after bundled photos: :data:`PHOTO_PROMPTS`, else the name."""
    return [PHOTO_PROMPTS.get(name, name) for name in class_names]
