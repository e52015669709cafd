"""Reading the captions table the way it is meant to be read: by key, or newest first
through its indexes (``by-bucket-updated``, ``by-status-updated``); a Scan only for search."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from captioner.store import INDEX_BY_BUCKET, INDEX_BY_STATUS, Status, from_item
from captioner_tools.errors import CliError

FINAL_STATUSES = frozenset({"CAPTIONED", "REJECTED", "SKIPPED", "FAILED"})
STATUSES = tuple(s.value for s in Status)
BATCH_GET_MAX = 100  # BatchGetItem's limit per request


def get_row(ddb: Any, table: str, bucket: str, key: str) -> dict[str, Any] | None:
    resp = ddb.get_item(TableName=table, Key=_key(bucket, key), ConsistentRead=True)
    return from_item(resp["Item"]) if "Item" in resp else None


def get_rows(
    ddb: Any, table: str, bucket: str, keys: Iterable[str], projection: Iterable[str] = ()
) -> dict[str, dict[str, Any]]:
    """Rows by key with BatchGetItem (100 per request, unprocessed keys retried)."""
    wanted = list(dict.fromkeys(keys))
    found: dict[str, dict[str, Any]] = {}
    spec: dict[str, Any] = {"ConsistentRead": True}
    names = ["bucket", "key", *projection]
    if projection:
        spec["ProjectionExpression"] = ", ".join(f"#a{i}" for i in range(len(names)))
        spec["ExpressionAttributeNames"] = {f"#a{i}": n for i, n in enumerate(names)}
    for start in range(0, len(wanted), BATCH_GET_MAX):
        request = {
            table: {
                **spec,
                "Keys": [_key(bucket, k) for k in wanted[start : start + BATCH_GET_MAX]],
            }
        }
        for item in _batch_get(ddb, request):
            row = from_item(item)
            found[row["key"]] = row
    return found


def _batch_get(ddb: Any, request: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for attempt in range(8):
        resp = ddb.batch_get_item(RequestItems=request)
        for items in resp.get("Responses", {}).values():
            yield from items
        request = resp.get("UnprocessedKeys") or {}
        if not request:
            return
        time.sleep(min(0.05 * 2**attempt, 2.0))  # throttled: back off as AWS asks
    raise CliError("DynamoDB kept some keys unprocessed (throttling); try again later")


@dataclass(frozen=True)
class ListQuery:
    bucket: str | None = None
    prefix: str = ""
    status: str | None = None
    since: str | None = None  # an updated_at value (ISO, UTC, ms, Z)
    limit: int | None = 50


def list_rows(ddb: Any, table: str, query: ListQuery) -> Iterator[dict[str, Any]]:
    """Rows newest first. With a status, the status index (bucket/prefix become filters:
    rows of one status are usually the smaller set, e.g. FAILED); otherwise the bucket
    index, with the prefix as a filter. Never a Scan."""
    if not query.status and not query.bucket:
        raise CliError("list needs a bucket (s3://bucket/prefix, --bucket) or --status")
    names = {}
    values: dict[str, Any] = {}
    filters = []
    if query.status:
        index, names["#p"], values[":p"] = INDEX_BY_STATUS, "status", {"S": query.status}
        if query.bucket:
            names["#b"], values[":b"] = "bucket", {"S": query.bucket}
            filters.append("#b = :b")
    else:
        index, names["#p"], values[":p"] = INDEX_BY_BUCKET, "bucket", {"S": query.bucket}
    if query.prefix:
        names["#k"], values[":k"] = "key", {"S": query.prefix}
        filters.append("begins_with(#k, :k)")
    condition = "#p = :p"
    if query.since:
        condition += " AND #u >= :since"
        names["#u"], values[":since"] = "updated_at", {"S": query.since}
    args: dict[str, Any] = {
        "TableName": table,
        "IndexName": index,
        "KeyConditionExpression": condition,
        "ExpressionAttributeNames": names,
        "ExpressionAttributeValues": values,
        "ScanIndexForward": False,
    }
    if filters:
        args["FilterExpression"] = " AND ".join(filters)
    if query.limit:  # a page no bigger than needed (filters drop rows after the read)
        args["Limit"] = min(query.limit * (4 if filters else 1), 1000)
    yield from _limited(_pages(ddb.get_paginator("query").paginate(**args)), query.limit)


def search_rows(
    ddb: Any,
    table: str,
    text: str,
    *,
    limit: int | None = None,
    on_page: Callable[[int], None] | None = None,
) -> Iterator[dict[str, Any]]:
    """Rows whose caption contains every word of ``text`` (case-insensitive). A Scan: it
    reads the whole table. ``on_page`` gets the number of rows read in each page."""
    words = [w.lower() for w in text.split()]
    if not words:
        raise CliError("search needs some text")
    pages = ddb.get_paginator("scan").paginate(
        TableName=table,
        FilterExpression="attribute_exists(#c)",  # transfer less; the cost is the same
        ExpressionAttributeNames={"#c": "caption"},
    )

    def matches() -> Iterator[dict[str, Any]]:
        for page in pages:
            if on_page:
                on_page(int(page.get("ScannedCount", 0)))
            for item in page.get("Items", []):
                row = from_item(item)
                caption = str(row.get("caption", "")).lower()
                if all(w in caption for w in words):
                    yield row

    yield from _limited(matches(), limit)


def count_by_status(ddb: Any, table: str) -> dict[str, int]:
    """Rows per status: a COUNT query per status on the status index (it reads, and is
    billed for, every index entry of that status)."""
    counts = {}
    for status in STATUSES:
        pages = ddb.get_paginator("query").paginate(
            TableName=table,
            IndexName=INDEX_BY_STATUS,
            KeyConditionExpression="#s = :s",
            ExpressionAttributeNames={"#s": "status"},
            ExpressionAttributeValues={":s": {"S": status}},
            Select="COUNT",
        )
        counts[status] = sum(int(p.get("Count", 0)) for p in pages)
    return counts


def approximate_row_count(ddb: Any, table: str) -> int | None:
    """DescribeTable's ItemCount (AWS refreshes it about every six hours)."""
    try:
        return int(ddb.describe_table(TableName=table)["Table"].get("ItemCount", 0)) or None
    except (KeyError, ValueError):
        return None


def parse_since(text: str, now: datetime | None = None) -> str:
    """An ISO date/time (naive = UTC) or an age (``30m``, ``6h``, ``2d``, ``1w``) → the
    ``updated_at`` format, which sorts as text."""
    now = now or datetime.now(UTC)
    age = re.fullmatch(r"\s*(\d+)\s*([smhdw])\s*", text)
    if age:
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
        try:
            when = now - timedelta(**{unit[age.group(2)]: int(age.group(1))})
        except (OverflowError, ValueError):
            raise CliError(f"--since {text!r}: that age reaches before year 1") from None
    else:
        try:
            when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        except ValueError:
            raise CliError(
                f"--since {text!r}: expected an ISO date/time (2026-11-25, "
                "2026-11-25T10:00:00Z) or an age (30m, 6h, 2d)"
            ) from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
    when = when.astimezone(UTC)
    # Zero-padded year: the index compares these as text (year 999 must sort before 2026).
    return (
        f"{when.year:04d}" + when.strftime("-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"
    )


def _pages(pages: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for page in pages:
        for item in page.get("Items", []):
            yield from_item(item)


def _limited[T](rows: Iterable[T], limit: int | None) -> Iterator[T]:
    for i, row in enumerate(rows):
        if limit and i >= limit:
            return
        yield row


def _key(bucket: str, key: str) -> dict[str, Any]:
    return {"bucket": {"S": bucket}, "key": {"S": key}}
