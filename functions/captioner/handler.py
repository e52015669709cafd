"""Lambda entry point: the SQS event in, partial batch response out. All logic is elsewhere."""

from __future__ import annotations

import threading
from contextvars import ContextVar
from typing import Any

from captioner.app import App
from captioner.observability import logger, metrics, tracer

# Which instance is invoking. In Lambda there is one per process (None). The local stack
# runs several "instances" as threads of one process and names each, so each gets its own
# App (clients, provider slots) as separate Lambda containers would.
instance: ContextVar[str | None] = ContextVar("captioner_instance", default=None)
_apps: dict[str | None, App] = {}
_lock = threading.Lock()


def get_app() -> App:
    """Built on the first invocation (not at import) and reused by the warm container, so
    the local stack and tests can set the environment before it is read."""
    key = instance.get()
    app = _apps.get(key)
    if app is None:
        with _lock:
            app = _apps.get(key)
            if app is None:
                app = _apps[key] = App.from_env()
    return app


def reset() -> None:
    """Forget the cached apps (tests, local stack restarts)."""
    with _lock:
        _apps.clear()


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return get_app().handle(event, context)
