"""DynamoDB adapter for the captions table: one item per object (bucket + key).

Key schema (documented in the README): partition key ``bucket``, sort key ``key``; global
secondary indexes ``by-bucket-updated`` (bucket, updated_at) and ``by-status-updated``
(status, updated_at). Every write is conditional, so a duplicate or out-of-order delivery
never overwrites the row of a newer object version.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

INDEX_BY_BUCKET = "by-bucket-updated"
INDEX_BY_STATUS = "by-status-updated"

_ser = TypeSerializer()
_deser = TypeDeserializer()


class Status(StrEnum):
    PENDING = "PENDING"
    CAPTIONED = "CAPTIONED"
    REJECTED = "REJECTED"
    SKIPPED = "SKIPPED"
    FAILED = "FAILED"
    DELETED = "DELETED"


class ClaimOutcome(StrEnum):
    CLAIMED = "CLAIMED"  # ours to process
    DONE = "DONE"  # this version is already captioned: do not pay again
    STALE = "STALE"  # the row belongs to a newer version (larger S3 sequencer)
    BUSY = "BUSY"  # another delivery of this version holds a live lease


@dataclass(frozen=True)
class ObjectRef:
    """One object version, as far as the event (or a HEAD) told us."""

    bucket: str
    key: str
    version_id: str | None
    etag: str | None
    size: int | None
    sequencer: str | None = None

    @property
    def revision(self) -> str:
        """What identifies this version: its version id, or its ETag in unversioned buckets."""
        return self.version_id or f"etag:{self.etag or ''}"


@dataclass(frozen=True)
class Claim:
    outcome: ClaimOutcome
    previous: dict[str, Any] | None  # the row as it was before (or that blocked) the claim

    def same_revision(self, ref: ObjectRef) -> bool:
        return bool(self.previous) and self.previous.get("revision") == ref.revision


def now_iso(clock: Callable[[], datetime] | None = None) -> str:
    """ISO-8601 UTC with milliseconds and a Z: sorts as text, which the indexes rely on."""
    now = clock() if clock else datetime.now(UTC)
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def sequencer_order(sequencer: str | None) -> str | None:
    """S3 sequencers are hex strings where the greater value is later; pad them so the
    comparison DynamoDB does (on strings) is the numeric one."""
    if not sequencer:
        return None
    s = sequencer.strip().upper()
    return s.rjust(64, "0")


class CaptionStore:
    def __init__(
        self,
        table_name: str,
        dynamodb_client: Any,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.table_name = table_name
        self._db = dynamodb_client
        self._clock = clock

    def now(self) -> str:
        return now_iso(self._clock)

    def get(self, bucket: str, key: str) -> dict[str, Any] | None:
        resp = self._db.get_item(
            TableName=self.table_name, Key=_key(bucket, key), ConsistentRead=True
        )
        return _from_item(resp["Item"]) if "Item" in resp else None

    def claim(self, ref: ObjectRef, lease_until: str, provider: str) -> Claim:
        """Mark the row PENDING for this version, unless a newer version, a finished caption
        of this version, or a live lease of another delivery says not to. One round trip:
        the old row comes back either way (it holds the provider job id of an earlier try)."""
        now = self.now()
        names = {"#b": "bucket", "#rev": "revision", "#st": "status", "#lease": "lease_until",
                 "#prov": "provider"}  # fmt: skip
        values: dict[str, Any] = {
            ":rev": ref.revision,
            ":prov": provider,
            ":captioned": Status.CAPTIONED.value,
            ":pending": Status.PENDING.value,
            ":now": now,
            ":lease": lease_until,
            ":one": 1,
            ":zero": 0,
        }
        names |= {"#upd": "updated_at", "#cre": "created_at", "#att": "attempts"}
        sets = [
            "#st = :pending",
            "#rev = :rev",
            "#lease = :lease",
            "#upd = :now",
            "#cre = if_not_exists(#cre, :now)",
            "#att = if_not_exists(#att, :zero) + :one",
        ]
        blocked = [
            "(#rev = :rev AND #st = :captioned AND #prov = :prov)",
            "(#rev = :rev AND #st = :pending AND #lease > :now)",
        ]
        order = sequencer_order(ref.sequencer)
        if order:
            names["#seq"] = "sequencer_order"
            values[":seq"] = order
            values[":sequencer"] = ref.sequencer
            names["#sequencer"] = "sequencer"
            sets += ["#seq = :seq", "#sequencer = :sequencer"]
            blocked.append("#seq > :seq")
        for attr, val in (("version_id", ref.version_id), ("etag", ref.etag), ("size", ref.size)):
            if val is not None:
                names[f"#{attr}"] = attr
                values[f":{attr}"] = val
                sets.append(f"#{attr} = :{attr}")
        condition = f"attribute_not_exists(#b) OR NOT ({' OR '.join(blocked)})"
        try:
            resp = self._db.update_item(
                TableName=self.table_name,
                Key=_key(ref.bucket, ref.key),
                UpdateExpression="SET " + ", ".join(sets),
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=_values(values),
                ReturnValues="ALL_OLD",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if not _is_condition_failure(exc):
                raise
            old = _from_item(exc.response.get("Item") or {})
            return Claim(_why_blocked(old, ref, order, provider), old)
        old = _from_item(resp["Attributes"]) if resp.get("Attributes") else None
        return Claim(ClaimOutcome.CLAIMED, old)

    def record_job(self, ref: ObjectRef, job_id: str, provider: str) -> None:
        """Remember a queued provider job so a retry polls it instead of paying again."""
        fields = {"provider_job_id": job_id, "provider_job_rev": ref.revision, "provider": provider,
                  "updated_at": self.now()}  # fmt: skip
        self._update_own(ref, fields, [])

    def finish(self, ref: ObjectRef, fields: Mapping[str, Any], remove: list[str]) -> bool:
        """Write the outcome for this version. False when a newer version took the row."""
        return self._update_own(ref, {**fields, "updated_at": self.now()}, remove)

    def mark_deleted(
        self, bucket: str, key: str, version_id: str | None, sequencer: str | None, whole: bool
    ) -> bool:
        """Mark the row DELETED (it is kept: its caption and history stay queryable).

        ``whole`` is True when the object is gone from listings (a delete marker, or an
        unversioned delete); a delete of one specific old version only counts when it is the
        version the row describes. Nothing is created for objects the table never saw.
        """
        now = self.now()
        names = {"#b": "bucket", "#st": "status", "#upd": "updated_at", "#del": "deleted_at",
                 "#lease": "lease_until"}  # fmt: skip
        values: dict[str, Any] = {":deleted": Status.DELETED.value, ":now": now}
        sets = ["#st = :deleted", "#upd = :now", "#del = :now"]
        conds = ["attribute_exists(#b)"]
        order = sequencer_order(sequencer)
        if order:
            names["#seq"] = "sequencer_order"
            values[":seq"] = order
            values[":sequencer"] = sequencer
            names["#sequencer"] = "sequencer"
            conds.append("(attribute_not_exists(#seq) OR #seq < :seq)")
            sets += ["#seq = :seq", "#sequencer = :sequencer"]
        if not whole and version_id:
            names["#vid"] = "version_id"
            values[":vid"] = version_id
            conds.append("#vid = :vid")
        return self._conditional_update(
            bucket, key, "SET " + ", ".join(sets) + " REMOVE #lease", " AND ".join(conds),
            names, values,
        )  # fmt: skip

    def _update_own(self, ref: ObjectRef, fields: Mapping[str, Any], remove: list[str]) -> bool:
        names = {"#rev": "revision"}
        values: dict[str, Any] = {":rev": ref.revision}
        sets = []
        for i, (attr, val) in enumerate(fields.items()):
            if val is None:
                remove = [*remove, attr]
                continue
            names[f"#f{i}"] = attr
            values[f":f{i}"] = val
            sets.append(f"#f{i} = :f{i}")
        condition = "#rev = :rev"
        order = sequencer_order(ref.sequencer)
        if order:
            names["#seq"] = "sequencer_order"
            values[":seq"] = order
            condition += " AND (attribute_not_exists(#seq) OR #seq <= :seq)"
        expr = "SET " + ", ".join(sets)
        removable = [a for a in dict.fromkeys(remove) if a not in fields or fields[a] is None]
        if removable:
            for j, attr in enumerate(removable):
                names[f"#r{j}"] = attr
            expr += " REMOVE " + ", ".join(f"#r{j}" for j in range(len(removable)))
        return self._conditional_update(ref.bucket, ref.key, expr, condition, names, values)

    def _conditional_update(
        self,
        bucket: str,
        key: str,
        expression: str,
        condition: str,
        names: dict[str, str],
        values: dict[str, Any],
    ) -> bool:
        """UpdateItem; False (not an error) when the condition says the row is not ours."""
        try:
            self._db.update_item(
                TableName=self.table_name,
                Key=_key(bucket, key),
                UpdateExpression=expression,
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=_values(values),
            )
        except ClientError as exc:
            if _is_condition_failure(exc):
                return False
            raise
        return True


def _why_blocked(
    old: dict[str, Any], ref: ObjectRef, order: str | None, provider: str
) -> ClaimOutcome:
    if order and old.get("sequencer_order", "") > order:
        return ClaimOutcome.STALE
    same = old.get("revision") == ref.revision
    if same and old.get("status") == Status.CAPTIONED and old.get("provider") == provider:
        return ClaimOutcome.DONE
    return ClaimOutcome.BUSY


def _is_condition_failure(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


def _key(bucket: str, key: str) -> dict[str, Any]:
    return {"bucket": {"S": bucket}, "key": {"S": key}}


def _values(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _ser.serialize(_to_dynamo(v)) for k, v in values.items()}


def _to_dynamo(value: Any) -> Any:
    if isinstance(value, float):
        return Decimal(str(value))
    if isinstance(value, list):
        return [_to_dynamo(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_dynamo(v) for k, v in value.items()}
    return value


def _from_item(item: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _plain(_deser.deserialize(v)) for k, v in item.items()}


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def from_item(item: Mapping[str, Any]) -> dict[str, Any]:
    """A plain-Python row from a raw DynamoDB item (for readers such as the CLI)."""
    return _from_item(item)


# == Reads =====================================================================================
# The table as its readers (the command line tool) see it: one row by key, many rows by key,
# rows newest first through the indexes (never a Scan), counts per status, and a Scan only to
# search captions. The write path above never calls these.
# (Imports kept with this block while the write path above is being rewritten.)

import time  # noqa: E402

from captioner.errors import CaptionerError  # noqa: E402

STATUSES: tuple[Status, ...] = tuple(Status)
# What captioning a version ends in: the row stays so until the object changes.
FINAL_STATUSES = frozenset({Status.CAPTIONED, Status.REJECTED, Status.SKIPPED, Status.FAILED})
BATCH_GET_MAX = 100  # BatchGetItem's limit per request


class TableBusy(CaptionerError):
    """DynamoDB kept returning some keys unprocessed (throttling)."""


@dataclass(frozen=True)
class RowQuery:
    """Which rows ``CaptionReader.list_rows`` returns, newest first."""

    bucket: str | None = None
    prefix: str = ""  # of the key; "" = the whole bucket
    status: str | None = None
    since: str | None = None  # an ``updated_at`` value (``now_iso``'s format): rows at or after
    limit: int | None = 50  # None = every row


class CaptionReader:
    def __init__(self, table_name: str, dynamodb_client: Any) -> None:
        self.table_name = table_name
        self._db = dynamodb_client

    def get(self, bucket: str, key: str) -> dict[str, Any] | None:
        """The row of one object (a consistent read), or None."""
        return CaptionStore(self.table_name, self._db).get(bucket, key)

    def get_many(
        self, bucket: str, keys: list[str], attributes: tuple[str, ...] = ()
    ) -> dict[str, dict[str, Any]]:
        """Rows by key (BatchGetItem, 100 per request), keyed by object key; ``attributes``
        limits what is read (``bucket`` and ``key`` always come back)."""
        wanted = list(dict.fromkeys(keys))
        spec: dict[str, Any] = {"ConsistentRead": True}
        if attributes:
            names = ["bucket", "key", *attributes]
            spec["ProjectionExpression"] = ", ".join(f"#a{i}" for i in range(len(names)))
            spec["ExpressionAttributeNames"] = {f"#a{i}": n for i, n in enumerate(names)}
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(wanted), BATCH_GET_MAX):
            chunk = wanted[start : start + BATCH_GET_MAX]
            request = {self.table_name: {**spec, "Keys": [_key(bucket, k) for k in chunk]}}
            for item in self._batch_get(request):
                row = _from_item(item)
                found[row["key"]] = row
        return found

    def _batch_get(self, request: dict[str, Any]) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        for attempt in range(8):
            resp = self._db.batch_get_item(RequestItems=request)
            for table_items in resp.get("Responses", {}).values():
                items += table_items
            request = resp.get("UnprocessedKeys") or {}
            if not request:
                return items
            time.sleep(min(0.05 * 2**attempt, 2.0))  # throttled: back off as AWS asks
        raise TableBusy("DynamoDB kept some keys unprocessed (throttling); try again later")

    def list_rows(self, query: RowQuery) -> list[dict[str, Any]]:
        """Rows newest first. With a status, the status index (bucket and prefix become
        filters: rows of one status, e.g. FAILED, are usually the smaller set); otherwise the
        bucket index, with the prefix as a filter."""
        if not query.status and not query.bucket:
            raise ValueError("a query needs a bucket or a status")
        names: dict[str, str] = {}
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
            "TableName": self.table_name,
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
        rows: list[dict[str, Any]] = []
        for page in self._db.get_paginator("query").paginate(**args):
            for item in page.get("Items", []):
                if query.limit and len(rows) >= query.limit:
                    return rows
                rows.append(_from_item(item))
        return rows

    def search(
        self,
        text: str,
        *,
        limit: int | None = None,
        on_page: Callable[[int], None] | None = None,
    ) -> list[dict[str, Any]]:
        """Rows whose caption contains every word of ``text`` (case-insensitive). A Scan: it
        reads the whole table. ``on_page`` gets the number of rows read by each page."""
        words = [w.lower() for w in text.split()]
        if not words:
            raise ValueError("search needs some text")
        pages = self._db.get_paginator("scan").paginate(
            TableName=self.table_name,
            FilterExpression="attribute_exists(#c)",  # transfer less; the cost is the same
            ExpressionAttributeNames={"#c": "caption"},
        )
        rows: list[dict[str, Any]] = []
        for page in pages:
            if on_page:
                on_page(int(page.get("ScannedCount", 0)))
            for item in page.get("Items", []):
                row = _from_item(item)
                caption = str(row.get("caption", "")).lower()
                if all(w in caption for w in words):
                    if limit and len(rows) >= limit:
                        return rows
                    rows.append(row)
        return rows

    def count_by_status(self) -> dict[str, int]:
        """Rows per status: a COUNT query per status on the status index (it reads, and is
        billed for, every index entry of that status)."""
        counts = {}
        for status in STATUSES:
            pages = self._db.get_paginator("query").paginate(
                TableName=self.table_name,
                IndexName=INDEX_BY_STATUS,
                KeyConditionExpression="#s = :s",
                ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={":s": {"S": status.value}},
                Select="COUNT",
            )
            counts[status.value] = sum(int(p.get("Count", 0)) for p in pages)
        return counts

    def approximate_count(self) -> int | None:
        """DescribeTable's ItemCount (AWS refreshes it about every six hours); None if unknown."""
        try:
            table = self._db.describe_table(TableName=self.table_name)["Table"]
            return int(table.get("ItemCount", 0)) or None
        except (KeyError, ValueError):
            return None
