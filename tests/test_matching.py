"""Embedding matching on tiny models: convergence, stopping, budgets, batching, freezing, failures, hooks."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import random_images as images

import vitequiv
from vitequiv import metrics, precision
from vitequiv.matching import (
    Adam,
    L2Ball,
    LinfBall,
    MatchingError,
    MinNorm,
    NormalizedGD,
    PaperGD,
    SignGD,
    match_embeddings,
    paper_match,
)

# The matcher's own mechanics (freezing a matched pair, pass counting) with the default rule as it was before its
# refinement: matched pairs stop, the images are not rounded.
FREEZING = dict(step_rule=MinNorm(refine=False), quantize=False)


class Linear:
    """embed(x) = flattened x times a fixed random matrix: a model that is not an nn.Module."""

    def __init__(self, dim: int = 8, size: int = 32) -> None:
        self.w = torch.randn(3 * size * size, dim, generator=torch.Generator().manual_seed(1)) / size

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.w  # (B, D)


class Faulty:
    """Wraps a model; from call ``at`` on, ``fault`` is applied to the embeddings of pair ``pair``."""

    def __init__(self, model, at: int, pair: int, fault) -> None:
        self.model, self.at, self.pair, self.fault, self.calls = model, at, pair, fault, 0

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        e = self.model.embed(x)  # (B, D)
        if self.calls >= self.at:  # call k + 1 is step k when targets are embeddings
            e = torch.cat([e[: self.pair], self.fault(e[self.pair : self.pair + 1]), e[self.pair + 1 :]])
        return e


def test_adam_drives_tiny_vit_to_target(tiny_model):
    result = match_embeddings(tiny_model, images(2, 0), images(2, 1), step_rule=Adam(lr=0.01), max_steps=200,
                              progress=False)
    assert result.converged.all(), result.final["cosine"]
    assert (result.final["cosine"] >= 0.99).all()
    assert result.stopped_by == "converged"
    assert result.images.min() >= 0 and result.images.max() <= 1
    assert result.history["loss"].shape == (result.steps.max() + 1, 2)
    assert result.history["loss"][0, 0] > result.final["loss"][0]


def test_targets_as_images_equal_targets_as_embeddings(tiny_model):
    src, tgt = images(2, 0), images(2, 1)
    a = match_embeddings(tiny_model, src, tgt, step_rule=Adam(lr=0.01), max_steps=5, progress=False)
    b = match_embeddings(tiny_model, src, tiny_model.embed(tgt).detach(), step_rule=Adam(lr=0.01), max_steps=5,
                         progress=False)
    assert torch.equal(a.images, b.images)


def test_converged_pair_takes_zero_steps_and_is_unchanged(tiny_model):
    src = images(2, 0)
    target = torch.cat([tiny_model.embed(src[:1]), tiny_model.embed(images(1, 5))]).detach()  # pair 0 is its own target
    result = match_embeddings(tiny_model, src, target, max_steps=3, progress=False, **FREEZING)
    assert result.steps.tolist() == [0, 3]
    assert result.converged.tolist() == [True, False]
    assert torch.equal(result.images[0], src[0])
    assert np.isnan(result.history["loss"][1:, 0]).all()  # not evaluated once stopped
    assert result.stopped_by == "max_steps"


def test_dist2_threshold_is_required_too(tiny_model):
    src, tgt = images(1, 0), images(1, 1)
    loose = match_embeddings(tiny_model, src, tgt, step_rule=Adam(0.01), stop_cos=0.9, max_steps=100, progress=False)
    strict = match_embeddings(tiny_model, src, tgt, step_rule=Adam(0.01), stop_cos=0.9, stop_dist2=1e-8,
                              max_steps=loose.steps[0] + 3, progress=False)
    assert loose.converged[0] and not strict.converged[0]
    assert strict.steps[0] == loose.steps[0] + 3


@pytest.mark.parametrize("box", ["unit", "source"])
def test_linf_budget_and_box(tiny_model, box):
    src = images(2, 0) * 0.8 + 0.1  # source range [0.1, 0.9]: the "source" box is tighter than [0, 1]
    result = match_embeddings(tiny_model, src, images(2, 1), step_rule=SignGD(lr=2 / 255), budget=LinfBall(4),
                              box=box, max_steps=10, progress=False)
    delta = result.images - src
    assert delta.abs().max() <= 4 / 255 + 1e-7
    assert delta.abs().max() >= 4 / 255 - 1e-6  # the budget is actually reached
    assert np.allclose(result.history["linf_255"][-1], delta.abs().flatten(1).amax(1) * 255, atol=1e-4)
    lo, hi = (0.0, 1.0) if box == "unit" else (src.amin(), src.amax())
    assert result.images.min() >= lo and result.images.max() <= hi


def test_l2_budget(tiny_model):
    src = images(2, 0)
    result = match_embeddings(tiny_model, src, images(2, 1), step_rule=NormalizedGD(lr=0.2), budget=L2Ball(30),
                              max_steps=10, progress=False)
    norms = (result.images - src).flatten(1).norm(dim=1) * 255
    assert (norms <= 30 + 1e-3).all() and (norms >= 29).all()
    assert result.images.min() >= 0 and result.images.max() <= 1


def test_step_rules_first_step_sizes():
    model, src = Linear(), torch.full((2, 3, 32, 32), 0.5)
    tgt = torch.randn(2, 8, generator=torch.Generator().manual_seed(3))
    float_images = dict(max_steps=1, quantize=False, precision="float32", progress=False)  # float iterates
    signed = match_embeddings(model, src, tgt, step_rule=SignGD(lr=1 / 255), **float_images)
    assert torch.allclose((signed.images - src).abs(), torch.tensor(1 / 255), atol=1e-6)
    normed = match_embeddings(model, src, tgt, step_rule=NormalizedGD(lr=0.1), **float_images)
    assert torch.allclose((normed.images - src).flatten(1).norm(dim=1), torch.tensor(0.1), atol=1e-5)
    adam = match_embeddings(model, src, tgt, step_rule=Adam(lr=1e-3), **float_images)
    # Adam's first step: lr * sign
    assert torch.allclose((adam.images - src).abs().amax(), torch.tensor(1e-3), atol=1e-6)


def test_batch_equals_singles(tiny_one_by_one):
    """Pairs converge at different steps; the batch (with freezing) must reproduce each pair run alone."""
    src, tgt = images(3, 10), images(3, 11)
    kwargs = dict(step_rule=Adam(lr=0.01), stop_cos=0.97, max_steps=60, precision="float32", progress=False)
    batch = match_embeddings(tiny_one_by_one, src, tgt, **kwargs)
    assert len(set(batch.steps.tolist())) > 1, "pairs should stop at different steps for this test to bite"
    _assert_same_as_singles(tiny_one_by_one, src, tgt, batch, kwargs)


def test_batch_equals_singles_for_loss_scale_sensitive_rule(tiny_one_by_one):
    """Plain descent sees the loss scale: per-pair losses must be summed, not averaged, over the batch."""
    src, tgt = images(3, 10), images(3, 11)
    kwargs = dict(step_rule=PaperGD(lr=200.0), max_steps=5, precision="float32", quantize=False, progress=False)
    batch = match_embeddings(tiny_one_by_one, src, tgt, **kwargs)
    assert (batch.final["linf_255"] > 1).all()  # the images did move
    _assert_same_as_singles(tiny_one_by_one, src, tgt, batch, kwargs)


def _assert_same_as_singles(model, src, tgt, batch, kwargs):
    for i in range(3):
        single = match_embeddings(model, src[i:i + 1], tgt[i:i + 1], **kwargs)
        assert single.steps[0] == batch.steps[i]
        assert torch.allclose(single.images[0], batch.images[i], atol=1e-5, rtol=0)
        n = single.steps[0] + 1
        assert np.allclose(single.history["cosine"][:n, 0], batch.history["cosine"][:n, i], atol=1e-5)


def test_frozen_pair_is_bit_identical(tiny_model):
    snapshots = []
    src, tgt = images(2, 20), images(2, 21)
    result = match_embeddings(tiny_model, src, tgt, step_rule=Adam(lr=0.01), stop_cos=0.95, max_steps=80,
                              progress=False, callback=lambda k, r: snapshots.append((k, r.images.clone())))
    first = int(np.argmin(result.steps))
    assert result.converged[first] and result.steps[first] < result.steps.max()
    frozen = [img[first] for k, img in snapshots if k >= result.steps[first]]
    assert len(frozen) > 1 and all(torch.equal(f, frozen[0]) for f in frozen)
    assert torch.equal(result.images[first], frozen[0])


def test_nan_raises_named_error(tiny_model):
    faulty = Faulty(tiny_model, at=4, pair=1, fault=lambda e: e * float("nan"))
    with pytest.raises(MatchingError, match=r"pair 1 .* step 3") as info:
        match_embeddings(faulty, images(2, 0), tiny_model.embed(images(2, 1)).detach(), max_steps=10, progress=False)
    assert (info.value.pair, info.value.step) == (1, 3)
    partial = info.value.result  # what was found up to the failing step
    assert partial.steps.tolist() == [3, 3] and np.isnan(partial.history["loss"][3, 1])
    assert torch.isfinite(partial.images).all()


def test_divergence_raises(tiny_model):
    # blows up the MSE loss (a cosine loss is blind to it)
    faulty = Faulty(tiny_model, at=3, pair=0, fault=lambda e: e * 1e4)
    with pytest.raises(MatchingError, match="pair 0"):
        match_embeddings(faulty, images(2, 0), tiny_model.embed(images(2, 1)).detach(), step_rule="adam", max_steps=10,
                         progress=False)


def test_interrupt_returns_partial_result(tiny_model):
    class Interrupting(Faulty):
        def embed(self, x):
            if self.calls == self.at:
                self.calls += 1
                raise KeyboardInterrupt
            return super().embed(x)

    model = Interrupting(tiny_model, at=4, pair=0, fault=lambda e: e)
    target = tiny_model.embed(images(2, 1)).detach()  # (2, D)
    result = match_embeddings(model, images(2, 0), target, max_steps=10, progress=False)
    assert result.interrupted and result.steps.tolist() == [3, 3]
    assert result.quantized_cosine is not None


def test_deterministic(tiny_model):
    src, tgt = images(2, 0), images(2, 1)
    a = match_embeddings(tiny_model, src, tgt, max_steps=8, progress=False)
    b = match_embeddings(tiny_model, src, tgt, max_steps=8, progress=False)
    assert torch.equal(a.images, b.images)
    assert all(np.array_equal(a.history[k], b.history[k], equal_nan=True) for k in a.history)


def test_paper_gd_preset_reduces_loss(tiny_model):
    result = paper_match(tiny_model, images(2, 0), images(2, 1), lr=0.08, max_steps=15, progress=False)
    assert "PaperGD" in result.step_rule
    loss = result.history["loss"]
    assert (loss[-1] < 0.9 * loss[0]).all()
    src = images(2, 0)  # clamped to the source's own range
    assert (result.images.flatten(1).amin(1) >= src.flatten(1).amin(1)).all()
    assert (result.images.flatten(1).amax(1) <= src.flatten(1).amax(1)).all()


def test_paper_gd_steps_on_normalized_input():
    grad = torch.ones(1, 3, 4, 4)
    std = torch.tensor([0.5, 0.25, 0.1])
    upd, _ = PaperGD(lr=0.1, input_std=std).update(grad, {})
    assert torch.allclose(upd[0, :, 0, 0], 0.1 * std**2)
    plain, _ = PaperGD(lr=0.1).update(grad, {})
    assert torch.allclose(plain, 0.1 * grad)


def test_quantized_cosine_is_on_8bit_images(tiny_model):
    tgt = images(2, 1)
    result = match_embeddings(tiny_model, images(2, 0), tgt, step_rule=Adam(lr=0.01), max_steps=30, quantize=False,
                              progress=False)
    expected = metrics.cosine(tiny_model.embed(metrics.quantize_8bit(result.images)), tiny_model.embed(tgt))
    assert np.allclose(result.quantized_cosine, expected.detach().numpy(), atol=1e-6)
    assert np.abs(result.quantized_cosine - result.final["cosine"]).max() > 1e-7  # rounding did change something
    assert np.array_equal(result.survives_8bit, result.quantized_cosine >= 0.99)


def test_callback_stops_early_and_keeps_progress(tiny_model):
    seen = []

    def callback(step, so_far):
        seen.append(so_far.final["cosine"].copy())
        return step == 3

    # float32: the snapshots carry the search's own numbers, which under bfloat16 are checked in float32 at the end
    result = match_embeddings(tiny_model, images(2, 0), images(2, 1), max_steps=50, precision="float32",
                              progress=False, callback=callback)
    assert result.stopped_by == "callback" and result.steps.tolist() == [3, 3]
    assert len(result.history["loss"]) == 4 and len(seen) == 4
    assert np.array_equal(result.final["cosine"], seen[-1])


def test_history_frame(tiny_model):
    result = match_embeddings(tiny_model, images(2, 0), images(2, 1), max_steps=3, progress=False)
    frame = result.to_frame()
    assert len(frame) == 8 and {"step", "pair", "loss", "cosine", "psnr", "linf_255"} <= set(frame.columns)


def test_table_has_one_row_per_pair_with_its_final_metrics(tiny_model):
    src, tgt = images(3, seed=0), images(3, seed=1)
    r = match_embeddings(tiny_model, src, tgt, max_steps=20, stop_cos=0.95, progress=False)
    table = r.table(["a", "b", "c"], method="min-norm")
    assert list(table["pair"]) == ["a", "b", "c"] and set(table["method"]) == {"min-norm"}
    np.testing.assert_array_equal(table["matched"], r.converged)
    np.testing.assert_allclose(table["PSNR (dB)"], r.final["psnr"])
    np.testing.assert_allclose(table["SSIM"], r.ssim())
    np.testing.assert_allclose(table["cos after 8-bit"], r.quantized_cosine)
    np.testing.assert_array_equal(table["indistinguishable"], metrics.indistinguishable(r.final["psnr"], r.ssim()))


def test_adam_matches_torch_optim_adam():
    model, src = Linear(), torch.full((2, 3, 32, 32), 0.5)
    tgt = torch.randn(2, 8, generator=torch.Generator().manual_seed(3))
    ours = match_embeddings(model, src, tgt, step_rule=Adam(lr=1e-3), max_steps=5, keep_gray=False, quantize=False,
                            precision="float32", progress=False)
    x = src.clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=1e-3)
    for _ in range(5):
        opt.zero_grad()
        (model.embed(x) - tgt).pow(2).mean(dim=1).sum().backward()
        opt.step()
    assert torch.allclose(ours.images, x.detach(), atol=1e-6, rtol=0)


# ------------------------------------------------------------------------------ the default: min-norm


def test_min_norm_is_the_default():
    assert isinstance(vitequiv.make_step_rule(None), vitequiv.MinNorm)
    result = match_embeddings(Linear(), images(1, 0), torch.randn(1, 8), max_steps=2, progress=False)
    assert result.step_rule.startswith("MinNorm")


def test_min_norm_matches_wherever_adam_does_with_no_larger_change(tiny_model):
    src, tgt = images(4, 10), images(4, 11)
    adam = match_embeddings(tiny_model, src, tgt, step_rule=Adam(lr=0.01), max_steps=150, progress=False)
    ours = match_embeddings(tiny_model, src, tgt, max_steps=150, progress=False)
    assert adam.converged.any()
    assert ours.converged[adam.converged].all(), (ours.final["cosine"], adam.final["cosine"])
    both = adam.converged & ours.converged
    ours_l2, adam_l2 = ours.final["l2_255"], adam.final["l2_255"]
    assert (ours_l2[both] <= adam_l2[both]).all(), (ours_l2, adam_l2)


def test_min_norm_batch_equals_singles(tiny_one_by_one):
    src, tgt = images(3, 20), images(3, 21)
    batch = match_embeddings(tiny_one_by_one, src, tgt, max_steps=40, precision="float32", progress=False)
    for i in range(3):
        alone = match_embeddings(tiny_one_by_one, src[i:i + 1], tgt[i:i + 1], max_steps=40, precision="float32",
                                 progress=False)
        assert alone.steps[0] == batch.steps[i] and alone.passes[0] == batch.passes[i]
        assert torch.allclose(alone.images[0], batch.images[i], atol=1e-6)


@pytest.mark.parametrize("rule, prec", [("adam", "float32"), ("min-norm", "float32"), ("min-norm", "bfloat16")])
def test_one_stop_cosine_per_pair_equals_each_run_alone(tiny_one_by_one, rule, prec):
    """A stop-cosine sweep in one batch: the same pair at three cosines, each as if matched on its own."""
    if prec == "bfloat16" and not precision.bf16_supported("cpu"):
        pytest.skip("this CPU has no native bfloat16")
    src, tgt = images(1, 20).expand(3, -1, -1, -1), images(1, 21).expand(3, -1, -1, -1)
    stops = np.array([0.7, 0.8, 0.9]) if rule == "adam" else np.array([0.5, 0.6, 0.7])
    kwargs = dict(step_rule=Adam(lr=0.01) if rule == "adam" else rule, max_steps=60, precision=prec, progress=False)
    batch = match_embeddings(tiny_one_by_one, src, tgt, stop_cos=stops, **kwargs)
    assert isinstance(batch.stop_cos, np.ndarray) and (batch.stop_cos == stops).all()
    if rule == "adam":  # stops at each pair's own goal
        assert batch.converged.all() and (batch.final["cosine"] >= stops).all() and len(set(batch.steps)) == 3
    else:  # min-norm's growth aims at each pair's own goal
        assert (np.diff(batch.final["l2_255"]) > 0).all() and (batch.final["cosine"] > stops - 0.01).all()
    assert (batch.final["cosine"] >= stops)[batch.converged].all()  # float32 (checked after bfloat16)
    for i, stop in enumerate(stops):
        alone = match_embeddings(tiny_one_by_one, src[i:i + 1], tgt[i:i + 1], stop_cos=float(stop), **kwargs)
        assert alone.stop_cos == stop and alone.converged[0] == batch.converged[i]
        assert alone.steps[0] == batch.steps[i] and alone.passes[0] == batch.passes[i]
        assert torch.allclose(alone.images[0], batch.images[i], atol=1e-6)


@pytest.mark.parametrize("bad", [[0.9, 0.95], [[0.9], [0.9]], [0.9, 1.2, 0.9], ["0.9"] * 3, "0.9", True,
                                 np.array([0.9, np.nan, 0.9]), [True, False, True]])
def test_stop_cos_is_one_cosine_or_one_per_pair(tiny_model, bad):
    with pytest.raises(ValueError, match=r"stop_cos must be a cosine in \[-1, 1\], one per pair \(3\), or None"):
        match_embeddings(tiny_model, images(3, 1), images(3, 2), stop_cos=bad, max_steps=1, progress=False)


@pytest.mark.parametrize("rule", sorted(vitequiv.STEP_RULES))
def test_gray_sources_stay_gray_in_every_rule(tiny_model, rule):
    gray = images(2, 30)[:, :1].expand(2, 3, 32, 32).contiguous()  # (2, 3, 32, 32), equal channels
    color = images(1, 31)
    src = torch.cat([gray, color])
    result = match_embeddings(tiny_model, src, images(3, 32), step_rule=rule, max_steps=6, stop_cos=None,
                              progress=False)
    delta = result.delta
    assert delta[:2].abs().amax() > 0  # the gray sources did change
    assert torch.equal(delta[:2, 0], delta[:2, 1]) and torch.equal(delta[:2, 0], delta[:2, 2])
    assert not torch.equal(delta[2, 0], delta[2, 1])  # a color source gets a color change
    free = match_embeddings(tiny_model, src, images(3, 32), step_rule=rule, max_steps=6, stop_cos=None, keep_gray=False,
                            progress=False)
    assert not torch.equal(free.delta[0, 0], free.delta[0, 1])  # the switch turns it off


def test_history_and_passes_are_consistent(tiny_model):
    src = images(3, 40)
    # pair 0 is matched at once
    target = torch.cat([tiny_model.embed(src[:1]), tiny_model.embed(images(2, 41))]).detach()  # (3, D)
    result = match_embeddings(tiny_model, src, target, max_steps=5, progress=False, **FREEZING)
    passes = result.history["passes"]  # (T, B)
    for i in range(3):
        rows = passes[~np.isnan(passes[:, i]), i]
        assert len(rows) == result.steps[i] + 1
        capped = int(not result.converged[i])  # its last row is the forward-only evaluation after the last update
        assert np.array_equal(np.diff(rows), np.r_[np.ones(len(rows) - 1 - capped), np.zeros(capped)])
    # a pair found matched was evaluated with a gradient; one stopped by the cap had a forward only at the end
    for i in range(3):
        expected = result.steps[i] + 1 if result.converged[i] else result.steps[i]
        assert result.passes[i] == expected, (i, result.passes, result.steps, result.converged)
    assert result.passes[0] == 1 and result.steps[0] == 0


# ------------------------------------------------------------------ refinement, 8-bit results, mixed precision

BF16 = pytest.mark.skipif(not precision.bf16_supported("cpu"), reason="this CPU has no native bfloat16")
GOLDEN = Path(__file__).parent / "data" / "matching_float32_golden.json"


def _first_match_l2(result, i: int, stop_cos: float = 0.99) -> float:
    """||dx|| (1/255) of pair i's first history row that met the goal."""
    k = np.flatnonzero(result.history["cosine"][:, i] >= stop_cos)[0]
    return result.history["l2_255"][k, i]


def test_refinement_returns_the_smallest_match_and_never_a_larger_one(tiny_model):
    result = match_embeddings(tiny_model, images(3, 50), images(3, 51), max_steps=120, precision="float32",
                              progress=False)
    assert result.converged.all() and result.stopped_by == "max_steps"  # a refining pair runs to the cap
    first = np.array([_first_match_l2(result, i) for i in range(3)])
    assert (result.final["l2_255"] <= first).all()
    assert (result.final["l2_255"] < first).all(), (result.final["l2_255"], first)  # it did refine
    met = result.history["cosine"] >= 0.99  # (T, B)
    smallest = np.where(met, result.history["l2_255"], np.inf).min(axis=0)
    assert np.array_equal(result.final["l2_255"], smallest)


def test_returned_images_are_8bit_and_still_match(tiny_model):
    tgt = images(2, 53)
    result = match_embeddings(tiny_model, images(2, 52), tgt, max_steps=100, progress=False)
    assert result.quantized and result.converged.all()
    assert torch.equal(result.images, metrics.quantize_8bit(result.images))  # what a PNG keeps, exactly
    saved = metrics.cosine(tiny_model.embed(result.images), tiny_model.embed(tgt)).detach().numpy()
    assert (saved >= 0.99).all() and result.survives_8bit.all()
    assert np.allclose(result.final["cosine"], saved, atol=1e-5)


def test_refining_history_passes_and_converged_are_consistent(tiny_model):
    src = images(3, 40)
    target = torch.cat([tiny_model.embed(src[:1]), tiny_model.embed(images(2, 41))]).detach()  # pair 0: at once
    result = match_embeddings(tiny_model, src, target, max_steps=30, precision="float32", progress=False)
    passes = result.history["passes"]  # (T, B)
    for i in range(3):
        rows = passes[~np.isnan(passes[:, i]), i]
        assert rows[-1] == result.passes[i] == 30  # every pair ran to the cap: its last row is forward-only
        assert result.steps[i] < len(passes) and not np.isnan(passes[result.steps[i], i])
        assert result.converged[i] == (result.final["cosine"][i] >= 0.99)
    assert result.converged[0] and result.final["l2_255"][0] <= result.history["l2_255"][0, 0]


@BF16
def test_bfloat16_and_float32_matches_both_meet_stop_cos_in_float32(tiny_model):
    src, tgt = images(2, 54), images(2, 55)
    for name in ("bfloat16", "float32"):
        result = match_embeddings(tiny_model, src, tgt, max_steps=100, precision=name, progress=False)
        assert result.precision == name and result.converged.all()
        cos = metrics.cosine(tiny_model.embed(result.images), tiny_model.embed(tgt)).detach().numpy()  # float32
        assert (cos >= 0.99).all(), (name, cos)
        assert np.allclose(result.final["cosine"], cos, atol=1e-5)


@BF16
def test_bfloat16_search_that_falls_short_is_settled_in_float32(tiny_model, monkeypatch):
    # aim 3e-3 below the goal: float32 must catch it
    monkeypatch.setattr(vitequiv.matching.search, "BF16_COS_MARGIN", -2e-2)
    tgt = images(2, 57)
    result = match_embeddings(tiny_model, images(2, 56), tgt, max_steps=100, precision="bfloat16", progress=False)
    cos = metrics.cosine(tiny_model.embed(result.images), tiny_model.embed(tgt)).detach().numpy()
    assert np.array_equal(result.converged, cos >= 0.99)
    assert result.converged.any() and len(result.history["loss"]) > 101  # settling rows follow the search's
    assert (result.passes > 100).any()


@BF16
def test_settling_that_fails_keeps_the_image_the_search_found(tiny_model, monkeypatch):
    monkeypatch.setattr(vitequiv.matching.search, "BF16_COS_MARGIN", -2e-2)  # aim 3e-3 below the goal
    monkeypatch.setattr(vitequiv.matching.search, "SETTLE_STEPS", 0)  # and take no float32 step: short pairs stay short
    src, tgt = images(2, 56), images(2, 57)
    result = match_embeddings(tiny_model, src, tgt, max_steps=100, precision="bfloat16", progress=False)
    short = ~result.converged
    assert short.any()
    cos = metrics.cosine(tiny_model.embed(result.images), tiny_model.embed(tgt)).detach().numpy()  # float32
    assert (cos[short] < 0.99).all() and (cos[short] > 0.98).all()  # near the goal, not wrecked by settling
    assert (result.steps[short] <= 100).all()  # the image is the search's own
    l2 = metrics.l2_255(result.images - src).numpy()  # (B,)
    assert np.allclose(l2, result.final["l2_255"], rtol=1e-5)


def test_float32_reproduces_the_matcher_before_mixed_precision(tiny_model):
    """Recorded with the matcher as it was before refinement, 8-bit rounding and bfloat16 (tests/data).

    Bit for bit on the CPU that recorded it (an AMX Intel); another CPU's float32 kernels round differently (an AMD
    EPYC's: cosines within 3e-7, lengths within 1e-6 relative), so the check allows float32 rounding and no more:
    Adam's eps 1e-8 -> 1e-7 moves the cosines 10x further (3e-6) and the lengths 20x (2e-5) and fails it.
    """
    golden = json.loads(GOLDEN.read_text())
    plain = dict(max_steps=40, quantize=False, precision="float32", progress=False)
    runs = {
        "min-norm": match_embeddings(tiny_model, images(2, 0), images(2, 1), step_rule=MinNorm(refine=False), **plain),
        "adam": match_embeddings(tiny_model, images(2, 0), images(2, 1), step_rule=Adam(lr=0.01), **plain),
        "paper-gd": paper_match(tiny_model, images(2, 0), images(2, 1), stop_dist2=None, **(plain | {"max_steps": 20})),
    }
    for name, result in runs.items():
        expected = golden[name]
        assert result.steps.tolist() == expected["steps"], name
        cosine, l2 = (np.array(expected[key], dtype=float) for key in ("cosine", "l2_255"))  # (T, 2)
        np.testing.assert_allclose(result.history["cosine"], cosine, rtol=0, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(result.history["l2_255"], l2, rtol=5e-6, atol=0, err_msg=name)
        assert float(result.images.double().sum()) == pytest.approx(expected["image_sum"], rel=0, abs=1e-4), name


def test_auto_is_float32_where_bfloat16_is_missing(monkeypatch):
    monkeypatch.setattr(precision, "_cpu_has_bf16", lambda: False)
    precision._say_float32_once.cache_clear()
    with pytest.warns(UserWarning, match="no native bfloat16"):
        result = match_embeddings(Linear(), images(1, 0), torch.randn(1, 8), max_steps=2, progress=False)
    assert result.precision == "float32" and result.checked is None
    with pytest.raises(ValueError, match="precision='bfloat16' needs native bfloat16"):
        match_embeddings(Linear(), images(1, 0), torch.randn(1, 8), precision="bfloat16", progress=False)
    with pytest.raises(ValueError, match="precision must be one of"):
        match_embeddings(Linear(), images(1, 0), torch.randn(1, 8), precision="half", progress=False)


# ------------------------------------------------------------------------------------- min-visible (p-norm)


def test_min_visible_meets_stop_cos_after_8bit_rounding(tiny_model):
    tgt = images(3, 61)
    result = match_embeddings(tiny_model, images(3, 60), tgt, step_rule="min-visible", max_steps=120,
                              precision="float32", progress=False)
    assert result.converged.all() and result.step_rule.startswith("MinVisible")
    assert torch.equal(result.images, metrics.quantize_8bit(result.images))
    saved = metrics.cosine(tiny_model.embed(result.images), tiny_model.embed(tgt)).detach().numpy()
    assert (saved >= 0.99).all()


def test_min_visible_spreads_the_change_with_smaller_peaks_than_min_norm(tiny_model):
    src, tgt = images(3, 62), images(3, 63)
    l2 = match_embeddings(tiny_model, src, tgt, max_steps=120, precision="float32", progress=False)
    spread = match_embeddings(tiny_model, src, tgt, step_rule="min-visible", max_steps=120, precision="float32",
                              progress=False)
    assert l2.converged.all() and spread.converged.all()
    assert (spread.final["linf_255"] < l2.final["linf_255"]).all(), (spread.final["linf_255"], l2.final["linf_255"])


def test_min_visible_batch_equals_singles_to_one_8bit_level(tiny_one_by_one):
    src, tgt = images(3, 64), images(3, 65)
    batch = match_embeddings(tiny_one_by_one, src, tgt, step_rule="min-visible", max_steps=40, precision="float32",
                             progress=False)
    for i in range(3):
        alone = match_embeddings(tiny_one_by_one, src[i:i + 1], tgt[i:i + 1], step_rule="min-visible", max_steps=40,
                                 precision="float32", progress=False)
        assert alone.steps[0] == batch.steps[i]
        assert (alone.images[0] - batch.images[i]).abs().max() <= 1 / 255 + 1e-6


def test_min_visible_nan_raises_named_error(tiny_model):
    faulty = Faulty(tiny_model, at=3, pair=0, fault=lambda e: e * float("nan"))
    with pytest.raises(MatchingError, match=r"pair 0 .* step 2"):
        match_embeddings(faulty, images(2, 66), tiny_model.embed(images(2, 67)).detach(), step_rule="min-visible",
                         max_steps=10, progress=False)


@pytest.mark.parametrize("p", [2.0, 3.0, 8.0])
@pytest.mark.parametrize("weighted", [False, True])
def test_pixel_metric_steepest_direction_attains_the_dual_norm(p, weighted):
    """<g, d> / ||d|| = ||g||_* for the steepest direction d, and no other direction does better (Hoelder)."""
    from vitequiv.matching.masking import PixelMetric

    g = torch.Generator().manual_seed(int(p * 10) + weighted)
    grad = torch.randn(2, 3, 8, 8, generator=g, dtype=torch.float64)
    weights = torch.rand(2, 3, 8, 8, generator=g, dtype=torch.float64) + 0.5 if weighted else None
    metric = PixelMetric(weights, p=p)
    d = metric.steepest(grad)
    rate = (grad * d).flatten(1).sum(1) / metric.norm(d)  # (2,)
    assert torch.allclose(rate, metric.dual(grad), rtol=1e-9)
    for _ in range(5):  # any other direction gains less per unit of the metric
        other = torch.randn(2, 3, 8, 8, generator=g, dtype=torch.float64)
        assert ((grad * other).flatten(1).sum(1) / metric.norm(other) <= rate + 1e-9).all()


@pytest.mark.parametrize("p", [1.0, 0.5, float("inf"), float("nan")])
def test_min_norm_refuses_a_norm_order_it_cannot_step_in(p):
    with pytest.raises(ValueError, match="p"):
        MinNorm(p=p)


# ------------------------------------------------------------------------------------------- reports


def test_methods_table_stacks_each_methods_table_with_passes_and_batch_time(tiny_model):
    src, tgt = images(2, seed=70), images(2, seed=71)
    results = {"min-norm": match_embeddings(tiny_model, src, tgt, max_steps=5, progress=False),
               "Adam": match_embeddings(tiny_model, src, tgt, step_rule=Adam(lr=0.01), max_steps=3, progress=False)}
    table = vitequiv.matching.methods_table(results, ["a", "b"])
    assert list(table["method"]) == ["min-norm"] * 2 + ["Adam"] * 2 and list(table["pair"]) == ["a", "b"] * 2
    assert list(table.index) == [0, 1, 2, 3] and list(table.columns[-2:]) == ["passes", "batch time (s)"]
    np.testing.assert_array_equal(table["passes"][2:], results["Adam"].passes)
    assert (table["batch time (s)"][2:] == results["Adam"].elapsed_s).all()
    summary = vitequiv.matching.methods_summary(table)
    assert list(summary.index) == ["min-norm", "Adam"]
    assert summary.loc["Adam", "matched"] == results["Adam"].converged.sum()
    assert summary.loc["Adam", "passes_max"] == results["Adam"].passes.max()
    assert summary.loc["min-norm", "psnr_min"] == results["min-norm"].final["psnr"].min()


def test_quality_note_quotes_psnr_ssim_the_indistinguishable_count_and_the_largest_change():
    frame = pd.DataFrame({"PSNR (dB)": [38.04, 41.0, 44.26], "SSIM": [0.9, 0.95, 0.99],
                          "indistinguishable": [False, False, True], "L-inf (1/255)": [12.0, 26.4, 3.0]})
    assert vitequiv.matching.quality_note(frame) == ("PSNR 38.0-44.3 dB (median 41.0), SSIM 0.900-0.990 (median "
                                                     "0.950); 1/3 meet both thresholds; L-inf <= 26/255")


def test_projected_steps_extrapolate_the_recent_pace_of_unmatched_pairs():
    rows = 11  # a fifth of the history: the last 2 steps
    cosine = np.stack([np.linspace(0.5, 0.99, rows), 0.5 + 0.01 * np.arange(rows), np.full(rows, 0.5)], axis=1)
    result = vitequiv.MatchResult(
        images=torch.zeros(3, 3, 4, 4), sources=torch.zeros(3, 3, 4, 4), target_embeddings=torch.zeros(3, 2),
        history={"cosine": cosine}, converged=np.array([True, False, False]), steps=np.array([4, 10, 10]),
        passes=np.array([5, 11, 11]), elapsed_s=1.0, stopped_by="max_steps", stop_cos=0.99)
    projected = result.projected_steps(0.99)  # (3,)
    assert np.isnan(projected[0])  # matched: nothing to project
    assert projected[1] == pytest.approx(10 + (0.99 - 0.6) / 0.01)  # 0.01 a step, from 0.6
    assert np.isnan(projected[2])  # no progress: no projection


def test_stop_cos_sweep_matches_the_first_pairs_again_and_judges_each_image(tiny_model):
    src, tgt = images(3, seed=72), images(3, seed=73)
    done = match_embeddings(tiny_model, src, tgt, step_rule="min-visible", max_steps=4, stop_cos=0.9, progress=False)
    sweep = vitequiv.matching.stop_cos_sweep(tiny_model, src, tgt, ["a", "b", "c"], done, 0.9, [0.5, 0.9],
                                             pairs=2, step_rule="min-visible", max_steps=4, seed=0)
    assert list(sweep["stop cos"]) == [0.5, 0.5, 0.9, 0.9] and list(sweep["pair"]) == ["a", "b"] * 2
    at_done = sweep[sweep["stop cos"] == 0.9]
    np.testing.assert_allclose(at_done["PSNR (dB)"], done.final["psnr"][:2])
    np.testing.assert_allclose(at_done["SSIM"], done.ssim()[:2])
    again = match_embeddings(tiny_model, src[:2], tgt[:2], step_rule="min-visible", max_steps=4,
                             stop_cos=np.array([0.5, 0.5]), progress=False)  # what the sweep ran for 0.5
    swept = sweep[sweep["stop cos"] == 0.5]
    np.testing.assert_array_equal(swept["matched"], again.converged)
    np.testing.assert_allclose(swept["PSNR (dB)"], again.final["psnr"])
    assert sweep["JOD"].between(0, 10).all() and sweep["noise JOD"].between(0, 10).all()
    assert set(sweep.columns) >= {"butteraugli", "noise butteraugli"} and "note" in sweep.attrs
