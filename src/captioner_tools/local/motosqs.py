"""moto 5.2.5's SQS without its quadratic costs, for the local stack.

moto counts a queue's messages one by one, reading the clock for each, whenever it builds
the queue's attributes, and it builds them for every message a receive looks at (to read
the retention period) and for every send (to read ``ContentBasedDeduplication``). A receive
from a queue of n messages therefore costs n², and a send n: with 10,000 uploads queued the
local stack spent three quarters of its time there (a py-spy profile of ``chaos_run.py``).
Here the retention check reads the queue's retention period directly, and the three
approximate counts are made in one pass with one clock reading. What they return is
unchanged. ``install`` is idempotent; ``tests/tools/test_motosqs.py`` checks it.
"""

from __future__ import annotations

from typing import Any

from captioner_tools.errors import LocalStackError

_installed = False


def install() -> None:
    global _installed
    if _installed:
        return
    from moto.sqs.models import Queue, SQSBackend

    needed = (
        (SQSBackend, "is_message_valid_based_on_retention_period"),
        (Queue, "approximate_number_of_messages"),
        (Queue, "approximate_number_of_messages_not_visible"),
        (Queue, "approximate_number_of_messages_delayed"),
    )
    for owner, name in needed:
        if not hasattr(owner, name):
            raise LocalStackError(
                f"this moto has no {owner.__name__}.{name}: captioner_tools.local.motosqs "
                "needs the moto version pyproject pins"
            )
    SQSBackend.is_message_valid_based_on_retention_period = _within_retention  # type: ignore[method-assign]
    Queue.approximate_number_of_messages = property(lambda q: _counts(q)[0])  # type: ignore[method-assign,assignment]
    Queue.approximate_number_of_messages_not_visible = property(lambda q: _counts(q)[1])  # type: ignore[method-assign,assignment]
    Queue.approximate_number_of_messages_delayed = property(lambda q: _counts(q)[2])  # type: ignore[method-assign,assignment]
    _installed = True


def _within_retention(self: Any, queue_name: str, message: Any) -> bool:
    from moto.core.utils import unix_time

    retention = int(self.get_queue(queue_name).message_retention_period)
    return bool(retention + message.sent_timestamp / 1000 > unix_time())


def _counts(queue: Any) -> tuple[int, int, int]:
    """(visible and not delayed, not visible, delayed): moto's three counts, one pass."""
    from moto.core.utils import unix_time_millis

    now = unix_time_millis()
    ready = hidden = delayed = 0
    for message in queue._messages:
        visible = now > message.visible_at
        late = now < message.delayed_until
        ready += visible and not late
        hidden += not visible
        delayed += late
    return ready, hidden, delayed
