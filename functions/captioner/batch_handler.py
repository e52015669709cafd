"""Lambda entry point of ``BatchBackfillFunction``: an S3 Batch Operations invocation
(schema 2.0) in, one result per task out. The decisions are in ``batchbackfill``."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import boto3
from botocore.config import Config as BotoConfig

from captioner.batchbackfill import BatchBackfill, BatchSettings, SqsQueue
from captioner.batchjob import parse_invocation, response
from captioner.objects import ObjectStore
from captioner.observability import logger
from captioner.store import CaptionReader

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]

_service: BatchBackfill | None = None


def build(
    settings: BatchSettings,
    *,
    session: boto3.session.Session | None = None,
    endpoint_url: str | None = None,
) -> BatchBackfill:
    """The service for ``settings``; ``session``/``endpoint_url`` point it at the local stack."""
    session = session or boto3.session.Session()
    boto_cfg = BotoConfig(
        retries={"mode": "standard", "max_attempts": 3}, connect_timeout=5, read_timeout=10
    )

    def client(name: str) -> Any:
        return session.client(name, config=boto_cfg, endpoint_url=endpoint_url)

    return BatchBackfill(
        settings.buckets,
        ObjectStore(client("s3")),
        CaptionReader(settings.captions_table, client("dynamodb")),
        SqsQueue(client("sqs"), settings.queue_url),
    )


def get_service() -> BatchBackfill:
    """Built on the first invocation from the environment, reused while the container is warm."""
    global _service
    if _service is None:
        _service = build(BatchSettings.from_env(os.environ))
    return _service


def reset() -> None:
    global _service
    _service = None


def handler_for(service: Callable[[], BatchBackfill]) -> Handler:
    @logger.inject_lambda_context(clear_state=True)
    def handle(event: dict[str, Any], context: Any) -> dict[str, Any]:
        invocation = parse_invocation(event)
        results = service().run(invocation)
        codes = [r.code.value for r in results]
        logger.info(
            "batch tasks",
            extra={"job_id": invocation.job_id, "tasks": len(results),
                   **{c: codes.count(c) for c in sorted(set(codes))}},
        )  # fmt: skip
        return response(invocation.invocation_id, results)

    decorated: Handler = handle
    return decorated


lambda_handler = handler_for(get_service)
