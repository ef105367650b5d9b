"""Imperceptible matching: the default matcher (min-norm) against Adam, the paper's GD and L2-PGD at PSNR 40 dB.

The six pairs of notebook 01 at 224 px on the embedded DINOv2-S/14, every method with the same budget of
``PASSES`` forward+backward passes per pair (first-order rules spend one pass per step), stopping a pair at
cosine 0.99. Per method: pairs matched, passes used, PSNR / SSIM / L-inf of the matched images, and the cost
of one step against a bare forward+backward at the same batch size. Then the PSNR-vs-passes
front of min-norm: the same pairs with caps of ``FRONT`` passes, written with the table to
``figures/_benchmarks/`` (PNG + CSV), so that a missed PSNR target shows how far it is out of reach.

Targets (issue 10): every pair at cosine >= 0.99 within 300 passes; median PSNR >= 40 dB and every pair >= 37 dB;
median SSIM >= 0.98; per-pass cost <= 1.2x a bare forward+backward.
"""
from __future__ import annotations

import math
from functools import partial

import numpy as np
import pandas as pd
import torch

import vitequiv as vq
from vitequiv import metrics
from vitequiv.matching import L2Ball, NormalizedGD, match_embeddings, paper_match
from vitequiv.paths import figures_dir

from .common import Row, best_time

PAIRS = ["cat->rocket", "astronaut->coffee", "flower->hubble", "china->cells", "camera->grace_hopper",
         "retina->motorcycle_left"]
PASSES, STOP_COS, FRONT = 300, 0.99, (100, 200, 300, 600)


class AnnealedPGD(NormalizedGD):
    """L2-PGD as measured before this matcher existed: cosine loss, normalized steps cosine-annealed from ``lr``
    to 0 over the step cap, projected into a fixed ball (the matcher applies the budget)."""

    label = "L2-PGD at PSNR 40"
    loss = "cosine"

    def step(self, delta, grad, state, progress):
        length = self.lr * 0.5 * (1 + math.cos(math.pi * progress.step / progress.max_steps))
        return delta - length * grad / grad.flatten(1).norm(dim=1).clamp_min(1e-30).view(-1, 1, 1, 1), state


def _pairs(model) -> tuple[torch.Tensor, torch.Tensor]:
    names = [p.split("->") for p in PAIRS]
    photos = vq.load_images(sorted({n for pair in names for n in pair}), size=224).to(model.device)
    return torch.cat([photos[s] for s, _ in names]), torch.cat([photos[t] for _, t in names])  # (6, 3, 224, 224) each


def _summary(name: str, r) -> dict:
    ssim = r.ssim()
    return {"method": name, "matched": int(r.converged.sum()), "passes (max)": int(r.passes.max()),
            "passes (median)": float(np.median(r.passes)), "PSNR median": float(np.median(r.final["psnr"])),
            "PSNR min": float(r.final["psnr"].min()), "SSIM median": float(np.median(ssim)),
            "SSIM min": float(ssim.min()), "L-inf max (1/255)": float(r.final["linf_255"].max())}


def main() -> list[Row]:
    model = vq.load_model("embedded", device=vq.models.default_device())
    sources, targets = _pairs(model)
    ball = L2Ball.from_psnr(40.0, tuple(sources.shape[1:]))
    runs = {
        "min-norm": dict(),
        "Adam (lr 1e-3)": dict(step_rule=vq.Adam(lr=1e-3)),
        "L2-PGD at PSNR 40": dict(step_rule=AnnealedPGD(lr=ball.eps_255 / 255 / 8), budget=ball),
    }
    results = {name: match_embeddings(model, sources, targets, max_steps=PASSES, stop_cos=STOP_COS, progress=False,
                                      **kw) for name, kw in runs.items()}
    results["paper GD"] = paper_match(model, sources, targets, stop_cos=STOP_COS, stop_dist2=None, max_steps=PASSES,
                                      progress=False)
    table = pd.DataFrame([_summary(name, r) for name, r in results.items()])

    front = []
    for cap in FRONT:
        r = results["min-norm"] if cap == PASSES else match_embeddings(model, sources, targets, max_steps=cap,
                                                                      stop_cos=STOP_COS, progress=False)
        front.append(_summary(f"min-norm, cap {cap}", r) | {"cap": cap})
    front = pd.DataFrame(front)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.round(3).to_string(index=False))
        print(front.round(3).to_string(index=False))

    # cost of one step of each method vs a bare forward + backward of the same batch (every pair kept running)
    with torch.no_grad():
        target_emb = model.embed(targets)  # (6, D)

    def bare() -> None:
        x = sources.clone().requires_grad_(True)
        torch.autograd.grad((1 - metrics.cosine(model.embed(x), target_emb)).sum(), x)

    def steps(method: str, n: int) -> None:
        if method == "paper GD":
            paper_match(model, sources, target_emb, stop_cos=None, stop_dist2=None, max_steps=n, progress=False)
        else:
            match_embeddings(model, sources, target_emb, max_steps=n, stop_cos=None, progress=False, **runs[method])

    methods = [*runs, "paper GD"]
    for method in methods:
        steps(method, 1)  # warm-up
    best = {"bare": math.inf} | {(m, n): math.inf for m in methods for n in (1, 5)}
    for _ in range(2):  # interleaved rounds, best of each: a shared machine slows all alike
        best["bare"] = min(best["bare"], best_time(bare, repeats=1, warmup=0))
        for m, n in [k for k in best if k != "bare"]:
            best[m, n] = min(best[m, n], best_time(partial(steps, m, n), repeats=1, warmup=0))
    t_bare = best["bare"]
    t_step = {m: (best[m, 5] - best[m, 1]) / 4 for m in methods}  # the marginal step: set-up cancels
    table["cost per pass / bare fwd+bwd"] = [t_step[m] / t_bare for m in table.method]
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table[["method", "cost per pass / bare fwd+bwd"]].round(3).to_string(index=False))
    _save(table, front)

    m = table.set_index("method").loc["min-norm"]
    return [
        Row(f"min-norm: pairs at cosine >= {STOP_COS} within {PASSES} passes", m["matched"], len(PAIRS), "all",
            m["matched"] == len(PAIRS), unit=""),
        Row("min-norm: median PSNR of the matched images (dB)", m["PSNR median"], 40.0, "ratio >= 1",
            m["PSNR median"] >= 40.0, unit=""),
        Row("min-norm: lowest PSNR of the matched images (dB)", m["PSNR min"], 37.0, "ratio >= 1",
            m["PSNR min"] >= 37.0, unit=""),
        Row("min-norm: median SSIM of the matched images", m["SSIM median"], 0.98, "ratio >= 1",
            m["SSIM median"] >= 0.98, unit=""),
        Row(f"min-norm step vs bare fwd+bwd (B={len(PAIRS)})", t_step["min-norm"], t_bare, "ratio <= 1.2",
            t_step["min-norm"] <= 1.2 * t_bare),
        *(Row(f"{m} step vs bare fwd+bwd (B={len(PAIRS)}, no target)", t_step[m], t_bare, "reported", True)
          for m in methods if m != "min-norm"),
    ]


def _save(table: pd.DataFrame, front: pd.DataFrame) -> None:
    """The comparison and the PSNR-vs-passes front as CSV and PNG under figures/_benchmarks/ (not an index entry)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vitequiv.paths import atomic_path

    out = figures_dir() / "_benchmarks"
    for frame, name in ((table, "min_norm_methods"), (front, "min_norm_front")):
        with atomic_path(out / f"{name}.csv") as tmp:
            frame.to_csv(tmp, index=False)
    vq.use_style()
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    ax.plot(front["passes (max)"], front["PSNR median"], "o-", color="#009E73", lw=2, label="min-norm: median PSNR")
    ax.plot(front["passes (max)"], front["PSNR min"], "s--", color="#009E73", lw=1.2, label="min-norm: lowest PSNR")
    for _, row in front.iterrows():
        ax.annotate(f"{row['matched']}/{len(PAIRS)} matched", (row["passes (max)"], row["PSNR min"]),
                    textcoords="offset points", xytext=(4, -14), fontsize=9)
    others = table[table.method != "min-norm"]
    ax.scatter(others["passes (max)"], others["PSNR median"], color="0.35", marker="x", zorder=3,
               label="other methods (median, same cap)")
    for _, row in others.iterrows():
        ax.annotate(f"{row.method} ({row.matched}/{len(PAIRS)})", (row["passes (max)"], row["PSNR median"]),
                    textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.axhline(40, color="gray", ls=":", lw=1, label="target: median PSNR 40 dB")
    ax.axhline(37, color="gray", ls="--", lw=1, label="target: every pair 37 dB")
    ax.set(xlabel="forward+backward passes used (largest over the pairs)", ylabel="PSNR of the matched image (dB)",
           title=f"Matching 6 pairs to cosine {STOP_COS} at 224 px: PSNR against passes")
    ax.set_xlim(front["passes (max)"].min() * 0.8, front["passes (max)"].max() * 1.2)  # room for the labels
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3)  # below: the points stay clear
    for ext in ("png", "pdf"):
        with atomic_path(out / f"min_norm_front.{ext}") as tmp:
            fig.savefig(tmp, format=ext, bbox_inches="tight")
    plt.close(fig)
    print(f"wrote {out}/min_norm_front.png and the tables beside it")
