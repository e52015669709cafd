"""S3 object tags: make a caption a valid tag value and merge it into the existing tag set.

S3 allows at most 10 tags per object version; keys up to 128 and values up to 256
characters from Unicode letters, numbers, separators and ``_ . : / = + - @``. moto does not
enforce the character rules, so this module does.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from enum import StrEnum

MAX_TAGS = 10
MAX_VALUE_CHARS = 256
_ALLOWED_PUNCT = frozenset("_.:/=+-@")
# Punctuation a caption commonly has, mapped to the nearest allowed character.
_REPLACEMENTS = {
    "'": "",
    "\u2019": "",
    "\u2018": "",
    "&": "+",
    ",": " ",
    ";": " ",
    "!": ".",
    "?": ".",
}
_SPACES = re.compile(r" {2,}")


class TagStatus(StrEnum):
    WRITTEN = "WRITTEN"  # our caption tag is on the object version
    KEPT_EXISTING = "KEPT_EXISTING"  # the uploader set the caption tag; we left it alone
    LIMIT_REACHED = "LIMIT_REACHED"  # the version already had 10 tags; we kept them all
    FAILED = "FAILED"  # PutObjectTagging failed (or the object changed); see last_error


# A caption whose tag step ended in one of these is finished; otherwise a later delivery
# (or a backfill) finishes the tag without paying again.
TAG_SETTLED = frozenset({TagStatus.WRITTEN, TagStatus.KEPT_EXISTING, TagStatus.LIMIT_REACHED})


@dataclass(frozen=True)
class TagPlan:
    status: TagStatus
    tags: list[tuple[str, str]] | None  # the full tag set to write, or None to write nothing
    value: str = ""  # the caption tag value (what we wrote, or would have)


def tag_value(text: str) -> str:
    """A valid S3 tag value for ``text``: NFC, allowed characters only, at most 256 chars."""
    text = unicodedata.normalize("NFC", text)
    out = []
    for ch in text:
        ch = _REPLACEMENTS.get(ch, ch)
        if not ch:
            continue
        cat = unicodedata.category(ch)
        if cat[0] in "LN" or ch in _ALLOWED_PUNCT:
            out.append(ch)
        else:  # separators, newlines, tabs, symbols, marks, controls
            out.append(" ")
    value = _SPACES.sub(" ", "".join(out)).strip()
    if len(value) > MAX_VALUE_CHARS:
        cut = value[:MAX_VALUE_CHARS]
        space = cut.rfind(" ")
        value = (cut[:space] if space > MAX_VALUE_CHARS // 2 else cut).rstrip(" .")
    return value


def is_valid_value(value: str) -> bool:
    """S3's rule for tag values: ``[\\p{L}\\p{Z}\\p{N}_.:/=+\\-@]*``, at most 256 characters."""
    return len(value) <= MAX_VALUE_CHARS and all(
        unicodedata.category(ch)[0] in "LNZ" or ch in _ALLOWED_PUNCT for ch in value
    )


def plan_caption_tag(
    existing: list[tuple[str, str]], tag_key: str, caption: str, ours: str | None = None
) -> TagPlan:
    """Where the caption tag goes, keeping every tag the uploader set.

    A caption tag already present is ours to replace only when it is the value we wrote
    before (``ours``, remembered in the row: a re-caption) or would write now (a retry);
    any other value was set by the uploader and is theirs.
    """
    value = tag_value(caption)
    current = dict(existing)
    if tag_key in current:
        if current[tag_key] == value:
            return TagPlan(TagStatus.WRITTEN, None, value)
        if ours is not None and current[tag_key] == ours:
            replaced = [(k, value if k == tag_key else v) for k, v in current.items()]
            return TagPlan(TagStatus.WRITTEN, replaced, value)
        return TagPlan(TagStatus.KEPT_EXISTING, None, value)
    if len(current) >= MAX_TAGS:
        return TagPlan(TagStatus.LIMIT_REACHED, None, value)
    # dict() above also drops duplicate keys, which S3 rejects but moto accepts.
    return TagPlan(TagStatus.WRITTEN, [*current.items(), (tag_key, value)], value)


def is_opted_out(existing: list[tuple[str, str]], skip_tag: str) -> bool:
    """The uploader opted out with ``<skip_tag>=true`` (case and spaces ignored)."""
    return any(k == skip_tag and v.strip().lower() == "true" for k, v in existing)
