"""The budget sweep: rows parked by the daily budget go back into the queue when it allows.

A record that met the cap was consumed with its row ``PENDING`` and a reason starting with
``daily budget`` (no lease). Every 5 minutes the template's schedule puts a message
``{"captioner": "budget-sweep"}`` into the caption queue, and the function runs this sweep: when today's budget pays for more requests (a new UTC day, or a higher
``DailyBudgetUsd``), it reads the oldest parked rows from the status index, as many as the
budget pays for (at most ``MAX_PER_SWEEP``), marks each ``requeued_at`` (a conditional
write: a row that changed meanwhile is left alone) and sends a backfill message for it, ten
rows at a time. A
marked row is not sent again for ``RESEND_AFTER_S`` (its message is on the way) and counts
against the budget's room until it is captioned; any result written for it removes the mark. Nothing is dead-lettered for the budget, nothing is lost:
a parked row stays in the table until the sweep's message captions it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError

from captioner.budget import BUDGET_REASON_PREFIX, DailyBudget
from captioner.events import backfill_message
from captioner.requeue import SQS_BATCH, Requeue
from captioner.store import INDEX_BY_STATUS, Status, from_item, now_iso

log = logging.getLogger(__name__)

SWEEP_EVENT = {"captioner": "budget-sweep"}  # the schedule's input (template.yaml)
MAX_PER_SWEEP = 2000
RESEND_AFTER_S = 3600


def is_sweep(event: Any) -> bool:
    """A direct invocation asking for a sweep (``aws lambda invoke``)."""
    return isinstance(event, dict) and event.get("captioner") == SWEEP_EVENT["captioner"]


def is_sweep_message(body: str) -> bool:
    """The schedule's message in the caption queue."""
    if '"budget-sweep"' not in body:  # cheap test first: almost every body is an S3 event
        return False
    try:
        return is_sweep(json.loads(body))
    except ValueError:
        return False


@dataclass(frozen=True)
class SweepReport:
    room: int | None  # requests today's budget still pays for (None: no cap)
    requeued: int


class BudgetSweep:
    def __init__(
        self,
        table_name: str,
        dynamodb_client: Any,
        budget: DailyBudget,
        requeue: Requeue,
        price_usd: float,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.table_name = table_name
        self._db = dynamodb_client
        self.budget = budget
        self.requeue = requeue
        self.price_usd = price_usd
        self._clock = clock or (lambda: datetime.now(UTC))

    def run(self) -> SweepReport:
        room = self.budget.room(self.price_usd)
        if room == 0 or self.requeue.queue_url is None:
            return SweepReport(room, 0)
        # rows re-queued by an earlier sweep and not captioned yet will spend too
        wanted = MAX_PER_SWEEP if room is None else min(room - self._on_the_way(), MAX_PER_SWEEP)
        if wanted <= 0:
            return SweepReport(room, 0)
        parked, sent = self._parked(wanted), 0
        # marked and sent ten at a time: the first messages go out after ten marks, and a
        # sweep that dies midway leaves at most one batch marked and unsent; those, and any
        # message SQS refuses (logged), are sent by a sweep after RESEND_AFTER_S
        for start in range(0, len(parked), SQS_BATCH):
            chunk = parked[start : start + SQS_BATCH]
            bodies = [self._body(row) for row in chunk if self._mark(row)]
            sent += self.requeue.send_all(bodies) if bodies else 0
        if sent:
            log.info("budget sweep re-queued %d parked row(s)", sent)
        return SweepReport(room, sent)

    def _parked(self, limit: int) -> list[dict[str, Any]]:
        """The oldest parked rows no delivery holds and no recent sweep re-queued."""
        now = self._clock()
        pages = self._db.get_paginator("query").paginate(
            TableName=self.table_name,
            IndexName=INDEX_BY_STATUS,
            KeyConditionExpression="#s = :s",
            FilterExpression=(
                "begins_with(#r, :why) AND (attribute_not_exists(#l) OR #l < :now)"
                " AND (attribute_not_exists(#q) OR #q < :stale)"
            ),
            ExpressionAttributeNames={
                "#s": "status",
                "#r": "reason",
                "#l": "lease_until",
                "#q": "requeued_at",
            },
            ExpressionAttributeValues={
                ":s": {"S": Status.PENDING.value},
                ":why": {"S": BUDGET_REASON_PREFIX},
                ":now": {"S": now_iso(lambda: now)},
                ":stale": {"S": now_iso(lambda: now - timedelta(seconds=RESEND_AFTER_S))},
            },
            ScanIndexForward=True,
        )
        rows: list[dict[str, Any]] = []
        for page in pages:
            for item in page.get("Items", []):
                rows.append(from_item(item))
                if len(rows) >= limit:
                    return rows
        return rows

    def _on_the_way(self) -> int:
        """Parked rows a sweep re-queued within ``RESEND_AFTER_S``: their messages are in
        the queue. Marking sets ``updated_at``, so only the last hour of the index is read."""
        stale = now_iso(lambda: self._clock() - timedelta(seconds=RESEND_AFTER_S))
        pages = self._db.get_paginator("query").paginate(
            TableName=self.table_name,
            IndexName=INDEX_BY_STATUS,
            KeyConditionExpression="#s = :s AND #u >= :stale",
            FilterExpression="begins_with(#r, :why) AND #q >= :stale",
            ExpressionAttributeNames={
                "#s": "status",
                "#u": "updated_at",
                "#r": "reason",
                "#q": "requeued_at",
            },
            ExpressionAttributeValues={
                ":s": {"S": Status.PENDING.value},
                ":stale": {"S": stale},
                ":why": {"S": BUDGET_REASON_PREFIX},
            },
            Select="COUNT",
        )
        return sum(int(page.get("Count", 0)) for page in pages)

    def _mark(self, row: dict[str, Any]) -> bool:
        """Mark the row re-queued, unless it changed since it was read or another sweep
        (running at the same time) marked it first."""
        now = self._clock()
        try:
            self._db.update_item(
                TableName=self.table_name,
                Key={"bucket": {"S": row["bucket"]}, "key": {"S": row["key"]}},
                UpdateExpression="SET #q = :now, #u = :now",
                ConditionExpression=(
                    "#s = :s AND begins_with(#r, :why) AND #v = :rev"
                    " AND (attribute_not_exists(#q) OR #q < :stale)"
                ),
                ExpressionAttributeNames={
                    "#q": "requeued_at",
                    "#s": "status",
                    "#r": "reason",
                    "#v": "revision",
                    "#u": "updated_at",
                },
                ExpressionAttributeValues={
                    ":now": {"S": now_iso(lambda: now)},
                    ":s": {"S": Status.PENDING.value},
                    ":why": {"S": BUDGET_REASON_PREFIX},
                    ":rev": {"S": str(row.get("revision", ""))},
                    ":stale": {"S": now_iso(lambda: now - timedelta(seconds=RESEND_AFTER_S))},
                },
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            raise
        return True

    @staticmethod
    def _body(row: dict[str, Any]) -> str:
        return backfill_message(
            row["bucket"],
            row["key"],
            version_id=row.get("version_id"),
            etag=row.get("etag"),
            size=row.get("size"),
            # only a provider the parked message asked for by name: the others go through
            # the deployment's provider and fallbacks again
            provider=row.get("requested_provider"),
        )


def count_parked(table_name: str, dynamodb_client: Any) -> int:
    """Rows waiting for the budget (``captioner status``): a COUNT on the status index."""
    pages = dynamodb_client.get_paginator("query").paginate(
        TableName=table_name,
        IndexName=INDEX_BY_STATUS,
        KeyConditionExpression="#s = :s",
        FilterExpression="begins_with(#r, :why)",
        ExpressionAttributeNames={"#s": "status", "#r": "reason"},
        ExpressionAttributeValues={
            ":s": {"S": Status.PENDING.value},
            ":why": {"S": BUDGET_REASON_PREFIX},
        },
        Select="COUNT",
    )
    return sum(int(page.get("Count", 0)) for page in pages)
