"""Two places where moto 5.2.5 (pinned in pyproject) differs from S3 on the path existing
buckets use, corrected in this process for the local stack (its moto server runs here).

1. ``GetBucketNotificationConfiguration`` leaves ``EventBridgeConfiguration`` out even when
   it is on, so a read-merge-write (``captioner connect``) could never tell it is on.
2. The EventBridge events moto makes for S3 differ from S3's own: every event carries the same
   ``sequencer`` ("617f08299329d189"), the ETag is under ``eTag`` instead of ``etag``,
   ``reason`` is "ObjectCreated" instead of "PutObject", ``deletion-type`` is missing, and
   unversioned objects get ``version-id: "null"``. The same sequencer on every event would
   make the function take a delete for an event no newer than the create, so the row would
   never turn DELETED. The corrected event is shaped like S3's
   (https://docs.aws.amazon.com/AmazonS3/latest/userguide/ev-events.html) but carries no
   sequencer, since moto has none to give: the function then orders events by a HEAD of the
   current object, exactly as it does for moto's S3 notifications to the upload bucket.

Delivery itself is moto's: the event goes through the rules of every event bus, whose
patterns moto matches, to their SQS targets. ``install`` is idempotent; ``tests/tools``
checks both corrections and that the moto functions they replace are still there.
"""

from __future__ import annotations

import copy
import logging
import time
import uuid
import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING, Any

from captioner_tools.errors import LocalStackError

if TYPE_CHECKING:  # moto's own type for an event on a bus
    from moto.events.utils import EventMessageType

_S3_NS = "http://s3.amazonaws.com/doc/2006-03-01/"
# S3 notification event names → the "reason" of S3's EventBridge events.
_REASONS = {
    "s3:ObjectCreated:Put": "PutObject",
    "s3:ObjectCreated:Post": "POST Object",
    "s3:ObjectCreated:Copy": "CopyObject",
    "s3:ObjectCreated:CompleteMultipartUpload": "CompleteMultipartUpload",
    "s3:ObjectRemoved:Delete": "DeleteObject",
    "s3:ObjectRemoved:DeleteMarkerCreated": "DeleteObject",
    "s3:LifecycleExpiration:Delete": "Lifecycle Expiration",
    "s3:LifecycleExpiration:DeleteMarkerCreated": "Lifecycle Expiration",
}
_installed = False

log = logging.getLogger(__name__)


def install() -> None:
    """Apply both corrections to moto in this process (once)."""
    global _installed
    if _installed:
        return
    from moto.s3 import notifications
    from moto.s3.responses import S3Response

    for owner, name in ((S3Response, "get_bucket_notification"),
                        (notifications, "_send_event_bridge_message"),
                        (notifications, "_detail_type")):  # fmt: skip
        if not callable(getattr(owner, name, None)):
            raise LocalStackError(
                f"this moto has no {name}: the local stack's corrections "
                "(captioner_tools.local.motofixes) need the moto version pyproject pins"
            )
    original_get = S3Response.get_bucket_notification

    def get_bucket_notification(self: Any) -> Any:
        status, headers, body = original_get(self)
        config = self.backend.get_bucket_notification_configuration(self.bucket_name)
        if config is not None and config.event_bridge is not None:
            body = with_eventbridge_element(body)
        return status, headers, body

    # a correction installed into moto's class at run time (checked above: the method exists)
    S3Response.get_bucket_notification = get_bucket_notification  # type: ignore[method-assign]
    notifications._send_event_bridge_message = send_eventbridge_event
    _installed = True


def with_eventbridge_element(body: str | bytes) -> str:
    """A GetBucketNotificationConfiguration body with ``<EventBridgeConfiguration/>``."""
    ET.register_namespace("", _S3_NS)
    root = ET.fromstring(body)  # noqa: S314 - moto's own response, made in this process
    if root.find(f"{{{_S3_NS}}}EventBridgeConfiguration") is None:
        ET.SubElement(root, f"{{{_S3_NS}}}EventBridgeConfiguration")
    return ET.tostring(root, encoding="unicode", xml_declaration=True)


def s3_eventbridge_event(
    account_id: str, region: str, bucket: str, event_name: str, key: Any
) -> EventMessageType:
    """The event S3 sends EventBridge for ``event_name`` on ``key``, without a sequencer."""
    from moto.s3.notifications import _detail_type

    obj: dict[str, Any] = {"key": key.name, "etag": str(key.etag).strip('"')}
    detail_type = _detail_type(event_name)
    if detail_type == "Object Created":
        obj["size"] = key.size
    if key.version_id not in (None, "", "null"):
        obj["version-id"] = key.version_id
    detail: dict[str, Any] = {
        "version": "0",
        "bucket": {"name": bucket},
        "object": obj,
        "request-id": uuid.uuid4().hex[:16].upper(),
        "requester": account_id,
        "source-ip-address": "127.0.0.1",
        "reason": _REASONS.get(event_name, event_name.split(":")[1]),
    }
    if detail_type == "Object Deleted":
        marker = event_name.endswith("DeleteMarkerCreated")
        detail["deletion-type"] = "Delete Marker Created" if marker else "Permanently Deleted"
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": detail_type,
        "source": "aws.s3",
        "account": account_id,
        # moto's rule turns epoch seconds into S3's "2026-11-25T10:15:30Z" when it delivers
        "time": time.time(),
        "region": region,
        "resources": [f"arn:aws:s3:::{bucket}"],
        "detail": detail,
    }


def send_eventbridge_event(account_id: str, bucket: Any, event_name: str, key: Any) -> None:
    """moto's ``_send_event_bridge_message`` with S3's event: to every rule of every bus."""
    try:
        from moto.events.models import events_backends

        event = s3_eventbridge_event(account_id, bucket.region_name, bucket.name, event_name, key)
        backend = events_backends[account_id][bucket.region_name]
        for bus in list(backend.event_buses.values()):
            for rule in list(bus.rules.values()):
                rule.send_to_targets(copy.deepcopy(event), transform_input=False)
    except Exception:  # S3 sends asynchronously: a failed delivery never fails the upload
        log.exception("EventBridge event for s3://%s/%s not delivered", bucket.name, key.name)
