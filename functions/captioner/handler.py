"""Lambda entry point: the SQS event in, partial batch response out. All logic is elsewhere."""

from __future__ import annotations

from typing import Any

from captioner.app import App
from captioner.observability import logger, metrics, tracer

_app: App | None = None


def get_app() -> App:
    """Built on the first invocation (not at import) and reused by the warm container, so
    the local stack and tests can set the environment before it is read."""
    global _app
    if _app is None:
        _app = App.from_env()
    return _app


def reset() -> None:
    """Forget the cached app (tests, local stack restarts)."""
    global _app
    _app = None


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return get_app().handle(event, context)
