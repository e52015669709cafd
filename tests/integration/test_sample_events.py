"""The sample events in events/ (for `sam local invoke -e`) drive the real handler."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import unquote_plus

import pytest

from captioner import handler
from tests import images
from tests.conftest import fast

EVENTS = Path(__file__).resolve().parents[2] / "events"


def load(name: str) -> dict:
    return json.loads((EVENTS / name).read_text(encoding="utf-8"))


def s3_object_of(event: dict) -> tuple[str, str]:
    record = event["Records"][0]
    if "body" in record:
        body = json.loads(record["body"])
        if "detail" in body:
            return body["detail"]["bucket"]["name"], body["detail"]["object"]["key"]
        record = body["Records"][0]
    return record["s3"]["bucket"]["name"], unquote_plus(record["s3"]["object"]["key"])


@pytest.fixture
def sample_bucket(app_env):
    app_env.s3.create_bucket(Bucket="captioner-uploads-example")
    return app_env


def without_version(event: dict) -> dict:
    """The samples name a version id from AWS's docs, which moto cannot serve; drop it (the
    handler then HEADs the object) and keep everything else as documented."""
    for record in event["Records"]:
        if "body" in record:
            body = json.loads(record["body"])
            if "detail" in body:
                body["detail"]["object"].pop("version-id", None)
            else:
                body["Records"][0]["s3"]["object"].pop("versionId", None)
            record["body"] = json.dumps(body)
        else:
            record["s3"]["object"].pop("versionId", None)
    return event


@pytest.mark.parametrize("name", ["s3-put.json", "sqs-s3-put.json", "sqs-eventbridge-put.json"])
def test_sample_put_events_caption_their_object(
    sample_bucket, fake_modelslab, lambda_context, name
):
    event = without_version(load(name))
    bucket, key = s3_object_of(event)
    sample_bucket.s3.put_object(Bucket=bucket, Key=key, Body=images.jpeg())
    fast(handler.get_app())
    result = handler.lambda_handler(event, lambda_context)
    assert result.get("batchItemFailures", []) == []
    assert sample_bucket.row(key, bucket=bucket)["status"] == "CAPTIONED"


def test_sample_test_event_is_ignored(app_env, fake_modelslab, lambda_context):
    assert handler.lambda_handler(load("sqs-s3-testevent.json"), lambda_context) == {
        "batchItemFailures": []
    }
    assert fake_modelslab.requests == []


def test_sample_delete_event_without_a_row_leaves_a_tombstone(sample_bucket, lambda_context):
    """A delete that arrives before its object's create (S3 does not order deliveries)
    leaves a DELETED row, so the late create is refused as older instead of captioned."""
    event = load("s3-delete.json")
    bucket, key = s3_object_of(event)
    assert handler.lambda_handler(event, lambda_context)["outcomes"][0]["status"] == "DELETED"
    row = sample_bucket.row(key, bucket=bucket)
    assert row["status"] == "DELETED" and row["sequencer"] == "0066A1B2F0A1B2C3D4"
