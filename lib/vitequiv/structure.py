"""The paper's measurements of one embedding, side by side: for a whole model, or for the CLS token after one block.

For anything with ``embed(x)`` ((B, 3, H, W) in [0, 1] -> (B, D)) this module measures

- :func:`matching_measurements`: how cheaply a source photo is moved onto a target photo's embedding (steps,
  time) and how small the change is (L-inf / L2 in 1/255 units, PSNR) at cosine >= 0.99 (the paper's
  criterion) and at a relative residual ||f(x) - f(x_tg)|| <= ``rel`` ||f(x0) - f(x_tg)|| (a criterion that
  stays meaningful for models whose embeddings of different photos are already nearly parallel, such as a
  randomly initialised ViT);
- :func:`jacobian_measurements`: the Jacobian d f / d x at a photo: numerical and effective rank, null-space
  fraction, top singular value (also relative to ||f(x)||), and the directional Lipschitz estimate
  ||f(x + eps v) - f(x)|| / eps along the top right-singular direction vs random unit directions;
- :func:`structure_row`: both, aggregated into one plain dict (a table row).

:class:`BlockEmbedding` turns an :class:`~vitequiv.models.EmbeddingModel` into the model "CLS token after block
k, through the final norm", so the same measurements run per block.
"""
from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from . import jacobian as jac
from . import metrics
from .lipschitz import directional_lipschitz, random_directions
from .matching import Adam, StepRule, StopRule, match_embeddings


# ------------------------------------------------------------------------------------------ per-block model


class BlockEmbedding(nn.Module):
    """``embed(x)``: the CLS token (B, C) after transformer block ``block`` of ``model``, through the final norm.

    The same features as ``model.block_embeddings(x, indices=[block])[0]``, computed with timm's
    ``forward_intermediates(..., stop_early=True)`` so that blocks after ``block`` are not run (the forward
    costs (block + 1) / depth of the full model's). For ViTs with a CLS-token head (DINOv2, DeiT, ViT),
    the last block's embedding equals ``model.embed``; for CLIP towers (projected) or average-pooled heads it is
    the normed CLS token before the head, not the model's embedding. Differentiable w.r.t. the pixels.
    """

    def __init__(self, model, block: int) -> None:
        super().__init__()
        depth = len(model.backbone.blocks)
        if not -depth <= block < depth:
            raise IndexError(f"block {block} out of range for a {depth}-block model")
        self.model = model
        self.block = block % depth
        self.depth = depth
        self.name = f"{model.name} [block {self.block}]"
        self.embed_dim = model.backbone.num_features

    def __getattr__(self, name: str):  # mean, std, device, input_size of the wrapped model
        from .detection import forward_attribute

        return forward_attribute(self, name)

    def embed(self, x: Tensor) -> Tensor:
        (_, prefix), = self.model.backbone.forward_intermediates(
            self.model.normalize(x), indices=[self.block], return_prefix_tokens=True, norm=True,
            output_fmt="NLC", intermediates_only=True, stop_early=True,
        )
        return prefix[:, 0]  # (B, C)

    forward = embed

    def __repr__(self) -> str:
        return f"BlockEmbedding({self.model.name!r}, block={self.block} of {self.depth})"


# ------------------------------------------------------------------------------------------------- pairs


def pair_indices(n_images: int, n_pairs: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n_pairs`` (source, target) index pairs among ``n_images``, source != target, seeded, no repeated pair."""
    rng = np.random.default_rng(seed)
    all_pairs = [(i, j) for i in range(n_images) for j in range(n_images) if i != j]
    chosen = rng.choice(len(all_pairs), size=min(n_pairs, len(all_pairs)), replace=False)
    src, tgt = zip(*(all_pairs[k] for k in chosen))
    return np.array(src), np.array(tgt)


# ------------------------------------------------------------------------------------------------- matching


def _first_step(mask: np.ndarray) -> np.ndarray:
    """(T, B) bool -> (B,) first row that is True, or -1."""
    hit = mask.any(axis=0)
    return np.where(hit, mask.argmax(axis=0), -1)


def matching_measurements(
    model, sources: Tensor, targets: Tensor, *, cos: float = 0.99, rel: float = 0.1, max_steps: int = 200,
    step_rule: StepRule | None = None, progress: bool = False,
) -> tuple[dict, "object"]:
    """Match each source (B, 3, H, W) to its target image; return (summary dict, MatchResult).

    Runs ``match_embeddings`` (``Adam(lr=1/255)`` by default) until every pair has reached cosine >= ``cos``
    and relative residual <= ``rel``, or ``max_steps``. From the history, per pair: the first step at which each
    criterion holds, and the perturbation there. Summary (medians over the pairs that got there; fractions
    over all pairs): ``cos0`` (median initial cosine), ``reach_cos`` / ``reach_rel`` (fractions), ``steps_cos`` /
    ``steps_rel``, ``linf_cos`` / ``l2_cos`` / ``psnr_cos`` (at the cosine criterion), ``linf_rel`` / ``l2_rel`` /
    ``psnr_rel``, ``s_per_pair`` (wall time / pairs, batched), ``survives_8bit`` (final images).
    """
    with torch.no_grad():
        t = model.embed(targets)  # (B, D)
        d0 = torch.linalg.vector_norm(model.embed(sources) - t, dim=1).double().cpu().numpy()  # (B,)
    stop = StopRule(cos=cos, dist2=float((rel * d0.min()) ** 2))
    result = match_embeddings(model, sources, t, step_rule=step_rule or Adam(lr=1 / 255), max_steps=max_steps,
                              stop=stop, progress=progress)
    h = result.history  # each (T, B)
    cos_h = np.nan_to_num(h["cosine"], nan=-2.0)
    rel_h = np.nan_to_num(h["emb_l2"], nan=np.inf) / np.maximum(d0, 1e-30)
    summary = {"pairs": len(d0), "cos0": float(np.median(h["cosine"][0]))}
    for tag, first in (("cos", _first_step(cos_h >= cos)), ("rel", _first_step(rel_h <= rel))):
        ok = first >= 0
        summary[f"reach_{tag}"] = float(ok.mean())
        rows, cols = first[ok], np.flatnonzero(ok)
        med = (lambda k: float(np.median(h[k][rows, cols])) if ok.any() else float("nan"))
        summary[f"steps_{tag}"] = float(np.median(rows)) if ok.any() else float("nan")
        summary[f"linf_{tag}"], summary[f"l2_{tag}"], summary[f"psnr_{tag}"] = med("linf_255"), med("l2_255"), med("psnr")
    summary["s_per_pair"] = result.elapsed_s / len(d0)
    summary["survives_8bit"] = float(np.mean(result.quantized_cosine >= cos))
    return summary, result


# ------------------------------------------------------------------------------------------------- Jacobian


def jacobian_measurements(
    model, x: Tensor, *, method: str = "full", k: int = 16, eps: Sequence[float] = (1e-3,), n_random: int = 4,
    seed: int = 0, chunk_size: int = 16,
) -> tuple[dict, np.ndarray]:
    """Jacobian structure at one image ``x`` (1, 3, H, W); return (summary dict, singular values).

    ``method="full"``: the whole (D, P) Jacobian (:func:`vitequiv.jacobian.jacobian`, cost about D/chunk
    backward passes) and its complete spectrum: ``rank`` (numerical, rtol 1e-5), ``null_fraction`` = 1 - rank/P,
    ``entropy_rank`` (Roy & Vetterli effective rank). ``method="topk"``: only the top ``k`` singular triplets,
    matrix-free (:func:`vitequiv.jacobian.top_spectrum`); rank entries are NaN and ``null_fraction`` is the
    dimension-count lower bound 1 - D/P. Both: ``s_max``, ``s_max_rel`` = s_max / ||f(x)|| (relative gain per
    unit pixel step), ``s_ratio_10`` = s_10 / s_1, and for each eps the directional Lipschitz estimates
    ``L_top@eps`` (top right-singular direction) and ``L_rand@eps`` (mean over ``n_random`` random unit
    directions, seeded) and their ratio ``L_ratio@eps``.
    """
    x = jac.as_batch(x)
    start = time.perf_counter()
    with torch.no_grad():
        f_norm = float(torch.linalg.vector_norm(model.embed(x)[0]))
    if method == "full":
        J = jac.jacobian(model, x, chunk_size=chunk_size)  # (D, P)
        spec = jac.spectrum(J, tuple(x.shape[1:]))
        del J
        row = {"rank": spec.rank(), "null_fraction": spec.null_fraction(), "entropy_rank": spec.entropy_rank()}
    elif method == "topk":
        spec = jac.top_spectrum(model, x, k, seed=seed)
        D = spec.U.shape[0]
        row = {"rank": float("nan"), "null_fraction": 1 - D / spec.num_pixels, "entropy_rank": float("nan")}
    else:
        raise ValueError(f"method must be 'full' or 'topk', got {method!r}")
    s = spec.s.double().cpu().numpy()
    row |= {"D": spec.U.shape[0], "P": spec.num_pixels, "s_max": float(s[0]), "s_max_rel": float(s[0] / f_norm),
            "s_ratio_10": float(s[min(9, len(s) - 1)] / s[0]), "jacobian_method": method,
            "jacobian_s": time.perf_counter() - start}
    top = spec.V[0].reshape(x.shape[1:])  # (3, H, W), unit length
    rand = random_directions(n_random, x.shape[1:], seed=seed, dtype=x.dtype, device=x.device)  # (n, 3, H, W)
    eps = [float(e) for e in eps]
    top_l = directional_lipschitz(model, x, top, eps).double().cpu().numpy()  # (E,)
    rand_l = np.mean([directional_lipschitz(model, x, r, eps).double().cpu().numpy() for r in rand], axis=0)  # (E,)
    for e, lt, lr in zip(eps, top_l, rand_l):
        row |= {f"L_top@{e:g}": float(lt), f"L_rand@{e:g}": float(lr), f"L_ratio@{e:g}": float(lt / lr)}
    return row, s


# ------------------------------------------------------------------------------------------------- one row


def structure_row(
    model, images: Tensor, *, pairs: tuple[Sequence[int], Sequence[int]] | None = None,
    jacobian_images: Sequence[int] = (0,), match_kwargs: dict | None = None, jacobian_kwargs: dict | None = None,
    jacobian_model=None, jacobian_inputs: Tensor | None = None,
) -> tuple[dict, dict[int, np.ndarray]]:
    """Matching (on ``pairs`` = (source indices, target indices) into ``images``; skipped when None) and
    Jacobian measurements (averaged over ``jacobian_images``) in one dict; also the singular values per image.

    ``jacobian_model`` / ``jacobian_inputs`` let the Jacobian part run on a cheaper stand-in (e.g. the same
    weights at a smaller image size); default: ``model`` and ``images``.
    """
    row: dict = {"model": getattr(model, "name", type(model).__name__)}
    if pairs is not None:
        src, tgt = (list(p) for p in pairs)
        summary, _ = matching_measurements(model, images[src], images[tgt], **(match_kwargs or {}))
        row |= {f"match_{k}": v for k, v in summary.items()}
    jm = jacobian_model if jacobian_model is not None else model
    ji = jacobian_inputs if jacobian_inputs is not None else images
    rows, spectra = [], {}
    for i in jacobian_images:
        r, s = jacobian_measurements(jm, ji[i:i + 1], **(jacobian_kwargs or {}))
        rows.append(r)
        spectra[i] = s
    for key in rows[0]:
        values = [r[key] for r in rows]
        row[key] = values[0] if isinstance(values[0], str) else float(np.mean(values))
    return row, spectra
