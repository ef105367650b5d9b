"""Linearization error along a direction, and the null-space walk."""
import pytest
import torch

from vitequiv.jacobians import LinearMap, jacobian, spectrum
from vitequiv.linearity import (
    direction_profiles,
    linear_region_radius,
    linearization_profile,
    null_space_walk,
    radius_table,
    walk_table,
)

SHAPE = (3, 8, 8)


@pytest.fixture(scope="module")
def x():
    return torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def test_linear_map_has_zero_linearization_error():
    f = LinearMap.with_singular_values(torch.tensor([3.0, 2.0, 1.0]), D=5, input_shape=SHAPE, seed=1)
    x = torch.rand(1, *SHAPE, dtype=torch.float64)
    v = torch.randn(*SHAPE, dtype=torch.float64)
    prof = linearization_profile(f, x, v)
    assert (prof.relative_error < 1e-10).all()  # rounding only
    assert prof.radius() == prof.ts[-1].item()
    assert torch.allclose(prof.change, prof.ts * prof.jv_norm, rtol=1e-10)
    assert prof.change_at(1.0) == pytest.approx(prof.jv_norm, rel=1e-9)  # t = 1 and 10 are measured steps
    assert prof.change_at(10.0) == pytest.approx(10 * prof.jv_norm, rel=1e-9)
    # J v from a given Jacobian, and a null direction: no change at all, relative error defined as 0
    null = spectrum(f.A, SHAPE).project_null(v)
    prof = linearization_profile(f, x, null, jac=f.A)
    assert prof.jv_norm < 1e-12 and (prof.change < 1e-12).all()


def test_linearization_error_grows_with_step(tiny_model, x):
    v = torch.randn(3, 32, 32, generator=torch.Generator().manual_seed(2))
    ts = torch.logspace(-3, 2, 11)
    prof = linearization_profile(tiny_model, x, v, ts, dtype=torch.float64)
    rel = prof.relative_error
    assert (rel[1:] >= rel[:-1] * 0.9).all()  # increasing (float64: no rounding floor at small t)
    assert rel[0] < 1e-3 and rel[-1] > 0.1
    second_order = prof.error[:4] / prof.ts[:4] ** 2  # error ~ t^2 for small t
    assert (second_order.max() / second_order.min()) < 2
    r = prof.radius(0.1)
    assert ts[0] < r < ts[-1]
    assert linear_region_radius(tiny_model, x, v, 0.1, ts, dtype=torch.float64) == r


def test_null_space_walk_moves_pixels_not_embedding(tiny_model, x):
    kw = dict(n_steps=12, step_size=1.0, relinearize_every=4, checkpoint_every=4, seed=3)
    null = null_space_walk(tiny_model, x, **kw)
    corrected = null_space_walk(tiny_model, x, correct_steps=1, **kw)
    control = null_space_walk(tiny_model, x, project=False, **kw)
    assert null.steps == [0, 4, 8, 12] and null.images.shape == (4, 3, 32, 32)
    assert torch.equal(null.images[0], x[0]) and null.pixel_l2_255[0] == 0 and null.embed_l2[0] == 0
    for walk in (null, corrected, control):  # all moved far: 12 steps of 1.0, a little lost to clamping
        assert walk.pixel_l2_255[-1] > 9 * 255 and walk.pixel_linf_255[-1] > 10 and walk.psnr[-1] < 40
    # the tiny random ViT is strongly curved (linear radius ~1), so the uncorrected walk drifts at second order
    assert null.embed_l2[-1] < 0.5 * control.embed_l2[-1]
    assert corrected.embed_l2[-1] < 0.05 * control.embed_l2[-1]
    assert corrected.embed_cos[-1] > 0.999 > control.embed_cos[-1]
    assert null.relinearizations == 3 and control.relinearizations == 0


def test_walk_toward_another_image_with_top_k_and_correction(tiny_model, x):
    other = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    kw = dict(toward=other, n_steps=6, step_size=2.0, relinearize_every=3, checkpoint_every=3, k=16)
    walk = null_space_walk(tiny_model, x, correct_steps=2, **kw)
    plain = null_space_walk(tiny_model, x, **kw)
    assert (other - walk.images[-1]).norm() < (other - x).norm()  # the picture moved toward the other image
    assert walk.embed_l2[-1] < plain.embed_l2[-1]  # correction pulls the embedding back
    again = null_space_walk(tiny_model, x, correct_steps=2, **kw)
    assert torch.equal(walk.images, again.images) and torch.equal(walk.embed_l2, again.embed_l2)


def test_walk_from_a_given_spectrum_is_the_walk_that_computes_it(tiny_model, x):
    kw = dict(n_steps=6, step_size=1.0, relinearize_every=3, checkpoint_every=3, seed=1)
    start = spectrum(jacobian(tiny_model, x), x.shape[1:])
    given, computed = null_space_walk(tiny_model, x, start=start, **kw), null_space_walk(tiny_model, x, **kw)
    assert torch.equal(given.images, computed.images) and torch.equal(given.embed_l2, computed.embed_l2)
    assert given.relinearizations == computed.relinearizations == 2
    with pytest.raises(ValueError, match="start must be the Spectrum of the Jacobian at x"):
        null_space_walk(tiny_model, x, start=spectrum(torch.randn(8, 3 * 16 * 16), (3, 16, 16)), **kw)


def test_direction_profiles_and_their_table_on_a_linear_map():
    f = LinearMap.with_singular_values(torch.tensor([3.0, 2.0, 1.0]), D=5, input_shape=SHAPE, seed=1)
    x = torch.rand(1, *SHAPE, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    profiles = direction_profiles(f, x, spectrum(f.A, SHAPE), f.A, seed=2)
    assert list(profiles) == ["top singular", "null space", "random"]
    assert profiles["top singular"].jv_norm == pytest.approx(3.0) and profiles["null space"].jv_norm < 1e-12
    assert 0 < profiles["random"].jv_norm < 3.0
    table = radius_table(profiles, 0.2)
    assert table.columns.tolist() == ["direction", "||J v||", "linear radius (rel. error <= 0.2)", "change at t=1",
                                      "change at t=10"]
    assert table["direction"].tolist() == list(profiles)
    top = table.iloc[0]  # linear: radius the largest step, change t ||J v||
    assert top["linear radius (rel. error <= 0.2)"] == profiles["top singular"].ts[-1].item()
    assert top["change at t=1"] == pytest.approx(3.0) and top["change at t=10"] == pytest.approx(30.0)


def test_walk_table_lists_every_checkpoint_of_each_walk(tiny_model, x):
    kw = dict(n_steps=4, step_size=1.0, relinearize_every=2, checkpoint_every=2, seed=3)
    null, control = null_space_walk(tiny_model, x, **kw), null_space_walk(tiny_model, x, project=False, **kw)
    table = walk_table({"null space": null, "random": control})
    assert table["walk"].tolist() == ["null space"] * 3 + ["random"] * 3 and table["step"].tolist() == [0, 2, 4] * 2
    assert table["pixel L2 (1/255)"].tolist() == null.pixel_l2_255.tolist() + control.pixel_l2_255.tolist()
    assert table["cosine to start"].iloc[0] == pytest.approx(1.0)
    moved = table[table["step"] > 0]  # at the start both distances are 0
    assert (moved["embedding L2"] / moved["embedding L2 / ||f(x0)||"]).tolist() == pytest.approx([null.embed_norm] * 4)
