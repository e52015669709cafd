"""BatchBackfillFunction's tasks per second per instance under the latency model of
``bench_aws_cost.py`` (S3 25 ms, DynamoDB 5 ms, SQS 10 ms a call, by default), and the
worked figures for a whole archive.

The real handler (``batch_handler.handler_for``, Powertools' logger included) runs schema
2.0 invocations of one task each, as S3 Batch Operations sends them, one after another as
one instance runs them, through stand-in clients that answer each call after its modeled
latency and count it. ``--captioned`` is the share of objects whose row says they are done
(a HEAD and a GetItem, no SendMessage). CPU time per task is the process's own.

    .venv/bin/python tests/benchmarks/bench_batch_backfill.py [-n 300] [--captioned 0.1]
        [--s3-ms 25] [--ddb-ms 5] [--sqs-ms 10] [--objects 10000000]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "functions"), str(ROOT / "src")]

for _name, _value in (("POWERTOOLS_METRICS_DISABLED", "true"), ("POWERTOOLS_TRACE_DISABLED", "true"),
                      ("AWS_DEFAULT_REGION", "us-east-1"), ("POWERTOOLS_LOG_LEVEL", "WARNING")):  # fmt: skip
    os.environ.setdefault(_name, _value)

from captioner import batch_handler  # noqa: E402
from captioner.batchbackfill import BatchBackfill, SqsQueue  # noqa: E402
from captioner.objects import ObjectStore  # noqa: E402
from captioner.served import ServedBuckets  # noqa: E402
from captioner.store import CaptionReader  # noqa: E402
from captioner_tools.cli.batchjobs import batch_cost  # noqa: E402
from tests.benchmarks.bench_aws_cost import Calls  # noqa: E402
from tests.conftest import LambdaContext  # noqa: E402

BUCKET, TABLE = "bench-bucket", "bench-table"
RESERVED = 20  # BatchBackfillFunction's ReservedConcurrentExecutions (template.yaml)


class HeadS3:
    def __init__(self, calls: Calls, latency_s: float) -> None:
        self.calls, self.latency = calls, latency_s

    def head_object(self, **kw: Any) -> dict[str, Any]:
        with self.calls.call("HeadObject", self.latency):
            return {"ETag": '"e1"', "ContentLength": 1000, "VersionId": "v1"}


class RowsDynamoDB:
    def __init__(self, calls: Calls, latency_s: float, captioned: float) -> None:
        self.calls, self.latency, self.captioned = calls, latency_s, captioned
        self.n = 0

    def get_item(self, **kw: Any) -> dict[str, Any]:
        with self.calls.call("GetItem", self.latency):
            self.n += 1
            if self.captioned and self.n % round(1 / self.captioned) == 0:
                key = kw["Key"]
                return {"Item": {**key, "status": {"S": "CAPTIONED"}, "etag": {"S": "e1"},
                                 "size": {"N": "1000"}, "tag_status": {"S": "WRITTEN"},
                                 "provider": {"S": "modelslab"}}}  # fmt: skip
            return {}


class ModelSqs:
    def __init__(self, calls: Calls, latency_s: float) -> None:
        self.calls, self.latency = calls, latency_s

    def send_message(self, **kw: Any) -> dict[str, Any]:
        with self.calls.call("SendMessage", self.latency):
            return {"MessageId": "m"}


def run(
    n: int, s3_ms: float, ddb_ms: float, sqs_ms: float, captioned: float
) -> tuple[list[float], float, Counter[str]]:
    calls = Calls()
    service = BatchBackfill(
        ServedBuckets.parse(BUCKET),
        ObjectStore(HeadS3(calls, s3_ms / 1000)),
        CaptionReader(TABLE, RowsDynamoDB(calls, ddb_ms / 1000, captioned)),
        SqsQueue(ModelSqs(calls, sqs_ms / 1000), "https://sqs/queue"),
    )
    handle = batch_handler.handler_for(lambda: service)
    times = []
    cpu_start = time.process_time()
    for i in range(n):
        event = {"invocationSchemaVersion": "2.0", "invocationId": f"i{i}",
                 "job": {"id": "bench", "userArguments": {}},
                 "tasks": [{"taskId": f"t{i}", "s3Bucket": BUCKET, "s3Key": f"archive/{i}+photo.jpg",
                            "s3VersionId": None}]}  # fmt: skip
        started = time.perf_counter()
        resp = handle(event, LambdaContext(function_name="bench-BatchBackfillFunction"))
        times.append(time.perf_counter() - started)
        assert resp["results"][0]["resultCode"] == "Succeeded", resp
    cpu = (time.process_time() - cpu_start) / n
    return times, cpu, calls.counts


class ListingS3:
    """ListObjectsV2 pages of 1,000 keys, each after ``latency_s``."""

    def __init__(self, calls: Calls, latency_s: float, pages: int) -> None:
        self.calls, self.latency, self.pages = calls, latency_s, pages

    def get_paginator(self, name: str) -> Any:
        outer = self

        class Pages:
            def paginate(self, **kw: Any) -> Any:
                for p in range(outer.pages):
                    with outer.calls.call("ListObjectsV2", outer.latency):
                        yield {"Contents": [{"Key": f"archive/{p}/{i}.jpg", "ETag": '"e1"',
                                             "Size": 1000} for i in range(1000)]}  # fmt: skip

        return Pages()


class BatchRowsDynamoDB:
    def __init__(self, calls: Calls, latency_s: float) -> None:
        self.calls, self.latency = calls, latency_s

    def batch_get_item(self, **kw: Any) -> dict[str, Any]:
        with self.calls.call("BatchGetItem", self.latency):
            return {"Responses": {TABLE: []}}


class BatchSqs:
    def __init__(self, calls: Calls, latency_s: float) -> None:
        self.calls, self.latency = calls, latency_s

    def send_message_batch(self, **kw: Any) -> dict[str, Any]:
        with self.calls.call("SendMessageBatch", self.latency):
            return {"Successful": [{"Id": e["Id"]} for e in kw["Entries"]]}


def queue_engine_seconds_per_million(
    list_ms: float, ddb_ms: float, sqs_ms: float, pages: int
) -> float:
    """``captioner backfill --engine queue`` (the real loop) on modeled clients."""
    from captioner_tools.cli.backfill import BackfillPlan, run_backfill

    calls = Calls()
    started = time.perf_counter()
    stats = run_backfill(
        ListingS3(calls, list_ms / 1000, pages),
        CaptionReader(TABLE, BatchRowsDynamoDB(calls, ddb_ms / 1000)),
        BatchSqs(calls, sqs_ms / 1000),
        queue_url="https://sqs/queue",
        plan=BackfillPlan(BUCKET),
    )
    assert stats.enqueued == pages * 1000
    return (time.perf_counter() - started) / (pages / 1000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=300)
    parser.add_argument("--s3-ms", type=float, default=25.0)
    parser.add_argument("--ddb-ms", type=float, default=5.0)
    parser.add_argument("--sqs-ms", type=float, default=10.0)
    parser.add_argument("--captioned", type=float, default=0.1)
    parser.add_argument("--objects", type=int, default=10_000_000)
    parser.add_argument("--caption-s", type=float, default=1.0, help="seconds per caption")
    parser.add_argument("--provider-concurrency", type=int, default=5)
    parser.add_argument("--list-ms", type=float, default=100.0, help="one ListObjectsV2 page")
    parser.add_argument("--pages", type=int, default=10, help="pages the queue engine lists")
    args = parser.parse_args()
    logging.getLogger("captioner").setLevel(logging.WARNING)

    times, cpu, counts = run(args.n, args.s3_ms, args.ddb_ms, args.sqs_ms, args.captioned)
    median = statistics.median(times)
    rate = 1 / median
    print(f"latency model: S3 {args.s3_ms:.0f} ms, DynamoDB {args.ddb_ms:.0f} ms, SQS "
          f"{args.sqs_ms:.0f} ms a call; {args.n} tasks, {args.captioned:.0%} already captioned")  # fmt: skip
    print(
        "calls per task: " + ", ".join(f"{k} {v / args.n:.2f}" for k, v in sorted(counts.items()))
    )
    print(f"per task: median {median * 1000:.1f} ms, p95 "
          f"{sorted(times)[int(len(times) * 0.95)] * 1000:.1f} ms, CPU {cpu * 1000:.2f} ms")  # fmt: skip
    print(f"one instance: {rate:.1f} tasks/s; {RESERVED} instances (the reservation): "
          f"{rate * RESERVED:.0f} tasks/s")  # fmt: skip

    n = args.objects
    to_caption = int(n * (1 - args.captioned))
    cost = batch_cost(n, generated=True, to_caption=to_caption, price_usd=0.0047)
    enqueue_h = n / (rate * RESERVED) / 3600
    captions_per_s = args.provider_concurrency / args.caption_s
    caption_days = to_caption / captions_per_s / 86400
    print(f"\n{n:,} objects, {to_caption:,} to caption (ModelsLab 0.0047 $):")
    print(f"  job: ${cost.job_usd:,.2f} Batch Operations + about ${cost.aws_usd:,.2f} of Lambda, "
          f"HEAD, GetItem and SendMessage; captions ${cost.caption_usd:,.0f}")  # fmt: skip
    print(f"  tasks decided and enqueued in about {enqueue_h:.1f} h at {RESERVED} instances")
    per_million = queue_engine_seconds_per_million(
        args.list_ms, args.ddb_ms, args.sqs_ms, args.pages
    )
    print(f"  the queue engine (--engine queue, one loop on your machine, ListObjectsV2 "
          f"{args.list_ms:.0f} ms a page): {per_million * n / 1e6 / 3600:.1f} h "
          f"({per_million:,.0f} s per million objects)")  # fmt: skip
    print(f"  captioned at the provider's limit ({args.provider_concurrency} in flight, "
          f"{args.caption_s:g} s each = {captions_per_s:g}/s): {caption_days:.1f} days; "
          f"DailyBudgetUsd for that pace: {captions_per_s * 86400 * 0.0047:,.0f} $/day")  # fmt: skip


if __name__ == "__main__":
    main()
