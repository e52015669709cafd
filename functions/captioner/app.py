"""Wiring: configuration, AWS clients, provider and pipeline, built once per container;
and the batch loop that turns an event into per-object work."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import boto3
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import (
    BatchProcessor,
    EventType,
    process_partial_response,
)
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from botocore.config import Config as BotoConfig

from captioner.announce import Announcer, EventBridgePublisher
from captioner.config import Config
from captioner.events import ObjectEvent, parse_message_body, parse_payload
from captioner.fallback import FallbackChain
from captioner.objects import ObjectStore
from captioner.observability import PowertoolsTelemetry, add_metric, logger
from captioner.pipeline import Attempt, Outcome, Pipeline, RetryLater
from captioner.providers import make_provider
from captioner.providers.base import CaptionProvider
from captioner.store import CaptionStore

# Stop starting provider work this long before the Lambda deadline, so results are written
# and the batch response is returned before the runtime is frozen.
SAFETY_MARGIN_S = 8.0
MIN_RECORD_SECONDS = 3.0  # a record that starts with less than this is retried later


class ConcurrentBatchProcessor(BatchProcessor):
    """Powertools' SQS BatchProcessor, running records on a bounded thread pool.

    The provider is I/O-bound, so threads overlap its latency; each record still succeeds
    or fails on its own and only failures are reported back to SQS.
    """

    def __init__(self, max_workers: int) -> None:
        super().__init__(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
        self.max_workers = max_workers

    def process(self) -> list[tuple[Any, ...]]:
        if len(self.records) <= 1 or self.max_workers == 1:
            return super().process()
        with ThreadPoolExecutor(max_workers=min(self.max_workers, len(self.records))) as pool:
            return list(pool.map(self._process_record, self.records))


class TimeShare:
    """Shares what is left of an invocation fairly between the records of its batch.

    Records run ``workers`` at a time. A record starting now gets the time left divided by
    the rounds still to run (itself included), so one slow provider (a 429 with
    ``retry_after``, a long ``processing`` eta) cannot leave the records queued behind it to
    start with no time and be failed without ever being tried."""

    def __init__(
        self, end: float, records: int, workers: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._end = end
        self._unstarted = records
        self._workers = max(workers, 1)
        self._clock = clock
        self._lock = threading.Lock()

    def next_deadline(self) -> float:
        with self._lock:
            waiting = max(self._unstarted, 1)
            self._unstarted -= 1
        now = self._clock()
        return now + max(self._end - now, 0.0) / math.ceil(waiting / self._workers)


class ProviderCache:
    """Providers other than the default, made on first request (a backfill asking for a
    different provider) and kept for the container's life."""

    def __init__(self, config: Config) -> None:
        self._config = config
        self._made: dict[str, CaptionProvider] = {}
        self._lock = threading.Lock()

    def __call__(self, name: str) -> CaptionProvider:
        with self._lock:
            if name not in self._made:
                self._made[name] = make_provider(replace(self._config, provider=name))
            return self._made[name]


class App:
    def __init__(self, config: Config, pipeline: Pipeline) -> None:
        self.config = config
        self.pipeline = pipeline

    @classmethod
    def from_env(cls) -> App:
        """The Lambda path: configuration from the environment, AWS as the runtime gives it."""
        return cls.build(Config.from_env())

    @classmethod
    def build(
        cls,
        config: Config,
        *,
        session: boto3.session.Session | None = None,
        endpoint_url: str | None = None,
    ) -> App:
        """An app for ``config``; ``session`` and ``endpoint_url`` (the local stack's moto)
        replace the AWS credentials and endpoints of the environment."""
        boto_cfg = BotoConfig(
            max_pool_connections=max(10, config.batch_concurrency * 3),
            retries={"mode": "standard", "max_attempts": 3},
            connect_timeout=5,
            read_timeout=20,
            signature_version="s3v4",
        )
        session = session or boto3.session.Session()
        s3 = session.client("s3", config=boto_cfg, endpoint_url=endpoint_url)
        dynamodb = session.client("dynamodb", config=boto_cfg, endpoint_url=endpoint_url)
        objects = ObjectStore(s3)
        store = CaptionStore(config.captions_table, dynamodb)
        telemetry = PowertoolsTelemetry()
        publisher = (
            EventBridgePublisher(
                session.client("events", config=boto_cfg, endpoint_url=endpoint_url),
                config.event_bus,
            )
            if config.event_bus
            else None
        )
        providers = ProviderCache(config)
        fallback = (
            FallbackChain(
                config.fallback_providers,
                providers,
                failures=config.breaker_failures,
                cooldown_s=config.breaker_cooldown_s,
            )
            if config.fallback_providers
            else None
        )
        pipeline = Pipeline(
            config,
            objects,
            store,
            make_provider(config),
            telemetry,
            provider_for=providers,
            announcer=Announcer(publisher, store, telemetry),
            fallback=fallback,
        )
        return cls(config, pipeline)

    def handle(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        records = event.get("Records") if isinstance(event, dict) else None
        if records and all(r.get("eventSource") == "aws:sqs" for r in records):
            return self.handle_sqs(event, context)
        return self.handle_direct(event, context)

    def handle_sqs(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        processor = ConcurrentBatchProcessor(self.config.batch_concurrency)
        share = TimeShare(_deadline(context), len(event["Records"]), self.config.batch_concurrency)

        def record_handler(record: SQSRecord) -> list[str]:
            return self._sqs_record(record, context, share.next_deadline())

        response = process_partial_response(
            event=event, record_handler=record_handler, processor=processor, context=context
        )
        return dict(response)

    def handle_direct(self, event: Any, context: Any) -> dict[str, Any]:
        """A bare S3 notification or EventBridge event (``sam local invoke``, async invoke).
        Failures raise, so Lambda's own async retries and on-failure destination apply."""
        events = parse_payload(event)
        # Lambda retries failed async invocations itself; no attempt here knows it is the last.
        attempt = Attempt(
            deadline=_deadline(context), max_receive_count=None, hard_deadline=_end(context)
        )
        outcomes = [self._one(ev, attempt, request_id=_request_id(context)) for ev in events]
        return {"outcomes": [{"status": o.status, "detail": o.detail} for o in outcomes]}

    def _sqs_record(self, record: SQSRecord, context: Any, deadline: float) -> list[str]:
        receive_count = int(record.attributes.approximate_receive_count or 1)
        attempt = Attempt(
            deadline=deadline,
            receive_count=receive_count,
            max_receive_count=self.config.max_receive_count,
            hard_deadline=_end(context),
        )
        try:
            events = parse_message_body(record.body)
        except Exception:
            logger.exception(
                "malformed message: it fails and will reach the dead-letter queue",
                extra={"message_id": record.message_id, "body": record.body[:512]},
            )
            add_metric("MalformedMessages", MetricUnit.Count)
            raise
        if not events:
            logger.info("s3:TestEvent ignored", extra={"message_id": record.message_id})
        return [
            self._one(
                ev, attempt, request_id=_request_id(context), message_id=record.message_id
            ).status
            for ev in events
        ]

    def _one(self, ev: ObjectEvent, attempt: Attempt, **ids: str | None) -> Outcome:
        keys = {"bucket": ev.bucket, "key": ev.key, "version_id": ev.version_id, **ids}
        logger.thread_safe_append_keys(**keys)
        try:
            if attempt.deadline - time.monotonic() < MIN_RECORD_SECONDS and not attempt.is_last:
                # Claiming and paying with seconds left would only be cut off by the timeout.
                # On the last delivery it runs anyway: with no time for the provider it
                # records FAILED and why, instead of dead-lettering with no row.
                raise RetryLater("too little time left in this invocation")
            outcome = self.pipeline.process(ev, attempt)
            logger.info(
                "processed", extra={"status": outcome.status, "detail": outcome.detail[:300]}
            )
        except RetryLater as exc:
            add_metric("RetryLater", MetricUnit.Count)
            logger.warning(
                "retry later", extra={"error": str(exc), "receive_count": attempt.receive_count}
            )
            raise
        except Exception:
            logger.exception("unexpected error; the message will be retried")
            raise
        finally:
            logger.thread_safe_remove_keys(list(keys))
        return outcome


def _end(context: Any) -> float:
    """When the invocation ends (Lambda's timeout), as a time.monotonic() value."""
    remaining_ms = getattr(context, "get_remaining_time_in_millis", lambda: 60_000)()
    return time.monotonic() + remaining_ms / 1000


def _deadline(context: Any) -> float:
    """When provider work must stop, leaving time to write results and answer."""
    end = _end(context)
    return max(end - SAFETY_MARGIN_S, time.monotonic() + 1.0)


def _request_id(context: Any) -> str | None:
    return getattr(context, "aws_request_id", None)
