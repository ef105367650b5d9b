"""Jacobian, spectrum and matrix-free top-k: against finite differences, an analytic linear map, and each other."""
import math

import pytest
import torch

from vitequiv.images import ImageSet
from vitequiv.jacobians import (
    JacobianMemoryError,
    LinearMap,
    cast_model,
    jacobian,
    jacobian_bytes,
    jvp,
    photo_spectra,
    spectrum,
    top_spectrum,
    vjp,
)

SHAPE = (3, 8, 8)  # P = 192 pixels for the analytic map
S_TRUE = torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0, 0.5], dtype=torch.float64)  # rank 6 < D = 10: a genuine null space


@pytest.fixture(scope="module")
def linear():
    return LinearMap.with_singular_values(S_TRUE, D=10, input_shape=SHAPE, seed=1)


def test_jacobian_matches_central_differences_in_float64(tiny_model, tiny_x):
    J64 = jacobian(tiny_model, tiny_x, dtype=torch.float64)
    model64 = cast_model(tiny_model, torch.float64)
    x64, h = tiny_x.double(), 1e-5
    for j in torch.randperm(tiny_x.numel(), generator=torch.Generator().manual_seed(1))[:4].tolist():
        e = torch.zeros_like(x64).view(-1)
        e[j] = h
        with torch.no_grad():
            fd = (model64.embed(x64 + e.view_as(x64)) - model64.embed(x64 - e.view_as(x64)))[0] / (2 * h)
        assert torch.allclose(J64[:, j], fd, rtol=0, atol=1e-7 * fd.abs().max().item() + 1e-12), j


def test_jvp_and_vjp_agree_with_jacobian(tiny_model, tiny_x, tiny_J):
    v = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    u = torch.randn(2, tiny_J.shape[0], generator=torch.Generator().manual_seed(3))
    assert torch.allclose(jvp(tiny_model, tiny_x, v), v.flatten(1) @ tiny_J.T, rtol=1e-4, atol=1e-4)
    assert torch.allclose(jvp(tiny_model, tiny_x, v[0]), tiny_J @ v[0].flatten(), rtol=1e-4, atol=1e-4)
    assert torch.allclose(vjp(tiny_model, tiny_x, u).flatten(1), u @ tiny_J, rtol=1e-4, atol=1e-5)


def test_batch_size_does_not_change_the_jacobian(tiny_model, tiny_x, tiny_J):
    assert torch.allclose(jacobian(tiny_model, tiny_x, batch_size=7), tiny_J, atol=1e-6)


def test_memory_check_raises_before_allocating(tiny_model, tiny_x):
    need = jacobian_bytes(192, tiny_x.numel(), 8, 4)
    with pytest.raises(JacobianMemoryError, match="top_spectrum"):
        jacobian(tiny_model, tiny_x, max_bytes=need - 1)

    class Huge:  # a 10^7 x 3*10^6 Jacobian (about 120 TB): allocating it would fail differently, or never return
        def embed(self, z):
            return z.flatten(1).sum(1, keepdim=True).expand(-1, 10**7)

    with pytest.raises(JacobianMemoryError, match="MiB"):
        jacobian(Huge(), torch.zeros(1, 3, 1000, 1000))


def test_linear_map_spectrum_is_exact(linear):
    x = torch.rand(1, *SHAPE, dtype=torch.float64)
    J = jacobian(linear, x)
    assert torch.allclose(J, linear.A, atol=1e-14)
    sp = spectrum(J, SHAPE)
    assert torch.allclose(sp.s[:6], S_TRUE, rtol=1e-10) and sp.s[6:].abs().max() < 1e-6
    assert sp.rank() == 6
    assert sp.null_fraction() == pytest.approx(1 - 6 / 192)
    p = S_TRUE / S_TRUE.sum()
    assert sp.entropy_rank() == pytest.approx(math.exp(-(p * p.log()).sum().item()), rel=1e-8)
    assert torch.allclose(sp.V @ sp.V.T, torch.eye(6, dtype=torch.float64), atol=1e-10)
    assert torch.allclose(sp.U.T @ J @ sp.V.T, torch.diag(S_TRUE), atol=1e-10)


def test_projectors_split_every_vector(linear):
    sp = spectrum(linear.A, SHAPE)
    v = torch.randn(5, *SHAPE, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    normal, null = sp.project_normal(v), sp.project_null(v)
    assert torch.allclose(normal + null, v, atol=1e-14)
    assert (linear.embed(null)).abs().max() < 1e-12  # J P_null v = 0
    assert torch.allclose(linear.embed(normal), linear.embed(v), atol=1e-12)
    assert torch.allclose(sp.project_normal(normal), normal, atol=1e-12)  # idempotent
    assert torch.allclose((normal * null).flatten(1).sum(1), torch.zeros(5, dtype=torch.float64), atol=1e-12)


def test_top_spectrum_matches_full_svd_on_linear_map(linear):
    x = torch.rand(1, *SHAPE, dtype=torch.float64)
    top = top_spectrum(linear, x, k=4, batch_size=2)
    assert torch.allclose(top.s, S_TRUE[:4], rtol=1e-8)
    full = spectrum(linear.A, SHAPE)
    assert torch.allclose((top.V @ full.V[:4].T).abs(), torch.eye(4, dtype=torch.float64), atol=1e-6)
    with pytest.raises(ValueError, match="every singular value"):
        top.rank()


def test_top_spectrum_matches_full_svd_on_vit(tiny_model, tiny_x, tiny_J):
    full = spectrum(tiny_J, tiny_x.shape[1:])
    top = top_spectrum(tiny_model, tiny_x, k=8)
    assert ((top.s - full.s[:8]) / full.s[:8]).abs().max() < 1e-3
    cos = (top.V[:4] @ full.V[:4].T).diagonal().abs()
    assert (cos > 0.99).all()
    assert full.rank() <= tiny_J.shape[0] and full.null_fraction() > 0.9


def test_same_seed_same_numbers(tiny_model, tiny_x, tiny_J):
    assert torch.equal(jacobian(tiny_model, tiny_x), tiny_J)
    a, b = top_spectrum(tiny_model, tiny_x, k=4, seed=5), top_spectrum(tiny_model, tiny_x, k=4, seed=5)
    assert torch.equal(a.s, b.s) and torch.equal(a.V, b.V)


def test_photo_spectra_gives_each_photos_jacobian_spectrum_and_row(linear):
    photos = ImageSet(torch.rand(2, *SHAPE, dtype=torch.float64, generator=torch.Generator().manual_seed(6)),
                      ["a", "b"])
    jacobians, spectra, table = photo_spectra(linear, photos)
    assert list(jacobians) == list(spectra) == ["a", "b"] and torch.allclose(jacobians["b"], linear.A, atol=1e-14)
    assert table["photo"].tolist() == ["a", "b"] and (table["rank"] == 6).all() and (table["embedding D"] == 10).all()
    assert (table["pixels P"] == 192).all() and table["null fraction"].tolist() == pytest.approx([1 - 6 / 192] * 2)
    assert table["s_max"].tolist() == pytest.approx([5.0] * 2)
    assert table["s_min kept"].tolist() == pytest.approx([0.5] * 2)
    assert (table["seconds"] >= 0).all() and table["entropy rank"].between(1, 6).all()
