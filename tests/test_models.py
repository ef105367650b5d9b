"""load_model: names, arguments checked at the door, frozen differentiable embed in pixel space, fast offline
failures; embed_batched."""
import copy
import socket
import time

import pytest
import torch

import vitequiv
from vitequiv import models, weights


def test_embed_maps_pixels_to_embeddings_differentiably(tiny_model):
    x = torch.rand(3, 3, 32, 32, requires_grad=True)
    z = tiny_model.embed(x)
    assert z.shape == (3, tiny_model.embed_dim) == (3, 192)
    z.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in tiny_model.parameters())
    assert not tiny_model.training


def test_normalization_happens_inside(tiny_model):
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


def test_only_a_cls_token_models_last_block_is_its_embedding(tiny_model):
    x = torch.rand(2, 3, 32, 32)
    last = vitequiv.BlockEmbedding(tiny_model, 1)
    assert last.is_model_embedding and torch.equal(last.embed(x), tiny_model.embed(x))
    assert not vitequiv.BlockEmbedding(tiny_model, 0).is_model_embedding
    pooled = models.load_model("random:vit_tiny_patch16_224", img_size=32, depth=2, device="cpu",
                               global_pool="avg", fc_norm=False)
    pooled_last = vitequiv.BlockEmbedding(pooled, 1)
    assert not pooled_last.is_model_embedding  # the normed CLS token, not the pooled embedding
    assert not torch.allclose(pooled_last.embed(x), pooled.embed(x))


def test_unknown_name_fails_at_once_with_suggestions():
    start = time.perf_counter()
    with pytest.raises(models.UnknownModelError, match="vit_small_patch16_224"):
        vitequiv.load_model("vit_smal_patch16_224")
    assert time.perf_counter() - start < 5


def test_unknown_pretrained_tag_lists_the_tags():
    with pytest.raises(models.UnknownModelError,
                       match=r"no pretrained tag 'badtag' for 'vit_tiny_patch16_224'.*augreg_in21k"):
        vitequiv.load_model("vit_tiny_patch16_224.badtag")


def test_uncached_hub_weights_fail_fast_and_say_how(monkeypatch):
    start = time.perf_counter()
    with pytest.raises(vitequiv.WeightsUnavailableError, match="not cached.*HF_HUB_OFFLINE"):
        vitequiv.load_model("vit_tiny_patch16_224.augreg_in21k_ft_in1k")
    assert time.perf_counter() - start < 1.0


def test_uncached_hub_weights_fail_fast_when_hub_unreachable(monkeypatch, tmp_path):
    from huggingface_hub import constants

    with socket.create_server(("127.0.0.1", 0)) as s:  # a port nobody listens on once closed
        endpoint = f"http://127.0.0.1:{s.getsockname()[1]}"
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    start = time.perf_counter()
    with pytest.raises(vitequiv.WeightsUnavailableError,
                       match=f"{endpoint} is unreachable: the connection was refused"):
        vitequiv.load_model("vit_tiny_patch16_224")
    assert time.perf_counter() - start < 1.0


def test_a_model_in_a_local_hf_cache_loads_offline(monkeypatch, tmp_path):
    """The online path, tested offline: timm reads a locally written cache entry, and the hub check lets it."""
    import timm
    from huggingface_hub import constants
    from safetensors.torch import save_file

    name = "vit_tiny_patch16_224.augreg_in21k_ft_in1k"
    source = timm.create_model(name, pretrained=False, img_size=32, depth=2).eval()
    snapshot = tmp_path / f"models--timm--{name}" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    save_file(source.state_dict(), str(snapshot / "model.safetensors"))
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    start = time.perf_counter()
    model = vitequiv.load_model(name, img_size=32, depth=2, device="cpu")  # the suite's HF_HUB_OFFLINE=1
    assert time.perf_counter() - start < 5
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        expected = source.forward_head(source.forward_features(model.normalize(x)), pre_logits=True)  # (2, 192)
    torch.testing.assert_close(model.embed(x), expected)


# ------------------------------------------------------------------------------------ arguments checked at the door


@pytest.mark.parametrize("kwargs, error, match", [
    ({"name": None}, TypeError, r"name must be a model name \(str\), got None"),
    ({"name": 3}, TypeError, r"name must be a model name \(str\), got 3 \(int\)"),
    ({"name": ""}, models.UnknownModelError, r"name='' names no model"),
    ({"name": "random:"}, models.UnknownModelError, r"name='random:' names no model"),
    ({"img_size": 0}, ValueError, r"img_size must be a positive int, got 0"),
    ({"img_size": -14}, ValueError, r"img_size must be a positive int, got -14"),
    ({"img_size": 224.0}, TypeError, r"img_size must be an int, got 224.0 \(float\)"),
    ({"img_size": True}, TypeError, r"img_size must be an int, got True \(bool\)"),
    ({"img_size": 100}, ValueError, r"img_size=100 is not a multiple of the patch size 14 of 'embedded'.*98 or 112"),
    ({"img_size": 10}, ValueError, r"img_size=10 is not a multiple.*Use 14\."),
    ({"seed": "0"}, TypeError, r"seed must be an int, got '0' \(str\)"),
    ({"seed": 1.5}, TypeError, r"seed must be an int, got 1.5"),
    ({"device": "gpu"}, ValueError, r"device='gpu' is not a device"),
    ({"device": 0}, TypeError, r"device must be a str or torch.device, got 0 \(int\)"),
])
def test_bad_arguments_fail_before_any_work_and_name_the_value(monkeypatch, kwargs, error, match):
    def no_work(*args, **kwargs):
        raise AssertionError("weights were read before the arguments were checked")

    monkeypatch.setattr(weights, "load_state_dict", no_work)
    with pytest.raises(error, match=match):
        vitequiv.load_model(**({"name": "embedded"} | kwargs))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cuda_without_cuda_says_so():
    for device in ("cuda", torch.device("cuda:0")):
        with pytest.raises(ValueError, match="CUDA is not available here; use device='cpu' or 'auto'"):
            vitequiv.load_model("random:vit_tiny_patch16_224", img_size=32, depth=1, device=device)


def test_cuda_index_beyond_the_devices_is_named():
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with pytest.raises(ValueError, match=f"device='cuda:{count}'"):
        models.resolve_device(f"cuda:{count}")


def test_timm_model_with_a_size_off_its_patch_grid_is_refused():
    with pytest.raises(ValueError,
                       match="img_size=40 is not a multiple of the patch size 16 of 'vit_tiny_patch16_224'.*32 or 48"):
        vitequiv.load_model("random:vit_tiny_patch16_224", img_size=40, depth=1, device="cpu")


def test_numpy_ints_are_accepted():
    np = pytest.importorskip("numpy")
    model = vitequiv.load_model("random:vit_tiny_patch16_224", img_size=np.int64(32), depth=1, device="cpu",
                                seed=np.int32(1))
    assert model.input_size == 32 and isinstance(model.input_size, int)


# ------------------------------------------------------------------------------------ embed_batched


def test_embed_batched_matches_one_batch_without_a_graph(tiny_model):
    x = torch.rand(5, 3, 32, 32, requires_grad=True)
    z = models.embed_batched(tiny_model, x, batch_size=2)  # (5, D)
    assert z.shape == (5, 192) and not z.requires_grad and z.device == x.device
    torch.testing.assert_close(z, tiny_model.embed(x).detach())


def test_embed_batched_keeps_the_model_dtype(tiny_model):
    model64 = copy.deepcopy(tiny_model).double()
    x = torch.rand(3, 3, 32, 32, dtype=torch.float64)
    assert models.embed_batched(model64, x, batch_size=2).dtype == torch.float64


@pytest.mark.parametrize("images, batch_size, match", [
    (torch.rand(3, 32, 32), 2, r"images must be a tensor \(N, 3, H, W\), got \(3, 32, 32\)"),
    ([torch.rand(3, 32, 32)], 2, r"images must be a tensor \(N, 3, H, W\), got list"),
    (torch.rand(2, 3, 32, 32), 0, r"batch_size must be a positive int, got 0"),
])
def test_embed_batched_rejects_bad_input(tiny_model, images, batch_size, match):
    with pytest.raises((ValueError, TypeError), match=match):
        models.embed_batched(tiny_model, images, batch_size)


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
