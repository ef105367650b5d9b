"""Per-model / per-block structure measurements on tiny models: BlockEmbedding, matching and Jacobian summaries."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch

import vitequiv
from vitequiv import structure
from vitequiv.jacobians import LinearMap


@pytest.fixture(scope="module")
def vit():
    return vitequiv.load_model("random:vit_tiny_patch16_224", img_size=32, depth=2, device="cpu")


def images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))  # (n, 3, 32, 32)


def test_last_block_equals_embed(vit):
    x = images(3)
    with torch.no_grad():
        assert torch.allclose(structure.BlockEmbedding(vit, -1).embed(x), vit.embed(x), atol=1e-6)
        assert torch.allclose(structure.BlockEmbedding(vit, 1).embed(x), vit.embed(x), atol=1e-6)


def test_block_embedding_matches_block_embeddings_and_differs_across_blocks(vit):
    x = images(2)
    with torch.no_grad():
        first = structure.BlockEmbedding(vit, 0).embed(x)
        assert torch.allclose(first, vit.block_embeddings(x, indices=[0])[0], atol=1e-6)
        assert not torch.allclose(first, vit.embed(x), atol=1e-3)


def test_block_embedding_is_differentiable_and_forwards_attributes(vit):
    block = structure.BlockEmbedding(vit, 0)
    x = images(1).requires_grad_(True)
    block.embed(x).pow(2).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert block.std is vit.std and block.input_size == 32 and block.embed_dim == 192
    with pytest.raises(IndexError):
        structure.BlockEmbedding(vit, 2)


def test_pair_indices_distinct_and_seeded():
    src, tgt = structure.pair_indices(5, 6, seed=1)
    assert len(src) == 6 and np.all(src != tgt) and len(set(zip(src, tgt))) == 6
    assert np.array_equal(src, structure.pair_indices(5, 6, seed=1)[0])


def test_matching_measurements_reaches_both_criteria(vit):
    x = images(4, seed=3)
    summary, result = structure.matching_measurements(vit, x[:2], x[2:], max_steps=80,
                                                      step_rule=vitequiv.Adam(lr=0.01))
    assert summary["pairs"] == 2 and summary["reach_cos"] == 1.0 and summary["reach_rel"] == 1.0
    assert summary["steps_cos"] >= 1 and summary["steps_rel"] >= 1
    assert 0 < summary["linf_cos"] <= 255 and np.isfinite(summary["psnr_rel"])
    assert len(result) == 2 and all(r.converged.all() for r in result)
    assert summary["final_rel"] <= 0.15 and summary["final_cos"] >= 0.99


def test_jacobian_measurements_on_known_linear_map():
    s = torch.tensor([4.0, 2.0, 1.0, 0.0])
    lin = LinearMap.with_singular_values(s, D=4, input_shape=(3, 4, 4))
    x = torch.rand(1, 3, 4, 4, dtype=torch.float64)
    row, sv = structure.jacobian_measurements(lin, x, eps=(1e-2,), n_random=8)
    assert row["rank"] == 3 and row["P"] == 48 and row["D"] == 4
    assert row["null_fraction"] == pytest.approx(1 - 3 / 48)
    assert row["s_max"] == pytest.approx(4.0, rel=1e-6) and np.allclose(sv[:3], [4, 2, 1])
    assert row["L_top@0.01"] == pytest.approx(4.0, rel=1e-6)  # linear map: exactly s_max along v_1
    assert row["L_rand@0.01"] < 2.0 and row["L_ratio@0.01"] > 2.0


def test_jacobian_measurements_topk_on_vit(vit):
    x = images(1)
    full, s_full = structure.jacobian_measurements(vit, x, eps=(1e-2,), n_random=2)
    topk, s_top = structure.jacobian_measurements(vit, x, method="topk", k=4, eps=(1e-2,), n_random=2)
    assert 150 < full["rank"] <= 192 and np.isnan(topk["rank"])
    assert topk["s_max"] == pytest.approx(full["s_max"], rel=1e-3)
    assert full["L_ratio@0.01"] > 1
