"""Downstream models that see only an image's embedding, and the "systematic evaluation" of arXiv 2402.08473.

The paper's point: whatever sits on top of a ViT embedding (a linear probe, k-NN, the model's own class head,
CLIP's zero-shot text matching) follows the embedding, not the picture. Every classifier here therefore has the
same small interface on embeddings (N, D): ``predict_proba -> (N, K)`` and ``predict -> (N,)``, with
``class_names``. :func:`systematic_evaluation` matches each image to the embedding of an image of another class
and measures how often the prediction keeps the source's label (near 0 when it follows the embedding).

Probabilities, predictions and labels come back as NumPy arrays (what notebooks plot); embeddings may be given
as torch tensors on any device or as arrays.
"""
from __future__ import annotations

import dataclasses
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from .models import EmbeddingModel, _host_reachable
from .weights import WeightsUnavailableError

Array = torch.Tensor | np.ndarray


def _numpy(x: Array) -> np.ndarray:
    return x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


@torch.no_grad()
def embed_batched(model: EmbeddingModel, images: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """Embeddings (N, D), on the CPU, of images (N, 3, H, W) in [0, 1], computed batch by batch on the model's
    device without gradients (so a large set neither fills GPU memory nor keeps a graph)."""
    return torch.cat([model.embed(b.to(model.device)).float().cpu() for b in images.split(batch_size)])


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
    """A scikit-learn classifier fitted on labelled embeddings; labels are class indices 0..K-1."""

    def __init__(self, estimator) -> None:
        self.estimator = estimator
        self.class_names: list[str] = []

    def fit(self, embeddings: Array, labels: Array, class_names: Sequence[str] | None = None) -> _Fitted:
        labels = _numpy(labels).astype(int)  # (N,)
        num_classes = len(class_names) if class_names is not None else int(labels.max()) + 1
        self.class_names = list(class_names) if class_names is not None else [str(k) for k in range(num_classes)]
        self.estimator.fit(_numpy(embeddings), labels)
        return self

    def predict_proba(self, embeddings: Array) -> np.ndarray:
        seen = self.estimator.classes_  # the labels present in the training set, as columns
        proba = np.zeros((len(embeddings), len(self.class_names)))  # (N, K)
        proba[:, seen] = self.estimator.predict_proba(_numpy(embeddings))
        return proba


class LinearProbe(_Fitted):
    """Multinomial logistic regression on standardised embeddings (scikit-learn, L-BFGS).

    scikit-learn rather than a torch layer: the fit is deterministic and needs no tuning, and nothing here
    differentiates through the probe (matching targets embeddings, not labels). ``C`` is the inverse L2 strength.
    """

    def __init__(self, C: float = 1.0, max_iter: int = 5000) -> None:
        super().__init__(make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter)))


class KNN(_Fitted):
    """k-nearest neighbours by cosine distance; probabilities are the neighbours' vote fractions."""

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
        return _numpy(logits.softmax(dim=1).double())


# ------------------------------------------------------------------------------------ CLIP zero-shot


class ZeroShotUnavailableError(WeightsUnavailableError):
    """CLIP zero-shot needs ``open_clip`` and its text tower's weights; the message says how to get them."""


DEFAULT_TEMPLATES = ("a photo of a {}.",)


def _hub_offline() -> bool:
    from huggingface_hub.constants import HF_HUB_OFFLINE

    return bool(HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def _import_open_clip():
    try:
        import open_clip
    except ImportError as err:
        raise ZeroShotUnavailableError(
            "CLIP zero-shot classification needs open_clip: pip install 'vitequiv[clip]' (open-clip-torch)."
        ) from err
    return open_clip


def _ensure_clip_weights(open_clip, clip_name: str, pretrained: str) -> None:
    """Fail within a second when the open_clip weights are neither local nor downloadable (no long hub wait)."""
    from huggingface_hub import try_to_load_from_cache

    if os.path.isfile(pretrained) or clip_name.startswith("local-dir:"):
        return
    if clip_name.startswith("hf-hub:"):
        repo, filename, url = clip_name[len("hf-hub:"):], "", ""
    else:
        cfg = open_clip.get_pretrained_cfg(clip_name, pretrained)
        if not cfg:
            tags = open_clip.list_pretrained_tags_by_model(clip_name)
            raise ZeroShotUnavailableError(f"open_clip has no weights {clip_name!r}/{pretrained!r}; tags: {tags}.")
        repo, filename = os.path.split(cfg.get("hf_hub", ""))  # "org/repo/" or "org/repo/file"
        url = cfg.get("url", "")
    if repo:
        files = (filename or "open_clip_pytorch_model.bin", "open_clip_model.safetensors")
        if any(isinstance(try_to_load_from_cache(repo, f), str) for f in files):
            return
        host = "https://huggingface.co"
    else:
        if os.path.exists(os.path.expanduser(os.path.join("~/.cache/clip", os.path.basename(url)))):
            return
        host = url
    how = (
        f"The open_clip weights {clip_name!r}/{pretrained!r} are not cached and {{why}}. Run once online "
        "(open_clip.create_model(...) fills the cache), or use a LinearProbe/KNN on the embedded model offline."
    )
    if _hub_offline():
        raise ZeroShotUnavailableError(how.format(why="HF_HUB_OFFLINE is set"))
    if not _host_reachable(host):
        raise ZeroShotUnavailableError(how.format(why=f"{host} cannot be reached"))


def clip_text_embeddings(
    class_names: Sequence[str],
    clip_name: str = "ViT-B-32",
    pretrained: str = "openai",
    templates: Sequence[str] = DEFAULT_TEMPLATES,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Unit text embeddings (K, D) of the class prompts, averaged over ``templates``, from open_clip's text tower."""
    open_clip = _import_open_clip()
    _ensure_clip_weights(open_clip, clip_name, pretrained)
    clip = open_clip.create_model(clip_name, pretrained=pretrained, device=device).eval()
    tokenizer = open_clip.get_tokenizer(clip_name)
    weights = open_clip.build_zero_shot_classifier(clip, tokenizer, list(class_names), list(templates), device=device)
    return weights.T.float().cpu()  # (K, D)


class ZeroShotCLIP(Downstream):
    """CLIP zero-shot classification: ``softmax(logit_scale * cos(image embedding, class text embedding))``."""

    def __init__(self, text_embeddings: torch.Tensor, class_names: Sequence[str], logit_scale: float = 100.0) -> None:
        if len(class_names) != len(text_embeddings):
            raise ValueError(f"{len(class_names)} class names but {len(text_embeddings)} text embeddings")
        self.text = F.normalize(torch.as_tensor(text_embeddings).float().cpu(), dim=1)  # (K, D)
        self.class_names = list(class_names)
        self.logit_scale = logit_scale

    @classmethod
    def from_open_clip(
        cls,
        model: EmbeddingModel,
        class_names: Sequence[str],
        clip_name: str = "ViT-B-32",
        pretrained: str = "openai",
        templates: Sequence[str] = DEFAULT_TEMPLATES,
    ) -> ZeroShotCLIP:
        """Zero-shot head for ``model``, the CLIP image tower as a vitequiv model (e.g. timm's
        ``vit_base_patch32_clip_224.openai`` beside open_clip's ``ViT-B-32``/``openai``)."""
        if not model.projected:
            raise ValueError(f"{model.name} is not a CLIP image tower (its embedding is not in CLIP's text space).")
        text = clip_text_embeddings(class_names, clip_name, pretrained, templates, device=model.device)
        if text.shape[1] != model.embed_dim:
            raise ValueError(
                f"{clip_name} text embeddings are {text.shape[1]}-d but {model.name} gives {model.embed_dim}-d"
            )
        return cls(text, class_names)

    def predict_proba(self, embeddings: Array) -> np.ndarray:
        image = F.normalize(torch.as_tensor(_numpy(embeddings)).float(), dim=1)  # (N, D)
        return _numpy((self.logit_scale * image @ self.text.T).softmax(dim=1).double())  # (N, K)


# ------------------------------------------------------------------------------------ labelled sets


@dataclass
class LabelledSet:
    """Images (N, 3, S, S) in [0, 1] with class indices (N,) into ``class_names``."""

    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    def split(self, test_fraction: float = 0.5, seed: int = 0) -> tuple[LabelledSet, LabelledSet]:
        """A stratified (train, test) split, the same for the same seed."""
        from sklearn.model_selection import train_test_split

        train, test = train_test_split(
            np.arange(len(self)), test_size=test_fraction, stratify=self.labels.numpy(), random_state=seed
        )
        return self._rows(train), self._rows(test)

    def _rows(self, rows: np.ndarray) -> LabelledSet:
        index = torch.as_tensor(np.sort(rows))
        return LabelledSet(self.images[index], self.labels[index], self.class_names)


def labelled_set(kind: Literal["views", "faces"] = "views", *, size: int = 224, **kwargs) -> LabelledSet:
    """A labelled set that works offline: ``"views"``, crop/flip views of bundled photos labelled by photo
    (``kwargs`` go to :func:`vitequiv.images.view_set`: names, views_per_image, min_scale, seed), or ``"faces"``,
    scikit-image's 200 LFW crops, face vs non-face."""
    from . import images

    if kind == "views":
        return LabelledSet(*images.view_set(size=size, **kwargs))
    if kind == "faces":
        return LabelledSet(*images.lfw_faces(size=size))
    raise ValueError(f"Unknown labelled set {kind!r}; use 'views' or 'faces'.")


# ------------------------------------------------------------------------------ systematic evaluation


def other_class_targets(labels: Array, seed: int = 0) -> np.ndarray:
    """For each image, the index (N,) of a uniformly drawn image of another class; the same for the same seed."""
    labels = _numpy(labels).astype(int)  # (N,)
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
    images: torch.Tensor,
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
    ``max_steps``). ``labels`` index ``downstream.class_names``.
    """
    if match_fn is None:
        from .matching import match_embeddings as match_fn
    labels = _numpy(labels).astype(int)  # (N,)
    targets = other_class_targets(labels, seed) if targets is None else _numpy(targets).astype(int)  # (N,)
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
        embedding_cosine=_numpy(F.cosine_similarity(matched_emb, clean[torch.as_tensor(targets)], dim=1)),
        class_names=downstream.class_names,
    )
