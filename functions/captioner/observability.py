"""Logger, tracer and metrics, created once and shared (Powertools)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.metrics.functions import is_metrics_disabled

from captioner.store import Status

if TYPE_CHECKING:
    from aws_lambda_powertools import Tracer

SERVICE = "captioner"
Handler = TypeVar("Handler", bound=Callable[..., Any])


class _NoTracer:
    """Stands in for Powertools' Tracer when tracing is off: the Tracer imports the X-Ray
    SDK (about 0.2 s, and two botocore clients) even when it will never send a segment."""

    def capture_lambda_handler(
        self, capture_response: bool | None = None
    ) -> Callable[[Handler], Handler]:
        return lambda handler: handler


def _make_tracer() -> Tracer | _NoTracer:
    if os.environ.get("POWERTOOLS_TRACE_DISABLED", "").strip().lower() in ("1", "true", "yes"):
        return _NoTracer()
    from aws_lambda_powertools import Tracer

    return Tracer(service=SERVICE)


logger = Logger(service=SERVICE)
# Typed as Powertools' Tracer: the stand-in has the one method the handler uses.
tracer = cast("Tracer", _make_tracer())  # tracing on (Tracing Active) pays for X-Ray here
metrics = Metrics(
    namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "Captioner"), service=SERVICE
)

_metrics_lock = threading.Lock()


def add_metric(name: str, unit: MetricUnit, value: float = 1) -> None:
    """``metrics.add_metric`` under a lock: records run on a thread pool, and Powertools'
    metric set is a plain dict updated read-modify-write.

    Nothing is kept when metrics are off (POWERTOOLS_METRICS_DISABLED, as in the local
    stack): Powertools 3.37 then never clears its set, and prints it anyway once a metric
    has 100 values, which put stray EMF lines in long local runs."""
    if is_metrics_disabled():  # POWERTOOLS_METRICS_DISABLED, read as Powertools reads it
        return
    with _metrics_lock:
        metrics.add_metric(name=name, unit=unit, value=value)


# Outcomes that are worth a metric of their own (names are the dashboard's contract).
_OUTCOME_METRICS = {
    Status.CAPTIONED: "Captioned",
    Status.REJECTED: "Rejected",
    Status.SKIPPED: "Skipped",
    Status.FAILED: "Failed",
    Status.DELETED: "Deleted",
    "DUPLICATE": "Duplicates",
    "STALE": "Stale",
    "IGNORED": "Ignored",
}


class PowertoolsTelemetry:
    """The pipeline's ``Telemetry`` as EMF metrics and structured logs."""

    def outcome(self, status: str) -> None:
        name = _OUTCOME_METRICS.get(status)
        if name:
            add_metric(name, MetricUnit.Count)

    def provider_latency(self, provider: str, ms: float) -> None:
        add_metric("ProviderLatency", MetricUnit.Milliseconds, ms)

    def budget_exhausted(self) -> None:
        add_metric("BudgetExhausted", MetricUnit.Count)
        logger.warning("daily budget reached: the row waits for the budget sweep")

    def retry(self, error: Exception, wait: float) -> None:
        add_metric("ProviderRetries", MetricUnit.Count)
        logger.warning(
            "provider call failed; retrying", extra={"error": str(error), "wait_s": round(wait, 2)}
        )

    def event_published(self, status: str) -> None:
        add_metric("EventsPublished", MetricUnit.Count)

    def event_failed(self, status: str, error: Exception) -> None:
        # The record goes on: the row keeps the event owed and a later delivery sends it.
        add_metric("EventsFailed", MetricUnit.Count)
        logger.warning(
            "caption event not published; it stays owed on the row",
            extra={"status": status, "error": f"{type(error).__name__}: {error}"[:500]},
        )
