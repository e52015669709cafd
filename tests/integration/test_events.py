""" "Caption Status Changed" events: the real handler against moto (EventBridge routes them
to an SQS queue, as a user's rule would) and the fake ModelsLab."""

from __future__ import annotations

import json

import boto3
import pytest
from botocore.exceptions import EndpointConnectionError

from captioner import handler
from captioner.announce import DETAIL_FIELDS
from tests import images
from tests.conftest import (
    API_KEY,
    BUCKET,
    EventLog,
    fast,
    notification,
    s3_record,
    sqs_event,
)
from tests.fakes.modelslab import Reply
from tests.integration.test_handler import put_event, run


@pytest.fixture
def events(app_env) -> EventLog:
    return EventLog()


def break_put_events(app, error: Exception | None = None, *, failed_entry: bool = False):
    """PutEvents fails (an exception, or an answer with a failed entry) from now on."""
    client = app.pipeline.announcer._publisher._events

    def put_events(**kwargs):
        if failed_entry:
            return {
                "FailedEntryCount": 1,
                "Entries": [{"ErrorCode": "InternalFailure", "ErrorMessage": "try again"}],
            }
        raise error or EndpointConnectionError(endpoint_url="https://events.us-east-1")

    client.put_events = put_events
    return lambda: delattr(client, "put_events")


def test_a_caption_publishes_one_event_with_the_rows_values(
    app_env, fake_modelslab, lambda_context, events
):
    obj, event = put_event(app_env, "photos/cat.png", images.png())
    assert run(event, lambda_context) == {"batchItemFailures": []}

    (published,) = events.take()
    row = app_env.row("photos/cat.png")
    assert published["source"] == "captioner"
    assert published["detail-type"] == "Caption Status Changed"
    assert set(published["detail"]) == set(DETAIL_FIELDS)
    assert published["detail"] == {name: row.get(name) for name in DETAIL_FIELDS}
    assert published["detail"]["status"] == "CAPTIONED"
    assert published["detail"]["tag_status"] == "WRITTEN"
    assert published["detail"]["version_id"] == obj["version_id"]
    assert published["detail"]["reason"] is None
    assert API_KEY not in json.dumps(published)
    assert "event_due" not in row  # announced


def test_a_duplicate_delivery_publishes_nothing(app_env, fake_modelslab, lambda_context, events):
    _, event = put_event(app_env, "dup.png", images.png())
    run(event, lambda_context)
    run(event, lambda_context)
    run(event, lambda_context, receive_count=2)
    assert events.statuses() == [("dup.png", "CAPTIONED")]
    assert len(fake_modelslab.paid_calls()) == 1


@pytest.mark.parametrize(
    ("body", "tags", "reply", "status"),
    [
        (b"not an image at all", None, None, "REJECTED"),
        (images.png(), {"caption-skip": "true"}, None, "SKIPPED"),
        (images.truncated_body_jpeg(), None, {"status": "error", "message": "Could not decode image"},
         "FAILED"),
    ],
)  # fmt: skip
def test_each_final_status_is_announced_once_even_when_delivered_again(
    app_env, fake_modelslab, lambda_context, events, body, tags, reply, status
):
    if reply:
        fake_modelslab.queue(reply, reply)
    _, event = put_event(app_env, "final.jpg", body, tags=tags)
    run(event, lambda_context)
    run(event, lambda_context)  # an S3 duplicate: runs again, reaches the same status
    assert app_env.row("final.jpg")["status"] == status
    assert events.statuses() == [("final.jpg", status)]


def test_a_delete_is_announced_once(app_env, fake_modelslab, lambda_context, events):
    _, event = put_event(app_env, "gone.png", images.png(), sequencer="10")
    run(event, lambda_context)
    app_env.s3.delete_object(Bucket=BUCKET, Key="gone.png")
    removed = notification(
        s3_record("gone.png", event_name="ObjectRemoved:DeleteMarkerCreated", sequencer="11")
    )
    run(removed, lambda_context)
    run(removed, lambda_context)  # the same delete again
    unordered = notification(s3_record("gone.png", event_name="ObjectRemoved:Delete"))
    run(unordered, lambda_context)  # a delete without a sequencer: applied again, no change
    taken = events.take()
    assert [(e["detail"]["status"]) for e in taken] == ["CAPTIONED", "DELETED"]
    assert taken[1]["detail"]["caption"] == "A picture named gone.png."  # the row keeps it
    assert "event_due" not in app_env.row("gone.png")


def test_giving_up_on_the_last_delivery_announces_failed(
    app_env, fake_modelslab, lambda_context, events
):
    fake_modelslab.queue(*[Reply({"status": "error", "message": "Server busy"})] * 20)
    _, event = put_event(app_env, "dead.png", images.png())
    run(event, lambda_context)  # PENDING: not final, no event
    assert events.take() == []
    run(event, lambda_context, receive_count=3)  # CAPTION_MAX_RECEIVE_COUNT=3
    (failed,) = events.take()
    assert failed["detail"]["status"] == "FAILED" and "dead-lettered" in failed["detail"]["reason"]


def test_a_redrive_that_captions_a_failed_version_announces_the_caption(
    app_env, fake_modelslab, lambda_context, events
):
    fake_modelslab.queue(*[Reply({"status": "error", "message": "Server busy"})] * 4)
    _, event = put_event(app_env, "later.png", images.png())
    run(event, lambda_context, receive_count=3)
    run(event, lambda_context)  # redriven after the outage
    assert events.statuses() == [("later.png", "FAILED"), ("later.png", "CAPTIONED")]


@pytest.mark.parametrize("failed_entry", [False, True])
def test_a_failed_put_events_fails_neither_the_record_nor_pays_again_and_is_sent_later(
    app_env, fake_modelslab, lambda_context, events, failed_entry
):
    _, event = put_event(app_env, "quiet.png", images.png())
    repair = break_put_events(fast(handler.get_app()), failed_entry=failed_entry)
    assert run(event, lambda_context) == {"batchItemFailures": []}
    row = app_env.row("quiet.png")
    assert row["status"] == "CAPTIONED" and row["tag_status"] == "WRITTEN"
    assert row["event_due"] == "CAPTIONED"  # owed
    assert events.take() == []

    repair()
    run(event, lambda_context)  # the next delivery that meets the row (a duplicate, a backfill)
    run(event, lambda_context)
    (late,) = events.take()
    assert late["detail"] == {name: row.get(name) for name in DETAIL_FIELDS}
    assert "event_due" not in app_env.row("quiet.png")
    assert len(fake_modelslab.paid_calls()) == 1


def test_an_owed_rejection_is_sent_by_the_next_delivery(
    app_env, fake_modelslab, lambda_context, events
):
    _, event = put_event(app_env, "owed.txt", b"plain text")
    repair = break_put_events(fast(handler.get_app()))
    run(event, lambda_context)
    assert app_env.row("owed.txt")["event_due"] == "REJECTED"
    repair()
    run(event, lambda_context)
    assert events.statuses() == [("owed.txt", "REJECTED")]


def test_without_a_bus_nothing_is_published_or_owed(
    app_env, fake_modelslab, lambda_context, events, monkeypatch
):
    monkeypatch.setenv("CAPTION_EVENT_BUS", "")
    handler.reset()
    _, event = put_event(app_env, "off.png", images.png())
    run(event, lambda_context)
    assert events.take() == [] and "event_due" not in app_env.row("off.png")


def test_events_go_to_the_configured_bus(app_env, fake_modelslab, lambda_context, monkeypatch):
    bus_events = boto3.client("events", region_name="us-east-1")
    sqs = boto3.client("sqs", region_name="us-east-1")
    bus_events.create_event_bus(Name="captions")
    url = sqs.create_queue(QueueName="on-captions-bus")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]
    bus_events.put_rule(
        Name="failed-only",
        EventBusName="captions",
        EventPattern=json.dumps({"source": ["captioner"], "detail": {"status": ["FAILED"]}}),
    )
    bus_events.put_targets(
        Rule="failed-only", EventBusName="captions", Targets=[{"Id": "q", "Arn": arn["QueueArn"]}]
    )
    monkeypatch.setenv("CAPTION_EVENT_BUS", "captions")
    handler.reset()
    fake_modelslab.queue({"status": "error", "message": "Could not decode image"})
    _, bad = put_event(app_env, "bad.jpg", images.truncated_body_jpeg())
    _, good = put_event(app_env, "good.png", images.png())
    fast(handler.get_app())
    handler.lambda_handler(sqs_event(bad), lambda_context)
    handler.lambda_handler(sqs_event(good), lambda_context)
    messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
    assert [json.loads(m["Body"])["detail"]["key"] for m in messages] == ["bad.jpg"]
