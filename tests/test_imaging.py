"""Image loading: every supported format and mode ends as RGB uint8, bad files raise ImageError."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import tifffile
from PIL import Image

from gastricvision.errors import ImageError
from gastricvision.imaging import ImageLimits, load_image
from tests.helpers import encode, png_bytes, read_rgb


@pytest.fixture(scope="module")
def tile(gashissdb_tile) -> np.ndarray:
    return read_rgb(gashissdb_tile)


def patched_png_header(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares ``width`` x ``height`` pixels (a decompression bomb)."""
    data = png_bytes(np.zeros((1, 1, 3), np.uint8))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    start = data.index(b"IHDR")
    return data[: start] + chunk + struct.pack(">I", zlib.crc32(chunk)) + data[start + 4 + 13 + 4 :]


# --------------------------------------------------------------------------- real tiles


def test_loads_gashissdb_png(gashissdb_tile):
    image = load_image(gashissdb_tile)
    assert image.array.shape == (160, 160, 3)
    assert image.array.dtype == np.uint8
    assert image.format == "PNG"
    assert image.warnings == []


def test_loads_gchtid_png(gchtid_tile):
    image = load_image(gchtid_tile)
    assert image.array.shape == (224, 224, 3)


def test_loads_nct_jpeg(jpeg_tile):
    image = load_image(jpeg_tile)
    assert image.format == "JPEG"
    assert image.array.shape == (224, 224, 3)


def test_loads_nct_tiff(tiff_tile):
    image = load_image(tiff_tile)
    assert image.format == "TIFF"
    assert image.array.ndim == 3 and image.array.shape[2] == 3


def test_bytes_and_path_give_same_pixels(gashissdb_tile):
    from_path = load_image(gashissdb_tile)
    from_bytes = load_image(gashissdb_tile.read_bytes(), name="upload.png")
    assert np.array_equal(from_path.array, from_bytes.array)
    assert from_path.sha256 == from_bytes.sha256
    assert from_bytes.name == "upload.png"


# --------------------------------------------------------------------------- legitimate variants


def test_rgba_transparent_becomes_white(tile):
    rgba = np.dstack([tile, np.full(tile.shape[:2], 255, np.uint8)])
    rgba[:10, :10, 3] = 0
    image = load_image(png_bytes(rgba), name="rgba.png")
    assert image.array[0, 0].tolist() == [255, 255, 255]
    assert np.array_equal(image.array[50:, 50:], tile[50:, 50:])
    assert [w.code for w in image.warnings] == ["transparency"]


def test_la_composited_on_white():
    grey = np.full((32, 32), 100, np.uint8)
    alpha = np.full((32, 32), 255, np.uint8)
    alpha[0, 0] = 0
    data = encode(Image.fromarray(np.dstack([grey, alpha]), "LA"), "PNG")
    image = load_image(data, name="la.png")
    assert image.array[0, 0].tolist() == [255, 255, 255]
    assert image.array[5, 5].tolist() == [100, 100, 100]


def test_palette_with_transparency(tile):
    palette = Image.fromarray(tile).convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    palette.info["transparency"] = palette.getpixel((0, 0))
    data = encode(palette, "PNG", transparency=palette.getpixel((0, 0)))
    image = load_image(data, name="palette.png")
    assert image.array[0, 0].tolist() == [255, 255, 255]
    assert image.array.shape == (160, 160, 3)


def test_greyscale_and_1bit_become_rgb(tile):
    for mode in ("L", "1"):
        data = encode(Image.fromarray(tile).convert(mode), "PNG")
        image = load_image(data, name=f"{mode}.png")
        assert image.array.shape == (160, 160, 3)
        assert np.array_equal(image.array[..., 0], image.array[..., 2])


def test_cmyk_jpeg_converted(tile):
    data = encode(Image.fromarray(tile).convert("CMYK"), "JPEG", quality=95)
    image = load_image(data, name="cmyk.jpg")
    assert image.source_mode == "CMYK"
    assert np.abs(image.array.astype(int) - tile.astype(int)).mean() < 6


def test_png_16bit_grey_scaled():
    values = np.full((32, 32), 65535, np.uint16)
    values[0, 0] = 0
    data = encode(Image.fromarray(values), "PNG")
    image = load_image(data, name="grey16.png")
    assert image.array[1, 1].tolist() == [255, 255, 255]
    assert image.array[0, 0].tolist() == [0, 0, 0]


def test_tiff_16bit_rgb_scaled(tile, tmp_path):
    path = tmp_path / "rgb16.tif"
    tifffile.imwrite(path, tile.astype(np.uint16) * 257, photometric="rgb")
    image = load_image(path)
    assert image.format == "TIFF"
    assert np.array_equal(image.array, tile)


def test_tiff_float_rgb_scaled(tile, tmp_path):
    path = tmp_path / "float.tif"
    tifffile.imwrite(path, tile.astype(np.float32) / 255.0, photometric="rgb")
    image = load_image(path)
    assert np.abs(image.array.astype(int) - tile.astype(int)).max() <= 1


def test_exif_orientation_applied(tile):
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    data = encode(Image.fromarray(tile[:, :120]), "JPEG", quality=95, exif=exif)
    image = load_image(data, name="rotated.jpg")
    assert image.array.shape == (120, 160, 3)
    expected = np.rot90(tile[:, :120], k=-1)
    assert np.abs(image.array.astype(int) - expected.astype(int)).mean() < 6


def test_multiframe_gif_uses_first_frame(tile):
    frames = [Image.fromarray(tile), Image.fromarray(255 - tile)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    image = load_image(data, name="animated.gif")
    assert image.frames == 2
    assert [w.code for w in image.warnings] == ["multi_frame"]
    assert np.abs(image.array.astype(int) - tile.astype(int)).mean() < 20


def test_multipage_tiff_uses_first_page(tile, tmp_path):
    path = tmp_path / "pages.tif"
    tifffile.imwrite(path, np.stack([tile, 255 - tile]), photometric="rgb")
    image = load_image(path)
    assert image.frames == 2
    assert np.array_equal(image.array, tile)
    assert "multi_frame" in [w.code for w in image.warnings]


def test_bmp_loads(tile):
    image = load_image(encode(Image.fromarray(tile), "BMP"), name="tile.bmp")
    assert np.array_equal(image.array, tile)


# --------------------------------------------------------------------------- bad input


def test_rejects_zero_bytes(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(ImageError, match=r"empty\.png: file is empty"):
        load_image(path)


def test_rejects_truncated_png(gashissdb_tile):
    data = gashissdb_tile.read_bytes()
    with pytest.raises(ImageError, match=r"cut\.png: .*truncated or corrupt"):
        load_image(data[: len(data) // 2], name="cut.png")


def test_rejects_truncated_jpeg(jpeg_tile):
    data = jpeg_tile.read_bytes()
    with pytest.raises(ImageError, match=r"cut\.jpg: .*truncated or corrupt"):
        load_image(data[: len(data) // 3], name="cut.jpg")


def test_rejects_truncated_tiff(tiff_tile):
    data = tiff_tile.read_bytes()
    with pytest.raises(ImageError, match=r"cut\.tif"):
        load_image(data[: len(data) // 3], name="cut.tif")


def test_rejects_text_named_png(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("<html><body>not an image</body></html>")
    with pytest.raises(ImageError, match=r"notes\.png: not a recognised image file.*save it as PNG"):
        load_image(path)


def test_rejects_decompression_bomb_before_decoding():
    data = patched_png_header(100_000, 100_000)
    assert len(data) < 200
    with pytest.raises(ImageError, match=r"bomb\.png: image is 100000x100000 px .*megapixel limit"):
        load_image(data, name="bomb.png")


def test_rejects_file_over_byte_limit(gashissdb_tile):
    limits = ImageLimits(max_bytes=1000)
    with pytest.raises(ImageError, match=r"MiB limit"):
        load_image(gashissdb_tile, limits=limits)


def test_rejects_too_small_image():
    with pytest.raises(ImageError, match=r"tiny\.png: image is only 2x2 px"):
        load_image(png_bytes(np.zeros((2, 2, 3), np.uint8)), name="tiny.png")


def test_rejects_missing_file(tmp_path):
    with pytest.raises(ImageError, match=r"missing\.png: file not found"):
        load_image(tmp_path / "missing.png")


def test_rejects_folder(tmp_path):
    with pytest.raises(ImageError, match=r"is a folder"):
        load_image(tmp_path)
