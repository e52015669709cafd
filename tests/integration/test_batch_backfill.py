"""BatchBackfillFunction against real S3 Batch Operations schema 2.0 invocations (moto S3,
DynamoDB and SQS; the fake ModelsLab only to prove it is never called by this function, and
that the caption function pays once for what it hands over)."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import quote, quote_plus

import boto3
import pytest
from boto3.dynamodb.types import TypeSerializer
from botocore.stub import Stubber

from captioner import batch_handler, handler
from captioner.batchbackfill import BatchBackfill, SqsQueue
from captioner.batchjob import parse_invocation
from captioner.events import parse_message_body
from captioner.objects import ObjectStore
from captioner.served import ServedBuckets
from captioner.store import CaptionReader
from tests import images
from tests.conftest import BUCKET, TABLE, LambdaContext, sqs_event

OTHER = "not-served-bucket"
CONTEXT = LambdaContext(function_name="captioner-BatchBackfillFunction")


@pytest.fixture
def batch(app_env, monkeypatch):
    """The batch function's environment as the template sets it, and its queue."""
    sqs = boto3.client("sqs", region_name="us-east-1")
    url = sqs.create_queue(QueueName="caption-queue")["QueueUrl"]
    monkeypatch.setenv("CAPTION_QUEUE_URL", url)
    monkeypatch.setenv("CAPTION_BUCKETS", f"{BUCKET},photos,")
    app_env.s3.create_bucket(Bucket=OTHER)
    batch_handler.reset()
    yield Batch(app_env, sqs, url)
    batch_handler.reset()


class Batch:
    def __init__(self, aws: Any, sqs: Any, url: str) -> None:
        self.aws, self.sqs, self.url = aws, sqs, url

    def invoke(self, *tasks: dict[str, Any], arguments: dict[str, str] | None = None) -> dict:
        return batch_handler.lambda_handler(invocation(*tasks, arguments=arguments), CONTEXT)

    def messages(self) -> list[dict[str, Any]]:
        got = []
        while True:
            resp = self.sqs.receive_message(QueueUrl=self.url, MaxNumberOfMessages=10)
            if not resp.get("Messages"):
                return got
            for m in resp["Messages"]:
                got.append(m)
                self.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=m["ReceiptHandle"])


def invocation(*tasks: dict[str, Any], arguments: dict[str, str] | None = None) -> dict[str, Any]:
    """An invocation exactly as Batch Operations sends it with schema 2.0."""
    return {
        "invocationSchemaVersion": "2.0",
        "invocationId": "YXNkbGZqYWRmaiBhc2RmdW9hZHNmZGpmaGFzbGtkaGZza2RmaAo",
        "job": {"id": "f3cc4f60-61f6-4a2b-8a21-d07600c373ce", "userArguments": arguments or {}},
        "tasks": list(tasks),
    }


def task(key: str, *, bucket: str = BUCKET, version: str | None = None, encode=quote_plus):
    return {
        "taskId": f"task-{uuid.uuid4().hex[:10]}",
        "s3Bucket": bucket,
        "s3Key": encode(key),
        "s3VersionId": version,
    }


def results(resp: dict[str, Any]) -> list[tuple[str, str]]:
    return [(r["resultCode"], r["resultString"]) for r in resp["results"]]


def put_row(aws: Any, key: str, **fields: Any) -> None:
    ser = TypeSerializer()
    item = {"bucket": BUCKET, "key": key, **fields}
    aws.ddb.put_item(TableName=TABLE, Item={k: ser.serialize(v) for k, v in item.items()})


# -- the schema --------------------------------------------------------------------------


def test_the_response_answers_every_task_in_schema_2_0(batch):
    batch.aws.put("a.jpg", images.jpeg())
    t = task("a.jpg")
    resp = batch.invoke(t)
    assert resp == {
        "invocationSchemaVersion": "2.0",
        "treatMissingKeysAs": "PermanentFailure",
        "invocationId": "YXNkbGZqYWRmaiBhc2RmdW9hZHNmZGpmaGFzbGtkaGZza2RmaAo",
        "results": [{"taskId": t["taskId"], "resultCode": "Succeeded", "resultString": "enqueued"}],
    }


@pytest.mark.parametrize(
    ("key", "encode"),
    [
        ("photos/a b.jpg", quote_plus),  # space as "+"
        ("photos/a b.jpg", quote),  # space as "%20"
        ("photos/a+b.jpg", quote_plus),  # a real "+" arrives as "%2B"
        ("photos/100%2B.jpg", quote_plus),  # a key that spells "%2B" itself
        ("fotos/Zürich 猫 😀.jpg", quote_plus),  # unicode, UTF-8 percent-encoded
    ],
)
def test_encoded_keys_are_decoded_and_enqueued_under_their_real_name(
    batch, fake_modelslab, key, encode
):
    put = batch.aws.put(key, images.jpeg())
    assert results(batch.invoke(task(key, encode=encode))) == [("Succeeded", "enqueued")]
    [message] = batch.messages()
    [event] = parse_message_body(message["Body"])
    assert (event.bucket, event.key, event.version_id) == (BUCKET, key, put["version_id"])
    assert (event.etag, event.size) == (put["etag"], put["size"])
    assert fake_modelslab.requests == []


def test_a_null_version_id_means_the_current_version_and_a_given_one_is_kept(batch):
    old = batch.aws.put("v.jpg", images.jpeg(32, 32))
    new = batch.aws.put("v.jpg", images.jpeg(64, 64))
    assert results(batch.invoke(task("v.jpg"), task("v.jpg", version=old["version_id"]))) == [
        ("Succeeded", "enqueued"),
        ("Succeeded", "enqueued"),
    ]
    versions = [parse_message_body(m["Body"])[0].version_id for m in batch.messages()]
    assert sorted(versions) == sorted([new["version_id"], old["version_id"]])


def test_a_task_with_a_null_version_string_is_unversioned(batch):
    batch.aws.put("n.jpg", images.jpeg())
    parsed = parse_invocation(invocation(task("n.jpg", version="null")))
    assert parsed.tasks[0].version_id is None  # type: ignore[union-attr]


# -- the decisions -----------------------------------------------------------------------


def test_an_existing_row_in_every_status_decides_as_todays_backfill(batch, fake_modelslab):
    done = {"status": "CAPTIONED", "provider": "modelslab", "tag_status": "WRITTEN"}
    cases = {
        "captioned.jpg": (done, "skipped: already captioned"),
        "uploader.jpg": ({**done, "tag_status": "KEPT_EXISTING"},
                         "skipped: the uploader's own caption tag"),
        "rejected.jpg": ({"status": "REJECTED", "reason": "not an image"},
                         "skipped: already rejected (same version)"),
        "optout.jpg": ({"status": "SKIPPED", "reason": "opted out with tag caption-skip=true"},
                       "skipped: opted out"),
        "human.jpg": ({**done, "caption": "A person's words.", "caption_source": "human"},
                      "skipped: a caption a person wrote"),
        "failed.jpg": ({"status": "FAILED", "reason": "provider said no"}, "enqueued"),
        "pending.jpg": ({"status": "PENDING"}, "enqueued"),  # a delivery died: finished
        "untagged.jpg": ({**done, "tag_status": "FAILED"}, "enqueued"),  # tag retried, free
        "owed.jpg": ({**done, "event_due": "CAPTIONED"}, "enqueued"),  # event owed, free
        "deleted.jpg": ({"status": "DELETED"}, "enqueued"),  # re-uploaded since
        "stale.jpg": (done, "enqueued"),  # the row is of another version
        "missing-row.jpg": (None, "enqueued"),
    }  # fmt: skip
    for key, (row, _) in cases.items():
        put = batch.aws.put(key, images.jpeg())
        if row is not None:
            etag = "0" * 32 if key in ("stale.jpg", "deleted.jpg") else put["etag"]
            put_row(batch.aws, key, etag=etag, size=put["size"], **row)
    resp = batch.invoke(*(task(k) for k in cases))
    assert results(resp) == [("Succeeded", want) for _, want in cases.values()]
    sent = sorted(parse_message_body(m["Body"])[0].key for m in batch.messages())
    assert sent == sorted(k for k, (_, want) in cases.items() if want == "enqueued")
    assert fake_modelslab.requests == []


def test_provider_arguments_recaption_one_providers_rows(batch):
    for key, provider in (("by-local.jpg", "local"), ("by-modelslab.jpg", "modelslab")):
        put = batch.aws.put(key, images.jpeg())
        put_row(batch.aws, key, status="CAPTIONED", provider=provider, tag_status="WRITTEN",
                etag=put["etag"], size=put["size"])  # fmt: skip
    resp = batch.invoke(
        task("by-local.jpg"),
        task("by-modelslab.jpg"),
        arguments={"provider": "modelslab", "onlyProvider": "local"},
    )
    assert results(resp) == [
        ("Succeeded", "enqueued"),
        ("Succeeded", "skipped: not captioned by the provider asked for"),
    ]
    [message] = batch.messages()
    assert parse_message_body(message["Body"])[0].provider == "modelslab"


def test_folder_markers_are_skipped(batch):
    batch.aws.s3.put_object(Bucket=BUCKET, Key="photos/", Body=b"")
    assert results(batch.invoke(task("photos/"))) == [("Succeeded", "skipped: folder marker")]
    assert batch.messages() == []


# -- failures ----------------------------------------------------------------------------


def test_a_missing_or_deleted_object_fails_permanently_and_the_others_still_run(batch):
    batch.aws.put("here.jpg", images.jpeg())
    batch.aws.put("gone.jpg", images.jpeg())
    batch.aws.s3.delete_object(Bucket=BUCKET, Key="gone.jpg")  # a delete marker
    resp = batch.invoke(task("never.jpg"), task("gone.jpg"), task("here.jpg"))
    assert results(resp) == [
        ("PermanentFailure", f"object missing: s3://{BUCKET}/never.jpg"),
        ("PermanentFailure", f"object missing: s3://{BUCKET}/gone.jpg"),
        ("Succeeded", "enqueued"),
    ]
    assert len(batch.messages()) == 1


def test_a_bucket_the_stack_does_not_serve_fails_permanently_and_says_so(batch):
    batch.aws.s3.put_object(Bucket=OTHER, Key="x.jpg", Body=images.jpeg())
    [(code, text)] = results(batch.invoke(task("x.jpg", bucket=OTHER)))
    assert code == "PermanentFailure"
    assert text.startswith(f"bucket {OTHER} is not served by this stack")
    assert "UploadBucket" in text and "ExistingBucketNames" in text
    assert batch.messages() == []


def test_a_malformed_task_fails_alone(batch):
    batch.aws.put("ok.jpg", images.jpeg())
    bad = {"taskId": "t-bad", "s3Bucket": BUCKET, "s3VersionId": None}
    resp = batch.invoke(bad, task("ok.jpg"))
    assert results(resp) == [
        ("PermanentFailure", "malformed task: no s3Key"),
        ("Succeeded", "enqueued"),
    ]


def test_an_unknown_provider_argument_fails_every_task_permanently(batch):
    batch.aws.put("p.jpg", images.jpeg())
    resp = batch.invoke(task("p.jpg"), arguments={"provider": "nope"})
    assert results(resp) == [
        ("PermanentFailure", "unknown provider 'nope' in the job's UserArguments")
    ]


def test_a_throttled_queue_is_a_temporary_failure_and_the_next_task_still_runs(batch):
    batch.aws.put("t1.jpg", images.jpeg())
    batch.aws.put("t2.jpg", images.jpeg())
    sqs = boto3.client("sqs", region_name="us-east-1")
    with Stubber(sqs) as stub:
        stub.add_client_error(
            "send_message", service_error_code="AWS.SimpleQueueService.RequestThrottled",
            http_status_code=403,
        )  # fmt: skip
        stub.add_response("send_message", {"MessageId": "m-2", "MD5OfMessageBody": "0" * 32})
        service = BatchBackfill(
            ServedBuckets.parse(BUCKET),
            ObjectStore(batch.aws.s3),
            CaptionReader(TABLE, batch.aws.ddb),
            SqsQueue(sqs, batch.url),
        )
        out = service.run(parse_invocation(invocation(task("t1.jpg"), task("t2.jpg"))))
        stub.assert_no_pending_responses()
    assert [(r.code.value, r.text) for r in out] == [
        ("TemporaryFailure", "SendMessage AWS.SimpleQueueService.RequestThrottled "
                             "(retried by Batch Operations)"),
        ("Succeeded", "enqueued"),
    ]  # fmt: skip


def test_a_server_error_is_temporary_and_access_denied_is_permanent(batch):
    batch.aws.put("e.jpg", images.jpeg())
    s3 = boto3.client("s3", region_name="us-east-1")
    with Stubber(s3) as stub:
        stub.add_client_error("head_object", service_error_code="", http_status_code=503)
        stub.add_client_error("head_object", service_error_code="AccessDenied",
                              http_status_code=403)  # fmt: skip
        service = BatchBackfill(
            ServedBuckets.parse(BUCKET),
            ObjectStore(s3),
            CaptionReader(TABLE, batch.aws.ddb),
            SqsQueue(batch.sqs, batch.url),
        )
        out = service.run(parse_invocation(invocation(task("e.jpg"), task("e.jpg"))))
    assert [r.code.value for r in out] == ["TemporaryFailure", "PermanentFailure"]
    assert out[1].text == f"HeadObject AccessDenied: s3://{BUCKET}/e.jpg"


def test_not_a_batch_invocation_is_refused_in_one_line(batch):
    with pytest.raises(Exception, match=r"not an S3 Batch Operations 2.0 invocation \('1.0'\)"):
        batch_handler.lambda_handler({"invocationSchemaVersion": "1.0", "tasks": []}, CONTEXT)


# -- paid once ---------------------------------------------------------------------------


def test_the_same_object_handed_over_twice_is_paid_once(batch, fake_modelslab, lambda_context):
    batch.aws.put("twice.jpg", images.jpeg())
    # two tasks for one object before the caption function ran (a retried task, two jobs)
    assert results(batch.invoke(task("twice.jpg"), task("twice.jpg"))) == [
        ("Succeeded", "enqueued"),
        ("Succeeded", "enqueued"),
    ]
    messages = batch.messages()
    assert len(messages) == 2 and fake_modelslab.requests == []
    handler.reset()
    for m in messages:
        out = handler.lambda_handler(sqs_event(m["Body"]), lambda_context)
        assert out == {"batchItemFailures": []}
    assert len(fake_modelslab.paid_calls()) == 1
    assert batch.aws.row("twice.jpg")["status"] == "CAPTIONED"
    # and a third hand-over, once captioned, is skipped by the batch function itself
    assert results(batch.invoke(task("twice.jpg"))) == [("Succeeded", "skipped: already captioned")]
    assert len(fake_modelslab.paid_calls()) == 1
