"""Faces, with MediaPipe's BlazeFace full-range detector (ONNX, 192x192 input).

The detector finds human faces up to about 5 m from the camera and says nothing about who
they are: it gives a box and a confidence, which is all the caption uses ("a person", "two
people"). Anchor layout, box decoding and weighted non-maximum suppression follow MediaPipe's
``face_detection_full_range`` graph (models/MODEL.md has the provenance).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from captioner.providers.modelfiles import models_dir
from captioner.providers.sessions import open_model

if TYPE_CHECKING:
    import numpy as np

MODEL_FILE = models_dir() / "blazeface_full_range.onnx"
MODEL_NAME = "blazeface-full-range"
INPUT_SIZE = 192
STRIDE = 4  # one anchor per 4x4 cell: 48 x 48 = 2304 anchors
#: MediaPipe's own score threshold for this model (face_detection_full_range.pbtxt).
MIN_SCORE = 0.6
#: Boxes overlapping more than this (IoU) are one face (MediaPipe's value).
MIN_SUPPRESSION_IOU = 0.3
_RAW_SCORE_LIMIT = 80.0  # MediaPipe clips at 100; 80 keeps float32 exp() finite


@dataclass(frozen=True)
class Face:
    score: float
    #: (left, top, right, bottom) as fractions of the image's width and height
    box: tuple[float, float, float, float]

    @property
    def area(self) -> float:
        """The share of the image the face box covers."""
        left, top, right, bottom = self.box
        return max(0.0, right - left) * max(0.0, bottom - top)


def model_id(path: Path = MODEL_FILE) -> str:
    return open_model(path, MODEL_NAME).model_id


def detect_faces(image: Image.Image, path: Path = MODEL_FILE) -> list[Face]:
    """Faces in an RGB image, most confident first."""
    import numpy as np  # lazy, see sessions.py

    model = open_model(path, MODEL_NAME)
    pixels, (pad_x, pad_y) = _letterbox(image)
    raw_boxes, raw_scores = sorted(model.run(pixels), key=lambda out: -out.shape[-1])
    scores = _sigmoid(raw_scores[0, :, 0])
    keep = np.flatnonzero(scores >= MIN_SCORE)
    boxes = _decode(raw_boxes[0, keep, :4], _anchors()[keep])
    faces = []
    for score, box in _weighted_nms(scores[keep], boxes):
        # undo the letterbox padding: back to fractions of the original image
        left, right = ((box[[0, 2]] - pad_x) / (1 - 2 * pad_x)).clip(0, 1)
        top, bottom = ((box[[1, 3]] - pad_y) / (1 - 2 * pad_y)).clip(0, 1)
        if right > left and bottom > top:
            edges = (float(left), float(top), float(right), float(bottom))
            faces.append(Face(round(float(score), 4), edges))
    return faces


def _letterbox(image: Image.Image) -> tuple[np.ndarray, tuple[float, float]]:
    """Fit the image into the square input keeping its shape; pixels scaled to [-1, 1]."""
    import numpy as np

    width, height = image.size
    scale = INPUT_SIZE / max(width, height)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = image.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    square = Image.new("RGB", (INPUT_SIZE, INPUT_SIZE))  # black padding, as MediaPipe
    offset = ((INPUT_SIZE - size[0]) // 2, (INPUT_SIZE - size[1]) // 2)
    square.paste(resized, offset)
    pixels = np.asarray(square, dtype=np.float32) / 127.5 - 1.0
    pad = (offset[0] / INPUT_SIZE, offset[1] / INPUT_SIZE)
    return np.ascontiguousarray(pixels.transpose(2, 0, 1)[np.newaxis]), pad


@cache
def _anchors() -> np.ndarray:
    import numpy as np

    cells = INPUT_SIZE // STRIDE
    centres = (np.arange(cells, dtype=np.float32) + 0.5) / cells
    y, x = np.meshgrid(centres, centres, indexing="ij")
    return np.stack([x.ravel(), y.ravel()], axis=1)


def _sigmoid(raw: np.ndarray) -> np.ndarray:
    import numpy as np

    return 1.0 / (1.0 + np.exp(-raw.clip(-_RAW_SCORE_LIMIT, _RAW_SCORE_LIMIT)))


def _decode(raw: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """(x, y, w, h) offsets in input pixels from each anchor -> (left, top, right, bottom)."""
    import numpy as np

    values = raw / INPUT_SIZE
    centre = values[:, :2] + anchors
    half = values[:, 2:4] / 2
    return np.concatenate([centre - half, centre + half], axis=1)


def _weighted_nms(scores: np.ndarray, boxes: np.ndarray) -> list[tuple[float, np.ndarray]]:
    """MediaPipe's weighted NMS: overlapping boxes are averaged, weighted by score."""
    import numpy as np

    order = np.argsort(-scores)
    remaining = list(order)
    kept: list[tuple[float, np.ndarray]] = []
    while remaining:
        best = remaining[0]
        overlaps = _iou(boxes[best], boxes[remaining])
        group = [i for i, iou in zip(remaining, overlaps, strict=True) if iou > MIN_SUPPRESSION_IOU]
        weights = scores[group]
        merged = (boxes[group] * weights[:, None]).sum(axis=0) / weights.sum()
        kept.append((float(scores[best]), merged))
        grouped = set(group)
        remaining = [i for i in remaining if i not in grouped]
    return kept


def _iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    import numpy as np

    left = np.maximum(box[0], others[:, 0])
    top = np.maximum(box[1], others[:, 1])
    right = np.minimum(box[2], others[:, 2])
    bottom = np.minimum(box[3], others[:, 3])
    inter = (right - left).clip(0) * (bottom - top).clip(0)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    iou: np.ndarray = inter / np.maximum(area + areas - inter, 1e-9)
    return iou
