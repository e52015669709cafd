"""Decide from an object's first bytes whether it is an image we may pay to caption.

Only a prefix of the object is read (ranged GET), never the whole body: the header says
the format and the pixel dimensions, which is enough to refuse non-images, unsupported
formats, corrupt headers and decompression bombs before any provider is called.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from captioner.errors import ImageRejected
from captioner.providers.base import ImageInfo

# We enforce our own pixel limit below, per configuration; Pillow's global warning would
# only add noise (its hard error above 2x its limit is still caught).
warnings.simplefilter("ignore", Image.DecompressionBombWarning)

# Magic numbers of common image formats, so a non-image is refused from its first bytes
# and an unsupported image gets a precise reason without a parse.
_SIGNATURES: tuple[tuple[bytes, int, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", 0, "PNG"),
    (b"\xff\xd8\xff", 0, "JPEG"),
    (b"GIF87a", 0, "GIF"),
    (b"GIF89a", 0, "GIF"),
    (b"WEBP", 8, "WEBP"),
    (b"BM", 0, "BMP"),
    (b"II*\x00", 0, "TIFF"),
    (b"MM\x00*", 0, "TIFF"),
    (b"ftypavif", 4, "AVIF"),
    (b"ftypheic", 4, "HEIC"),
    (b"ftypheix", 4, "HEIC"),
    (b"ftypmif1", 4, "HEIF"),
    (b"\x00\x00\x00\x0cjP  ", 0, "JPEG2000"),
    (b"\x00\x00\x01\x00", 0, "ICO"),
    (b"8BPS", 0, "PSD"),
)


@dataclass(frozen=True)
class ImageLimits:
    formats: frozenset[str]
    max_bytes: int
    max_pixels: int
    header_bytes: int
    max_header_bytes: int


def sniff_format(head: bytes) -> str | None:
    """The image format named by the leading magic bytes, or None."""
    for magic, offset, name in _SIGNATURES:
        if head[offset : offset + len(magic)] == magic:
            if name == "WEBP" and head[:4] != b"RIFF":
                continue
            return name
    return None


def check_image(read_prefix: Callable[[int], bytes], size: int, limits: ImageLimits) -> ImageInfo:
    """Inspect an object of ``size`` bytes through ``read_prefix(n)`` (its first n bytes).

    Raises ImageRejected with a human-readable reason; otherwise returns what the header says.
    Reads ``header_bytes`` first and, only when a supported header is cut short (a JPEG with
    a large ICC profile or EXIF thumbnail, a WebP), once more up to ``max_header_bytes``.
    """
    if size == 0:
        raise ImageRejected("empty object")
    if size > limits.max_bytes:
        raise ImageRejected(
            f"object is {_mb(size)}, over the {_mb(limits.max_bytes)} limit "
            "(CAPTION_MAX_IMAGE_BYTES)"
        )
    head = read_prefix(min(limits.header_bytes, size))
    fmt = sniff_format(head)
    if fmt is None:
        raise ImageRejected("not an image: the first bytes match no known image format")
    if fmt not in limits.formats:
        accepted = ", ".join(sorted(limits.formats))
        raise ImageRejected(
            f"unsupported format {fmt}: the provider accepts {accepted}", format=fmt
        )
    info = _parse_header(head, size)
    if info is None and len(head) < size and len(head) < limits.max_header_bytes:
        head = read_prefix(min(limits.max_header_bytes, size))
        info = _parse_header(head, size)
    if info is None:
        raise ImageRejected(f"corrupt {fmt} header: its size could not be read", format=fmt)
    if info.format != fmt:
        raise ImageRejected(
            f"corrupt image: starts like {fmt} but parses as {info.format}", format=info.format
        )
    _check_pixels(info, limits.max_pixels)
    return info


def _parse_header(head: bytes, size: int) -> ImageInfo | None:
    try:
        with Image.open(io.BytesIO(head)) as im:
            width, height = im.size
            fmt = im.format or ""
    except Image.DecompressionBombError:
        # Pillow refuses > 2x its own limit before we see the size; report it as a bomb.
        raise ImageRejected("image dimensions are too large (decompression bomb guard)") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, IndexError):
        return None
    # Many cameras write JPEGs with an MPO (multi-picture) extension; for every consumer
    # (ModelsLab, browsers, the local model) they are JPEGs.
    fmt = "JPEG" if fmt == "MPO" else fmt
    return ImageInfo(format=fmt, width=width, height=height, size=size)


def _check_pixels(info: ImageInfo, max_pixels: int) -> None:
    if info.width <= 0 or info.height <= 0:
        raise ImageRejected(f"corrupt {info.format} header: {info.width}x{info.height} pixels")
    pixels = info.width * info.height
    if pixels > max_pixels:
        raise ImageRejected(
            f"image is {info.width}x{info.height} = {pixels:,} pixels, over the "
            f"{max_pixels:,} limit (CAPTION_MAX_PIXELS; decompression bomb guard)",
            format=info.format,
        )


def _mb(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MiB"
