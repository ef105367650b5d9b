"""Directional Lipschitz estimates: exact on a linear map, converging (float64) or breaking (float32) on a ViT."""
import math

import pytest
import torch

from vitequiv.jacobians import LinearMap, cast_model, spectrum
from vitequiv.lipschitz import (
    DEFAULT_EPS,
    breakdown_eps,
    directional_derivative,
    directional_lipschitz,
    null_directions,
    random_directions,
    sampled_lipschitz,
    sampled_lipschitz_max,
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
