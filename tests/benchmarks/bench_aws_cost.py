"""AWS cost per image under a latency model: round trips, and the time they take.

moto's own Python time is not AWS's, so here AWS is a pair of stand-in clients that answer
each call after a modeled latency (S3 25 ms, DynamoDB 5 ms by default) and count it. The
real handler (``App.handle`` on an SQS event with one S3 notification, the pipeline,
ObjectStore and CaptionStore unchanged, the daily budget on) captions one image per
invocation through them, with a provider that answers at once; a bare baseline does only the
calls no captioner can avoid, one after another, around the same provider call:

    ranged GET (header) -> provider -> PutItem (row) -> GetObjectTagging -> PutObjectTagging

Both run the same number of times; the figures are medians. The stand-ins answer the happy
path only (a new row, an image that passes): this measures the path every new upload takes.

    .venv/bin/python tests/benchmarks/bench_aws_cost.py [-n 30] [--s3-ms 25] [--ddb-ms 5]
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import threading
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "functions"), str(ROOT / "src")]

from captioner.app import App  # noqa: E402
from captioner.budget import DailyBudget  # noqa: E402
from captioner.config import Config  # noqa: E402
from captioner.leases import SlotLeases  # noqa: E402
from captioner.limits import SlotsByProvider  # noqa: E402
from captioner.objects import ObjectStore  # noqa: E402
from captioner.pipeline import Pipeline  # noqa: E402
from captioner.providers.base import Caption, ImageSource, Length  # noqa: E402
from captioner.store import CaptionStore  # noqa: E402
from tests import images  # noqa: E402
from tests.conftest import LambdaContext, notification, s3_record, sqs_event  # noqa: E402

BUCKET, TABLE = "bench-bucket", "bench-table"
IMAGE = images.jpeg(640, 480)


class Calls:
    """Counts calls and holds each for its modeled latency (sleeping releases the GIL, so
    calls made side by side overlap as they would over the network)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    @contextmanager
    def call(self, name: str, latency_s: float):
        with self._lock:
            self.counts[name] += 1
        time.sleep(latency_s)
        yield


class ModelS3:
    def __init__(self, calls: Calls, latency_s: float) -> None:
        self.calls, self.latency = calls, latency_s

    def get_object(self, **kw: Any) -> dict[str, Any]:
        with self.calls.call("GetObject", self.latency):
            end = int(kw["Range"].split("-")[1]) + 1 if "Range" in kw else len(IMAGE)
            return {"Body": io.BytesIO(IMAGE[:end])}

    def get_object_tagging(self, **kw: Any) -> dict[str, Any]:
        with self.calls.call("GetObjectTagging", self.latency):
            return {"TagSet": [{"Key": "team", "Value": "bench"}]}

    def put_object_tagging(self, **kw: Any) -> dict[str, Any]:
        with self.calls.call("PutObjectTagging", self.latency):
            return {}

    def head_object(self, **kw: Any) -> dict[str, Any]:
        with self.calls.call("HeadObject", self.latency):
            return {"VersionId": kw.get("VersionId"), "ETag": '"e"', "ContentLength": len(IMAGE)}

    def generate_presigned_url(self, *args: Any, **kw: Any) -> str:  # local: no round trip
        return f"https://{BUCKET}.s3.amazonaws.com/{kw['Params']['Key']}?X-Amz-Signature=x"


class ModelDynamoDB:
    def __init__(self, calls: Calls, latency_s: float) -> None:
        self.calls, self.latency = calls, latency_s

    def update_item(self, **kw: Any) -> dict[str, Any]:
        with self.calls.call("UpdateItem", self.latency):
            return {"Attributes": {}}  # a new row: nothing before the claim

    def transact_write_items(self, **kw: Any) -> dict[str, Any]:
        with self.calls.call("TransactWriteItems", self.latency):  # the row and its postings
            return {}

    def put_item(self, **kw: Any) -> dict[str, Any]:
        with self.calls.call("PutItem", self.latency):
            return {}


class InstantProvider:
    name = "modelslab"
    formats = frozenset({"PNG", "JPEG"})
    price_usd = 0.0047
    cpu_bound = False

    def caption(self, image: ImageSource, length: Length, *, deadline: float, **kw: Any) -> Caption:
        return Caption(text="A photo for the benchmark.", provider=self.name, length=length)


def handler_run(n: int, s3_ms: float, ddb_ms: float) -> tuple[list[float], Counter[str]]:
    calls = Calls()
    # the template's settings: the daily budget and the deployment-wide provider leases
    config = Config(captions_table=TABLE, daily_budget_usd=20.0, provider_concurrency=5)
    ddb = ModelDynamoDB(calls, ddb_ms / 1000)
    pipeline = Pipeline(
        config,
        ObjectStore(ModelS3(calls, s3_ms / 1000)),
        CaptionStore(TABLE, ddb),
        InstantProvider(),
        budget=DailyBudget(TABLE, ddb, config.daily_budget_usd),
        slots=SlotsByProvider(
            config.provider_slots,
            lambda name: SlotLeases(TABLE, ddb, name, config.provider_concurrency),
        ),
    )
    app = App(config, pipeline)
    times = []
    for i in range(n + 1):
        rec = s3_record(f"bench/{i}.jpg", bucket=BUCKET, version_id=f"v{i}", etag="e",
                        size=len(IMAGE), sequencer=f"0066A1B2C3D4E5F6{i:02X}")  # fmt: skip
        event = sqs_event(notification(rec))
        started = time.perf_counter()
        result = app.handle(event, LambdaContext())
        elapsed = time.perf_counter() - started
        assert result == {"batchItemFailures": []}, result
        if i:  # the first one warms the thread pools
            times.append(elapsed)
    counts = Counter({k: v * n // (n + 1) for k, v in calls.counts.items()})
    return times, counts


def baseline_run(n: int, s3_ms: float, ddb_ms: float) -> list[float]:
    calls = Calls()
    s3, ddb, provider = (
        ModelS3(calls, s3_ms / 1000),
        ModelDynamoDB(calls, ddb_ms / 1000),
        InstantProvider(),
    )
    times = []
    for i in range(n):
        started = time.perf_counter()
        key = f"bench/{i}.jpg"
        header = s3.get_object(Bucket=BUCKET, Key=key, Range="bytes=0-65535")["Body"].read()
        assert header[:2] == b"\xff\xd8"
        caption = provider.caption(None, "normal", deadline=0)  # type: ignore[arg-type]
        ddb.put_item(TableName=TABLE, Item={"bucket": {"S": BUCKET}, "key": {"S": key},
                                            "caption": {"S": caption.text}})  # fmt: skip
        tags = s3.get_object_tagging(Bucket=BUCKET, Key=key)["TagSet"]
        tags.append({"Key": "caption", "Value": caption.text})
        s3.put_object_tagging(Bucket=BUCKET, Key=key, Tagging={"TagSet": tags})
        times.append(time.perf_counter() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=30)
    parser.add_argument("--s3-ms", type=float, default=25.0)
    parser.add_argument("--ddb-ms", type=float, default=5.0)
    args = parser.parse_args()
    import logging
    import os

    for name, value in (("POWERTOOLS_METRICS_DISABLED", "true"),
                        ("POWERTOOLS_TRACE_DISABLED", "true"), ("AWS_DEFAULT_REGION", "us-east-1")):  # fmt: skip
        os.environ.setdefault(name, value)

    logging.getLogger("captioner").setLevel(logging.WARNING)
    times, counts = handler_run(args.n, args.s3_ms, args.ddb_ms)
    base = baseline_run(args.n, args.s3_ms, args.ddb_ms)
    handler_ms, base_ms = statistics.median(times) * 1000, statistics.median(base) * 1000
    modeled_serial = (
        sum(
            n * (args.ddb_ms if name in ("UpdateItem", "TransactWriteItems") else args.s3_ms)
            for name, n in counts.items()
        )
        / args.n
    )
    print(f"latency model: S3 {args.s3_ms:.0f} ms, DynamoDB {args.ddb_ms:.0f} ms per call; "
          f"{args.n} images, one per invocation")  # fmt: skip
    print("round trips per image: " + ", ".join(
        f"{name} {n / args.n:.0f}" for name, n in sorted(counts.items())
    ) + f" = {sum(counts.values()) / args.n:.0f}")  # fmt: skip
    print(f"handler: median {handler_ms:.1f} ms per image "
          f"(the same calls one after another: {modeled_serial:.0f} ms)")  # fmt: skip
    print(f"baseline (GET range, PutItem, GetObjectTagging, PutObjectTagging): "
          f"median {base_ms:.1f} ms")  # fmt: skip
    print(f"handler / baseline = {handler_ms / base_ms:.2f}")


if __name__ == "__main__":
    main()
