"""CLIP zero-shot classification on a CLIP image tower's embedding (optional: needs ``open_clip`` and weights
from the hub, i.e. ``pip install 'vitequiv[clip]'`` and a machine online once)."""
from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from . import hub
from .downstream import Array, Downstream, as_numpy
from .models import EmbeddingModel
from .weights import WeightsUnavailableError


class ZeroShotUnavailableError(WeightsUnavailableError):
    """CLIP zero-shot needs ``open_clip`` and its text tower's weights; the message says how to get them."""


DEFAULT_TEMPLATES = ("a photo of a {}.",)


def _import_open_clip():
    try:
        import open_clip
    except ImportError as err:
        raise ZeroShotUnavailableError(
            "CLIP zero-shot classification needs open_clip: pip install 'vitequiv[clip]' (open-clip-torch)."
        ) from err
    return open_clip


def ensure_clip_weights(open_clip, clip_name: str, pretrained: str) -> None:
    """Fail within a few seconds when the open_clip weights are neither local nor downloadable (no long hub wait)."""
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
        if hub.hf_cached(repo, files):
            return
        url = hub.hf_file_url(repo, files[0])
    elif os.path.exists(os.path.expanduser(os.path.join("~/.cache/clip", os.path.basename(url)))):
        return
    hub.require_download(
        f"The open_clip weights {clip_name!r}/{pretrained!r}", url, error=ZeroShotUnavailableError,
        remedy="Run once online (open_clip.create_model(...) fills the cache), copy that cache over, or use a "
        "LinearProbe/KNN on the embedded model (works offline).",
    )


def clip_text_embeddings(
    class_names: Sequence[str],
    clip_name: str = "ViT-B-32",
    pretrained: str = "openai",
    templates: Sequence[str] = DEFAULT_TEMPLATES,
    device: str | torch.device = "cpu",
) -> torch.Tensor:
    """Unit text embeddings (K, D) of the class prompts, averaged over ``templates``, from open_clip's text tower."""
    open_clip = _import_open_clip()
    ensure_clip_weights(open_clip, clip_name, pretrained)
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
        image = F.normalize(torch.as_tensor(as_numpy(embeddings)).float(), dim=1)  # (N, D)
        return as_numpy((self.logit_scale * image @ self.text.T).softmax(dim=1).double())  # (N, K)
