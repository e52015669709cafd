"""Reviewing captions: a person's correction (``captioner edit``, the gallery), re-captions and
the alt-text export. Used by the CLI and by ``captioner ui``; never by the function.

An edit is three steps, in this order:

    row: CAPTIONED, caption_source=human, edited_at, word index   (store.save_human_caption)
    object: the caption tag, keeping the uploader's tags             (PutObjectTagging)
    row: tag_status / tag_value of the edit                          (store.save_human_tag)

and a "Caption Status Changed" event when the deployment has an event bus. From then on the
pipeline leaves this version's caption alone (duplicates, backfills, re-captions) unless a
re-caption is explicitly forced (``captioner.store.is_human_caption``).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from captioner.announce import Announcer, EventBridgePublisher
from captioner.events import backfill_message
from captioner.objects import ObjectMissing, ObjectStore
from captioner.store import (
    CAPTION_SOURCE,
    MODEL,
    CaptionStore,
    NotEditable,
    Status,
    is_human_caption,
)
from captioner.tags import TagStatus, plan_caption_tag
from captioner_tools.cli.target import Deployment
from captioner_tools.errors import CliError

MAX_CAPTION_CHARS = 2000
EXPORT_FORMATS = ("csv", "json", "jsonl")
# The export's columns, in order (CSV header row; JSON keys).
EXPORT_COLUMNS = ("bucket", "key", "version_id", "caption", "caption_source", "status")
DEFAULT_TAG_KEY = "caption"


def caption_source(row: dict[str, Any]) -> str | None:
    """``human`` or ``model`` for a row with a caption (rows from before the attribute are
    the model's), None without one."""
    if not row.get("caption"):
        return None
    return str(row.get(CAPTION_SOURCE) or MODEL)


def clean_caption(text: str) -> str:
    caption = " ".join(str(text).split())
    if not caption:
        raise CliError("a caption cannot be empty")
    if len(caption) > MAX_CAPTION_CHARS:
        raise CliError(f"a caption is at most {MAX_CAPTION_CHARS} characters")
    return caption


@dataclass
class Reviewer:
    """Edits and re-captions against one deployment."""

    deployment: Deployment

    def _store(self) -> CaptionStore:
        return CaptionStore(self.deployment.table, self.deployment.client("dynamodb"))

    def row(self, bucket: str, key: str) -> dict[str, Any] | None:
        return self._store().get(bucket, key)

    def _parameter(self, name: str) -> str | None:
        try:
            return self.deployment.parameters().get(name) or None
        except CliError:  # names given by flags, no stack to read
            return None

    def edit(
        self, bucket: str, key: str, caption: str, version_id: str | None = None
    ) -> dict[str, Any]:
        """Set a person's caption on the row of the object's current version (or of
        ``version_id``, refused when that is no longer the row's). Returns the row."""
        text = clean_caption(caption)
        store = self._store()
        row = store.get(bucket, key)
        if row is None or row.get("status") == Status.DELETED:
            raise CliError(f"no current object for s3://{bucket}/{key}")
        if version_id is not None and version_id != row.get("version_id"):
            raise CliError(
                f"s3://{bucket}/{key}: version {version_id} is no longer the row's "
                f"(it describes version {row.get('version_id')}); reload and edit that one"
            )
        objects = ObjectStore(self.deployment.client("s3"))
        try:
            objects.head(bucket, key, row.get("version_id"))
        except ObjectMissing:
            raise CliError(f"s3://{bucket}/{key}: that object version no longer exists") from None
        announcer = self._announcer(store)
        try:
            saved = store.save_human_caption(
                bucket, key, str(row["revision"]), text,
                announce=announcer.announce if announcer else None,
            )  # fmt: skip
        except NotEditable as exc:
            raise CliError(str(exc)) from None
        status, value, error = self._tag(objects, saved, text)
        store.save_human_tag(saved, status, value, error)
        # the row as it now is (its index entries and tag included), not as the write began
        return store.get(bucket, key) or saved

    def _tag(
        self, objects: ObjectStore, row: dict[str, Any], text: str
    ) -> tuple[TagStatus, str | None, str | None]:
        bucket, key, version = str(row["bucket"]), str(row["key"]), row.get("version_id")
        tag_key = self._parameter("CaptionTagKey") or DEFAULT_TAG_KEY
        try:
            tags = objects.get_tags(bucket, key, version)
            plan = plan_caption_tag(tags, tag_key, text, ours=row.get("tag_value"))
            if plan.tags is not None:
                objects.put_tags(bucket, key, version, plan.tags)
        except ObjectMissing:
            return TagStatus.FAILED, None, "the object version no longer exists"
        except Exception as exc:  # the caption is saved: say why the tag is not
            return TagStatus.FAILED, None, f"tag not written: {type(exc).__name__}"
        ours = plan.value if plan.status is TagStatus.WRITTEN else None
        return plan.status, ours, None

    def _announcer(self, store: CaptionStore) -> Announcer | None:
        bus = self._parameter("EventBusName")
        if not bus:
            return None
        publisher = EventBridgePublisher(self.deployment.client("events"), bus)
        return Announcer(publisher, store)

    def recaption(
        self, rows: Iterable[dict[str, Any]], *, replace_human: bool = False
    ) -> RecaptionPlan:
        """Enqueue a forced re-caption of each row (like a backfill: the same messages, with
        ``force``). Human captions are left out unless ``replace_human``."""
        plan = RecaptionPlan()
        sqs = self.deployment.client("sqs")
        for row in rows:
            if row.get("status") == Status.DELETED:
                plan.skipped_deleted += 1
                continue
            if is_human_caption(row) and not replace_human:
                plan.skipped_human += 1
                continue
            body = backfill_message(
                str(row["bucket"]), str(row["key"]), version_id=row.get("version_id"),
                etag=row.get("etag"), size=row.get("size"), force=True,
            )  # fmt: skip
            sqs.send_message(QueueUrl=self.deployment.queue_url, MessageBody=body)
            plan.enqueued += 1
        return plan


@dataclass
class RecaptionPlan:
    enqueued: int = 0
    skipped_human: int = 0
    skipped_deleted: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "enqueued": self.enqueued,
            "skipped_human": self.skipped_human,
            "skipped_deleted": self.skipped_deleted,
        }


def export_record(row: dict[str, Any]) -> dict[str, Any]:
    record = {name: row.get(name) for name in EXPORT_COLUMNS}
    record["caption_source"] = caption_source(row)
    return record


def _inert(value: Any) -> Any:
    """A CSV cell no spreadsheet runs as a formula (OWASP's CSV injection advice: a leading
    ``= + - @``, tab or carriage return gets a ``'``); JSON exports keep the text as it is."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def export_lines(rows: Iterable[dict[str, Any]], fmt: str) -> Iterator[str]:
    """The alt-text export, streamed: CSV with a header row, a JSON array, or JSON lines."""
    if fmt not in EXPORT_FORMATS:
        raise CliError(f"--format must be one of {', '.join(EXPORT_FORMATS)}, not {fmt!r}")
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=EXPORT_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _inert(v) for k, v in export_record(row).items()})
            yield buf.getvalue()
            buf.seek(0)
            buf.truncate()
        yield buf.getvalue()
        return
    if fmt == "jsonl":
        for row in rows:
            yield json.dumps(export_record(row), ensure_ascii=False) + "\n"
        return
    yield "["
    for i, row in enumerate(rows):
        yield ("," if i else "") + "\n  " + json.dumps(export_record(row), ensure_ascii=False)
    yield "\n]\n"
