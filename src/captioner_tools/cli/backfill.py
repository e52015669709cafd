"""Enqueue objects that are already in the bucket, skipping those already captioned; or
(``--reindex``) build the word index of the rows that are there.

One pass, page by page (1,000 keys), so a bucket of any size runs in bounded memory: list
the page, look its rows up with BatchGetItem, and enqueue the rest with SendMessageBatch.
The messages are S3-notification-shaped (``captioner.events.backfill_message``), so the
function handles them exactly like uploads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from captioner.backfillrules import Asked, Skip, Version, owes_event, skip_reason
from captioner.events import backfill_message
from captioner.store import CaptionReader, CaptionStore

MODELSLAB_PRICE_USD = 0.0047  # per image (README, Cost; MODELSLAB_PRICE_USD overrides it)
SQS_MAX_BATCH = 10
_PROJECTION = ("status", "version_id", "etag", "size", "provider", "tag_status", "event_due")


@dataclass
class BackfillStats:
    listed: int = 0  # objects listed (folder markers included)
    folders: int = 0  # "folder/" markers: nothing to caption
    captioned: int = 0  # already CAPTIONED for this version: skipped
    rejected: int = 0  # already REJECTED for this version (not an image we accept): skipped
    other_provider: int = 0  # --only-provider: the row names another provider (or none)
    enqueued: int = 0  # sent (or, with --dry-run, would be sent)
    events_owed: int = 0  # of those, finished rows whose event is still owed: free to send
    failed: int = 0  # SendMessageBatch refused them

    def cost_usd(self, price: float = MODELSLAB_PRICE_USD) -> float:
        return round((self.enqueued - self.events_owed) * price, 4)


@dataclass(frozen=True)
class BackfillPlan:
    bucket: str
    prefix: str = ""
    provider: str | None = None  # asked of the function for these messages
    only_provider: str | None = None  # re-enqueue only rows captioned by this provider
    dry_run: bool = False

    def wants(self, obj: dict[str, Any], row: dict[str, Any] | None) -> str | None:
        """Why the object is skipped ("captioned", "rejected", "other_provider"), or None.

        The rules are the function package's (``captioner.backfillrules``), shared with the
        batch engine. An opted-out row is sent here as before: the function reads the tag
        again (free) and captions the object once the tag is gone.
        """
        asked = Asked(self.provider, self.only_provider)
        reason = skip_reason(Version(_etag(obj), int(obj.get("Size", 0))), row, asked)
        return _QUEUE_REASONS.get(reason) if reason else None


_QUEUE_REASONS = {
    Skip.CAPTIONED: "captioned",
    Skip.UPLOADER_CAPTION: "captioned",
    Skip.REJECTED: "rejected",
    Skip.OTHER_PROVIDER: "other_provider",
}


def run_backfill(
    s3: Any,
    captions: CaptionReader,
    sqs: Any,
    *,
    queue_url: str,
    plan: BackfillPlan,
    on_progress: Callable[[BackfillStats], None] | None = None,
) -> BackfillStats:
    stats = BackfillStats()
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=plan.bucket, Prefix=plan.prefix)
    for page in pages:
        objects = page.get("Contents", [])
        stats.listed += len(objects)
        files = [o for o in objects if not o["Key"].endswith("/")]
        stats.folders += len(objects) - len(files)
        rows = captions.get_many(plan.bucket, [o["Key"] for o in files], _PROJECTION)
        todo = []
        for obj in files:
            reason = plan.wants(obj, rows.get(obj["Key"]))
            if reason == "captioned":
                stats.captioned += 1
            elif reason == "rejected":
                stats.rejected += 1
            elif reason == "other_provider":
                stats.other_provider += 1
            else:
                stats.events_owed += owes_event(rows.get(obj["Key"]))
                todo.append(obj)
        _enqueue(sqs, queue_url, plan, todo, stats)
        if on_progress:
            on_progress(stats)
    return stats


def _enqueue(
    sqs: Any,
    queue_url: str,
    plan: BackfillPlan,
    objects: list[dict[str, Any]],
    stats: BackfillStats,
) -> None:
    for chunk in _chunks(objects, SQS_MAX_BATCH):
        if plan.dry_run:
            sent = {str(i) for i in range(len(chunk))}
        else:
            sent = _send(sqs, queue_url, plan, chunk)
        stats.enqueued += len(sent)
        stats.failed += len(chunk) - len(sent)


def _send(sqs: Any, queue_url: str, plan: BackfillPlan, chunk: list[dict[str, Any]]) -> set[str]:
    """SendMessageBatch, retrying once the entries SQS refused (throttling, hiccups)."""
    entries = {
        str(i): {
            "Id": str(i),
            "MessageBody": backfill_message(
                plan.bucket,
                o["Key"],
                version_id=None,
                etag=_etag(o),
                size=int(o.get("Size", 0)),
                provider=plan.provider,
            ),
        }
        for i, o in enumerate(chunk)
    }
    sent: set[str] = set()
    for _ in range(2):
        pending = [e for i, e in entries.items() if i not in sent]
        if not pending:
            break
        resp = sqs.send_message_batch(QueueUrl=queue_url, Entries=pending)
        sent |= {s["Id"] for s in resp.get("Successful", [])}
    return sent


def _etag(obj: dict[str, Any]) -> str | None:
    return str(obj.get("ETag", "")).strip('"') or None


def _chunks[T](items: list[T], size: int) -> Iterable[list[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# -- reindex -------------------------------------------------------------------------------------


@dataclass
class ReindexStats:
    rows: int = 0  # rows read
    current: int = 0  # their postings were right already
    indexed: int = 0  # postings written (rows from before the index, or words out of date)
    unindexed: int = 0  # postings removed (deleted objects, rows without a caption)
    changed: int = 0  # the row kept changing under us: its writer keeps the index right


def run_reindex(
    store: CaptionStore,
    captions: CaptionReader,
    *,
    bucket: str,
    prefix: str = "",
    dry_run: bool = False,
    on_progress: Callable[[ReindexStats], None] | None = None,
) -> ReindexStats:
    """Make every row's postings in the word index match its caption (rows written before
    the index existed, or left half-done by a crash): one transaction per row that needs it,
    no provider call, nothing enqueued."""
    stats = ReindexStats()
    for row in captions.iter_rows(bucket, prefix):
        stats.rows += 1
        outcome = _reindex_row(store, row, dry_run)
        setattr(stats, outcome, getattr(stats, outcome) + 1)
        if on_progress and stats.rows % 100 == 0:
            on_progress(stats)
    if on_progress:
        on_progress(stats)
    return stats


def _reindex_row(store: CaptionStore, row: dict[str, Any], dry_run: bool) -> str:
    if dry_run:
        return store.reindex_plan(row)
    outcome = store.reindex(row)
    if outcome == "changed":  # the index read may lag the table: try once with the row as it is
        fresh = store.get(row["bucket"], row["key"])
        outcome = store.reindex(fresh) if fresh else "changed"
    return outcome
