"""Messages that must come back later without counting as a failed delivery.

SQS raises a message's ``ApproximateReceiveCount`` at every receive, and the redrive policy
dead-letters it at ``MaxReceiveCount``. A wait is not a failure: a 429 whose ``retry_after``
does not fit the record's time, a provider job with a long ``eta``, a record that got no
provider slot or no time in its invocation. For those the function sends the same body again
with ``DelaySeconds`` (the wait, at most 900 s) and consumes the original: the new message
starts with a receive count of 0, so waits never push a message towards the dead-letter
queue. The copy carries ``captioner-waits`` (how many times it waited); after ``MAX_WAITS``
a wait counts as an ordinary failed delivery again, so nothing can wait for ever.

If the send fails (or no queue is configured), the record fails as before, with its
visibility set to the wait (``ChangeMessageVisibility``), so it still comes back after about
the wait, at the cost of one delivery. A crash between the send and the original's deletion
leaves two copies: the second finds the row captioned (a duplicate, one conditional write)
or polls the stored job (free); it never pays twice.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

WAITS_ATTRIBUTE = "captioner-waits"
MAX_WAITS = 96  # e.g. a day of 15-minute waits, or eight hours of 5-minute ones
MAX_DELAY_S = 900  # SQS's DelaySeconds limit
SQS_BATCH = 10


class Requeue:
    def __init__(self, queue_url: str | None, sqs: Callable[[], Any]) -> None:
        self.queue_url = queue_url or None
        self._sqs = sqs  # made on first use: most invocations never wait

    def can_wait(self, waits: int) -> bool:
        return self.queue_url is not None and waits < MAX_WAITS

    def later(self, body: str, waits: int, delay: float) -> None:
        """Send ``body`` again, visible after ``delay`` seconds (raises when SQS refuses)."""
        assert self.queue_url is not None
        self._sqs().send_message(
            QueueUrl=self.queue_url,
            MessageBody=body,
            DelaySeconds=delay_seconds(delay),
            MessageAttributes={
                WAITS_ATTRIBUTE: {"DataType": "Number", "StringValue": str(waits + 1)}
            },
        )

    def hide(self, receipt_handle: str, delay: float) -> None:
        """The fallback: keep a failed record invisible for about ``delay`` (best effort)."""
        if self.queue_url is None or not receipt_handle:
            return
        with contextlib.suppress(Exception):
            self._sqs().change_message_visibility(
                QueueUrl=self.queue_url,
                ReceiptHandle=receipt_handle,
                VisibilityTimeout=max(delay_seconds(delay), 1),
            )

    def send_all(self, bodies: list[str]) -> int:
        """Send new messages (the budget sweep's); how many SQS accepted."""
        assert self.queue_url is not None
        sent = 0
        for start in range(0, len(bodies), SQS_BATCH):
            chunk = bodies[start : start + SQS_BATCH]
            resp = self._sqs().send_message_batch(
                QueueUrl=self.queue_url,
                Entries=[{"Id": str(i), "MessageBody": b} for i, b in enumerate(chunk)],
            )
            sent += len(resp.get("Successful", []))
            if failed := resp.get("Failed"):  # the caller's rows wait for its next try
                codes = sorted({str(f.get("Code")) for f in failed})
                log.warning("SQS refused %d of %d messages: %s", len(failed), len(chunk), codes)
        return sent


def delay_seconds(delay: float) -> int:
    """SQS's DelaySeconds for a wait: 0 to 900 (a NaN waits not at all, infinity 900 s)."""
    if math.isnan(delay):
        return 0
    return int(min(max(math.ceil(min(delay, MAX_DELAY_S)), 0), MAX_DELAY_S))


def waits_of(attributes: dict[str, Any] | None) -> int:
    """``captioner-waits`` from a Lambda SQS record's ``messageAttributes``."""
    value = (attributes or {}).get(WAITS_ATTRIBUTE) or {}
    raw = value.get("stringValue") if isinstance(value, dict) else None
    try:
        return max(int(raw or 0), 0)
    except ValueError:
        return 0
