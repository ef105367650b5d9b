"""Files that arrive from the user's disk: extreme aspect ratios, dead links, names that are not UTF-8, and weights
that pass their checksum but belong to another model. Table-driven; each case asserts the error or warning and
that nothing was left behind."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pandas as pd
import pytest
import torch
from PIL import Image

from vitequiv import images, weights

# --------------------------------------------------------------------------------------------- aspect ratios

PEAK_SCRIPT = """
import importlib.util, json, resource, sys
spec = importlib.util.spec_from_file_location("images_alone", sys.argv[1])  # the module alone: a fast start
images = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(images)
images.resize_center_crop(images.to_unit_float(images.np.zeros((300, 400, 3), images.np.uint8)), 224)  # warm up
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
shape = tuple(images.load_images(files=[sys.argv[2]], size=224).images.shape)
print(json.dumps({"growth": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024, "shape": shape}))
"""


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is in KiB on Linux only")
@pytest.mark.parametrize("width, height", [(100_000, 4), (4, 100_000)], ids=["wide strip", "tall strip"])
def test_a_strip_image_loads_in_bounded_memory(tmp_path, width, height):
    """A 100000 x 4 px strip (1.2 MB as 8-bit RGB) once asked for 15 GB: it was scaled up whole before cropping."""
    Image.new("RGB", (width, height), (200, 120, 40)).save(tmp_path / "strip.png")
    run = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, images.__file__, str(tmp_path / "strip.png")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["shape"] == [1, 3, 224, 224]
    assert out["growth"] < 100 * 2**20  # measured a few MB


def test_ordinary_aspect_ratios_are_scaled_whole_and_extreme_ones_keep_their_center():
    photo = torch.rand(3, 30, 40, generator=torch.Generator().manual_seed(0))
    # within MAX_ASPECT: identical to scaling the whole image, then cropping
    whole = torch.nn.functional.interpolate(photo[None], size=(16, 21), mode="bicubic", antialias=True)[0]
    torch.testing.assert_close(images.resize_center_crop(photo, 16), whole[:, :, 2:18].clamp(0, 1))
    strip = torch.zeros(3, 4, 400)
    strip[:, :, 199:201] = 1.0  # a white bar in the middle of a black strip
    out = images.resize_center_crop(strip, 8)  # the central 4 x 4 px, twice as large
    assert out[:, :, 3:5].mean() > 0.9 and out[:, :, 0].max() < 0.1 and out[:, :, 7].max() < 0.1
    with pytest.raises(ValueError, match=r"one image \(3, H, W\), got \(2, 3, 4, 4\)"):
        images.resize_center_crop(torch.zeros(2, 3, 4, 4), 8)


# --------------------------------------------------------------------------------------------- links and names


def _png(path: Path) -> None:
    Image.new("RGB", (8, 8), (10, 20, 30)).save(path)


LINKS = {
    "broken link": (lambda d: os.symlink(d / "gone.png", d / "dead.png"), "dead.png", "broken symbolic link"),
    "link loop": (lambda d: (os.symlink(d / "b.png", d / "a.png"), os.symlink(d / "a.png", d / "b.png")),
                  "a.png", "loops back on itself"),
    "self loop": (lambda d: os.symlink(d / "self.png", d / "self.png"), "self.png", "loops back on itself"),
}


@pytest.mark.parametrize("case", sorted(LINKS))
def test_dead_links_in_a_folder_are_named_in_a_warning_and_skipped(tmp_path, case):
    make, name, reason = LINKS[case]
    _png(tmp_path / "good.png")
    make(tmp_path)
    before = sorted(os.listdir(tmp_path))
    with pytest.warns(UserWarning, match=f"{name}.*{reason}"):
        loaded = images.load_images(folder=tmp_path, size=8)
    assert loaded.names == ["good"]
    assert sorted(os.listdir(tmp_path)) == before  # nothing left behind


@pytest.mark.parametrize("case", sorted(LINKS))
def test_dead_links_given_as_files_are_errors_that_name_them(tmp_path, case):
    make, name, reason = LINKS[case]
    make(tmp_path)
    with pytest.raises(FileNotFoundError, match=f"files\\[0\\] = .*{name} is .*{reason}"):
        images.load_images(files=[tmp_path / name], size=8)


NAMES = {  # raw file names (bytes) -> the printable names they get
    "latin-1 byte": ([b"caf\xe9.png"], ["caf\\xe9"]),
    "two invalid bytes": ([b"\xff\xfe.png", b"\xff.png"], ["\\xff\\xfe", "\\xff"]),
    "newline": ([b"two\nlines.png"], ["two\\nlines"]),
    "escape clash": ([b"caf\xe9.png", b"caf\\xe9.png"], ["caf\\xe9.png", "caf\\xe9-2.png"]),
    "utf-8 kept": (["caf\u00e9.png".encode()], ["caf\u00e9"]),
}


@pytest.mark.skipif(sys.platform != "linux", reason="file names as arbitrary bytes")
@pytest.mark.parametrize("case", sorted(NAMES))
def test_names_are_printable_unique_and_every_writer_accepts_them(tmp_path, case):
    raw, expected = NAMES[case]
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in raw:
        _png(Path(os.fsdecode(os.path.join(os.fsencode(folder), name))))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = images.load_images(folder=folder, size=8)
    assert sorted(loaded.names) == sorted(expected) and len(set(loaded.names)) == len(raw)
    table = pd.DataFrame({"name": loaded.names, "credit": [loaded.credits[n] for n in loaded.names]})
    table.to_csv(tmp_path / "table.csv", index=False)  # UTF-8: a surrogate would raise here
    (tmp_path / "table.md").write_text(table.to_markdown(), encoding="utf-8")
    json.dumps(loaded.names, ensure_ascii=False).encode("utf-8")


# --------------------------------------------------------------------------------------------- weights


@pytest.fixture
def data(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    monkeypatch.setenv("VITEQUIV_DATA", str(folder))
    return folder


def _drop(state: dict) -> dict:
    state.pop("pos_embed")
    return state


def _reshape(state: dict) -> dict:
    state["pos_embed"] = torch.zeros(1, 5, 384)
    return state


def _extra(state: dict) -> dict:
    state["head.weight"] = torch.zeros(1000, 384)
    return state


def _half(state: dict) -> dict:
    state["norm.weight"] = state["norm.weight"].half()
    return state


MISMATCH = {
    "a tensor missing": (_drop, r"1 missing: pos_embed"),
    "a wrong shape": (_reshape, r"1 misshapen: pos_embed \(1, 5, 384\) where \(1, 257, 384\) belongs"),
    "an extra tensor": (_extra, r"1 unexpected: head.weight"),
    "a wrong dtype": (_half, r"1 not float32: norm.weight \(F16\)"),
    "another model": (lambda state: {"fc.weight": torch.zeros(2, 2)}, r"174 missing: .*1 unexpected: fc.weight"),
}


@pytest.mark.parametrize("case", sorted(MISMATCH))
def test_weights_of_another_architecture_name_the_file_and_the_rebuild_command(data, case):
    """A valid safetensors file with a matching checksum, but tensors that do not fit: refused by name, and the
    file, its checksum and the folder are left exactly as they were."""
    from safetensors.torch import save_file

    change, problem = MISMATCH[case]
    expected = weights.expected_tensors()
    state = change({name: torch.zeros(shape) for name, shape in expected.items()})
    path = weights.weights_path()
    save_file(state, str(path))
    weights.checksum_path(path).write_text(f"{weights.sha256_of(path)}  {path.name}\n")
    before = {p.name: p.read_bytes() for p in data.iterdir()}
    with pytest.raises(weights.WeightsMismatchError, match=problem) as err:
        weights.load_state_dict()
    assert str(path) in str(err.value) and "python -m vitequiv weights --force" in str(err.value)
    assert {p.name: p.read_bytes() for p in data.iterdir()} == before
    from vitequiv import __main__

    assert __main__.main(["weights", "--check"]) == 1
    assert {p.name: p.read_bytes() for p in data.iterdir()} == before
