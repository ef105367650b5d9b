"""Image files read as they mean themselves: every Pillow mode by its true range, EXIF orientation, frames,
unique names, bad arguments and bad files named, decompression bombs, and memory on huge files."""
import io
import json
import struct
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from vitequiv import images

G8 = (np.arange(24).reshape(4, 6) * 11).astype(np.uint8)  # (4, 6) gray ramp 0..253
RGB8 = np.stack([G8, 255 - G8, (G8.astype(int) * 7 % 256).astype(np.uint8)], -1)  # (4, 6, 3)
A8 = np.array([0, 255, 128, 64, 200, 30] * 4, np.uint8).reshape(4, 6)  # alpha, fully clear to fully opaque
CHECKER = (np.indices((4, 6)).sum(0) % 2).astype(bool)  # (4, 6)
PALETTE = np.array([[0, 0, 0], [255, 0, 0], [0, 128, 255], [250, 250, 10], [40, 90, 30], [255, 255, 255]], np.uint8)
INDEX = (np.arange(24).reshape(4, 6) % 6).astype(np.uint8)  # (4, 6) palette indices
V16 = (np.arange(24).reshape(4, 6) * 2800).astype(np.uint16)  # 0..64400


def gray(v: np.ndarray) -> np.ndarray:
    return np.repeat(np.asarray(v, float)[..., None], 3, -1)  # (H, W, 3)


def over_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha[..., None] / 255
    return rgb / 255 * a + (1 - a)


def palette_image(alpha: bool = False) -> Image.Image:
    image = Image.fromarray(INDEX, "L").convert("P")
    image.putpalette(PALETTE.ravel().tolist())
    if alpha:
        image = image.convert("PA")
        image.putalpha(Image.fromarray(A8, "L"))
    return image


def tiff_12bit(path, values: np.ndarray) -> None:
    """A hand-written uncompressed 12-bit gray TIFF (Pillow cannot write one; scanners and cameras do)."""
    h, w = values.shape
    bits = "".join(f"{v:012b}" + "0" * (-12 * w % 8) * (i % w == w - 1) for i, v in enumerate(values.ravel()))
    data = int(bits, 2).to_bytes(len(bits) // 8, "big")
    tags = [(256, 3, w), (257, 3, h), (258, 3, 12), (259, 3, 1), (262, 3, 1), (273, 4, 0), (277, 3, 1),
            (278, 3, h), (279, 4, len(data))]
    offset = 8 + 2 + 12 * len(tags) + 4
    ifd = b"".join(struct.pack("<HHI", t, k, 1) + (struct.pack("<HH", v, 0) if k == 3 else
                   struct.pack("<I", offset if t == 273 else v)) for t, k, v in tags)
    path.write_bytes(b"II*\x00" + struct.pack("<IH", 8, len(tags)) + ifd + struct.pack("<I", 0) + data)


def save(image: Image.Image, fmt: str, **kwargs):
    """A writer for the table: saves ``image`` as ``fmt`` into the given path."""
    return lambda path: image.save(path, fmt, **kwargs)


def tifffile_writer(array: np.ndarray):
    def write(path):
        pytest.importorskip("tifffile").imwrite(path, array)

    return write


def jpeg_blocks(mode: str) -> tuple[Image.Image, np.ndarray]:
    """A 16x24 image of flat 8x8 blocks (so JPEG keeps them close) and its 8-bit block values."""
    blocks = {"L": G8[:2, :3, None] + 1, "RGB": RGB8[:2, :3],
              "CMYK": np.stack([G8[:2, :3], 255 - G8[:2, :3], G8[:2, :3] // 2, G8[:2, :3] // 4], -1)}[mode]
    full = np.kron(blocks, np.ones((8, 8, 1), np.uint8)).astype(np.uint8)
    return Image.fromarray(full[..., 0] if mode == "L" else full, mode), full


def cmyk_to_rgb(cmyk: np.ndarray) -> np.ndarray:
    c = cmyk / 255
    return (1 - c[..., :3]) * (1 - c[..., 3:])


YCC = np.stack([G8, np.full_like(G8, 90), (G8 // 2 + 100).astype(np.uint8)], -1)  # (4, 6, 3) Y, Cb, Cr
YCC_RGB = np.clip(np.stack([YCC[..., 0] + 1.402 * (YCC[..., 2] - 128.0),
                            YCC[..., 0] - 0.344136 * (YCC[..., 1] - 128.0) - 0.714136 * (YCC[..., 2] - 128.0),
                            YCC[..., 0] + 1.772 * (YCC[..., 1] - 128.0)], -1), 0, 255) / 255
LAB = np.stack([G8, np.array([0, 20, 236, 0, 0, 10] * 4, np.uint8).reshape(4, 6),
                np.array([0, 230, 30, 0, 0, 250] * 4, np.uint8).reshape(4, 6)], -1)  # a*, b* as int8 bytes


def lab_expected() -> np.ndarray:
    from skimage.color import lab2rgb

    lab = np.stack([LAB[..., 0] / 255 * 100, LAB[..., 1].view(np.int8), LAB[..., 2].view(np.int8)], -1)
    return lab2rgb(lab.astype(float))


I32 = (np.arange(24).reshape(4, 6).astype(np.int64) * 180_000_000 - 2**31).astype(np.int32)
U32 = (np.arange(24).reshape(4, 6).astype(np.uint64) * 180_000_000).astype(np.uint32)
I16S = (np.arange(24).reshape(4, 6) * 2800 - 32768).astype(np.int16)
F32 = (np.arange(24).reshape(4, 6) / 23).astype(np.float32)
V12 = (np.arange(24).reshape(4, 6) * 178).astype(np.uint16)  # 0..4094 of 4095
JPEG = dict(quality=95, subsampling=0)
JPEG_L, JPEG_L_VALUES = jpeg_blocks("L")
JPEG_RGB, JPEG_RGB_VALUES = jpeg_blocks("RGB")
JPEG_CMYK, JPEG_CMYK_VALUES = jpeg_blocks("CMYK")

# (file name, writer, Pillow mode the file opens in, expected (H, W, 3) in [0, 1], tolerance)
MODE_TABLE = [
    ("one.png", save(Image.fromarray(CHECKER), "PNG"), "1", gray(CHECKER), 0),
    ("one.tif", save(Image.fromarray(CHECKER), "TIFF"), "1", gray(CHECKER), 0),
    ("gray.png", save(Image.fromarray(G8, "L"), "PNG"), "L", gray(G8 / 255), 0),
    ("gray.tif", save(Image.fromarray(G8, "L"), "TIFF"), "L", gray(G8 / 255), 0),
    ("gray.gif", save(Image.fromarray(G8, "L"), "GIF"), "P", gray(G8 / 255), 0),
    ("gray.webp", save(Image.fromarray(G8, "L"), "WEBP", lossless=True), "RGB", gray(G8 / 255), 0),
    ("gray.jpg", save(JPEG_L, "JPEG", **JPEG), "L", gray(JPEG_L_VALUES[..., 0] / 255), 3 / 255),
    ("rgb.png", save(Image.fromarray(RGB8), "PNG"), "RGB", RGB8 / 255, 0),
    ("rgb.tif", save(Image.fromarray(RGB8), "TIFF"), "RGB", RGB8 / 255, 0),
    ("rgb.webp", save(Image.fromarray(RGB8), "WEBP", lossless=True), "RGB", RGB8 / 255, 0),
    ("rgb.jpg", save(JPEG_RGB, "JPEG", **JPEG), "RGB", JPEG_RGB_VALUES / 255, 3 / 255),
    ("rgba.png", save(Image.fromarray(np.dstack([RGB8, A8])), "PNG"), "RGBA", over_white(RGB8, A8), 0),
    ("rgba.tif", save(Image.fromarray(np.dstack([RGB8, A8])), "TIFF"), "RGBA", over_white(RGB8, A8), 0),
    ("rgba.webp", save(Image.fromarray(np.dstack([RGB8, A8])), "WEBP", lossless=True), "RGBA",
     over_white(RGB8, A8), 0),
    ("la.png", save(Image.fromarray(np.dstack([G8, A8]), "LA"), "PNG"), "LA", over_white(gray(G8), A8), 0),
    ("la.tif", save(Image.fromarray(np.dstack([G8, A8]), "LA"), "TIFF"), "LA", over_white(gray(G8), A8), 0),
    ("palette.png", save(palette_image(), "PNG"), "P", PALETTE[INDEX] / 255, 0),
    ("palette.gif", save(palette_image(), "GIF"), "P", PALETTE[INDEX] / 255, 0),
    ("palette.tif", save(palette_image(), "TIFF"), "P", PALETTE[INDEX] / 255, 0),
    ("keyed.png", save(palette_image(), "PNG", transparency=2), "P",
     np.where((INDEX == 2)[..., None], 1.0, PALETTE[INDEX] / 255), 0),
    ("keyed.gif", save(palette_image(), "GIF", transparency=2), "P",
     np.where((INDEX == 2)[..., None], 1.0, PALETTE[INDEX] / 255), 0),
    ("palette_alpha.tif", save(palette_image(alpha=True), "TIFF"), "PA", over_white(PALETTE[INDEX], A8), 0),
    ("cmyk.tif", save(Image.fromarray(np.dstack([RGB8, G8]), "CMYK"), "TIFF"), "CMYK",
     cmyk_to_rgb(np.dstack([RGB8, G8])), 1 / 255),
    ("cmyk.jpg", save(JPEG_CMYK, "JPEG", quality=95), "CMYK", cmyk_to_rgb(JPEG_CMYK_VALUES), 3 / 255),
    ("ycbcr.tif", save(Image.fromarray(YCC, "YCbCr"), "TIFF"), "YCbCr", YCC_RGB, 1.5 / 255),
    ("lab.tif", save(Image.frombytes("LAB", (6, 4), LAB.tobytes()), "TIFF"), "LAB", lab_expected(), 0.025),
    ("deep.png", save(Image.fromarray(V16), "PNG"), "I;16", gray(V16 / 65535), 0),
    ("deep.tif", save(Image.fromarray(V16), "TIFF"), "I;16", gray(V16 / 65535), 0),
    ("deep_big_endian.tif", save(Image.frombytes("I;16B", (6, 4), V16.astype(">u2").tobytes()), "TIFF"),
     "I;16B", gray(V16 / 65535), 0),
    ("dark16.png", save(Image.fromarray((G8 // 2).astype(np.uint16)), "PNG"), "I;16",
     gray(G8 // 2 / 65535), 0),  # a dark 16-bit image is not an 8-bit one
    ("twelve_bit.tif", lambda path: tiff_12bit(path, V12), "I;16", gray(V12 / 4095), 0),
    ("pgm_4095.pgm", lambda path: path.write_bytes(f"P2\n6 4\n4095\n{' '.join(map(str, V12.ravel()))}\n".encode()),
     "I", gray(V12 / 4095), 1 / 65535),
    ("signed16.tif", tifffile_writer(I16S), "I", gray((I16S + 32768.0) / 65535), 1e-6),
    ("int32.tif", save(Image.fromarray(I32), "TIFF"), "I", gray((I32 + 2.0**31) / (2**32 - 1)), 1e-6),
    ("uint32.tif", tifffile_writer(U32), "I", gray(U32 / (2**32 - 1)), 1e-6),
    ("float.tif", save(Image.fromarray(F32), "TIFF"), "F", gray(F32), 0),
]


@pytest.mark.parametrize("name, write, mode, expected, atol", MODE_TABLE, ids=[row[0] for row in MODE_TABLE])
def test_every_mode_maps_to_unit_range_by_its_declared_depth(tmp_path, name, write, mode, expected, atol):
    path = tmp_path / name
    write(path)
    with Image.open(path) as opened:
        assert opened.mode == mode  # the table covers the mode it says it does
    loaded = images.read_image(path)  # (3, H, W)
    want = torch.as_tensor(expected, dtype=torch.float32).permute(2, 0, 1)
    assert loaded.dtype == torch.float32 and loaded.shape == want.shape
    torch.testing.assert_close(loaded, want, atol=atol + 1e-6, rtol=0)


def test_float_outside_unit_range_is_rescaled_with_a_warning(tmp_path):
    values = np.array([[-2.0, 0.0], [3.0, 8.0]], np.float32)
    Image.fromarray(values).save(tmp_path / "hdr.tif")
    with pytest.warns(UserWarning, match=r"hdr\.tif.*\[-2, 8\].*min-max"):
        loaded = images.read_image(tmp_path / "hdr.tif")
    torch.testing.assert_close(loaded[0], torch.tensor([[0.0, 0.2], [0.5, 1.0]]))


def test_float_with_nan_is_refused_by_name(tmp_path):
    Image.fromarray(np.array([[0.5, np.nan]], np.float32)).save(tmp_path / "holes.tif")
    with pytest.raises(images.ImageLoadError, match=r"holes\.tif.*NaN"):
        images.read_image(tmp_path / "holes.tif")


def test_unsupported_mode_is_named(tmp_path, monkeypatch):
    Image.new("RGB", (4, 4)).save(tmp_path / "odd.png")
    opened = Image.open
    monkeypatch.setattr(Image, "open", lambda source: opened(source).convert("HSV"))  # no file opens as HSV
    with pytest.raises(images.ImageLoadError, match=r"odd\.png.*'HSV'"):
        images.read_image(tmp_path / "odd.png")


# EXIF orientation -> what the viewer shows, per the EXIF specification
ORIENTATIONS = {
    2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1], 5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1), 7: lambda a: np.rot90(a, 2).transpose(1, 0, 2), 8: lambda a: np.rot90(a, 1),
}


@pytest.mark.parametrize("orientation", sorted(ORIENTATIONS))
def test_exif_orientation_is_applied(tmp_path, orientation):
    image = Image.fromarray(RGB8)
    exif = image.getexif()
    exif[0x0112] = orientation
    image.save(tmp_path / "photo.png", exif=exif)
    loaded = images.read_image(tmp_path / "photo.png").permute(1, 2, 0)  # (H, W, 3)
    expected = torch.as_tensor(ORIENTATIONS[orientation](RGB8) / 255, dtype=torch.float32)
    torch.testing.assert_close(loaded, expected)


def test_exif_orientation_survives_downscaled_jpeg_decoding(tmp_path):
    array = np.zeros((320, 480, 3), np.uint8)
    array[:160] = 255  # top half white in the stored pixels
    image = Image.fromarray(array)
    exif = image.getexif()
    exif[0x0112] = 6  # shown rotated 90 degrees clockwise: the white half ends on the right
    image.save(tmp_path / "phone.jpg", exif=exif, quality=90)
    small = images.read_image(tmp_path / "phone.jpg", size=40)  # (3, H, W)
    assert small.shape[1] > small.shape[2]  # portrait after rotation
    assert 80 <= small.shape[2] < 160  # decoded reduced, not at 320 px
    w = small.shape[2]
    assert small[:, :, : w // 2 - 4].mean() < 0.05 and small[:, :, w // 2 + 4 :].mean() > 0.95


def test_multi_frame_files_warn_and_use_the_first_frame(tmp_path):
    frames = [Image.fromarray(np.full((4, 6), v, np.uint8), "L") for v in (30, 120, 240)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    frames[0].save(tmp_path / "pages.tif", save_all=True, append_images=frames[1:2])
    with pytest.warns(UserWarning, match=r"anim\.gif holds 3 frames"):
        gif = images.read_image(tmp_path / "anim.gif")
    with pytest.warns(UserWarning, match=r"pages\.tif holds 2 frames"):
        tif = images.read_image(tmp_path / "pages.tif")
    torch.testing.assert_close(gif, torch.full((3, 4, 6), 30 / 255))
    torch.testing.assert_close(tif, torch.full((3, 4, 6), 30 / 255))


def test_single_frame_files_do_not_warn(tmp_path):
    Image.fromarray(RGB8).save(tmp_path / "still.gif")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        images.read_image(tmp_path / "still.gif")


def test_same_stems_get_unique_names_and_both_credits(tmp_path):
    Image.fromarray(RGB8).save(tmp_path / "cat.png")
    Image.fromarray(RGB8).save(tmp_path / "cat.jpg")
    Image.fromarray(RGB8).save(tmp_path / "dog.png")
    (tmp_path / "._dog.png").write_bytes(b"\x00\x05\x16\x07 macOS resource fork")  # hidden: skipped
    loaded = images.load_images(folder=tmp_path, size=8)
    assert loaded.names == ["cat.jpg", "cat.png", "dog"]
    assert loaded.credits == {"cat.jpg": str(tmp_path / "cat.jpg"), "cat.png": str(tmp_path / "cat.png"),
                              "dog": str(tmp_path / "dog.png")}
    other = tmp_path / "other"
    other.mkdir()
    Image.fromarray(RGB8).save(other / "cat.png")
    twice = images.load_images(["cat"], files=[tmp_path / "cat.png", other / "cat.png"], size=8)
    assert twice.names == ["cat", "cat.png", "cat-2.png"]
    assert twice.credits["cat.png"] == str(tmp_path / "cat.png")
    assert twice.credits["cat-2.png"] == str(other / "cat.png")
    assert twice.credits["cat"] == images.BUNDLED["cat"].credit


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(names="cat"), TypeError, r"\['cat'\]"),
    (dict(names=["cat", 3]), TypeError, r"names\[1\]"),
    (dict(names=["cat", "cat"]), ValueError, r"'cat' more than once"),
    (dict(size=0), ValueError, "size must be a positive int"),
    (dict(size=-3), ValueError, "got -3"),
    (dict(size=2.5), TypeError, "size must be a positive int"),
    (dict(size="224"), TypeError, "size must be a positive int"),
    (dict(size=True), TypeError, "size must be a positive int"),
    (dict(files="cat.png"), TypeError, r"files=\['cat.png'\]"),
    (dict(files=[3]), TypeError, r"files\[0\]"),
    (dict(folder=3), TypeError, "folder must be a path"),
])
def test_bad_arguments_are_refused_at_the_door(kwargs, error, match):
    with pytest.raises(error, match=match):
        images.load_images(**kwargs)


def test_view_set_and_faces_check_their_arguments():
    with pytest.raises(TypeError, match=r"\['cat'\]"):
        images.view_set("cat")
    with pytest.raises(ValueError, match="views_per_image"):
        images.view_set(["cat"], views_per_image=0)
    with pytest.raises(ValueError, match="min_scale"):
        images.view_set(["cat"], min_scale=0)
    with pytest.raises(ValueError, match="size"):
        images.lfw_faces(size=0)


def test_every_bad_file_is_named(tmp_path):
    (tmp_path / "folder.png").mkdir()
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "notes.png").write_text("shopping list")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "a.jpg")
    (tmp_path / "cut.png").write_bytes((tmp_path / "a.png").read_bytes()[:2000])
    (tmp_path / "cut.jpg").write_bytes((tmp_path / "a.jpg").read_bytes()[:1500])
    with pytest.raises(FileNotFoundError, match="missing.png"):
        images.load_images(files=[tmp_path / "missing.png"])
    with pytest.raises(IsADirectoryError, match=r"folder\.png.*folder="):
        images.load_images(files=[tmp_path / "folder.png"])
    with pytest.raises(NotADirectoryError, match=r"a\.png.*files="):
        images.load_images(folder=tmp_path / "a.png")
    for name, why in [("empty.png", "empty"), ("notes.png", "cannot identify"), ("cut.png", ""), ("cut.jpg", "")]:
        with pytest.raises(images.ImageLoadError, match=rf"{name}.*{why}"):
            images.load_images(files=[tmp_path / name])


def test_bytes_and_file_objects_are_read_and_named(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(RGB8).save(buffer, "PNG")
    torch.testing.assert_close(images.read_image(buffer.getvalue(), "upload.png"),
                               torch.as_tensor(RGB8 / 255, dtype=torch.float32).permute(2, 0, 1))
    with pytest.raises(images.ImageLoadError, match="upload.txt"):
        images.read_image(io.BytesIO(b"plain text"), "upload.txt")


def test_decompression_bombs_are_refused_by_name_and_big_images_below_the_limit_load(tmp_path, monkeypatch):
    Image.new("L", (100, 100)).save(tmp_path / "bomb.png")
    Image.new("L", (40, 40), 255).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # bomb above 2000 pixels, Pillow's warning above 1000
    with pytest.raises(images.ImageLoadError, match=r"bomb\.png declares 10,000 pixels.*MAX_IMAGE_PIXELS"):
        images.load_images(files=[tmp_path / "bomb.png"], size=8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DecompressionBombWarning either
        loaded = images.load_images(files=[tmp_path / "big.png"], size=8)
    torch.testing.assert_close(loaded.images, torch.ones(1, 3, 8, 8))


@pytest.mark.parametrize("fmt, mode", [("JPEG", "RGB"), ("PNG", "RGB"), ("PNG", "RGBA"), ("PNG", "I;16")])
def test_downscaled_decoding_matches_full_resolution(tmp_path, fmt, mode):
    y, x = np.mgrid[0:600, 0:900]
    smooth = (127 + 100 * np.sin(x / 70) * np.cos(y / 50)).astype(np.uint8)  # (600, 900)
    array = {"RGB": np.dstack([smooth, smooth[::-1], 255 - smooth]),
             "RGBA": np.dstack([smooth, smooth[::-1], 255 - smooth, smooth[:, ::-1]]),
             "I;16": smooth.astype(np.uint16) * 257}[mode]
    path = tmp_path / f"big.{fmt.lower()}"
    Image.fromarray(array).save(path, fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    reduced = images.read_image(path, size=32)
    assert 64 <= min(reduced.shape[1:]) < 128  # shorter side 600 reduced to within [2, 4) x 32
    fast = images.load_images(files=[path], size=32).images[0]
    full = images.resize_center_crop(images.read_image(path), 32)
    assert (fast - full).abs().max() < 0.03


def test_to_unit_float_uses_the_dtype_range_and_refuses_guessing():
    dark = np.full((2, 2), 200, np.uint16)
    torch.testing.assert_close(images.to_unit_float(dark), torch.full((3, 2, 2), 200 / 65535))
    torch.testing.assert_close(images.to_unit_float(np.ones((2, 2), bool)), torch.ones(3, 2, 2))
    gray_alpha = np.dstack([np.zeros((2, 2), np.uint8), np.full((2, 2), 51, np.uint8)])  # black at 20 % opacity
    torch.testing.assert_close(images.to_unit_float(gray_alpha), torch.full((3, 2, 2), 0.8))
    with pytest.raises(TypeError, match="int64"):
        images.to_unit_float(np.zeros((2, 2), np.int64))
    with pytest.raises(ValueError, match="shape"):
        images.to_unit_float(np.zeros((2, 2, 5), np.uint8))
    with pytest.raises(ValueError, match="NaN"):
        images.to_unit_float(np.full((2, 2), np.nan))


PEAK_SCRIPT = """
import importlib.util, json, resource, sys
spec = importlib.util.spec_from_file_location("images_alone", sys.argv[1])  # the module alone: a fast start
images = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(images)
images.resize_center_crop(images.to_unit_float(images.np.zeros((300, 400, 3), images.np.uint8)), 224)  # warm up
growth = {}
for path in sys.argv[2:]:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    images.load_images(files=[path], size=224)
    growth[path] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024  # Linux: KiB
print(json.dumps(growth))
"""


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is in KiB on Linux only")
def test_huge_files_load_in_bounded_memory(tmp_path):
    """An 8000x8000 photo is 192 MB as 8-bit RGB: the JPEG must decode reduced (well under that), the PNG, which
    cannot, at most about Pillow's own 4-byte-per-pixel copy. Before the fix each took about 3.8 GB."""
    side = 8000
    image = Image.new("RGB", (side, side), (200, 120, 40))
    ImageDraw.Draw(image).rectangle([side // 4, side // 4, side // 2, side // 2], fill=(20, 60, 220))
    image.save(tmp_path / "huge.jpg", quality=90)
    image.save(tmp_path / "huge.png", compress_level=1)
    del image
    eight_bit = side * side * 3
    files = [str(tmp_path / "huge.jpg"), str(tmp_path / "huge.png")]
    run = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, images.__file__, *files],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    growth = json.loads(run.stdout.strip().splitlines()[-1])
    assert growth[files[0]] < 0.25 * eight_bit  # measured 0 to 14 MB
    assert growth[files[1]] < 1.8 * eight_bit  # measured about 250 MB
