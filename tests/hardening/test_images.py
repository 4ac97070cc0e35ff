"""Damaged and unusual images: each is converted properly or refused with a DataError naming the
file, what is wrong and the fix, through load_image, the ImageTransform and the manifest reader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _corpus import GOOD, image_bytes, jsonl, png_header_only
from PIL import Image

from mmdistill.data.datasets.manifest import read_manifest
from mmdistill.data.transforms import image as image_mod
from mmdistill.data.transforms.image import MAX_IMAGE_PIXELS, ImageTransform, load_image
from mmdistill.errors import DataError


def _rgb_png() -> bytes:
    return image_bytes(Image.fromarray(np.arange(48, dtype=np.uint8).reshape(4, 4, 3)), "PNG")


def _exif_rotated() -> bytes:
    img = Image.fromarray(np.arange(8, dtype=np.uint8).reshape(2, 4) * 30)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    return image_bytes(img, "JPEG", exif=exif, quality=100)


def _gif_animated() -> bytes:
    frames = [Image.new("RGB", (3, 3), c) for c in ((255, 0, 0), (0, 255, 0))]
    return image_bytes(frames[0], "GIF", save_all=True, append_images=frames[1:])


def _palette(**kw: int) -> bytes:
    img = Image.new("P", (2, 2), 1)
    img.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    return image_bytes(img, "PNG", **kw)


def _palette_transparent() -> bytes:
    return _palette(transparency=1)


# name -> (file bytes, file name, expected array shape, a check on the decoded uint8 array)
WORKS = {
    "1x1": (
        image_bytes(Image.new("RGB", (1, 1), (10, 20, 30)), "PNG"),
        "a.png",
        (1, 1, 3),
        lambda a: a.tolist() == [[[10, 20, 30]]],
    ),
    "cmyk": (
        image_bytes(Image.new("CMYK", (3, 2), (0, 255, 255, 0)), "TIFF"),
        "a.tif",
        (2, 3, 3),
        lambda a: (a == [255, 0, 0]).all(),
    ),
    "cmyk_jpeg": (
        image_bytes(Image.new("CMYK", (8, 8), (0, 0, 0, 0)), "JPEG", quality=100),
        "a.jpg",
        (8, 8, 3),
        lambda a: (a >= 250).all(),
    ),
    "16bit_grey": (
        image_bytes(Image.fromarray(np.array([[0, 25700, 65535]], dtype=np.uint16)), "PNG"),
        "a.png",
        (1, 3),
        lambda a: a.tolist() == [[0, 100, 255]],
    ),
    "palette": (_palette(), "a.png", (2, 2, 3), lambda a: (a == [200, 100, 50]).all()),
    "palette_transparent": (_palette_transparent(), "a.png", (2, 2, 3), lambda a: (a == 0).all()),
    "rgba_half": (
        image_bytes(Image.new("RGBA", (2, 2), (255, 0, 0, 128)), "PNG"),
        "a.png",
        (2, 2, 3),
        lambda a: (a == [128, 0, 0]).all(),
    ),
    "grey_alpha": (
        image_bytes(Image.new("LA", (2, 2), (200, 0)), "PNG"),
        "a.png",
        (2, 2),
        lambda a: (a == 0).all(),
    ),
    "grey": (image_bytes(Image.new("L", (3, 2), 77), "PNG"), "a.png", (2, 3), lambda a: (a == 77).all()),
    "1bit": (image_bytes(Image.new("1", (2, 2), 1), "PNG"), "a.png", (2, 2), lambda a: (a == 255).all()),
    "float_nan_inf": (
        image_bytes(Image.fromarray(np.array([[np.nan, 0.5], [np.inf, -np.inf]], np.float32)), "TIFF"),
        "a.tif",
        (2, 2),
        lambda a: a.tolist() == [[0, 128], [255, 0]],
    ),
    "png_named_jpg": (_rgb_png(), "a.jpg", (4, 4, 3), lambda a: a[0, 0].tolist() == [0, 1, 2]),
    "exif_rotated": (_exif_rotated(), "a.jpg", (4, 2), lambda a: a.dtype == np.uint8),
    "very_tall": (
        image_bytes(Image.new("L", (1, 5000), 9), "PNG"),
        "a.png",
        (5000, 1),
        lambda a: (a == 9).all(),
    ),
    "animated_gif": (_gif_animated(), "a.gif", (3, 3, 3), lambda a: (a[0, 0] == [255, 0, 0]).all()),
}


@pytest.mark.parametrize("case", sorted(WORKS))
def test_unusual_images_are_converted(tmp_path: Path, case: str) -> None:
    data, name, shape, check = WORKS[case]
    path = tmp_path / name
    path.write_bytes(data)
    arr = load_image(path)
    assert arr.dtype == np.uint8 and arr.shape == shape and check(arr), arr
    for channels in (1, 3):
        x = ImageTransform(size=8, channels=channels)(arr)
        assert x.shape == (channels, 8, 8) and bool(x.isfinite().all())


def _truncated_png() -> bytes:
    data = image_bytes(
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), np.uint8)), "PNG"
    )
    return data[: len(data) // 2]


# name -> (file bytes, a piece of the expected message)
BROKEN = {
    "empty": (b"", "cannot identify image file"),
    "truncated_png": (_truncated_png(), "truncated"),
    "truncated_jpeg": (
        image_bytes(Image.new("RGB", (64, 64), (1, 2, 3)), "JPEG")[:200],
        "corrupt or unsupported",
    ),
    "text_named_png": (b"just some text\n", "cannot identify image file"),
    "wav_named_png": (b"RIFF$\x00\x00\x00WAVEfmt \x10\x00\x00\x00", "cannot identify image file"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_damaged_images_name_the_file_and_the_fix(tmp_path: Path, case: str) -> None:
    data, piece = BROKEN[case]
    path = tmp_path / f"{case}.png"
    path.write_bytes(data)
    with pytest.raises(DataError) as info:
        load_image(path)
    msg = str(info.value)
    assert info.value.path == str(path) and msg.startswith(f"{path}: corrupt or unsupported image (")
    assert piece in msg and msg.endswith("re-export it as PNG or JPEG")


def test_zero_width_header_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="corrupt or unsupported image"):
        load_image(png_header_only(tmp_path / "zero.png", 0, 10))


def test_decompression_bombs_are_refused_from_the_header(tmp_path: Path) -> None:
    # Over our limit but under Pillow's error level: Pillow would only warn, then decode 100 MB.
    mid = png_header_only(tmp_path / "mid.png", 10_000, 10_000)
    assert mid.stat().st_size < 200
    with pytest.raises(DataError) as info:
        load_image(mid)
    assert str(info.value) == (
        f"{mid}: image is 10000 x 10000 = 100,000,000 pixels, more than the {MAX_IMAGE_PIXELS:,} allowed "
        "(decompression-bomb guard); downscale it (the model sees a small square anyway)"
    )
    # Far over: Pillow refuses it itself; still a DataError with the fix.
    huge = png_header_only(tmp_path / "huge.png", 100_000, 100_000)
    with pytest.raises(
        DataError,
        match=r"huge.png: image too large to decode \(.*decompression bomb.*\); "
        r"downscale it to at most 89,478,485 pixels",
    ):
        load_image(huge)


def test_the_pixel_limit_is_the_module_constant(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "a.png"
    path.write_bytes(image_bytes(Image.new("L", (10, 10)), "PNG"))
    monkeypatch.setattr(image_mod, "MAX_IMAGE_PIXELS", 99)
    with pytest.raises(DataError, match=r"10 x 10 = 100 pixels, more than the 99 allowed"):
        load_image(path)


def test_manifest_reports_bad_images_per_row_and_skips_exactly_them(ds: Path) -> None:
    (ds / "img" / "cmyk.tif").write_bytes(WORKS["cmyk"][0])
    (ds / "img" / "trunc.png").write_bytes(_truncated_png())
    png_header_only(ds / "img" / "bomb.png", 10_000, 10_000)
    rows = [
        GOOD,
        {"id": "c", "image": "img/cmyk.tif", "label": "a", "split": "train"},
        {"id": "t", "image": "img/trunc.png", "label": "a", "split": "train"},
        {"id": "b", "image": "img/bomb.png", "label": "a", "split": "val"},
    ]
    path = jsonl(ds, rows)
    with pytest.raises(DataError) as info:
        read_manifest(path, progress=False)
    assert str(info.value).startswith(
        f"{path}, row 3: corrupt image: image 'img/trunc.png': corrupt or "
        "unsupported image (OSError: image file is truncated"
    )
    md = read_manifest(path, on_error="skip", progress=False)
    assert [r.id for r in md.records] == ["good", "c"] and md.records[1].image.shape == (2, 3, 3)
    assert [(s.row, s.id, s.kind) for s in md.skipped] == [
        (3, "t", "corrupt image"),
        (4, "b", "corrupt image"),
    ]
    assert "10000 x 10000 = 100,000,000 pixels" in md.skipped[1].reason
    assert md.skip_counts() == {"corrupt image": [3, 4]}
