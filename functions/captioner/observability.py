"""Logger, tracer and metrics, created once and shared (Powertools)."""

from __future__ import annotations

import os

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.metrics import MetricUnit

SERVICE = "captioner"

logger = Logger(service=SERVICE)
tracer = Tracer(service=SERVICE)
metrics = Metrics(
    namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "Captioner"), service=SERVICE
)

# Outcomes that are worth a metric of their own (names are the dashboard's contract).
_OUTCOME_METRICS = {
    "CAPTIONED": "Captioned",
    "REJECTED": "Rejected",
    "SKIPPED": "Skipped",
    "FAILED": "Failed",
    "DELETED": "Deleted",
    "DUPLICATE": "Duplicates",
    "STALE": "Stale",
    "IGNORED": "Ignored",
}


class PowertoolsTelemetry:
    """The pipeline's ``Telemetry`` as EMF metrics and structured logs."""

    def outcome(self, status: str) -> None:
        name = _OUTCOME_METRICS.get(status)
        if name:
            metrics.add_metric(name=name, unit=MetricUnit.Count, value=1)

    def provider_latency(self, provider: str, ms: float) -> None:
        metrics.add_metric(name="ProviderLatency", unit=MetricUnit.Milliseconds, value=ms)

    def retry(self, error: Exception, wait: float) -> None:
        metrics.add_metric(name="ProviderRetries", unit=MetricUnit.Count, value=1)
        logger.warning(
            "provider call failed; retrying", extra={"error": str(error), "wait_s": round(wait, 2)}
        )
