"""Image decoding (every Pillow mode we convert) and ImageTransform numerics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mmdistill.data.transforms.image import ImageTransform, load_image
from mmdistill.errors import DataError


def _save(img: Image.Image, path: Path) -> Path:
    img.save(path)
    return path


def test_load_grey_png_exact(tmp_path: Path) -> None:
    arr = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    out = load_image(_save(Image.fromarray(arr), tmp_path / "g.png"))
    assert out.dtype == np.uint8 and out.shape == (3, 4)
    np.testing.assert_array_equal(out, arr)


def test_load_rgb_png_exact(tmp_path: Path) -> None:
    arr = np.random.default_rng(0).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    out = load_image(_save(Image.fromarray(arr), tmp_path / "c.png"))
    np.testing.assert_array_equal(out, arr)


def test_load_rgba_composites_onto_black(tmp_path: Path) -> None:
    arr = np.zeros((2, 2, 4), dtype=np.uint8)
    arr[0, 0] = (200, 100, 50, 255)  # opaque: kept
    arr[0, 1] = (200, 100, 50, 0)  # transparent: black
    arr[1, 0] = (200, 100, 50, 128)  # half: scaled by 128/255
    out = load_image(_save(Image.fromarray(arr), tmp_path / "a.png"))
    assert out.shape == (2, 2, 3)
    np.testing.assert_array_equal(out[0, 0], [200, 100, 50])
    np.testing.assert_array_equal(out[0, 1], [0, 0, 0])
    np.testing.assert_allclose(out[1, 0], np.array([200, 100, 50]) * 128 / 255, atol=1)


def test_load_palette_and_cmyk(tmp_path: Path) -> None:
    pal = Image.new("P", (3, 2))
    pal.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    pal.putpixel((1, 0), 1)
    out = load_image(_save(pal, tmp_path / "p.png"))
    assert out.shape == (2, 3, 3)
    np.testing.assert_array_equal(out[0, 1], [10, 20, 30])
    cmyk = Image.new("CMYK", (4, 4), (0, 255, 255, 0))  # pure red in CMYK
    out = load_image(_save(cmyk, tmp_path / "k.tiff"))
    np.testing.assert_array_equal(out[0, 0], [255, 0, 0])


def test_load_16bit_png_scales_to_8bit(tmp_path: Path) -> None:
    arr = np.array([[0, 257 * 100, 65535]], dtype=np.uint16)
    out = load_image(_save(Image.fromarray(arr), tmp_path / "d.png"))
    assert out.dtype == np.uint8 and out.shape == (1, 3)
    np.testing.assert_array_equal(out, [[0, 100, 255]])


def test_load_missing_and_corrupt_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found") as e:
        load_image(tmp_path / "nope.png")
    assert "nope.png" in str(e.value)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(DataError, match="corrupt or unsupported image") as e:
        load_image(bad)
    assert "bad.png" in str(e.value) and e.value.path == str(bad)


def test_transform_normalizes_constant_image() -> None:
    img = np.full((10, 7), 128, dtype=np.uint8)
    out = ImageTransform(size=28, channels=1, mean=0.5, std=0.25)(img)
    assert out.dtype == torch.float32 and out.shape == (1, 28, 28)
    torch.testing.assert_close(out, torch.full((1, 28, 28), (128 / 255 - 0.5) / 0.25))


def test_transform_channel_conversion_and_per_channel_stats() -> None:
    red = np.zeros((4, 4, 3), dtype=np.uint8)
    red[..., 0] = 255
    grey = ImageTransform(size=4, channels=1, mean=0.0, std=1.0)(red)
    # Pillow's ITU-R 601 luma: L = R * 299/1000 → 76.
    torch.testing.assert_close(grey, torch.full((1, 4, 4), 76 / 255))
    t = ImageTransform(size=2, channels=3, mean=[0.0, 0.5, 1.0], std=[1.0, 0.5, 0.25])
    out = t(np.full((2, 2), 255, dtype=np.uint8))  # grey → RGB repeats the channel
    assert out.shape == (3, 2, 2)
    torch.testing.assert_close(out[:, 0, 0], torch.tensor([1.0, 1.0, 0.0]))


def test_transform_resize_keeps_pattern() -> None:
    img = np.zeros((8, 8), dtype=np.uint8)
    img[:, 4:] = 255  # left half black, right half white
    out = ImageTransform(size=4, mean=0.0, std=1.0)(img)[0]
    assert out[:, 0].max() < 0.1 and out[:, 3].min() > 0.9


def test_transform_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="channels"):
        ImageTransform(channels=2)
    with pytest.raises(ValueError, match="std"):
        ImageTransform(std=0.0)
    with pytest.raises(ValueError, match="mean"):
        ImageTransform(channels=3, mean=[0.1, 0.2])
    with pytest.raises(TypeError, match="uint8"):
        ImageTransform()(np.zeros((4, 4), dtype=np.float32))
