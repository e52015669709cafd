"""Wiring: configuration, AWS clients, provider and pipeline, built once per container;
and the batch loop that turns an event into per-object work."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import boto3
from aws_lambda_powertools.metrics import MetricUnit
from botocore.config import Config as BotoConfig

from captioner.announce import Announcer, EventBridgePublisher
from captioner.batch import SqsRecord, process_batch
from captioner.budget import DailyBudget
from captioner.config import Config
from captioner.events import ObjectEvent, parse_message_body, parse_payload
from captioner.fallback import FallbackChain
from captioner.leases import SlotLeases
from captioner.limits import SlotsByProvider, Ticket, TimeShare
from captioner.objects import ObjectStore
from captioner.observability import PowertoolsTelemetry, add_metric, logger
from captioner.pipeline import Attempt, ComeBackLater, Outcome, Pipeline, RetryLater
from captioner.ports import Leases
from captioner.providers import make_provider
from captioner.providers.base import CaptionProvider
from captioner.requeue import Requeue, waits_of
from captioner.store import CaptionStore
from captioner.sweep import BudgetSweep, is_sweep, is_sweep_message

# Stop starting provider work this long before the Lambda deadline, so results are written
# and the batch response is returned before the runtime is frozen.
SAFETY_MARGIN_S = 8.0
MIN_RECORD_SECONDS = 3.0  # a record that starts with less than this is retried later


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


class LazyClient:
    """A boto3 client made on first use (SQS: only waits and the sweep need it)."""

    def __init__(
        self, session: Any, service: str, config: BotoConfig, endpoint_url: str | None = None
    ) -> None:
        self._session, self._service, self._config = session, service, config
        self._endpoint_url = endpoint_url
        self._client: Any = None
        self._lock = threading.Lock()

    def __call__(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = self._session.client(
                    self._service, config=self._config, endpoint_url=self._endpoint_url
                )
            return self._client


class App:
    def __init__(self, config: Config, pipeline: Pipeline, requeue: Requeue | None = None) -> None:
        self.config = config
        self.pipeline = pipeline
        self.requeue = requeue or Requeue(None, lambda: None)

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
            budget=DailyBudget(config.captions_table, dynamodb, config.daily_budget_usd),
            slots=SlotsByProvider(config.provider_slots, _leases(config, dynamodb)),
        )
        requeue = Requeue(config.queue_url, LazyClient(session, "sqs", boto_cfg, endpoint_url))
        return cls(config, pipeline, requeue)

    def handle(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        if is_sweep(event):
            return self.sweep()
        records = event.get("Records") if isinstance(event, dict) else None
        if records and all(r.get("eventSource") == "aws:sqs" for r in records):
            return self.handle_sqs(event, context)
        return self.handle_direct(event, context)

    def sweep(self) -> dict[str, Any]:
        """The schedule's budget sweep: re-queue rows the daily budget parked (sweep.py)."""
        pipeline = self.pipeline
        if pipeline.budget is None:
            return {"room": None, "requeued": 0}
        report = BudgetSweep(
            self.config.captions_table,
            pipeline.budget.client,
            pipeline.budget,
            self.requeue,
            pipeline.provider.price_usd,
        ).run()
        logger.info("budget sweep", extra={"room": report.room, "requeued": report.requeued})
        return {"room": report.room, "requeued": report.requeued}

    def handle_sqs(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        slots = self.pipeline.slots(self.pipeline.provider).size
        share = TimeShare(_deadline(context), len(event["Records"]), slots)

        def record_handler(record: SqsRecord) -> list[str]:
            ticket = share.ticket()
            try:
                return self._sqs_record(record, context, ticket)
            finally:
                ticket.close()

        try:
            return process_batch(event["Records"], record_handler, self.config.batch_concurrency)
        finally:  # a frozen instance must not hold one of the deployment's provider slots
            self.pipeline.slots.release_idle()

    def handle_direct(self, event: Any, context: Any) -> dict[str, Any]:
        """A bare S3 notification or EventBridge event (``sam local invoke``, async invoke).
        Failures raise, so Lambda's own async retries and on-failure destination apply."""
        events = parse_payload(event)
        # Lambda retries failed async invocations itself; no attempt here knows it is the last.
        attempt = Attempt(
            deadline=_deadline(context), max_receive_count=None, hard_deadline=_end(context)
        )
        try:
            outcomes = [self._one(ev, attempt, request_id=_request_id(context)) for ev in events]
        finally:
            self.pipeline.slots.release_idle()
        return {"outcomes": [{"status": o.status, "detail": o.detail} for o in outcomes]}

    def _sqs_record(self, record: SqsRecord, context: Any, ticket: Ticket) -> list[str]:
        receive_count = record.receive_count
        waits = waits_of(record.message_attributes)
        attempt = Attempt(
            deadline=_deadline(context),
            receive_count=receive_count,
            max_receive_count=self.config.max_receive_count,
            hard_deadline=_end(context),
            provider_deadline=ticket.deadline,
            still_to_call=ticket.still_to_call,
            can_wait=self.requeue.can_wait(waits),
        )
        if is_sweep_message(record.body):  # the schedule's message (template.yaml)
            return [str(self.sweep()["requeued"])]
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
        try:
            return [
                self._one(
                    ev, attempt, request_id=_request_id(context), message_id=record.message_id
                ).status
                for ev in events
            ]
        except ComeBackLater as wait:
            return [self._come_back_later(record, waits, wait)]

    def _come_back_later(self, record: SqsRecord, waits: int, wait: ComeBackLater) -> str:
        """Re-send the message with a delay and consume this copy (no delivery counted);
        if SQS refuses, fail the record with its visibility set to the wait instead."""
        try:
            self.requeue.later(record.body, waits, wait.delay)
        except Exception:
            logger.exception("could not re-queue the message; it is retried as a failure")
            self.requeue.hide(record.receipt_handle, wait.delay)
            raise RetryLater(str(wait)) from None
        add_metric("Waits", MetricUnit.Count)
        logger.info("waiting", extra={"reason": str(wait), "delay_s": round(wait.delay, 1)})
        return "WAITING"

    def _one(self, ev: ObjectEvent, attempt: Attempt, **ids: str | None) -> Outcome:
        keys = {"bucket": ev.bucket, "key": ev.key, "version_id": ev.version_id, **ids}
        logger.thread_safe_append_keys(**keys)
        try:
            if attempt.deadline - time.monotonic() < MIN_RECORD_SECONDS and not attempt.is_last:
                # Claiming and paying with seconds left would only be cut off by the timeout.
                # On the last delivery it runs anyway: with no time for the provider it
                # records FAILED and why, instead of dead-lettering with no row.
                if attempt.can_wait:  # never tried: not a failed delivery
                    raise ComeBackLater("too little time left in this invocation", 0.0)
                raise RetryLater("too little time left in this invocation")
            outcome = self.pipeline.process(ev, attempt)
            logger.info(
                "processed", extra={"status": outcome.status, "detail": outcome.detail[:300]}
            )
        except ComeBackLater:
            raise  # a wait, not a failure (_come_back_later)
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


def _leases(config: Config, dynamodb: Any) -> Callable[[str], Leases] | None:
    """The deployment-wide provider leases (leases.py), when a shared limit is set."""
    if config.provider_concurrency <= 0:
        return None
    return lambda provider: SlotLeases(
        config.captions_table, dynamodb, provider, config.provider_concurrency
    )


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
