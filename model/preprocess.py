"""Image bytes -> network input, the same way in training, serving and offline cleaning.

Torch-free: Pillow and numpy only.

    pixels = load_pixels(data, spec)          # (H, W, C) uint8, oriented, converted, resized
    batch = normalize(np.stack([pixels]), spec)   # (N, C, H, W) float32
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .config import InputSpec

DEFAULT_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")
DEFAULT_MAX_PIXELS = 40_000_000
EXIF_ORIENTATION = 0x0112


class ImageError(ValueError):
    """An image that cannot be used; ``kind`` says why (the service maps it to a status)."""

    kind = "invalid_image"


class ImageTooLarge(ImageError):
    kind = "image_too_large"


class UnsupportedImage(ImageError):
    kind = "unsupported_image"


class CorruptImage(ImageError):
    kind = "corrupt_image"


def load_pixels(
    data: bytes,
    spec: InputSpec,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    formats: Sequence[str] = DEFAULT_FORMATS,
) -> np.ndarray:
    """Decode, apply EXIF orientation, convert colour mode and resize: -> (H, W, C) uint8.

    Raises UnsupportedImage (not an image, or a format not in ``formats``), ImageTooLarge (more
    than ``max_pixels``, decompression bombs included) or CorruptImage (truncated or broken).
    """
    return decode_pixels(open_image(data, max_pixels=max_pixels, formats=formats), spec)


def decode_pixels(image: Image.Image, spec: InputSpec) -> np.ndarray:
    """The pixels of an image from ``open_image``, oriented, converted and resized to ``spec``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image.load()
            if image.getexif().get(EXIF_ORIENTATION, 1) != 1:  # else exif_transpose only copies
                image = ImageOps.exif_transpose(image)
            if image.mode != spec.color_mode:
                image = image.convert(spec.color_mode)
            if image.size != (spec.width, spec.height):
                image = image.resize((spec.width, spec.height), Image.Resampling.BILINEAR)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLarge(f"image too large: {exc}") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise CorruptImage(f"image cannot be decoded (corrupt or truncated): {exc}") from exc
    array = np.asarray(image, dtype=np.uint8)
    return array[:, :, None] if array.ndim == 2 else array


def open_image(
    data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, formats: Sequence[str] = DEFAULT_FORMATS
) -> Image.Image:
    """Read only the header (cheap): the format and size are checked, nothing is decoded yet."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError as exc:
        raise UnsupportedImage("not a recognised image") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLarge(f"image too large: {exc}") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise CorruptImage(f"image cannot be decoded: {exc}") from exc
    if image.format not in formats:
        raise UnsupportedImage(
            f"image format {image.format} not allowed (allowed: {', '.join(formats)})"
        )
    width, height = image.size
    if width * height > max_pixels:
        raise ImageTooLarge(f"image has {width}x{height} pixels, more than {max_pixels} allowed")
    return image


def normalize(pixels: np.ndarray, spec: InputSpec) -> np.ndarray:
    """(N, H, W, C) uint8 -> (N, C, H, W) float32, scaled to [0, 1] then standardised."""
    x = pixels.astype(np.float32) * (1.0 / 255.0)
    mean = np.asarray(spec.mean, dtype=np.float32)
    std = np.asarray(spec.std, dtype=np.float32)
    x = (x - mean) / std
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def encode_noisy(noisy: np.ndarray, encoding: str) -> np.ndarray:
    """Machine labels (N, d) as the model reads them: confidences, or 1 for any listed label."""
    if encoding == "binary":
        return (noisy > 0).astype(np.float32)
    if encoding != "confidence":
        raise ValueError(f"noisy label encoding must be 'confidence' or 'binary', not {encoding!r}")
    return noisy
