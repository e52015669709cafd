"""Real images built with Pillow (and a few hand-made hostile files) for tests."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image, ImageDraw


def picture(width: int = 64, height: int = 48, mode: str = "RGB") -> Image.Image:
    im = Image.new(mode, (width, height), "white" if mode != "P" else 0)
    draw = ImageDraw.Draw(im)
    draw.ellipse(
        (width // 4, height // 4, 3 * width // 4, 3 * height // 4),
        fill="red" if mode == "RGB" else 128,
    )
    return im


def encode(im: Image.Image, fmt: str, **params) -> bytes:
    out = io.BytesIO()
    im.save(out, fmt, **params)
    return out.getvalue()


def png(width: int = 64, height: int = 48) -> bytes:
    return encode(picture(width, height), "PNG")


def jpeg(width: int = 64, height: int = 48, **params) -> bytes:
    return encode(picture(width, height), "JPEG", quality=85, **params)


def jpeg_with_big_icc(icc_bytes: int = 200_000) -> bytes:
    """A JPEG whose size marker comes after a large ICC profile (past the first 64 KB)."""
    return encode(picture(80, 60), "JPEG", icc_profile=b"\0" * icc_bytes)


def gif() -> bytes:
    return encode(picture(mode="P"), "GIF")


def webp() -> bytes:
    return encode(picture(), "WEBP")


def png_header_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims huge dimensions: a decompression bomb's signature."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    out = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk
    out += struct.pack(">I", zlib.crc32(chunk) & 0xFFFFFFFF)
    idat = zlib.compress(b"\0" * 1024)
    out += (
        struct.pack(">I", len(idat))
        + b"IDAT"
        + idat
        + struct.pack(">I", zlib.crc32(b"IDAT" + idat))
    )
    return out + struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))


def corrupt_header_png() -> bytes:
    """PNG signature followed by garbage: the header cannot be parsed."""
    return b"\x89PNG\r\n\x1a\n" + b"\xde\xad\xbe\xef" * 100


def truncated_body_jpeg() -> bytes:
    """Header intact, pixel data cut off: passes the header check, fails to decode."""
    data = jpeg(256, 256)
    return data[: len(data) // 3]


def mpo() -> bytes:
    """A camera-style multi-picture JPEG: Pillow reports it as MPO."""
    first, second = picture(90, 70), picture(90, 70)
    out = io.BytesIO()
    first.save(out, "MPO", save_all=True, append_images=[second])
    return out.getvalue()
