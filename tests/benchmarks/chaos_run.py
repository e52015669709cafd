"""Chaos run: many uploads through the local stack while the provider misbehaves, duplicates
arrive, the provider's limit is enforced and the daily budget runs out part-way. Is anything
lost or paid twice?

    .venv/bin/python tests/benchmarks/chaos_run.py            # 10,000 uploads
    .venv/bin/python tests/benchmarks/chaos_run.py --quick    # 1,000 uploads

The local stack (moto's server, the template's resources and settings: ProviderConcurrency
instances and deployment-wide provider leases, batches of 10, the budget sweep's schedule every 10 s
instead of 5 minutes, failed messages back after 2 s instead of 360 s) captions with the
fake ModelsLab, which:

- allows ``--limit`` (5) caption requests in progress and answers 429 beyond;
- answers about ``--faults`` (20 %) of caption requests with a transient fault, in equal
  parts: HTTP 502, an explicit 429 with ``retry_after``, a stall past the client's timeout
  (then 503: never charged), and a queued job (``processing``) whose eta is 2 s or 12 s (the
  long ones are parked: their message comes back after the eta and polls the job);
- takes ``--seconds`` (0.1) per caption otherwise.

About ``--duplicates`` (10 %) of the uploads get a second copy of their S3 notification:
half at once (delivered concurrently with the original), half a few seconds later. The daily
budget pays for half of the uploads; once it is spent and the queue is empty the run raises
it (a stack update), and the sweep must resume the parked rows by itself.

It prints uploads, final rows per status, lost (uploads with no final row), paid twice
(images the fake charged more than once), dead-lettered messages, wall time and captions/s.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

ROOT = Path(__file__).resolve().parents[2]
os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")  # no CloudWatch to read them
sys.path[:0] = [str(ROOT), str(ROOT / "functions"), str(ROOT / "src")]

from captioner.budget import read_day  # noqa: E402
from captioner.leases import SlotLeases  # noqa: E402
from captioner.store import FINAL_STATUSES, from_item, now_iso  # noqa: E402
from captioner_tools.local.stack import LocalStack  # noqa: E402
from tests import images  # noqa: E402
from tests.conftest import notification, s3_record  # noqa: E402
from tests.fakes.modelslab import FakeModelsLab, Reply, Request  # noqa: E402
from tests.fakes.process import LineProcess  # noqa: E402

PRICE = 0.0047
API_KEY = "chaos-key"
CLIENT_TIMEOUT_S = 3


class Provider:
    """The fake's behaviour: faults by a seeded coin, queued jobs that finish on time."""

    def __init__(self, faults: float, seconds: float, seed: int) -> None:
        self.faults, self.seconds = faults, seconds
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.jobs: dict[str, float] = {}  # job id -> when it is done
        self.job_image: dict[str, str] = {}  # job id -> the image it captions
        self.injected: Counter[str] = Counter()
        self.next_job = 1000

    def caption(self, body: dict[str, Any]) -> Reply:
        name = unquote(urlparse(str(body.get("init_image", ""))).path).rsplit("/", 1)[-1]
        with self.lock:
            roll = self.rng.random()
            kind = int(self.rng.random() * 5)
            eta = 12 if self.rng.random() < 0.3 else 2
        if roll >= self.faults:
            return Reply({"status": "success", "output": [f"A photo named {name}."]},
                         delay=self.seconds)  # fmt: skip
        fault = ("502", "429", "stall", "processing", "processing")[kind]
        with self.lock:
            self.injected[fault if fault != "processing" else f"processing eta {eta} s"] += 1
            if fault == "processing":
                self.next_job += 1
                job = str(self.next_job)
                self.jobs[job] = time.monotonic() + eta
                self.job_image[job] = name
        if fault == "502":
            return Reply({"message": "bad gateway"}, status=502, delay=self.seconds)
        if fault == "429":
            return Reply({"status": "error", "message": "Rate limit exceeded", "retry_after": 1},
                         status=429)  # fmt: skip
        if fault == "stall":  # the client gives up first; never charged
            return Reply({"message": "stalled"}, status=503, delay=CLIENT_TIMEOUT_S + 1)
        return Reply({"status": "processing", "id": job, "eta": eta, "output": []},
                     delay=self.seconds)  # fmt: skip

    def fetch(self, job: str) -> Reply:
        with self.lock:
            done_at = self.jobs.get(job)
        if done_at is None:
            return Reply({"status": "failed", "message": "Failed, Try Again"})
        if time.monotonic() < done_at:
            return Reply({"status": "processing", "id": job, "eta": done_at - time.monotonic()})
        return Reply({"status": "success", "id": job, "output": [f"Queued job {job} done."]})


def fake_main() -> None:
    """The fake ModelsLab and its faults, in a process of its own: ModelsLab runs apart from
    AWS. In the local stack's process its threads waited for the interpreter lock behind the
    whole stack, sometimes for seconds: a 0.1 s reply came after the client's 3 s timeout,
    and the client (rightly) paid again. Prints its URL; on a line on stdin, prints what it
    saw as JSON and stops."""
    spec = json.loads(sys.argv[2])
    fake = FakeModelsLab().start()
    fake.limit = spec["limit"]
    provider = Provider(spec["faults"], spec["seconds"], spec["seed"])
    fake.rule = provider.caption
    fake.fetch_rule = provider.fetch
    print(fake.url, flush=True)
    sys.stdin.readline()
    requests = [
        {
            "image": image_of(r), "job": job_of(r), "received": r.received,
            "answered": r.answered, "status": r.reply.status if r.reply else None,
            "said": r.reply.json.get("status", "") if r.reply and isinstance(r.reply.json, dict) else "",
            "accepted": r.accepted,
        }
        for r in fake.requests
    ]  # fmt: skip
    print(json.dumps({"requests": requests, "injected": dict(provider.injected),
                      "limited": len(fake.limited), "max_in_flight": fake.max_in_flight,
                      "job_image": provider.job_image}), flush=True)  # fmt: skip
    fake.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--uploads", type=int, default=10_000)
    parser.add_argument("--quick", action="store_true", help="1,000 uploads")
    parser.add_argument("--faults", type=float, default=0.2)
    parser.add_argument("--duplicates", type=float, default=0.1)
    parser.add_argument("--seconds", type=float, default=0.1, help="provider time per caption")
    parser.add_argument("--limit", type=int, default=5)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    uploads = 1_000 if args.quick else args.uploads
    rng = random.Random(args.seed)

    spec = {"limit": args.limit, "faults": args.faults, "seconds": args.seconds, "seed": args.seed}
    fake = LineProcess([sys.executable, __file__, "--fake", json.dumps(spec)])
    cap = round(PRICE * uploads / 2, 4)
    env = {
        "MODELSLAB_API_URL": fake.url,
        "MODELSLAB_API_KEY": API_KEY,
        "MODELSLAB_TIMEOUT": str(CLIENT_TIMEOUT_S),
    }
    stack = LocalStack(
        port=0,
        visibility_timeout=2,
        parameters={"DailyBudgetUsd": cap, "MaxReceiveCount": 5},
        env=env,
        register_stack=False,
        log_level="ERROR",
        schedule_interval_s=10.0,
    )
    with stack:
        s3, sqs = stack.client("s3"), stack.client("sqs")
        body = images.jpeg(64, 48)
        keys = [f"chaos/{i:05d}.jpg" for i in range(uploads)]
        late: list[str] = []
        concurrent: list[str] = []
        started = time.monotonic()

        def upload(key: str) -> None:
            put = s3.put_object(Bucket=stack.bucket, Key=key, Body=body)
            if rng.random() < args.duplicates:
                rec = s3_record(key, version_id=put.get("VersionId"),
                                etag=put["ETag"].strip('"'), size=len(body))  # fmt: skip
                copy = json.dumps(notification(rec))
                if rng.random() < 0.5:  # now: the two copies are delivered concurrently
                    sqs.send_message(QueueUrl=stack.queue_url, MessageBody=copy)
                    concurrent.append(key)
                else:
                    late.append(copy)

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(upload, keys))
        uploaded = time.monotonic() - started
        for copy in late:
            sqs.send_message(QueueUrl=stack.queue_url, MessageBody=copy)
        print(f"{uploads} uploads in {uploaded:.1f} s; the budget pays for {cap} $ "
              f"({int(cap / PRICE)} captions); waiting for it to run out", flush=True)  # fmt: skip

        wait_until(lambda: budget_spent(stack, cap) and queue_empty(stack), "the budget spent",
                   timeout=uploads * 2 + 600, progress=lambda: progress(stack))  # fmt: skip
        parked = count(stack)["PENDING"]
        spent_at = time.monotonic() - started
        print(f"budget spent after {spent_at:.1f} s: {parked} rows PENDING; raising the cap",
              flush=True)  # fmt: skip
        raise_cap(stack, "1000")
        # the queue first: counting the rows reads the whole table, only worth it at the end
        wait_until(lambda: queue_empty(stack) and finished(stack, uploads), "every row final",
                   timeout=uploads * 2 + 600, progress=lambda: progress(stack))  # fmt: skip
        wall = time.monotonic() - started
        statuses = count(stack)
        rows = all_rows(stack)
        dead = depth(stack, stack.dlq_url)
        spent = read_day(stack.table, stack.client("dynamodb"), now_iso()[:10])
    seen = fake.finish("report")

    paid = Counter(r["image"] for r in seen["requests"] if r["accepted"])
    lost = [k for k in keys if rows.get(k, {}).get("status") not in FINAL_STATUSES]
    captioned = statuses.get("CAPTIONED", 0)
    print(f"\nuploads                 {uploads} (duplicate notifications: "
          f"{len(concurrent)} at once, {len(late)} later)")  # fmt: skip
    print(f"final rows per status   {dict(sorted(statuses.items()))}")
    print(f"lost (no final row)     {len(lost)}{' e.g. ' + lost[0] if lost else ''}")
    print(f"paid twice              {sum(1 for n in paid.values() if n > 1)}")
    print(f"dead-lettered           {dead}")
    print(f"parked by the budget    {parked} (resumed after the cap was raised)")
    print(f"wall time               {wall:.1f} s")
    print(f"captions/s              {captioned / wall:.1f}")
    print(f"faults injected         {seen['injected']}")
    print(f"429s from the limit     {seen['limited']}; most in progress {seen['max_in_flight']}"
          f" (limit {args.limit}, polls included)")  # fmt: skip
    print(f"paid requests           {sum(paid.values())}; spent today {spent.spent_usd} $ "
          f"({spent.reservations} reservations, {spent.refunds} given back)")  # fmt: skip
    twice = [name for name, n in paid.items() if n > 1]
    if twice:
        print("\nimages paid twice: every request for them (s from the start; the client's "
              f"timeout is {CLIENT_TIMEOUT_S} s)")  # fmt: skip
    for name in twice:
        row = rows.get(f"chaos/{name}", {})
        print(f"  {name}: row {row.get('status')}, attempts {row.get('attempts')}, "
              f"job {row.get('provider_job_id')}")  # fmt: skip
        for request in seen["requests"]:
            if request["image"] == name or seen["job_image"].get(request["job"]) == name:
                print("    " + describe(request, started))


def image_of(request: Request) -> str:
    path = unquote(urlparse(str(request.body.get("init_image", ""))).path)
    return path.rsplit("/", 1)[-1]


def job_of(request: Request) -> str:
    return request.path.rsplit("/", 1)[-1] if "/image_editing/fetch/" in request.path else ""


def describe(request: dict[str, Any], started: float) -> str:
    """When a request came, how long its reply took, and what it said."""
    if request["answered"] is None:
        took = "not written"
    else:
        seconds = request["answered"] - request["received"]
        # past the client's timeout: the client had given up (it cannot tell it was charged)
        took = f"{seconds:.2f} s" + (" LATE" if seconds > CLIENT_TIMEOUT_S else "")
    what = "poll " + request["job"] if request["job"] else "caption"
    status = request["status"] if request["status"] is not None else "-"
    paid = " PAID" if request["accepted"] else ""
    return (f"{request['received'] - started:8.2f} s  {what:<12} took {took:<12} "
            f"HTTP {status} {request['said']}{paid}")  # fmt: skip


def raise_cap(stack: LocalStack, cap: str) -> None:
    """What a stack update of DailyBudgetUsd does: new instances read the new value."""
    stack.stop_poller()
    stack.extra_env["CAPTION_DAILY_BUDGET_USD"] = cap
    stack._env.apply({"CAPTION_DAILY_BUDGET_USD": cap})
    stack.reset_handler()
    stack.start_poller()


def wait_until(done: Any, what: str, timeout: float = 3600, progress: Any = None) -> None:
    """Poll ``done`` every second; print ``progress()`` every minute (a long run)."""
    started = time.monotonic()
    deadline, report = started + timeout, started + 60
    while not done():
        now = time.monotonic()
        if now > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        if progress is not None and now > report:
            print(f"  {now - started:6.0f} s: {progress()}", flush=True)
            report = now + 60
        time.sleep(1.0)


def progress(stack: LocalStack) -> str:
    ddb = stack.client("dynamodb")
    day = read_day(stack.table, ddb, now_iso()[:10])
    leases = SlotLeases(stack.table, ddb, "modelslab", 5).held()
    return (f"{depth(stack, stack.queue_url)} messages queued, {day.spent_usd} $ spent "
            f"({day.reservations} reservations), {len(leases)} provider leases held")  # fmt: skip


def budget_spent(stack: LocalStack, cap: float) -> bool:
    day = read_day(stack.table, stack.client("dynamodb"), now_iso()[:10])
    return float(day.spent_usd) + PRICE > cap + 1e-9


def depth(stack: LocalStack, url: str) -> int:
    attrs = stack.client("sqs").get_queue_attributes(QueueUrl=url, AttributeNames=["All"])
    a = attrs["Attributes"]
    return sum(int(a[k]) for k in ("ApproximateNumberOfMessages",
               "ApproximateNumberOfMessagesNotVisible", "ApproximateNumberOfMessagesDelayed"))  # fmt: skip


def queue_empty(stack: LocalStack) -> bool:
    return depth(stack, stack.queue_url) == 0


def count(stack: LocalStack) -> Counter[str]:
    counts: Counter[str] = Counter()
    for row in all_rows(stack).values():
        counts[str(row.get("status"))] += 1
    return counts


def finished(stack: LocalStack, uploads: int) -> bool:
    counts = count(stack)
    return sum(n for s, n in counts.items() if s in FINAL_STATUSES) >= uploads


def all_rows(stack: LocalStack) -> dict[str, dict[str, Any]]:
    ddb = stack.client("dynamodb")
    rows = {}
    pages = ddb.get_paginator("query").paginate(
        TableName=stack.table, KeyConditionExpression="#b = :b",
        ExpressionAttributeNames={"#b": "bucket"},
        ExpressionAttributeValues={":b": {"S": stack.bucket}},
    )  # fmt: skip
    for page in pages:
        for item in page["Items"]:
            row = from_item(item)
            rows[row["key"]] = row
    return rows


if __name__ == "__main__":
    if sys.argv[1:2] == ["--fake"]:
        fake_main()
    else:
        main()
