# ruff: noqa: E402  (the repository root goes on sys.path before ``tests`` is imported)
"""Throughput of the real handler: SQS batches of 10 S3 records through moto (in-process)
and the fake ModelsLab on 127.0.0.1, which answers after a configurable latency.

    .venv/bin/python tests/benchmarks/bench_pipeline.py            # about a minute
    .venv/bin/python tests/benchmarks/bench_pipeline.py --quick    # 10-15 s
    .venv/bin/python tests/benchmarks/bench_pipeline.py --latency 0 500 --concurrency 2 10

For each provider latency x ``CAPTION_BATCH_CONCURRENCY`` it prints records/s, p50/p95
latency of one batch (one ``lambda_handler`` call), AWS calls and paid provider calls per
record (botocore ``before-call`` events on the function's own S3 and DynamoDB clients) and
the process's peak RSS so far (moto's in-memory S3 and DynamoDB included).

pytest-benchmark statistics of one batch, without provider latency:

    .venv/bin/pytest tests/benchmarks/bench_pipeline.py

(the ``bench_`` name keeps it out of the default ``test_*.py`` collection; nothing here
asserts a timing).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import resource
import statistics
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "functions"), str(ROOT)]  # this checkout, installed or not

import pytest

from captioner import handler
from tests import images
from tests.conftest import (
    API_KEY,
    TABLE,
    Aws,
    LambdaContext,
    moto_stack,
    notification,
    s3_record,
    sqs_event,
)
from tests.fakes.modelslab import FakeModelsLab, Reply

BATCH_SIZE = 10  # the template's SQS BatchSize
BODY = images.jpeg(640, 480)  # ModelsLab gets a URL: only the first 64 KB is ever read
_keys = itertools.count()


@dataclass
class Run:
    latency_ms: int
    concurrency: int
    batch_ms: list[float] = field(default_factory=list)
    calls: Counter[str] = field(default_factory=Counter)
    paid: int = 0
    failures: int = 0
    rss_mb: float = 0.0

    @property
    def records(self) -> int:
        return len(self.batch_ms) * BATCH_SIZE


# -- the stack ---------------------------------------------------------------------------


def bench_env(modelslab_url: str) -> None:
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_SESSION_TOKEN="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_REGION="us-east-1",
        POWERTOOLS_TRACE_DISABLED="true",
        POWERTOOLS_METRICS_NAMESPACE="CaptionerBench",
        CAPTIONS_TABLE=TABLE,
        MODELSLAB_API_URL=modelslab_url,
        MODELSLAB_API_KEY=API_KEY,
        CAPTION_PROVIDER="modelslab",
    )
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "MODELSLAB_API_KEY_SECRET"):
        os.environ.pop(name, None)


def provider_latency(fake: FakeModelsLab, seconds: float) -> None:
    """Every caption request succeeds after ``seconds``."""
    reply = {"status": "success", "id": 1, "output": ["A red circle on a white page."]}
    fake.rule = lambda body: Reply(reply, delay=seconds)


def new_batch(aws: Aws, size: int = BATCH_SIZE) -> dict[str, Any]:
    """``size`` new objects and the SQS event S3 would deliver for them (one per message)."""
    bodies = []
    for _ in range(size):
        key = f"bench/{next(_keys):07d}.jpg"
        obj = aws.put(key, BODY)
        record = s3_record(key, version_id=obj["version_id"], etag=obj["etag"],
                           size=obj["size"], sequencer="0066A1B2C3D4E5F601")  # fmt: skip
        bodies.append(notification(record))
    return sqs_event(*bodies)


def count_calls(app: Any) -> Counter[str]:
    """AWS operations the function's own clients make (setup calls are not counted)."""
    calls: Counter[str] = Counter()
    for client in (app.pipeline.objects._s3, app.pipeline.store._db):
        client.meta.events.register(
            "before-call.*.*", lambda model, **_: calls.update([model.name])
        )
    return calls


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    """Powertools writes a JSON log line per record and EMF metrics to stdout; send them to
    /dev/null (still formatted and written, as in Lambda) so the report stays readable."""
    sys.stdout.flush()
    saved = os.dup(1)
    with Path(os.devnull).open("w") as devnull:
        os.dup2(devnull.fileno(), 1)
        try:
            yield
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)


# -- measuring ---------------------------------------------------------------------------


def invoke(event: dict[str, Any]) -> tuple[float, int]:
    """One ``lambda_handler`` call: (milliseconds, records reported as failed)."""
    context = LambdaContext(aws_request_id=f"req-{next(_keys)}")
    start = time.perf_counter()
    with quiet_stdout():
        response = handler.lambda_handler(event, context)
    return (time.perf_counter() - start) * 1000, len(response["batchItemFailures"])


def measure(aws: Aws, fake: FakeModelsLab, latency_ms: int, concurrency: int, batches: int) -> Run:
    os.environ["CAPTION_BATCH_CONCURRENCY"] = str(concurrency)
    handler.reset()
    app = handler.get_app()  # a new App: the configured concurrency, new clients
    provider_latency(fake, latency_ms / 1000)
    invoke(new_batch(aws))  # warm-up: first requests of the new clients, not counted
    run = Run(latency_ms, concurrency, calls=count_calls(app))
    paid_before = len(fake.paid_calls())
    for _ in range(batches):
        ms, failed = invoke(new_batch(aws))
        run.batch_ms.append(ms)
        run.failures += failed
    run.paid = len(fake.paid_calls()) - paid_before
    run.rss_mb = peak_rss_mb()
    return run


def percentile(values: list[float], pct: int) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[pct - 1]


HEADER = (
    f"{'provider':>8} {'conc.':>5} {'records':>7} {'rec/s':>7} {'p50 batch':>10} "
    f"{'p95 batch':>10} {'AWS/rec':>8} {'paid/rec':>8} {'failed':>6} {'peak RSS':>9}"
)


def row(run: Run) -> str:
    rate = run.records / (sum(run.batch_ms) / 1000)
    aws_per_record = sum(run.calls.values()) / run.records
    return (
        f"{run.latency_ms:6} ms {run.concurrency:5} {run.records:7} {rate:7.1f} "
        f"{percentile(run.batch_ms, 50):7.0f} ms {percentile(run.batch_ms, 95):7.0f} ms "
        f"{aws_per_record:8.2f} {run.paid / run.records:8.2f} {run.failures:6} "
        f"{run.rss_mb:6.0f} MB"
    )


def main(latencies: list[int], concurrencies: list[int], batches: int) -> None:
    fake = FakeModelsLab().start()
    bench_env(fake.url)
    started = time.perf_counter()
    try:
        with moto_stack() as aws:
            print(f"batches of {BATCH_SIZE} records, {batches} timed batches per line")
            print(HEADER)
            for latency, concurrency in itertools.product(latencies, concurrencies):
                run = measure(aws, fake, latency, concurrency, batches)
                print(row(run), flush=True)
            calls = ", ".join(f"{op} {n / run.records:g}" for op, n in sorted(run.calls.items()))
            print(f"AWS calls per record, by operation: {calls}")
    finally:
        fake.stop()
        handler.reset()
    print(f"total {time.perf_counter() - started:.0f} s")


# -- pytest-benchmark --------------------------------------------------------------------


@pytest.mark.parametrize("concurrency", [1, 4])
def test_batch_of_ten(
    benchmark: Any,
    app_env: Aws,
    lambda_context: LambdaContext,
    monkeypatch: pytest.MonkeyPatch,
    concurrency: int,
) -> None:
    """One SQS batch of 10 new objects, provider answering at once (statistics only)."""
    monkeypatch.setenv("CAPTION_BATCH_CONCURRENCY", str(concurrency))
    calls = count_calls(handler.get_app())

    def setup() -> tuple[tuple[dict[str, Any]], dict[str, Any]]:
        return (new_batch(app_env),), {}

    response = benchmark.pedantic(
        lambda event: handler.lambda_handler(event, lambda_context),
        setup=setup,
        rounds=10,
        warmup_rounds=1,
    )
    assert response == {"batchItemFailures": []}
    benchmark.extra_info["aws_calls_per_record"] = sum(calls.values()) / (11 * BATCH_SIZE)
    benchmark.extra_info["peak_rss_mb"] = round(peak_rss_mb())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Throughput of the captioner handler.")
    parser.add_argument("--quick", action="store_true", help="a smaller grid, about 10 s")
    parser.add_argument("--latency", type=int, nargs="+", help="provider latencies, ms")
    parser.add_argument("--concurrency", type=int, nargs="+", help="CAPTION_BATCH_CONCURRENCY")
    parser.add_argument("--batches", type=int, help="timed batches per line")
    args = parser.parse_args()
    grid = ([0, 50], [1, 4], 2) if args.quick else ([0, 50, 200], [1, 2, 4, 8], 3)
    main(args.latency or grid[0], args.concurrency or grid[1], args.batches or grid[2])
