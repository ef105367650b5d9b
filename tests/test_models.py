"""load_model: names, frozen differentiable embed in pixel space, fast offline failures."""
import time

import pytest
import torch

import vitequiv
from vitequiv import models


def test_embed_maps_pixels_to_embeddings_differentiably(tiny_model):
    x = torch.rand(3, 3, 32, 32, requires_grad=True)
    z = tiny_model.embed(x)
    assert z.shape == (3, tiny_model.embed_dim) == (3, 192)
    z.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in tiny_model.parameters())
    assert not tiny_model.training


def test_normalisation_happens_inside(tiny_model):
    x = torch.rand(2, 3, 32, 32)
    backbone = tiny_model.backbone
    mean = torch.tensor(backbone.pretrained_cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(backbone.pretrained_cfg["std"]).view(1, 3, 1, 1)
    expected = backbone.forward_head(backbone.forward_features((x - mean) / std), pre_logits=True)
    torch.testing.assert_close(tiny_model.embed(x), expected)


def test_random_control_is_seeded_and_independent_of_global_rng():
    torch.manual_seed(123)
    a = models.load_model("random:vit_tiny_patch16_224", img_size=32, depth=1, device="cpu", seed=7)
    torch.manual_seed(456)
    b = models.load_model("random:vit_tiny_patch16_224", img_size=32, depth=1, device="cpu", seed=7)
    c = models.load_model("random:vit_tiny_patch16_224", img_size=32, depth=1, device="cpu", seed=8)
    x = torch.rand(1, 3, 32, 32)
    assert torch.equal(a.embed(x), b.embed(x))
    assert not torch.equal(a.embed(x), c.embed(x))


def test_block_embeddings_end_at_the_embedding(tiny_model):
    x = torch.rand(2, 3, 32, 32)
    blocks = tiny_model.block_embeddings(x)
    assert len(blocks) == 2 and blocks[0].shape == (2, 192)
    torch.testing.assert_close(blocks[-1], tiny_model.embed(x))


def test_unknown_name_fails_at_once_with_suggestions():
    start = time.perf_counter()
    with pytest.raises(models.UnknownModelError, match="vit_small_patch16_224"):
        vitequiv.load_model("vit_smal_patch16_224")
    assert time.perf_counter() - start < 5


def test_uncached_hub_weights_fail_fast_and_say_how(monkeypatch):
    start = time.perf_counter()
    with pytest.raises(vitequiv.WeightsUnavailableError, match="not cached.*HF_HUB_OFFLINE"):
        vitequiv.load_model("vit_tiny_patch16_224.augreg_in21k_ft_in1k")
    assert time.perf_counter() - start < 1.0


def test_uncached_hub_weights_fail_fast_when_hub_unreachable(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setattr(models, "_host_reachable", lambda url, timeout=1.0: False)
    with pytest.raises(vitequiv.WeightsUnavailableError, match="cannot be reached"):
        vitequiv.load_model("vit_tiny_patch16_224")


def test_embedded_model_is_frozen_dinov2(embedded):
    assert (embedded.embed_dim, embedded.input_size, embedded.num_classes) == (384, 224, 0)
    with pytest.raises(ValueError, match="no class head"):
        embedded.classify(torch.rand(1, 3, 224, 224))


def test_embedded_at_another_size_resamples_position_embeddings():
    small = vitequiv.load_model("embedded", img_size=112, device="cpu")
    assert small.backbone.pos_embed.shape == (1, 1 + 8 * 8, 384)
    assert small.embed(torch.rand(1, 3, 112, 112)).shape == (1, 384)


def test_clip_tower_embeds_through_its_projection():
    clip = vitequiv.load_model("random:vit_base_patch16_clip_224.openai", img_size=32, depth=1, device="cpu")
    assert clip.projected and clip.num_classes == 0
    assert clip.embed(torch.rand(1, 3, 32, 32)).shape == (1, clip.embed_dim) == (1, 512)
