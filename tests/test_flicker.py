"""The flicker test: an animated PNG that alternates a source and its matched image at 1x and 2x, exactly."""
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from vitequiv import figures, metrics
from vitequiv.figures import FLICKER_GAP, FLICKER_LABEL_HEIGHT
from vitequiv.run import index


def images(h: int = 12, w: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    """A random source (3, H, W) and a slightly changed copy, neither on the 8-bit grid."""
    source = torch.rand(3, h, w, generator=torch.Generator().manual_seed(0))
    return source, (source + 0.02 * torch.randn(3, h, w, generator=torch.Generator().manual_seed(1))).clamp(0, 1)


def frames(data: bytes) -> list[tuple[np.ndarray, float]]:
    """Every frame of an animated PNG as decoded pixels (rows, columns, 3) and its duration in ms."""
    png = Image.open(io.BytesIO(data))
    assert png.format == "PNG" and png.info["loop"] == 0, "an animated PNG that loops forever"
    out = []
    for i in range(png.n_frames):
        png.seek(i)
        out.append((np.array(png.convert("RGB")), png.info["duration"]))
    return out


def expected_8bit(image: torch.Tensor) -> np.ndarray:
    """The 8-bit pixels (H, W, 3) the flicker must show, from vq.metrics.quantize_8bit."""
    return (metrics.quantize_8bit(image) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def test_frames_hold_the_exact_8bit_pixels_at_1x_and_2x():
    source, match = images()
    data = figures.flicker(source, match, interval_ms=550)
    assert b"acTL" in data and b"GIF" not in data[:6]
    decoded = frames(data)
    assert len(decoded) == 2 and [d for _, d in decoded] == [550, 550]
    h, w = source.shape[1:]
    for (pixels, _), image in zip(decoded, (source, match)):
        assert pixels.shape == (FLICKER_LABEL_HEIGHT + 2 * h, 3 * w + FLICKER_GAP, 3)
        exact = expected_8bit(image)
        one = pixels[FLICKER_LABEL_HEIGHT:FLICKER_LABEL_HEIGHT + h, :w]
        two = pixels[FLICKER_LABEL_HEIGHT:, w + FLICKER_GAP:]
        np.testing.assert_array_equal(one, exact)
        np.testing.assert_array_equal(two[::2, ::2], exact)
        np.testing.assert_array_equal(two, exact.repeat(2, 0).repeat(2, 1))
    labels = [pixels[:FLICKER_LABEL_HEIGHT] for pixels, _ in decoded]
    assert not np.array_equal(*labels), "the label says which image is shown"
    assert (labels[0] < 128).any(), "the label is drawn"


def test_identical_images_still_give_two_frames_and_other_zooms_work():
    source, _ = images(8, 8)
    decoded = frames(figures.flicker(source, source.numpy().astype(np.float64), labels=("A", "B"), zooms=(1, 2, 4),
                                     interval_ms=700))
    assert len(decoded) == 2 and decoded[0][1] == 700
    pixels = decoded[1][0]
    assert pixels.shape == (FLICKER_LABEL_HEIGHT + 32, 8 + 16 + 32 + 2 * FLICKER_GAP, 3)
    np.testing.assert_array_equal(pixels[FLICKER_LABEL_HEIGHT:, -32:][::4, ::4], expected_8bit(source))


@pytest.mark.parametrize("change, error, fragment", [
    (lambda s, m: (s[None].repeat(2, 1, 1, 1), m), ValueError, r"source must be one image \(1, 3, H, W\)"),
    (lambda s, m: (s, m[:, :6]), ValueError, "same shape"),
    (lambda s, m: (s, m.permute(1, 2, 0)), ValueError, "match"),
    (lambda s, m: (s, torch.where(m > 0.5, torch.nan, m)), ValueError, "match"),
    (lambda s, m: (s, m * 255), ValueError, "divide by 255"),
    (lambda s, m: ((s * 255).to(torch.uint8), m), TypeError, "x.float"),
])
def test_bad_input_is_named(change, error, fragment):
    with pytest.raises(error, match=fragment):
        figures.flicker(*change(*images()))


@pytest.mark.parametrize("options, fragment", [
    ({"zooms": ()}, "zooms"), ({"zooms": (1, 1.5)}, "zooms"), ({"zooms": (0,)}, "zooms"),
    ({"labels": ("same", "same")}, "labels"), ({"interval_ms": 0}, "interval_ms"),
    ({"interval_ms": 0.5}, "interval_ms"),
])
def test_bad_options_are_named(options, fragment):
    with pytest.raises(ValueError, match=fragment):
        figures.flicker(*images(), **options)


def test_output_flicker_writes_atomically_and_records_a_figure(tmp_path, monkeypatch):
    out = figures.Output("nb", root=tmp_path)
    source, match = images()
    path = out.flicker(source, match, "flicker_0", "source and match", interval_ms=500)
    assert path == tmp_path / "flicker_0.png"
    assert path.read_bytes() == figures.flicker(source, match, interval_ms=500)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["figures"]["flicker_0"] == {"files": ["flicker_0.png"], "caption": "source and match"}

    def disk_full(self, data):
        raise OSError("disk full")

    monkeypatch.setattr(type(path), "write_bytes", disk_full)
    with pytest.raises(OSError):
        out.flicker(source, match, "flicker_1", "never written")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flicker_0.png", "manifest.json"]
    assert "flicker_1" not in json.loads((tmp_path / "manifest.json").read_text())["figures"]
    with pytest.raises(ValueError, match="same shape"):
        out.flicker(source, match[:, :4], "flicker_2", "bad")
    assert not (tmp_path / "flicker_2.png").exists()


def test_output_flicker_shows_the_apng_bytes_unchanged_in_ipython(tmp_path, monkeypatch):
    shown = []
    monkeypatch.setattr("IPython.get_ipython", lambda: object())
    monkeypatch.setattr("IPython.display.display", lambda obj: shown.append(obj))
    path = figures.Output("nb", root=tmp_path).flicker(*images(), "f", "cap")
    assert len(shown) == 1 and shown[0].data == path.read_bytes() and shown[0].format == "png"


def test_the_figure_index_lists_a_flicker(tmp_path):
    out = figures.Output("01_x", root=tmp_path / "01_x")
    out.flicker(*images(), "flicker_0_cat", "Flicker test, cat -> rocket")
    readme = index.render_readme(index.collect_index(tmp_path))
    assert "- figure [flicker_0_cat](01_x/flicker_0_cat.png): Flicker test, cat -> rocket" in readme
    [entry] = index.collect_index(tmp_path)["notebooks"]
    assert entry["figures"] == [{"name": "flicker_0_cat", "caption": "Flicker test, cat -> rocket",
                                 "files": ["flicker_0_cat.png"]}]
