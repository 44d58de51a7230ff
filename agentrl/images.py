"""Image bytes, checked once: the pixel and aspect caps, decoding, the size from the header, the readable check.

Every image that enters the system (a dataset row, a tool's thumbnail, an imported cache, a request to
the generator) goes through here, so all of them are refused for the same reasons with the same words.
A leaf module: Pillow and the standard library only.
"""

from __future__ import annotations

import io
import warnings
from typing import Any

# Images larger than this are refused before their pixels are decoded (a 17 KB PNG can claim 144
# megapixels, 432 MB as RGB): Pillow's own decompression-bomb threshold, where it only warns.
MAX_IMAGE_PIXELS = 89_478_485
# A search result's thumbnail: far below a photo's cap (a 347 KB PNG can claim 9450x9450, 1.5 GB to resize)
MAX_THUMBNAIL_PIXELS = 4_194_304
# Thinner than this is no photo or thumbnail, and Qwen2-VL's resize refuses it (its limit): refused at entry,
# so a data row or a tool result never fails later, at resize time
MAX_ASPECT_RATIO = 200


class ImageError(ValueError):
    """Image bytes that cannot be decoded (a corrupt data row or tool result), or that claim too many pixels."""


def _unreadable(e: Exception) -> ImageError:
    return ImageError(f"unreadable image ({type(e).__name__}: {e})")


def _open(data: bytes, max_pixels: int = MAX_IMAGE_PIXELS) -> Any:
    """The image, lazily opened (the header read, no pixels decoded); ImageError when the header is not an
    image's or it claims more than `max_pixels`."""
    from PIL import Image

    try:  # PIL parses untrusted bytes: any exception it raises means "not a usable image"
        with warnings.catch_warnings():  # its size warning: refused below, in one line
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except Exception as e:
        raise _unreadable(e) from None
    w, h = img.size
    if w * h > max_pixels:  # from the header, before decoding: a small file can be huge
        img.close()
        raise ImageError(f"image of {w}x{h} pixels is over the limit of {max_pixels} pixels")
    if max(w, h) > MAX_ASPECT_RATIO * max(min(w, h), 1):
        img.close()
        raise ImageError(f"image of {w}x{h} pixels is thinner than 1:{MAX_ASPECT_RATIO}")
    return img


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the image header, without decoding the pixels; ImageError as `_open`."""
    with _open(data) as img:
        return img.size


def decode_image(data: bytes, max_pixels: int = MAX_IMAGE_PIXELS) -> Any:
    """Encoded bytes -> an RGB PIL image; ImageError when the bytes are not a readable image or claim
    more than `max_pixels` (checked from the header, before decoding)."""
    img = _open(data, max_pixels)
    try:
        img.load()  # a truncated file fails here, not at open
        return img.convert("RGB")
    except Exception as e:
        raise _unreadable(e) from None


def check_image(data: bytes) -> bytes:
    """`data` (as bytes) when it is a whole, decodable image; ImageError saying why not (corrupt,
    truncated, too many pixels)."""
    with _open(data) as img:
        try:
            img.verify()  # structure and checksums
        except Exception as e:
            raise _unreadable(e) from None
    decode_image(data)  # verify() passes a truncated JPEG; decoding it does not
    return bytes(data)


def readable_image(data: bytes, max_pixels: int = MAX_IMAGE_PIXELS) -> bool:
    """Whether the bytes decode as an image within the pixel cap."""
    try:
        decode_image(data, max_pixels)
    except ImageError:
        return False
    return True


def encode_png(img: Any) -> bytes:
    """A PIL image as PNG bytes (lossless: whoever decodes them gets the same pixels)."""
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()
