"""Turn the event shapes that reach the function into plain ``ObjectEvent`` values.

Three shapes carry the same fact ("this object version was created/removed"):
an S3 notification (``{"Records": [{"eventSource": "aws:s3", ...}]}``, key URL-encoded with
``+`` for spaces), an EventBridge "Object Created"/"Object Deleted" event (key not encoded),
and either of them wrapped in an SQS message body. S3's ``s3:TestEvent`` is recognised and
ignored. Anything else raises ``MalformedEvent`` so the message dead-letters visibly.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote_plus, unquote_plus

from captioner.errors import CaptionerError

Kind = Literal["created", "removed", "ignored"]


class MalformedEvent(CaptionerError):
    """The message is not an event shape we understand; it fails and dead-letters."""


@dataclass(frozen=True)
class ObjectEvent:
    kind: Kind
    bucket: str
    key: str
    event_name: str
    version_id: str | None = None
    etag: str | None = None
    size: int | None = None
    sequencer: str | None = None
    provider: str | None = None  # a backfill may ask for a provider other than the default
    # a re-caption asked for explicitly (``captioner ui``): replaces a finished caption of
    # this version, a human one included (store.is_human_caption)
    force: bool = False

    @property
    def is_folder_marker(self) -> bool:
        return self.key.endswith("/")

    @property
    def is_delete_marker(self) -> bool:
        return self.event_name.endswith("DeleteMarkerCreated") or self.event_name == "DeleteMarker"


def parse_message_body(body: str) -> list[ObjectEvent]:
    """Parse one SQS message body. An empty list means "nothing to do" (e.g. a TestEvent)."""
    try:
        payload = json.loads(body)
    except (TypeError, ValueError) as exc:
        raise MalformedEvent(f"message body is not JSON: {exc}") from None
    return parse_payload(payload)


def parse_payload(payload: Any) -> list[ObjectEvent]:
    """Parse an S3 notification, an EventBridge S3 event or an S3 TestEvent."""
    if not isinstance(payload, dict):
        raise MalformedEvent(f"expected a JSON object, got {type(payload).__name__}")
    if payload.get("Event") == "s3:TestEvent":
        return []
    if "Records" in payload:
        records = payload["Records"]
        if not isinstance(records, list):
            raise MalformedEvent("'Records' is not a list")
        return [_from_s3_record(r) for r in records]
    if payload.get("source") == "aws.s3" and "detail" in payload:
        return [_from_eventbridge(payload)]
    raise MalformedEvent("not an S3 notification, an EventBridge S3 event or an s3:TestEvent")


def _object_of(shape: str, read: Callable[[], tuple[Any, Any]]) -> tuple[str, Any, str]:
    """(bucket, object, key) from ``read()`` → (the bucket's part, the object's part) of an
    event of this ``shape``; MalformedEvent when a part is missing or empty."""
    try:
        bucket_part, obj = read()
        bucket, key = str(bucket_part["name"]), obj["key"]
    except (KeyError, TypeError) as exc:
        raise MalformedEvent(f"{shape} lacks {exc}") from None
    if not isinstance(key, str) or not bucket:
        raise MalformedEvent(f"{shape} has an empty bucket or a non-string key")
    return bucket, obj, key


def _from_s3_record(record: Any) -> ObjectEvent:
    def read() -> tuple[Any, Any]:
        s3 = record["s3"]
        return s3["bucket"], s3["object"]

    bucket, obj, raw_key = _object_of("S3 record", read)
    try:
        name = str(record["eventName"])
    except (KeyError, TypeError) as exc:
        raise MalformedEvent(f"S3 record lacks {exc}") from None
    return ObjectEvent(
        kind=_kind(name),
        bucket=bucket,
        key=unquote_plus(raw_key),
        event_name=name,
        version_id=_version(obj.get("versionId")),
        etag=_etag(obj.get("eTag")),
        size=_size(obj.get("size")),
        sequencer=_sequencer(obj.get("sequencer")),
        provider=_provider(record.get("captioner")),
        force=_force(record.get("captioner")),
    )


def _from_eventbridge(event: dict[str, Any]) -> ObjectEvent:
    detail_type = str(event.get("detail-type", ""))
    detail = event["detail"]
    bucket, obj, key = _object_of(
        "EventBridge S3 event", lambda: (detail["bucket"], detail["object"])
    )
    if detail_type == "Object Created":
        kind: Kind = "created"
        name = f"ObjectCreated:{detail.get('reason', 'PutObject')}"
    elif detail_type == "Object Deleted":
        kind = "removed"
        deletion = detail.get("deletion-type", "")
        name = (
            "ObjectRemoved:DeleteMarkerCreated" if "Marker" in deletion else "ObjectRemoved:Delete"
        )
    else:
        kind, name = "ignored", detail_type
    return ObjectEvent(
        kind=kind,
        bucket=bucket,
        key=key,  # EventBridge keys are not URL-encoded
        event_name=name,
        version_id=_version(obj.get("version-id")),
        etag=_etag(obj.get("etag")),
        size=_size(obj.get("size")),
        sequencer=_sequencer(obj.get("sequencer")),
    )


def _provider(extra: Any) -> str | None:
    if not isinstance(extra, dict):
        return None
    name = extra.get("provider")
    return str(name).strip().lower() if name else None


def _force(extra: Any) -> bool:
    return isinstance(extra, dict) and extra.get("force") is True


def _kind(event_name: str) -> Kind:
    # Tagging, ACL, restore and lifecycle events say nothing new about the pixels; tagging
    # events in particular are caused by our own writes and must never loop back.
    if event_name.startswith("ObjectCreated:"):
        return "created"
    if event_name.startswith("ObjectRemoved:"):
        return "removed"
    return "ignored"


def _version(value: Any) -> str | None:
    # S3 sends "null" for objects written while versioning was off or suspended.
    return str(value) if value not in (None, "", "null") else None


# Every bucket name S3 has allowed, legacy us-east-1 names (capitals, underscores, up to 255
# characters) included; never a "#", which the table's own partitions start with.
_BUCKET_NAME = re.compile(r"[A-Za-z0-9._-]{1,255}")


def is_bucket_name(name: str) -> bool:
    return bool(_BUCKET_NAME.fullmatch(name))


def _sequencer(value: Any) -> str | None:
    """S3's sequencer: a hexadecimal string. Anything else (a number, a list, text that is
    not hex) orders nothing, so it counts as absent and a HEAD of the object decides."""
    if not isinstance(value, str):
        return None
    value = value.strip()
    return value if value and all(c in _HEX for c in value) else None


_HEX = frozenset("0123456789abcdefABCDEF")


def _etag(value: Any) -> str | None:
    return str(value).strip('"') or None if value else None


def _size(value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        size = int(value)
    except (TypeError, ValueError):
        raise MalformedEvent(f"object size is not a number: {value!r}") from None
    if size < 0:
        raise MalformedEvent(f"object size is negative: {size}")
    return size


def backfill_message(
    bucket: str,
    key: str,
    *,
    version_id: str | None,
    etag: str | None,
    size: int | None,
    provider: str | None = None,
    force: bool = False,
) -> str:
    """An S3-notification-shaped SQS body for an object that existed before the stack.

    Backfill reuses the notification shape so the handler has a single parser; it carries no
    sequencer (there was no event), so ordering falls back to the object's version.
    ``provider`` asks for a provider other than the deployment's default (re-captioning);
    ``force`` replaces a finished caption of the version, a human one included.
    """
    obj: dict[str, Any] = {"key": quote_plus(key)}
    if version_id:
        obj["versionId"] = version_id
    if etag:
        obj["eTag"] = etag
    if size is not None:
        obj["size"] = size
    record = {
        "eventVersion": "2.1",
        "eventSource": "captioner:backfill",
        "eventName": "ObjectCreated:Backfill",
        "s3": {"s3SchemaVersion": "1.0", "bucket": {"name": bucket}, "object": obj},
    }
    extra: dict[str, Any] = {}
    if provider:
        extra["provider"] = provider
    if force:
        extra["force"] = True
    if extra:
        record["captioner"] = extra
    return json.dumps({"Records": [record]})
