"""Directional Lipschitz estimates: exact on a linear map, converging (float64) or breaking (float32) on a ViT."""
import math
import types

import numpy as np
import pandas as pd
import pytest
import torch

from vitequiv.jacobians import LinearMap, cast_model, spectrum
from vitequiv.lipschitz import (
    DEFAULT_EPS,
    across_photos,
    breakdown_decades,
    breakdown_eps,
    breakdown_table,
    directional_derivative,
    directional_lipschitz,
    directions_by_kind,
    eps_sweep,
    null_directions,
    photo_table,
    random_directions,
    relative_estimates,
    sampled_lipschitz,
    sampled_lipschitz_max,
    sensitivity_table,
    top_directions,
    unit,
)

SHAPE = (3, 8, 8)
S_TRUE = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0, 0.5], dtype=torch.float64)


@pytest.fixture(scope="module")
def linear():
    return LinearMap.with_singular_values(S_TRUE, D=10, input_shape=SHAPE, seed=1)


def test_linear_map_estimates_are_exact_for_every_eps(linear):
    sp = spectrum(linear.A, SHAPE)
    zero = torch.zeros(1, *SHAPE, dtype=torch.float64)  # f(0) = 0: no cancellation, exact down to eps = 1e-12
    for i, v in enumerate(top_directions(sp, 3)):
        L = directional_lipschitz(linear, zero, 7 * v)  # any length: v is normalized
        assert L.shape == DEFAULT_EPS.shape
        assert torch.allclose(L, S_TRUE[i].expand_as(L), rtol=1e-12)
        assert directional_derivative(linear, zero, v).item() == pytest.approx(S_TRUE[i].item(), rel=1e-12)
    x = torch.rand(1, *SHAPE, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    L = directional_lipschitz(linear, x, top_directions(sp, 1)[0], eps=[1e-1, 1e-4, 1e-8])
    assert torch.allclose(L, S_TRUE[:1].expand(3), rtol=1e-6)  # away from 0 only rounding of f(x) remains


def test_null_and_random_directions_on_linear_map(linear):
    sp = spectrum(linear.A, SHAPE)
    x = torch.rand(1, *SHAPE, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    for v in null_directions(sp, 3):
        assert v.norm().item() == pytest.approx(1.0)
        assert directional_derivative(linear, x, v) < 1e-12
        assert directional_lipschitz(linear, x, v, eps=[1e-2]).item() < 1e-10
    dirs = random_directions(16, SHAPE, seed=4, dtype=torch.float64)
    exact = (dirs.flatten(1) @ linear.A.T).norm(dim=1)
    assert torch.allclose(sampled_lipschitz(linear, x, dirs, eps=1e-3, batch_size=5), exact, rtol=1e-9)
    assert sampled_lipschitz_max(linear, x, 16, eps=1e-3, seed=4) == pytest.approx(exact.max().item(), rel=1e-9)
    assert exact.max() < S_TRUE[0]  # random directions underestimate s_max


def test_float64_converges_to_jv_and_float32_breaks_down(tiny_model, tiny_x):
    v = torch.randn(3, 32, 32, generator=torch.Generator().manual_seed(5))
    exact = directional_derivative(tiny_model, tiny_x, v, dtype=torch.float64).item()
    eps = [1e-2, 1e-6, 1e-7, 1e-8, 1e-12]
    L64 = directional_lipschitz(tiny_model, tiny_x, v, eps, dtype=torch.float64)
    assert ((L64[1:4] - exact).abs() / exact).max() < 1e-5
    assert abs(L64[4] - exact) / exact < 1e-2
    L32 = directional_lipschitz(tiny_model, tiny_x, v, eps)
    assert L32.dtype == torch.float32
    assert abs(L32[0] - exact) / exact < 0.05  # still fine at 1e-2 ...
    assert abs(L32[4] - exact) / exact > 0.5  # ... but tiny_x + 1e-12 v rounds: the estimate is 0 or noise


def test_derivative_matches_jacobian_and_cast_leaves_model_alone(tiny_model, tiny_x, tiny_J):
    v = unit(torch.randn(3, 32, 32, generator=torch.Generator().manual_seed(6)))
    exact = (tiny_J @ v.flatten()).norm().item()
    assert directional_derivative(tiny_model, tiny_x, v).item() == pytest.approx(exact, rel=1e-4)
    assert cast_model(tiny_model, torch.float64).mean.dtype == torch.float64
    assert tiny_model.mean.dtype == torch.float32 and next(tiny_model.parameters()).dtype == torch.float32
    plain = LinearMap(torch.ones(2, 3, dtype=torch.float32), (3, 1, 1))
    assert cast_model(plain, torch.float64).A.dtype == torch.float64 and plain.A.dtype == torch.float32


def test_sampled_max_is_below_top_singular_value_and_reproducible(tiny_model, tiny_x, tiny_J):
    s_max = spectrum(tiny_J, tiny_x.shape[1:]).s[0].item()
    a = sampled_lipschitz_max(tiny_model, tiny_x, 24, seed=7)
    assert a == sampled_lipschitz_max(tiny_model, tiny_x, 24, seed=7)
    assert a < s_max


def test_breakdown_eps_finds_where_rounding_takes_over():
    eps = [1e-1, 1e-2, 1e-3, 1e-4, 1e-5]
    assert breakdown_eps(eps, [3.5, 2.0, 2.01, 1.99, 0.0], exact=2.0) == 1e-5  # agrees from 1e-2, leaves at 1e-5
    assert breakdown_eps(eps[::-1], [0.0, 1.99, 2.01, 2.0, 3.5], exact=2.0) == 1e-5  # order of the sweep is irrelevant
    assert breakdown_eps(eps, [2.0] * 5, exact=2.0) == 0.0  # never leaves
    assert math.isnan(breakdown_eps(eps, [9.0] * 5, exact=2.0))  # never agrees


# ---------------------------------------------------------------------------------------------- notebook 05 tables


def test_directions_by_kind_are_unit_and_of_their_kind(linear):
    sp = spectrum(linear.A, SHAPE)
    matching = unit(torch.randn(1, *SHAPE, generator=torch.Generator().manual_seed(8)))  # (1, 3, 8, 8)
    dirs = directions_by_kind(sp, matching, n_top=99, n_random=3, seed=1)
    assert list(dirs) == ["top singular", "matching", "random", "null space"]
    assert len(dirs["top singular"]) == len(sp.V) and dirs["matching"] is matching  # n_top capped by the spectrum
    assert dirs["random"].shape == dirs["null space"].shape == (3, *SHAPE)
    assert torch.allclose(dirs["random"].flatten(1).norm(dim=1), torch.ones(3))
    stretch = {k: (d.flatten(1).double() @ linear.A.T).norm(dim=1) for k, d in dirs.items()}  # ||A v|| per direction
    assert torch.allclose(stretch["top singular"][:2], S_TRUE[:2]) and stretch["null space"].max() < 1e-6
    again = directions_by_kind(sp, matching, 1, 3, seed=1)
    assert torch.equal(again["random"], dirs["random"])  # seeded


def test_eps_sweep_follows_jv_in_float64_and_rounds_away_in_float32():
    linear32 = LinearMap.with_singular_values(S_TRUE, D=10, input_shape=SHAPE, seed=1, dtype=torch.float32)
    sp = spectrum(linear32.A.double(), SHAPE)
    x = 0.5 + 0.5 * torch.rand(1, *SHAPE, generator=torch.Generator().manual_seed(9))  # (1, 3, 8, 8): f(x) far from 0
    dirs = {"top": top_directions(sp, 1)[0].float(), "null": null_directions(sp, 1, seed=2)[0].float()}
    sweep = eps_sweep(linear32, x, dirs, linear32.A, torch.tensor([1e-2, 1e-12], dtype=torch.float64))
    assert list(sweep.columns) == ["direction", "dtype", "eps", "L", "||Jv||"] and len(sweep) == 2 * 2 * 2
    top = sweep[sweep.direction == "top"].set_index(["dtype", "eps"]).L
    assert sweep[sweep.direction == "top"]["||Jv||"].iloc[0] == pytest.approx(5.0, rel=1e-6)
    assert top["float64", 1e-12] == pytest.approx(5.0, rel=1e-3)
    assert top["float32", 1e-2] == pytest.approx(5.0, rel=1e-3) and top["float32", 1e-12] == 0  # x + eps v == x
    assert sweep[sweep.direction == "null"]["||Jv||"].iloc[0] < 1e-6


def _sweep(L32, L64, exact=2.0):
    eps = [1e-1, 1e-2, 1e-3, 1e-4, 1e-5]
    return pd.DataFrame([{"direction": "top", "dtype": dtype, "eps": e, "L": value, "||Jv||": exact}
                         for dtype, L in (("float32", L32), ("float64", L64)) for e, value in zip(eps, L)])


def test_breakdown_table_and_decades():
    sweep = _sweep([3.5, 2.0, 2.01, 0.5, 0.0], [3.5, 2.0, 2.0, 2.0, 1.0])
    table = breakdown_table(sweep, at_eps=3e-3)
    assert list(table.columns) == ["direction", "||Jv||", "L at eps=0.003 (float32)", "breakdown eps (float32)",
                                   "L at eps=0.003 (float64)", "breakdown eps (float64)"]
    row = table.iloc[0]
    assert row["L at eps=0.003 (float32)"] == pytest.approx(2.0 + 0.01 * math.log10(1e-2 / 3e-3))  # linear in log eps
    assert row["breakdown eps (float32)"] == 1e-4 and row["breakdown eps (float64)"] == 1e-5
    e32, e64, decades = breakdown_decades(table, "top", floor=1e-12)
    assert (e32, e64) == (1e-4, 1e-5) and decades == pytest.approx(1.0)
    never_leaves = breakdown_table(_sweep([3.5, 2.0, 2.0, 2.0, 0.0], [2.0] * 5), at_eps=1e-3)
    assert breakdown_decades(never_leaves, "top", floor=1e-12)[2] == pytest.approx(7.0)  # 1e-5 against the floor
    never_agrees = breakdown_table(_sweep([9.0] * 5, [2.0] * 5), at_eps=1e-3)
    assert breakdown_decades(never_agrees, "top", floor=1e-12)[2] == 0  # NaN: undecided, 0 decades


def test_across_photos_on_a_linear_map_and_its_tables(linear):
    sp = spectrum(linear.A, SHAPE)
    images = torch.rand(2, *SHAPE, dtype=torch.float64, generator=torch.Generator().manual_seed(10))  # (2, 3, 8, 8)
    matching = unit(torch.randn(2, *SHAPE, dtype=torch.float64, generator=torch.Generator().manual_seed(11)))
    spectra = {"a": sp, "b": sp}
    estimates, summary = across_photos(linear, images, spectra, matching, 1e-3, n_top=2, n_random=3, n_sampled=16,
                                       direction_seed=1, sample_seed=2)
    assert len(estimates) == 2 * (2 + 1 + 3 + 3) and list(estimates.photo.unique()) == ["a", "b"]
    top = estimates[estimates.direction == "top singular"].L.to_numpy()
    assert np.allclose(top, S_TRUE[[0, 1, 0, 1]].numpy(), rtol=1e-9)
    assert list(summary.columns) == ["photo", "s_max", "max over 16 random", "s_max / sampled max"]
    assert np.allclose(summary["s_max"], 5.0) and (summary["s_max / sampled max"] > 1).all()
    table = photo_table(estimates, summary)
    assert list(table.photo) == ["a", "b"] and table.loc[0, "median L, top singular"] == pytest.approx(4.5)
    assert "median L, null space" in table and "s_max / sampled max" in table


def test_relative_estimates_divide_by_the_photos_own_median():
    estimates = pd.DataFrame({"photo": ["a", "a", "a", "b", "b", "b"],
                              "direction": ["top", "top", "random", "top", "random", "random"],
                              "L": [4.0, 6.0, 1.0, 10.0, 2.0, 3.0]})
    relative = relative_estimates(estimates, "random", "top")
    assert relative.tolist() == [1.0 / 5.0, 2.0 / 10.0, 3.0 / 10.0]


def test_sensitivity_table_has_one_row_per_photo(linear):
    sp = spectrum(linear.A, SHAPE)
    match = types.SimpleNamespace(final={"cosine": np.array([0.9, 0.8]), "l2_255": np.array([3.0, 4.0])})
    table = sensitivity_table({"a": sp, "b": sp}, match)
    assert table.photo.tolist() == ["a", "b"] and table["rank"].tolist() == [6, 6]
    assert np.allclose(table["s_max"], 5.0) and table["match cosine to target"].tolist() == [0.9, 0.8]
