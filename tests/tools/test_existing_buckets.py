"""Existing buckets on the local stack (``ExistingBucketNames``), end to end: stand-in buckets
whose uploads reach the function through S3 → EventBridge → the template's rule →
CaptionQueue (in moto), ``captioner connect`` against a bucket that already has other
notifications, and ``get`` / ``list`` / ``backfill`` per bucket."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote_plus

import boto3
import pytest
from botocore.stub import Stubber
from rich.console import Console
from typer.testing import CliRunner

from captioner_tools.cli.app import app
from captioner_tools.cli.localview import banner
from captioner_tools.cli.target import Deployment
from captioner_tools.local.stack import LocalStack
from tests import images
from tests.conftest import API_KEY
from tests.fakes.modelslab import FakeModelsLab
from tests.tools.conftest import RETRY_DELAY_S, free_port, row, wait_for, wait_for_status

EXISTING = ("photos", "scans")
runner = CliRunner()


@pytest.fixture(scope="module")
def delivered() -> list[dict[str, Any]]:
    """Every message body the function was handed, parsed (the local event source's report)."""
    return []


@pytest.fixture(scope="module")
def stack(modelslab: FakeModelsLab, delivered: list[dict[str, Any]]) -> Iterator[LocalStack]:
    lock = threading.Lock()

    def record(report: Any) -> None:
        with lock:
            delivered.extend(json.loads(m.body) for m in report.messages)

    with LocalStack(
        port=0,
        visibility_timeout=RETRY_DELAY_S,
        parameters={"ExistingBucketNames": ",".join(EXISTING)},
        env={"MODELSLAB_API_URL": modelslab.url, "MODELSLAB_API_KEY": API_KEY},
        on_batch=record,
    ) as local:
        yield local


def cli(stack: LocalStack, *args: str) -> Any:
    """The CLI in-process, pointed at the stack by AWS_ENDPOINT_URL only."""
    env = {"AWS_ENDPOINT_URL": stack.endpoint_url, "COLUMNS": "200"}
    for name in ("CAPTIONER_BUCKET", "CAPTIONS_TABLE", "CAPTIONER_QUEUE_URL", "CAPTIONER_DLQ_URL",
                 "CAPTIONER_STACK_NAME"):  # fmt: skip
        env[name] = None  # type: ignore[assignment]
    return runner.invoke(app, list(args), env=env)


def ok(result: Any) -> str:
    assert result.exit_code == 0, result.output + repr(result.exception)
    return str(result.output)


def one_error_line(result: Any, *parts: str) -> None:
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for part in parts:
        assert part in lines[0], lines[0]


def wait_for_row(stack: LocalStack, bucket: str, key: str, *statuses: str) -> dict[str, Any]:
    return wait_for_status(stack, key, *statuses, bucket=bucket)


def tags(stack: LocalStack, bucket: str, key: str) -> dict[str, str]:
    found = stack.client("s3").get_object_tagging(Bucket=bucket, Key=key)["TagSet"]
    return {t["Key"]: t["Value"] for t in found}


def eventbridge_bodies(
    delivered: list[dict[str, Any]], bucket: str, key: str, count: int = 1
) -> list[dict[str, Any]]:
    """The EventBridge events the function was handed for the object, once there are
    ``count`` (the event source reports a batch after the handler returned)."""

    def found() -> list[dict[str, Any]]:
        return [
            body
            for body in list(delivered)
            if body.get("source") == "aws.s3"
            and body.get("detail", {}).get("bucket", {}).get("name") == bucket
            and body["detail"].get("object", {}).get("key") == key
        ]

    return wait_for(found, lambda events: len(events) >= count, 10, f"{count} event(s) for {key}")


# -- the stand-in buckets ------------------------------------------------------------------------


def test_stand_ins_are_created_unversioned_with_eventbridge_on_and_the_rule_made(stack):
    s3 = stack.client("s3")
    assert stack.existing_buckets == EXISTING
    for name in EXISTING:
        assert "Status" not in s3.get_bucket_versioning(Bucket=name)
        config = s3.get_bucket_notification_configuration(Bucket=name)
        assert config.get("EventBridgeConfiguration") == {}
        assert not config.get("QueueConfigurations")  # no S3 → queue shortcut: EventBridge only
    events = stack.client("events")
    (rule,) = stack.resources.rules
    pattern = json.loads(events.describe_rule(Name=rule)["EventPattern"])
    assert pattern == {
        "source": ["aws.s3"],
        "detail-type": ["Object Created", "Object Deleted"],
        "detail": {"bucket": {"name": list(EXISTING)}},
    }
    (target,) = events.list_targets_by_rule(Rule=rule)["Targets"]
    assert target["Arn"] == stack.queue_arn
    assert target["DeadLetterConfig"] == {"Arn": stack.dlq_arn}
    # the stack's parameters are registered with its outputs, as DescribeStacks reports them
    (found,) = stack.client("cloudformation").describe_stacks(StackName="captioner")["Stacks"]
    parameters = {p["ParameterKey"]: p["ParameterValue"] for p in found["Parameters"]}
    assert parameters["ExistingBucketNames"] == "photos,scans"


def test_upload_to_an_existing_bucket_is_captioned_through_eventbridge(stack, delivered):
    key = "holiday/beach day.png"
    stack.client("s3").put_object(Bucket="photos", Key=key, Body=images.png(90, 60))

    done = wait_for_row(stack, "photos", key, "CAPTIONED")
    assert done["caption"] == "A picture named beach day.png."
    assert (done["bucket"], done["format"], done["width"]) == ("photos", "PNG", 90)
    assert "version_id" not in done  # an unversioned bucket
    assert tags(stack, "photos", key) == {"caption": done["caption"]}
    assert row(stack, key) is None  # nothing under the stack's own bucket
    # The function was handed S3's EventBridge event, as the rule delivers it to the queue.
    (event,) = eventbridge_bodies(delivered, "photos", key)
    assert event["detail-type"] == "Object Created" and event["detail"]["reason"] == "PutObject"
    assert event["resources"] == ["arn:aws:s3:::photos"]
    obj = event["detail"]["object"]
    assert obj["etag"] == done["etag"] and obj["size"] == done["size"]
    assert "sequencer" not in obj and "version-id" not in obj


def test_overwrite_recaptions_and_delete_marks_the_row_deleted(stack, delivered):
    s3 = stack.client("s3")
    key = "scans/receipt.png"
    s3.put_object(Bucket="scans", Key=key, Body=images.png(40, 30))
    first = wait_for_row(stack, "scans", key, "CAPTIONED")
    s3.put_object(Bucket="scans", Key=key, Body=images.jpeg())
    second = wait_for(
        lambda: row(stack, key, "scans"),
        lambda r: r is not None and r.get("format") == "JPEG" and r["status"] == "CAPTIONED",
        20,
        "the new version to be captioned",
    )
    assert second["etag"] != first["etag"]
    s3.delete_object(Bucket="scans", Key=key)
    deleted = wait_for_row(stack, "scans", key, "DELETED")
    assert deleted["caption"] == second["caption"]  # the row and its caption are kept
    events = eventbridge_bodies(delivered, "scans", key, 3)
    assert [e["detail-type"] for e in events] == [
        "Object Created",
        "Object Created",
        "Object Deleted",
    ]
    (gone,) = [e for e in events if "deletion-type" in e["detail"]]
    assert gone["detail"]["deletion-type"] == "Permanently Deleted"


def test_get_and_list_work_per_bucket(stack):
    wait_for_row(stack, "photos", "holiday/beach day.png", "CAPTIONED")
    got = json.loads(ok(cli(stack, "get", "s3://photos/holiday/beach day.png", "--json")))
    assert got["bucket"] == "photos" and got["status"] == "CAPTIONED"
    listed = json.loads(ok(cli(stack, "list", "s3://photos/", "--json")))
    assert listed and {r["bucket"] for r in listed} == {"photos"}
    assert "holiday/beach day.png" in {r["key"] for r in listed}
    one_error_line(
        cli(stack, "get", f"s3://{stack.bucket}/holiday/beach day.png"), "no caption row"
    )


def test_backfill_captions_what_an_existing_bucket_held_before(stack, modelslab):
    s3 = stack.client("s3")
    stack.stop_poller()  # objects that were there before the stack: no event reaches it
    for key, body in (("old/a.png", images.png()), ("old/b.jpg", images.jpeg()), ("old/", b"")):
        s3.put_object(Bucket="photos", Key=key, Body=body)
    stack.client("sqs").purge_queue(QueueUrl=stack.queue_url)
    stack.start_poller()

    dry = json.loads(ok(cli(stack, "backfill", "s3://photos/old/", "--dry-run", "--json")))
    assert (dry["bucket"], dry["listed"], dry["folders"], dry["enqueued"]) == ("photos", 3, 1, 2)
    real = json.loads(ok(cli(stack, "backfill", "s3://photos/old/", "--json")))
    assert real["enqueued"] == 2 and real["failed"] == 0
    a = wait_for_row(stack, "photos", "old/a.png", "CAPTIONED")
    assert a["caption"] == "A picture named a.png."
    wait_for_row(stack, "photos", "old/b.jpg", "CAPTIONED")
    again = json.loads(ok(cli(stack, "backfill", "s3://photos/old/", "--json")))
    assert (again["enqueued"], again["already_captioned"]) == (0, 2)


def test_banner_names_the_stand_ins_and_the_rule(stack):
    console = Console(width=300, record=True)
    console.print(banner(stack))
    text = console.export_text()
    assert "EventBridge" in text and "photos, scans" in text
    assert stack.resources.rules[0] in text


# -- captioner connect ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def legacy(stack: LocalStack) -> dict[str, Any]:
    """scans as a team's bucket really is before `connect`: EventBridge off, and other
    notifications of its own (a thumbnailer queue with a filter, a topic, a function)."""
    sqs = stack.client("sqs")
    url = sqs.create_queue(QueueName="thumbnailer")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    config = {
        "QueueConfigurations": [{
            "Id": "thumbnails",
            "QueueArn": arn["Attributes"]["QueueArn"],
            "Events": ["s3:ObjectCreated:*"],
            "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "thumbs/"}]}},
        }],
        "TopicConfigurations": [{
            "Id": "audit",
            "TopicArn": "arn:aws:sns:us-east-1:123456789012:audit",
            "Events": ["s3:ObjectRemoved:*"],
        }],
        "LambdaFunctionConfigurations": [{
            "Id": "indexer",
            "LambdaFunctionArn": "arn:aws:lambda:us-east-1:123456789012:function:indexer",
            "Events": ["s3:ObjectCreated:Put"],
            "Filter": {"Key": {"FilterRules": [{"Name": "suffix", "Value": ".pdf"}]}},
        }],
    }  # fmt: skip
    stack.client("s3").put_bucket_notification_configuration(
        Bucket="scans", NotificationConfiguration=config
    )
    return {"config": config, "queue_url": url}


def notifications(stack: LocalStack, bucket: str) -> dict[str, Any]:
    found = stack.client("s3").get_bucket_notification_configuration(Bucket=bucket)
    found.pop("ResponseMetadata")
    return found


def test_connect_dry_run_shows_the_merged_configuration_and_writes_nothing(stack, legacy):
    out = ok(cli(stack, "connect", "s3://scans", "--dry-run"))
    assert "Would turn on EventBridge notifications for s3://scans (dry run" in out
    assert "Kept its 3 other notification configuration(s), unchanged:" in out
    assert "queue thumbnails → arn:aws:sqs:us-east-1:123456789012:thumbnailer on " in out
    assert "s3:ObjectCreated:* (prefix thumbs/)" in out
    shown = json.loads(out[out.index("The configuration it would write:") :].split("\n", 1)[1])
    assert shown == {**legacy["config"], "EventBridgeConfiguration": {}}
    assert notifications(stack, "scans") == legacy["config"]  # nothing written


def test_connect_keeps_the_other_notifications_and_eventbridge_delivers(stack, legacy, delivered):
    result = json.loads(ok(cli(stack, "connect", "s3://scans", "--json")))
    assert result["changed"] is True and result["dry_run"] is False
    assert result["before"] == legacy["config"] and result["listed_in_stack"] is True
    assert notifications(stack, "scans") == {**legacy["config"], "EventBridgeConfiguration": {}}

    # Both work: the team's thumbnailer still gets its S3 event, and Captioner captions.
    stack.client("s3").put_object(Bucket="scans", Key="thumbs/page 1.png", Body=images.png())
    wait_for_row(stack, "scans", "thumbs/page 1.png", "CAPTIONED")
    assert eventbridge_bodies(delivered, "scans", "thumbs/page 1.png")
    sqs = stack.client("sqs")

    def thumbnailer_keys() -> set[str]:
        got = sqs.receive_message(QueueUrl=legacy["queue_url"], MaxNumberOfMessages=10)
        bodies = [json.loads(m["Body"]) for m in got.get("Messages", [])]
        return {
            unquote_plus(r["s3"]["object"]["key"]) for b in bodies for r in b.get("Records", [])
        }

    seen: set[str] = set()
    wait_for(lambda: seen.update(thumbnailer_keys()) or seen, lambda s: "thumbs/page 1.png" in s)


def test_connect_again_changes_nothing(stack, legacy):
    ok(cli(stack, "connect", "s3://scans"))  # on already, whichever test ran first
    before = notifications(stack, "scans")
    out = ok(cli(stack, "connect", "s3://scans"))
    assert "EventBridge notifications are already on for s3://scans: nothing changed." in out
    assert json.loads(ok(cli(stack, "connect", "s3://scans", "--json")))["changed"] is False
    assert notifications(stack, "scans") == before


def test_connect_a_bucket_without_notifications_and_not_in_the_stack(stack):
    stack.client("s3").create_bucket(Bucket="elsewhere")
    result = cli(stack, "connect", "s3://elsewhere/")
    out = ok(result)
    assert "Turned on EventBridge notifications for s3://elsewhere." in out
    assert "It had no other notification configuration." in out
    assert "captioner backfill s3://elsewhere/" in out
    assert "note: elsewhere is not in ExistingBucketNames of stack 'captioner'" in out
    assert notifications(stack, "elsewhere") == {"EventBridgeConfiguration": {}}
    again = cli(stack, "connect", "s3://elsewhere", "--json")
    assert again.exit_code == 0 and "note: elsewhere is not in" in again.stderr
    as_json = json.loads(again.stdout)
    assert as_json["listed_in_stack"] is False and as_json["changed"] is False


def test_connect_mistakes_are_one_line(stack):
    one_error_line(
        cli(stack, "connect", "s3://no-such-bucket-here"),
        "bucket no-such-bucket-here does not exist",
    )
    one_error_line(
        cli(stack, "connect", "s3://photos/holiday/"), "connect takes a bucket, not a prefix"
    )
    one_error_line(cli(stack, "connect", "photos"), "not an s3:// URL")
    one_error_line(
        cli(stack, "connect", f"s3://{stack.bucket}"),
        f"s3://{stack.bucket} is the stack's own upload bucket",
    )
    assert "EventBridgeConfiguration" not in notifications(stack, stack.bucket)
    port = free_port()
    one_error_line(
        cli(stack, "connect", "s3://photos", "--endpoint-url", f"http://127.0.0.1:{port}"),
        f"cannot reach http://127.0.0.1:{port}",
        "captioner local up",
    )  # fmt: skip


def test_connect_access_denied_is_one_line_and_writes_nothing(monkeypatch):
    s3 = boto3.client(
        "s3", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    with Stubber(s3) as stub:
        stub.add_client_error(
            "get_bucket_notification_configuration",
            service_error_code="AccessDenied",
            service_message="User is not authorized to perform: s3:GetBucketNotification",
            http_status_code=403,
        )
        monkeypatch.setattr(Deployment, "client", lambda self, service: s3)
        result = runner.invoke(app, ["connect", "s3://photos", "--region", "us-east-1"])
        stub.assert_no_pending_responses()  # and no PutBucketNotificationConfiguration
    one_error_line(result, "access denied to GetBucketNotificationConfiguration")
