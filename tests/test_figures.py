"""Figure helpers: making a perturbation visible."""
import torch

from vitequiv.figures import amplify


def test_amplify_maps_the_chosen_quantile_to_the_fill_and_keeps_a_given_gain():
    delta = torch.linspace(-0.01, 0.01, 3 * 4 * 4).reshape(3, 4, 4)  # largest change 0.01
    image, gain = amplify(delta)
    assert gain == 50.0 and image.max().item() == 1.0 and image.min().item() == 0.0  # max -> 0.5 from mid-grey
    image, gain = amplify(delta, 10.0)
    assert gain == 10.0 and torch.allclose(image, 0.5 + 10 * delta)
    _, gain = amplify(torch.zeros(3, 4, 4))
    assert gain == 1000.0  # an all-zero change stays finite: 0.5 / (1/2040), to two digits
