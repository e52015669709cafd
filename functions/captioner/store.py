"""DynamoDB adapter for the captions table: one item per object (bucket + key).

Key schema (documented in the README): partition key ``bucket``, sort key ``key``; global
secondary indexes ``by-bucket-updated`` (bucket, updated_at) and ``by-status-updated``
(status, updated_at). Every write is conditional, so a duplicate or out-of-order delivery
never overwrites the row of a newer object version.

How a delivery owns a row (each step is one conditional UpdateItem):

    delivery A (v1)                       delivery B (v1, a duplicate)        delete
    claim: PENDING, lease, token a  --->  claim fails: live lease (BUSY)
    provider call (paid)
    save_result: CAPTIONED, caption  (only while token = a)
    tags                                  claim fails: CAPTIONED (DONE)
    finish: tag_status, lease removed                                       DELETED, token removed
                                                                            (a late write of A fails)

The lease runs to the end of A's invocation (plus clock skew), so it cannot lapse while A
is alive; the token fences A's later writes, so a delete or a newer version that took the
row in between is never overwritten.

The word index (``captioner.index``) lives in this table too, under partition keys no
bucket can have. ``save_result`` writes a row's postings with the row in one transaction
(fenced like the row, and by the index state the row records); ``mark_deleted`` removes
them after marking the row. ``save_tag`` and the claim never touch them.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

from captioner import index
from captioner.errors import CaptionerError
from captioner.index import IndexState
from captioner.tags import TAG_SETTLED, TagStatus

INDEX_BY_BUCKET = "by-bucket-updated"
INDEX_BY_STATUS = "by-status-updated"
EVENT_DUE = "event_due"  # internal: see RESULT_FIELDS
# internal: until when the delivery that wrote ``event_due`` alone may publish it (announce.py)
EVENT_LEASE = "event_lease_until"
# Longer than a PutEvents with botocore's retries, shorter than the queue's visibility
# timeout (360 s): a redelivery after a dead instance finds the lease run out.
EVENT_LEASE_S = 60.0
# Who wrote the row's caption: ``model`` (the pipeline's provider) or ``human`` (``captioner
# edit``, the gallery). A human caption of a version is never replaced by the pipeline unless
# a message asks with ``force`` (``is_human_caption``); rows written before the attribute
# existed have none and mean ``model``. ``edited_at``: when a person last set it.
CAPTION_SOURCE = "caption_source"
EDITED_AT = "edited_at"
HUMAN = "human"
MODEL = "model"

# Called with the row as written when a write makes a status change that must be announced.
Announce = Callable[[dict[str, Any]], None]

log = logging.getLogger(__name__)
_ser = TypeSerializer()
_deser = TypeDeserializer()


class Status(StrEnum):
    """A row's status: what happened to the newest version of the object."""

    PENDING = "PENDING"
    CAPTIONED = "CAPTIONED"
    REJECTED = "REJECTED"
    SKIPPED = "SKIPPED"
    FAILED = "FAILED"
    DELETED = "DELETED"


# Statuses after which nothing more happens to a version (unless it is redriven or backfilled).
FINAL_STATUSES = frozenset(
    {Status.CAPTIONED, Status.REJECTED, Status.SKIPPED, Status.FAILED, Status.DELETED}
)


class Unchanged(StrEnum):
    """Why a message was consumed without writing a row."""

    IGNORED = "IGNORED"  # nothing to caption (tagging event, folder marker, gone object)
    DUPLICATE = "DUPLICATE"  # this version is already captioned
    STALE = "STALE"  # a newer version (or a delete) owns the row


class ClaimOutcome(StrEnum):
    CLAIMED = "CLAIMED"  # ours to process
    DONE = "DONE"  # this version is already captioned (and tagged): do not pay again
    STALE = "STALE"  # the row belongs to a newer version (larger S3 sequencer)
    BUSY = "BUSY"  # another delivery of this version holds a live lease
    # the row is another version's, written from an event without a sequencer (a backfill):
    # sequencers cannot order the two, so the caller checks which version is current
    UNORDERED = "UNORDERED"


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
    ref: ObjectRef
    previous: dict[str, Any] | None  # the row before the claim (or the row that blocked it)
    token: str = ""  # the fence: every later write of this delivery requires it

    @property
    def same_revision(self) -> bool:
        """The previous row described this very version (a retry or a duplicate)."""
        prev = self.previous
        return prev is not None and prev.get("revision") == self.ref.revision

    @property
    def attempts(self) -> int:
        """Deliveries that claimed this version, this one included."""
        before = int((self.previous or {}).get("attempts", 0)) if self.same_revision else 0
        return before + 1

    @property
    def job_id(self) -> str | None:
        """The provider job an earlier delivery queued for this version: poll it, free."""
        prev = self.previous or {}
        if self.same_revision and prev.get("provider_job_rev") == self.ref.revision:
            return prev.get("provider_job_id")
        return None

    @property
    def job_provider(self) -> str | None:
        """The provider whose queued job may still deliver this version's caption (only it
        can poll the job); None when there is none, or its caption is on the row already."""
        prev = self.previous or {}
        if not self.job_id or prev.get("status") == Status.CAPTIONED:
            return None
        return prev.get("provider")

    @property
    def our_tag(self) -> str | None:
        """The caption tag value an earlier delivery wrote: ours to replace.

        In an unversioned bucket an upload replaces the object and its tags, so a caption
        tag on the new object equal to the value we wrote for the old one can only be our
        own late write (see ``Pipeline._tag``): ours to replace too."""
        prev = self.previous or {}
        if self.same_revision or (prev and self.ref.version_id is None):
            return prev.get("tag_value")
        return None

    def replaced_caption(self, provider: str | None) -> dict[str, Any] | None:
        """The row with this version's caption when this delivery is a re-caption by another
        provider: that caption stays until the new one is written."""
        prev = self.previous or {}
        if (
            provider
            and self.same_revision
            and prev.get("caption")
            and (prev.get("provider") != provider)
        ):
            return prev
        return None

    def recaption_job(self, provider: str) -> str | None:
        """The job an earlier delivery of this re-caption queued at ``provider``."""
        prev = self.previous or {}
        if self.same_revision and prev.get("recaption_provider") == provider:
            return prev.get("recaption_job_id")
        return None

    def reusable_caption(self, provider: str | None) -> dict[str, Any] | None:
        """The paid caption of this version, when only its tag is left to do."""
        prev = self.previous or {}
        # Not the status: a delivery that was finishing the tag and died left it PENDING.
        # A caption on the row of this revision is always a paid one (a newer version's
        # claim clears it, and a retry never records over it).
        if not (self.same_revision and prev.get("caption")):
            return None
        if provider and prev.get("provider") != provider:
            return None
        return prev


@dataclass(frozen=True)
class Result:
    """What an attempt at one version ended with: every result field of the row.

    Fields left ``None`` are removed from the row, so nothing of an earlier attempt or an
    earlier version survives next to this one. The field names are the row's attribute names.
    """

    status: Status
    reason: str | None = None
    last_error: str | None = None
    caption: str | None = None
    provider: str | None = None
    model: str | None = None
    labels: list[dict[str, Any]] | None = None
    length: str | None = None
    format: str | None = None
    width: int | None = None
    height: int | None = None
    provider_latency_ms: float | None = None
    provider_job_id: str | None = None
    tag_status: str | None = None
    tag_value: str | None = None
    fallback_reason: str | None = None  # why a fallback provider made this result
    # the provider a message asked for by name (a backfill's --provider): the budget sweep
    # asks for it again when it re-queues a parked row
    requested_provider: str | None = None
    # A re-caption by another provider that has not produced its caption yet: the row keeps
    # the caption it has (and its tag and index entries) and says how the re-caption stands.
    recaption_status: str | None = None  # PENDING (waiting, retrying, over budget) or FAILED
    recaption_reason: str | None = None
    recaption_provider: str | None = None
    recaption_job_id: str | None = None  # the re-caption's queued job: polled, never paid again


# ``event_due``: the final status whose "Caption Status Changed" event is owed (written with
# the status, removed once PutEvents succeeded; see announce.py). ``requeued_at``: the budget
# sweep's mark (sweep.py); any result written removes it.
RESULT_FIELDS = (
    *(f.name for f in fields(Result)),
    "provider_job_rev",
    "deleted_at",
    EVENT_DUE,
    EVENT_LEASE,
    "requeued_at",
    CAPTION_SOURCE,
    EDITED_AT,
)


def forced_previous(row: dict[str, Any] | None) -> dict[str, Any] | None:
    """The row as a forced re-caption's claim sees it: a finished caption (a person's, or
    the model's with its tag settled) and its provider job are not reused, so the provider
    is asked again. (A forced message delivered twice may therefore pay twice.)"""
    if row is None:
        return None
    finished = row.get("status") == Status.CAPTIONED and row.get("tag_status") in TAG_SETTLED
    if not (finished or is_human_caption(row)):
        return row  # unfinished: its paid caption or queued job is still reused
    return {
        k: v for k, v in row.items() if k not in ("caption", "provider_job_id", "provider_job_rev")
    }


def is_human_caption(row: Mapping[str, Any] | None) -> bool:
    """The row's caption was written by a person: the pipeline leaves it alone (same
    version) unless a message explicitly forces a re-caption."""
    return row is not None and row.get(CAPTION_SOURCE) == HUMAN and bool(row.get("caption"))


def now_iso(clock: Callable[[], datetime] | None = None) -> str:
    """ISO-8601 UTC with milliseconds and a Z: sorts as text, which the indexes rely on."""
    now = clock() if clock else datetime.now(UTC)
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


# Sequencer order values start with this mark. Rows written before version 0.2 hold
# left-padded values without it (a wrong order: see ``sequencer_order``); they are rewritten
# from the raw ``sequencer`` the first time a write meets them.
_ORDER_MARK = "R"
# The revision of a row made by a delete that arrived before its object's create.
TOMBSTONE = "deleted"


def sequencer_order(sequencer: str | None) -> str | None:
    """A value whose string order is S3's event order.

    AWS: "The sequencers can be different lengths. To compare these values, right-pad the
    shorter value with zeros, and then do a lexicographical comparison." Padding every value
    on the right to one width does exactly that, and DynamoDB compares strings byte-wise.
    """
    if not sequencer or not sequencer.strip():
        return None
    return _ORDER_MARK + sequencer.strip().upper().ljust(64, "0")


def is_legacy_order(order: Any) -> bool:
    return isinstance(order, str) and not order.startswith(_ORDER_MARK)


class CaptionStore:
    def __init__(
        self,
        table_name: str,
        dynamodb_client: Any,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.table_name = table_name
        self._db = dynamodb_client
        self._clock = clock or (lambda: datetime.now(UTC))

    def now(self) -> str:
        return now_iso(self._clock)

    def get(self, bucket: str, key: str) -> dict[str, Any] | None:
        resp = self._db.get_item(
            TableName=self.table_name, Key=_key(bucket, key), ConsistentRead=True
        )
        return _from_item(resp["Item"]) if "Item" in resp else None

    # -- claiming a version ----------------------------------------------------------------

    def claim(
        self,
        ref: ObjectRef,
        lease_seconds: float,
        provider: str | None = None,
        *,
        current: bool = False,
        force: bool = False,
    ) -> Claim:
        """Mark the row PENDING for this version under a lease and a fresh fence token.

        Refused (with the blocking row) when a newer version owns the row (STALE), this
        version is captioned and tagged (DONE; ``provider`` names an explicitly requested
        provider: then only its own caption counts), or another delivery of this version
        holds a live lease (BUSY). A row of an older version is taken over in a second
        write that starts the new version afresh (attempts 1, no result fields) — unless
        only one of the two versions has a sequencer: then the caller must first make sure
        this version is the current one (UNORDERED) and claim again with ``current``.

        A human caption of this version counts as DONE too, whatever the provider, unless
        ``force`` (an explicit re-caption: then a finished caption of either source is
        claimed and replaced)."""
        takeover: str | None = None  # the older revision we expect to replace
        for _ in range(4):
            token = uuid.uuid4().hex
            lease = now_iso(lambda: self._clock() + timedelta(seconds=lease_seconds))
            try:
                old = self._claim_write(ref, token, lease, provider, takeover, current, force)
            except _Refused as refused:
                old = refused.row
                if is_legacy_order(old.get("sequencer_order")):
                    self._migrate_order(ref.bucket, ref.key, old)
                    continue
                verdict = _why_blocked(old, ref, provider, force)
                if verdict is ClaimOutcome.UNORDERED and current:
                    verdict = None
                if verdict is not None:
                    return Claim(verdict, ref, old)
                takeover = old.get("revision")
                continue
            return Claim(ClaimOutcome.CLAIMED, ref, forced_previous(old) if force else old, token)
        return Claim(ClaimOutcome.BUSY, ref, None)  # rows changing under us: come back later

    def _claim_write(
        self,
        ref: ObjectRef,
        token: str,
        lease: str,
        provider: str | None,
        takeover: str | None,
        current: bool = False,
        force: bool = False,
    ) -> dict[str, Any] | None:
        w = _Write()
        w.set("status", Status.PENDING.value)
        w.set("revision", ref.revision)
        w.set("lease_until", lease)
        w.set("claim_token", token)
        w.set("updated_at", self.now())
        w.set_expr("created_at", f"if_not_exists({w.name('created_at')}, {w.value(self.now())})")
        for attr, val in (("version_id", ref.version_id), ("etag", ref.etag), ("size", ref.size)):
            w.set(attr, val)
        order = sequencer_order(ref.sequencer)
        if order:
            w.set("sequencer_order", order)
            w.set("sequencer", ref.sequencer)
        elif takeover is not None:
            # A version known only from S3 (a backfill, an event whose sequencer orders
            # nothing) takes the row: the older version's order must not stay, or that
            # version's own late event would look newer and take the row back.
            w.remove("sequencer_order")
            w.remove("sequencer")
        seq_ok = _seq_condition(w, order, "<=")
        if takeover is None:
            att = w.name("attempts")
            w.set_expr("attempts", f"if_not_exists({att}, {w.value(0)}) + {w.value(1)}")
            live = f"{w.name('lease_until')} > {w.value(self.now())}"
            same = f"{w.name('revision')} = {w.value(ref.revision)}"
            if not current:
                # a version deleted since is claimed again only once S3 says it is current
                # (an "undelete"): its create event, delivered late, is older than the delete
                same += f" AND {w.name('status')} <> {w.value(Status.DELETED.value)}"
            finished = "" if force else f" AND NOT ({_done_condition(w, provider)})"
            w.condition = (
                f"attribute_not_exists({w.name('bucket')}) OR "
                f"({same}{finished} AND NOT ({live}) AND {seq_ok})"
            )
        else:
            # A newer version takes the row: nothing of the older one's result stays.
            w.set("attempts", 1)
            for attr in RESULT_FIELDS:
                w.remove(attr)
            w.condition = f"{w.name('revision')} = {w.value(takeover)} AND {seq_ok}"
        attrs = self._update(ref.bucket, ref.key, w, returns="ALL_OLD")
        return attrs or None

    def _migrate_order(self, bucket: str, key: str, row: dict[str, Any]) -> None:
        """Rewrite a pre-0.2 (left-padded) sequencer order from the raw sequencer, unless
        someone changed it meanwhile (then the next try sees their value)."""
        w = _Write()
        order = sequencer_order(row.get("sequencer"))
        if order:
            w.set("sequencer_order", order)
        else:
            w.remove("sequencer_order")
        w.condition = f"{w.name('sequencer_order')} = {w.value(row['sequencer_order'])}"
        with contextlib.suppress(_Refused):
            self._update(bucket, key, w)

    # -- writes of the claim holder --------------------------------------------------------

    def record_job(
        self, claim: Claim, job_id: str, provider: str, *, recaption: bool = False
    ) -> bool:
        """Remember a queued provider job so a retry polls it instead of paying again (a
        re-caption's job beside the caption it will replace, which stays as it is)."""
        w = self._fenced(claim)
        if recaption:
            w.set("recaption_job_id", job_id)
            w.set("recaption_provider", provider)
        else:
            w.set("provider_job_id", job_id)
            w.set("provider_job_rev", claim.ref.revision)
            w.set("provider", provider)
        return self._try(claim.ref, w)

    def save_result(
        self,
        claim: Claim,
        result: Result,
        *,
        keep_lease: bool = False,
        announce: Announce | None = None,
    ) -> bool:
        """Write the outcome of this attempt (``keep_lease`` while its tag is still to do),
        and the row's postings in the word index with it (``captioner.index``). False when a
        delete or another delivery took the row since the claim (the fence token no longer
        matches). With ``announce``, the row records that an event is owed for this status
        and ``announce`` gets the row's values as written."""

        def write() -> _Write:
            w = self._fenced(claim)
            values = asdict(result)
            values["status"] = result.status.value
            values["provider_job_rev"] = claim.ref.revision if result.provider_job_id else None
            values[EVENT_DUE] = result.status.value if announce else None
            values[EVENT_LEASE] = self._event_lease() if announce else None
            # the pipeline's captions are the model's (a person's: save_human_caption)
            values[CAPTION_SOURCE] = MODEL if result.caption else None
            for attr in RESULT_FIELDS:
                values.setdefault(attr, None)
            for attr, val in values.items():
                w.set(attr, val)
            if not keep_lease:
                w.remove("lease_until")
            return w

        return self._write_indexed(
            claim, write, asdict(result) | {"status": result.status}, announce
        )

    def _write_indexed(
        self,
        claim: Claim,
        write: Callable[[], _Write],
        row: dict[str, Any],
        announce: Announce | None = None,
    ) -> bool:
        """A fenced write that also makes the row's postings match ``row`` (its caption,
        labels and status after the write), in one transaction when they change. The row's
        index state is taken from the claim and checked by the write; when someone changed
        it meanwhile (our own write that timed out but landed, a reindex), it is read again."""
        known = IndexState.of(claim.previous)
        unindexed = False  # DynamoDB refused the postings: the row is written without them
        for _ in range(5):
            w = write()
            want = IndexState() if unindexed else index.wanted(row, str(w.assigned["updated_at"]))
            if not known.empty and want.words == known.words:
                want = known  # the same words (a kept caption): the postings stay as they are
            _set_index(w, known, want)
            try:
                if want == known:  # no posting changes: a plain write
                    self._update(claim.ref.bucket, claim.ref.key, w)
                else:
                    self._transact(claim.ref.bucket, claim.ref.key, w, known, want)
            except _Refused as refused:
                if refused.row.get("claim_token") != claim.token:
                    return False
                known = IndexState.of(refused.row)
                continue
            except ClientError as exc:
                # A limit the postings break (a key, an item or the transaction too large)
                # must never cost the row: a paid caption is written without its postings,
                # and search (``backfill --reindex``) misses it, which the log says.
                if want.empty or not _is_validation_error(exc):
                    raise
                log.error(
                    "the word index refused this row's entries (%s); the row is written "
                    "without them",
                    _error_code(exc),
                )
                unindexed = True
                continue
            if announce:  # every result field was set or removed: the row's values are known
                ref = claim.ref
                announce({"bucket": ref.bucket, "key": ref.key, "version_id": ref.version_id,
                          **w.assigned})  # fmt: skip
            return True
        raise IndexBusy("the row's index state kept changing under its holder")

    def save_tag(
        self,
        claim: Claim,
        tag_status: TagStatus,
        tag_value: str | None,
        error: str | None,
        *,
        announce: Announce | None = None,
    ) -> bool:
        """The caption's tag step is over: record it and release the lease. (CAPTIONED again:
        a delivery that finishes an earlier one's tag claimed the row as PENDING.)
        ``announce`` as in ``save_result``."""
        w = self._fenced(claim)
        w.set("status", Status.CAPTIONED.value)
        w.set("tag_status", tag_status.value)
        w.set("tag_value", tag_value)
        w.set("last_error", error)
        w.set(EVENT_DUE, Status.CAPTIONED.value if announce else None)
        w.set(EVENT_LEASE, self._event_lease() if announce else None)
        w.remove("lease_until")
        return self._try(claim.ref, w, announce)

    def _event_lease(self) -> str:
        return now_iso(lambda: self._clock() + timedelta(seconds=EVENT_LEASE_S))

    def take_event(self, row: Mapping[str, Any]) -> bool:
        """The right to publish the event ``row`` owes, for a delivery that did not write it
        (a duplicate, a redelivery): only once the writer's lease on it has run out (it may
        be between its write and PutEvents right now), and only for one taker."""
        w = _Write()
        w.set(EVENT_LEASE, self._event_lease())
        lease = w.name(EVENT_LEASE)
        free = f"(attribute_not_exists({lease}) OR {lease} < {w.value(self.now())})"
        return self._owed_write(row, w, free)

    def release_event(self, row: Mapping[str, Any]) -> None:
        """PutEvents failed: the next delivery that meets the row may publish at once."""
        w = _Write()
        w.remove(EVENT_LEASE)
        self._owed_write(row, w)

    def announced(self, row: Mapping[str, Any]) -> bool:
        """The event owed for ``row`` was published: forget it, unless the row has changed
        since (a newer status owes its own event)."""
        w = _Write()
        w.remove(EVENT_DUE)
        w.remove(EVENT_LEASE)
        return self._owed_write(row, w)

    def _owed_write(self, row: Mapping[str, Any], w: _Write, also: str = "") -> bool:
        """``w``, only while the row still owes the event of ``row`` (same status, not
        written since); False when it does not."""
        w.condition = (
            f"{w.name(EVENT_DUE)} = {w.value(row['status'])}"
            f" AND {w.name('updated_at')} = {w.value(row['updated_at'])}"
        ) + (f" AND {also}" if also else "")
        try:
            self._update(row["bucket"], row["key"], w)
        except _Refused:
            return False
        return True

    def _fenced(self, claim: Claim) -> _Write:
        w = _Write()
        w.set("updated_at", self.now())
        w.condition = f"{w.name('claim_token')} = {w.value(claim.token)}"
        return w

    def _try(self, ref: ObjectRef, w: _Write, announce: Announce | None = None) -> bool:
        try:
            row = self._update(ref.bucket, ref.key, w, returns="ALL_NEW" if announce else None)
        except _Refused:
            return False
        if announce:
            announce(row)
        return True

    # -- deletes ---------------------------------------------------------------------------

    def mark_deleted(
        self,
        bucket: str,
        key: str,
        version_id: str | None,
        sequencer: str | None,
        whole: bool,
        *,
        announce: Announce | None = None,
    ) -> bool:
        """Mark the row DELETED (it is kept: its caption and history stay queryable).

        ``whole`` is True when the object is gone from listings (a delete marker, or an
        unversioned delete); a delete of one specific old version only counts when it is the
        version the row describes. The fence token is removed, so a delivery still captioning
        the object cannot undo this. A whole-object delete that carries a sequencer and finds
        no row leaves a DELETED tombstone, so that its object's create event, delivered late,
        is refused as older instead of captioning a deleted object.

        ``announce`` gets the row when it becomes DELETED, and when a repeated delete finds
        it DELETED with its event still owed; a repeat of a delete already announced is no
        change and announces nothing.
        """
        order = sequencer_order(sequencer)
        for _ in range(2):
            w = _Write()
            now = self.now()
            w.set("status", Status.DELETED.value)
            w.set("updated_at", now)
            w.set("deleted_at", now)
            w.remove("lease_until")
            w.remove("claim_token")
            w.set(EVENT_DUE, Status.DELETED.value if announce else None)
            w.set(EVENT_LEASE, self._event_lease() if announce else None)
            if order:
                w.set("sequencer_order", order)
                w.set("sequencer", sequencer)
            for attr in _RECAPTION_FIELDS:  # a re-caption of a deleted object is over
                w.remove(attr)
            conds = [f"attribute_exists({w.name('bucket')})", _seq_condition(w, order, "<")]
            if not whole and version_id:
                conds.append(f"{w.name('version_id')} = {w.value(version_id)}")
            w.condition = " AND ".join(conds)
            if whole and order:
                w.set_expr("created_at", f"if_not_exists({w.name('created_at')}, {w.value(now)})")
                rev = w.name("revision")
                w.set_expr("revision", f"if_not_exists({rev}, {w.value(TOMBSTONE)})")
                w.condition = f"attribute_not_exists({w.name('bucket')}) OR ({w.condition})"
            try:
                before = self._update(bucket, key, w, returns="ALL_OLD")
            except _Refused as refused:
                if is_legacy_order(refused.row.get("sequencer_order")):
                    self._migrate_order(bucket, key, refused.row)
                    continue
                if refused.row.get("status") == Status.DELETED:
                    self._drop_index(bucket, key, refused.row)  # a crash left it: finish
                if announce and _owes(refused.row, Status.DELETED) and self.take_event(refused.row):
                    announce(refused.row)  # a repeat of a delete whose event is still owed
                return False
            self._drop_index(bucket, key, before)
            if announce:
                row = {**before, "bucket": bucket, "key": key, "status": Status.DELETED.value,
                       "updated_at": now, EVENT_DUE: Status.DELETED.value}  # fmt: skip
                if before.get("status") != Status.DELETED or _owes(before, Status.DELETED):
                    announce(row)
                else:  # already DELETED and announced: no change to announce
                    self.announced(row)
            return True
        return False

    def _drop_index(self, bucket: str, key: str, row: dict[str, Any]) -> None:
        """Remove the postings of a row that is now DELETED (the caption stays on the row,
        but deleted objects are not found by search). A second write after the delete:
        when it is lost, the delete's redelivery, or ``backfill --reindex``, finishes it."""
        known = IndexState.of(row)
        if known.empty:
            return
        w = _Write()
        w.condition = f"{w.name('status')} = {w.value(Status.DELETED.value)}"
        _set_index(w, known, IndexState())
        with contextlib.suppress(_Refused):  # the row moved on: its new owner syncs it
            self._transact(bucket, key, w, known, IndexState())

    def reindex_plan(self, row: dict[str, Any]) -> str:
        """What ``reindex`` would do to this row (without writing)."""
        known = IndexState.of(row)
        want = index.wanted(row, str(known.at or row.get("updated_at") or self.now()))
        if sorted(want.words) == sorted(known.words):
            return "current"
        return "unindexed" if want.empty else "indexed"

    def reindex(self, row: dict[str, Any]) -> str:
        """Make one row's postings match its caption, as the function would have written
        them (``captioner backfill --reindex``; never pays a provider). Returns what was
        done: "indexed", "unindexed", "current" or "changed" (the row changed meanwhile: its
        writer keeps the index right)."""
        bucket, key = str(row["bucket"]), str(row["key"])
        if self.reindex_plan(row) == "current":
            return "current"
        known = IndexState.of(row)
        want = index.wanted(row, str(known.at or row.get("updated_at") or self.now()))
        w = _Write()
        # the words come from this caption: only while the row still has it
        cap = w.name("caption")
        if row.get("caption") is None:
            w.condition = f"attribute_not_exists({cap})"
        else:
            w.condition = f"{cap} = {w.value(row['caption'])}"
        w.condition += f" AND {w.name('status')} = {w.value(row.get('status', ''))}"
        _set_index(w, known, want)
        try:
            self._transact(bucket, key, w, known, want)
        except _Refused:
            return "changed"
        return "unindexed" if want.empty else "indexed"

    # -- human captions (``captioner edit``, ``captioner ui``) -----------------------------

    def save_human_caption(
        self,
        bucket: str,
        key: str,
        revision: str,
        caption: str,
        *,
        announce: Announce | None = None,
    ) -> dict[str, Any]:
        """A person's caption for the version the row describes: CAPTIONED with
        ``caption_source`` = human and ``edited_at``, the word index with it. Returns the
        row as written (its ``tag_value`` is the caption tag an earlier write put on the
        object: ours to replace, see ``save_human_tag``).

        Refused with ``NotEditable`` when the row is gone, DELETED, or describes another
        version (``revision``). The fence token is removed, so a delivery still working on
        this version writes nothing after it (its fenced writes fail: "taken"). Each try
        is conditional on the row being as read (``updated_at``):

            edit                                  delivery (same version)
            read row (updated_at u1)
                                                  claim: updated_at u2, token t
            write if updated_at = u1: refused
            read again (u2), write: token removed
                                                  save_result if token = t: refused
        """
        for _ in range(4):
            row = self.get(bucket, key)
            if row is None or row.get("status") == Status.DELETED:
                raise NotEditable(f"no current object for s3://{bucket}/{key}")
            if row.get("revision") != revision:
                raise NotEditable(
                    f"s3://{bucket}/{key}: that version is no longer the row's (it describes "
                    f"version {row.get('version_id') or row.get('revision')})"
                )
            now = self.now()
            w = _Write()
            changes: dict[str, Any] = {
                "status": Status.CAPTIONED.value, "caption": caption, CAPTION_SOURCE: HUMAN,
                EDITED_AT: now, "updated_at": now, "reason": None, "last_error": None,
                # the model's labels described what it saw, not what the person wrote
                "labels": None, "lease_until": None, "claim_token": None,
                "tag_status": None, "requeued_at": None,
                EVENT_DUE: Status.CAPTIONED.value if announce else None,
            }  # fmt: skip
            for attr, val in changes.items():
                w.set(attr, val)
            w.condition = (
                f"{w.name('revision')} = {w.value(revision)}"
                f" AND {w.name('updated_at')} = {w.value(row.get('updated_at'))}"
            )
            new = {k: v for k, v in {**row, **changes}.items() if v is not None}
            known = IndexState.of(row)
            want = index.wanted(new, now)
            _set_index(w, known, want)
            try:
                if known.empty and want.empty:
                    self._update(bucket, key, w)
                else:
                    self._transact(bucket, key, w, known, want)
            except _Refused:
                continue  # the row changed since it was read: read it again
            if announce:
                announce(new)
            return new
        raise IndexBusy("the row kept changing while the caption was saved; try again")

    def save_human_tag(
        self,
        row: Mapping[str, Any],
        tag_status: TagStatus,
        tag_value: str | None,
        error: str | None,
    ) -> bool:
        """Record the caption tag step of a human edit (``row`` as ``save_human_caption``
        returned it); False when the row changed since (a newer edit records its own)."""
        w = _Write()
        w.set("tag_status", tag_status.value)
        w.set("tag_value", tag_value)
        w.set("last_error", error)
        w.condition = (
            f"{w.name(EDITED_AT)} = {w.value(row[EDITED_AT])}"
            f" AND {w.name(CAPTION_SOURCE)} = {w.value(HUMAN)}"
        )
        try:
            self._update(str(row["bucket"]), str(row["key"]), w)
        except _Refused:
            return False
        return True

    # -- plumbing --------------------------------------------------------------------------

    def _update(
        self, bucket: str, key: str, w: _Write, *, returns: str | None = None
    ) -> dict[str, Any]:
        """One conditional UpdateItem; ``_Refused`` (with the row as it is) when the
        condition fails."""
        kwargs = self._conditional_update(bucket, key, w)
        if returns:  # ALL_OLD or ALL_NEW: the same call, no extra cost
            kwargs["ReturnValues"] = returns
        try:
            resp = self._db.update_item(**kwargs)
        except ClientError as exc:
            if _is_condition_failure(exc):
                raise _Refused(_from_item(exc.response.get("Item") or {})) from None
            raise
        return _from_item(resp.get("Attributes") or {})

    def _conditional_update(self, bucket: str, key: str, w: _Write) -> dict[str, Any]:
        """The parameters of ``w`` as one conditional update of the row (UpdateItem's, and a
        transaction's ``Update``): the row as it was comes back when the condition fails."""
        update: dict[str, Any] = {
            "TableName": self.table_name,
            "Key": _key(bucket, key),
            "UpdateExpression": w.expression(),
            "ConditionExpression": w.condition,
            "ExpressionAttributeNames": w.names,
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
        if w.values:
            update["ExpressionAttributeValues"] = _values(w.values)
        return update

    def _transact(self, bucket: str, key: str, w: _Write, old: IndexState, new: IndexState) -> None:
        """The row's conditional write and its postings' changes, all or nothing.
        ``_Refused`` (with the row as it is) when the row's condition fails."""
        update = self._conditional_update(bucket, key, w)
        items = [{"Update": update}, *index.changes(self.table_name, bucket, key, old, new)]
        for attempt in range(5):
            try:
                self._db.transact_write_items(TransactItems=items)
                return
            except ClientError as exc:
                reasons = exc.response.get("CancellationReasons") or []
                codes = [str(r.get("Code")) for r in reasons]
                if codes and codes[0] == "ConditionalCheckFailed":
                    item = reasons[0].get("Item")
                    raise _Refused(
                        _from_item(item) if item else self.get(bucket, key) or {}
                    ) from None
                if "TransactionConflict" not in codes or attempt == 4:
                    raise
            time.sleep(0.02 * 2**attempt)  # another transaction on these items: try again


class IndexBusy(CaptionerError):
    """A row's index state kept changing while its claim holder wrote it."""


class NotEditable(CaptionerError):
    """A human caption was refused: no current row for that object version."""


def _set_index(w: _Write, old: IndexState, new: IndexState) -> None:
    """Make ``w`` record ``new`` as the row's index state, if the row still records ``old``."""
    at = w.name("indexed_at")
    held = f"{at} = {w.value(old.at)}" if old.at else f"attribute_not_exists({at})"
    w.condition = f"({w.condition}) AND {held}" if w.condition else held
    if new.empty:
        w.remove("indexed_words")
        w.remove("indexed_at")
    else:
        w.set("indexed_words", list(new.words))
        w.set("indexed_at", new.at)


class _Refused(Exception):
    """A conditional write's condition did not hold; ``row`` is the item as it was."""

    def __init__(self, row: dict[str, Any]) -> None:
        super().__init__("conditional check failed")
        self.row = row


class _Write:
    """An UpdateItem being assembled: placeholders for every name and value, SETs of
    non-None values, REMOVEs of None ones."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        self.values: dict[str, Any] = {}
        self._sets: list[str] = []
        self._removes: list[str] = []
        self.assigned: dict[str, Any] = {}  # attr -> value, for the plain values set
        self.condition = ""

    def name(self, attr: str) -> str:
        for placeholder, known in self.names.items():
            if known == attr:
                return placeholder
        placeholder = f"#n{len(self.names)}"
        self.names[placeholder] = attr
        return placeholder

    def value(self, val: Any) -> str:
        placeholder = f":v{len(self.values)}"
        self.values[placeholder] = val
        return placeholder

    def set(self, attr: str, val: Any) -> None:
        if val is None:
            self.remove(attr)
        else:
            self.assigned[attr] = val
            self.set_expr(attr, self.value(val))

    def set_expr(self, attr: str, expr: str) -> None:
        self._sets.append(f"{self.name(attr)} = {expr}")

    def remove(self, attr: str) -> None:
        placeholder = self.name(attr)
        if placeholder not in self._removes and not any(
            s.startswith(placeholder + " ") for s in self._sets
        ):
            self._removes.append(placeholder)

    def expression(self) -> str:
        sets = set(s.split(" = ")[0] for s in self._sets)
        removes = [r for r in self._removes if r not in sets]
        parts = []
        if self._sets:
            parts.append("SET " + ", ".join(self._sets))
        if removes:
            parts.append("REMOVE " + ", ".join(removes))
        return " ".join(parts)


_RECAPTION_FIELDS = (
    "recaption_status", "recaption_reason", "recaption_provider", "recaption_job_id",
    "requested_provider",
)  # fmt: skip


def _seq_condition(w: _Write, order: str | None, op: str) -> str:
    """The row has no sequencer order, or an up-to-date one that is ``op`` ours. A pre-0.2
    order fails this, so the caller rewrites it first."""
    seq = w.name("sequencer_order")
    if not order:
        return f"(attribute_not_exists({seq}) OR begins_with({seq}, {w.value(_ORDER_MARK)}))"
    return (
        f"(attribute_not_exists({seq}) OR "
        f"(begins_with({seq}, {w.value(_ORDER_MARK)}) AND {seq} {op} {w.value(order)}))"
    )


def _done_condition(w: _Write, provider: str | None) -> str:
    """This version needs nothing more: captioned and tagged (by ``provider``, when one was
    asked for by name), or captioned by a person (``is_human_caption``)."""
    done = (
        f"{w.name('status')} = {w.value(Status.CAPTIONED.value)}"
        f" AND {w.name('tag_status')} IN ({', '.join(w.value(t.value) for t in TAG_SETTLED)})"
    )
    if provider:
        done += f" AND {w.name('provider')} = {w.value(provider)}"
    return f"({done}) OR {w.name(CAPTION_SOURCE)} = {w.value(HUMAN)}"


def _why_blocked(
    old: dict[str, Any], ref: ObjectRef, provider: str | None, force: bool = False
) -> ClaimOutcome | None:
    """Why a claim was refused, or None when the row is an older version's to take over."""
    order = sequencer_order(ref.sequencer)
    if order and str(old.get("sequencer_order", "")) > order:
        return ClaimOutcome.STALE
    if old.get("revision") != ref.revision:
        ordered = bool(order) == ("sequencer_order" in old) or old.get("revision") == TOMBSTONE
        return None if ordered else ClaimOutcome.UNORDERED
    if old.get("status") == Status.DELETED:
        return ClaimOutcome.UNORDERED  # deleted since, or undeleted: S3 decides (a HEAD)
    captioned = old.get("status") == Status.CAPTIONED and old.get("tag_status") in TAG_SETTLED
    if not force and (
        is_human_caption(old) or (captioned and (not provider or old.get("provider") == provider))
    ):
        return ClaimOutcome.DONE
    # a live lease (or the row changed between the write and this read): try later
    return ClaimOutcome.BUSY


def _owes(row: Mapping[str, Any], status: Status) -> bool:
    return row.get("status") == status and row.get(EVENT_DUE) == status


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _is_validation_error(exc: ClientError) -> bool:
    """DynamoDB refused the request itself (a limit, a malformed value), not a condition:
    directly, or as the reason a transaction was cancelled."""
    if _error_code(exc) == "ValidationException":
        return True
    reasons = exc.response.get("CancellationReasons") or []
    return any(str(r.get("Code")) == "ValidationError" for r in reasons)


def _is_condition_failure(exc: ClientError) -> bool:
    code: str = exc.response.get("Error", {}).get("Code", "")
    return code == "ConditionalCheckFailedException"


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

STATUSES: tuple[Status, ...] = tuple(Status)
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

    def rows_at(self, objects: list[tuple[str, str]]) -> dict[tuple[str, str], dict[str, Any]]:
        """Rows of objects in any buckets (BatchGetItem, 100 per request), keyed by
        (bucket, key)."""
        wanted = list(dict.fromkeys(objects))
        found: dict[tuple[str, str], dict[str, Any]] = {}
        for start in range(0, len(wanted), BATCH_GET_MAX):
            keys = [_key(b, k) for b, k in wanted[start : start + BATCH_GET_MAX]]
            request = {self.table_name: {"ConsistentRead": True, "Keys": keys}}
            for item in self._batch_get(request):
                row = _from_item(item)
                found[(row["bucket"], row["key"])] = row
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
        bucket: str | None = None,
        prefix: str = "",
        status: str | None = None,
    ) -> list[dict[str, Any]]:
        """Rows whose caption contains every word of ``text`` (case-insensitive), in the
        bucket/prefix and with the status when given. A Scan: it reads the whole table (for
        tables written before the word index: ``captioner.search`` answers from the index).
        ``on_page`` gets the number of items read by each page."""
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
                if not all(w in caption for w in words):
                    continue
                if bucket and (row.get("bucket") != bucket or not row["key"].startswith(prefix)):
                    continue
                if status and row.get("status") != status:
                    continue
                if limit and len(rows) >= limit:
                    return rows
                rows.append(row)
        return rows

    def iter_rows(self, bucket: str, prefix: str = "") -> Iterator[dict[str, Any]]:
        """Every row of a bucket (or of a key prefix in it), page by page, from the bucket's
        index: bounded memory for any table size."""
        names = {"#b": "bucket"}
        values: dict[str, Any] = {":b": {"S": bucket}}
        args: dict[str, Any] = {
            "TableName": self.table_name,
            "IndexName": INDEX_BY_BUCKET,
            "KeyConditionExpression": "#b = :b",
        }
        if prefix:
            names["#k"], values[":k"] = "key", {"S": prefix}
            args["FilterExpression"] = "begins_with(#k, :k)"
        args |= {"ExpressionAttributeNames": names, "ExpressionAttributeValues": values}
        for page in self._db.get_paginator("query").paginate(**args):
            for item in page.get("Items", []):
                yield _from_item(item)

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

    def idle_pending(self, now: str, limit: int = 20) -> tuple[int, list[dict[str, Any]]]:
        """PENDING rows that no delivery is working on (their lease has expired): waiting
        for SQS to retry them, or stuck when the instance died on the last delivery and the
        message was dead-lettered. How many, and the oldest ``limit`` of them."""
        pages = self._db.get_paginator("query").paginate(
            TableName=self.table_name,
            IndexName=INDEX_BY_STATUS,
            KeyConditionExpression="#s = :s",
            FilterExpression="attribute_not_exists(#l) OR #l < :now",
            ExpressionAttributeNames={"#s": "status", "#l": "lease_until"},
            ExpressionAttributeValues={":s": {"S": Status.PENDING.value}, ":now": {"S": now}},
        )
        rows = [_from_item(item) for page in pages for item in page.get("Items", [])]
        return len(rows), rows[:limit]

    def approximate_count(self) -> int | None:
        """DescribeTable's ItemCount (AWS refreshes it about every six hours); None if unknown."""
        try:
            table = self._db.describe_table(TableName=self.table_name)["Table"]
            return int(table.get("ItemCount", 0)) or None
        except (KeyError, ValueError):
            return None
