"""What the chat-style vision providers (``openai``, ``bedrock``) share: the prompt that asks
for one caption of the chosen length, the clean-up of the model's reply, and image bytes
kept within an API's size limits."""

from __future__ import annotations

import io
import re

from captioner.providers.base import Length

# A caption is text for people; keeps the row far below DynamoDB's 400 KB item limit.
MAX_CAPTION_CHARS = 16_000

_LENGTH_ASKED: dict[Length, str] = {
    "short": "one short caption of at most 10 words",
    "normal": "one caption of a single sentence, about 15 to 25 words",
    "long": "one detailed caption of two or three sentences",
}
# Enough tokens for the asked length with room to spare; a reply cut short is still usable.
MAX_TOKENS: dict[Length, int] = {"short": 40, "normal": 100, "long": 250}

_WRAPPERS = re.compile(r'^(caption\s*:\s*)?["“”\'`]+|["“”\'`]+$', re.IGNORECASE)


def caption_prompt(length: Length) -> str:
    return (
        f"Write {_LENGTH_ASKED[length]} describing this image for alt text. "
        "Say what is visibly there; do not guess identities. "
        "Reply with the caption only: no preamble, no quotes, no lists."
    )


def clean_caption(text: str) -> str:
    """One line of caption: whitespace collapsed, a "Caption:" label and wrapping quotes
    removed, clipped at a word boundary."""
    text = " ".join(text.split())
    text = _WRAPPERS.sub("", text).strip()
    if len(text) <= MAX_CAPTION_CHARS:
        return text
    cut = text[:MAX_CAPTION_CHARS]
    return cut[: cut.rfind(" ")] if " " in cut[MAX_CAPTION_CHARS // 2 :] else cut


def fit_image(
    data: bytes, fmt: str, max_bytes: int, max_side: int = 2048, *, force: bool = False
) -> tuple[bytes, str]:
    """The image as it may be sent: unchanged when under ``max_bytes`` (and not ``force``d:
    too many pixels), otherwise re-encoded as a JPEG of at most ``max_side`` pixels a side
    (the models see far fewer anyway)."""
    if len(data) <= max_bytes and not force:
        return data, fmt
    from PIL import Image  # only large images pay for decoding

    with Image.open(io.BytesIO(data)) as im:
        rgb = im.convert("RGB")
    side = max_side
    while True:  # lower the quality, then the size, until it fits
        small = rgb.copy()
        small.thumbnail((side, side))
        for quality in (85, 70):
            out = io.BytesIO()
            small.save(out, "JPEG", quality=quality)
            if out.tell() <= max_bytes or side <= 64:
                return out.getvalue(), "JPEG"
        side //= 2
