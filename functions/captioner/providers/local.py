"""The offline ``local`` provider: an ImageNet classifier described in words.

EfficientNet-Lite0 (ImageNet-1k) exported to ONNX by ``scripts/export_local_model.py`` runs
with onnxruntime + numpy + Pillow: no API key, no network, some 10-30 ms per image on one
core (figures in models/MODEL.md). It names the main object ("A photo of an espresso.");
it cannot describe people, scenes or actions.

onnxruntime (~0.1 s) and numpy (~0.1 s) are imported only when the first image is
captioned, so importing this module (for instance to list providers) stays cheap.
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image, ImageOps

from captioner.errors import ProviderConfigError, ProviderImageError, ProviderTransientError
from captioner.providers.base import Caption, ImageSource, Label, Length
from captioner.providers.describe import describe, merge_labels

if TYPE_CHECKING:
    import numpy as np

MODELS_DIR = Path(__file__).resolve().parent / "models"
DEFAULT_MODEL = MODELS_DIR / "efficientnet_lite0.onnx"
LABELS_FILE = MODELS_DIR / "imagenet_labels.json"
MODEL_NAME = "efficientnet-lite0-imagenet1k"

INPUT_SIZE = 224
# TF EfficientNet evaluation: centre crop 224/(224+32) of the shorter side, bicubic resize.
CROP_FRACTION = INPUT_SIZE / (INPUT_SIZE + 32)
# The Lite weights were trained on (pixel - 127) / 128, not the torchvision mean/std.
MEAN, STD = 127.0, 128.0
# JPEG draft target: the crop must still be >= INPUT_SIZE after DCT scaling.
DRAFT_SIZE = round(INPUT_SIZE / CROP_FRACTION)
TOP_K = 5
# The Lambda captions several records at once on 1-2 vCPUs: more threads per run would
# only contend with each other.
INTRA_OP_THREADS = 1
FORMATS = frozenset({"PNG", "JPEG", "MPO", "GIF", "WEBP", "BMP"})  # MPO: many camera JPEGs
# Pillow plugins allowed to decode; MPO files open through the JPEG plugin.
_DECODERS = ("BMP", "GIF", "JPEG", "PNG", "WEBP")


@dataclass(frozen=True)
class _Model:
    session: Any  # onnxruntime.InferenceSession; run() is thread-safe
    input_name: str
    labels: tuple[str, ...]
    model_id: str  # name@sha256[:12], recorded with each caption

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        import numpy as np  # lazy, see the module docstring

        logits = self.session.run(None, {self.input_name: pixels})[0][0]
        exp = np.exp(logits - logits.max())  # shift for numerical stability
        probabilities: np.ndarray = exp / exp.sum()
        return probabilities


_models: dict[Path, _Model] = {}
_models_lock = threading.Lock()


def load_model(path: Path = DEFAULT_MODEL) -> _Model:
    """The model at ``path``, loaded once per process (the first caller pays, ~0.1-0.3 s)."""
    path = path.resolve()
    model = _models.get(path)
    if model is None:
        with _models_lock:
            model = _models.get(path)
            if model is None:
                model = _models[path] = _load(path)
    return model


def _load(path: Path) -> _Model:
    try:
        import onnxruntime as ort  # lazy: a heavy import, paid only when used
    except ImportError as exc:
        raise ProviderConfigError(f"local provider needs onnxruntime: {exc}") from exc
    try:
        with path.open("rb") as model_file:  # streamed: no 19 MB copy held in memory
            sha = hashlib.file_digest(model_file, "sha256").hexdigest()
        labels = json.loads((path.parent / LABELS_FILE.name).read_text())
    except OSError as exc:
        raise ProviderConfigError(f"local model files missing next to {path}: {exc}") from exc
    options = ort.SessionOptions()
    options.intra_op_num_threads = INTRA_OP_THREADS
    options.inter_op_num_threads = 1
    try:
        # From the path, not bytes: onnxruntime then keeps no second copy (~20 MB less RSS).
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own unexported exception types
        raise ProviderConfigError(f"cannot load local model {path}: {exc}") from exc
    return _Model(
        session=session,
        input_name=session.get_inputs()[0].name,
        labels=tuple(labels),
        model_id=f"{MODEL_NAME}@{sha[:12]}",
    )


def decode_image(data: bytes, name: str = "") -> Image.Image:
    """Decode to an upright RGB image; undecodable bytes raise ``ProviderImageError``."""
    try:
        with Image.open(io.BytesIO(data), formats=_DECODERS) as image:
            # JPEG only (a no-op otherwise): decode at 1/2, 1/4 or 1/8 scale straight from
            # the DCT, so a 24 MP photo never becomes a 72 MB bitmap.
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


class LocalProvider:
    """Caption with the bundled EfficientNet-Lite0 model; see the module docstring."""

    name = "local"
    formats = FORMATS

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
            raise ProviderTransientError("deadline passed before the local model could run")
        start = time.perf_counter()
        model = load_model(self.model_path)
        pixels = preprocess(decode_image(image.read(), image.name))
        labels = top_labels(model.probabilities(pixels), model.labels)
        return Caption(
            text=describe([(label.name, label.score) for label in labels], length),
            provider=self.name,
            length=length,
            model=model.model_id,
            labels=tuple(labels),
            latency_ms=(time.perf_counter() - start) * 1000,
        )
