import pytest

from captioner.errors import ImageRejected
from captioner.images import ImageLimits, check_image, sniff_format
from tests import images

LIMITS = ImageLimits(frozenset({"PNG", "JPEG"}), max_bytes=10_000_000, max_pixels=40_000_000,
                     header_bytes=64 * 1024, max_header_bytes=1024 * 1024)  # fmt: skip


class Reader:
    """Serves prefixes of a byte string and records how much was asked for."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.asked: list[int] = []

    def __call__(self, n: int) -> bytes:
        self.asked.append(n)
        return self.data[:n]


def check(data: bytes, limits: ImageLimits = LIMITS):
    reader = Reader(data)
    return check_image(reader, len(data), limits), reader


def test_png_and_jpeg_headers_give_format_and_size():
    info, _reader = check(images.png(300, 200))
    assert (info.format, info.width, info.height) == ("PNG", 300, 200)
    info, _ = check(images.jpeg(640, 480))
    assert (info.format, info.width, info.height) == ("JPEG", 640, 480)


def test_only_a_prefix_is_read():
    data = images.jpeg(64, 64) + b"\0" * 500_000
    _, reader = check(data)
    assert reader.asked == [64 * 1024]


def test_large_icc_profile_triggers_one_larger_read():
    info, reader = check(images.jpeg_with_big_icc(200_000))
    assert info.width == 80 and reader.asked == [64 * 1024, len(reader.data)]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (images.gif(), "GIF"),
        (images.webp(), "WEBP"),
        (b"BM" + b"\0" * 60, "BMP"),
        (b"\0\0\0\x1cftypheic" + b"\0" * 40, "HEIC"),
    ],
)
def test_sniff_recognises_unsupported_images(data, expected):
    assert sniff_format(data) == expected
    with pytest.raises(ImageRejected, match=f"unsupported format {expected}"):
        check(data)


def test_formats_follow_the_provider():
    limits = ImageLimits(
        frozenset({"PNG", "JPEG", "GIF", "WEBP"}), 10_000_000, 40_000_000, 65536, 1048576
    )
    info, _ = check(images.webp(), limits)
    assert info.format == "WEBP"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty object"),
        (b"%PDF-1.7 not an image", "not an image"),
        (images.corrupt_header_png(), "corrupt PNG header"),
        (images.png_header_claiming(10_000, 10_000), "over the 40,000,000 limit"),
        (images.png_header_claiming(200_000, 200_000), "decompression bomb"),
        (images.png_header_claiming(0, 10), "corrupt"),
        (b"\xff\xd8\xff" + b"\0" * 100, "corrupt JPEG header"),
    ],
)
def test_bad_inputs_are_rejected_with_a_reason(data, message):
    with pytest.raises(ImageRejected, match=message):
        check(data)


def test_size_limit_is_checked_before_any_read():
    reader = Reader(images.png())
    with pytest.raises(ImageRejected, match="CAPTION_MAX_IMAGE_BYTES"):
        check_image(reader, 50_000_000, LIMITS)
    assert reader.asked == []


def test_camera_mpo_jpegs_are_jpegs():
    info, _ = check(images.mpo())
    assert (info.format, info.width, info.height) == ("JPEG", 90, 70)
