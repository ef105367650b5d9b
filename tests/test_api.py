"""The entry points that notebooks, assignments and outside checks call by name, on the package itself."""
import torch

import vitequiv


def test_entry_points_work_on_any_object_with_embed():
    A = torch.randn(4, 3 * 2 * 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)  # (D, P)
    f = vitequiv.LinearMap(A, (3, 2, 2))  # a plain linear map: embed(x) = flatten(x) @ A^T
    x = torch.rand(1, 3, 2, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    assert torch.allclose(vitequiv.jacobian(f, x), A)  # (D, 3*H*W)

    v = torch.randn(3, 2, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    L = vitequiv.directional_lipschitz(f, x, v, torch.tensor([1e-1, 1e-3]))
    assert torch.allclose(L, (A @ v.flatten()).norm() / v.norm(), rtol=1e-8)  # exact for a linear map

    target = f.embed(torch.rand(1, 3, 2, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64))
    result = vitequiv.match_embeddings(f, x, target, max_steps=5, progress=False)
    assert result.images.shape == x.shape and len(result.history["cosine"]) >= 2
