"""Buckets the stack does not own (template parameter ExistingBucketNames): their objects reach
the function as EventBridge "Object Created" / "Object Deleted" events, which the stack's rule
delivers as SQS message bodies. The handler takes the bucket from each event, so it captions
them exactly like uploads to UploadBucket; here against moto and the fake ModelsLab, with an
unversioned bucket, as a team's existing bucket often is."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

import pytest

from captioner import handler
from tests import images
from tests.conftest import Aws, eventbridge_event, fast, sqs_event

EXISTING_BUCKET = "team-photos"


@pytest.fixture
def existing(app_env: Aws) -> Aws:
    app_env.s3.create_bucket(Bucket=EXISTING_BUCKET)  # no versioning, no notifications
    return app_env


def deliver(event: dict[str, Any], ctx: Any) -> dict[str, Any]:
    """What ExistingBucketsRule -> CaptionQueue -> the SQS event source hands the handler."""
    fast(handler.get_app())
    return handler.lambda_handler(sqs_event(event), ctx)


def put(aws: Aws, key: str, body: bytes) -> dict[str, Any]:
    resp = aws.s3.put_object(Bucket=EXISTING_BUCKET, Key=key, Body=body)
    assert "VersionId" not in resp
    return {"etag": resp["ETag"].strip('"'), "size": len(body)}


def tags(aws: Aws, key: str) -> dict[str, str]:
    resp = aws.s3.get_object_tagging(Bucket=EXISTING_BUCKET, Key=key)
    return {t["Key"]: t["Value"] for t in resp["TagSet"]}


def test_object_created_in_an_existing_bucket_is_captioned_and_tagged(
    existing: Aws, fake_modelslab: Any, lambda_context: Any
) -> None:
    key = "holiday/beach day.png"  # EventBridge keys arrive decoded
    obj = put(existing, key, images.png(90, 60))
    event = eventbridge_event(key, bucket=EXISTING_BUCKET, size=obj["size"], etag=obj["etag"],
                              sequencer="0066A1B2C3D4E5F610")  # fmt: skip

    assert deliver(event, lambda_context) == {"batchItemFailures": []}

    row = existing.row(key, bucket=EXISTING_BUCKET)
    assert row is not None and row["status"] == "CAPTIONED"
    assert row["bucket"] == EXISTING_BUCKET and row["key"] == key
    assert (row["format"], row["width"], row["height"]) == ("PNG", 90, 60)
    assert row["etag"] == obj["etag"] and "version_id" not in row
    assert tags(existing, key) == {"caption": row["caption"]}
    assert row["caption"] == "A picture named beach day.png."
    # ModelsLab got a presigned URL of that object in that bucket (no version: unversioned)
    (call,) = fake_modelslab.paid_calls()
    url = urlparse(call.body["init_image"])
    assert url.hostname == f"{EXISTING_BUCKET}.s3.amazonaws.com"
    assert unquote(url.path) == f"/{key}" and "versionId" not in parse_qs(url.query)
    # the row belongs to the existing bucket, not to the stack's own
    assert existing.row(key) is None


def test_object_deleted_from_an_existing_bucket_marks_its_row_deleted(
    existing: Aws, fake_modelslab: Any, lambda_context: Any
) -> None:
    key = "scans/receipt.png"
    obj = put(existing, key, images.png())
    created = eventbridge_event(key, bucket=EXISTING_BUCKET, size=obj["size"], etag=obj["etag"],
                                sequencer="0066A1B2C3D4E5F620")  # fmt: skip
    assert deliver(created, lambda_context) == {"batchItemFailures": []}
    existing.s3.delete_object(Bucket=EXISTING_BUCKET, Key=key)

    deleted = eventbridge_event(key, bucket=EXISTING_BUCKET, detail_type="Object Deleted",
                                sequencer="0066A1B2C3D4E5F630")  # fmt: skip
    deleted["detail"].update({"reason": "DeleteObject", "deletion-type": "Permanently Deleted"})
    assert deliver(deleted, lambda_context) == {"batchItemFailures": []}

    row = existing.row(key, bucket=EXISTING_BUCKET)
    assert row["status"] == "DELETED" and row["caption"]  # the caption is kept
    assert len(fake_modelslab.paid_calls()) == 1
