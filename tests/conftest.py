"""Shared fixtures: moto AWS, the captions table built from template.yaml, a fake ModelsLab
on 127.0.0.1, and a Lambda context."""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from moto import mock_aws

from captioner import handler
from captioner_tools.local.atomic import serialize_moto
from captioner_tools.local.template import table_definition
from tests.fakes.modelslab import FakeModelsLab
from tests.fakes.openai import FakeOpenAI

API_KEY = "sk-test-DO-NOT-LEAK-7f3a9c"
BUCKET = "captioner-uploads-test"
TABLE = "captions-test"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-load", action="store_true", help="run long load tests")
    parser.addoption(
        "--schedules", type=int, default=25,
        help="random schedules tried by tests/faults/test_schedules.py (default 25)",
    )  # fmt: skip
    parser.addoption(
        "--schedules-random", action="store_true",
        help="explore new schedules each run instead of the same derandomized ones",
    )  # fmt: skip


def pytest_configure(config: pytest.Config) -> None:
    # pytest-xdist workers start with COLUMNS=80, and Rich fixes a console's width when it is
    # made with COLUMNS set: the CLI's tables would be cut to 80 columns whatever a test asks.
    # Collection (which imports the CLI) comes after this hook.
    os.environ.pop("COLUMNS", None)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-load"):
        return
    skip = pytest.mark.skip(reason="load test: run with --run-load")
    for item in items:
        if "load" in item.keywords:
            item.add_marker(skip)


@dataclass
class LambdaContext:
    remaining_ms: int = 60_000
    function_name: str = "captioner-CaptionFunction"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:captioner"
    aws_request_id: str = "req-0001"

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


@pytest.fixture
def lambda_context() -> LambdaContext:
    return LambdaContext(aws_request_id=f"req-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "POWERTOOLS_METRICS_NAMESPACE": "CaptionerTest",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_DEV": "false",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture
def fake_modelslab() -> Iterator[FakeModelsLab]:
    fake = FakeModelsLab().start()
    yield fake
    fake.stop()


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI().start()
    yield fake
    fake.stop()


@contextlib.contextmanager
def moto_stack() -> Iterator[Aws]:
    """In-process moto with the test bucket (versioned) and the table from template.yaml.

    moto's own TransactWriteItems deep-copies the whole table, which races with another
    thread's write (records of a batch run concurrently): the local stack's item-level
    version is installed here too. And DynamoDB applies each write atomically, moto does not:
    writes are serialized as the local stack does (captioner_tools.local.atomic)."""
    from captioner_tools.local import mototransactions

    mototransactions.install()
    serialize_moto()
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        ddb = boto3.client("dynamodb", region_name="us-east-1")
        ddb.create_table(TableName=TABLE, **table_definition())
        yield Aws(s3=s3, ddb=ddb)


@pytest.fixture
def aws(aws_env: None) -> Iterator[Aws]:
    with moto_stack() as stack:
        yield stack


@dataclass
class Aws:
    s3: Any
    ddb: Any

    def put(self, key: str, body: bytes, tags: dict[str, str] | None = None) -> dict[str, Any]:
        extra = {}
        if tags:
            from urllib.parse import urlencode

            extra["Tagging"] = urlencode(tags)
        resp = self.s3.put_object(Bucket=BUCKET, Key=key, Body=body, **extra)
        return {
            "version_id": resp.get("VersionId"),
            "etag": resp["ETag"].strip('"'),
            "size": len(body),
        }

    def row(self, key: str, bucket: str = BUCKET) -> dict[str, Any] | None:
        from captioner.store import from_item

        item = self.ddb.get_item(TableName=TABLE, Key={"bucket": {"S": bucket}, "key": {"S": key}})
        return from_item(item["Item"]) if "Item" in item else None

    def tags(self, key: str, version_id: str | None = None) -> dict[str, str]:
        extra = {"VersionId": version_id} if version_id else {}
        resp = self.s3.get_object_tagging(Bucket=BUCKET, Key=key, **extra)
        return {t["Key"]: t["Value"] for t in resp["TagSet"]}


class EventLog:
    """A rule on the default bus (source = captioner) whose target is a queue."""

    def __init__(self) -> None:
        self.sqs = boto3.client("sqs", region_name="us-east-1")
        events = boto3.client("events", region_name="us-east-1")
        self.url = self.sqs.create_queue(QueueName="caption-events")["QueueUrl"]
        arn = self.sqs.get_queue_attributes(QueueUrl=self.url, AttributeNames=["QueueArn"])
        events.put_rule(Name="captions", EventPattern=json.dumps({"source": ["captioner"]}))
        events.put_targets(
            Rule="captions", Targets=[{"Id": "q", "Arn": arn["Attributes"]["QueueArn"]}]
        )

    def take(self) -> list[dict[str, Any]]:
        """Every event delivered since the last call."""
        got = []
        while True:
            resp = self.sqs.receive_message(QueueUrl=self.url, MaxNumberOfMessages=10)
            messages = resp.get("Messages", [])
            if not messages:
                return got
            for m in messages:
                got.append(json.loads(m["Body"]))
                self.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=m["ReceiptHandle"])

    def statuses(self) -> list[tuple[str, str]]:
        return [(e["detail"]["key"], e["detail"]["status"]) for e in self.take()]


@pytest.fixture
def app_env(
    aws: Aws, fake_modelslab: FakeModelsLab, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Aws]:
    """The function's environment as the template sets it, pointed at moto and the fake."""
    monkeypatch.setenv("CAPTIONS_TABLE", TABLE)
    monkeypatch.setenv("MODELSLAB_API_URL", fake_modelslab.url)
    monkeypatch.setenv("MODELSLAB_API_KEY", API_KEY)
    monkeypatch.setenv("CAPTION_MAX_RECEIVE_COUNT", "3")
    monkeypatch.delenv("MODELSLAB_API_KEY_SECRET", raising=False)
    monkeypatch.delenv("CAPTION_PROVIDER", raising=False)
    handler.reset()
    yield aws
    handler.reset()


def fast(app: Any) -> Any:
    """Shrink backoff and polling waits so retry tests take milliseconds."""
    from captioner.retry import Backoff

    app.pipeline.backoff = Backoff(base=0.01, cap=0.05, max_attempts=4)
    provider = app.pipeline.provider
    if hasattr(provider, "poll_initial"):
        provider.poll_initial = 0.01
        provider.poll_max = 0.02
    return app


# -- real event shapes -------------------------------------------------------------------------


def s3_record(
    key: str,
    *,
    bucket: str = BUCKET,
    event_name: str = "ObjectCreated:Put",
    version_id: str | None = None,
    etag: str | None = None,
    size: int | None = None,
    sequencer: str | None = None,
    encode: bool = True,
) -> dict[str, Any]:
    """An S3 notification record as AWS documents it (key URL-encoded, + for spaces)."""
    from urllib.parse import quote_plus

    obj: dict[str, Any] = {"key": quote_plus(key) if encode else key}
    for name, value in (
        ("size", size),
        ("eTag", etag),
        ("versionId", version_id),
        ("sequencer", sequencer),
    ):
        if value is not None:
            obj[name] = value
    return {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "us-east-1",
        "eventTime": "2026-11-25T10:15:30.123Z",
        "eventName": event_name,
        "userIdentity": {"principalId": "AWS:AIDAEXAMPLE"},
        "requestParameters": {"sourceIPAddress": "203.0.113.25"},
        "responseElements": {"x-amz-request-id": "C3D13FE58DE4C810", "x-amz-id-2": "id2"},
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "captions",
            "bucket": {
                "name": bucket,
                "ownerIdentity": {"principalId": "A3EXAMPLE"},
                "arn": f"arn:aws:s3:::{bucket}",
            },
            "object": obj,
        },
    }


def eventbridge_event(
    key: str, *, bucket: str = BUCKET, detail_type: str = "Object Created", **obj: Any
) -> dict[str, Any]:
    detail_obj = {"key": key, **{k.replace("_", "-"): v for k, v in obj.items()}}
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": detail_type,
        "source": "aws.s3",
        "account": "123456789012",
        "time": "2026-11-25T10:15:30Z",
        "region": "us-east-1",
        "resources": [f"arn:aws:s3:::{bucket}"],
        "detail": {
            "version": "0",
            "bucket": {"name": bucket},
            "object": detail_obj,
            "request-id": "N4N7GDK58NMKJ12R",
            "requester": "123456789012",
            "reason": "PutObject",
        },
    }


def sqs_event(*bodies: Any, receive_count: int = 1) -> dict[str, Any]:
    """An SQS event as Lambda's event source mapping delivers it."""
    records = []
    for i, body in enumerate(bodies):
        text = body if isinstance(body, str) else json.dumps(body)
        records.append(
            {
                "messageId": f"msg-{i}-{uuid.uuid4().hex[:6]}",
                "receiptHandle": f"handle-{i}",
                "body": text,
                "attributes": {
                    "ApproximateReceiveCount": str(receive_count),
                    "SentTimestamp": "1764065730500",
                    "SenderId": "AIDAEXAMPLE",
                    "ApproximateFirstReceiveTimestamp": "1764065730527",
                },
                "messageAttributes": {},
                "md5OfBody": "0" * 32,
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:captioner-CaptionQueue",
                "awsRegion": "us-east-1",
            }
        )
    return {"Records": records}


def notification(*records: dict[str, Any]) -> dict[str, Any]:
    return {"Records": list(records)}
