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


def summaries(cos0: float = 0.5, final_rel: float = 0.1, final_linf: float = 20.0, s_max_rel: float = 1.0):
    """A MatchingSummary and a JacobianSummary with chosen numbers, for the helpers that read them."""
    nan = float("nan")
    matching = structure.MatchingSummary(
        pairs=2, cos0=cos0, reach_cos=1.0, reach_rel=1.0, steps_cos=5, steps_rel=4, linf_cos=nan, l2_cos=nan,
        psnr_cos=nan, linf_rel=nan, l2_rel=nan, psnr_rel=nan, final_cos=0.99, final_rel=final_rel,
        final_linf=final_linf, final_psnr=30.0, final_steps=6, s_per_pair=0.1, survives_8bit=1.0,
        per_pair={"final_rel": np.array([0.1, 0.3]), "final_linf": np.array([10.0, 40.0])})
    jacobian = structure.JacobianSummary(
        D=4, P=48, rank=3, null_fraction=45 / 48, entropy_rank=2.5, s_max=2.0, s_max_rel=s_max_rel, s_ratio_10=0.1,
        method="full", seconds=1.0, eps=(1e-3, 1e-1), lipschitz_top=(8.0, 6.0), lipschitz_random=(2.0, 3.0))
    return matching, jacobian


def test_model_specs_label_the_model_and_its_random_twins():
    specs = structure.model_specs("embedded", "random:vit_small_patch14_dinov2", 1.0, ["vit_base"])
    assert list(specs) == ["embedded", "random, timm init", "random, LayerScale 1", "vit_base"]
    assert specs["random, LayerScale 1"] == ("random:vit_small_patch14_dinov2", {"init_values": 1.0})
    assert list(structure.model_specs("m", "random:m")) == ["m", "random, timm init"]


def test_model_loader_reuses_loaded_models_and_loads_the_rest(tiny_model):
    specs = {"tiny": ("random:vit_tiny_patch16_224", {"depth": 1}), "mine": ("unused", {})}
    load = structure.model_loader(specs, device="cpu", seed=0, loaded={("mine", 32): tiny_model})
    assert load("mine", 32) is tiny_model
    one = load("tiny", 32)
    assert len(one.backbone.blocks) == 1 and one.input_size == 32
    with pytest.raises(KeyError):
        load("unknown", 32)


def test_available_models_loads_each_size_once_and_skips_unavailable_weights(capsys):
    calls = []

    def load(label, size):
        calls.append((label, size))
        if label == "hub":
            raise vitequiv.WeightsUnavailableError("not cached. Download it first")
        return f"{label}@{size}"

    found = list(structure.available_models(load, ["a", "hub", "b"], (64, 64)))
    assert found == [("a", ["a@64", "a@64"]), ("b", ["b@64", "b@64"])]
    assert calls == [("a", 64), ("hub", 64), ("b", 64)]
    assert "skipped hub: weights unavailable (not cached)" in capsys.readouterr().out


def test_by_model_groups_rows_in_order_of_first_appearance():
    matching, jacobian = summaries()
    rows = [structure.StructureRow(name, matching, jacobian, labels={"block": b})
            for name, b in [("b", 0), ("a", 0), ("b", 1)]]
    groups = structure.by_model(rows)
    assert list(groups) == ["b", "a"] and [r.labels["block"] for r in groups["b"]] == [0, 1]


def test_evidence_table_and_notes_quote_the_rows():
    matching, jacobian = summaries(cos0=0.25)
    row = structure.StructureRow("m", matching, jacobian)
    evidence = structure.evidence_table({"pretrained": row, "other": row}, 1e-3)
    assert list(evidence.index) == ["pretrained", "other"]
    assert evidence.loc["pretrained", "lipschitz_ratio"] == 4.0 and evidence.loc["other", "cos0"] == 0.25
    assert evidence.loc["pretrained", "rank"] == 3 and evidence.loc["pretrained", "residual"] == 0.1
    note = structure.matching_note(evidence, "pretrained")
    assert note.startswith("pretrained: cosine before 0.2500, after <= 6 steps cosine 0.9900, residual 0.100")
    assert structure.jacobian_note(evidence, "other", 1e-3) == (
        "other: rank 3/4, effective rank 2, s_max/|f| 1, L top/random @0.001 4")  # 2.5 rounds to even


def test_harder_than_takes_the_worse_of_residual_and_pixel_change_per_pair():
    pairs = {"final_rel": np.array([0.1, 0.3]), "final_linf": np.array([10.0, 40.0])}
    assert np.allclose(structure.harder_than(pairs, 0.15, 20.0), [0.1 / 0.15, 0.3 / 0.15])  # L-inf: 1/3, 4/3
    reference = {"final_rel": np.array([0.1, 0.1]), "final_linf": np.array([10.0, 40.0])}
    harder = structure.harder_than(pairs, reference["final_rel"], reference["final_linf"], 1.1)
    assert np.allclose(harder, [1 / 1.1, 3 / 1.1])
