"""Downstream classifiers on embeddings and the systematic evaluation (arXiv 2402.08473)."""
import sys
import time
import types

import numpy as np
import pytest
import torch

import vitequiv
from vitequiv.clip import ZeroShotCLIP, ZeroShotUnavailableError
from vitequiv.downstream import KNN, PHOTO_PROMPTS, ClassHead, LinearProbe, photo_prompts, probe_and_knn
from vitequiv.images import labeled_set
from vitequiv.metrics import psnr
from vitequiv.models import embed_batched
from vitequiv.systematic import (
    evaluate_classifiers,
    other_class_targets,
    own_head_evaluation,
    summary_table,
    systematic_evaluation,
)

PHOTOS = ["astronaut", "cat", "coffee", "rocket"]


def clusters(n_per_class: int = 50, classes: int = 4, dim: int = 16, noise_seed: int = 0):
    """Well-separated Gaussian clusters (the same centers for every call): embeddings (N, D), labels (N,)."""
    centers = 5 * np.random.default_rng(0).standard_normal((classes, dim))  # (K, D)
    labels = np.repeat(np.arange(classes), n_per_class)  # (N,)
    noise = np.random.default_rng(noise_seed).standard_normal((len(labels), dim))  # (N, D)
    return centers[labels] + 0.3 * noise, labels


@pytest.fixture(scope="module")
def labeled_images(tiny_model):
    """12 random 32 px images in 3 classes, and a 1-NN on their own embeddings (so clean accuracy is 1)."""
    images = torch.rand(12, 3, 32, 32, generator=torch.Generator().manual_seed(1))  # (12, 3, 32, 32)
    labels = torch.arange(12) % 3
    knn = KNN(k=1).fit(embed_batched(tiny_model, images), labels, ["a", "b", "c"])
    return images, labels, knn


def target_matcher(model, sources, targets, **kwargs):
    """Exact matching: hands back the target image itself, so the embedding is the target's."""
    return types.SimpleNamespace(images=targets.clone())


def identity_matcher(model, sources, targets, **kwargs):
    return types.SimpleNamespace(images=sources.clone())


# ------------------------------------------------------------------------------------------ classifiers


@pytest.mark.parametrize("make", [LinearProbe, lambda: KNN(k=5)], ids=["probe", "knn"])
def test_separable_clusters_are_learned_and_shuffled_labels_are_not(make):
    x, y = clusters(noise_seed=0)
    x_test, y_test = clusters(n_per_class=100, noise_seed=1)  # held out
    model = make().fit(x, y)
    assert np.mean(model.predict(x_test) == y_test) == 1.0
    proba = model.predict_proba(x_test)
    assert proba.shape == (400, 4) and np.allclose(proba.sum(axis=1), 1)
    shuffled = np.random.default_rng(0).permutation(y)
    assert np.mean(make().fit(x, shuffled).predict(x_test) == y_test) < 0.45  # chance is 0.25


def test_classes_missing_from_training_keep_their_column():
    x, y = clusters(classes=3)
    keep = y != 1
    probe = LinearProbe().fit(x[keep], y[keep], ["a", "b", "c"])
    proba = probe.predict_proba(torch.as_tensor(x))
    assert proba.shape == (len(x), 3) and np.all(proba[:, 1] == 0) and np.allclose(proba.sum(axis=1), 1)
    assert KNN(k=500).fit(x, y).predict_proba(x).shape == (len(x), 3)  # k larger than the training set


def test_embed_batched_matches_one_batch(tiny_model):
    images = torch.rand(5, 3, 32, 32)
    with torch.no_grad():
        whole = tiny_model.embed(images)  # (5, D)
    batched = embed_batched(tiny_model, images, batch_size=2)
    assert batched.shape == (5, tiny_model.embed_dim) and not batched.requires_grad
    assert torch.allclose(batched, whole, atol=1e-5)


def test_class_head_is_softmax_of_classify(tiny_model):
    head = ClassHead(tiny_model)
    images = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        expected = tiny_model.classify(images).softmax(dim=1).numpy()  # (3, 1000)
    assert np.allclose(head.predict_proba(embed_batched(tiny_model, images)), expected, atol=1e-5)
    assert head.class_names[1] == "goldfish" and len(head.class_names) == 1000


def test_class_head_needs_a_head():
    headless = vitequiv.load_model("random:vit_tiny_patch16_224", img_size=32, depth=1, num_classes=0, device="cpu")
    with pytest.raises(ValueError, match="no class head"):
        ClassHead(headless)


def test_zero_shot_follows_cosine_to_text_embeddings():
    text = torch.randn(3, 8, generator=torch.Generator().manual_seed(0))  # (K, D)
    clip = ZeroShotCLIP(text, ["cat", "dog", "car"])
    proba = clip.predict_proba(7 * text[[2, 0]])  # length does not matter, only direction
    assert np.allclose(proba.sum(axis=1), 1) and proba[0, 2] > 0.99 and proba[1, 0] > 0.99
    with pytest.raises(ValueError, match="class names"):
        ZeroShotCLIP(text, ["cat"])


@pytest.fixture(scope="module")
def clip_tower():
    return vitequiv.load_model("random:vit_base_patch32_clip_224", img_size=32, depth=1, num_classes=512, device="cpu")


def test_zero_shot_without_open_clip_fails_fast(clip_tower, monkeypatch):
    monkeypatch.setitem(sys.modules, "open_clip", None)  # import open_clip -> ImportError
    start = time.perf_counter()
    with pytest.raises(ZeroShotUnavailableError, match="pip install"):
        ZeroShotCLIP.from_open_clip(clip_tower, ["cat", "dog"])
    assert time.perf_counter() - start < 2


def test_zero_shot_without_weights_offline_fails_fast(clip_tower, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("must not try to build the model without weights")

    fake = types.SimpleNamespace(
        get_pretrained_cfg=lambda name, tag: {"hf_hub": "timm/not-cached-vitequiv-test/", "url": ""},
        list_pretrained_tags_by_model=lambda name: ["openai"],
        create_model=never,
    )
    monkeypatch.setitem(sys.modules, "open_clip", fake)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(ZeroShotUnavailableError, match="HF_HUB_OFFLINE"):
        ZeroShotCLIP.from_open_clip(clip_tower, ["cat", "dog"])
    assert time.perf_counter() - start < 2


def test_zero_shot_needs_a_clip_image_tower(tiny_model):
    with pytest.raises(ValueError, match="not a CLIP image tower"):
        ZeroShotCLIP.from_open_clip(tiny_model, ["cat", "dog"])


# ------------------------------------------------------------------------------ systematic evaluation


def test_targets_are_of_another_class_and_seeded():
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    targets = other_class_targets(labels, seed=3)
    assert np.all(labels[targets] != labels)
    assert np.array_equal(targets, other_class_targets(labels, seed=3))
    assert not np.array_equal(targets, other_class_targets(labels, seed=4))
    with pytest.raises(ValueError, match="two classes"):
        other_class_targets(np.zeros(4))


def test_exact_matching_follows_the_embedding(tiny_model, labeled_images):
    images, labels, knn = labeled_images
    result = systematic_evaluation(tiny_model, knn, images, labels, match_fn=target_matcher, seed=0)
    assert result.clean_accuracy == 1.0
    assert result.systematic_accuracy == 0.0 and result.follows_embedding == 1.0
    assert np.all(result.target_labels != result.source_labels)
    assert np.allclose(result.embedding_cosine, 1, atol=1e-5)
    assert result.matched_proba.shape == (12, 3) and result.matched_images.shape == images.shape
    assert result.summary()["follows_target_prediction"] == 1.0
    same = result.rescored(knn, embed_batched(tiny_model, images), embed_batched(tiny_model, result.matched_images))
    assert np.allclose(same.matched_proba, result.matched_proba) and same.systematic_accuracy == 0.0


def test_identity_matching_keeps_clean_accuracy(tiny_model, labeled_images):
    images, labels, _ = labeled_images
    probe = LinearProbe(C=0.01).fit(embed_batched(tiny_model, images), labels)  # clean accuracy below 1
    result = systematic_evaluation(tiny_model, probe, images, labels, match_fn=identity_matcher)
    assert result.systematic_accuracy == result.clean_accuracy
    assert np.allclose(result.matched_proba, result.clean_proba)


def test_evaluation_is_seeded_batched_and_passes_kwargs(tiny_model, labeled_images):
    images, labels, knn = labeled_images
    calls = []

    def recording(model, sources, targets, **kwargs):
        calls.append((len(sources), kwargs))
        return target_matcher(model, sources, targets)

    a = systematic_evaluation(tiny_model, knn, images, labels, match_fn=recording, seed=5, batch_size=5, max_steps=3)
    b = systematic_evaluation(tiny_model, knn, images, labels, match_fn=target_matcher, seed=5)
    assert [n for n, _ in calls] == [5, 5, 2] and all(kw == {"max_steps": 3} for _, kw in calls)
    assert np.array_equal(a.target_indices, b.target_indices) and np.array_equal(a.matched_pred, b.matched_pred)
    with pytest.raises(ValueError, match="another class"):
        systematic_evaluation(tiny_model, knn, images, labels, targets=np.arange(12), match_fn=target_matcher)


def test_default_matcher_runs(tiny_model, labeled_images):
    images, labels, knn = labeled_images
    result = systematic_evaluation(tiny_model, knn, images[:6], labels[:6], max_steps=2, progress=False)
    assert result.matched_images.shape == (6, 3, 32, 32)
    assert 0 <= result.matched_images.min() and result.matched_images.max() <= 1


def test_evaluate_classifiers_matches_once_and_rescores_the_others(tiny_model, labeled_images):
    images, labels, knn = labeled_images
    calls = []

    def recording(model, sources, targets, **kwargs):
        calls.append(len(sources))
        return target_matcher(model, sources, targets)

    probe = LinearProbe(C=0.01).fit(embed_batched(tiny_model, images), labels, ["a", "b", "c"])
    evaluated = evaluate_classifiers(tiny_model, {"knn": knn, "probe": probe}, images, labels,
                                     embed_batched(tiny_model, images), seed=2, match_fn=recording)
    assert list(evaluated) == ["knn", "probe"] and calls == [12]  # one matching run for both
    alone = systematic_evaluation(tiny_model, probe, images, labels, seed=2, match_fn=target_matcher)
    rescored = evaluated["probe"]
    assert rescored.matched_images is evaluated["knn"].matched_images
    assert np.array_equal(rescored.target_indices, alone.target_indices)
    assert np.allclose(rescored.matched_proba, alone.matched_proba, atol=1e-6)
    assert np.allclose(rescored.clean_proba, alone.clean_proba, atol=1e-6)


def test_own_head_labels_each_image_by_its_own_prediction(tiny_model, labeled_images):
    images = labeled_images[0][:6]
    result = own_head_evaluation(tiny_model, images, seed=0, match_fn=identity_matcher)
    assert result.clean_accuracy == 1.0 and result.systematic_accuracy == 1.0  # unchanged images keep the answer
    assert len(result.class_names) == 1000


def test_per_image_probabilities_quality_and_summary(tiny_model, labeled_images):
    images, labels, knn = labeled_images
    result = systematic_evaluation(tiny_model, knn, images, labels, match_fn=target_matcher, seed=0)
    n = np.arange(12)
    assert np.array_equal(result.matched_target_proba, result.matched_proba[n, result.target_labels])
    assert np.array_equal(result.matched_source_proba, result.matched_proba[n, result.source_labels])
    assert np.array_equal(result.clean_source_proba, result.clean_proba[n, result.source_labels])
    assert result.matched_target_proba.min() == 1.0 and result.clean_source_proba.min() == 1.0  # 1-NN, exact matches
    psnr_db, ssim_value = result.image_quality(images)
    assert psnr_db.shape == ssim_value.shape == (12,) and ssim_value.max() < 1
    assert np.allclose(psnr_db, psnr(images[result.target_indices], images).numpy())  # matched = the target image
    line = result.describe_matching(images, psnr_db, ssim_value)
    assert line.startswith("matched 12 images; cosine to target mean 1.000") and f"{np.median(psnr_db):.1f} dB" in line
    table = summary_table({("set", "1-NN"): result, ("set", "same"): result})
    assert list(table.columns) == ["labeled set", "classifier", "test images", "classes", "clean accuracy",
                                   "systematic accuracy", "follows-embedding rate", "follows target's prediction",
                                   "cosine matched-target (mean)"]
    assert table.classifier.tolist() == ["1-NN", "same"] and table["test images"].tolist() == [12, 12]
    assert table["classes"].tolist() == [3, 3] and table["systematic accuracy"].tolist() == [0.0, 0.0]
    assert table["follows-embedding rate"].tolist() == [1.0, 1.0]


def test_probe_and_knn_are_fitted_on_the_same_embeddings():
    x, y = clusters()
    fitted = probe_and_knn(x, y, ["a", "b", "c", "d"], k=3)
    assert list(fitted) == ["linear probe", "3-NN (cosine)"]
    assert isinstance(fitted["linear probe"], LinearProbe) and fitted["3-NN (cosine)"].k == 3
    assert all(np.mean(clf.predict(x) == y) == 1.0 and clf.class_names == ["a", "b", "c", "d"]
               for clf in fitted.values())


def test_photo_prompts_describe_photos_and_keep_other_names():
    assert photo_prompts(["hubble", "cat"]) == ["galaxies in deep space", "cat"]
    assert set(PHOTO_PROMPTS) <= set(vitequiv.images.BUNDLED)  # each prompt belongs to a bundled photo


# ------------------------------------------------------------------------------------ real, offline


def test_faces_set_is_labeled_and_splits_stratified():
    faces = labeled_set("faces", size=32)
    train, test = faces.split(0.25, seed=0)
    assert faces.images.shape == (200, 3, 32, 32) and faces.class_names == ["non-face", "face"]
    assert len(test) == 50 and test.labels.sum() == 25
    with pytest.raises(ValueError, match="Unknown labeled set"):
        labeled_set("imagenet")


def test_embedded_model_tells_photo_views_apart():
    """Held-out views of 4 photos (chance 0.25): the pretrained model separates them, a random-init one
    much less by nearest neighbor (a probe on random-init features can still use color statistics)."""
    train, test = labeled_set("views", names=PHOTOS, views_per_image=6, size=112).split(0.5, seed=0)
    accuracy = {}
    for name, kwargs in [("embedded", {}), ("random:vit_small_patch14_dinov2", {"num_classes": 0})]:
        model = vitequiv.load_model(name, img_size=112, device="cpu", **kwargs)
        fit, held_out = embed_batched(model, train.images), embed_batched(model, test.images)
        for probe in (KNN(k=1), LinearProbe()):
            predicted = probe.fit(fit, train.labels).predict(held_out)
            accuracy[name, type(probe).__name__] = np.mean(predicted == test.labels.numpy())
    assert accuracy["embedded", "KNN"] >= 0.75 and accuracy["embedded", "LinearProbe"] >= 0.75
    assert accuracy["random:vit_small_patch14_dinov2", "KNN"] <= accuracy["embedded", "KNN"] - 0.25
