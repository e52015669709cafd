"""``captioner events``: the local stack routes the function's "Caption Status Changed" events
to a queue, and the CLI shows them (once, or following)."""

from __future__ import annotations

import json
import signal
import subprocess
import warnings

from captioner_tools.cli.app import app
from tests import images
from tests.tools.conftest import clean_environment, wait_for_status
from tests.tools.test_cli import SCRIPT, _read_until, cli, ok, one_error_line, put, runner


def test_events_shows_each_final_status_once_and_then_nothing(stack):
    put(stack, "ev/dot.png", images.png())
    put(stack, "ev/notes.png", b"not an image")
    wait_for_status(stack, "ev/dot.png", "CAPTIONED")
    wait_for_status(stack, "ev/notes.png", "REJECTED")
    got = []
    for _ in range(50):  # EventBridge delivery is asynchronous; the rows are written first
        got += [json.loads(line) for line in ok(cli(stack, "events", "--json")).splitlines()]
        if len(got) >= 2:
            break
    by_key = {e["detail"]["key"]: e for e in got}
    assert {k: e["detail"]["status"] for k, e in by_key.items()} == {
        "ev/dot.png": "CAPTIONED",
        "ev/notes.png": "REJECTED",
    }
    dot = by_key["ev/dot.png"]
    assert dot["source"] == "captioner" and dot["detail-type"] == "Caption Status Changed"
    assert dot["detail"]["bucket"] == stack.bucket and dot["detail"]["provider"] == "modelslab"
    assert "no events waiting" in cli(stack, "events").output  # each is shown once


def test_events_follow_prints_them_as_they_come(stack):
    env = clean_environment(AWS_ENDPOINT_URL=stack.endpoint_url)
    proc = subprocess.Popen(
        [str(SCRIPT), "events", "--follow"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        put(stack, "ev/follow.png", images.png())
        line = _read_until(proc, "ev/follow.png", timeout=30)
        assert "CAPTIONED" in line and "A picture named" in line
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_events_without_a_queue_says_what_to_pass(stack):
    """A deployed stack has no events queue of its own: the user names one."""
    body = {
        "Resources": {"Placeholder": {"Type": "AWS::CloudFormation::WaitConditionHandle"}},
        "Outputs": {"BucketName": {"Value": stack.bucket}},
    }
    with warnings.catch_warnings():  # moto does not model the placeholder resource
        warnings.simplefilter("ignore")
        stack.client("cloudformation").create_stack(
            StackName="deployed", TemplateBody=json.dumps(body)
        )
    one_error_line(
        cli(stack, "events", "--stack-name", "deployed", CAPTIONER_EVENTS_QUEUE_URL=None),
        "stack 'deployed' has no EventsQueueUrl output",
        "--events-queue-url",
    )


def test_the_local_stack_prints_where_its_events_go(stack):
    assert stack.events_queue_url and stack.events_queue_url.endswith("-local-caption-events")
    assert stack.cli_environment()["CAPTIONER_EVENTS_QUEUE_URL"] == stack.events_queue_url
    assert " events " in ok(runner.invoke(app, ["--help"], env={"COLUMNS": "200"}))


def test_backfill_sends_the_events_rows_still_owe_without_paying(stack, modelslab):
    put(stack, "owed/dot.png", images.png())
    wait_for_status(stack, "owed/dot.png", "CAPTIONED")
    for _ in range(50):  # drain: this test wants only the events the backfill causes
        if not cli(stack, "events", "--json").output.strip():
            break
    # as a PutEvents that failed leaves it
    stack.client("dynamodb").update_item(
        TableName=stack.table,
        Key={"bucket": {"S": stack.bucket}, "key": {"S": "owed/dot.png"}},
        UpdateExpression="SET event_due = :s",
        ExpressionAttributeValues={":s": {"S": "CAPTIONED"}},
    )
    paid = len(modelslab.accepted())
    out = json.loads(ok(cli(stack, "backfill", f"s3://{stack.bucket}/owed/", "--json")))
    assert (out["enqueued"], out["events_owed"], out["estimated_cost_usd"]) == (1, 1, 0.0)
    got = []
    for _ in range(100):
        got += [json.loads(line) for line in ok(cli(stack, "events", "--json")).splitlines()]
        if got:
            break
    assert [(e["detail"]["key"], e["detail"]["status"]) for e in got] == [
        ("owed/dot.png", "CAPTIONED")
    ]
    assert len(modelslab.accepted()) == paid
