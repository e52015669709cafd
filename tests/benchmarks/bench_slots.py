"""Slot utilization: is every paid provider slot busy while work is queued, and never one
too many?

N function instances, each its own process (as Lambda runs them) with the template's
settings (ProviderConcurrency instances, batch size and window, CAPTION_BATCH_CONCURRENCY,
CAPTION_PROVIDER_SLOTS), each fed SQS batches by its own copy of the local stack's event
source, against one moto server (the local stack's, conditional writes and receives made
atomic as in AWS) and a fake ModelsLab that allows LIMIT caption requests in progress at
SECONDS each and answers 429 beyond that.

The instances are started and warm (App built) before the clock starts; the images are
already in the queue (S3 notifications of the uploads). The clock runs from the moment the
instances may poll until the last row is CAPTIONED.

    ideal = ceil(images / LIMIT) x SECONDS        utilization = ideal / wall

It also prints the most requests the fake saw in progress, the 429s, how many images were
paid for more than once, and the fake's own busy time (sum of accepted request spans /
LIMIT, against the span from the first request to the last reply).

The fake runs in a process of its own, as ModelsLab runs apart from AWS: in the moto
server's process it waited for the interpreter lock behind moto's requests, which delayed
every request it received by some milliseconds.

    .venv/bin/python tests/benchmarks/bench_slots.py [--images 300] [--seconds 1.0]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")  # no CloudWatch to read them
sys.path[:0] = [str(ROOT), str(ROOT / "functions"), str(ROOT / "src")]

from captioner_tools.local.stack import LocalStack  # noqa: E402
from captioner_tools.local.template import StackTemplate  # noqa: E402
from tests import images  # noqa: E402
from tests.fakes.modelslab import FakeModelsLab, Reply  # noqa: E402
from tests.fakes.process import LineProcess  # noqa: E402

API_KEY = "bench-key"


def instance_main() -> None:
    """One function instance: its own process, App and event source (max one invocation at
    a time, as one Lambda instance). Reads its settings from the environment."""
    import boto3

    from captioner import handler
    from captioner_tools.local.poller import FunctionTarget, PollerSettings, SqsEventSource

    spec = json.loads(os.environ["BENCH_SPEC"])
    sqs = boto3.client("sqs")  # the function's environment points at the local stack
    app = handler.get_app()  # warm: the instance exists before the clock starts
    warm = json.loads(os.environ["BENCH_WARM"])[int(os.environ["BENCH_INSTANCE"])]
    context = {"function_name": "captioner-bench", "timeout_s": 60}
    from captioner_tools.local.poller import LambdaContext

    # one caption of its own first (connections open, code paths run): a warm instance
    handler.lambda_handler({"Records": [warm]}, LambdaContext(**context))
    slots = app.pipeline.slots(app.pipeline.provider)
    slots.peak = slots.leases_taken = slots.leases_handed_over = 0  # the warm-up's do not count
    print("ready", flush=True)
    sys.stdin.readline()  # go
    source = SqsEventSource(
        sqs,
        spec["queue_url"],
        spec["queue_arn"],
        FunctionTarget("captioner-bench", handler.lambda_handler, timeout_s=60),
        PollerSettings(
            batch_size=spec["batch_size"],
            batching_window_s=spec["batching_window_s"],
            max_concurrency=1,  # one instance runs one invocation at a time
            retry_delay_s=1,
            wait_time_s=1,
            max_receive_count=5,
        ),
    ).start()
    sys.stdin.readline()  # stop
    source.stop()
    print(json.dumps({"totals": dict(source.totals), "peak_slots": slots.peak,
                      "leases": [slots.leases_taken, slots.leases_handed_over]}), flush=True)  # fmt: skip


def fake_main() -> None:
    """The fake ModelsLab, in its own process. Commands on stdin, one per line: ``clear``
    (forget the warm-up), ``wait N SECONDS`` (until N captions were answered: prints
    ``answered N``) and ``report`` (prints what it saw as JSON, then stops)."""
    limit, seconds = int(sys.argv[2]), float(sys.argv[3])
    fake = FakeModelsLab().start()
    fake.limit = limit
    fake.rule = lambda body: Reply(
        {"status": "success", "output": ["A benchmark photo."]}, delay=seconds
    )
    print(fake.url, flush=True)
    for line in sys.stdin:
        command, *args = line.split()
        if command == "clear":
            fake.requests.clear()
            fake.busy_spans.clear()
            fake.limited.clear()
            fake.max_in_flight = 0
            print("cleared", flush=True)
        elif command == "wait":
            deadline = time.monotonic() + float(args[1])
            while len(fake.busy_spans) < int(args[0]) and time.monotonic() < deadline:
                time.sleep(0.05)
            print(f"answered {len(fake.busy_spans)}", flush=True)
        elif command == "report":
            paid = [r.body.get("init_image", "").split("?")[0] for r in fake.accepted()]
            print(json.dumps({"spans": fake.busy_spans, "limited": len(fake.limited),
                              "max_in_flight": fake.max_in_flight, "paid": paid}), flush=True)  # fmt: skip
            break
    fake.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=1.0, help="provider time per caption")
    parser.add_argument("--limit", type=int, default=None, help="default: ProviderConcurrency")
    parser.add_argument("--per-instance", action="store_true",
                        help="0.3's rule for comparison: ProviderConcurrency instances of one "
                             "slot each, no deployment-wide leases")  # fmt: skip
    parser.add_argument("--instances", type=int, default=None,
                        help="default: the event source's MaximumConcurrency")  # fmt: skip
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a function setting other than the template's (repeatable)")  # fmt: skip
    args = parser.parse_args()

    template = StackTemplate()
    limit = args.limit or int(template.parameter("ProviderConcurrency"))
    fake = LineProcess([sys.executable, __file__, "--fake", str(limit), str(args.seconds)])
    env = {"MODELSLAB_API_URL": fake.url, "MODELSLAB_API_KEY": API_KEY}
    with LocalStack(port=0, poll=False, register_stack=False, env=env,
                    schedule_interval_s=0) as stack:  # fmt: skip
        function = stack.resources.function
        event = function.events[0]
        instances = event.max_concurrency
        handler_env = {k: v for k, v in stack.handler_environment().items() if v is not None}
        instances = args.instances or instances
        if args.per_instance:
            instances = limit
            handler_env |= {"CAPTION_PROVIDER_SLOTS": "1", "CAPTION_PROVIDER_CONCURRENCY": "0"}
        handler_env |= dict(item.split("=", 1) for item in args.set)
        settings = {
            "ProviderConcurrency": limit,
            "instances (MaximumConcurrency)": instances,
            "BatchSize": event.batch_size,
            "CAPTION_BATCH_CONCURRENCY": handler_env.get("CAPTION_BATCH_CONCURRENCY"),
            "CAPTION_PROVIDER_SLOTS": handler_env.get("CAPTION_PROVIDER_SLOTS"),
            "CAPTION_PROVIDER_CONCURRENCY": handler_env.get("CAPTION_PROVIDER_CONCURRENCY"),
        }
        body = images.jpeg(64, 48)
        s3 = stack.client("s3")
        warm = warm_up_records(stack, body, instances)
        for i in range(args.images):
            s3.put_object(Bucket=stack.bucket, Key=f"bench/{i:05d}.jpg", Body=body)
        spec = {
            "port": stack.port,
            "queue_url": stack.queue_url,
            "queue_arn": stack.queue_arn,
            "batch_size": event.batch_size,
            "batching_window_s": event.batching_window_s,
        }
        child_env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CAPTION"))},
            **handler_env,
            "BENCH_SPEC": json.dumps(spec),
            "BENCH_WARM": json.dumps(warm),
            "PYTHONPATH": os.pathsep.join(sys.path[:3]),
        }
        procs = [
            subprocess.Popen(
                [sys.executable, __file__, "--instance"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=child_env | {"BENCH_INSTANCE": str(i)},
                text=True,
            )
            for i in range(instances)
        ]
        for proc in procs:
            assert proc.stdout is not None
            while (line := proc.stdout.readline()) and line.strip() != "ready":
                pass
            assert line.strip() == "ready"
        fake.ask("clear")  # the warm-up captions do not count
        started = time.time()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        captioned, finished = wait_until_captioned(stack, fake, args.images, args.images * 3 + 120)
        wall = finished - started
        reports = []
        for proc in procs:
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write("stop\n")
            proc.stdin.flush()
            output = proc.stdout.read()
            if os.environ.get("BENCH_LOGS"):  # the instances' own log lines, for a look
                Path(os.environ["BENCH_LOGS"], f"instance-{len(reports)}.log").write_text(output)
            lines = [line for line in output.splitlines() if line.startswith('{"totals"')]
            reports.append(json.loads(lines[-1]))
            proc.wait(30)
    seen = fake.finish("report")

    ideal = math.ceil(args.images / limit) * args.seconds
    paid = Counter(seen["paid"])
    spans = [(start, end) for start, end in seen["spans"]]
    busy = sum(end - start for start, end in spans) / limit
    span = max(e for _, e in spans) - min(s for s, _ in spans)
    print(f"settings: {settings}")
    print(f"images {args.images}, {args.seconds:.2f} s per caption, limit {limit} in progress")
    print(f"captioned {captioned}, wall {wall:.2f} s, ideal {ideal:.2f} s")
    print(f"utilization (ideal / wall) {ideal / wall:.3f}")
    print(f"provider busy {busy:.2f} s of {span:.2f} s from first request to last reply "
          f"({busy / span:.3f})")  # fmt: skip
    print(f"peak in flight {seen['max_in_flight']} (limit {limit}), 429s {seen['limited']}, "
          f"paid requests {sum(paid.values())}, images paid twice "
          f"{sum(1 for n in paid.values() if n > 1)}")  # fmt: skip
    gaps = idle_gaps(spans, limit)
    first = min(st for st, _ in spans) - fake_clock_at(started)
    print(f"first request {first:.2f} s after the start; idle slot gaps > 50 ms: {len(gaps)}, "
          f"{sum(gaps):.2f} s in all (largest {max(gaps, default=0):.2f} s)")  # fmt: skip
    shares = in_flight_shares(spans)
    print("time with n requests in flight (first request to last reply): " + ", ".join(
        f"{n}: {share:.1%}" for n, share in sorted(shares.items(), reverse=True)))  # fmt: skip
    print("per instance: " + ", ".join(
        f"{r['totals'].get('invocations', 0)} invocations / {r['totals'].get('received', 0)} "
        f"records / peak slots {r['peak_slots']} / leases taken {r['leases'][0]}, handed over "
        f"{r['leases'][1]}" for r in reports))  # fmt: skip


def warm_up_records(stack: LocalStack, body: bytes, instances: int) -> list[dict]:
    """One SQS record per instance for an object of its own (not counted)."""
    import uuid

    from captioner_tools.local.poller import FunctionTarget, PollerSettings, SqsEventSource
    from tests.conftest import notification, s3_record

    source = SqsEventSource(None, stack.queue_url, stack.queue_arn,
                            FunctionTarget("warm", lambda e, c: None), PollerSettings())  # fmt: skip
    records = []
    for i in range(instances):
        key = f"warm/{i}.jpg"
        put = stack.client("s3").put_object(Bucket=stack.bucket, Key=key, Body=body)
        rec = s3_record(key, bucket=stack.bucket, version_id=put.get("VersionId"),
                        etag=put["ETag"].strip('"'), size=len(body))  # fmt: skip
        message = {"MessageId": str(uuid.uuid4()), "ReceiptHandle": "warm",
                   "Body": json.dumps(notification(rec)),
                   "Attributes": {"ApproximateReceiveCount": "1"}}  # fmt: skip
        records.append(source.record(message))
    drop_queued(stack)  # their notifications and S3's s3:TestEvent: delivered by hand instead
    return records


def drop_queued(stack: LocalStack) -> None:
    sqs = stack.client("sqs")
    while msgs := sqs.receive_message(QueueUrl=stack.queue_url, MaxNumberOfMessages=10,
                                      WaitTimeSeconds=1).get("Messages", []):  # fmt: skip
        for m in msgs:
            sqs.delete_message(QueueUrl=stack.queue_url, ReceiptHandle=m["ReceiptHandle"])


def idle_gaps(spans: list[tuple[float, float]], lanes: int) -> list[float]:
    """Idle time between consecutive requests, spans laid out on ``lanes`` slots (each span
    on the slot that freed last before it started)."""
    free = [min(st for st, _ in spans)] * lanes
    gaps = []
    for start, end in sorted(spans):
        best = max((i for i in range(lanes) if free[i] <= start + 1e-3), key=lambda i: free[i],
                   default=min(range(lanes), key=lambda i: free[i]))  # fmt: skip
        if start - free[best] > 0.05:
            gaps.append(start - free[best])
        free[best] = end
    return gaps


def in_flight_shares(spans: list[tuple[float, float]]) -> dict[int, float]:
    """How much of the time from the first request to the last reply had n in flight."""
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    time_at: Counter[int] = Counter()
    now, level = edges[0][0], 0
    for at, step in edges:
        time_at[level] += at - now
        now, level = at, level + step
    total = sum(time_at.values()) or 1.0
    return {n: t / total for n, t in time_at.items() if t > 0}


def wait_until_captioned(
    stack: LocalStack, fake: LineProcess, want: int, timeout: float
) -> tuple[int, float]:
    """(rows captioned, when the last of them was written: its ``updated_at``).

    The wait must not load the moto server the instances share: a query that returns 300
    rows costs moto ~330 ms of Python, under the lock that its writes take too
    (``local/atomic.py``), and polled twice a second it slowed every lease crossing. So it
    first watches the fake (no AWS call) until every image has had its reply, then counts
    the rows (``Select=COUNT``, ~25 ms) until all are written, and reads them once."""
    ddb = stack.client("dynamodb")
    deadline = time.monotonic() + timeout
    query = {
        "TableName": stack.table,
        "KeyConditionExpression": "#b = :b AND begins_with(#k, :p)",
        "FilterExpression": "#s = :s",
        "ExpressionAttributeNames": {"#b": "bucket", "#k": "key", "#s": "status"},
        "ExpressionAttributeValues": {
            ":b": {"S": stack.bucket},
            ":p": {"S": "bench/"},
            ":s": {"S": "CAPTIONED"},
        },
    }
    fake.ask(f"wait {want} {timeout}")
    pages = ddb.get_paginator("query")
    while sum(p["Count"] for p in pages.paginate(**query, Select="COUNT")) < want:
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    rows = [item for page in pages.paginate(**query) for item in page["Items"]]
    last = max((r["updated_at"]["S"] for r in rows), default=None)
    return len(rows), _epoch(last) if last else time.time()


def _epoch(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def fake_clock_at(wall: float) -> float:
    """The fake's spans are ``time.monotonic()``: the monotonic time of wall time ``wall``."""
    return time.monotonic() - (time.time() - wall)


if __name__ == "__main__":
    if "--instance" in sys.argv:
        instance_main()
    elif sys.argv[1:2] == ["--fake"]:
        fake_main()
    else:
        main()
