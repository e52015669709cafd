"""The local stack's SQS counts and retention check (captioner_tools.local.motosqs): what
moto answers, without counting the queue once per message."""

import boto3
import pytest
from moto import mock_aws
from moto.sqs.models import sqs_backends

from captioner_tools.local import motosqs


@pytest.fixture
def sqs(aws_env):
    motosqs.install()
    motosqs.install()  # idempotent
    with mock_aws():
        yield boto3.client("sqs", region_name="us-east-1")


def counts(sqs, url):
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    return tuple(int(attrs[f"ApproximateNumberOfMessages{s}"])
                 for s in ("", "NotVisible", "Delayed"))  # fmt: skip


def test_the_three_counts_are_moto_s_made_in_one_pass(sqs):
    url = sqs.create_queue(QueueName="q")["QueueUrl"]
    for i in range(6):
        sqs.send_message(QueueUrl=url, MessageBody=f"m{i}")
    sqs.send_message(QueueUrl=url, MessageBody="later", DelaySeconds=60)
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=2, VisibilityTimeout=60)
    assert len(got["Messages"]) == 2
    queue = sqs_backends["123456789012"]["us-east-1"].get_queue("q")
    # moto's own definitions, message by message
    ready = len([m for m in queue._messages if m.visible and not m.delayed])
    hidden = len([m for m in queue._messages if not m.visible])
    delayed = len([m for m in queue._messages if m.delayed])
    assert counts(sqs, url) == (ready, hidden, delayed) == (4, 2, 1)


def test_a_message_past_the_retention_period_is_not_received(sqs):
    url = sqs.create_queue(QueueName="q", Attributes={"MessageRetentionPeriod": "60"})["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="old")
    sqs.send_message(QueueUrl=url, MessageBody="new")
    queue = sqs_backends["123456789012"]["us-east-1"].get_queue("q")
    old = next(m for m in queue._messages if m.body == "old")
    old.sent_timestamp -= 61_000  # sent 61 s ago, as moto keeps it (ms)
    bodies = [m["Body"] for _ in range(2)
              for m in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])]  # fmt: skip
    assert "old" not in bodies  # (moto also stops that receive there: "new" may wait)
    queue_backend = sqs_backends["123456789012"]["us-east-1"]
    assert queue_backend.is_message_valid_based_on_retention_period("q", old) is False
    old.sent_timestamp += 61_000
    assert queue_backend.is_message_valid_based_on_retention_period("q", old) is True
