"""Thumbnails made by the server from the object version, cached by bucket/key/version.

The original never goes to the grid, and nothing is written into the bucket. A version's
bytes never change, so a thumbnail made once is served from memory afterwards (no S3 read);
the cache is bounded (least recently used out). Objects that are not images we accept, or
that break the function's own size and pixel limits, get a placeholder.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from captioner.objects import ObjectMissing, ObjectStore

THUMB_PX = 320  # the longer side
MAX_CACHED = 5000  # thumbnails of ~10-20 KB each


@dataclass(frozen=True)
class Limits:
    """The function's limits (CAPTION_MAX_IMAGE_BYTES, CAPTION_MAX_PIXELS)."""

    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000


class NotAThumbnail(Exception):
    """No thumbnail for this object: not an image we accept, too large, or gone."""


class Thumbnails:
    def __init__(self, objects: ObjectStore, limits: Limits | None = None) -> None:
        self._objects = objects
        self._limits = limits or Limits()
        self._cache: OrderedDict[tuple[str, str, str], bytes] = OrderedDict()
        self._lock = threading.Lock()
        self.s3_reads = 0  # objects read to make thumbnails (the benchmark's figure)

    def cached(self, bucket: str, key: str, version: str) -> bytes | None:
        """The thumbnail if it was made already (no S3 read, no thread hop for the caller)."""
        with self._lock:
            data = self._cache.get((bucket, key, version))
            if data is not None:
                self._cache.move_to_end((bucket, key, version))
            return data

    def get(self, bucket: str, key: str, version: str, size: int | None) -> bytes:
        """A JPEG thumbnail; ``NotAThumbnail`` for anything else."""
        ident = (bucket, key, version)
        with self._lock:
            if ident in self._cache:
                self._cache.move_to_end(ident)
                return self._cache[ident]
        if size is not None and size > self._limits.max_bytes:
            raise NotAThumbnail("larger than the image size limit")
        with self._lock:
            self.s3_reads += 1
        try:
            data = self._objects.read_all(bucket, key, version or None, self._limits.max_bytes)
        except (ObjectMissing, ValueError) as exc:
            raise NotAThumbnail(type(exc).__name__) from None
        thumb = make_thumbnail(data, self._limits.max_pixels)
        with self._lock:
            self._cache[ident] = thumb
            while len(self._cache) > MAX_CACHED:
                self._cache.popitem(last=False)
        return thumb


def make_thumbnail(data: bytes, max_pixels: int) -> bytes:
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.width * img.height > max_pixels:  # checked from the header, before decoding
                raise NotAThumbnail("more pixels than the limit")
            img.draft("RGB", (THUMB_PX, THUMB_PX))  # JPEG: decode at a smaller scale
            img.thumbnail((THUMB_PX, THUMB_PX))
            out = io.BytesIO()
            img.convert("RGB").save(out, "JPEG", quality=80, optimize=True)
            return out.getvalue()
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise NotAThumbnail(type(exc).__name__) from None
