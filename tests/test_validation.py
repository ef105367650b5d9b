"""Wrong answers become errors: every public entry point checks its arguments before any expensive work.

Table-driven: each case calls an entry point with one bad argument and expects an error of a project type (or
ValueError / TypeError) whose message names the argument (or the value) it got. Models, images, runner inputs and
hub checks have tables of their own (test_models, test_images_reliability, test_runner_reliability, test_hub).
"""
import pytest
import torch
from helpers import random_images

import vitequiv as vq
from vitequiv import detection, lipschitz, structure
from vitequiv.matching import L2Ball, LinfBall


def _targets(model):
    return model.embed(random_images(2, 1)).detach()  # (2, D)


CASES = {
    # matching
    "pixels in 0-255": (lambda m: vq.match_embeddings(m, random_images(2) * 255, _targets(m), progress=False),
                        ValueError, r"\[0, 1\].*divide by 255"),
    "integer pixels": (lambda m: vq.match_embeddings(m, (random_images(2) * 255).to(torch.uint8), _targets(m)),
                       TypeError, "floating.point"),
    "NaN pixels": (lambda m: vq.match_embeddings(m, random_images(2) * float("nan"), _targets(m)), ValueError, "NaN"),
    "empty batch": (lambda m: vq.match_embeddings(m, random_images(0), _targets(m)[:0]), ValueError, "empty batch"),
    "one channel": (lambda m: vq.match_embeddings(m, random_images(2)[:, :1], _targets(m)), ValueError,
                    r"\(B, 3, H, W\)"),
    "a list of images": (lambda m: vq.match_embeddings(m, [random_images(1)], _targets(m)), TypeError, "torch.Tensor"),
    "target width": (lambda m: vq.match_embeddings(m, random_images(2), torch.zeros(2, 1)), ValueError,
                     "embedding width 1 .* 192"),
    "target count": (lambda m: vq.match_embeddings(m, random_images(2), _targets(m)[:1]), ValueError,
                     "2 sources but 1 targets"),
    "target shape": (lambda m: vq.match_embeddings(m, random_images(2), torch.zeros(2, 3, 4)), ValueError,
                     r"shape \(2, 3, 4\)"),
    "negative max_steps": (lambda m: vq.match_embeddings(m, random_images(2), _targets(m), max_steps=-1), ValueError,
                           "max_steps .* -1"),
    "float max_steps": (lambda m: vq.match_embeddings(m, random_images(2), _targets(m), max_steps=2.5), TypeError,
                        "max_steps .* 2.5"),
    "stop_cos above 1": (lambda m: vq.match_embeddings(m, random_images(2), _targets(m), stop_cos=1.5), ValueError,
                         "stop_cos .* 1.5"),
    "unknown step rule": (lambda m: vq.match_embeddings(m, random_images(2), _targets(m), step_rule="adma"), ValueError,
                          "adma.*min-norm"),
    "negative L2 radius": (lambda m: L2Ball(-3.0), ValueError, "eps_255 .* -3"),
    "zero L-inf radius": (lambda m: LinfBall(0), ValueError, "eps_255 .* 0"),
    "not a budget": (lambda m: vq.match_embeddings(m, random_images(2), _targets(m), budget=8), TypeError, "budget"),
    "negative lr": (lambda m: vq.Adam(lr=-1e-3), ValueError, r"lr .* -0.001"),
    "min-norm metric": (lambda m: vq.MinNorm(metric="ssim"), ValueError, "metric .* got .ssim."),
    "min-norm growth": (lambda m: vq.MinNorm(growth=(0.3, 0.1)), ValueError, "growth"),
    # Jacobians
    "negative batch_size": (lambda m: vq.jacobian(m, random_images(1), batch_size=-1), ValueError, "batch_size .* -1"),
    "zero batch_size": (lambda m: vq.jacobian(m, random_images(1), batch_size=0), ValueError, "batch_size .* 0"),
    "two images": (lambda m: vq.jacobian(m, random_images(2)), ValueError, r"one image .* \(2, 3, 32, 32\)"),
    "integer image": (lambda m: vq.jacobian(m, torch.zeros(1, 3, 32, 32, dtype=torch.uint8)), TypeError, "uint8"),
    "memory limit": (lambda m: vq.jacobian(m, random_images(1), max_bytes=1000), vq.JacobianMemoryError,
                     "MiB .* top_spectrum"),
    "spectrum shape": (lambda m: vq.spectrum(torch.zeros(4, 12), (3, 2, 3)), ValueError, "18 pixels .* 12 columns"),
    "spectrum NaN": (lambda m: vq.spectrum(torch.full((2, 3), float("nan")), (3, 1, 1)), ValueError, "NaN"),
    "top_spectrum k": (lambda m: vq.top_spectrum(m, random_images(1), k=0), ValueError, "k must .* 0"),
    "top_spectrum tol": (lambda m: vq.top_spectrum(m, random_images(1), k=2, tol=2.0), ValueError, "tol .* 2.0"),
    # Lipschitz estimates
    "eps zero": (lambda m: vq.directional_lipschitz(m, random_images(1), random_images(1)[0], [1e-2, 0.0]), ValueError,
                 "every eps must be finite and > 0"),
    "eps negative": (lambda m: vq.directional_lipschitz(m, random_images(1), random_images(1)[0], [-1e-3]), ValueError,
                     "eps"),
    "zero direction": (lambda m: vq.directional_lipschitz(m, random_images(1), torch.zeros(3, 32, 32), [1e-2]),
                       ValueError, "norm 0"),
    "NaN direction": (lambda m: lipschitz.sampled_lipschitz(m, random_images(1),
                                                            torch.full((2, 3, 32, 32), float("nan"))),
                      ValueError, "norm nan"),
    "sampled eps": (lambda m: lipschitz.sampled_lipschitz(m, random_images(1), random_images(2), eps=0),
                    ValueError, "eps"),
    "n_random zero": (lambda m: vq.sampled_lipschitz_max(m, random_images(1), n_random=0), ValueError, "n_random .* 0"),
    # downstream and detection
    "systematic labels": (lambda m: vq.systematic_evaluation(m, vq.KNN(1).fit(torch.eye(2), [0, 1]),
                                                             random_images(3), [0, 1]),
                          ValueError, "labels .* 3 class indices"),
    "systematic pixels": (lambda m: vq.systematic_evaluation(m, vq.KNN(1).fit(torch.eye(2), [0, 1]),
                                                             random_images(2) * 255, [0, 1]),
                          ValueError, "images .* 255"),
    "noise kind": (lambda m: detection.noisy_embeddings(m, random_images(1), 4, kind="uniform"),
                   ValueError, "uniform"),
    "noise draws": (lambda m: detection.noisy_embeddings(m, random_images(1), 4, n_draws=0),
                    ValueError, "n_draws .* 0"),
    "structure pairs": (lambda m: structure.pair_indices(1, 2), ValueError, "n_images=1"),
    "block index": (lambda m: vq.BlockEmbedding(m, 7), IndexError, "block 7 .* 2-block"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_argument_is_refused_with_a_message_that_names_it(tiny_model, case):
    call, error, message = CASES[case]
    with pytest.raises(error, match=message):
        call(tiny_model)


def test_refused_before_any_forward_pass(tiny_model):
    """The checks come first: a model that counts its forwards sees none for a refused call."""

    class Counting:
        embed_dim, calls = tiny_model.embed_dim, 0

        def embed(self, x):
            Counting.calls += 1
            return tiny_model.embed(x)

    model = Counting()
    for call in (lambda: vq.match_embeddings(model, random_images(2) * 255, torch.zeros(2, 192)),
                 lambda: vq.match_embeddings(model, random_images(2), torch.zeros(2, 1)),
                 lambda: vq.jacobian(model, random_images(1), max_bytes=10),
                 lambda: vq.jacobian(model, random_images(1), batch_size=-1)):
        with pytest.raises((ValueError, TypeError, MemoryError)):
            call()
    assert Counting.calls == 0
