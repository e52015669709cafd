"""Lambda entry point: the SQS event in, partial batch response out. All logic is elsewhere."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.metrics.functions import is_metrics_disabled

from captioner.app import App
from captioner.observability import logger, metrics, tracer

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]

_app: App | None = None


def get_app() -> App:
    """Built on the first invocation (not at import) from the environment, and reused by the
    warm container, so tests can set the environment before it is read."""
    global _app
    if _app is None:
        _app = App.from_env()
    return _app


def reset() -> None:
    """Forget the cached app (tests that change the environment)."""
    global _app
    _app = None


def handler_for(app: Callable[[], App]) -> Handler:
    """A Lambda handler running the app ``app()`` returns, with Powertools' decorators.
    Lambda's is ``lambda_handler`` below; the local stack makes one for an app it built from
    its own configuration."""

    def run(event: dict[str, Any], context: Any) -> dict[str, Any]:
        return app().handle(event, context)

    publishing = metrics.log_metrics(run)

    @logger.inject_lambda_context(clear_state=True)
    @tracer.capture_lambda_handler(capture_response=False)
    def handle(event: dict[str, Any], context: Any) -> dict[str, Any]:
        # metrics off (the local stack): nothing is kept, so nothing to publish, and
        # Powertools would warn of an empty set at every invocation
        return run(event, context) if is_metrics_disabled() else publishing(event, context)

    decorated: Handler = handle  # Powertools' decorators return Any; the shape is unchanged
    return decorated


lambda_handler = handler_for(get_app)
