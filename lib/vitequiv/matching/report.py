"""Reports of matching runs: several matchers' per-pair tables side by side, one row per matcher, the change as
a claim quotes it, and the stop-cosine sweep (the first pairs matched again at other stop cosines and judged by
what people see)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from .. import visibility
from .result import MatchResult
from .search import match_embeddings


def methods_table(results: Mapping[str, MatchResult], labels: Sequence[str]) -> pd.DataFrame:
    """Each method's :meth:`MatchResult.table` (pairs named by ``labels``), one after the other, with the
    forward+backward ``passes`` spent on each pair and the time of the batched call that matched all of them
    (``batch time (s)``)."""
    frames = [r.table(labels, method=name).assign(**{"passes": r.passes, "batch time (s)": r.elapsed_s})
              for name, r in results.items()]
    return pd.concat(frames, ignore_index=True)


def methods_summary(table: pd.DataFrame) -> pd.DataFrame:
    """One row per method of a :func:`methods_table`: pairs matched and indistinguishable, lowest cosine after
    matching and after 8-bit rounding, median steps, most passes, lowest and median PSNR and SSIM, largest L-inf,
    batch time."""
    return table.groupby("method", sort=False).agg(
        matched=("matched", "sum"), cos_after_min=("cos after", "min"), steps_median=("steps", "median"),
        passes_max=("passes", "max"), psnr_min=("PSNR (dB)", "min"), psnr_median=("PSNR (dB)", "median"),
        ssim_min=("SSIM", "min"), ssim_median=("SSIM", "median"), indistinguishable=("indistinguishable", "sum"),
        linf_max=("L-inf (1/255)", "max"), cos_8bit_min=("cos after 8-bit", "min"), time_s=("batch time (s)", "first"))


def quality_note(frame: pd.DataFrame) -> str:
    """Pairs of a :meth:`MatchResult.table` (say, one method's) as a claim quotes their change: PSNR and SSIM
    (range and median), how many are indistinguishable by both, and the largest L-inf."""
    psnr, ssim = frame["PSNR (dB)"], frame["SSIM"]
    return (f"PSNR {psnr.min():.1f}-{psnr.max():.1f} dB (median {psnr.median():.1f}), SSIM {ssim.min():.3f}-"
            f"{ssim.max():.3f} (median {ssim.median():.3f}); {int(frame['indistinguishable'].sum())}/{len(frame)} "
            f"meet both thresholds; L-inf <= {frame['L-inf (1/255)'].max():.0f}/255")


def _rerun(model, sources: torch.Tensor, targets: torch.Tensor, stop_cosines: Sequence[float],
           **kwargs) -> MatchResult | None:
    """``sources``/``targets`` (n, 3, H, W) matched once per stop cosine, all in one batch (stop cosine by stop
    cosine, pairs in order within each); None for no stop cosine."""
    if not stop_cosines:
        return None
    repeats = (len(stop_cosines), 1, 1, 1)
    return match_embeddings(model, sources.repeat(*repeats), targets.repeat(*repeats),
                            stop_cos=np.repeat(stop_cosines, len(sources)), progress=False, **kwargs)


def stop_cos_sweep(
    model, sources: torch.Tensor, targets: torch.Tensor, labels: Sequence[str], done: MatchResult, done_cos: float,
    stop_cosines: Sequence[float], *, pairs: int, step_rule: str, max_steps: int, seed: int,
) -> pd.DataFrame:
    """Where "invisible" ends: the first ``pairs`` of ``sources``/``targets`` (B, 3, H, W), named by ``labels``,
    matched again by ``step_rule`` at each of ``stop_cosines`` but ``done_cos``, whose row comes from ``done``
    (the run already made at that stop cosine), and each returned image judged against its source.

    One row per stop cosine and pair, sorted by both: whether it matched, PSNR, SSIM, butteraugli and JOD
    (:func:`vitequiv.visibility.visibility_table`), and butteraugli and JOD of white noise with the change's
    energy (:func:`vitequiv.visibility.equal_energy_noise`, drawn with ``seed``). ``attrs["note"]`` says what was
    not measured.
    """
    n = min(pairs, len(labels))
    extra = sorted(set(stop_cosines) - {done_cos})
    swept = _rerun(model, sources[:n], targets[:n], extra, step_rule=step_rule, max_steps=max_steps)
    runs = [(done_cos, done, 0)] + [(stop, swept, j * n) for j, stop in enumerate(extra)]  # (stop, run, first row)
    rows = [(stop, r, first + i, labels[i]) for stop, r, first in runs for i in range(n)]  # (stop, run, row, pair)
    images = torch.stack([r.images[k] for _, r, k, _ in rows])  # (S * n, 3, H, W)
    originals = sources[:n].repeat(len(runs), 1, 1, 1)  # (S * n, 3, H, W), in the order of rows
    ssims = {id(r): r.ssim() for _, r, _ in runs}  # (B,) each, once per run
    seen = visibility.visibility_table(images, originals)
    noise = visibility.visibility_table(visibility.equal_energy_noise(originals, images - originals, seed=seed),
                                        originals)
    sweep = pd.DataFrame({
        "stop cos": [stop for stop, *_ in rows], "pair": [label for *_, label in rows],
        "matched": [bool(r.converged[k]) for _, r, k, _ in rows],
        "PSNR (dB)": [r.final["psnr"][k] for _, r, k, _ in rows],
        "SSIM": [ssims[id(r)][k] for _, r, k, _ in rows], "butteraugli": seen["butteraugli"].to_numpy(),
        "JOD": seen["JOD"].to_numpy(), "noise butteraugli": noise["butteraugli"].to_numpy(),
        "noise JOD": noise["JOD"].to_numpy()}).sort_values(["stop cos", "pair"], kind="stable")
    sweep.attrs["note"] = seen.attrs["note"]
    return sweep
