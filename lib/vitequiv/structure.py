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

from . import jacobians as jac
from . import metrics
from .lipschitz import directional_lipschitz, random_directions, sampled_lipschitz
from .matching import Adam, StepRule, StopRule, match_embeddings
from .models import forward_attribute


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


def matching_measurements(
    model, sources: Tensor, targets: Tensor, *, cos: float = 0.99, rel: float = 0.15, max_steps: int = 200,
    step_rule: StepRule | None = None, progress: bool = False,
) -> tuple[dict, list]:
    """Match each source (B, 3, H, W) to its target image; return (summary dict, one MatchResult per pair).

    Each pair runs alone (``match_embeddings``, ``Adam(lr=1/255)`` by default) until it has reached both
    cosine >= ``cos`` and relative residual ||f(x) - f(x_tg)|| <= ``rel`` ||f(x0) - f(x_tg)||, or
    ``max_steps``. From its history: the first step at which each criterion holds, and the perturbation
    there. Summary (medians over the pairs that got there; fractions over all pairs): ``cos0`` (median initial
    cosine), ``reach_cos`` / ``reach_rel`` (fractions), ``steps_cos`` / ``steps_rel``, ``linf_cos`` / ``l2_cos`` /
    ``psnr_cos`` (at the cosine criterion), ``linf_rel`` / ``l2_rel`` / ``psnr_rel``; at each pair's last image
    (both criteria met, or the step cap) ``final_cos``, ``final_rel``, ``final_linf``, ``final_psnr``,
    ``final_steps`` (medians, defined even when a criterion was not reached); ``s_per_pair`` (mean wall time),
    ``survives_8bit`` (fraction whose 8-bit rounded last image keeps cosine >= ``cos``).
    """
    with torch.no_grad():
        t = model.embed(targets)  # (B, D)
        d0 = torch.linalg.vector_norm(model.embed(sources) - t, dim=1).double().cpu().numpy()  # (B,)
    rule = step_rule or Adam(lr=1 / 255)
    results, per_pair = [], []
    for i in range(len(d0)):
        stop = StopRule(cos=cos, dist2=float((rel * d0[i]) ** 2))
        r = match_embeddings(model, sources[i:i + 1], t[i:i + 1], step_rule=rule, max_steps=max_steps, stop=stop,
                             progress=progress)
        h = {k: v[:, 0] for k, v in r.history.items()}  # each (T,)
        entry = {"cos0": h["cosine"][0], "final_steps": int(r.steps[0]), "s": r.elapsed_s,
                 "survives_8bit": bool(r.quantized_cosine[0] >= cos)}
        last = int(r.steps[0])
        entry |= {"final_cos": h["cosine"][last], "final_rel": h["emb_l2"][last] / d0[i],
                  "final_linf": h["linf_255"][last], "final_psnr": h["psnr"][last]}
        for tag, hit in (("cos", h["cosine"] >= cos), ("rel", h["emb_l2"] <= rel * d0[i])):
            k = int(np.argmax(hit)) if hit.any() else -1
            entry[f"steps_{tag}"] = k if k >= 0 else np.nan
            for key, name in (("linf_255", "linf"), ("l2_255", "l2"), ("psnr", "psnr")):
                entry[f"{name}_{tag}"] = h[key][k] if k >= 0 else np.nan
        results.append(r)
        per_pair.append(entry)
    summary = {"pairs": len(d0)}
    for key in per_pair[0]:
        values = np.array([e[key] for e in per_pair], dtype=float)
        if key == "s":
            summary["s_per_pair"] = float(values.mean())
        elif key == "survives_8bit":
            summary[key] = float(values.mean())
        else:
            summary[key] = float(np.nanmedian(values)) if np.isfinite(values).any() else float("nan")
        if key.startswith("steps_"):
            summary[f"reach_{key[6:]}"] = float(np.isfinite(values).mean())
    return summary, results


# ------------------------------------------------------------------------------------------------- Jacobian


def jacobian_measurements(
    model, x: Tensor, *, method: str = "full", k: int = 16, eps: Sequence[float] = (1e-3,), n_random: int = 4,
    seed: int = 0, chunk_size: int = 16, lipschitz_dtype: torch.dtype | None = torch.float64,
) -> tuple[dict, np.ndarray]:
    """Jacobian structure at one image ``x`` (1, 3, H, W); return (summary dict, singular values).

    ``method="full"``: the whole (D, P) Jacobian (:func:`vitequiv.jacobian`, cost about D/chunk
    backward passes) and its complete spectrum: ``rank`` (numerical, rtol 1e-5), ``null_fraction`` = 1 - rank/P,
    ``entropy_rank`` (Roy & Vetterli effective rank). ``method="topk"``: only the top ``k`` singular triplets,
    matrix-free (:func:`vitequiv.top_spectrum`); rank entries are NaN and ``null_fraction`` is the
    dimension-count lower bound 1 - D/P. Both: ``s_max``, ``s_max_rel`` = s_max / ||f(x)|| (relative gain per
    unit pixel step), ``s_ratio_10`` = s_10 / s_1, and for each eps the directional Lipschitz estimates
    ``L_top@eps`` (top right-singular direction) and ``L_rand@eps`` (mean over ``n_random`` random unit
    directions, seeded) and their ratio ``L_ratio@eps``, evaluated on a copy of the model cast to
    ``lipschitz_dtype`` (float64 by default: a float32 embedding cannot resolve the tiny changes along random
    directions at small eps).
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
    lmodel, lx = jac.with_dtype(model, x, lipschitz_dtype)
    top_l = directional_lipschitz(lmodel, lx, top, eps).double().cpu().numpy()  # (E,)
    rand_l = [float(sampled_lipschitz(lmodel, lx, rand, e).mean()) for e in eps]  # (E,): mean over the directions
    del lmodel
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
