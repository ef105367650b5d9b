"""The paper's measurements of one embedding, side by side: for a whole model, or for the CLS token after one block.

For anything with ``embed(x)`` ((B, 3, H, W) in [0, 1] -> (B, D)) this module measures

- :func:`matching_measurements` -> :class:`MatchingSummary`: how cheaply a source photo is moved onto a target
  photo's embedding (steps, time) and how small the change is (L-inf / L2 in 1/255 units, PSNR) at cosine >=
  ``stop_cos`` (the paper's criterion) and at a relative residual ||f(x) - f(x_tg)|| <= ``rel``
  ||f(x0) - f(x_tg)|| (a criterion that stays meaningful for models whose embeddings of different photos are
  already nearly parallel, such as a randomly initialized ViT);
- :func:`jacobian_measurements` -> :class:`JacobianSummary`: the Jacobian d f / d x at a photo: numerical and
  effective rank, null-space fraction, top singular value (also relative to ||f(x)||), and the directional
  Lipschitz estimate ||f(x + eps v) - f(x)|| / eps along the top right-singular direction vs random directions;
- :func:`structure_row` -> :class:`StructureRow`: both for one model, and :func:`structure_table`, rows of them
  as a table whose column names (:data:`DISPLAY_NAMES`) are defined here, once;
- :func:`model_specs`, :func:`model_loader` and :func:`available_models`: the models compared (the model under
  study and its random-init twins) by label; :func:`evidence_table`, :func:`matching_note`, :func:`jacobian_note`
  and :func:`harder_than`: the numbers and texts that claims quote.

Per block: wrap the model in :class:`vitequiv.models.BlockEmbedding`.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from . import jacobian_cache
from . import jacobians as jac
from .lipschitz import directional_lipschitz, random_directions, sampled_lipschitz
from .matching import Adam, StepRule, match_embeddings
from .models import EmbeddingModel, load_model
from .weights import WeightsUnavailableError

# ------------------------------------------------------------------------------------------------- models


def model_specs(model: str, control: str, control_layerscale: float | None = None,
                extra: Sequence[str] = ()) -> dict[str, tuple[str, dict]]:
    """The models compared, by label -> (name for :func:`load_model`, extra timm arguments): ``model`` (labelled by
    its name), its random-init twin ``control`` ("random, timm init"), the twin with LayerScale initialized to
    ``control_layerscale`` ("random, LayerScale <value>"; None: left out) and the ``extra`` models."""
    specs: dict[str, tuple[str, dict]] = {model: (model, {}), "random, timm init": (control, {})}
    if control_layerscale is not None:
        specs[f"random, LayerScale {control_layerscale:g}"] = (control, {"init_values": control_layerscale})
    return specs | {name: (name, {}) for name in extra}


def model_loader(
    specs: Mapping[str, tuple[str, dict]], *, device: str, seed: int,
    loaded: Mapping[tuple[str, int], EmbeddingModel] | None = None,
) -> Callable[[str, int], EmbeddingModel]:
    """``load(label, size)``: the model of ``specs[label]`` at ``size`` px (random inits seeded with ``seed``),
    or the one already in ``loaded[(label, size)]``, so that the model under study is not loaded twice."""
    def load(label: str, size: int) -> EmbeddingModel:
        name, kwargs = specs[label]
        if (label, size) in (loaded or {}):
            return loaded[(label, size)]
        return load_model(name, img_size=size, device=device, seed=seed, **kwargs)
    return load


def available_models(
    load: Callable[[str, int], EmbeddingModel], labels: Iterable[str], sizes: Sequence[int],
) -> Iterator[tuple[str, list[EmbeddingModel]]]:
    """Each label with its models at ``sizes`` (each size loaded once), in order; a label whose weights cannot be
    had is skipped with a printed note, so that an optional hub model never stops a run."""
    for label in labels:
        try:
            loaded = {size: load(label, size) for size in dict.fromkeys(sizes)}
        except WeightsUnavailableError as err:
            print(f"skipped {label}: weights unavailable ({str(err).split('.')[0]})")
            continue
        yield label, [loaded[size] for size in sizes]


# ------------------------------------------------------------------------------------------------- pairs


def pair_indices(n_images: int, n_pairs: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n_pairs`` (source, target) index pairs among ``n_images``, source != target, seeded, no repeated pair."""
    if n_images < 2 or n_pairs < 1:
        raise ValueError(f"need at least 2 images and 1 pair, got n_images={n_images}, n_pairs={n_pairs}")
    rng = np.random.default_rng(seed)
    all_pairs = [(i, j) for i in range(n_images) for j in range(n_images) if i != j]
    chosen = rng.choice(len(all_pairs), size=min(n_pairs, len(all_pairs)), replace=False)
    src, tgt = zip(*(all_pairs[k] for k in chosen))
    return np.array(src), np.array(tgt)


# ------------------------------------------------------------------------------------------------- matching


@dataclass(frozen=True)
class MatchingSummary:
    """Medians over the pairs that met a criterion (NaN if none did); fractions over all pairs.

    ``*_cos``: at the first step with cosine >= stop_cos; ``*_rel``: at the first step with relative residual <=
    rel; ``final_*``: at each pair's last image (both criteria met, or the step cap). Sizes in 1/255 units.
    """

    pairs: int
    cos0: float  # cosine of f(x0) and f(x_tg) before matching
    reach_cos: float
    reach_rel: float
    steps_cos: float
    steps_rel: float
    linf_cos: float
    l2_cos: float
    psnr_cos: float
    linf_rel: float
    l2_rel: float
    psnr_rel: float
    final_cos: float
    final_rel: float
    final_linf: float
    final_psnr: float
    final_steps: float
    s_per_pair: float  # mean wall time per pair
    survives_8bit: float  # fraction whose 8-bit rounded last image keeps cosine >= stop_cos
    per_pair: dict[str, np.ndarray] = field(default_factory=dict, repr=False, compare=False)  # final_* (pairs,)


def matching_measurements(
    model, sources: Tensor, targets: Tensor, *, stop_cos: float = 0.99, rel: float = 0.15, max_steps: int = 200,
    step_rule: StepRule | str | None = None, progress: bool = False,
) -> tuple[MatchingSummary, list]:
    """Match each source (B, 3, H, W) to its target image; return the summary and one MatchResult per pair.

    Each pair runs alone (``match_embeddings``, ``Adam(lr=1/255)`` by default) until it has reached both
    cosine >= ``stop_cos`` and relative residual <= ``rel``, or ``max_steps``.
    """
    with torch.no_grad():
        t = model.embed(targets)  # (B, D)
        d0 = torch.linalg.vector_norm(model.embed(sources) - t, dim=1).double().cpu().numpy()  # (B,)
    rule = step_rule or Adam(lr=1 / 255)
    results, per_pair = [], []
    for i in range(len(d0)):
        r = match_embeddings(model, sources[i:i + 1], t[i:i + 1], step_rule=rule, max_steps=max_steps,
                             stop_cos=stop_cos, stop_dist2=float((rel * d0[i]) ** 2), progress=progress)
        h = {k: v[:, 0] for k, v in r.history.items()}  # each (T,)
        last = int(r.steps[0])
        entry = {"cos0": h["cosine"][0], "final_steps": last, "s_per_pair": r.elapsed_s,
                 "survives_8bit": float(r.quantized_cosine[0] >= stop_cos), "final_cos": h["cosine"][last],
                 "final_rel": h["embed_l2"][last] / d0[i], "final_linf": h["linf_255"][last],
                 "final_psnr": h["psnr"][last]}
        for tag, hit in (("cos", h["cosine"] >= stop_cos), ("rel", h["embed_l2"] <= rel * d0[i])):
            k = int(np.argmax(hit)) if hit.any() else -1
            entry[f"steps_{tag}"] = k if k >= 0 else np.nan
            for key, name in (("linf_255", "linf"), ("l2_255", "l2"), ("psnr", "psnr")):
                entry[f"{name}_{tag}"] = h[key][k] if k >= 0 else np.nan
        results.append(r)
        per_pair.append(entry)

    def median(key: str) -> float:
        values = np.array([e[key] for e in per_pair], dtype=float)
        return float(np.nanmedian(values)) if np.isfinite(values).any() else float("nan")

    def reached(key: str) -> float:
        return float(np.mean([np.isfinite(e[key]) for e in per_pair]))

    fields = {f.name for f in dataclasses.fields(MatchingSummary)} - {"pairs", "reach_cos", "reach_rel", "s_per_pair",
                                                                     "survives_8bit", "per_pair"}
    summary = MatchingSummary(
        pairs=len(d0), reach_cos=reached("steps_cos"), reach_rel=reached("steps_rel"),
        s_per_pair=float(np.mean([e["s_per_pair"] for e in per_pair])),
        survives_8bit=float(np.mean([e["survives_8bit"] for e in per_pair])), **{k: median(k) for k in fields},
        per_pair={k: np.array([e[k] for e in per_pair], dtype=float)
                  for k in (per_pair[0] if per_pair else {}) if k.startswith("final_")},
    )
    return summary, results


# ------------------------------------------------------------------------------------------------- Jacobian


@dataclass(frozen=True)
class JacobianSummary:
    """The Jacobian at one image (or the mean over several, see :func:`structure_row`).

    ``rank`` and ``entropy_rank`` are NaN for the matrix-free ``topk`` method, whose ``null_fraction`` is the
    dimension-count lower bound 1 - D/P. ``eps``, ``lipschitz_top`` and ``lipschitz_random`` are aligned: the
    directional Lipschitz estimate along the top right-singular direction, and its mean over random unit
    directions, at each step length eps.
    """

    D: int
    P: int
    rank: float
    null_fraction: float
    entropy_rank: float
    s_max: float
    s_max_rel: float  # s_max / ||f(x)||: relative gain per unit pixel step
    s_ratio_10: float  # s_10 / s_1
    method: str
    seconds: float
    eps: tuple[float, ...]
    lipschitz_top: tuple[float, ...]
    lipschitz_random: tuple[float, ...]

    def lipschitz_ratio(self, eps: float) -> float:
        """L(top) / mean L(random) at step length ``eps`` (one of ``self.eps``)."""
        if eps not in self.eps:
            raise KeyError(f"eps {eps:g} was not measured; measured: {', '.join(f'{e:g}' for e in self.eps)}")
        i = self.eps.index(eps)
        return self.lipschitz_top[i] / self.lipschitz_random[i]


def jacobian_measurements(
    model, x: Tensor, *, method: str = "full", k: int = 16, eps: Sequence[float] = (1e-3,), n_random: int = 4,
    seed: int = 0, batch_size: int = 16, lipschitz_dtype: torch.dtype | None = torch.float64, cache: bool = False,
) -> tuple[JacobianSummary, np.ndarray]:
    """Jacobian structure at one image ``x`` (1, 3, H, W); return the summary and the singular values.

    ``method="full"``: the whole (D, P) Jacobian (:func:`vitequiv.jacobian`, about D/batch_size backward passes)
    and its complete spectrum; ``method="topk"``: only the top ``k`` singular triplets, matrix-free
    (:func:`vitequiv.top_spectrum`). The Lipschitz estimates run on a copy of the model cast to
    ``lipschitz_dtype`` (float64 by default: a float32 embedding cannot resolve the tiny changes along random
    directions at small eps), over ``n_random`` seeded random directions. ``cache``: the full Jacobian through
    :mod:`vitequiv.jacobian_cache` (see :func:`vitequiv.jacobian`); ``seconds`` is NaN when it was read from there.
    """
    if method not in ("full", "topk"):
        raise ValueError(f"method must be 'full' or 'topk', got {method!r}")
    model, x = jac.model_input(model, x)
    start = time.perf_counter()
    with torch.no_grad():
        f_norm = float(torch.linalg.vector_norm(model.embed(x)[0]))
    cached = method == "full" and cache and jacobian_cache.has(model, x)
    if method == "full":
        spec = jac.spectrum(jac.jacobian(model, x, batch_size=batch_size, cache=cache), tuple(x.shape[1:]))
        rank, null, entropy = spec.rank(), spec.null_fraction(), spec.entropy_rank()
    else:
        spec = jac.top_spectrum(model, x, k, seed=seed)
        rank, null, entropy = float("nan"), 1 - spec.U.shape[0] / spec.num_pixels, float("nan")
    s = spec.s.double().cpu().numpy()
    seconds = float("nan") if cached else time.perf_counter() - start
    top = spec.V[0].reshape(x.shape[1:])  # (3, H, W), unit length
    rand = random_directions(n_random, x.shape[1:], seed=seed, dtype=x.dtype, device=x.device)  # (n, 3, H, W)
    eps = tuple(float(e) for e in eps)
    lmodel, lx = jac.model_input(model, x, lipschitz_dtype)
    top_l = directional_lipschitz(lmodel, lx, top, eps).double().cpu().numpy()  # (E,)
    rand_l = [float(sampled_lipschitz(lmodel, lx, rand, e).mean()) for e in eps]  # (E,): mean over the directions
    summary = JacobianSummary(
        D=spec.U.shape[0], P=spec.num_pixels, rank=float(rank), null_fraction=float(null), entropy_rank=float(entropy),
        s_max=float(s[0]), s_max_rel=float(s[0] / f_norm), s_ratio_10=float(s[min(9, len(s) - 1)] / s[0]),
        method=method, seconds=seconds, eps=eps, lipschitz_top=tuple(float(v) for v in top_l),
        lipschitz_random=tuple(rand_l),
    )
    return summary, s


def mean_summary(summaries: Sequence[JacobianSummary]) -> JacobianSummary:
    """Field-wise mean of Jacobian summaries at several images of one model (method and eps must agree)."""
    first = summaries[0]
    if any(j.method != first.method or j.eps != first.eps for j in summaries):
        raise ValueError("Jacobian summaries to average must share method and eps")
    values = {}
    for f in dataclasses.fields(JacobianSummary):
        items = [getattr(j, f.name) for j in summaries]
        if f.name in ("method", "eps", "D", "P"):
            values[f.name] = items[0]
        elif isinstance(items[0], tuple):
            values[f.name] = tuple(float(v) for v in np.mean(items, axis=0))
        else:
            values[f.name] = float(np.mean(items))
    return JacobianSummary(**values)


# ------------------------------------------------------------------------------------------------- one row


@dataclass(frozen=True)
class StructureRow:
    """One model's (or one block's) matching and Jacobian measurements, and its singular values per image."""

    model: str
    matching: MatchingSummary | None
    jacobian: JacobianSummary
    spectra: dict[int, np.ndarray] = field(default_factory=dict)  # image index -> singular values
    labels: dict[str, object] = field(default_factory=dict)  # e.g. {"block": 3}: extra table columns

    def evidence(self, eps: float) -> dict[str, float]:
        """The numbers claims quote, under short names: matching (medians) and Jacobian (Lipschitz ratio at
        ``eps``)."""
        m, j = self.matching, self.jacobian
        return {"cos0": m.cos0, "steps": m.final_steps, "cos": m.final_cos, "residual": m.final_rel,
                "linf_255": m.final_linf, "psnr_db": m.final_psnr, "rank": j.rank, "D": j.D, "P": j.P,
                "null_fraction": j.null_fraction, "effective_rank": j.entropy_rank, "s_max_rel": j.s_max_rel,
                "lipschitz_ratio": j.lipschitz_ratio(eps)}


def by_model(rows: Sequence[StructureRow]) -> dict[str, list[StructureRow]]:
    """Rows grouped by model, models in order of first appearance (e.g. one row per block for each model)."""
    return {name: [r for r in rows if r.model == name] for name in dict.fromkeys(r.model for r in rows)}


def structure_row(
    model, images: Tensor, *, pairs: tuple[Sequence[int], Sequence[int]] | None = None,
    jacobian_images: Sequence[int] = (0,), match_kwargs: dict | None = None, jacobian_kwargs: dict | None = None,
    jacobian_model=None, jacobian_inputs: Tensor | None = None, label: str | None = None, **labels,
) -> StructureRow:
    """Matching (on ``pairs`` = (source indices, target indices) into ``images``; skipped when None) and
    Jacobian measurements (averaged over ``jacobian_images``) of one model.

    ``jacobian_model`` / ``jacobian_inputs`` let the Jacobian part run on a cheaper stand-in (e.g. the same
    weights at a smaller image size); default: ``model`` and ``images``. ``label`` names the row (default: the
    model's name); other keyword arguments become extra columns (e.g. ``block=3``).
    """
    matching = None
    if pairs is not None:
        src, tgt = (list(p) for p in pairs)
        matching, _ = matching_measurements(model, images[src], images[tgt], **(match_kwargs or {}))
    jm = jacobian_model if jacobian_model is not None else model
    ji = jacobian_inputs if jacobian_inputs is not None else images
    summaries, spectra = [], {}
    for i in jacobian_images:
        summary, spectra[i] = jacobian_measurements(jm, ji[i:i + 1], **(jacobian_kwargs or {}))
        summaries.append(summary)
    name = label or getattr(model, "name", type(model).__name__)
    return StructureRow(name, matching, mean_summary(summaries), spectra, dict(labels))


# Column names readers see, for every measurement (tables and figure labels use these, nowhere else).
DISPLAY_NAMES: dict[str, str] = {
    "model": "model", "D": "D", "P": "P",
    "match.cos0": "cos before", "match.reach_cos": "reached cos", "match.steps_cos": "steps to cos",
    "match.linf_cos": "L-inf at cos (1/255)", "match.psnr_cos": "PSNR at cos (dB)",
    "match.reach_rel": "reached rel", "match.steps_rel": "steps to rel", "match.linf_rel": "L-inf at rel (1/255)",
    "match.l2_rel": "L2 at rel (1/255)", "match.psnr_rel": "PSNR at rel (dB)", "match.final_cos": "final cosine",
    "match.final_rel": "final residual", "match.final_linf": "final L-inf (1/255)",
    "match.final_psnr": "final PSNR (dB)", "match.final_steps": "steps used", "match.s_per_pair": "s per pair",
    "rank": "Jacobian rank", "null_fraction": "null fraction", "entropy_rank": "effective rank", "s_max": "s_max",
    "s_max_rel": "s_max / |f(x)|", "s_ratio_10": "s_10 / s_1", "seconds": "Jacobian s (nan: cached)",
}


def lipschitz_column(eps: float) -> str:
    """The display name of the top/random directional Lipschitz ratio at step length ``eps``."""
    return f"L top/random @{eps:g}"


def structure_table(rows: Sequence[StructureRow]) -> pd.DataFrame:
    """Rows as a table with :data:`DISPLAY_NAMES` columns (plus each row's extra labels and Lipschitz ratios)."""
    records = []
    for row in rows:
        record: dict[str, object] = {"model": row.model, **row.labels}
        if row.matching is not None:
            record |= {DISPLAY_NAMES[f"match.{k}"]: v for k, v in dataclasses.asdict(row.matching).items()
                       if f"match.{k}" in DISPLAY_NAMES}
        j = row.jacobian
        record |= {DISPLAY_NAMES[k]: v for k, v in dataclasses.asdict(j).items() if k in DISPLAY_NAMES}
        record |= {lipschitz_column(e): j.lipschitz_ratio(e) for e in j.eps}
        records.append(record)
    return pd.DataFrame(records)


# ------------------------------------------------------------------------------------------------- claims


def evidence_table(rows: Mapping[str, StructureRow], eps: float) -> pd.DataFrame:
    """One row of :meth:`StructureRow.evidence` per label of ``rows`` (all floats), as the claims read them."""
    return pd.DataFrame({label: row.evidence(eps) for label, row in rows.items()}).T


def matching_note(evidence: pd.DataFrame, label: str) -> str:
    """The matching numbers of row ``label`` of :func:`evidence_table` as one sentence of a claim."""
    e = evidence.loc[label]
    return (f"{label}: cosine before {e.cos0:.4f}, after <= {e.steps:.0f} steps cosine {e.cos:.4f}, residual "
            f"{e.residual:.3f} of the initial distance, L-inf {e.linf_255:.1f}/255, PSNR {e.psnr_db:.1f} dB")


def jacobian_note(evidence: pd.DataFrame, label: str, eps: float) -> str:
    """The Jacobian numbers of row ``label`` of :func:`evidence_table` (made at Lipschitz step ``eps``) as one
    sentence of a claim."""
    e = evidence.loc[label]
    return (f"{label}: rank {e['rank']:.0f}/{e.D:.0f}, effective rank {e.effective_rank:.0f}, s_max/|f| "
            f"{e.s_max_rel:.3g}, L top/random @{eps:g} {e.lipschitz_ratio:.3g}")


def harder_than(
    pairs: Mapping[str, np.ndarray], residual: float | np.ndarray, linf: float | np.ndarray,
    residual_slack: float = 1.0, linf_slack: float = 1.5,
) -> np.ndarray:
    """Per pair (B,), how much harder matching was than a reference: the larger of final residual / ``residual`` /
    ``residual_slack`` and final L-inf / ``linf`` / ``linf_slack`` (``pairs``: a :attr:`MatchingSummary.per_pair`).
    At most 1 means within both slacks of the reference."""
    return np.maximum(pairs["final_rel"] / residual / residual_slack, pairs["final_linf"] / linf / linf_slack)
