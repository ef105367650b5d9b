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

Array = torch.Tensor | np.ndarray


def as_numpy(x: Array) -> np.ndarray:
    """A tensor (any device) or array-like as a NumPy array (float32 for tensors)."""
    return x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


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

    def fit(self, embeddings: Array, labels: Array, class_names: Sequence[str] | None = None) -> _Fitted:
        labels = as_numpy(labels).astype(int)  # (N,)
        num_classes = len(class_names) if class_names is not None else int(labels.max()) + 1
        self.class_names = list(class_names) if class_names is not None else [str(k) for k in range(num_classes)]
        self.estimator.fit(as_numpy(embeddings), labels)
        return self

    def predict_proba(self, embeddings: Array) -> np.ndarray:
        seen = self.estimator.classes_  # the labels present in the training set, as columns
        proba = np.zeros((len(embeddings), len(self.class_names)))  # (N, K)
        proba[:, seen] = self.estimator.predict_proba(as_numpy(embeddings))
        return proba


class LinearProbe(_Fitted):
    """Multinomial logistic regression on standardized embeddings (scikit-learn, L-BFGS).

    scikit-learn rather than a torch layer: the fit is deterministic and needs no tuning, and nothing here
    differentiates through the probe (matching targets embeddings, not labels). ``C`` is the inverse L2 strength.
    """

    def __init__(self, C: float = 1.0, max_iter: int = 5000) -> None:
        super().__init__(make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter)))


class KNN(_Fitted):
    """k-nearest neighbors by cosine distance; probabilities are the neighbors' vote fractions."""

    def __init__(self, k: int = 5) -> None:
        super().__init__(KNeighborsClassifier(n_neighbors=k, metric="cosine"))
        self.k = k

    def fit(self, embeddings: Array, labels: Array, class_names: Sequence[str] | None = None) -> KNN:
        self.estimator.set_params(n_neighbors=min(self.k, len(labels)))
        return super().fit(embeddings, labels, class_names)


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
        logits = self.head(torch.as_tensor(embeddings).to(weight))  # (N, K)
        return as_numpy(logits.softmax(dim=1).double())
