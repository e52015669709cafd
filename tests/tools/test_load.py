"""A long load run through the local stack: only with `scripts/test --run-load`.

Hundreds of uploads through S3 notifications → SQS → the local event source → the real
handler → fake ModelsLab (with latency and some busy replies): every object ends CAPTIONED,
each is paid for once, nothing is dead-lettered. Prints the throughput it saw.
"""

from __future__ import annotations

import itertools
import time

import pytest

from tests import images
from tests.fakes.modelslab import Reply
from tests.tools.conftest import depth, row, wait_for

OBJECTS = 300


@pytest.mark.load
def test_hundreds_of_uploads_are_each_captioned_once(stack, modelslab):
    counter = itertools.count()
    busy: list[int] = []

    def busy_sometimes(body):
        # every 7th request answers "Server busy" (transient): retried in process
        n = next(counter)
        if n % 7 == 3:
            busy.append(n)
            return Reply({"status": "error", "message": "Server busy"}, delay=0.05)
        return Reply({"status": "success", "id": n, "output": [f"caption {n}"]}, delay=0.05)

    modelslab.rule = busy_sometimes
    s3 = stack.client("s3")
    body = images.jpeg(48, 32)
    started = time.monotonic()
    for i in range(OBJECTS):
        s3.put_object(Bucket=stack.bucket, Key=f"load/{i:04d}.jpg", Body=body)

    def captioned() -> int:
        table = stack.client("dynamodb")
        pages = table.get_paginator("query").paginate(
            TableName=stack.table, IndexName="by-status-updated", Select="COUNT",
            KeyConditionExpression="#s = :s", ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues={":s": {"S": "CAPTIONED"}},
        )  # fmt: skip
        return sum(page["Count"] for page in pages)

    wait_for(captioned, lambda n: n >= OBJECTS, timeout=600, what=f"{OBJECTS} captions")
    elapsed = time.monotonic() - started
    modelslab.rule = None
    print(f"\n{OBJECTS} objects captioned in {elapsed:.1f} s ({OBJECTS / elapsed:.1f}/s)")
    assert depth(stack, stack.dlq_url) == 0
    paid = [r for r in modelslab.paid_calls() if "/load/" in r.body.get("init_image", "")]
    assert len(paid) == OBJECTS + len(busy)  # each object once, plus a retry per busy reply
    assert row(stack, "load/0000.jpg")["attempts"] == 1
