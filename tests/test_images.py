"""Bundled photos, user folders and awkward image files."""
import numpy as np
import pytest
import torch
from PIL import Image

from vitequiv import images


def test_every_bundled_photo_loads_with_credit():
    photos = images.load_images(size=64)
    assert photos.images.shape == (len(images.BUNDLED), 3, 64, 64)
    assert photos.images.min() >= 0 and photos.images.max() <= 1
    assert all(photos.credits[n] for n in photos.names)
    assert photos["cat"].shape == (1, 3, 64, 64)


def test_unknown_bundled_name_suggests(tmp_path):
    with pytest.raises(KeyError, match="astronaut"):
        images.load_images(["astronot"])


def test_awkward_files_are_handled(tmp_path):
    Image.fromarray((np.arange(35).reshape(5, 7) * 1800).astype(np.uint16)).save(tmp_path / "deep.png")
    rgba = np.zeros((40, 60, 4), np.uint8)
    rgba[..., 0] = 255  # red, but fully transparent: composited on white
    Image.fromarray(rgba, "RGBA").save(tmp_path / "clear.png")
    Image.fromarray(np.full((3, 3), 10, np.uint8), "L").save(tmp_path / "tiny_gray.png")
    Image.fromarray(np.zeros((3000, 200, 3), np.uint8)).save(tmp_path / "tall.jpg")
    loaded = images.load_images(folder=tmp_path, size=32)
    assert loaded.names == ["clear", "deep", "tall", "tiny_gray"]
    assert loaded.images.shape == (4, 3, 32, 32)
    torch.testing.assert_close(loaded["clear"], torch.ones(1, 3, 32, 32))
    assert 0.1 < loaded["deep"].mean() < 0.9  # 16-bit scaled by 65535, not clipped to white
    torch.testing.assert_close(loaded["tiny_gray"], torch.full((1, 3, 32, 32), 10 / 255))


def test_missing_and_broken_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.png"):
        images.load_images(files=[tmp_path / "nope.png"])
    (tmp_path / "broken.png").write_bytes(b"not an image")
    with pytest.raises(images.ImageLoadError, match="broken.png"):
        images.load_images(files=[tmp_path / "broken.png"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="No images"):
        images.load_images(folder=empty)


def test_unknown_names_in_a_set_list_the_known_ones():
    photos = images.load_images(["cat", "coffee"], size=16)
    with pytest.raises(KeyError, match="cat, coffee"):
        photos["dog"]
    with pytest.raises(KeyError, match="'dog'"):
        photos.subset(["dog"])


def test_view_set_is_labeled_and_seeded():
    a, labels, names = images.view_set(["cat", "coffee"], views_per_image=3, size=32, seed=1)
    b, _, _ = images.view_set(["cat", "coffee"], views_per_image=3, size=32, seed=1)
    assert a.shape == (6, 3, 32, 32) and labels.tolist() == [0, 0, 0, 1, 1, 1] and names == ["cat", "coffee"]
    assert torch.equal(a, b)


def test_lfw_faces_are_labeled():
    faces, labels, names = images.lfw_faces(size=32)
    assert faces.shape == (200, 3, 32, 32) and labels.sum() == 100 and names[1] == "face"


def test_near_duplicates_name_bundled_photos():
    assert set(images.NEAR_DUPLICATES) < set(images.BUNDLED)


def test_unrelated_pairs_are_of_different_subjects_seeded_and_never_repeated():
    for seed in range(5):
        pairs = images.unrelated_pairs(6, seed=seed)
        assert len(set(pairs)) == 6 and pairs == images.unrelated_pairs(6, seed=seed)
        for source, target in pairs:
            assert images.BUNDLED[source].subject != images.BUNDLED[target].subject
            assert source not in images.NEAR_DUPLICATES and target not in images.NEAR_DUPLICATES
    assert images.unrelated_pairs(6, seed=0) != images.unrelated_pairs(6, seed=1)
    distinct = [n for n in images.BUNDLED if n not in images.NEAR_DUPLICATES]
    n_unrelated = sum(images.BUNDLED[s].subject != images.BUNDLED[t].subject for s in distinct for t in distinct)
    every = images.unrelated_pairs(n_unrelated, seed=0)  # all of them
    assert ("camera", "grace_hopper") not in every and ("cat", "rocket") in every  # two portraits are related
    with pytest.raises(ValueError, match="n_pairs must be 1 to"):
        images.unrelated_pairs(0)
