"""Embedding matching on tiny models: convergence, stopping, budgets, batching, freezing, failures, hooks."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch

import vitequiv
from vitequiv import metrics
from vitequiv.matching import (
    Adam, L2Ball, LinfBall, MatchingError, NormalizedGD, PaperGD, SignGD, StopRule, match_embeddings, paper_match,
)


@pytest.fixture(scope="module")
def vit():
    return vitequiv.load_model("random:vit_tiny_patch16_224", img_size=32, depth=2, device="cpu")


def images(n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))  # (n, 3, 32, 32)


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


def test_adam_drives_tiny_vit_to_target(vit):
    result = match_embeddings(vit, images(2, 0), images(2, 1), step_rule=Adam(lr=0.01), max_steps=200, progress=False)
    assert result.converged.all(), result.final["cosine"]
    assert (result.final["cosine"] >= 0.99).all()
    assert result.stopped_by == "converged"
    assert result.images.min() >= 0 and result.images.max() <= 1
    assert result.history["loss"].shape == (result.steps.max() + 1, 2)
    assert result.history["loss"][0, 0] > result.final["loss"][0]


def test_targets_as_images_equal_targets_as_embeddings(vit):
    src, tgt = images(2, 0), images(2, 1)
    a = match_embeddings(vit, src, tgt, step_rule=Adam(lr=0.01), max_steps=5, progress=False)
    b = match_embeddings(vit, src, vit.embed(tgt).detach(), step_rule=Adam(lr=0.01), max_steps=5, progress=False)
    assert torch.equal(a.images, b.images)


def test_converged_pair_takes_zero_steps_and_is_unchanged(vit):
    src = images(2, 0)
    target = torch.cat([vit.embed(src[:1]), vit.embed(images(1, 5))]).detach()  # pair 0 is its own target
    result = match_embeddings(vit, src, target, max_steps=3, progress=False)
    assert result.steps.tolist() == [0, 3]
    assert result.converged.tolist() == [True, False]
    assert torch.equal(result.images[0], src[0])
    assert np.isnan(result.history["loss"][1:, 0]).all()  # not evaluated once stopped
    assert result.stopped_by == "max_steps"


def test_dist2_threshold_is_required_too(vit):
    src, tgt = images(1, 0), images(1, 1)
    loose = match_embeddings(vit, src, tgt, step_rule=Adam(0.01), stop=StopRule(cos=0.9), max_steps=100, progress=False)
    strict = match_embeddings(vit, src, tgt, step_rule=Adam(0.01), stop=StopRule(cos=0.9, dist2=1e-8),
                              max_steps=loose.steps[0] + 3, progress=False)
    assert loose.converged[0] and not strict.converged[0]
    assert strict.steps[0] == loose.steps[0] + 3


@pytest.mark.parametrize("box", ["unit", "source"])
def test_linf_budget_and_box(vit, box):
    src = images(2, 0) * 0.8 + 0.1  # source range [0.1, 0.9]: the "source" box is tighter than [0, 1]
    result = match_embeddings(vit, src, images(2, 1), step_rule=SignGD(lr=2 / 255), budget=LinfBall(4),
                              box=box, max_steps=10, progress=False)
    delta = result.images - src
    assert delta.abs().max() <= 4 / 255 + 1e-7
    assert delta.abs().max() >= 4 / 255 - 1e-6  # the budget is actually reached
    assert np.allclose(result.history["linf_255"][-1], delta.abs().flatten(1).amax(1) * 255, atol=1e-4)
    lo, hi = (0.0, 1.0) if box == "unit" else (src.amin(), src.amax())
    assert result.images.min() >= lo and result.images.max() <= hi


def test_l2_budget(vit):
    src = images(2, 0)
    result = match_embeddings(vit, src, images(2, 1), step_rule=NormalizedGD(lr=0.2), budget=L2Ball(30),
                              max_steps=10, progress=False)
    norms = (result.images - src).flatten(1).norm(dim=1) * 255
    assert (norms <= 30 + 1e-3).all() and (norms >= 29).all()
    assert result.images.min() >= 0 and result.images.max() <= 1


def test_step_rules_first_step_sizes():
    model, src = Linear(), torch.full((2, 3, 32, 32), 0.5)
    tgt = torch.randn(2, 8, generator=torch.Generator().manual_seed(3))
    signed = match_embeddings(model, src, tgt, step_rule=SignGD(lr=1 / 255), max_steps=1, progress=False)
    assert torch.allclose((signed.images - src).abs(), torch.tensor(1 / 255), atol=1e-6)
    normed = match_embeddings(model, src, tgt, step_rule=NormalizedGD(lr=0.1), max_steps=1, progress=False)
    assert torch.allclose((normed.images - src).flatten(1).norm(dim=1), torch.tensor(0.1), atol=1e-5)
    adam = match_embeddings(model, src, tgt, step_rule=Adam(lr=1e-3), max_steps=1, progress=False)
    assert torch.allclose((adam.images - src).abs().amax(), torch.tensor(1e-3), atol=1e-6)  # Adam's first step: lr * sign


def test_batch_equals_singles(vit):
    """Pairs converge at different steps; the batch (with freezing) must reproduce each pair run alone."""
    src, tgt = images(3, 10), images(3, 11)
    kwargs = dict(step_rule=Adam(lr=0.01), stop=StopRule(cos=0.97), max_steps=60, progress=False)
    batch = match_embeddings(vit, src, tgt, **kwargs)
    assert len(set(batch.steps.tolist())) > 1, "pairs should stop at different steps for this test to bite"
    _assert_same_as_singles(vit, src, tgt, batch, kwargs)


def test_batch_equals_singles_for_loss_scale_sensitive_rule(vit):
    """Plain descent sees the loss scale: per-pair losses must be summed, not averaged, over the batch."""
    src, tgt = images(3, 10), images(3, 11)
    kwargs = dict(step_rule=PaperGD(lr=200.0), max_steps=5, progress=False)
    batch = match_embeddings(vit, src, tgt, **kwargs)
    assert (batch.final["linf_255"] > 1).all()  # the images did move
    _assert_same_as_singles(vit, src, tgt, batch, kwargs)


def _assert_same_as_singles(vit, src, tgt, batch, kwargs):
    for i in range(3):
        single = match_embeddings(vit, src[i:i + 1], tgt[i:i + 1], **kwargs)
        assert single.steps[0] == batch.steps[i]
        assert torch.allclose(single.images[0], batch.images[i], atol=1e-5, rtol=0)
        n = single.steps[0] + 1
        assert np.allclose(single.history["cosine"][:n, 0], batch.history["cosine"][:n, i], atol=1e-5)


def test_frozen_pair_is_bit_identical(vit):
    snapshots = []
    src, tgt = images(2, 20), images(2, 21)
    result = match_embeddings(vit, src, tgt, step_rule=Adam(lr=0.01), stop=StopRule(cos=0.95), max_steps=80,
                              progress=False, callback=lambda k, r: snapshots.append((k, r.images.clone())))
    first = int(np.argmin(result.steps))
    assert result.converged[first] and result.steps[first] < result.steps.max()
    frozen = [img[first] for k, img in snapshots if k >= result.steps[first]]
    assert len(frozen) > 1 and all(torch.equal(f, frozen[0]) for f in frozen)
    assert torch.equal(result.images[first], frozen[0])


def test_nan_raises_named_error(vit):
    faulty = Faulty(vit, at=4, pair=1, fault=lambda e: e * float("nan"))
    with pytest.raises(MatchingError, match=r"pair 1 .* step 3") as info:
        match_embeddings(faulty, images(2, 0), vit.embed(images(2, 1)).detach(), max_steps=10, progress=False)
    assert (info.value.pair, info.value.step) == (1, 3)
    partial = info.value.result  # what was found up to the failing step
    assert partial.steps.tolist() == [3, 3] and np.isnan(partial.history["loss"][3, 1])
    assert torch.isfinite(partial.images).all()


def test_divergence_raises(vit):
    faulty = Faulty(vit, at=3, pair=0, fault=lambda e: e * 1e4)
    with pytest.raises(MatchingError, match="pair 0"):
        match_embeddings(faulty, images(2, 0), vit.embed(images(2, 1)).detach(), max_steps=10, progress=False)


def test_interrupt_returns_partial_result(vit):
    class Interrupting(Faulty):
        def embed(self, x):
            if self.calls == self.at:
                self.calls += 1
                raise KeyboardInterrupt
            return super().embed(x)

    model = Interrupting(vit, at=4, pair=0, fault=lambda e: e)
    result = match_embeddings(model, images(2, 0), vit.embed(images(2, 1)).detach(), max_steps=10, progress=False)
    assert result.interrupted and result.steps.tolist() == [3, 3]
    assert result.quantized_cosine is not None


def test_deterministic(vit):
    src, tgt = images(2, 0), images(2, 1)
    a = match_embeddings(vit, src, tgt, max_steps=8, progress=False)
    b = match_embeddings(vit, src, tgt, max_steps=8, progress=False)
    assert torch.equal(a.images, b.images)
    assert all(np.array_equal(a.history[k], b.history[k], equal_nan=True) for k in a.history)


def test_paper_gd_preset_reduces_loss(vit):
    result = paper_match(vit, images(2, 0), images(2, 1), lr=0.08, max_steps=15, progress=False)
    assert "PaperGD" in result.step_rule
    loss = result.history["loss"]
    assert (loss[-1] < 0.9 * loss[0]).all()
    src = images(2, 0)  # clamped to the source's own range
    assert (result.images.flatten(1).amin(1) >= src.flatten(1).amin(1)).all()
    assert (result.images.flatten(1).amax(1) <= src.flatten(1).amax(1)).all()


def test_paper_gd_steps_on_normalised_input():
    model, x = Linear(), torch.full((1, 3, 32, 32), 0.5)
    grad = torch.ones(1, 3, 4, 4)
    std = torch.tensor([0.5, 0.25, 0.1])
    upd, _ = PaperGD(lr=0.1, input_std=std).update(grad, {})
    assert torch.allclose(upd[0, :, 0, 0], 0.1 * std**2)
    plain, _ = PaperGD(lr=0.1).update(grad, {})
    assert torch.allclose(plain, 0.1 * grad)


def test_quantized_cosine_is_on_8bit_images(vit):
    tgt = images(2, 1)
    result = match_embeddings(vit, images(2, 0), tgt, step_rule=Adam(lr=0.01), max_steps=30, progress=False)
    expected = metrics.cosine(vit.embed(metrics.quantize_8bit(result.images)), vit.embed(tgt))
    assert np.allclose(result.quantized_cosine, expected.detach().numpy(), atol=1e-6)
    assert np.abs(result.quantized_cosine - result.final["cosine"]).max() > 1e-7  # rounding did change something
    assert np.array_equal(result.survives_8bit, result.quantized_cosine >= 0.99)


def test_callback_stops_early_and_keeps_progress(vit):
    seen = []

    def callback(step, so_far):
        seen.append(so_far.final["cosine"].copy())
        return step == 3

    result = match_embeddings(vit, images(2, 0), images(2, 1), max_steps=50, progress=False, callback=callback)
    assert result.stopped_by == "callback" and result.steps.tolist() == [3, 3]
    assert len(result.history["loss"]) == 4 and len(seen) == 4
    assert np.array_equal(result.final["cosine"], seen[-1])


def test_history_frame(vit):
    result = match_embeddings(vit, images(2, 0), images(2, 1), max_steps=3, progress=False)
    frame = result.to_frame()
    assert len(frame) == 8 and {"step", "pair", "loss", "cosine", "psnr", "linf_255"} <= set(frame.columns)


def test_adam_matches_torch_optim_adam():
    model, src = Linear(), torch.full((2, 3, 32, 32), 0.5)
    tgt = torch.randn(2, 8, generator=torch.Generator().manual_seed(3))
    ours = match_embeddings(model, src, tgt, step_rule=Adam(lr=1e-3), max_steps=5, progress=False)
    x = src.clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=1e-3)
    for _ in range(5):
        opt.zero_grad()
        (model.embed(x) - tgt).pow(2).mean(dim=1).sum().backward()
        opt.step()
    assert torch.allclose(ours.images, x.detach(), atol=1e-6, rtol=0)
