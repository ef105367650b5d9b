"""Per-model / per-block structure measurements on tiny models: BlockEmbedding, matching and Jacobian summaries."""
import numpy as np
import pytest
import torch
from helpers import random_images as images

import vitequiv
from vitequiv import structure
from vitequiv.jacobians import LinearMap


def test_last_block_equals_embed(tiny_model):
    x = images(3)
    with torch.no_grad():
        assert torch.allclose(vitequiv.BlockEmbedding(tiny_model, -1).embed(x), tiny_model.embed(x), atol=1e-6)
        assert torch.allclose(vitequiv.BlockEmbedding(tiny_model, 1).embed(x), tiny_model.embed(x), atol=1e-6)


def test_block_embedding_matches_block_embeddings_and_differs_across_blocks(tiny_model):
    x = images(2)
    with torch.no_grad():
        first = vitequiv.BlockEmbedding(tiny_model, 0).embed(x)
        assert torch.allclose(first, tiny_model.block_embeddings(x, indices=[0])[0], atol=1e-6)
        assert not torch.allclose(first, tiny_model.embed(x), atol=1e-3)


def test_block_embedding_is_differentiable_and_forwards_attributes(tiny_model):
    block = vitequiv.BlockEmbedding(tiny_model, 0)
    x = images(1).requires_grad_(True)
    block.embed(x).pow(2).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert block.std is tiny_model.std and block.input_size == 32 and block.embed_dim == 192
    with pytest.raises(IndexError):
        vitequiv.BlockEmbedding(tiny_model, 2)


def test_pair_indices_distinct_and_seeded():
    src, tgt = structure.pair_indices(5, 6, seed=1)
    assert len(src) == 6 and np.all(src != tgt) and len(set(zip(src, tgt))) == 6
    assert np.array_equal(src, structure.pair_indices(5, 6, seed=1)[0])


def test_matching_measurements_reaches_both_criteria(tiny_model):
    x = images(4, seed=3)
    summary, result = structure.matching_measurements(tiny_model, x[:2], x[2:], max_steps=80,
                                                      step_rule=vitequiv.Adam(lr=0.01))
    assert summary.pairs == 2 and summary.reach_cos == 1.0 and summary.reach_rel == 1.0
    assert summary.steps_cos >= 1 and summary.steps_rel >= 1
    assert 0 < summary.linf_cos <= 255 and np.isfinite(summary.psnr_rel)
    assert len(result) == 2 and all(r.converged.all() for r in result)
    assert summary.final_rel <= 0.15 and summary.final_cos >= 0.99
    for key in ("final_rel", "final_linf", "final_cos"):  # the per-pair values behind each median, for claims
        assert summary.per_pair[key].shape == (2,) and np.median(summary.per_pair[key]) == getattr(summary, key)


def test_jacobian_measurements_on_known_linear_map():
    s = torch.tensor([4.0, 2.0, 1.0, 0.0])
    lin = LinearMap.with_singular_values(s, D=4, input_shape=(3, 4, 4))
    x = torch.rand(1, 3, 4, 4, dtype=torch.float64)
    row, sv = structure.jacobian_measurements(lin, x, eps=(1e-2,), n_random=8)
    assert row.rank == 3 and row.P == 48 and row.D == 4
    assert row.null_fraction == pytest.approx(1 - 3 / 48)
    assert row.s_max == pytest.approx(4.0, rel=1e-6) and np.allclose(sv[:3], [4, 2, 1])
    assert row.lipschitz_top[0] == pytest.approx(4.0, rel=1e-6)  # linear map: exactly s_max along v_1
    assert row.lipschitz_random[0] < 2.0 and row.lipschitz_ratio(1e-2) > 2.0
    with pytest.raises(KeyError, match="not measured"):
        row.lipschitz_ratio(0.5)


def test_jacobian_measurements_topk_on_vit(tiny_model):
    x = images(1)
    full, s_full = structure.jacobian_measurements(tiny_model, x, eps=(1e-2,), n_random=2)
    topk, s_top = structure.jacobian_measurements(tiny_model, x, method="topk", k=4, eps=(1e-2,), n_random=2)
    assert 150 < full.rank <= 192 and np.isnan(topk.rank)
    assert topk.s_max == pytest.approx(full.s_max, rel=1e-3)
    assert full.lipschitz_ratio(1e-2) > 1


def test_structure_row_averages_images_and_tabulates_with_library_names(tiny_model):
    x = images(4, seed=5)
    row = structure.structure_row(tiny_model, x, pairs=([0], [1]), jacobian_images=(2, 3),
                                  match_kwargs=dict(max_steps=3, step_rule="adam"),
                                  jacobian_kwargs=dict(eps=(1e-2, 1e-1), n_random=2), block=1)
    one, _ = structure.jacobian_measurements(tiny_model, x[2:3], eps=(1e-2, 1e-1), n_random=2)
    two, _ = structure.jacobian_measurements(tiny_model, x[3:4], eps=(1e-2, 1e-1), n_random=2)
    assert row.jacobian.s_max == pytest.approx((one.s_max + two.s_max) / 2, rel=1e-5)
    assert sorted(row.spectra) == [2, 3] and row.matching.pairs == 1
    table = structure.structure_table([row])
    assert table.loc[0, "block"] == 1 and table.loc[0, "model"] == tiny_model.name
    assert table.loc[0, structure.DISPLAY_NAMES["s_max"]] == pytest.approx(row.jacobian.s_max)
    assert table.loc[0, structure.lipschitz_column(0.1)] == pytest.approx(row.jacobian.lipschitz_ratio(0.1))
    assert structure.DISPLAY_NAMES["match.final_rel"] in table
