"""The offline provider running the real models: EfficientNet-Lite0, BlazeFace, PP-OCRv6.

The photos are the ones bundled in the scikit-image wheel (no download), read as files so
the provider sees real PNG/JPEG bodies.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import skimage
from PIL import Image, ImageDraw, ImageFilter, ImageFont

import captioner
from captioner.errors import ProviderConfigError, ProviderImageError, ProviderTransientError
from captioner.providers import faces, local, ocr
from captioner.providers.base import (
    LENGTHS,
    Caption,
    CaptionProvider,
    ImageInfo,
    ImageSource,
    Length,
)
from captioner.providers.local import LocalProvider

SKIMAGE_DATA = Path(skimage.__file__).parent / "data"
MODEL_MD = local.MODELS_DIR / "MODEL.md"
CATS = {"tiger cat", "Egyptian cat", "tabby cat"}
SIGNALS = {"person", "text", "handwriting", "blurry"}
MODEL_FILES = (
    local.DEFAULT_MODEL,
    faces.MODEL_FILE,
    ocr.DET_FILE,
    ocr.REC_FILE,
)


def source(data: bytes, name: str = "photo") -> ImageSource:
    with Image.open(io.BytesIO(data)) as im:
        info = ImageInfo(im.format or "?", im.width, im.height, len(data))
    return ImageSource(info=info, read=lambda: data, name=name)


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()


def caption(data: bytes, length: Length = "normal", name: str = "photo") -> Caption:
    return LocalProvider().caption(source(data, name), length, deadline=time.monotonic() + 30)


def names(result: Caption) -> list[str]:
    """The classifier's labels (after the signals, which come first)."""
    return [label.name for label in result.labels if label.name not in SIGNALS]


def signals(result: Caption) -> dict[str, float]:
    return {label.name: label.score for label in result.labels if label.name in SIGNALS}


def photo(name: str) -> bytes:
    return (SKIMAGE_DATA / name).read_bytes()


@pytest.fixture(scope="module")
def coffee() -> Image.Image:
    with Image.open(SKIMAGE_DATA / "coffee.png") as im:
        return im.convert("RGB")


# -- what the model sees in everyday photos -----------------------------------------------------


@pytest.mark.parametrize(
    ("photo", "top1", "in_top5", "text"),
    [
        ("coffee.png", {"espresso"}, {"cup"}, "A photo of an espresso."),
        ("chelsea.png", CATS, CATS, "A photo of a tiger cat or an Egyptian cat."),
        ("camera.png", {"tripod"}, {"reflex camera"}, "A photo of a person and a tripod."),
        ("rocket.jpg", {"missile"}, {"space shuttle"}, "A photo of a missile."),
        ("motorcycle_left.png", {"moped", "motor scooter"}, {"motor scooter"}, None),
        ("astronaut.png", {"football helmet"}, set(), "A photo of a person."),
    ],
)
def test_bundled_photos_get_the_expected_labels(
    photo: str, top1: set[str], in_top5: set[str], text: str | None
) -> None:
    result = caption((SKIMAGE_DATA / photo).read_bytes(), name=photo)
    assert names(result)[0] in top1
    assert in_top5 <= set(names(result))
    if text:
        assert result.text.startswith(text)


def test_caption_fields(coffee: Image.Image) -> None:
    result = caption(encode(coffee, "PNG"), "long")
    assert result.provider == "local"
    assert result.length == "long"
    assert result.job_id is None
    assert re.fullmatch(
        r"efficientnet-lite0-imagenet1k@[0-9a-f]{12}\+blazeface-full-range@[0-9a-f]{12}"
        r"\+pp-ocrv6-det-tiny@[0-9a-f]{12}\+pp-ocrv6-rec-tiny@[0-9a-f]{12}",
        result.model or "",
    )
    assert len(result.labels) == 5
    scores = [label.score for label in result.labels]
    assert scores == sorted(scores, reverse=True)
    assert scores[0] > 0.9 and sum(scores) <= 1.0
    assert len(set(names(result))) == 5
    assert result.text.startswith("A photo of an espresso (95%). Other possibilities: a cup (2%)")
    assert result.latency_ms > 0


def test_lengths_change_the_detail() -> None:
    data = (SKIMAGE_DATA / "chelsea.png").read_bytes()
    short, normal, long = (caption(data, length).text for length in LENGTHS)
    assert short == "A photo of a tiger cat."
    assert normal == "A photo of a tiger cat or an Egyptian cat."
    assert long.startswith("A photo of a tiger cat (38%) or an Egyptian cat (37%).")
    assert "Other possibilities: a tabby cat (17%)" in long


# -- people, text and blur ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["astronaut.png", "camera.png"])
def test_a_face_photo_says_person(name: str) -> None:
    result = caption(photo(name), name=name)
    assert result.text.startswith("A photo of a person")
    assert result.labels[0].name == "person"
    assert faces.MIN_SCORE <= result.labels[0].score <= 1
    assert names(result)  # the classifier's labels are still recorded after the signals


def test_two_faces_are_two_people() -> None:
    with Image.open(SKIMAGE_DATA / "astronaut.png") as im:
        astronaut = im.convert("RGB")
    pair = Image.new("RGB", (1024, 512))
    pair.paste(astronaut, (0, 0))
    pair.paste(astronaut.transpose(Image.Transpose.FLIP_LEFT_RIGHT), (512, 0))
    assert caption(encode(pair, "JPEG", quality=90), "short").text == "A photo of two people."


def test_photos_without_faces_have_no_person() -> None:
    for name in ("coffee.png", "chelsea.png", "rocket.jpg", "page.png"):
        assert "person" not in signals(caption(photo(name), name=name))


def test_a_text_page_says_text_and_quotes_its_first_words() -> None:
    result = caption(photo("page.png"))
    assert result.text.startswith(
        "A page of text beginning “Region-based segmentation Let us first determine"
    )
    assert result.text.endswith("…”.")
    assert signals(result).keys() == {"text"}
    assert signals(result)["text"] > 0.5
    short = caption(photo("page.png"), "short").text
    assert short == "A page of text."


def test_a_page_of_handwriting_is_not_quoted() -> None:
    result = caption(photo("text.png"))
    assert result.text == "A page of handwriting or unclear text."
    assert {"text", "handwriting"} <= signals(result).keys()


def test_a_phone_photo_of_a_turned_page_is_read_straight() -> None:
    """Lines at 2 degrees: axis-aligned boxes would cut across neighbouring lines."""
    page = Image.new("RGB", (1200, 1600), "white")
    draw = ImageDraw.Draw(page)
    font = ImageFont.load_default(34)
    draw.text((80, 80), "Quarterly report of the garden club", font=font, fill="black")
    for row in range(1, 25):
        line = "members planted tulips and roses near the old station in the spring"
        draw.text((80, 80 + row * 55), line, font=font, fill="black")
    desk = Image.new("RGB", (2000, 1500), (110, 80, 50))
    desk.paste(page.rotate(2, expand=True, fillcolor=(110, 80, 50)), (400, -60))
    result = caption(encode(desk, "JPEG", quality=90))
    assert result.text.startswith("A page of text beginning “Quarterly report of the garden club")


def test_big_clear_lettering_is_quoted() -> None:
    sign = Image.new("RGB", (640, 240), (250, 220, 40))
    ImageDraw.Draw(sign).text(
        (40, 60), "FRESH BREAD", font=ImageFont.load_default(90), fill="black"
    )
    assert caption(encode(sign, "PNG")).text == "An image of the text “FRESH BREAD”."


def test_a_blurred_photo_says_blurry() -> None:
    result = caption(photo("clock_motion.png"))
    assert result.text.startswith("A blurry photo")
    assert signals(result)["blurry"] >= 0.5


def test_a_very_blurred_photo_names_no_object(coffee: Image.Image) -> None:
    smeared = coffee.filter(ImageFilter.GaussianBlur(4))
    result = caption(encode(smeared, "PNG"))
    assert result.text == "A very blurry photo."
    assert signals(result)["blurry"] > 0.8
    assert len(names(result)) == 5  # the classifier's guesses are still recorded
    assert caption(encode(smeared, "PNG"), "long").text.startswith(
        "A very blurry photo. Best guesses: "
    )


def test_sharp_photos_are_not_blurry() -> None:
    for name in ("coffee.png", "chelsea.png", "astronaut.png", "camera.png", "rocket.jpg"):
        assert "blurry" not in signals(caption(photo(name), name=name)), name


# -- formats, modes and orientation --------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "convert", "params"),
    [
        ("JPEG", "RGB", {"quality": 90}),
        ("WEBP", "RGB", {"quality": 90}),
        ("BMP", "RGB", {}),
        ("GIF", "P", {}),
        ("PNG", "RGBA", {}),
        ("PNG", "L", {}),
        ("PNG", "LA", {}),
        ("JPEG", "L", {}),
        ("JPEG", "CMYK", {}),
    ],
)
def test_formats_and_modes_decode_to_the_same_answer(
    coffee: Image.Image, fmt: str, convert: str, params: dict[str, object]
) -> None:
    image = coffee.convert(convert) if convert != "P" else coffee.quantize(256)
    result = caption(encode(image, fmt, **params))
    assert names(result)[0] == "espresso"
    assert source(encode(image, fmt, **params)).info.format in LocalProvider.formats


def test_sixteen_bit_greyscale_is_scaled_not_clipped(coffee: Image.Image) -> None:
    grey16 = Image.fromarray(np.asarray(coffee.convert("L"), dtype=np.uint16) * 257)
    assert grey16.mode == "I;16"
    decoded = local.decode_image(encode(grey16, "PNG"))
    assert decoded.mode == "RGB"
    assert np.asarray(decoded).std() > 20  # clipping at 255 would leave it almost all white
    assert names(caption(encode(grey16, "PNG")))[0] == "espresso"


def test_transparency_is_composited_on_white() -> None:
    clear = Image.new("RGBA", (64, 48), (0, 0, 0, 0))  # black, but fully transparent
    decoded = local.decode_image(encode(clear, "PNG"))
    assert decoded.mode == "RGB"
    assert decoded.getpixel((10, 10)) == (255, 255, 255)
    result = caption(encode(clear, "PNG"), "short")
    assert result.text == "A photo."  # blank: not "very blurry"
    assert not signals(result)


def test_exif_orientation_is_applied(coffee: Image.Image) -> None:
    sideways = coffee.transpose(Image.Transpose.ROTATE_90)  # stored as a phone would
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    data = encode(sideways, "JPEG", quality=90, exif=exif.tobytes())
    assert local.decode_image(data).size == coffee.size  # upright again: 600 x 400
    upright = caption(data)
    assert names(upright)[0] == "espresso"
    as_stored = caption(encode(sideways, "JPEG", quality=90))
    assert upright.labels[0].score > as_stored.labels[0].score + 0.2


def test_large_jpeg_is_decoded_at_reduced_size(coffee: Image.Image) -> None:
    big = coffee.resize((4800, 3200), Image.Resampling.BICUBIC)
    data = encode(big, "JPEG", quality=90)
    decoded = local.decode_image(data)
    # DCT scaling by 1/2: 2400 x 1600, the smallest still at least 1024 px a side (the text
    # reader's need; the classifier alone would do with 256).
    assert decoded.size == (2400, 1600)
    assert min(decoded.size) >= local.DRAFT_SIZE
    assert names(caption(data))[0] == "espresso"


def test_mpo_camera_files_decode(coffee: Image.Image) -> None:
    data = encode(coffee, "MPO", save_all=True, append_images=[coffee.copy()], quality=90)
    assert source(data).info.format == "MPO"
    assert names(caption(data))[0] == "espresso"


def test_tiny_images_work() -> None:
    result = caption(encode(Image.new("RGB", (1, 1), "red"), "PNG"))
    assert len(result.labels) == 5
    assert result.text.startswith("A photo")


# -- failures ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"not an image at all" * 10, id="garbage"),
        pytest.param((SKIMAGE_DATA / "coffee.png").read_bytes()[:20_000], id="truncated-png"),
        pytest.param((SKIMAGE_DATA / "rocket.jpg").read_bytes()[:5_000], id="truncated-jpeg"),
        pytest.param(b"%PDF-1.7\n" + b"0" * 100, id="pdf"),
    ],
)
def test_undecodable_bodies_raise_provider_image_error(body: bytes) -> None:
    image = ImageSource(ImageInfo("PNG", 600, 400, len(body)), read=lambda: body, name="k.png")
    with pytest.raises(ProviderImageError, match=r"cannot decode image k\.png"):
        LocalProvider().caption(image, "normal", deadline=time.monotonic() + 30)


def test_formats_outside_the_list_are_not_decoded(coffee: Image.Image) -> None:
    with pytest.raises(ProviderImageError):
        local.decode_image(encode(coffee, "TIFF"))
    assert "TIFF" not in LocalProvider.formats


def test_a_passed_deadline_is_transient(coffee: Image.Image) -> None:
    with pytest.raises(ProviderTransientError, match="deadline"):
        LocalProvider().caption(source(encode(coffee, "PNG")), "short", deadline=0.0)


def test_missing_model_is_a_config_error(tmp_path: Path, coffee: Image.Image) -> None:
    provider = LocalProvider(tmp_path / "missing.onnx")
    with pytest.raises(ProviderConfigError, match="missing"):
        provider.caption(source(encode(coffee, "PNG")), "short", deadline=time.monotonic() + 30)


def test_corrupt_model_is_a_config_error(tmp_path: Path, coffee: Image.Image) -> None:
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    (tmp_path / local.LABELS_FILE.name).write_text("[]")
    provider = LocalProvider(tmp_path / "bad.onnx")
    with pytest.raises(ProviderConfigError, match="cannot load local model"):
        provider.caption(source(encode(coffee, "PNG")), "short", deadline=time.monotonic() + 30)


# -- the model files, loading and concurrency ----------------------------------------------------


@pytest.mark.parametrize("path", MODEL_FILES, ids=lambda p: p.name)
def test_model_sha256_matches_model_md(path: Path) -> None:
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    assert f"sha256 `{sha}`" in MODEL_MD.read_text(), f"MODEL.md has no sha256 of {path.name}"
    result = caption(photo("coffee.png"))
    assert f"@{sha[:12]}" in (result.model or "")


def test_labels_file_has_the_thousand_imagenet_classes() -> None:
    labels = json.loads(local.LABELS_FILE.read_text())
    assert len(labels) == 1000
    assert labels[0].startswith("tench") and labels[281] == "tabby, tabby cat"
    assert labels[967] == "espresso" and labels[999].startswith("toilet tissue")


def test_provider_satisfies_the_protocol() -> None:
    provider: CaptionProvider = LocalProvider()
    assert provider.name == "local"
    assert {"PNG", "JPEG", "GIF", "WEBP"} <= provider.formats


def test_model_is_loaded_once_and_shared_across_threads() -> None:
    data = {p: (SKIMAGE_DATA / p).read_bytes() for p in ("coffee.png", "chelsea.png")}
    expected = {p: caption(body).labels for p, body in data.items()}
    model = local.load_model()
    jobs = [p for p in data for _ in range(8)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda p: (p, caption(data[p]).labels), jobs))
    assert all(labels == expected[p] for p, labels in results)
    assert local.load_model() is model


def test_importing_the_module_does_not_load_onnxruntime_or_numpy() -> None:
    code = (
        "import sys, captioner.providers.local\n"
        "heavy = {'onnxruntime', 'numpy'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    functions_dir = str(Path(captioner.__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": functions_dir}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)
