"""The budget sweep against sign noise of the same size, on the tiny random ViT."""
import numpy as np
import pytest
import torch

from vitequiv.normal_space import sign_noise, sweep_budgets, sweep_table

BUDGETS = [1, 8]


@pytest.fixture(scope="module")
def pairs(tiny_model):
    """Two sources (2, 3, 32, 32), their embeddings and those of two unrelated targets (2, D)."""
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        return images[:2], tiny_model.embed(images[:2]), tiny_model.embed(images[2:])


@pytest.fixture(scope="module")
def sweep(tiny_model, pairs):
    sources, source_emb, target_emb = pairs
    return sweep_budgets(tiny_model, sources, target_emb, source_emb, BUDGETS, lr_fraction=0.25, max_steps=4,
                         stop_cos=0.99)


def test_sweep_matches_within_each_budget_and_leaves_the_source(sweep, pairs):
    sources, source_emb, target_emb = pairs
    assert sweep.budgets_255 == BUDGETS and sweep.cosine.shape == sweep.quantized_cosine.shape == (2, 2)
    for eps, result in sweep.matches.items():
        assert (result.delta.abs() <= eps / 255 + 1e-6).all()  # inside the L-inf ball
    before = torch.nn.functional.cosine_similarity(source_emb, target_emb).numpy()  # (2,)
    assert (sweep.cosine[-1] > before).all()  # the larger budget gets closer to the target
    assert (sweep.to_source < 1 - 1e-4).all() and sweep.to_source[-1].mean() < sweep.to_source[0].mean()
    table = sweep.table(["a", "b"])
    assert table["budget (1/255)"].tolist() == [1, 1, 8, 8] and table["pair"].tolist() == ["a", "b"] * 2
    assert table["cos after"].tolist() == pytest.approx(sweep.cosine.ravel().tolist())
    assert table["cos to source"].tolist() == pytest.approx(sweep.to_source.ravel().tolist())


def test_sign_noise_moves_every_pixel_by_the_budget_and_repeats_from_its_seed(tiny_model, pairs):
    sources, source_emb, target_emb = pairs
    noise = sign_noise(tiny_model, sources, source_emb, target_emb, BUDGETS, n_draws=3, seed=1)
    assert noise.to_source.shape == noise.to_target.shape == noise.l2_255.shape == (2, 3, 2)
    full = np.sqrt(3 * 32 * 32) * np.array(BUDGETS)[:, None, None]  # every value moved by ±b/255, before clipping
    assert (noise.l2_255 <= full + 1e-3).all() and (noise.l2_255 > 0.9 * full).all()
    assert (noise.to_source[0] > noise.to_source[1]).all()  # more noise, further from home
    again = sign_noise(tiny_model, sources, source_emb, target_emb, BUDGETS, n_draws=3, seed=1)
    assert np.array_equal(again.to_target, noise.to_target)
    other = sign_noise(tiny_model, sources, source_emb, target_emb, BUDGETS, n_draws=3, seed=2)
    assert not np.array_equal(other.to_source, noise.to_source)


def test_sweep_table_sets_each_budgets_matches_beside_its_noise(tiny_model, sweep, pairs):
    sources, source_emb, target_emb = pairs
    noise = sign_noise(tiny_model, sources, source_emb, target_emb, BUDGETS, n_draws=2, seed=0)
    baseline = np.array([0.1, 0.3])
    table = sweep_table(sweep, noise, baseline, match_cos=-1.0)
    assert table["budget (1/255)"].tolist() == BUDGETS
    assert table["matched: cos to target (mean)"].tolist() == pytest.approx(sweep.cosine.mean(axis=1).tolist())
    assert table["matched: min over pairs"].tolist() == pytest.approx(sweep.cosine.min(axis=1).tolist())
    assert table["noise: cos to source (mean)"].tolist() == pytest.approx(noise.to_source.mean(axis=(1, 2)).tolist())
    assert table["noise L2 (1/255)"].tolist() == pytest.approx(noise.l2_255.mean(axis=(1, 2)).tolist())
    assert table["pairs ≥ -1.0 (float / 8-bit)"].tolist() == ["2 / 2 of 2"] * 2
    assert (table["baseline cos source-target (mean)"] == 0.2).all()
