"""The on-disk Jacobian cache: a hit is the same matrix, anything that changes it misses, bad entries are recomputed."""
import copy
import math
import re
import warnings

import pytest
import torch

import vitequiv
from vitequiv import jacobians as jac
from vitequiv.structure import jacobian_measurements


@pytest.fixture
def data(tmp_path, monkeypatch):
    monkeypatch.setenv("VITEQUIV_DATA", str(tmp_path))
    return tmp_path


@pytest.fixture
def computed(monkeypatch):
    """How many times a Jacobian was actually computed (not read from the cache)."""
    calls = []
    real = jac._full_jacobian
    monkeypatch.setattr(jac, "_full_jacobian", lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


def entries(data):
    return sorted((data / "cache" / "jacobians").glob("*")) if (data / "cache" / "jacobians").exists() else []


def test_a_hit_is_the_same_matrix_without_computing(data, computed, tiny_model, tiny_x, tiny_J):
    first = vitequiv.jacobian(tiny_model, tiny_x, cache=True)
    second = vitequiv.jacobian(tiny_model, tiny_x, cache=True)
    assert len(computed) == 1 and len(entries(data)) == 1
    assert torch.equal(first, tiny_J) and torch.equal(second, tiny_J)
    assert torch.equal(vitequiv.jacobian(tiny_model, tiny_x.double(), cache=True), first)  # same float32 image


def test_a_fresh_load_of_the_same_model_hits(data, computed, tiny_x):
    load = lambda: vitequiv.load_model("random:vit_tiny_patch16_224", img_size=32, depth=2, device="cpu", seed=3)
    vitequiv.jacobian(load(), tiny_x, cache=True)
    vitequiv.jacobian(load(), tiny_x, cache=True)
    assert len(computed) == 1


def test_refresh_and_no_cache_compute(data, computed, tiny_model, tiny_x):
    vitequiv.jacobian(tiny_model, tiny_x)
    assert len(computed) == 1 and entries(data) == []  # off by default: nothing written
    vitequiv.jacobian(tiny_model, tiny_x, cache="refresh")
    vitequiv.jacobian(tiny_model, tiny_x, cache="refresh")
    assert len(computed) == 3 and len(entries(data)) == 1
    vitequiv.jacobian(tiny_model, tiny_x, cache=True)
    assert len(computed) == 3


@pytest.mark.parametrize("change", ["weight", "image", "dtype", "block", "setting"])
def test_anything_that_changes_the_matrix_misses(data, computed, tiny_model, tiny_x, change):
    model, x, dtype = tiny_model, tiny_x, None
    if change == "weight":
        model = copy.deepcopy(tiny_model)
        with torch.no_grad():
            model.backbone.blocks[1].mlp.fc2.bias[0] += 1e-3
    elif change == "image":
        x = tiny_x.clone()
        x[0, 0, 0, 0] = 1 - x[0, 0, 0, 0]
    elif change == "dtype":
        dtype = torch.float64
    elif change == "block":
        model = vitequiv.BlockEmbedding(tiny_model, 0)
    else:
        model = copy.deepcopy(tiny_model)
        model.backbone.blocks[0].attn.fused_attn = not model.backbone.blocks[0].attn.fused_attn
    vitequiv.jacobian(tiny_model, tiny_x, cache=True)
    J = vitequiv.jacobian(model, x, dtype=dtype, cache=True)
    assert len(computed) == 2 and len(entries(data)) == 2
    assert torch.equal(J, vitequiv.jacobian(model, x, dtype=dtype))


def test_models_it_cannot_digest_are_computed_without_a_cache(data, computed):
    linear = jac.LinearMap.with_singular_values(torch.tensor([2.0, 1.0]), D=3, input_shape=(3, 4, 4), seed=0)
    J = vitequiv.jacobian(linear, torch.rand(1, 3, 4, 4), cache=True)
    assert J.shape == (3, 48) and entries(data) == [] and len(computed) == 1


@pytest.mark.parametrize("spoil", ["garbage", "truncated", "wrong shape", "not finite", "finite garbage",
                                   "payload cut short", "no checksum"])
def test_a_bad_entry_is_recomputed_and_replaced(data, computed, tiny_model, tiny_x, tiny_J, spoil):
    from safetensors.torch import save_file

    vitequiv.jacobian(tiny_model, tiny_x, cache=True)
    [path] = entries(data)
    if spoil == "garbage":
        path.write_bytes(b"not a safetensors file")
    elif spoil == "truncated":
        path.write_bytes(path.read_bytes()[:1000])
    elif spoil == "wrong shape":
        save_file({"jacobian": torch.zeros(4, 5)}, str(path))
    elif spoil == "not finite":
        save_file({"jacobian": torch.full_like(tiny_J, math.nan)}, str(path))
    elif spoil == "finite garbage":  # sixteen float32 1e30 written into the middle of the payload, header intact
        raw = bytearray(path.read_bytes())
        middle = len(raw) - tiny_J.numel() * 4 // 2
        raw[middle:middle + 64] = torch.full((16,), 1e30).numpy().tobytes()
        path.write_bytes(bytes(raw))
    elif spoil == "payload cut short":
        path.write_bytes(path.read_bytes()[:-64])
    else:  # an entry written before checksums: its bytes cannot be vouched for
        save_file({"jacobian": tiny_J.clone()}, str(path), metadata={"format": "1"})
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        J = vitequiv.jacobian(tiny_model, tiny_x, cache=True)
    [warning] = [w for w in said if "cached Jacobian" in str(w.message)]  # said once, naming the file
    assert re.search(f"cached Jacobian {re.escape(str(path))} is .*computing it again", str(warning.message))
    assert torch.equal(J, tiny_J) and len(computed) == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(vitequiv.jacobian(tiny_model, tiny_x, cache=True), tiny_J)  # replaced: a clean hit
    assert len(computed) == 2 and entries(data) == [path]


def test_a_failed_write_costs_only_the_cache(data, monkeypatch, tiny_model, tiny_x, tiny_J):
    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("safetensors.torch.save_file", full_disk)
    with pytest.warns(UserWarning, match="could not be cached.*No space left.*computed all the same"):
        J = vitequiv.jacobian(tiny_model, tiny_x, cache=True)
    assert torch.equal(J, tiny_J)
    assert entries(data) == []  # no half-written entry, no temporary file


@pytest.mark.parametrize("bad", [1, 0, "yes", None, "Refresh"])
def test_cache_takes_only_true_false_or_refresh(tiny_model, tiny_x, bad):
    with pytest.raises(ValueError, match="cache must be False, True or 'refresh'"):
        vitequiv.jacobian(tiny_model, tiny_x, cache=bad)


def test_structure_marks_a_cached_jacobian_time_as_unknown(data, tiny_model, tiny_x):
    fresh, s_fresh = jacobian_measurements(tiny_model, tiny_x, cache=True)
    hit, s_hit = jacobian_measurements(tiny_model, tiny_x, cache=True)
    assert fresh.seconds > 0 and math.isnan(hit.seconds)
    assert (s_fresh == s_hit).all() and hit.rank == fresh.rank


def test_the_last_block_of_a_cls_token_model_shares_the_models_entry(data, computed, tiny_model, tiny_x, tiny_J):
    last = vitequiv.BlockEmbedding(tiny_model, -1)
    assert last.is_model_embedding and not vitequiv.BlockEmbedding(tiny_model, 0).is_model_embedding
    assert torch.equal(jac._full_jacobian(last, tiny_x, 8, None), tiny_J)  # the same matrix, computed
    computed.clear()
    vitequiv.jacobian(tiny_model, tiny_x, cache=True)
    assert torch.equal(vitequiv.jacobian(last, tiny_x, cache=True), tiny_J)
    assert len(computed) == 1 and len(entries(data)) == 1
