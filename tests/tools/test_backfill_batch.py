"""``captioner backfill --engine batch`` end to end on the local stack: the CLI creates the
job with s3control.create_job at the stack's endpoint, the stand-in runner
(captioner_tools.local.batchops) builds the tasks, invokes BatchBackfillFunction's handler
with schema 2.0 events, the caption function captions what it enqueued, and
``--job JOB_ID`` reports progress and the failed keys."""

from __future__ import annotations

import json
import re
import time
from urllib.parse import unquote, urlsplit

import pytest

from captioner_tools.cli.backfill_batch import SAME_JOB_SLACK_S
from captioner_tools.cli.batchjobs import csv_manifest
from captioner_tools.local.stack import LocalStack
from tests import images
from tests.conftest import API_KEY
from tests.tools.conftest import RETRY_DELAY_S, row, wait_for, wait_for_status
from tests.tools.test_cli import cli, ok, one_error_line


@pytest.fixture(scope="module")
def stack(modelslab):
    with LocalStack(
        port=0,
        visibility_timeout=RETRY_DELAY_S,
        env={"MODELSLAB_API_URL": modelslab.url, "MODELSLAB_API_KEY": API_KEY},
    ) as local:
        yield local


def put_before_the_stack(stack, objects):
    """Objects that were there before: their notifications never reach the function."""
    stack.stop_poller()
    for key, body in objects:
        stack.client("s3").put_object(Bucket=stack.bucket, Key=key, Body=body)
    sqs = stack.client("sqs")  # drained, not purged: SQS allows one purge a minute
    while messages := sqs.receive_message(QueueUrl=stack.queue_url, MaxNumberOfMessages=10,
                                          VisibilityTimeout=60).get("Messages", []):  # fmt: skip
        sqs.delete_message_batch(QueueUrl=stack.queue_url, Entries=[
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
        ])  # fmt: skip
    stack.start_poller()


def object_key(presigned_url: str) -> str:
    """The object key of a presigned GET URL (path-style: /bucket/key)."""
    path = urlsplit(presigned_url).path
    return unquote(path.split("/", 2)[2])


def job_of(output: str) -> str:
    found = re.search(r"job ([0-9a-f-]{36})", output)
    assert found, output
    return found.group(1)


def test_a_small_prefix_end_to_end(stack, modelslab):
    put_before_the_stack(stack, [("small/a.png", images.png()), ("small/b.jpg", images.jpeg()),
                                 ("small/", b"")])  # fmt: skip
    url = f"s3://{stack.bucket}/small/"
    dry = ok(cli(stack, "backfill", url, "--engine", "batch", "--dry-run"))
    assert "Batch Operations: $1.25 per million objects" in dry
    assert "dry run: nothing created" in dry
    assert stack.batch_operations.jobs == {}
    paid = len(modelslab.paid_calls())
    out = ok(cli(stack, "backfill", url, "--engine", "batch", "--yes"))
    job_id = job_of(out)
    assert f"created job {job_id}" in out
    stack.batch_operations.wait(job_id)
    for key in ("small/a.png", "small/b.jpg"):
        wait_for_status(stack, key, "CAPTIONED")
    assert len(modelslab.paid_calls()) == paid + 2
    progress = json.loads(ok(cli(stack, "backfill", "--job", job_id, "--json")))
    assert progress == {
        "job_id": job_id, "status": "Complete", "tasks_total": 3, "tasks_succeeded": 3,
        "tasks_failed": 0, "elapsed_s": progress["elapsed_s"], "eta_s": 0.0, "reason": "",
    }  # fmt: skip
    # the same command again: the same token, the same job, said so
    time.sleep(SAME_JOB_SLACK_S + 0.5)  # (a job made earlier than the slack is "again")
    again = ok(cli(stack, "backfill", url, "--engine", "batch", "--yes"))
    assert job_of(again) == job_id and "not created again" in again


def test_batch_only_flags_need_the_batch_engine(stack):
    one_error_line(cli(stack, "backfill", f"s3://{stack.bucket}/", "--yes"), "--yes", "batch")
    one_error_line(cli(stack, "backfill", "s3://x-bucket/", "--engine", "kafka"), "--engine")
    one_error_line(cli(stack, "backfill"), "s3://BUCKET/PREFIX")


def test_the_cost_comes_first_and_without_a_terminal_creating_needs_yes(stack):
    jobs = dict(stack.batch_operations.jobs)
    result = cli(stack, "backfill", f"s3://{stack.bucket}/", "--engine", "batch")
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[0].startswith("Batch Operations: $1.25 per million objects")
    assert lines[-1] == "error: creating a Batch Operations job needs confirmation: pass --yes"
    assert stack.batch_operations.jobs == jobs


def test_a_job_that_cannot_work_is_refused_before_it_is_created(stack):
    """A bucket the stack does not serve: no job, no fee, one line."""
    jobs = dict(stack.batch_operations.jobs)
    stack.client("s3").create_bucket(Bucket="not-served-here")
    result = cli(stack, "backfill", "s3://not-served-here/", "--engine", "batch", "--yes")
    one_error_line(result, "does not serve s3://not-served-here", "ExistingBucketNames")
    assert stack.batch_operations.jobs == jobs


def test_following_a_job_that_failed_exits_1(stack):
    from captioner_tools.local.batchops import LocalJob

    created = cli(stack, "backfill", f"s3://{stack.bucket}/nothing-here/", "--engine", "batch",
                  "--yes")  # fmt: skip
    assert created.exit_code == 0, created.output
    job_id = job_of(created.output)
    job: LocalJob = stack.batch_operations.jobs[job_id]
    followed = cli(stack, "backfill", "--job", job_id, "--follow")
    assert followed.exit_code == 0, followed.output  # complete, nothing failed
    job.status, job.reason = "Failed", "TaskFailureThresholdExceeded"
    assert cli(stack, "backfill", "--job", job_id, "--follow").exit_code == 1


@pytest.mark.parametrize(
    "count",
    [100, pytest.param(1000, marks=pytest.mark.load, id="1000")],  # 1,000: --run-load
)
def test_deleted_and_captioned_objects_among_many_each_paid_once(stack, modelslab, count):
    """``count`` objects named in a CSV manifest; 10 % deleted before the job runs, 10 %
    already captioned: exactly the deleted ones are reported failed, exactly the rest
    captioned, and each of those paid once."""
    prefix = f"archive{count}/"
    keys = [f"{prefix}{i:04d} photo+{i}.png" for i in range(count)]
    put_before_the_stack(stack, [(k, images.png()) for k in keys])
    s3, ddb = stack.client("s3"), stack.client("dynamodb")
    deleted, captioned = set(keys[0::10]), set(keys[5::10])
    for key in captioned:  # captioned before: a finished row for the current version
        head = s3.head_object(Bucket=stack.bucket, Key=key)
        ddb.put_item(TableName=stack.table, Item={
            "bucket": {"S": stack.bucket}, "key": {"S": key}, "status": {"S": "CAPTIONED"},
            "etag": {"S": head["ETag"].strip('"')}, "size": {"N": str(head["ContentLength"])},
            "version_id": {"S": head["VersionId"]}, "provider": {"S": "modelslab"},
            "tag_status": {"S": "WRITTEN"}, "caption": {"S": "Captioned before."},
        })  # fmt: skip
    text, _ = csv_manifest((stack.bucket, k, None) for k in keys)
    reports = stack.resources.outputs["BatchReportsBucketName"]
    manifest_key = f"manifests/{prefix.rstrip('/')}.csv"
    s3.put_object(Bucket=reports, Key=manifest_key, Body=text.encode())
    for key in deleted:
        s3.delete_object(Bucket=stack.bucket, Key=key)
    paid = len(modelslab.paid_calls())

    out = ok(cli(stack, "backfill", f"s3://{stack.bucket}/{prefix}", "--engine", "batch",
                 "--manifest", f"s3://{reports}/{manifest_key}", "--yes"))  # fmt: skip
    assert f"Batch Operations: $0.25 for {count:,} objects" in out
    # the rows cannot know what was deleted: only the job's HEADs can
    assert f"captions: {count * 9 // 10:,} to caption" in out
    job = stack.batch_operations.wait(job_of(out), timeout=count * 0.6)
    tenth = count // 10
    assert (job.status, job.total, job.succeeded, job.failed) == (
        "Complete", count, count - tenth, tenth,
    )  # fmt: skip
    todo = set(keys) - deleted - captioned
    wait_for(lambda: len(modelslab.paid_calls()) - paid, lambda n: n >= len(todo),
             timeout=count * 0.5, what=f"{len(todo)} captions")  # fmt: skip
    for key in todo:
        wait_for_status(stack, key, "CAPTIONED", timeout=60)
    paid_keys = [object_key(c.body["init_image"]) for c in modelslab.paid_calls()[paid:]]
    assert sorted(paid_keys) == sorted(todo)  # exactly the rest, each once
    for key in captioned:
        assert row(stack, key)["caption"] == "Captioned before."

    # the progress and the failed keys, from the completion report
    shown = ok(cli(stack, "backfill", "--job", job.job_id, "--follow"))
    assert f"Complete · tasks {count:,} · succeeded {count - tenth:,} · failed {tenth:,}" in shown
    assert f"failed tasks ({tenth}):" in shown
    listed = set(re.findall(r"s3://\S+?/(archive\d+/\d{4} photo\+\d+\.png)  Perm", shown))
    assert listed <= deleted and len(listed) == min(tenth, 50)  # the first 50 at most
    assert ("… and 50 more" in shown) == (tenth > 50)
    assert "object missing" in shown


def test_the_local_batch_function_serves_the_upload_bucket_and_the_existing_ones():
    from captioner.batchbackfill import BatchSettings
    from captioner_tools.local.template import StackTemplate

    refs = {"UploadBucket": "uploads", "CaptionsTable": "tbl", "CaptionQueue": "q"}
    for existing, served in (("", {"uploads"}), ("photos,scans", {"uploads", "photos", "scans"})):
        spec = StackTemplate(None, {"ExistingBucketNames": existing}).function(
            "BatchBackfillFunction", refs
        )
        assert spec.handler == "captioner.batch_handler.lambda_handler"
        assert BatchSettings.from_env(spec.environment).buckets.names == served


def test_the_generator_filters_created_before_and_storage_class(stack):
    put_before_the_stack(stack, [("dated/new.png", images.png())])
    stack.client("s3").put_object(Bucket=stack.bucket, Key="dated/cold.png", Body=images.png(),
                                  StorageClass="GLACIER")  # fmt: skip
    url = f"s3://{stack.bucket}/dated/"
    old = ok(cli(stack, "backfill", url, "--engine", "batch", "--created-before", "2000-01-01",
                 "--yes"))  # fmt: skip
    assert stack.batch_operations.wait(job_of(old)).total == 0  # nothing that old
    now = ok(cli(stack, "backfill", url, "--engine", "batch", "--created-before", "2100-01-01",
                 "--yes"))  # fmt: skip
    job = stack.batch_operations.wait(job_of(now))
    # the archived object is not listed: HEAD works on it, but no caption could read it
    assert [r[0].key for r in job.results] == ["dated/new.png"]
