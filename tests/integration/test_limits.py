"""Working at the provider's limits (issue 11): provider slots across instances, waits that
come back later without counting a delivery, and the daily spend cap.

The real handler against moto (S3, DynamoDB and SQS with the template's redrive policy) and
the fake ModelsLab; messages travel through a real (moto) queue, delivered by the local
stack's model of Lambda's SQS event source.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import boto3
import httpx
import pytest

from captioner import handler
from captioner.app import App
from captioner.budget import BUDGET_PARTITION, read_day
from captioner.sweep import SWEEP_EVENT
from captioner_tools.local.poller import FunctionTarget, PollerSettings, SqsEventSource
from tests import images
from tests.conftest import TABLE, LambdaContext, fast, notification, s3_record, sqs_event
from tests.fakes.modelslab import Reply
from tests.faults.harness import AtomicDynamoDB

PRICE = Decimal("0.0047")
MAX_RECEIVES = 3  # the queue's redrive policy, as CAPTION_MAX_RECEIVE_COUNT in app_env


@pytest.fixture
def queue(app_env, monkeypatch):
    """The caption queue with its dead-letter queue, and the function pointed at it."""
    sqs = boto3.client("sqs", region_name="us-east-1")
    dlq = sqs.create_queue(QueueName="captions-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])
    url = sqs.create_queue(
        QueueName="captions",
        Attributes={
            "VisibilityTimeout": "360",
            "RedrivePolicy": json.dumps(
                {
                    "deadLetterTargetArn": dlq_arn["Attributes"]["QueueArn"],
                    "maxReceiveCount": MAX_RECEIVES,
                }
            ),
        },
    )["QueueUrl"]
    monkeypatch.setenv("CAPTION_QUEUE_URL", url)
    handler.reset()
    fast(handler.get_app())
    return Queue(sqs, url, dlq)


class Queue:
    def __init__(self, sqs: Any, url: str, dlq: str) -> None:
        self.sqs, self.url, self.dlq = sqs, url, dlq
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
        self.source = SqsEventSource(
            sqs,
            url,
            arn["Attributes"]["QueueArn"],
            FunctionTarget("captioner", handler.lambda_handler, timeout_s=60),
            PollerSettings(retry_delay_s=1, max_receive_count=MAX_RECEIVES),
        )

    def send(self, body: dict[str, Any] | str) -> None:
        text = body if isinstance(body, str) else json.dumps(body)
        self.sqs.send_message(QueueUrl=self.url, MessageBody=text)

    def deliver(self, wait: int = 0):
        """One batch through the handler, as Lambda's event source does (None when empty)."""
        return self.source.poll_once(wait)

    def depth(self, url: str | None = None) -> int:
        attrs = self.sqs.get_queue_attributes(
            QueueUrl=url or self.url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesDelayed"],
        )["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"]) + int(
            attrs["ApproximateNumberOfMessagesDelayed"]
        )


def upload(aws, key: str, body: bytes | None = None) -> dict[str, Any]:
    obj = aws.put(key, body or images.png())
    rec = s3_record(key, version_id=obj["version_id"], etag=obj["etag"], size=obj["size"],
                    sequencer="0066A1B2C3D4E5F601")  # fmt: skip
    return notification(rec)


def spend() -> Any:
    return read_day(TABLE, boto3.client("dynamodb", region_name="us-east-1"), today())


def today() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d")


# -- 1. slots ----------------------------------------------------------------------------------


def test_two_instances_never_exceed_the_limit(app_env, fake_modelslab, monkeypatch):
    """ProviderConcurrency 2: two instances (each its own App, as separate containers) of
    one slot each, three records at a time each: never more than two requests at the
    provider, and both slots in use."""
    monkeypatch.setenv("CAPTION_BATCH_CONCURRENCY", "3")
    monkeypatch.setenv("CAPTION_PROVIDER_SLOTS", "1")
    fake_modelslab.rule = lambda body: Reply({"status": "success", "output": ["ok"]}, delay=0.15)
    batches = [[upload(app_env, f"i{n}/{i}.png") for i in range(6)] for n in range(2)]
    instances = [fast(App.from_env()) for _ in batches]
    for app in instances:  # DynamoDB applies each write atomically; in-process moto does not
        atomic = AtomicDynamoDB(app.pipeline.store._db)
        app.pipeline.store._db = atomic
        assert app.pipeline.budget is not None
        app.pipeline.budget._db = atomic
    results: list[dict[str, Any]] = []

    def run(app: App, batch: list[dict[str, Any]]) -> None:
        results.append(app.handle(sqs_event(*batch), LambdaContext()))

    threads = [
        threading.Thread(target=run, args=pair) for pair in zip(instances, batches, strict=True)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [{"batchItemFailures": []}] * 2
    assert fake_modelslab.max_in_flight == 2
    assert [app.pipeline.slots(app.pipeline.provider).peak for app in instances] == [1, 1]
    assert len(fake_modelslab.accepted()) == 12
    assert all(app_env.row(f"i{n}/{i}.png")["status"] == "CAPTIONED"
               for n in range(2) for i in range(6))  # fmt: skip


def test_the_local_provider_takes_one_slot_per_vcpu(monkeypatch):
    from captioner.limits import slots_for, vcpus
    from captioner.providers.local import LocalProvider
    from captioner.providers.modelslab import ModelsLabProvider

    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512")
    assert vcpus() == 1
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "10240")
    import os

    assert vcpus() == min(os.cpu_count() or 1, 6)  # Lambda: 6 vCPUs at 10,240 MB
    assert slots_for(LocalProvider(), configured=1) == vcpus()
    remote = ModelsLabProvider("http://127.0.0.1:9", lambda: "k")
    assert slots_for(remote, configured=1) == 1


# -- 2. waits: 429 and long jobs ---------------------------------------------------------------


def test_429s_wait_in_the_queue_without_counting_deliveries_or_paying(
    queue, app_env, fake_modelslab
):
    """More 429 rounds than MaxReceiveCount: the message is re-sent each time (a fresh
    receive count), never dead-lettered; the 429s cost nothing and the caption is paid
    once."""
    rounds = MAX_RECEIVES + 1
    busy = Reply({"message": "Too many requests"}, status=429, headers={"Retry-After": "0.05"})
    fake_modelslab.queue(*[busy] * (4 * rounds))  # fast(): four tries per delivery
    queue.send(upload(app_env, "busy.png"))
    counts = []
    for _ in range(rounds):
        report = queue.deliver(wait=3)
        assert report is not None and report.failed == 0  # consumed: a wait, not a failure
        counts.append(report.messages[0].receive_count)
        row = app_env.row("busy.png")
        assert row["status"] == "PENDING" and row["reason"].startswith("provider rate limit")
        assert "lease_until" not in row
    assert counts == [1] * rounds  # every copy is a first delivery
    report = queue.deliver(wait=3)
    assert report is not None and report.failed == 0
    assert app_env.row("busy.png")["status"] == "CAPTIONED"
    assert queue.depth() == 0 and queue.depth(queue.dlq) == 0
    assert len(fake_modelslab.accepted()) == 1
    day = spend()
    assert day.spent_usd == PRICE  # 16 unpaid requests, each given back
    assert (day.reservations, day.refunds) == (4 * rounds + 1, 4 * rounds)


def test_a_long_eta_comes_back_after_about_the_eta(queue, app_env, fake_modelslab):
    """A queued job with a long eta is not waited for in the function: the message comes
    back after about the eta and polls the stored job (free)."""
    fake_modelslab.queue({"status": "processing", "id": 42, "eta": 3})
    fake_modelslab.queue_fetch({"status": "success", "id": 42, "output": ["Worth the wait."]})
    queue.send(upload(app_env, "slow.png"))
    app = fast(handler.get_app())
    app.pipeline.provider.park_eta = 1.0  # etas over 1 s are parked (10 s in production)
    started = time.monotonic()
    report = queue.deliver(wait=1)
    sent_back = time.monotonic()
    assert report is not None and report.failed == 0 and report.seconds < 1.5
    row = app_env.row("slow.png")
    assert row["status"] == "PENDING" and row["provider_job_id"] == "42"
    assert row["reason"].startswith("waiting for provider job 42")
    assert queue.deliver(wait=0) is None  # not back yet
    report = queue.deliver(wait=5)
    back = time.monotonic()
    assert report is not None and report.messages[0].receive_count == 1
    assert back - sent_back >= 3.0 - 0.5 and back - started < 3.0 + 3.0
    assert app_env.row("slow.png")["caption"] == "Worth the wait."
    assert [r.path.rsplit("/", 1)[-1] for r in fake_modelslab.polls()] == ["42"]
    assert len(fake_modelslab.accepted()) == 1 and spend().spent_usd == PRICE


def test_without_a_queue_a_wait_is_an_ordinary_retry(app_env, fake_modelslab):
    """No CAPTION_QUEUE_URL (or too many waits): the record fails and SQS retries it, as
    before; the row says why and keeps the job."""
    fake_modelslab.queue({"status": "processing", "id": 7, "eta": 60})
    event = upload(app_env, "nq.png")
    result = fast(handler.get_app()).handle(sqs_event(event), LambdaContext())
    assert len(result["batchItemFailures"]) == 1
    row = app_env.row("nq.png")
    assert row["status"] == "PENDING" and row["provider_job_id"] == "7"


# -- 3. the daily budget -----------------------------------------------------------------------


def park_two_of_four(queue, app_env, monkeypatch) -> App:
    monkeypatch.setenv("CAPTION_DAILY_BUDGET_USD", str(2 * PRICE))
    handler.reset()
    for i in range(4):
        queue.send(upload(app_env, f"b/{i}.png"))
    app = fast(handler.get_app())
    while queue.deliver(wait=0):
        pass
    statuses = sorted(app_env.row(f"b/{i}.png")["status"] for i in range(4))
    assert statuses == ["CAPTIONED", "CAPTIONED", "PENDING", "PENDING"]
    for i in range(4):
        row = app_env.row(f"b/{i}.png")
        if row["status"] == "PENDING":
            assert row["reason"].startswith("daily budget of 0.0094 $ reached")
    # consumed, not failed: nothing waits in the queue, nothing is dead-lettered
    assert queue.depth() == 0 and queue.depth(queue.dlq) == 0
    assert spend().spent_usd == 2 * PRICE and spend().cap_usd == 2 * PRICE
    return app


def sweep_and_deliver(queue) -> None:
    queue.send(SWEEP_EVENT)  # what the template's schedule sends every 5 minutes
    while queue.deliver(wait=0):
        pass


def test_over_budget_work_resumes_by_itself_after_utc_midnight(
    queue, app_env, fake_modelslab, monkeypatch
):
    app = park_two_of_four(queue, app_env, monkeypatch)
    sweep_and_deliver(queue)  # still today: nothing to pay with
    assert sum(app_env.row(f"b/{i}.png")["status"] == "PENDING" for i in range(4)) == 2
    tomorrow = datetime.now(UTC) + timedelta(days=1)
    app.pipeline.budget._clock = lambda: tomorrow
    sweep_and_deliver(queue)
    assert all(app_env.row(f"b/{i}.png")["status"] == "CAPTIONED" for i in range(4))
    assert len(fake_modelslab.accepted()) == 4  # each once
    day = read_day(TABLE, app_env.ddb, tomorrow.strftime("%Y-%m-%d"))
    assert day.spent_usd == 2 * PRICE


def test_over_budget_work_resumes_when_the_cap_is_raised(
    queue, app_env, fake_modelslab, monkeypatch
):
    park_two_of_four(queue, app_env, monkeypatch)
    monkeypatch.setenv("CAPTION_DAILY_BUDGET_USD", "1")  # a stack update of DailyBudgetUsd
    handler.reset()
    fast(handler.get_app())
    sweep_and_deliver(queue)
    assert all(app_env.row(f"b/{i}.png")["status"] == "CAPTIONED" for i in range(4))
    assert len(fake_modelslab.accepted()) == 4 and spend().spent_usd == 4 * PRICE
    sweep_and_deliver(queue)  # nothing parked any more: nothing sent
    assert len(fake_modelslab.requests) == 4


def test_the_sweep_resends_only_what_the_budget_pays_for(
    queue, app_env, fake_modelslab, monkeypatch
):
    app = park_two_of_four(queue, app_env, monkeypatch)
    monkeypatch.setenv("CAPTION_DAILY_BUDGET_USD", str(3 * PRICE))  # one more today
    handler.reset()
    app = fast(handler.get_app())
    assert app.sweep() == {"room": 1, "requeued": 1}
    assert app.sweep() == {"room": 1, "requeued": 0}  # the re-queued row is marked
    while queue.deliver(wait=0):
        pass
    statuses = sorted(app_env.row(f"b/{i}.png")["status"] for i in range(4))
    assert statuses == ["CAPTIONED", "CAPTIONED", "CAPTIONED", "PENDING"]


def test_two_sweeps_at_once_requeue_each_parked_row_once(
    queue, app_env, fake_modelslab, monkeypatch
):
    """Both read the parked rows before either marks them (two sweep messages delivered to
    two instances at once): each row is marked, and so sent, by one of them only."""
    from captioner.sweep import BudgetSweep

    park_two_of_four(queue, app_env, monkeypatch)
    monkeypatch.setenv("CAPTION_DAILY_BUDGET_USD", "1000")
    handler.reset()
    app = fast(handler.get_app())
    pipeline = app.pipeline
    assert pipeline.budget is not None
    sweeps = [BudgetSweep(app.config.captions_table, pipeline.budget.client, pipeline.budget,
                          app.requeue, pipeline.provider.price_usd) for _ in range(2)]  # fmt: skip
    rows = sweeps[0]._parked(10)
    assert len(rows) == 2 and sweeps[1]._parked(10) == rows
    marked = [sweep._mark(row) for row in rows for sweep in sweeps]
    assert marked == [True, False, True, False]


def test_a_sweep_sends_each_batch_as_soon_as_it_is_marked(
    queue, app_env, fake_modelslab, monkeypatch
):
    """Ten rows at a time: a sweep that dies midway has sent what it marked before, and left
    only the batch it died in marked and unsent (sent by a sweep an hour later)."""
    monkeypatch.setenv("CAPTION_DAILY_BUDGET_USD", str(PRICE))
    handler.reset()
    keys = [f"s/{i:02d}.png" for i in range(26)]
    for key in keys:
        queue.send(upload(app_env, key))
    fast(handler.get_app())
    while queue.deliver(wait=0):
        pass
    assert sum(app_env.row(k)["status"] == "PENDING" for k in keys) == 25
    monkeypatch.setenv("CAPTION_DAILY_BUDGET_USD", "1000")
    handler.reset()
    app = fast(handler.get_app())
    sent: list[list[str]] = []
    real = app.requeue.send_all

    def dies_on_the_second_batch(bodies: list[str]) -> int:
        if sent:
            raise RuntimeError("the sweep's instance dies")
        sent.append(bodies)
        return real(bodies)

    monkeypatch.setattr(app.requeue, "send_all", dies_on_the_second_batch)
    with pytest.raises(RuntimeError):
        app.sweep()
    assert [len(b) for b in sent] == [10] and queue.depth() == 10
    assert sum("requeued_at" in app_env.row(k) for k in keys) == 20


def test_the_budget_counter_stays_out_of_the_indexes(queue, app_env, fake_modelslab):
    queue.send(upload(app_env, "idx.png"))
    fast(handler.get_app())
    queue.deliver(wait=0)
    for index in ("by-bucket-updated", "by-status-updated"):
        items = app_env.ddb.scan(TableName=TABLE, IndexName=index)["Items"]
        assert items and all(i["bucket"]["S"] != BUDGET_PARTITION for i in items), index


@pytest.mark.parametrize(
    ("reply", "charged"),
    [
        (Reply({"status": "success", "output": ["ok"]}), True),
        (Reply({"status": "processing", "id": 5, "eta": 0}), True),  # a job: paid
        (Reply({"message": "slow down"}, status=429), False),
        (Reply({"message": "boom"}, status=502), False),
        (Reply({"status": "error", "message": "Server busy"}), False),
        (Reply({"status": "error", "message": "could not decode image"}), False),
        (Reply({"status": "error", "message": "Invalid API key"}), False),
        (Reply(body=b"<html>oops"), False),
    ],
)
def test_a_request_that_was_not_charged_gives_its_reservation_back(
    app_env, fake_modelslab, reply, charged
):
    fake_modelslab.queue(reply)
    fake_modelslab.queue_fetch(*[Reply({"status": "processing", "id": 5})] * 50)
    app = fast(handler.get_app())
    app.pipeline.backoff = type(app.pipeline.backoff)(base=0.01, cap=0.02, max_attempts=1)
    app.pipeline.provider.park_eta = 0.0
    app.handle(sqs_event(upload(app_env, "r.png")), LambdaContext(remaining_ms=12_000))
    day = spend()
    assert day.reservations == 1
    assert (day.spent_usd, day.refunds) == ((PRICE, 0) if charged else (0, 1))


def test_a_reply_that_timed_out_may_have_been_charged_and_stays_counted(
    app_env, fake_modelslab, monkeypatch
):
    monkeypatch.setenv("MODELSLAB_TIMEOUT", "1")
    fake_modelslab.queue(Reply({"status": "success", "output": ["late"]}, delay=3))
    app = fast(handler.get_app())
    app.pipeline.backoff = type(app.pipeline.backoff)(base=0.01, cap=0.02, max_attempts=1)
    app.handle(sqs_event(upload(app_env, "t.png")), LambdaContext(remaining_ms=12_000))
    assert (spend().spent_usd, spend().refunds) == (PRICE, 0)


def test_a_dead_job_is_paid_again_only_through_a_reservation(app_env, fake_modelslab):
    fake_modelslab.queue({"status": "processing", "id": 8, "eta": 0})
    fake_modelslab.queue_fetch(*[{"status": "processing", "id": 8}] * 100_000)
    app = fast(handler.get_app())
    event = upload(app_env, "dead.png")
    app.handle(sqs_event(event), LambdaContext(remaining_ms=11_500))  # 3.5 s to poll
    assert app_env.row("dead.png")["provider_job_id"] == "8" and spend().reservations == 1
    fake_modelslab.fetch_replies.clear()
    fake_modelslab.queue_fetch({"status": "failed", "message": "Failed, Try Again"})
    assert app.handle(sqs_event(event, receive_count=2), LambdaContext()) == {
        "batchItemFailures": []
    }
    assert app_env.row("dead.png")["status"] == "CAPTIONED"
    assert len(fake_modelslab.accepted()) == 2 and spend().reservations == 2


def test_concurrent_reservations_never_pass_the_cap(aws):
    """Sixteen threads reserving against a cap of five requests: exactly five succeed."""
    from captioner.budget import BudgetExhausted, DailyBudget

    budget = DailyBudget(TABLE, AtomicDynamoDB(aws.ddb), float(5 * PRICE))
    won, lost = [], []

    def reserve() -> None:
        try:
            won.append(budget.reserve(float(PRICE)))
        except BudgetExhausted as exc:
            lost.append(exc)

    threads = [threading.Thread(target=reserve) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (len(won), len(lost)) == (5, 11)
    assert spend().spent_usd == 5 * PRICE
    assert lost[0].reason.startswith("daily budget of 0.0235 $ reached")
    budget.refund(won[0])
    assert budget.room(float(PRICE)) == 1


def test_fake_modelslab_unreachable_connection_is_not_charged():
    """A request that never reached the provider (connection refused) gives its
    reservation back; one whose reply was lost may have been charged."""
    from captioner.errors import ProviderTransientError
    from captioner.providers.base import ImageInfo, ImageSource
    from captioner.providers.modelslab import ModelsLabProvider

    image = ImageSource(ImageInfo("PNG", 1, 1, 10), lambda: b"", url="https://s3/x")
    p = ModelsLabProvider("http://127.0.0.1:9/api", lambda: "k", client=httpx.Client())
    with pytest.raises(ProviderTransientError) as exc:
        p.caption(image, "normal", deadline=time.monotonic() + 10)
    assert not exc.value.maybe_charged
