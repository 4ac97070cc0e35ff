"""Image decoding and the image transform (resize, channel conversion, normalization).

Decoding (:func:`load_image`) and tensor conversion (:class:`ImageTransform`) are separate so a
dataset can decode once into a :class:`~mmdistill.data.records.RawSample` and a teacher and a
student can each apply their own transform to the same pixels.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from mmdistill.errors import DataError

# Modes Pillow decodes into a single channel; everything else becomes RGB.
_GREY_MODES = {"1", "L", "LA", "La", "I", "F"}

MAX_IMAGE_PIXELS = 89_478_485
"""Largest image :func:`load_image` decodes, in pixels (width x height): Pillow's own warning level,
about 9459 x 9459 (268 MB as RGB). A larger one is refused from its header, before any pixel is
decoded: a few-KB PNG can declare 100000 x 100000 pixels (a decompression bomb)."""


def _to_uint8_grey(img: Image.Image) -> np.ndarray:
    """Grey image of any bit depth → uint8 ``[H, W]``."""
    if img.mode in ("LA", "La"):
        # Composite onto black: transparent pixels become background (0), as in MNIST-style data.
        grey = np.array(img.getchannel("L"), dtype=np.float32)
        alpha = np.array(img.getchannel("A"), dtype=np.float32) / 255.0
        return np.round(grey * alpha).astype(np.uint8)
    if img.mode in ("1", "L"):
        return np.array(img.convert("L"), dtype=np.uint8)
    arr = np.array(img)
    if img.mode == "F":
        arr = arr.astype(np.float64)
        finite = np.isfinite(arr)
        # Float images are usually in [0, 1]; anything larger is taken as 0..255. Only finite values
        # decide (one inf pixel must not turn a [0, 1] image black); NaN -> 0, +inf -> 255, -inf -> 0.
        scale = 255.0 if arr[finite].max(initial=0.0) <= 1.0 else 1.0
        arr = np.where(finite, arr * scale, np.where(arr > 0, 255.0, 0.0))
        return np.clip(arr, 0, 255).round().astype(np.uint8)
    # "I" and "I;16*": 16-bit data (PNG/TIFF) in 0..65535 → 0..255 (257 = 65535 / 255).
    arr = arr.astype(np.float64)
    scale = 257.0 if arr.max(initial=0) > 255 or img.mode.startswith("I;16") else 1.0
    return np.clip(arr / scale, 0, 255).round().astype(np.uint8)


def _to_uint8_rgb(img: Image.Image) -> np.ndarray:
    """Colour image of any mode (RGBA, P, CMYK, YCbCr, ...) → uint8 ``[H, W, 3]``."""
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "RGBa", "PA"):
        img = img.convert("RGBA")
        black = Image.new("RGBA", img.size, (0, 0, 0, 255))
        img = Image.alpha_composite(black, img)
    return np.array(img.convert("RGB"), dtype=np.uint8)


def _corrupt(p: Path, e: Exception) -> DataError:
    why = f"{type(e).__name__}: {e}"
    return DataError(f"corrupt or unsupported image ({why}); re-export it as PNG or JPEG", path=str(p))


def load_image(path: str | Path, data: bytes | None = None) -> np.ndarray:
    """Decode an image file into a uint8 array.

    Grey images (1-bit, 8-bit, 16-bit, float) give ``[H, W]``; every other mode (RGB, RGBA,
    palette, CMYK, YCbCr, ...) gives RGB ``[H, W, 3]``. Alpha is composited onto black, 16-bit
    data is scaled to 8 bits, and the EXIF orientation is applied. The format is read from the
    file's content, not its extension; animated files give their first frame.

    Args:
        path: image file in any format Pillow reads (PNG, JPEG, BMP, TIFF, WebP, ...).
        data: the file's bytes, already read (a packed shard); ``path`` then only names it in messages.

    Returns:
        uint8 array ``[H, W]`` or ``[H, W, 3]``.

    Raises:
        DataError: the file is missing, unreadable, not a valid image, or larger than
            :data:`MAX_IMAGE_PIXELS` (the message names it).
    """
    p = Path(path)
    if data is None and not p.is_file():
        raise DataError("image file not found; check the path", path=str(p))
    try:
        with warnings.catch_warnings():
            # Pillow warns above its limit (and raises above twice it); the size check below decides.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(p if data is None else io.BytesIO(data))
    except Image.DecompressionBombError as e:
        raise DataError(f"image too large to decode ({e}); downscale it to at most {MAX_IMAGE_PIXELS:,} "
                        "pixels (the model sees a small square anyway)", path=str(p)) from e
    except PermissionError as e:
        raise DataError(f"cannot read image file ({e.strerror}); check its permissions", path=str(p)) from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise _corrupt(p, e) from e
    width, height = img.size
    if width * height > MAX_IMAGE_PIXELS:
        img.close()
        raise DataError(
            f"image is {width} x {height} = {width * height:,} pixels, more than the {MAX_IMAGE_PIXELS:,} "
            "allowed (decompression-bomb guard); downscale it (the model sees a small square anyway)",
            path=str(p),
        )
    try:
        with img:
            img.load()
            img = ImageOps.exif_transpose(img)
            is_grey = img.mode in _GREY_MODES or img.mode.startswith("I;16")
            arr = _to_uint8_grey(img) if is_grey else _to_uint8_rgb(img)
    except (OSError, SyntaxError, ValueError, EOFError) as e:  # truncated, damaged, undecodable data
        raise _corrupt(p, e) from e
    if arr.size == 0:
        raise DataError("image has no pixels (width or height 0)", path=str(p))
    return arr


def _per_channel(value: float | Sequence[float], channels: int, name: str) -> np.ndarray:
    vals = np.atleast_1d(np.asarray(value, dtype=np.float32))
    if vals.ndim != 1 or len(vals) not in (1, channels):
        raise ValueError(f"ImageTransform {name} must be one value or {channels} values, got {value!r}")
    return np.broadcast_to(vals, (channels,)).copy()


class ImageTransform:
    """uint8 image → normalized float tensor of a fixed size.

    Steps: channel conversion (RGB → grey uses Pillow's ITU-R 601 luma; grey → RGB repeats the
    channel), resize to ``size x size`` with Pillow's antialiased bilinear filter (the aspect
    ratio is not kept), scale to [0, 1], then ``(x - mean) / std`` per channel.

    Args:
        size: output height and width in pixels.
        channels: 1 (grey) or 3 (RGB).
        mean: per-channel mean in [0, 1] units (one value is broadcast).
        std: per-channel standard deviation in [0, 1] units (one value is broadcast).

    Shapes:
        input: uint8 ``[H, W]``, ``[H, W, 1]``, ``[H, W, 3]`` or ``[H, W, 4]`` (alpha dropped).
        output: float32 ``[channels, size, size]``.
    """

    def __init__(
        self,
        size: int = 28,
        channels: int = 1,
        mean: float | Sequence[float] = 0.5,
        std: float | Sequence[float] = 0.25,
    ) -> None:
        if size < 1:
            raise ValueError(f"ImageTransform size must be >= 1, got {size}")
        if channels not in (1, 3):
            raise ValueError(f"ImageTransform channels must be 1 or 3, got {channels}")
        self.size = int(size)
        self.channels = int(channels)
        self.mean = _per_channel(mean, channels, "mean")
        self.std = _per_channel(std, channels, "std")
        if np.any(self.std <= 0):
            raise ValueError(f"ImageTransform std must be > 0, got {std!r}")

    def __repr__(self) -> str:
        return (f"ImageTransform(size={self.size}, channels={self.channels}, "
                f"mean={self.mean.tolist()}, std={self.std.tolist()})")

    def _to_pil(self, img: np.ndarray) -> Image.Image:
        if img.dtype != np.uint8:
            raise TypeError(f"ImageTransform expects a uint8 array, got dtype {img.dtype}")
        if img.ndim == 3 and img.shape[2] == 1:
            img = img[:, :, 0]
        if img.ndim == 2:
            pil = Image.fromarray(np.ascontiguousarray(img))
        elif img.ndim == 3 and img.shape[2] in (3, 4):
            pil = Image.fromarray(np.ascontiguousarray(img[:, :, :3]))
        else:
            raise ValueError(f"ImageTransform expects [H, W] or [H, W, 1|3|4], got shape {img.shape}")
        return pil.convert("L" if self.channels == 1 else "RGB")

    def __call__(self, img: np.ndarray) -> torch.Tensor:
        """Transform one image; see the class docstring for the steps and shapes."""
        pil = self._to_pil(img)
        if pil.size != (self.size, self.size):
            pil = pil.resize((self.size, self.size), Image.Resampling.BILINEAR)
        # np.array (a copy), not asarray: torch.from_numpy on Pillow's read-only buffer warns.
        arr = np.array(pil, dtype=np.float32) / 255.0
        if arr.ndim == 2:
            arr = arr[:, :, None]
        arr = (arr - self.mean) / self.std
        return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))
