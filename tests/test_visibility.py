"""Visibility measures: butteraugli through libjxl's tool, ColorVideoVDP's JOD, and what happens without the tool.

Tests that run the real ``butteraugli_main`` skip where it is missing (CI installs Debian's libjxl-devtools); the
missing and failing tool cases use PATH and fake scripts, so they run everywhere.
"""
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import vitequiv as vq
from vitequiv import metrics, visibility

needs_tool = pytest.mark.skipif(not visibility.butteraugli_available(),
                                reason="butteraugli_main is missing (Debian libjxl-devtools; .ci/run installs it)")
SIZE = 64  # px: enough for both models to rank a noise series, and fast (ColorVideoVDP is about 1 s an image)
LEVELS_K = (1, 2, 3, 4)  # +-k gray levels of random sign noise


@pytest.fixture(scope="module")
def flower() -> torch.Tensor:
    return metrics.quantize_8bit(vq.load_images(["flower"], size=SIZE).images)  # (1, 3, S, S)


@pytest.fixture(scope="module")
def noise_series(flower) -> torch.Tensor:
    """The flower with +-k levels of random sign noise, k = 1..4: (4, 3, S, S) on the 8-bit grid."""
    g = torch.Generator().manual_seed(0)
    signs = torch.randint(0, 2, (len(LEVELS_K), *flower.shape[1:]), generator=g) * 2 - 1  # (4, 3, S, S)
    k = torch.tensor(LEVELS_K, dtype=torch.float32)[:, None, None, None]
    return metrics.quantize_8bit(flower + k * signs / 255)  # (4, 3, S, S)


def fake_tool(folder: Path, body: str) -> Path:
    """A Python script named butteraugli_main in ``folder`` (put it first on PATH) that runs ``body``."""
    path = folder / visibility.BUTTERAUGLI_TOOL
    path.write_text(f"#!{sys.executable}\nimport sys, time\n{body}\n")
    path.chmod(0o755)
    return path


# ------------------------------------------------------------------------------------------- measurements


def test_identical_images_score_no_difference(flower):
    assert visibility.jod(flower, flower).tolist() == [10.0]
    if visibility.butteraugli_available():
        scores = visibility.butteraugli(flower, flower)
        assert scores.distance.tolist() == [0.0] and scores.pnorm.tolist() == [0.0]


def test_jod_falls_as_noise_grows(flower, noise_series):
    scores = visibility.jod(noise_series, flower.expand(len(LEVELS_K), -1, -1, -1))
    assert scores.shape == (len(LEVELS_K),)
    assert (np.diff(scores) < 0).all() and scores[-1] < 10, scores


@needs_tool
def test_butteraugli_grows_with_noise_and_crosses_the_threshold(flower, noise_series):
    scores = visibility.butteraugli(noise_series, flower.expand(len(LEVELS_K), -1, -1, -1))
    assert (np.diff(scores.distance) > 0).all() and (np.diff(scores.pnorm) > 0).all(), scores
    assert (scores.pnorm < scores.distance).all()  # the 3-norm averages; the max-norm is the worst spot
    invisible = metrics.invisible_butteraugli(scores.distance)
    assert invisible[0] and not invisible[-1], scores.distance  # +-1 level is below 1 JND, +-4 above


def test_float_and_8bit_inputs_agree(flower, noise_series):
    """Both measures judge the 8-bit image: a float image off the grid by less than half a level scores as its
    rounding does, and ``jod`` gives what pycvvdp gives for the documented uint8 (H, W, 3) input."""
    test = noise_series[1:2]  # (1, 3, S, S): +-2 levels
    off_grid = (test + (torch.rand(test.shape, generator=torch.Generator().manual_seed(1)) - 0.5) * 0.9 / 255)
    off_grid = off_grid.clamp(0, 1)
    ours = visibility.jod(off_grid, flower)
    as_uint8 = [(t[0].permute(1, 2, 0) * 255).round().to(torch.uint8) for t in (test, flower)]  # (S, S, 3) each
    pycvvdp = visibility._cvvdp_metric(torch.device("cpu"), None).predict(*as_uint8, dim_order="HWC")[0]
    assert ours.tolist() == pytest.approx([float(pycvvdp)], abs=1e-5)
    assert ours[0] < 10
    if visibility.butteraugli_available():
        assert visibility.butteraugli(off_grid.double().numpy(), flower).distance.tolist() == \
            visibility.butteraugli(test, flower).distance.tolist()


def test_jod_map_shows_where_the_change_is(flower, noise_series):
    changed_left = flower.clone()
    changed_left[..., : SIZE // 2] = noise_series[3:4, ..., : SIZE // 2]  # +-4 levels on the left half only
    heat = visibility.jod_map(changed_left, flower)  # (1, S, S)
    assert heat.shape == (1, SIZE, SIZE) and (heat >= 0).all()
    assert heat[0, :, : SIZE // 4].mean() > 5 * heat[0, :, -SIZE // 4:].mean()


@needs_tool
def test_butteraugli_heatmap_is_an_image_per_pair(flower, noise_series):
    scores = visibility.butteraugli(noise_series[:2], flower.expand(2, -1, -1, -1), heatmap=True)
    assert scores.heatmap.shape == (2, 3, SIZE, SIZE) and scores.distmap is None
    assert 0 <= scores.heatmap.min() and scores.heatmap.max() <= 1


def test_visibility_table_has_one_row_per_image(flower, noise_series, monkeypatch, tmp_path):
    fake_tool(tmp_path, 'print("1.25\\n3-norm: 0.5")')
    monkeypatch.setenv("PATH", str(tmp_path))
    frame = visibility.visibility_table(noise_series[:2], flower.expand(2, -1, -1, -1), names=["k1", "k2"])
    assert list(frame.columns) == ["butteraugli", "butteraugli 3-norm", "JOD"]
    assert list(frame.index) == ["k1", "k2"] and frame.attrs["note"] == ""
    assert frame["butteraugli"].tolist() == [1.25, 1.25] and frame["butteraugli 3-norm"].tolist() == [0.5, 0.5]
    assert frame["JOD"].between(9, 10).all()


# ------------------------------------------------------------------------------------------- the tool


def test_missing_tool_raises_with_the_install_hint_and_the_table_says_not_measured(flower, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no butteraugli_main
    assert not visibility.butteraugli_available()
    with pytest.raises(visibility.VisibilityUnavailable, match="not measured.*not installed.*libjxl-devtools"):
        visibility.butteraugli(flower, flower)
    frame = visibility.visibility_table(flower, flower)
    assert math.isnan(frame["butteraugli"][0]) and math.isnan(frame["butteraugli 3-norm"][0])
    assert frame["JOD"].tolist() == [10.0]
    assert "not measured" in frame.attrs["note"] and "apt-get install libjxl-devtools" in frame.attrs["note"]


def test_failing_tool_is_named_with_its_stderr(flower, monkeypatch, tmp_path):
    fake_tool(tmp_path, 'sys.stderr.write("Failed to decode image\\n"); sys.exit(1)')
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(visibility.VisibilityToolError, match="butteraugli_main.*exit status 1.*Failed to decode"):
        visibility.butteraugli(flower, flower)
    with pytest.raises(visibility.VisibilityToolError):  # a real failure is not "not measured"
        visibility.visibility_table(flower, flower)


def test_unreadable_output_and_a_hung_tool_are_errors(flower, monkeypatch, tmp_path):
    tool = fake_tool(tmp_path, 'print("hello")')
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(visibility.VisibilityToolError, match="butteraugli_main.*printed no distance.*hello"):
        visibility.butteraugli(flower, flower)
    tool.write_text(f"#!{sys.executable}\nimport time\ntime.sleep(30)\n")
    with pytest.raises(visibility.VisibilityToolError, match="butteraugli_main.*took more than 0.5 s"):
        visibility.butteraugli(flower, flower, timeout_s=0.5)


def test_raw_distance_maps_are_read_top_row_first(flower, monkeypatch, tmp_path):
    """A tool with --rawdistmap writes PFM (bottom row first); the map comes back (B, H, W), top row first."""
    fake_tool(tmp_path, f"""
if len(sys.argv) == 1:
    sys.exit("Usage: butteraugli_main <reference> <distorted> [--rawdistmap <distmap.pfm>]")
out = sys.argv[sys.argv.index("--rawdistmap") + 1]
import struct
with open(out, "wb") as f:
    f.write(b"Pf\\n{SIZE} {SIZE}\\n-1.0\\n")
    for row in reversed(range({SIZE})):
        f.write(struct.pack("<{SIZE}f", *[row] * {SIZE}))
print("2.5\\n3-norm: 1.5")""")
    monkeypatch.setenv("PATH", str(tmp_path))
    scores = visibility.butteraugli(flower.expand(2, -1, -1, -1), flower.expand(2, -1, -1, -1), distmap=True)
    assert scores.distance.tolist() == [2.5, 2.5] and scores.pnorm.tolist() == [1.5, 1.5]
    assert scores.distmap.shape == (2, SIZE, SIZE)
    assert scores.distmap[0, :, 0].tolist() == list(range(SIZE))  # row y holds y


def test_distance_maps_need_a_tool_that_writes_them(flower, monkeypatch, tmp_path):
    fake_tool(tmp_path, 'sys.exit("Usage: butteraugli_main <reference> <distorted> [--distmap <distmap>]")')
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(visibility.VisibilityUnavailable, match="no --rawdistmap.*heatmap=True"):
        visibility.butteraugli(flower, flower, distmap=True)


# ------------------------------------------------------------------------------------------- validation


def test_inputs_go_through_the_tensor_checks(flower):
    hwc = flower.permute(0, 2, 3, 1)  # (1, S, S, 3)
    with pytest.raises(ValueError, match="channels-last"):
        visibility.jod(hwc, flower)
    with pytest.raises(TypeError, match="x.float\\(\\) / 255"):
        visibility.butteraugli((flower * 255).to(torch.uint8), flower)
    with pytest.raises(ValueError, match="references must have the images' shape \\(2, 3, 64, 64\\)"):
        visibility.jod(flower.expand(2, -1, -1, -1), flower)
    with pytest.raises(ValueError, match="references must have the images' shape"):
        visibility.butteraugli(flower, flower[..., :32, :32])
    with pytest.raises(ValueError, match="pnorm must be finite and > 0"):
        visibility.butteraugli(flower, flower, pnorm=0)


def test_thresholds_are_the_documented_ones():
    assert metrics.INVISIBLE_BUTTERAUGLI == 1.0 and metrics.INVISIBLE_JOD == 9.95
    assert metrics.invisible_butteraugli([0.9, 1.0, 1.1, math.nan]).tolist() == [True, True, False, False]
    assert metrics.invisible_jod([9.99, 9.95, 9.9]).tolist() == [True, True, False]


# ------------------------------------------------------------------------------------------- equal-energy noise


def test_equal_energy_noise_matches_the_energy_on_the_8bit_grid(flower):
    delta = torch.zeros(2, *flower.shape[1:])  # (2, 3, S, S)
    delta[0, 0, :8, :8] = 40 / 255  # a concentrated change: 64 values of 40 levels
    delta[1] = 2.6 / 255  # a diffuse one, between whole levels
    x0 = torch.cat([flower, torch.ones_like(flower)])  # the second source is white: every sign must point down
    noisy = visibility.equal_energy_noise(x0, delta, seed=3)  # (2, 3, S, S)
    assert noisy.shape == x0.shape and 0 <= noisy.min() and noisy.max() <= 1
    assert torch.equal(noisy, metrics.quantize_8bit(noisy))
    change = (noisy - metrics.quantize_8bit(x0)) * 255  # (2, 3, S, S) in levels
    assert torch.allclose(change.flatten(1).pow(2).sum(1), (delta * 255).flatten(1).pow(2).sum(1), atol=3)
    assert set(change[1].abs().round().unique().tolist()) == {2.0, 3.0}  # white noise: every value moves
    assert torch.equal(noisy, visibility.equal_energy_noise(x0, delta, seed=3))
    assert not torch.equal(noisy, visibility.equal_energy_noise(x0, delta, seed=4))


def test_equal_energy_noise_checks_its_inputs(flower):
    with pytest.raises(ValueError, match="delta must have x0's shape"):
        visibility.equal_energy_noise(flower, torch.zeros(1, 3, 8, 8), seed=0)
    with pytest.raises(ValueError, match="one image\\? add a batch dimension"):
        visibility.equal_energy_noise(flower[0], torch.zeros_like(flower[0]), seed=0)


# ------------------------------------------------------------------------------------------- summaries


def test_compare_stacks_one_table_per_method_with_the_invisible_verdict(flower, noise_series, monkeypatch, tmp_path):
    fake_tool(tmp_path, 'print("0.75\\n3-norm: 0.5")')
    monkeypatch.setenv("PATH", str(tmp_path))
    references = flower.expand(2, -1, -1, -1)
    frame = visibility.compare({"same": references, "noisy": noise_series[2:]}, references, names=["p", "q"])
    assert list(frame.columns) == ["method", "pair", "butteraugli", "butteraugli 3-norm", "JOD", "invisible"]
    assert list(frame["method"]) == ["same"] * 2 + ["noisy"] * 2 and list(frame["pair"]) == ["p", "q"] * 2
    assert frame["invisible"][:2].all() and frame.attrs["note"] == ""  # JOD 10, butteraugli 0.75
    np.testing.assert_array_equal(frame["invisible"], frame["JOD"] >= metrics.INVISIBLE_JOD)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no tool: not measured, never invisible
    frame = visibility.compare({"same": references}, references)
    assert not frame["invisible"].any() and "not measured" in frame.attrs["note"]


TABLE = pd.DataFrame({"JOD": [9.5, 9.9, 9.8], "butteraugli": [1.234, 3.0, 2.0]})


def test_spread_quotes_range_and_median_with_each_measures_digits():
    assert visibility.spread(TABLE, "JOD") == "JOD 9.500-9.900 (median 9.800)"
    assert visibility.spread(TABLE, "butteraugli") == "butteraugli 1.23-3.00 (median 2.00)"
    assert visibility.spread(TABLE.assign(butteraugli=math.nan), "butteraugli") == "butteraugli nan-nan (median nan)"


def test_invisible_parts_test_jod_and_butteraugli_where_it_was_measured():
    jod_part, butter_part = visibility.invisible_parts(TABLE)
    assert (jod_part.statement, jod_part.threshold, jod_part.direction) == ("median JOD", metrics.INVISIBLE_JOD, ">=")
    assert (butter_part.threshold, butter_part.direction) == (metrics.INVISIBLE_BUTTERAUGLI, "<=")
    assert butter_part.evidence.value == 2.0 and butter_part.verdict == "inconclusive (n = 3)"  # too few for 95 %
    _, six = visibility.invisible_parts(pd.concat([TABLE, TABLE], ignore_index=True))
    assert six.evidence.value == 2.0 and six.verdict == "not"
    assert len(visibility.invisible_parts(TABLE.assign(butteraugli=math.nan))) == 1


def test_less_visible_parts_compare_jod_gain_and_butteraugli_ratio_pair_by_pair():
    worse = pd.DataFrame({"JOD": [9.0, 9.5, 9.6], "butteraugli": [2.468, 6.0, 4.0]})
    gain, ratio = visibility.less_visible_parts(TABLE, worse, ("thin", "l2"))
    assert gain.statement == "median JOD gain of thin over l2" and (gain.threshold, gain.direction) == (0.0, ">=")
    assert gain.evidence.value == pytest.approx(0.4)
    assert ratio.statement == "median butteraugli ratio thin / l2" and (ratio.threshold, ratio.direction) == (1.0, "<=")
    assert ratio.evidence.value == pytest.approx(0.5)
    assert len(visibility.less_visible_parts(TABLE, worse.assign(butteraugli=math.nan), ("thin", "l2"))) == 1


def test_exported_from_the_package():
    assert vq.visibility is visibility
    for name in ("butteraugli", "butteraugli_available", "jod", "visibility_table", "equal_energy_noise",
                 "VisibilityUnavailable", "VisibilityToolError"):
        assert getattr(vq, name) is getattr(visibility, name)
