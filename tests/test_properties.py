"""Property-based tests (Hypothesis): every public entry point that takes tensors, given arguments of the wrong
dtype, shape, range, type or length, either gives its documented result or raises ValueError / TypeError whose
message names the argument; no other exception type, and nothing is written to disk.

Each test draws one argument from :func:`values` (a tensor, a NumPy array, a list, a number, None or a string; of
float32, float64, float16, bfloat16, integer, bool or complex dtype; of the right shape, channels-last, with a
dimension dropped or added, or of a random shape; with pixels in [0, 1], 0-255, negative, NaN or infinite) and
puts it in one argument of a call on the tiny random ViT at 32 px.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import random_images
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vitequiv as vq
from vitequiv import detection, lipschitz, tensors

SETTINGS = settings(max_examples=20, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
FEW = settings(SETTINGS, max_examples=6)  # for calls that cost a full Jacobian or a walk (about 1 s each)
DTYPES = ["float32", "float64", "float16", "bfloat16", "uint8", "int64", "bool", "complex64"]
SCALES = ["unit", "255", "negative", "nan", "inf"]


def _shape(draw, right: tuple[int, ...]) -> tuple[int, ...]:
    how = draw(st.sampled_from(["right", "right", "right", "channels-last", "drop", "add", "random", "empty"]))
    if how == "channels-last" and len(right) >= 3:
        return (*right[:-3], *right[-2:], right[-3])
    if how == "drop" and len(right) > 1:
        return right[1:]
    if how == "add":
        return (1, *right)
    if how == "random":
        return tuple(draw(st.lists(st.integers(1, 5), min_size=1, max_size=5)))
    if how == "empty":
        return (0, *right[1:])
    return right


@st.composite
def values(draw, right: tuple[int, ...]):
    """An argument meant to have shape ``right`` and pixels in [0, 1], drawn to be wrong in one or more ways."""
    kind = draw(st.sampled_from(["tensor", "tensor", "numpy", "numpy", "list", "number", "none", "string"]))
    if kind == "none":
        return None
    if kind == "string":
        return "cat"
    if kind == "number":
        return draw(st.sampled_from([0.5, 3, float("nan")]))
    shape, dtype, scale = _shape(draw, right), draw(st.sampled_from(DTYPES)), draw(st.sampled_from(SCALES))
    t = torch.rand(shape, generator=torch.Generator().manual_seed(draw(st.integers(0, 3))), dtype=torch.float64)
    t = {"unit": t, "255": t * 255, "negative": t - 0.5, "nan": t * float("nan"), "inf": t / 0}[scale]
    if dtype in ("uint8", "int64", "bool"):
        t = t.nan_to_num(0, 0, 0).clamp(0, 255)
    t = t.to(getattr(torch, dtype))
    if kind == "tensor":
        return t
    if dtype == "bfloat16":  # NumPy has no bfloat16
        t = t.float()
    array = t.numpy()
    return array.tolist() if kind == "list" else array


def outcome(call, *names: str):
    """``call()``'s result, or None when it raised ValueError / TypeError naming one of ``names``; any other
    exception, or a message that names none of them, fails the test."""
    try:
        return call()
    except (ValueError, TypeError) as err:
        assert any(n in str(err) for n in names), f"{type(err).__name__} does not name {names}: {err}"
        return None


@pytest.fixture(autouse=True)
def nothing_written(tmp_path, monkeypatch):
    """Every test runs in an empty folder, which must stay empty (nothing written to disk)."""
    monkeypatch.chdir(tmp_path)
    yield
    assert list(Path(tmp_path).iterdir()) == []


def _targets(model):
    return model.embed(random_images(2, 1)).detach()  # (2, D)


IMAGE, IMAGES = (1, 3, 32, 32), (2, 3, 32, 32)


# ----------------------------------------------------------------------------------------- converters


@SETTINGS
@given(value=values(IMAGES))
def test_as_images_gives_unit_float32_batches_or_names_the_argument(value):
    out = outcome(lambda: tensors.as_images(value, "sources"), "sources")
    if out is not None:
        assert out.dtype == torch.float32 and out.dim() == 4 and out.shape[1] == 3 and len(out) >= 1
        assert 0 <= float(out.min()) and float(out.max()) <= 1


@SETTINGS
@given(value=values((3, 32, 32)))
def test_as_direction_never_reshapes_another_layout(value):
    like = random_images(1)
    out = outcome(lambda: tensors.as_direction(value, "v", like=like), "v")
    if out is not None:
        assert out.shape == (3, 32, 32) and torch.isfinite(out).all() and out.norm() > 0
        assert tuple(np.shape(value)) in ((3, 32, 32), (1, 3, 32, 32), (3072,))  # never (32, 32, 3) reshaped


# ----------------------------------------------------------------------------------------- matching


@SETTINGS
@given(sources=values(IMAGES))
def test_match_embeddings_sources(tiny_model, sources):
    out = outcome(lambda: vq.match_embeddings(tiny_model, sources, _targets(tiny_model), max_steps=1,
                                              progress=False), "sources")
    if out is not None:
        assert out.images.shape == IMAGES and out.images.dtype == torch.float32


@SETTINGS
@given(targets=st.one_of(values(IMAGES), values((2, 192))))
def test_match_embeddings_targets(tiny_model, targets):
    out = outcome(lambda: vq.match_embeddings(tiny_model, random_images(2), targets, max_steps=1, progress=False),
                  "targets")
    if out is not None:
        assert out.target_embeddings.shape == (2, 192)


# ----------------------------------------------------------------------------------------- Jacobians, Lipschitz


@FEW
@given(x=values(IMAGE))
def test_jacobian(tiny_model, x):
    out = outcome(lambda: vq.jacobian(tiny_model, x, batch_size=64), "x")
    if out is not None:
        assert out.shape == (192, 3072) and torch.isfinite(out).all()


@SETTINGS
@given(x=values(IMAGE), k=st.sampled_from([0, 1, 2, 192, 193, 5000, -1, 2.0, None]))
def test_top_spectrum(tiny_model, x, k):
    out = outcome(lambda: vq.top_spectrum(tiny_model, x, k, batch_size=4, max_products=64), "x", "k", "max_products")
    if out is not None:
        assert len(out.s) == k and out.V.shape == (k, 3072)


@SETTINGS
@given(J=values((4, 12)), shape=st.sampled_from([(3, 2, 2), (1, 3, 2, 2), (12,), (3, 4), (2, 3, 2)]))
def test_spectrum(J, shape):
    out = outcome(lambda: vq.spectrum(J, shape), "J", "input_shape")
    if out is not None:
        assert len(out.s) == 4 and out.input_shape == shape


@SETTINGS
@given(x=values(IMAGE), v=values((3, 32, 32)), eps=st.sampled_from([None, [1e-2], [0.0], 1e-2, [-1.0], "a"]))
def test_directional_lipschitz(tiny_model, x, v, eps):
    out = outcome(lambda: vq.directional_lipschitz(tiny_model, x, v, eps), "x", "v", "eps")
    if out is not None:
        assert out.shape == ((len(lipschitz.DEFAULT_EPS),) if eps is None else (1,)) and torch.isfinite(out).all()


@SETTINGS
@given(directions=values((3, 3, 32, 32)), eps=st.sampled_from([1e-2, 0, -1.0, float("nan"), "a", True]))
def test_sampled_lipschitz(tiny_model, directions, eps):
    out = outcome(lambda: lipschitz.sampled_lipschitz(tiny_model, random_images(1), directions, eps),
                  "directions", "eps")
    if out is not None:
        assert out.shape == (3,) and (out >= 0).all()


@SETTINGS
@given(x=values(IMAGE), v=values((3, 32, 32)), ts=st.sampled_from([None, [1e-2, 1.0], [0.0], [[1.0]], []]))
def test_linearization_profile(tiny_model, x, v, ts):
    out = outcome(lambda: vq.linearization_profile(tiny_model, x, v, ts), "x", "v", "ts")
    if out is not None:
        assert len(out.change) == len(out.ts) == (26 if ts is None else len(ts))


@FEW
@given(toward=values(IMAGE), n_steps=st.sampled_from([1, 0, -1, 1.5]))
def test_null_space_walk(tiny_model, toward, n_steps):
    out = outcome(lambda: vq.null_space_walk(tiny_model, random_images(1), toward=toward, n_steps=n_steps, k=2,
                                             relinearize_every=5), "toward", "n_steps")
    if out is not None:
        assert out.images.shape[1:] == (3, 32, 32)


# ----------------------------------------------------------------------------------------- detection, downstream


@SETTINGS
@given(images=values(IMAGES), sigmas=st.sampled_from([[0, 4], [4], [], [-1], "4", 4, [float("nan")]]))
def test_noise_shift(tiny_model, images, sigmas):
    out = outcome(lambda: detection.noise_shift(tiny_model, images, sigmas, n_draws=1), "images", "sigmas_255")
    if out is not None:
        assert out.shape == (2, len(sigmas)) and np.isfinite(out).all()


@SETTINGS
@given(matched=values(IMAGES), targets=st.one_of(values(IMAGES), values((2, 192))))
def test_survival(tiny_model, matched, targets):
    transforms = {"identity": lambda x: x}
    out = outcome(lambda: detection.survival(tiny_model, matched, targets, transforms), "matched", "targets")
    if out is not None:
        assert len(out) == 2 and out["cos_target"].between(-1 - 1e-6, 1 + 1e-6).all()


@SETTINGS
@given(n_draws=st.sampled_from([0, -1, 1.5, None, "2", 2]))
def test_eot_model(tiny_model, n_draws):
    out = outcome(lambda: detection.EOTModel(tiny_model, detection.default_eot_transforms(), n_draws=n_draws),
                  "n_draws")
    if out is not None:
        assert out.embed(random_images(1)).shape == (1, 192)


@SETTINGS
@given(embeddings=values((4, 8)), labels=st.sampled_from([[0, 1, 0, 1], [0, 1, 0, 2], [-1, 0, 1, 0], [0, 1],
                                                          [0.5, 1, 0, 1], "0101", [True, False, True, False]]))
def test_knn_fit(embeddings, labels):
    out = outcome(lambda: vq.KNN(1).fit(embeddings, labels, ["a", "b"]), "embeddings", "labels")
    if out is not None:
        proba = out.predict_proba(np.eye(4, 8))
        assert proba.shape == (4, 2) and np.allclose(proba.sum(axis=1), 1)


@SETTINGS
@given(images=values((4, 3, 32, 32)), labels=st.sampled_from([[0, 0, 1, 1], [0, 1], [0, 0, 2, 1], [-1, 0, 1, 1]]))
def test_systematic_evaluation(tiny_model, images, labels):
    probe = vq.KNN(1).fit(torch.eye(2, 192), [0, 1], ["a", "b"])
    out = outcome(lambda: vq.systematic_evaluation(tiny_model, probe, images, labels, max_steps=1, progress=False),
                  "images", "labels")
    if out is not None:
        assert out.matched_images.shape == (4, 3, 32, 32)


# ----------------------------------------------------------------------------------------- images, seeds


@SETTINGS
@given(key=st.one_of(st.integers(-6, 6), st.sampled_from(["cat", "dog", 1.0, None, True, slice(-2, None)])))
def test_image_set_indexes_like_a_sequence(key):
    photos = vq.ImageSet(random_images(3), ["a", "b", "c"])
    try:
        out = photos[key]
    except (IndexError, KeyError, TypeError) as err:
        assert repr(key) in str(err) or str(key) in str(err)
        assert not (isinstance(key, int) and not isinstance(key, bool) and -3 <= key < 3)
        return
    if isinstance(key, slice):
        torch.testing.assert_close(out, photos.images[key])
    else:
        index = {"a": 0, "b": 1, "c": 2}.get(key, key)
        torch.testing.assert_close(out, photos.images[index][None])


@SETTINGS
@given(seed=st.sampled_from([0, 7, 2**32 - 1, 2**32, -1, None, 1.5, "0", True, np.int64(3)]))
def test_seed_everything(seed):
    out = outcome(lambda: vq.seed_everything(seed), "seed")
    if out is not None:
        assert isinstance(out, torch.Generator)



@pytest.mark.parametrize("convert", [lambda x: x.double(), lambda x: x.half(), lambda x: x.bfloat16(),
                                     lambda x: x.double().numpy(), lambda x: x.numpy()],
                         ids=["float64", "float16", "bfloat16", "NumPy float64", "NumPy float32"])
def test_any_float_input_gives_the_float32_result(tiny_model, convert):
    """What a user naturally hands over (NumPy's float64, half precision) is widened to the model's float32: the
    numbers equal those of the same values given in float32."""
    def float32(t):  # the same values, in float32
        return torch.as_tensor(np.asarray(t.float() if isinstance(t, torch.Tensor) else t, dtype=np.float32))

    x, v = convert(random_images(1)), convert(random_images(1, seed=3)[0] - 0.5)
    same = float32(x)
    torch.testing.assert_close(vq.jacobian(tiny_model, x, batch_size=64), vq.jacobian(tiny_model, same, batch_size=64))
    torch.testing.assert_close(vq.directional_lipschitz(tiny_model, x, v, [1e-2]),
                               vq.directional_lipschitz(tiny_model, same, float32(v), [1e-2]))
    np.testing.assert_allclose(detection.noise_shift(tiny_model, x, [4], n_draws=1),
                               detection.noise_shift(tiny_model, same, [4], n_draws=1))
