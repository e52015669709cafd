"""Post-processing of the offline detectors on synthetic inputs (numpy, no model loaded):
text regions as rotated boxes, reading order, covered share, face boxes, sharpness."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from captioner.providers import faces, ocr
from captioner.providers.ocr import TextBox
from captioner.providers.sharpness import sharpness


def mask_of(draw: callable, size: tuple[int, int] = (200, 100)) -> np.ndarray:  # type: ignore[valid-type]
    image = Image.new("L", size)
    draw(ImageDraw.Draw(image))
    return np.asarray(image) > 0


def regions(mask: np.ndarray) -> list[tuple[list[tuple[float, float]], float]]:
    return ocr._regions(mask.astype(np.float32) * 0.9, mask)


def test_a_line_becomes_one_grown_box() -> None:
    found = regions(mask_of(lambda d: d.rectangle((20, 40, 179, 49), fill=1)))
    assert len(found) == 1
    corners, score = found[0]
    assert score == pytest.approx(0.9)
    xs, ys = [x for x, _ in corners], [y for _, y in corners]
    # 160 x 10 pixels, grown by DB's unclip distance 160*10*1.4/(2*170) = 6.6 on each side
    assert min(xs) == pytest.approx(19.5 - 6.59, abs=0.05)
    assert max(xs) == pytest.approx(179.5 + 6.59, abs=0.05)
    assert min(ys) == pytest.approx(39.5 - 6.59, abs=0.05)
    assert max(ys) == pytest.approx(49.5 + 6.59, abs=0.05)


def test_a_turned_line_gets_a_turned_box() -> None:
    angle = math.radians(10)
    centre, half_length, half_width = (100, 50), 80, 5
    along, across = (math.cos(angle), math.sin(angle)), (-math.sin(angle), math.cos(angle))
    quad = [
        (centre[0] + su * half_length * along[0] + sv * half_width * across[0],
         centre[1] + su * half_length * along[1] + sv * half_width * across[1])
        for su, sv in ((-1, -1), (1, -1), (1, 1), (-1, 1))
    ]  # fmt: skip
    ((corners, _),) = regions(mask_of(lambda d: d.polygon(quad, fill=1)))
    (x0, y0), (x1, y1), _, (x3, y3) = corners
    assert math.degrees(math.atan2(y1 - y0, x1 - x0)) == pytest.approx(10, abs=1)
    assert x1 > x0  # read left to right
    assert math.hypot(x3 - x0, y3 - y0) < 30  # thin: it does not span the other lines


def test_touching_runs_are_one_region_and_separate_lines_are_two() -> None:
    def two_lines(d: ImageDraw.ImageDraw) -> None:
        d.rectangle((10, 10, 150, 19), fill=1)
        d.rectangle((10, 40, 150, 49), fill=1)

    assert len(regions(mask_of(two_lines))) == 2

    def diagonal_step(d: ImageDraw.ImageDraw) -> None:
        d.rectangle((10, 10, 80, 15), fill=1)
        d.rectangle((81, 16, 150, 21), fill=1)  # touches only corner to corner

    assert len(regions(mask_of(diagonal_step))) == 1


def test_round_blobs_and_weak_or_tiny_regions_are_not_text() -> None:
    assert regions(mask_of(lambda d: d.ellipse((50, 10, 130, 90), fill=1))) == []  # a cup
    assert regions(mask_of(lambda d: d.rectangle((10, 10, 150, 11), fill=1))) == []  # 2 px
    weak = mask_of(lambda d: d.rectangle((20, 40, 179, 49), fill=1))
    assert ocr._regions(weak * np.float32(0.3), weak) == []  # mean under BOX_THRESHOLD
    assert regions(np.zeros((50, 50), dtype=bool)) == []


def box(left: float, top: float, right: float, bottom: float) -> TextBox:
    return TextBox(((left, top), (right, top), (right, bottom), (left, bottom)), 0.9)


def test_reading_order_is_rows_then_left_to_right() -> None:
    title = box(0.1, 0.05, 0.9, 0.10)
    right, left = box(0.55, 0.20, 0.9, 0.24), box(0.1, 0.205, 0.45, 0.245)
    last = box(0.1, 0.40, 0.5, 0.44)
    assert ocr.reading_order([last, right, title, left]) == [title, left, right, last]


def test_covered_share_counts_overlaps_once() -> None:
    assert ocr.covered_share([box(0, 0, 0.5, 0.5)]) == pytest.approx(0.25, abs=0.01)
    overlapping = [box(0, 0, 0.5, 0.5), box(0.25, 0, 0.75, 0.5)]
    assert ocr.covered_share(overlapping) == pytest.approx(0.375, abs=0.01)
    assert ocr.covered_share([]) == 0.0


def test_face_anchors_cover_the_input_grid() -> None:
    anchors = faces._anchors()
    assert anchors.shape == (2304, 2)
    assert anchors[0] == pytest.approx((0.5 / 48, 0.5 / 48))
    assert anchors[48] == pytest.approx((0.5 / 48, 1.5 / 48))  # row-major: x varies fastest


def test_face_boxes_are_decoded_around_their_anchor() -> None:
    raw = np.array([[19.2, -9.6, 48.0, 96.0]], dtype=np.float32)  # offsets in input pixels
    ((left, top, right, bottom),) = faces._decode(raw, np.array([[0.5, 0.5]], dtype=np.float32))
    assert (left, top, right, bottom) == pytest.approx((0.475, 0.2, 0.725, 0.7))


def test_overlapping_face_boxes_merge_weighted_by_score() -> None:
    boxes = np.array([[0.1, 0.1, 0.3, 0.3], [0.12, 0.1, 0.32, 0.3], [0.6, 0.6, 0.8, 0.8]])
    kept = faces._weighted_nms(np.array([0.9, 0.6, 0.8]), boxes)
    assert [score for score, _ in kept] == [0.9, 0.8]
    assert kept[0][1][0] == pytest.approx((0.1 * 0.9 + 0.12 * 0.6) / 1.5)


def test_letterbox_keeps_the_shape_and_reports_the_padding() -> None:
    pixels, (pad_x, pad_y) = faces._letterbox(Image.new("RGB", (400, 200), "white"))
    assert pixels.shape == (1, 3, 192, 192)
    assert (pad_x, pad_y) == (0.0, 0.25)
    assert pixels[0, :, 0, 0] == pytest.approx(-1.0)  # black padding
    assert pixels[0, :, 96, 96] == pytest.approx(1.0)  # the white image


def test_sharpness_falls_with_blur_and_ignores_resolution() -> None:
    rng = np.random.default_rng(0)
    texture = Image.fromarray((rng.random((256, 256)) * 255).astype(np.uint8)).resize((512, 512))
    sharp = sharpness(texture)
    assert sharp is not None and sharp > 100
    softer = sharpness(texture.filter(ImageFilter.GaussianBlur(3)))
    assert softer is not None and softer < sharp / 10
    big = sharpness(texture.resize((2048, 2048), Image.Resampling.NEAREST))
    assert big == pytest.approx(sharp, rel=0.05)  # measured at 512 px either way


def test_sharpness_of_blank_or_tiny_images_is_not_measured() -> None:
    assert sharpness(Image.new("RGB", (300, 200), "white")) is None
    assert sharpness(Image.new("RGB", (2, 2), "red")) is None
