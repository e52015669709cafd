import json

import pytest

from captioner.events import MalformedEvent, backfill_message, parse_message_body, parse_payload
from tests.conftest import eventbridge_event, notification, s3_record


def test_s3_keys_are_url_decoded_with_plus_as_space():
    (ev,) = parse_payload(notification(s3_record("a dir/caf\u00e9 + more%.png")))
    assert ev.key == "a dir/caf\u00e9 + more%.png"
    assert ev.kind == "created" and ev.bucket == "captioner-uploads-test"


def test_real_shape_fields_are_kept():
    rec = s3_record("x.png", version_id="v1", etag='"abc"', size=12, sequencer="00AB")
    (ev,) = parse_payload(notification(rec))
    assert (ev.version_id, ev.etag, ev.size, ev.sequencer) == ("v1", "abc", 12, "00AB")


def test_null_version_means_unversioned():
    (ev,) = parse_payload(notification(s3_record("x.png", version_id="null")))
    assert ev.version_id is None


def test_eventbridge_key_is_not_decoded():
    (ev,) = parse_payload(eventbridge_event("a+b%20c.png", size=5, etag="e", version_id="v"))
    assert ev.key == "a+b%20c.png" and ev.kind == "created" and ev.version_id == "v"


def test_eventbridge_delete_marker():
    event = eventbridge_event("x.png", detail_type="Object Deleted")
    event["detail"]["deletion-type"] = "Delete Marker Created"
    (ev,) = parse_payload(event)
    assert ev.kind == "removed" and ev.is_delete_marker


def test_test_event_yields_nothing():
    assert parse_message_body(json.dumps({"Event": "s3:TestEvent", "Bucket": "b"})) == []


@pytest.mark.parametrize("name", ["ObjectTagging:Put", "ObjectRestore:Completed", "ObjectAcl:Put"])
def test_other_event_types_are_ignored_never_processed(name):
    (ev,) = parse_payload(notification(s3_record("x.png", event_name=name)))
    assert ev.kind == "ignored"


def test_removed_events():
    (ev,) = parse_payload(
        notification(s3_record("x.png", event_name="ObjectRemoved:DeleteMarkerCreated"))
    )
    assert ev.kind == "removed" and ev.is_delete_marker


@pytest.mark.parametrize(
    "body",
    [
        "not json",
        "[1, 2]",
        json.dumps({"hello": "world"}),
        json.dumps({"Records": "x"}),
        json.dumps({"Records": [{"eventName": "ObjectCreated:Put"}]}),
        json.dumps(notification(s3_record("x.png", size="many"))),
    ],
)
def test_malformed_bodies_raise_a_specific_error(body):
    with pytest.raises(MalformedEvent):
        parse_message_body(body)


def test_backfill_message_round_trips_through_the_parser():
    body = backfill_message(
        "b", "dir/a b+c%.png", version_id="v9", etag="e", size=3, provider="modelslab"
    )
    (ev,) = parse_message_body(body)
    assert (ev.bucket, ev.key, ev.version_id, ev.etag, ev.size) == (
        "b",
        "dir/a b+c%.png",
        "v9",
        "e",
        3,
    )
    assert ev.provider == "modelslab" and ev.sequencer is None and ev.kind == "created"
