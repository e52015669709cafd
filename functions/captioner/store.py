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
