"""The offline ``local`` provider: people, text, blur and objects, described in words.

Four small models run with onnxruntime + numpy + Pillow (no API key, no network; provenance,
licences, hashes, time and memory in models/MODEL.md):

* EfficientNet-Lite0 (ImageNet-1k, exported by ``scripts/export_local_model.py``) names the
  main object ("an espresso", "a tabby cat"); ImageNet has no person class and cannot read;
* BlazeFace full-range (``faces.py``) finds faces: "a person", "two people";
* PP-OCRv6 tiny (``ocr.py``) finds text and reads its first lines: "a page of text
  beginning …", or handwriting when a page cannot be read;
* the variance of the Laplacian (``sharpness.py``) says when a photo is blurry.

``scene.py`` turns the measurements into the caption; the labels recorded with it are the
new signals (``person``, ``text``, ``handwriting``, ``blurry``) followed by the
classifier's top five.

onnxruntime (~0.1 s) and numpy (~0.1 s) are imported only when the first image is
captioned, so importing this module (for instance to list providers) stays cheap.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image, ImageOps

from captioner.errors import (
    NoTimeLeft,
    ProviderConfigError,
    ProviderImageError,
)
from captioner.providers import faces, ocr
from captioner.providers.base import Caption, ImageSource, Label, Length
from captioner.providers.describe import merge_labels
from captioner.providers.modelfiles import models_dir
from captioner.providers.scene import Scene, describe_scene, signal_labels
from captioner.providers.sessions import OnnxModel, open_model
from captioner.providers.sharpness import sharpness

if TYPE_CHECKING:
    import numpy as np

MODELS_DIR = models_dir()
DEFAULT_MODEL = MODELS_DIR / "efficientnet_lite0.onnx"
LABELS_FILE = MODELS_DIR / "imagenet_labels.json"
MODEL_NAME = "efficientnet-lite0-imagenet1k"

INPUT_SIZE = 224
# TF EfficientNet evaluation: centre crop 224/(224+32) of the shorter side, bicubic resize.
CROP_FRACTION = INPUT_SIZE / (INPUT_SIZE + 32)
# The Lite weights were trained on (pixel - 127) / 128, not the torchvision mean/std.
MEAN, STD = 127.0, 128.0
# JPEG draft target: DCT scaling keeps both sides at least this large, enough for the
# text reader (the classifier alone would need 256 px).
DRAFT_SIZE = 1024
TOP_K = 5
FORMATS = frozenset({"PNG", "JPEG", "MPO", "GIF", "WEBP", "BMP"})  # MPO: many camera JPEGs
# Pillow plugins allowed to decode; MPO files open through the JPEG plugin.
_DECODERS = ("BMP", "GIF", "JPEG", "PNG", "WEBP")


@dataclass(frozen=True)
class _Model:
    onnx: OnnxModel
    labels: tuple[str, ...]

    @property
    def model_id(self) -> str:  # name@sha256[:12], recorded with each caption
        return self.onnx.model_id

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        import numpy as np  # lazy, see the module docstring

        logits = self.onnx.run(pixels)[0][0]
        exp = np.exp(logits - logits.max())  # shift for numerical stability
        probabilities: np.ndarray = exp / exp.sum()
        return probabilities


def load_model(path: Path = DEFAULT_MODEL) -> _Model:
    """The classifier at ``path``, loaded once per process (the first caller pays)."""
    return _load_model(path.resolve())


@cache  # a failed load raises and is not cached: the next caption tries again
def _load_model(path: Path) -> _Model:
    try:
        labels = json.loads((path.parent / LABELS_FILE.name).read_text())
    except OSError as exc:
        raise ProviderConfigError(f"local model files missing next to {path}: {exc}") from exc
    return _Model(open_model(path, MODEL_NAME), tuple(labels))


def decode_image(data: bytes, name: str = "") -> Image.Image:
    """Decode to an upright RGB image; undecodable bytes raise ``ProviderImageError``."""
    try:
        with Image.open(io.BytesIO(data), formats=_DECODERS) as image:
            # JPEG only (a no-op otherwise): decode at 1/2, 1/4 or 1/8 scale straight from
            # the DCT, so a 24 MP photo becomes 3000 x 2000 (18 MB), not a 72 MB bitmap.
            image.draft(None, (DRAFT_SIZE, DRAFT_SIZE))
            image.load()  # truncated or corrupt bodies fail here, inside the try
            return _to_rgb(_upright(image))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        label = f" {name}" if name else ""
        raise ProviderImageError(f"cannot decode image{label}: {exc}") from exc


def _upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation (phone photos are often stored sideways)."""
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # malformed EXIF: the pixels are fine, caption them as stored
        return image.copy()


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode.startswith(("I", "F")):
        import numpy as np  # lazy, see the module docstring

        # 16/32-bit greyscale: Pillow's convert clips at 255, so scale 16-bit down instead.
        pixels = np.asarray(image, dtype=np.float32) / 256
        image = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        # Transparent areas are usually black or junk underneath; viewers show them on a
        # light page, so composite on white.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image if image.mode == "RGB" else image.convert("RGB")


def preprocess(image: Image.Image) -> np.ndarray:
    """RGB image -> float32 NCHW (1, 3, 224, 224), as the model was trained."""
    import numpy as np  # lazy, see the module docstring

    width, height = image.size
    side = min(width, height) * CROP_FRACTION
    left, top = (width - side) / 2, (height - side) / 2
    box = (left, top, left + side, top + side)
    resized = image.resize(
        (INPUT_SIZE, INPUT_SIZE), Image.Resampling.BICUBIC, box=box, reducing_gap=3.0
    )
    pixels = (np.asarray(resized, dtype=np.float32) - MEAN) / STD
    return np.ascontiguousarray(pixels.transpose(2, 0, 1)[np.newaxis])


def top_labels(probs: np.ndarray, labels: tuple[str, ...], k: int = TOP_K) -> list[Label]:
    """The ``k`` most likely distinct names (near-duplicate classes merged)."""
    import numpy as np  # lazy, see the module docstring

    candidates = np.argpartition(probs, -2 * k)[-2 * k :]  # spare room for merges
    merged = merge_labels((labels[i], float(probs[i])) for i in candidates)
    return [Label(name, round(score, 4)) for name, score in merged[:k]]


def look(image: Image.Image, labels: list[Label]) -> Scene:
    """Run the other detectors on a decoded image: faces, text, sharpness."""
    reading = ocr.read_text(image)
    return Scene(
        labels=[(label.name, label.score) for label in labels],
        faces=[face.score for face in faces.detect_faces(image)],
        text_coverage=reading.coverage,
        text_lines=reading.regions,
        text_score=reading.score,
        text=[(line.text, line.confidence) for line in reading.lines],
        sharpness=sharpness(image),
    )


class LocalProvider:
    """Caption with the bundled offline models; see the module docstring."""

    name = "local"
    formats = FORMATS
    price_usd = 0.0  # runs in the function: its Lambda time is the only cost
    cpu_bound = True  # one caption per vCPU at a time (limits.slots_for)

    def __init__(self, model_path: Path | None = None) -> None:
        self.model_path = model_path or DEFAULT_MODEL

    def caption(
        self,
        image: ImageSource,
        length: Length,
        *,
        deadline: float,
        job_id: str | None = None,
        on_job: Callable[[str], None] | None = None,
    ) -> Caption:
        # Synchronous and cheap: no jobs to queue or poll, so job_id and on_job are unused.
        if time.monotonic() >= deadline:
            raise NoTimeLeft("deadline passed before the local model could run")
        start = time.perf_counter()
        model = load_model(self.model_path)
        decoded = decode_image(image.read(), image.name)
        labels = top_labels(model.probabilities(preprocess(decoded)), model.labels)
        scene = look(decoded, labels)
        signals = [Label(name, score) for name, score in signal_labels(scene)]
        return Caption(
            text=describe_scene(scene, length),
            provider=self.name,
            length=length,
            model="+".join((model.model_id, faces.model_id(), ocr.model_ids())),
            labels=(*signals, *labels),
            latency_ms=(time.perf_counter() - start) * 1000,
        )
