"""Whether a backfill sends an object to the caption queue: one set of rules for both
engines (``captioner backfill`` listing from the user's machine, and the function S3 Batch
Operations invokes).

The same version means the same ETag and size (ListObjectsV2 reports no version ids).
An object whose row is missing, of another version, or not finished is sent: the caption
function claims it, reuses a caption already paid for, and pays at most once per version.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from captioner.store import Status, is_human_caption
from captioner.tags import TAG_SETTLED, TagStatus


class Skip(StrEnum):
    """Why an object is not sent; the value is what a Batch Operations result says."""

    CAPTIONED = "already captioned"
    UPLOADER_CAPTION = "the uploader's own caption tag"
    REJECTED = "already rejected (same version)"
    OPTED_OUT = "opted out"
    OTHER_PROVIDER = "not captioned by the provider asked for"
    HUMAN_CAPTION = "a caption a person wrote"


@dataclass(frozen=True)
class Version:
    """What a listing or a HEAD says of an object's current version."""

    etag: str | None
    size: int


@dataclass(frozen=True)
class Asked:
    """What the backfill asks for: a provider other than the default, and/or only the rows
    one provider captioned."""

    provider: str | None = None
    only_provider: str | None = None


def skip_reason(version: Version, row: Mapping[str, Any] | None, asked: Asked) -> Skip | None:
    """Why the object is skipped, or None when it goes to the caption queue."""
    if asked.only_provider:
        return None if row and row.get("provider") == asked.only_provider else Skip.OTHER_PROVIDER
    if row is None or not same_version(version, row):
        return None
    if owes_event(row):
        return None  # the function announces it without paying again
    if is_human_caption(row):  # never replaced by a backfill (only a forced re-caption)
        return Skip.HUMAN_CAPTION
    status = row.get("status")
    if status == Status.REJECTED and not asked.provider:
        # the same bytes fail the same checks; another provider may accept other formats
        return Skip.REJECTED
    if status == Status.SKIPPED and str(row.get("reason", "")).startswith("opted out"):
        return Skip.OPTED_OUT
    if status != Status.CAPTIONED or row.get("tag_status") not in TAG_SETTLED:
        # not finished (a PENDING row whose delivery died, a tag still to write): the
        # function finishes it, reusing a paid caption instead of paying again
        return None
    if asked.provider and row.get("provider") != asked.provider:
        return None
    if row.get("tag_status") == TagStatus.KEPT_EXISTING:
        return Skip.UPLOADER_CAPTION
    return Skip.CAPTIONED


def same_version(version: Version, row: Mapping[str, Any]) -> bool:
    size = row.get("size")
    return version.etag == row.get("etag") and (size is None or int(size) == version.size)


def owes_event(row: Mapping[str, Any] | None) -> bool:
    """A finished row whose "Caption Status Changed" event was never sent (PutEvents failed,
    or the instance died right after the write)."""
    return bool(row and row.get("event_due") and row.get("event_due") == row.get("status"))
