"""The local normal space measured with a pixel budget: searched changes of b/255 against random sign noise of the
same L-inf size (notebook 03).

A search inside the L-inf ball of b gray levels finds the few directions (the local normal space) that carry an
embedding toward an unrelated target's; random sign noise moves every pixel by the full b/255 but points almost
entirely outside that space, so it barely moves the embedding. The same budgets, the same sources, two effects.

- :func:`sweep_budgets`: an Adam match inside each budget, and how far each match left its source's embedding.
- :func:`sign_noise`: the cosines of sign-noisy sources to their own and to the targets' embeddings.
- :func:`sweep_table`: one row per budget comparing the two, with the source-target cosine before any change.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from .detection import noisy_embeddings
from .matching import Adam, LinfBall, MatchResult, match_embeddings
from .metrics import cosine

if TYPE_CHECKING:
    import pandas as pd


@dataclass
class BudgetSweep:
    """Each budget's match (all pairs in one batch) and the cosine of each matched image's embedding to its
    source's own: how far the match left home."""

    budgets_255: list[float]  # (E,) L-inf budgets in gray levels, in the order searched
    matches: dict[float, MatchResult]  # budget -> the batch of P pairs matched within it
    to_source: np.ndarray  # (E, P) cosine of f(matched image) to f(source)

    @property
    def cosine(self) -> np.ndarray:
        """(E, P) cosine of each matched image's embedding to its target's."""
        return np.array([self.matches[b].final["cosine"] for b in self.budgets_255])

    @property
    def quantized_cosine(self) -> np.ndarray:
        """(E, P) the same cosine after rounding the matched image to 8 bits."""
        return np.array([self.matches[b].quantized_cosine for b in self.budgets_255])

    def table(self, labels: Sequence[str]) -> pd.DataFrame:
        """Every pair at every budget: :meth:`MatchResult.table` rows under a leading budget column."""
        import pandas as pd

        frames = [self.matches[b].table(labels).assign(**{"cos to source": self.to_source[i]})
                  for i, b in enumerate(self.budgets_255)]
        return pd.concat(frames, keys=self.budgets_255, names=["budget (1/255)", None]).reset_index(0)


def sweep_budgets(
    model, sources: torch.Tensor, target_emb: torch.Tensor, source_emb: torch.Tensor, budgets_255: Sequence[float],
    *, lr_fraction: float, max_steps: int, stop_cos: float,
) -> BudgetSweep:
    """Adam matches of ``sources`` (P, 3, H, W) to ``target_emb`` (P, D) inside each L-inf budget (gray levels),
    one batch per budget, the step size ``lr_fraction`` of the budget; ``source_emb`` (P, D) are the sources' own
    embeddings, to measure how far each match moved away from them."""
    matches, to_source = {}, []
    for eps in budgets_255:
        matches[eps] = match_embeddings(
            model, sources, target_emb, step_rule=Adam(lr=lr_fraction * eps / 255), budget=LinfBall(eps),
            max_steps=max_steps, stop_cos=stop_cos, progress=False)
        with torch.no_grad():
            to_source.append(cosine(model.embed(matches[eps].images), source_emb).cpu().numpy())  # (P,)
    return BudgetSweep(list(budgets_255), matches, np.array(to_source))


@dataclass
class SignNoise:
    """Random sign noise of each budget's L-inf size on each source: cosines and sizes, (E, draws, P) each."""

    to_source: np.ndarray  # cos(f(x0 + noise), f(x0))
    to_target: np.ndarray  # cos(f(x0 + noise), f(target))
    l2_255: np.ndarray  # ||noise||_2 after clipping to [0, 1], in 1/255 units


def sign_noise(
    model, sources: torch.Tensor, source_emb: torch.Tensor, target_emb: torch.Tensor, budgets_255: Sequence[float],
    *, n_draws: int, seed: int,
) -> SignNoise:
    """``n_draws`` images of ±b/255 sign noise (clipped to [0, 1]) per source (P, 3, H, W) and budget b, all drawn
    in order from one CPU generator seeded with ``seed`` (the same draws on any device), and the cosines of their
    embeddings to the sources' (P, D) and the targets' (P, D)."""
    generator = torch.Generator().manual_seed(seed)
    own, toward, sizes = [], [], []
    for eps in budgets_255:
        emb, l2 = noisy_embeddings(model, sources, eps, n_draws=n_draws, kind="sign", generator=generator)
        own.append(torch.nn.functional.cosine_similarity(emb, source_emb[None], dim=-1).cpu().numpy())  # (draws, P)
        toward.append(torch.nn.functional.cosine_similarity(emb, target_emb[None], dim=-1).cpu().numpy())
        sizes.append(l2.cpu().numpy())  # (draws, P)
    return SignNoise(np.array(own), np.array(toward), np.array(sizes))


def sweep_table(sweep: BudgetSweep, noise: SignNoise, baseline: np.ndarray, match_cos: float) -> pd.DataFrame:
    """One row per budget: the matches' cosines to target (mean, min, after 8-bit rounding) and to source, how many
    pairs reach ``match_cos``, the noise's cosines to source and target, the source-target ``baseline`` (P,)
    before any change, the PSNR and L2 sizes of match and noise, and the steps taken."""
    import pandas as pd

    rows = []
    for i, eps in enumerate(sweep.budgets_255):
        result = sweep.matches[eps]
        final, rounded, pairs = result.final, result.quantized_cosine, len(baseline)
        rows.append({
            "budget (1/255)": eps,
            "matched: cos to target (mean)": final["cosine"].mean(),
            "matched: min over pairs": final["cosine"].min(),
            "matched, 8-bit: cos to target (mean)": rounded.mean(),
            "matched: cos to source (mean)": sweep.to_source[i].mean(),
            f"pairs ≥ {match_cos} (float / 8-bit)":
                f"{(final['cosine'] >= match_cos).sum()} / {(rounded >= match_cos).sum()} of {pairs}",
            "noise: cos to source (mean)": noise.to_source[i].mean(),
            "noise: cos to target (mean)": noise.to_target[i].mean(),
            "baseline cos source-target (mean)": baseline.mean(),
            "matched PSNR (dB)": final["psnr"].mean(),
            "matched L2 (1/255)": final["l2_255"].mean(),
            "noise L2 (1/255)": noise.l2_255[i].mean(),
            "steps (mean)": result.steps.mean(),
        })
    return pd.DataFrame(rows)
