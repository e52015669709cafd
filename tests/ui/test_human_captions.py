"""A person's caption through the real pipeline (local stack, fake ModelsLab): the pipeline
never replaces it — duplicate deliveries, backfills and re-captions leave it alone — unless a
re-caption is forced; a newer upload of the key is a new image and is captioned as usual."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from captioner.events import backfill_message
from captioner_tools.cli.app import app
from captioner_tools.review import Reviewer
from tests import images
from tests.tools.conftest import depth, row
from tests.ui.conftest import deployment_of, put, wait_for, wait_for_status

runner = CliRunner()


def cli(stack, *args):
    env = {"AWS_ENDPOINT_URL": stack.endpoint_url, "COLUMNS": "200"}
    for name in ("CAPTIONER_BUCKET", "CAPTIONS_TABLE", "CAPTIONER_QUEUE_URL", "CAPTIONER_DLQ_URL"):
        env[name] = None
    return runner.invoke(app, list(args), env=env)


def send(stack, key, **kw):
    r = row(stack, key)
    body = backfill_message(stack.bucket, key, version_id=r.get("version_id"), etag=r.get("etag"),
                            size=r.get("size"), **kw)  # fmt: skip
    stack.client("sqs").send_message(QueueUrl=stack.queue_url, MessageBody=body)


def drained(stack):
    wait_for(lambda: depth(stack, stack.queue_url), lambda n: n == 0, 20, "the queue to drain")


@pytest.fixture
def edited(stack, modelslab, request):
    """human/cat.png, captioned by the model, then by a person (a fresh object per test)."""
    key = f"human/{request.node.name[5:40]}/cat.png"
    put(stack, key, images.png(64, 48))
    first = wait_for(lambda: row(stack, key),
                     lambda r: r is not None and r.get("status") == "CAPTIONED" and "tag_status" in r,
                     20, "caption")  # fmt: skip
    assert first["caption_source"] == "model" and first["caption"] == "A picture named cat.png."
    url = f"s3://{stack.bucket}/{key}"
    result = cli(stack, "edit", url, "A tabby cat asleep on a red sofa", "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_an_edit_is_a_human_caption_with_its_tag_word_index_and_time(stack, edited):
    got = row(stack, edited["key"])
    assert got["caption"] == "A tabby cat asleep on a red sofa" and got["status"] == "CAPTIONED"
    assert got["caption_source"] == "human" and got["edited_at"] == edited["edited_at"]
    assert got["tag_status"] == "WRITTEN" and "claim_token" not in got
    tags = stack.client("s3").get_object_tagging(Bucket=stack.bucket, Key=edited["key"])
    assert {"Key": "caption", "Value": "A tabby cat asleep on a red sofa"} in tags["TagSet"]
    found = cli(stack, "search", "sofa", "--json")
    assert edited["key"] in [r["key"] for r in json.loads(found.output)]


def test_duplicates_and_backfills_never_replace_a_human_caption(stack, modelslab, edited):
    paid = len(modelslab.paid_calls())
    send(stack, edited["key"])  # a duplicate delivery / a plain backfill
    send(stack, edited["key"], provider="local")  # a backfill that asks another provider
    result = cli(
        stack,
        "backfill",
        f"s3://{stack.bucket}/{edited['key'].rsplit('/', 1)[0]}/",
        "--provider",
        "local",
    )
    assert result.exit_code == 0, result.output
    drained(stack)
    got = row(stack, edited["key"])
    assert got["caption"] == "A tabby cat asleep on a red sofa"
    assert got["caption_source"] == "human" and len(modelslab.paid_calls()) == paid


def test_a_recaption_leaves_a_human_caption_unless_forced(stack, modelslab, edited):
    reviewer = Reviewer(deployment_of(stack))
    plan = reviewer.recaption([row(stack, edited["key"])])
    assert plan.as_dict() == {"enqueued": 0, "skipped_human": 1, "skipped_deleted": 0}
    send(stack, edited["key"])
    drained(stack)
    assert row(stack, edited["key"])["caption_source"] == "human"

    paid = len(modelslab.paid_calls())
    plan = reviewer.recaption([row(stack, edited["key"])], replace_human=True)
    assert plan.enqueued == 1
    got = wait_for(lambda: row(stack, edited["key"]),
                   lambda r: r.get("caption_source") == "model" and "tag_status" in r,
                   20, "the forced re-caption")  # fmt: skip
    assert got["caption"].startswith("A picture named") and "edited_at" not in got
    assert len(modelslab.paid_calls()) == paid + 1
    tags = stack.client("s3").get_object_tagging(Bucket=stack.bucket, Key=edited["key"])
    assert {"Key": "caption", "Value": got["caption"]} in tags["TagSet"]


def test_a_newer_upload_of_the_key_is_captioned_as_usual(stack, edited):
    put(stack, edited["key"], images.jpeg())
    got = wait_for(lambda: row(stack, edited["key"]),
                   lambda r: r.get("version_id") != edited["version_id"]
                   and r.get("status") == "CAPTIONED" and "tag_status" in r,
                   20, "the new version's caption")  # fmt: skip
    assert got["caption_source"] == "model" and "edited_at" not in got


def test_an_edit_of_a_version_that_is_no_longer_the_rows_is_refused(stack, edited):
    url = f"s3://{stack.bucket}/{edited['key']}"
    result = cli(stack, "edit", url, "old words", "--version-id", "not-the-version")
    assert result.exit_code == 1
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "no longer the row's" in lines[0]
    assert row(stack, edited["key"])["caption"] == "A tabby cat asleep on a red sofa"


def test_a_rejected_row_becomes_captioned_by_a_person(stack):
    put(stack, "human/notes.png", b"plain text, not an image")
    wait_for_status(stack, "human/notes.png", "REJECTED")
    result = cli(stack, "edit", f"s3://{stack.bucket}/human/notes.png", "Meeting notes")
    assert result.exit_code == 0, result.output
    got = row(stack, "human/notes.png")
    assert (got["status"], got["caption_source"], got["caption"]) == (
        "CAPTIONED", "human", "Meeting notes",
    )  # fmt: skip
    assert "reason" not in got
    send(stack, "human/notes.png")
    drained(stack)
    assert row(stack, "human/notes.png")["status"] == "CAPTIONED"


def test_export_writes_alt_text_as_csv_json_and_jsonl(stack, edited):
    out = cli(
        stack,
        "export",
        f"s3://{stack.bucket}/{edited['key'].rsplit('/', 1)[0]}/",
        "--format",
        "csv",
    )
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert lines[0] == "bucket,key,version_id,caption,caption_source,status"
    assert any(edited["key"] in ln and ",human,CAPTIONED" in ln for ln in lines[1:])
    as_json = json.loads(
        cli(
            stack, "export", f"s3://{stack.bucket}/{edited['key'].rsplit('/', 1)[0]}/", "-f", "json"
        ).output
    )
    assert {"bucket", "key", "version_id", "caption", "caption_source", "status"} == set(as_json[0])
    jsonl = cli(
        stack,
        "export",
        f"s3://{stack.bucket}/{edited['key'].rsplit('/', 1)[0]}/",
        "-f",
        "jsonl",
        "-s",
        "captioned",
    )
    assert all(json.loads(ln)["status"] == "CAPTIONED" for ln in jsonl.output.splitlines())
