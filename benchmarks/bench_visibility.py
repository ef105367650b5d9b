"""What people see: the matchers' frontier in units of visibility (butteraugli, ColorVideoVDP JOD).

The six pairs of notebook 01 at 224 px on the embedded DINOv2-S/14, cosine >= 0.99 after 8-bit rounding, every
method side by side in one run and in one time budget: the wall time of ``BUDGET_PASSES`` bare float32
forward+backward passes of the batch. min-norm (the L2-smallest change), min-visible (the smallest change in the
8-norm) and Adam each get as many steps as fit in it at their measured cost per step.

1. At stop cosine 0.99: butteraugli (worst spot, and 3-norm) and JOD of each matched image, and of white noise
   with the same energy as each change (random +-k gray levels, ``vq.equal_energy_noise``).
2. Against the stop cosine (``STOP_COSINES``): the median pair's butteraugli and JOD per method, and the stop
   cosine at which the median pair becomes invisible (butteraugli <= 1.0), read off the curve. The range reaches
   down to 0.3 because on this model every pair is still visible at 0.95 (butteraugli 3.4-5.4): a range of
   0.95-0.995 alone could not say where invisible ends.
3. Against passes (``CAPS`` and the time budget's own cap): min-norm and min-visible at stop cosine 0.99.

The matchers optimize their own norms; butteraugli and ColorVideoVDP only judge. Tables and the figure go to
``figures/_benchmarks/`` (CSV, PNG, PDF).

Targets (issue 28): median butteraugli <= 2.0 and every pair <= 3.0, median JOD >= 9.95, for the best matcher in
the time budget at 0.99. ``VITEQUIV_BENCH_QUICK=1`` runs three pairs, four stop cosines and one extra cap.
"""
from __future__ import annotations

import math
import os

import numpy as np
import pandas as pd
import torch

import vitequiv as vq
from vitequiv import metrics
from vitequiv.matching import match_embeddings
from vitequiv.paths import atomic_path, figures_dir

from .bench_min_norm import PAIRS as ALL_PAIRS
from .common import Row, best_time

QUICK = os.environ.get("VITEQUIV_BENCH_QUICK") == "1"
PAIRS = ALL_PAIRS[: 3 if QUICK else 6]
BUDGET_PASSES, STOP_COS = 300, 0.99
STOP_COSINES = (0.3, 0.6, 0.9, 0.99) if QUICK else (0.3, 0.6, 0.9, 0.95, 0.97, 0.99, 0.995)
CAPS = (100,) if QUICK else (100, 1000)  # besides each method's cap in the time budget (about 300 passes)
METHODS = {"min-norm": "min-norm", "min-visible": "min-visible", "Adam": vq.Adam(lr=2e-3)}
COLORS = {"min-norm": "#009E73", "min-visible": "#CC79A7", "Adam": "#0072B2", "white noise": "0.45"}


def _pairs(model) -> tuple[torch.Tensor, torch.Tensor]:
    names = [p.split("->") for p in PAIRS]
    photos = vq.load_images(sorted({n for pair in names for n in pair}), size=224).to(model.device)
    return torch.cat([photos[s] for s, _ in names]), torch.cat([photos[t] for _, t in names])  # (P, 3, 224, 224)


def _judge(method: str, r, sources: torch.Tensor, stop_cos: float, cap: int) -> list[dict]:
    """One row per pair: the matched image's and equal-energy noise's visibility against the source."""
    seen = vq.visibility_table(r.images, sources)
    noise = vq.visibility_table(vq.equal_energy_noise(sources, r.delta, seed=0), sources)
    return [{"method": method, "stop cos": stop_cos, "cap": cap, "pair": PAIRS[i],
             "matched": bool(r.converged[i] and r.quantized_cosine[i] >= stop_cos), "PSNR": r.final["psnr"][i],
             "butteraugli": seen["butteraugli"].iloc[i], "butteraugli 3-norm": seen["butteraugli 3-norm"].iloc[i],
             "JOD": seen["JOD"].iloc[i], "noise butteraugli": noise["butteraugli"].iloc[i],
             "noise JOD": noise["JOD"].iloc[i]} for i in range(len(sources))]


def _caps(model, sources, target_emb) -> dict[str, int]:
    """Steps each method gets in the time budget: BUDGET_PASSES bare float32 passes over its cost per step."""
    def bare() -> None:
        x = sources.clone().requires_grad_(True)
        torch.autograd.grad((1 - metrics.cosine(model.embed(x), target_emb)).sum(), x)

    def step_cost(rule) -> float:  # the marginal step: runs of 4 and 1 steps, so set-up cancels
        run = {n: best_time(lambda n=n: match_embeddings(model, sources, target_emb, step_rule=rule, max_steps=n,
                                                         stop_cos=None, progress=False), repeats=1) for n in (1, 4)}
        return (run[4] - run[1]) / 3

    t_bare = best_time(bare, repeats=2)
    return {name: max(1, int(BUDGET_PASSES * t_bare / step_cost(rule))) for name, rule in METHODS.items()}


def _invisible_at(curve: pd.Series) -> float:
    """The highest stop cosine at which the median butteraugli is still <= 1.0 (linear between measured points;
    NaN when it is above 1.0 at every measured cosine)."""
    x, y = curve.index.to_numpy(float), curve.to_numpy(float)
    if not (y <= metrics.INVISIBLE_BUTTERAUGLI).any():
        return math.nan
    if (y <= metrics.INVISIBLE_BUTTERAUGLI).all():
        return float(x[-1])
    last = int(np.flatnonzero(y <= metrics.INVISIBLE_BUTTERAUGLI).max())
    x0, x1, y0, y1 = x[last], x[last + 1], y[last], y[last + 1]
    return float(x0 + (metrics.INVISIBLE_BUTTERAUGLI - y0) * (x1 - x0) / (y1 - y0))


def main() -> list[Row]:
    model = vq.load_model("embedded", device=vq.models.default_device())
    sources, targets = _pairs(model)
    with torch.no_grad():
        target_emb = model.embed(targets)  # (P, D)
    caps = _caps(model, sources, target_emb)
    print("steps in the time budget of", BUDGET_PASSES, "bare float32 passes:", caps)
    rows = []
    for name, rule in METHODS.items():
        for stop in STOP_COSINES:
            r = match_embeddings(model, sources, target_emb, step_rule=rule, max_steps=caps[name], stop_cos=stop,
                                 progress=False)
            rows += _judge(name, r, sources, stop, caps[name])
            print(f"  {name} at stop cosine {stop}: {int(r.converged.sum())}/{len(sources)} matched", flush=True)
    for name in ("min-norm", "min-visible"):
        for cap in CAPS:
            r = match_embeddings(model, sources, target_emb, step_rule=METHODS[name], max_steps=cap,
                                 stop_cos=STOP_COS, progress=False)
            rows += _judge(name, r, sources, STOP_COS, cap)
    frame = pd.DataFrame(rows)
    budget = frame[frame.cap == frame.method.map(caps)]  # the time-budget runs
    by_cos = budget.groupby(["method", "stop cos"]).median(numeric_only=True)
    by_cos["matched"] = budget.groupby(["method", "stop cos"]).matched.mean()  # the fraction of pairs matched
    invisible_at = {m: _invisible_at(by_cos.loc[m, "butteraugli"]) for m in METHODS}
    with pd.option_context("display.width", 250, "display.max_columns", 20):
        print(by_cos.round(3).to_string())
    print("stop cosine up to which the median pair is invisible (butteraugli <= 1.0; nan: visible already at "
          f"{STOP_COSINES[0]}):", invisible_at)
    _save(frame, by_cos, invisible_at, caps)

    at = budget[budget["stop cos"] == STOP_COS]
    matched_all = [m for m in METHODS if at[at.method == m].matched.all()] or list(METHODS)  # a miss is no match
    best = min(matched_all, key=lambda m: at[at.method == m]["butteraugli"].median())
    chosen = at[at.method == best]
    return [
        Row(f"{best} in the time budget, cos {STOP_COS}: median butteraugli (JND)", chosen.butteraugli.median(),
            2.0, "ratio <= 1", chosen.butteraugli.median() <= 2.0, unit=""),
        Row(f"{best} in the time budget, cos {STOP_COS}: worst pair's butteraugli (JND)", chosen.butteraugli.max(),
            3.0, "ratio <= 1", chosen.butteraugli.max() <= 3.0, unit=""),
        Row(f"{best} in the time budget, cos {STOP_COS}: median JOD", chosen.JOD.median(), 9.95, "ratio >= 1",
            chosen.JOD.median() >= 9.95, unit=""),
        Row(f"{best}: pairs matched at cos {STOP_COS} after 8-bit rounding", chosen.matched.sum(), len(PAIRS), "all",
            chosen.matched.all(), unit=""),
        *[Row(f"{m}: median butteraugli vs white noise of equal energy, cos {STOP_COS}",
              at[at.method == m].butteraugli.median(), at[at.method == m]["noise butteraugli"].median(), "reported",
              True, unit="") for m in METHODS],
    ]


def _save(frame: pd.DataFrame, by_cos: pd.DataFrame, invisible_at: dict[str, float], caps: dict[str, int]) -> None:
    """The table as CSV and the frontier (against stop cosine and against passes) as PNG/PDF."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    out = figures_dir() / "_benchmarks"
    with atomic_path(out / "visibility.csv") as tmp:
        frame.to_csv(tmp, index=False)
    vq.use_style()
    fig, axes = plt.subplots(1, 3, figsize=(17, 5), layout="constrained")
    for name in METHODS:
        curve = by_cos.loc[name]
        axes[0].plot(curve.index, curve["butteraugli"], "o-", color=COLORS[name], lw=2, label=name)
        missed = curve[curve["matched"] < 1]
        axes[0].plot(missed.index, missed["butteraugli"], "o", ms=11, mfc="none", color="black", lw=0)
        axes[0].plot(curve.index, curve["noise butteraugli"], ":", color=COLORS[name], lw=1,
                     label=f"white noise of {name}'s energy")
        axes[1].plot(curve.index, curve["JOD"], "o-", color=COLORS[name], lw=2, label=name)
        if not math.isnan(invisible_at[name]):
            axes[0].axvline(invisible_at[name], color=COLORS[name], ls="--", lw=1,
                            label=f"{name}: invisible up to cos {invisible_at[name]:.3f}")
    if (by_cos["matched"] < 1).any():
        axes[0].plot([], [], "o", ms=11, mfc="none", color="black", lw=0, label="not every pair matched")
    passes = frame[(frame["stop cos"] == STOP_COS) & frame.method.isin(["min-norm", "min-visible"])].groupby(
        ["method", "cap"]).median(numeric_only=True)
    for name in ("min-norm", "min-visible"):
        axes[2].plot(passes.loc[name].index, passes.loc[name]["butteraugli"], "o-", color=COLORS[name], lw=2,
                     label=name)
    axes[0].axhline(metrics.INVISIBLE_BUTTERAUGLI, color="black", ls=":", lw=1, label="invisible: 1.0 JND")
    axes[1].axhline(metrics.INVISIBLE_JOD, color="black", ls=":", lw=1, label=f"invisible: {metrics.INVISIBLE_JOD} JOD")
    axes[2].axhline(metrics.INVISIBLE_BUTTERAUGLI, color="black", ls=":", lw=1, label="invisible: 1.0 JND")
    axes[0].set(xlabel="stop cosine (after 8-bit rounding)", ylabel="butteraugli, median pair (JND)",
                title="In the time budget (" + ", ".join(f"{m} {n} steps" for m, n in caps.items()) + ")")
    axes[1].set(xlabel="stop cosine (after 8-bit rounding)", ylabel="ColorVideoVDP JOD, median pair",
                title="10 = no visible difference")
    axes[2].set(xscale="log", xlabel="step cap (passes per pair)", ylabel="butteraugli, median pair (JND)",
                title=f"Against passes, stop cosine {STOP_COS}")
    axes[2].set_xticks(sorted(set(passes.index.get_level_values("cap"))))  # plain numbers at the measured caps
    axes[2].xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    axes[2].xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    for ax in axes:
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2)
    fig.suptitle(f"What people see: {len(PAIRS)} pairs at 224 px, embedded DINOv2-S/14")
    for ext in ("png", "pdf"):
        with atomic_path(out / f"visibility_front.{ext}") as tmp:
            fig.savefig(tmp, format=ext, bbox_inches="tight")
    plt.close(fig)
    print(f"wrote {out}/visibility_front.png and visibility.csv")
