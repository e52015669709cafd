"""A small model of SQS and Lambda around the real handler, for fault-injection tests.

- ``Queue`` delivers messages as the event source mapping does: each delivery raises the
  receive count; a batch item failure or a dead instance brings the message back, and the
  delivery at ``max_receive`` that fails sends it to the dead-letter queue.
- ``Instance`` is one Lambda container: its own ``App`` (clients, provider, caches), so two
  instances in two threads behave like two containers delivering the same message.
- ``crash_after`` kills an instance right after a named step: ``Killed`` is a
  ``BaseException``, so no ``except Exception`` in the code under test can run — as when
  Lambda times out or runs out of memory.
- ``Invariants`` are the promises: paid at most once per version, the row describes the
  newest version, every message that left the queue has a row saying what happened.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, unquote, urlparse

from captioner.app import App
from captioner.retry import Backoff
from tests.conftest import BUCKET, LambdaContext, sqs_event
from tests.fakes.modelslab import FakeModelsLab

VISIBILITY_TIMEOUT_S = 360  # template.yaml: CaptionQueue's VisibilityTimeout


class Killed(BaseException):
    """The instance died here: nothing after this point runs."""


class Clock:
    """The wall clock the store sees (leases): tests move it to expire leases."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)


# Where an instance can die: after these calls of its adapters and provider return.
STEPS = {
    "claim": ("store", "claim"),
    "record_job": ("store", "record_job"),
    "provider": ("provider", "caption"),
    "save_result": ("store", "save_result"),
    "get_tags": ("objects", "get_tags"),
    "put_tags": ("objects", "put_tags"),
    "save_tag": ("store", "save_tag"),
    "publish": ("publisher", "publish"),  # PutEvents of a "Caption Status Changed" event
}


@dataclass
class CountdownContext(LambdaContext):
    """A Lambda context whose remaining time runs down, as the real one's does."""

    def __post_init__(self) -> None:
        self._started = time.monotonic()

    def get_remaining_time_in_millis(self) -> int:
        return int(self.remaining_ms - (time.monotonic() - self._started) * 1000)


class AtomicDynamoDB:
    """A DynamoDB client whose writes are atomic, as DynamoDB's are.

    moto evaluates a condition and applies the update in Python with no lock, so two threads
    can both pass the same condition; DynamoDB applies each conditional write atomically.
    One lock for all instances models that (and nothing more: reads are not serialized
    against each other)."""

    _lock = threading.Lock()

    def __init__(self, client: Any) -> None:
        self._client = client

    def update_item(self, **kwargs: Any) -> Any:
        with self._lock:
            return self._client.update_item(**kwargs)

    def transact_write_items(self, **kwargs: Any) -> Any:
        with self._lock:
            return self._client.transact_write_items(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


class Instance:
    """One Lambda container: an App built from the environment, with fast retries."""

    def __init__(self, clock: Clock, remaining_ms: int = 60_000) -> None:
        self.app = App.from_env()
        self.app.pipeline.store._db = AtomicDynamoDB(self.app.pipeline.store._db)
        self.app.pipeline.backoff = Backoff(base=0.01, cap=0.05, max_attempts=4)
        provider = self.app.pipeline.provider
        if hasattr(provider, "poll_initial"):
            provider.poll_initial = 0.01
            provider.poll_max = 0.02
        self.app.pipeline.store._clock = clock
        self.remaining_ms = remaining_ms
        self.longest = 0.0  # the longest invocation, seconds

    def invoke(self, event: dict[str, Any]) -> dict[str, Any]:
        ctx = CountdownContext(remaining_ms=self.remaining_ms)
        started = time.monotonic()
        try:
            return self.app.handle(event, ctx)
        finally:
            self.longest = max(self.longest, time.monotonic() - started)

    def _target(self, owner: str) -> Any:
        pipeline = self.app.pipeline
        return {
            "store": pipeline.store,
            "objects": pipeline.objects,
            "provider": pipeline.provider,
            "publisher": pipeline.announcer._publisher,
        }[owner]

    @contextmanager
    def crash_after(self, step: str, *, times: int = 1) -> Iterator[None]:
        """Die right after ``step`` returns (the first ``times`` times)."""
        owner, method = STEPS[step]
        target = self._target(owner)
        real = getattr(target, method)
        left = [times]

        def dying(*args: Any, **kwargs: Any) -> Any:
            result = real(*args, **kwargs)
            if left[0] > 0:
                left[0] -= 1
                raise Killed(f"died after {step}")
            return result

        setattr(target, method, dying)
        try:
            yield
        finally:
            delattr(target, method)

    @contextmanager
    def failing(self, step: str, error: Exception, *, times: int = 1) -> Iterator[None]:
        """``step`` raises ``error`` instead of running (the first ``times`` times)."""
        owner, method = STEPS[step]
        target = self._target(owner)
        real = getattr(target, method)
        left = [times]

        def broken(*args: Any, **kwargs: Any) -> Any:
            if left[0] > 0:
                left[0] -= 1
                raise error
            return real(*args, **kwargs)

        setattr(target, method, broken)
        try:
            yield
        finally:
            delattr(target, method)


@dataclass
class Message:
    body: dict[str, Any]
    receives: int = 0
    fate: str | None = None  # None in the queue, "deleted" or "dead-lettered"
    last: str = ""  # what the last delivery did


@dataclass
class Queue:
    max_receive: int = 3
    messages: list[Message] = field(default_factory=list)

    def send(self, body: dict[str, Any]) -> Message:
        msg = Message(body)
        self.messages.append(msg)
        return msg

    def waiting(self) -> list[Message]:
        return [m for m in self.messages if m.fate is None]

    def deliver(self, instance: Instance, msg: Message) -> str:
        """One delivery of ``msg``: 'ok' (deleted), 'retry', 'killed' or 'dead-lettered'."""
        assert msg.fate is None, "a message that left the queue is never delivered again"
        msg.receives += 1
        try:
            result = instance.invoke(sqs_event(msg.body, receive_count=msg.receives))
            failed = bool(result["batchItemFailures"])
            msg.last = "retry" if failed else "ok"
        except Killed:
            failed, msg.last = True, "killed"
        if not failed:
            msg.fate = "deleted"
        elif msg.receives >= self.max_receive:
            msg.fate = "dead-lettered"
        return msg.fate or msg.last


def paid_versions(fake: FakeModelsLab) -> Counter[tuple[str, str]]:
    """(key, version id) -> caption requests the provider took on (what the account pays)."""
    paid: Counter[tuple[str, str]] = Counter()
    for req in fake.accepted():
        url = urlparse(str(req.body.get("init_image", "")))
        key = unquote(url.path.lstrip("/"))
        if not url.netloc.startswith(BUCKET):  # path-style: /bucket/key
            key = key.split("/", 1)[-1]
        version = parse_qs(url.query).get("versionId", [""])[0]
        paid[(key, version)] += 1
    return paid


def assert_paid_at_most_once(fake: FakeModelsLab) -> None:
    twice = {v: n for v, n in paid_versions(fake).items() if n > 1}
    assert not twice, f"paid more than once: {twice}"


def current_version(s3: Any, key: str) -> str | None:
    """The version id S3 serves for ``key`` now, or None when it is deleted."""
    try:
        return s3.head_object(Bucket=BUCKET, Key=key).get("VersionId")
    except s3.exceptions.ClientError:
        return None


def lease_expired(row: dict[str, Any], clock: Clock) -> bool:
    lease = row.get("lease_until")
    now = clock().strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    return lease is None or lease <= now


def assert_row_says_what_happened(row: dict[str, Any] | None, msg: Message, clock: Clock) -> None:
    """A message that left the queue left a row that explains it.

    Dead-lettered: FAILED with a reason, or a status another delivery finished, or — when
    the instance died on the last delivery and nothing could run — PENDING with an expired
    lease, which ``captioner status`` shows as stuck and redrive/backfill recover.
    """
    assert row is not None, f"no row for a message that left the queue: {msg}"
    status = row.get("status")
    if msg.fate == "dead-lettered" and status == "PENDING":
        assert msg.last == "killed" or row.get("reason"), row
        assert lease_expired(row, clock), f"dead-lettered but a live lease: {row}"
    elif status == "FAILED":
        assert row.get("reason"), row


def drain(queue: Queue, instance: Instance, clock: Clock, *, limit: int = 100) -> None:
    """Deliver until the queue is empty, expiring leases between rounds."""
    for _ in range(limit):
        waiting = queue.waiting()
        if not waiting:
            return
        if any(m.receives for m in waiting):  # a redelivery: after the visibility timeout
            clock.advance(VISIBILITY_TIMEOUT_S)
        for msg in waiting:
            queue.deliver(instance, msg)
        clock.advance(3600)  # visibility timeout, and any lease left by a dead instance
    raise AssertionError("the queue never drained")
