"""Mixed precision stays where it is safe: matching's search, never the measurements (Jacobians, Lipschitz)."""
import pytest
import torch
from helpers import random_images as images

import vitequiv
from vitequiv import jacobians, linearity, lipschitz, precision

BF16 = pytest.mark.skipif(not precision.bf16_supported("cpu"), reason="this CPU has no native bfloat16")


def _measurements(model, x):
    v = images(1, 7)[0] - 0.5  # (3, 32, 32) a direction
    return {
        "jacobian": jacobians.jacobian(model, x),
        "jvp": jacobians.jvp(model, x, v),
        "lipschitz": lipschitz.directional_lipschitz(model, x, v, [1e-2, 1e-3]),
        "linearity": torch.as_tensor(linearity.linearization_profile(model, x, v, torch.tensor([1e-2, 1e-1])).error),
    }


@BF16
def test_measurements_ignore_an_ambient_bfloat16_autocast(tiny_model, tiny_x):
    plain = _measurements(tiny_model, tiny_x)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # e.g. left open by a user around a matching call
        inside = _measurements(tiny_model, tiny_x)
    for name, value in plain.items():
        assert torch.equal(inside[name], value), name


@BF16
def test_autocast_would_have_changed_them(tiny_model, tiny_x):
    """The guard above can fail: the same forward under autocast, unguarded, gives other numbers."""
    with torch.autocast("cpu", dtype=torch.bfloat16):
        unguarded = tiny_model.embed(tiny_x)
    assert not torch.equal(unguarded.float(), tiny_model.embed(tiny_x))


def test_embed_batched_is_float32_unless_asked(tiny_model):
    x = images(3, 8)
    exact = torch.cat([tiny_model.embed(x[i:i + 1]) for i in range(3)])
    assert torch.allclose(vitequiv.embed_batched(tiny_model, x, batch_size=2), exact, atol=1e-6)
    if precision.bf16_supported("cpu"):
        fast = vitequiv.embed_batched(tiny_model, x, precision="bfloat16")
        assert fast.dtype == torch.float32 and not torch.equal(fast, exact)
        assert torch.nn.functional.cosine_similarity(fast, exact).min() > 0.99
