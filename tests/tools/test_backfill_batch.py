"""``captioner backfill --engine batch`` end to end on the local stack: the CLI creates the
job with s3control.create_job at the stack's endpoint, the stand-in runner
(captioner_tools.local.batchops) builds the tasks, invokes BatchBackfillFunction's handler
with schema 2.0 events, the caption function captions what it enqueued, and
``--job JOB_ID`` reports progress and the failed keys."""

from __future__ import annotations

import json
import re
import time

import pytest

from captioner_tools.cli.backfill_batch import SAME_JOB_SLACK_S
from captioner_tools.local.stack import LocalStack
from tests import images
from tests.conftest import API_KEY
from tests.tools.conftest import RETRY_DELAY_S, wait_for_status
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
    stack.client("sqs").purge_queue(QueueUrl=stack.queue_url)
    stack.start_poller()


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
