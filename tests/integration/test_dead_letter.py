"""The SQS → dead-letter path in moto: a message that keeps failing is redriven by the
queue's own policy (from template.yaml), and the row says FAILED on the last delivery."""

from __future__ import annotations

import json

import boto3
import pytest

from captioner import handler
from captioner_tools.local.template import parameter_default, properties
from tests import images
from tests.conftest import BUCKET, fast, notification, s3_record
from tests.fakes.modelslab import Reply


@pytest.fixture
def queues(app_env, monkeypatch):
    sqs = boto3.client("sqs", region_name="us-east-1")
    dlq_props = properties("CaptionDeadLetterQueue")
    dlq_url = sqs.create_queue(
        QueueName="captions-dlq",
        Attributes={"MessageRetentionPeriod": str(dlq_props["MessageRetentionPeriod"])},
    )["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    max_receive = int(parameter_default("MaxReceiveCount"))
    redrive = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receive)}
    url = sqs.create_queue(QueueName="captions", Attributes={"RedrivePolicy": json.dumps(redrive)})[
        "QueueUrl"
    ]
    monkeypatch.setenv("CAPTION_MAX_RECEIVE_COUNT", str(max_receive))
    handler.reset()
    return sqs, url, dlq_url, max_receive


def deliver_once(sqs, url, ctx) -> int:
    """One poll of Lambda's event source mapping: receive, invoke, delete what succeeded,
    make failures visible again at once (standing in for the visibility timeout)."""
    msgs = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["All"]).get(
        "Messages", []
    )
    if not msgs:
        return 0
    event = {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": m["Attributes"],
                "messageAttributes": {},
                "md5OfBody": m["MD5OfBody"],
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:captions",
                "awsRegion": "us-east-1",
            }
            for m in msgs
        ]
    }
    failed = {f["itemIdentifier"] for f in handler.lambda_handler(event, ctx)["batchItemFailures"]}
    for m in msgs:
        if m["MessageId"] in failed:
            sqs.change_message_visibility(
                QueueUrl=url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0
            )
        else:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    return len(msgs)


def test_poison_message_reaches_the_dead_letter_queue_and_the_row_says_failed(
    queues, app_env, fake_modelslab, lambda_context
):
    sqs, url, dlq_url, max_receive = queues

    def busy_for_stuck(body):
        return (
            Reply({"status": "error", "message": "Server busy"})
            if "stuck.png" in body["init_image"]
            else None
        )

    fake_modelslab.rule = busy_for_stuck
    obj = app_env.put("stuck.png", images.png())
    body = notification(
        s3_record(
            "stuck.png",
            version_id=obj["version_id"],
            etag=obj["etag"],
            size=obj["size"],
            sequencer="0A",
        )
    )
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps(body))
    good = app_env.put("fine.png", images.jpeg())
    sqs.send_message(
        QueueUrl=url,
        MessageBody=json.dumps(
            notification(
                s3_record(
                    "fine.png",
                    version_id=good["version_id"],
                    etag=good["etag"],
                    size=good["size"],
                    sequencer="0B",
                )
            )
        ),
    )
    fast(handler.get_app())

    for _ in range(max_receive + 2):
        deliver_once(sqs, url, lambda_context)

    dead = sqs.receive_message(QueueUrl=dlq_url, MaxNumberOfMessages=10).get("Messages", [])
    assert [json.loads(m["Body"])["Records"][0]["s3"]["object"]["key"] for m in dead] == [
        "stuck.png"
    ]
    row = app_env.row("stuck.png")
    assert row["status"] == "FAILED" and row["attempts"] == max_receive
    assert "dead-lettered" in row["reason"] and "Server busy" in row["last_error"]
    assert app_env.row("fine.png")["status"] == "CAPTIONED"
    assert (
        sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])[
            "Attributes"
        ]["ApproximateNumberOfMessages"]
        == "0"
    )


def notify_queue(app_env, sqs, url) -> None:
    """S3 → SQS notifications for created and removed objects, as the template wires them."""
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    events = ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]
    app_env.s3.put_bucket_notification_configuration(
        Bucket=BUCKET,
        NotificationConfiguration={"QueueConfigurations": [{"QueueArn": arn, "Events": events}]},
    )


def test_s3_notifications_from_moto_are_captioned_end_to_end(
    queues, app_env, fake_modelslab, lambda_context
):
    """moto's own S3→SQS notifications: a TestEvent first, no versionId, no sequencer."""
    sqs, url, _, _ = queues
    notify_queue(app_env, sqs, url)
    app_env.put("notified dir/über cat+1.png", images.png())
    fast(handler.get_app())
    while deliver_once(sqs, url, lambda_context):
        pass
    row = app_env.row("notified dir/über cat+1.png")
    assert row["status"] == "CAPTIONED" and row["version_id"]


def test_multipart_upload_events_from_moto_caption_once(
    queues, app_env, fake_modelslab, lambda_context, monkeypatch
):
    """moto's complete_multipart_upload emits two ObjectCreated events for one object.

    One record at a time: moto's in-process DynamoDB does not make a conditional write atomic
    across threads (real DynamoDB does), so two concurrent claims could both pass here."""
    monkeypatch.setenv("CAPTION_BATCH_CONCURRENCY", "1")
    handler.reset()
    sqs, url, _, _ = queues
    notify_queue(app_env, sqs, url)
    body = images.jpeg(64, 64) + b"\0" * (5 * 1024 * 1024)  # parts must be >= 5 MiB but the last
    upload = app_env.s3.create_multipart_upload(Bucket=BUCKET, Key="multi part.jpg")
    part = app_env.s3.upload_part(
        Bucket=BUCKET, Key="multi part.jpg", UploadId=upload["UploadId"], PartNumber=1, Body=body
    )
    app_env.s3.complete_multipart_upload(
        Bucket=BUCKET, Key="multi part.jpg", UploadId=upload["UploadId"],
        MultipartUpload={"Parts": [{"ETag": part["ETag"], "PartNumber": 1}]},
    )  # fmt: skip
    fast(handler.get_app())
    for _ in range(6):
        deliver_once(sqs, url, lambda_context)
    row = app_env.row("multi part.jpg")
    assert row["status"] == "CAPTIONED" and row["attempts"] == 1
    assert len(fake_modelslab.paid_calls()) == 1
