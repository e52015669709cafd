""" "Caption Status Changed" events: one per final transition of an object version.

When a row reaches CAPTIONED, REJECTED, SKIPPED, FAILED or DELETED, the function puts one
event on EventBridge (``Source`` ``captioner``, ``DetailType`` ``Caption Status Changed``,
``Detail`` = the row's ``DETAIL_FIELDS``). How "exactly one" and "nothing lost" are kept
without a second store:

    final write: status + event_due = status   (the same UpdateItem; nothing extra)
    PutEvents                                   (the event)
    announced:   REMOVE event_due               (one conditional UpdateItem)

- A duplicate delivery that changes nothing (the row had this status already, with no event
  owed) writes no ``event_due`` and publishes nothing (``is_transition``).
- A PutEvents that fails (after botocore's retries) fails neither the record nor the caption:
  it is logged and counted (``EventsFailed``), and the row keeps ``event_due`` (its lease
  given back, so the next delivery that meets the row publishes it).
- An instance that dies between the final write and PutEvents leaves ``event_due`` too.
- The write of ``event_due`` also writes ``event_lease_until`` (``EVENT_LEASE_S`` ahead):
  until then only that delivery publishes. A duplicate delivered at the same moment (two
  deliveries of one delete, of one captioned version) finds the event owed but leased, and
  leaves it to the writer.
- A row with ``event_due`` whose lease has run out is announced again by the next delivery
  that meets it, after it takes the lease with a conditional write (one taker): the
  redelivery of a message whose instance died, an S3 duplicate, a redrive, or
  ``captioner backfill`` (which enqueues such rows). So delivery is at least once, after the
  row is written; a duplicate event is possible only when an instance dies (or the
  ``announced`` write fails) between PutEvents and that write, or when a PutEvents outlasts
  the lease.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from typing import Any, Protocol

from captioner.store import EVENT_DUE, Announce, Status

SOURCE = "captioner"
DETAIL_TYPE = "Caption Status Changed"
DETAIL_FIELDS = (
    "bucket", "key", "version_id", "status", "caption", "reason", "provider", "tag_status",
    "updated_at",
)  # fmt: skip


class PublishFailed(Exception):
    """PutEvents refused the event (it answered with a failed entry)."""


class Publisher(Protocol):
    def publish(self, detail: Mapping[str, Any]) -> None:
        """Put one event; raise when it was not accepted."""
        ...


class AnnouncedRows(Protocol):
    def take_event(self, row: Mapping[str, Any]) -> bool: ...
    def release_event(self, row: Mapping[str, Any]) -> None: ...
    def announced(self, row: Mapping[str, Any]) -> bool: ...


class EventsTelemetry(Protocol):
    def event_published(self, status: str) -> None: ...
    def event_failed(self, status: str, error: Exception) -> None: ...


class EventBridgePublisher:
    def __init__(self, events_client: Any, bus: str) -> None:
        self._events = events_client
        self.bus = bus

    def publish(self, detail: Mapping[str, Any]) -> None:
        entry = {
            "Source": SOURCE,
            "DetailType": DETAIL_TYPE,
            "Detail": json.dumps(detail, ensure_ascii=False),
            "EventBusName": self.bus,
        }
        resp = self._events.put_events(Entries=[entry])
        if resp.get("FailedEntryCount"):
            failed = (resp.get("Entries") or [{}])[0]
            raise PublishFailed(f"{failed.get('ErrorCode')}: {failed.get('ErrorMessage')}")


def event_detail(row: Mapping[str, Any]) -> dict[str, Any]:
    """The event's Detail: the row's values (null when absent); nothing else of the row."""
    return {name: row.get(name) for name in DETAIL_FIELDS}


def is_transition(previous: Mapping[str, Any] | None, status: Status, *, paid: bool) -> bool:
    """Whether reaching ``status`` now is a final transition to announce.

    ``previous`` is the row as the claim found it, for this same version (None otherwise);
    ``paid`` says this delivery paid for a new caption (a re-caption by another provider is
    news even though the status stays CAPTIONED)."""
    if previous is None or paid or previous.get(EVENT_DUE):
        return True
    before = previous.get("status")
    # a CAPTIONED row without tag_status was never final: its tag step was cut short
    settled = before != Status.CAPTIONED or previous.get("tag_status") is not None
    return not (before == status and settled)


class Announcer:
    """Publishes the events rows owe, and tells the table when one went out."""

    def __init__(
        self,
        publisher: Publisher | None,
        rows: AnnouncedRows,
        telemetry: EventsTelemetry | None = None,
    ) -> None:
        self._publisher = publisher
        self._rows = rows
        self._telemetry = telemetry

    @property
    def enabled(self) -> bool:
        return self._publisher is not None

    def for_transition(
        self, previous: Mapping[str, Any] | None, status: Status, *, paid: bool = False
    ) -> Announce | None:
        """What the final write should call with the row it wrote, or None: no event."""
        if self._publisher is None or not is_transition(previous, status, paid=paid):
            return None
        return self.announce

    def for_deletes(self) -> Announce | None:
        """The store decides for deletes (it sees the row the delete replaced)."""
        return self.announce if self._publisher is not None else None

    def owed(self, row: Mapping[str, Any] | None) -> None:
        """Announce a row whose event is still owed (a delivery that finds it finished)."""
        if self._publisher is None or not row or row.get(EVENT_DUE) != row.get("status"):
            return
        if self._rows.take_event(row):  # not while its writer may be publishing it
            self.announce(row)

    def announce(self, row: Mapping[str, Any]) -> None:
        """Publish the row's event, then forget that it is owed. Never raises: the event
        matters less than the caption, and an event still owed is announced later."""
        assert self._publisher is not None
        status = str(row.get("status"))
        try:
            self._publisher.publish(event_detail(row))
        except Exception as exc:
            if self._telemetry:
                self._telemetry.event_failed(status, exc)
            with contextlib.suppress(Exception):  # the next delivery may try at once
                self._rows.release_event(row)
            return
        if self._telemetry:
            self._telemetry.event_published(status)
        # published; if this write fails, a later delivery announces it again (a duplicate)
        with contextlib.suppress(Exception):
            self._rows.announced(row)
