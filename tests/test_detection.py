"""Noise detector, ROC/AUC, benign transforms, survival and the EOT wrapper, on tiny models."""
import numpy as np
import pytest
import torch
from helpers import random_images as images

import vitequiv
from vitequiv import detection


def smooth(n: int, size: int = 32) -> torch.Tensor:
    """Smooth photo-like images (JPEG keeps them nearly intact)."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    base = torch.stack([xx, yy, 0.5 * (xx + yy)])  # (3, S, S)
    return torch.stack([(base * (0.5 + 0.1 * k)).clamp(0, 1) for k in range(n)])


def test_auc_perfect_useless_and_inverted():
    assert detection.roc([0.1, 0.2, 0.3], [0.5, 0.6]).auc == 1.0
    assert detection.roc([1, 2, 3], [1, 2, 3]).auc == pytest.approx(0.5)
    assert detection.roc([0.5, 0.6], [0.1, 0.2]).auc == 0.0
    r = detection.roc([0.1, 0.2, 0.3, 0.4], [0.35, 0.5])
    assert r.tpr_at(0.0) == 0.5 and r.tpr_at(0.25) == 1.0


def test_noise_shift_zero_at_sigma_zero_and_grows(tiny_model):
    x = images(3)
    shift = detection.noise_shift(tiny_model, x, [0, 2, 32], n_draws=2)
    assert shift.shape == (3, 3)
    assert np.abs(shift[:, 0]).max() < 1e-6
    assert (shift[:, 2] > shift[:, 1]).all() and (shift[:, 1] > 1e-7).all()
    assert np.array_equal(shift, detection.noise_shift(tiny_model, x, [0, 2, 32], n_draws=2))  # seeded


@pytest.mark.parametrize("name", list(detection.standard_transforms()))
def test_transforms_keep_shape_and_range(name):
    x = images(2, size=40)
    y = detection.standard_transforms()[name](x)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert y.min() >= 0 and y.max() <= 1


def test_jpeg_quality_100_close_to_identity_and_low_quality_not():
    x = detection.metrics.quantize_8bit(smooth(2))
    assert (detection.jpeg(x, 100) - x).abs().max() < 4 / 255
    noisy = images(2)
    assert (detection.jpeg(noisy, 10) - noisy).abs().mean() > 4 / 255


def test_crop_and_resize_and_blur_change_images():
    x = images(1, size=40)
    assert torch.equal(detection.crop_resize(x, 1.0), x)
    assert not torch.allclose(detection.crop_resize(x, 0.5), x)
    assert not torch.allclose(detection.resize_round_trip(x, 0.5), x)
    assert detection.blur(x, 1.0).std() < x.std()


def test_survival_identity_matches_direct_cosine(tiny_model):
    x, t = images(3), images(3, seed=1)
    with torch.no_grad():
        target = tiny_model.embed(t)
        direct = torch.nn.functional.cosine_similarity(tiny_model.embed(x), target).numpy()
    frame = detection.survival(tiny_model, x, target, {"identity": lambda z: z}, sources=t, stop_cos=0.5)
    assert np.allclose(frame["cos_target"], direct, atol=1e-5)
    assert np.allclose(frame["cos_source"], direct, atol=1e-5)  # sources are the targets here
    assert not frame["follows_target"].any()
    summary = detection.survival_summary(frame)
    assert list(summary.columns) == ["transform", "median cos to target", "survival rate", "follows target"]


def test_eot_model_differentiable_and_seeded(tiny_model):
    transforms = detection.default_eot_transforms(jpeg_st=True)
    a = detection.EOTModel(tiny_model, transforms, n_draws=3, seed=5)
    b = detection.EOTModel(tiny_model, transforms, n_draws=3, seed=5)
    x = images(2).requires_grad_(True)
    ya = a.embed(x)
    ya.pow(2).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    with torch.no_grad():
        assert torch.equal(ya.detach(), b.embed(x))
        y2 = a.embed(x)
        assert not torch.equal(y2, ya.detach())  # the generator advances between calls
        a.reset()
        assert torch.equal(a.embed(x), ya.detach())
    assert a.std is tiny_model.std and a.input_size == 32


def test_eot_with_identity_equals_model(tiny_model):
    x = images(2)
    eot = detection.EOTModel(tiny_model, [lambda z, g: z], n_draws=2)
    with torch.no_grad():
        assert torch.allclose(eot.embed(x), tiny_model.embed(x), atol=1e-6)


def test_jpeg_straight_through_gradient_is_identity():
    x = images(1).requires_grad_(True)
    y = detection.random_jpeg(50, 50)(x, torch.Generator().manual_seed(0))
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))
    assert not torch.allclose(y.detach(), x.detach())


def test_noise_shift_definition(tiny_model):
    x = images(2)
    shift = detection.noise_shift(tiny_model, x, [16], n_draws=1, seed=3)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = 1 - torch.nn.functional.cosine_similarity(
            tiny_model.embed((x + noise * 16 / 255).clamp(0, 1)).double(), tiny_model.embed(x).double())
    assert np.allclose(shift[:, 0], expected.numpy(), atol=1e-6)


def test_eot_model_plugs_into_matching(tiny_model):
    x, t = images(2), images(2, seed=1)
    eot = detection.EOTModel(tiny_model, detection.default_eot_transforms(), n_draws=2, seed=0)
    with torch.no_grad():
        target = tiny_model.embed(t)
    result = vitequiv.match_embeddings(eot, x, target, step_rule=vitequiv.Adam(lr=0.01), max_steps=5, progress=False)
    assert result.history["loss"].shape[0] == 6 and np.isfinite(result.history["loss"]).all()
    assert np.nanmean(result.history["embed_l2"][-1]) < np.nanmean(result.history["embed_l2"][0])


def test_auc_evidence_is_the_roc_auc_with_an_interval_that_narrows_with_more_images():
    rng = np.random.default_rng(0)
    clean, matched, other = rng.normal(size=40), rng.normal(1.5, 1, size=30), rng.normal(0.5, 1, size=30)
    e = detection.auc_evidence(clean, matched)
    assert e.value == pytest.approx(detection.roc(clean, matched).auc) and e.n == 30
    assert e.low < e.value < e.high and "bootstrap over clean and matched images" in e.method
    few = detection.auc_evidence(clean[:10], matched[:6])
    assert few.high - few.low > e.high - e.low
    diff = detection.auc_evidence(clean, matched, other)
    assert diff.value == pytest.approx(e.value - detection.roc(clean, other).auc) and diff.low < diff.value < diff.high
    one = detection.auc_evidence(clean[:1], matched)  # a single clean image: held fixed, matched resampled
    assert one.n == 30 and one.low <= one.value <= one.high and "held fixed" in one.method
    for n in (1, 5):  # too few matched images for a 95 % interval (issue 29)
        too_few = detection.auc_evidence(clean, matched[:n])
        assert too_few.n == n and not too_few.bounded and "no 95 % interval" in too_few.method
    with pytest.raises(ValueError, match="all finite"):
        detection.auc_evidence(clean, [np.nan, 1.0])


def survival_frame(cos_target, follows, transforms=("identity", "8-bit rounding", "JPEG q75", "blur sigma 1 px")):
    """A survival frame of two pairs per transform with the given cosines to the target and follows flags."""
    import pandas as pd

    names = [t for t in transforms for _ in range(2)]
    return pd.DataFrame({"transform": names, "pair": [0, 1] * len(transforms), "cos_target": cos_target,
                         "survives": np.asarray(cos_target) >= 0.99, "cos_source": 0.5, "follows_target": follows})


def test_clean_images_are_8bit_photos_then_views():
    photos = vitequiv.load_images(["cat", "coffee"], size=28).images
    only = detection.clean_images(photos)
    assert torch.equal(only, vitequiv.quantize_8bit(photos))
    clean = detection.clean_images(photos, 1, seed=3)
    views, _, _ = vitequiv.view_set(views_per_image=1, size=28, seed=3)
    assert torch.equal(clean[:2], only) and torch.equal(clean[2:], vitequiv.quantize_8bit(views))
    assert torch.equal(clean * 255, (clean * 255).round())


def test_cosine_to_targets_is_the_model_cosine_without_gradients(tiny_model):
    x, t = images(2).requires_grad_(True), images(2, seed=1)
    with torch.no_grad():
        targets = tiny_model.embed(t)
        expected = torch.nn.functional.cosine_similarity(tiny_model.embed(x), targets).numpy()
    cos = detection.cosine_to_targets(tiny_model, x, targets)
    assert isinstance(cos, np.ndarray) and cos.shape == (2,) and np.allclose(cos, expected)
    assert np.allclose(detection.cosine_to_targets(tiny_model, t, targets), 1, atol=1e-5)


def test_auc_by_sigma_reads_the_auc_table_per_set():
    clean = np.array([[0.1, 0.1], [0.2, 0.3]])
    table = detection.detector_auc_table(clean, {"a": np.array([[0.5, 0.0]]), "b": np.array([[0.0, 0.5]])}, [2, 8])
    by_sigma = detection.auc_by_sigma(table, ["b", "a"])
    assert by_sigma.shape == (2, 2) and np.array_equal(by_sigma, [[0.0, 1.0], [1.0, 0.0]])


def test_survival_helpers_summarize_processed_rows():
    plain = survival_frame([1.0, 1.0, 0.99, 0.98, 0.9, 0.7, 0.8, 0.6], [True] * 4 + [True, False, True, True])
    eot = survival_frame([1.0, 1.0, 0.99, 0.99, 0.95, 0.95, 0.9, 0.9], [False] * 8)
    assert plain["survives"].sum() == 3
    medians = detection.transform_medians(plain)
    assert list(medians.index) == ["8-bit rounding", "JPEG q75", "blur sigma 1 px"]
    assert np.allclose(medians, [0.985, 0.8, 0.7])
    assert detection.follows_rate(plain) == pytest.approx(5 / 6) and detection.follows_rate(eot) == 0
    processed = detection.processed_cosines(plain)
    assert list(processed) == [0.9, 0.7, 0.8, 0.6] and list(processed.index) == [4, 5, 6, 7]
    assert np.allclose(detection.processed_cosines(eot) - processed, [0.05, 0.25, 0.1, 0.3])
    summary = detection.survival_comparison({"plain": plain, "EOT": eot})
    assert list(summary.columns) == ["match", "transform", "median cos to target", "survival rate", "follows target"]
    assert list(summary["match"]) == ["plain"] * 4 + ["EOT"] * 4
    assert summary["survival rate"].tolist() == [1.0, 0.5, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0]
