"""In-memory implementations of the pipeline's ports (captioner/ports.py), for fast tests of
its decisions without AWS.

- ``MemoryObjects``: objects by version, in versioned or unversioned buckets; tags replace
  as S3's do; ``fail`` makes an operation raise.
- ``MemoryCaptions``: the captions table's claim, lease and fence rules, written out plainly
  (store.py writes them as DynamoDB conditions); it keeps no word index (captioner/index.py). tests/unit/test_store.py runs its claim,
  fence and delete tests against both, so this fake cannot drift from the real store.
- ``ScriptedProvider``: answers caption calls from a script of steps and counts what was
  paid (a call without a job id submits a new, paid job).
- ``RecordedTelemetry``: what the pipeline reported.
- ``MemoryLeases``: the deployment-wide provider leases (captioner/leases.py) in a dict;
  tests/integration/test_leases.py holds the DynamoDB ones to the same rules.
"""

from __future__ import annotations

import copy
import hashlib
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from captioner.errors import ProviderPending
from captioner.objects import ObjectHead, ObjectMissing
from captioner.providers.base import Caption, ImageSource, Length
from captioner.store import (
    CAPTION_SOURCE,
    EVENT_DUE,
    EVENT_LEASE,
    EVENT_LEASE_S,
    MODEL,
    RESULT_FIELDS,
    TOMBSTONE,
    Announce,
    Claim,
    ClaimOutcome,
    ObjectRef,
    Result,
    Status,
    forced_previous,
    is_human_caption,
    now_iso,
    sequencer_order,
)
from captioner.tags import TAG_SETTLED, TagStatus

Tags = list[tuple[str, str]]

# -- objects -----------------------------------------------------------------------------------


@dataclass
class StoredObject:
    body: bytes
    version_id: str | None
    etag: str
    tags: Tags = field(default_factory=list)


class MemoryObjects:
    """One or more buckets. Versioned: each put adds a version and a delete hides the object
    behind a delete marker (its versions stay readable by id). Unversioned: a put replaces
    the object, tags and all, and a delete removes it."""

    def __init__(self, *, versioned: bool = True) -> None:
        self.versioned = versioned
        self._versions: dict[tuple[str, str], list[StoredObject]] = {}
        self._deleted: set[tuple[str, str]] = set()
        self.fail: dict[str, Exception] = {}  # operation name -> error it raises
        self.calls: list[str] = []

    # what a test does to the bucket

    def put(self, bucket: str, key: str, body: bytes, tags: Tags = ()) -> ObjectHead:
        etag = hashlib.md5(body).hexdigest()  # as S3 makes it for a single-part upload
        version = uuid.uuid4().hex if self.versioned else None
        obj = StoredObject(body, version, etag, list(tags))
        if self.versioned:
            self._versions.setdefault((bucket, key), []).append(obj)
        else:
            self._versions[(bucket, key)] = [obj]
        self._deleted.discard((bucket, key))
        return ObjectHead(version, etag, len(body))

    def delete(self, bucket: str, key: str) -> None:
        if self.versioned:
            self._deleted.add((bucket, key))
        else:
            self._versions.pop((bucket, key), None)

    def tags_of(self, bucket: str, key: str, version_id: str | None = None) -> Tags:
        return list(self._find(bucket, key, version_id).tags)

    # the port

    def head(self, bucket: str, key: str, version_id: str | None) -> ObjectHead:
        obj = self._op("head", bucket, key, version_id)
        return ObjectHead(obj.version_id, obj.etag, len(obj.body))

    def read_prefix(self, bucket: str, key: str, version_id: str | None, length: int) -> bytes:
        return self._op("read_prefix", bucket, key, version_id).body[:length]

    def read_all(self, bucket: str, key: str, version_id: str | None, limit: int) -> bytes:
        body = self._op("read_all", bucket, key, version_id).body
        if len(body) > limit:
            raise ValueError(f"object grew past {limit} bytes while reading")
        return body

    def presign(self, bucket: str, key: str, version_id: str | None, expires: int) -> str:
        self.calls.append("presign")  # a signature, made locally: no request, no check
        return f"https://{bucket}.s3.example/{key}?versionId={version_id}&expires={expires}"

    def get_tags(self, bucket: str, key: str, version_id: str | None) -> Tags:
        return list(self._op("get_tags", bucket, key, version_id).tags)

    def put_tags(self, bucket: str, key: str, version_id: str | None, tags: Tags) -> None:
        self._op("put_tags", bucket, key, version_id).tags = list(tags)

    def delete_tags(self, bucket: str, key: str, version_id: str | None) -> None:
        self._op("delete_tags", bucket, key, version_id).tags = []

    def _op(self, name: str, bucket: str, key: str, version_id: str | None) -> StoredObject:
        self.calls.append(name)
        if name in self.fail:
            raise self.fail[name]
        return self._find(bucket, key, version_id)

    def _find(self, bucket: str, key: str, version_id: str | None) -> StoredObject:
        versions = self._versions.get((bucket, key), [])
        if version_id is not None:
            found = [v for v in versions if v.version_id == version_id]
        else:
            found = versions[-1:] if (bucket, key) not in self._deleted else []
        if not found:
            raise ObjectMissing(f"{bucket}/{key}: NoSuchKey")
        return found[0]


# -- the captions table ------------------------------------------------------------------------


class MemoryCaptions:
    """The write side of the captions table (plus ``get``), one lock for atomic writes."""

    def __init__(self, clock: Callable[[], datetime] | None = None) -> None:
        self.rows: dict[tuple[str, str], dict[str, Any]] = {}
        self._clock = clock or (lambda: datetime.now(UTC))
        self._lock = threading.Lock()
        self.calls: list[str] = []

    def now(self) -> str:
        return now_iso(self._clock)

    def get(self, bucket: str, key: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.rows.get((bucket, key)))

    def claim(
        self,
        ref: ObjectRef,
        lease_seconds: float,
        provider: str | None = None,
        *,
        current: bool = False,
        force: bool = False,
    ) -> Claim:
        with self._lock:
            self.calls.append("claim")
            row = self.rows.get((ref.bucket, ref.key))
            old = copy.deepcopy(row)
            order = sequencer_order(ref.sequencer)
            if row is not None:
                if order and row.get("sequencer_order", "") > order:
                    return Claim(ClaimOutcome.STALE, ref, old)  # a newer event owns the row
                deleted = row.get("status") == Status.DELETED
                if row["revision"] == ref.revision and deleted and not current:
                    return Claim(ClaimOutcome.UNORDERED, ref, old)  # deleted since: ask S3
                if row["revision"] == ref.revision:  # (an undelete: the caption is reused)
                    if not force and (_done(row, provider) or is_human_caption(row)):
                        return Claim(ClaimOutcome.DONE, ref, old)
                    if row.get("lease_until", "") > self.now():
                        return Claim(ClaimOutcome.BUSY, ref, old)
                    row["attempts"] = row.get("attempts", 0) + 1
                elif not (current or _ordered(row, order)):
                    return Claim(ClaimOutcome.UNORDERED, ref, old)  # the caller asks S3
                else:  # an older version's row: taken afresh, nothing of its result stays
                    for attr in RESULT_FIELDS:
                        row.pop(attr, None)
                    if not order:  # its order must not outlive it
                        row.pop("sequencer_order", None)
                        row.pop("sequencer", None)
                    row["attempts"] = 1
            else:
                row = self.rows[(ref.bucket, ref.key)] = {
                    "bucket": ref.bucket, "key": ref.key, "created_at": self.now(), "attempts": 1,
                }  # fmt: skip
            token = uuid.uuid4().hex
            lease = now_iso(lambda: self._clock() + timedelta(seconds=lease_seconds))
            row.update(status=Status.PENDING.value, revision=ref.revision, lease_until=lease)
            row.update(claim_token=token, updated_at=self.now())
            _put(row, version_id=ref.version_id, etag=ref.etag, size=ref.size)
            if order:
                row.update(sequencer_order=order, sequencer=ref.sequencer)
            return Claim(ClaimOutcome.CLAIMED, ref, forced_previous(old) if force else old, token)

    def record_job(
        self, claim: Claim, job_id: str, provider: str, *, recaption: bool = False
    ) -> bool:
        if recaption:
            values = {"recaption_job_id": job_id, "recaption_provider": provider}
            return self._fenced("record_job", claim, values)
        return self._fenced("record_job", claim, {
            "provider_job_id": job_id, "provider_job_rev": claim.ref.revision,
            "provider": provider,
        })  # fmt: skip

    def save_result(
        self,
        claim: Claim,
        result: Result,
        *,
        keep_lease: bool = False,
        announce: Announce | None = None,
    ) -> bool:
        values: dict[str, Any] = dict.fromkeys(RESULT_FIELDS)
        values.update(asdict(result), status=result.status.value)
        if result.provider_job_id:
            values["provider_job_rev"] = claim.ref.revision
        if not keep_lease:
            values["lease_until"] = None
        values[EVENT_DUE] = result.status.value if announce else None
        values[EVENT_LEASE] = self._event_lease() if announce else None
        values[CAPTION_SOURCE] = MODEL if result.caption else None
        return self._fenced("save_result", claim, values, announce)

    def save_tag(
        self,
        claim: Claim,
        tag_status: TagStatus,
        tag_value: str | None,
        error: str | None,
        *,
        announce: Announce | None = None,
    ) -> bool:
        return self._fenced("save_tag", claim, {
            "status": Status.CAPTIONED.value, "tag_status": tag_status.value,
            "tag_value": tag_value, "last_error": error, "lease_until": None,
            EVENT_DUE: Status.CAPTIONED.value if announce else None,
            EVENT_LEASE: self._event_lease() if announce else None,
        }, announce)  # fmt: skip

    def _event_lease(self) -> str:
        return now_iso(lambda: self._clock() + timedelta(seconds=EVENT_LEASE_S))

    def take_event(self, row: Mapping[str, Any]) -> bool:
        with self._lock:
            current = self.rows.get((row["bucket"], row["key"]))
            if current is None or current.get(EVENT_DUE) != row.get("status"):
                return False
            if current.get("updated_at") != row.get("updated_at"):
                return False
            if str(current.get(EVENT_LEASE) or "") >= self.now():
                return False  # its writer may be publishing it right now
            current[EVENT_LEASE] = self._event_lease()
            return True

    def release_event(self, row: Mapping[str, Any]) -> None:
        with self._lock:
            current = self.rows.get((row["bucket"], row["key"]))
            if current is not None and current.get("updated_at") == row.get("updated_at"):
                current.pop(EVENT_LEASE, None)

    def announced(self, row: Mapping[str, Any]) -> bool:
        with self._lock:
            current = self.rows.get((row["bucket"], row["key"]))
            if current is None or current.get(EVENT_DUE) != row.get(EVENT_DUE):
                return False
            current.pop(EVENT_DUE, None)
            current.pop(EVENT_LEASE, None)
            return True

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
        with self._lock:
            self.calls.append("mark_deleted")
            order = sequencer_order(sequencer)
            row = self.rows.get((bucket, key))
            if row is None:
                if not (whole and order):
                    return False  # no row, and nothing to order a late create against
                row = self.rows[(bucket, key)] = {
                    "bucket": bucket, "key": key, "created_at": self.now(), "revision": TOMBSTONE,
                }  # fmt: skip
            elif order and row.get("sequencer_order", "") >= order:
                return False  # the row describes a newer event
            elif not whole and version_id and row.get("version_id") != version_id:
                return False  # an older version was deleted, not the one described
            now = self.now()
            row.update(status=Status.DELETED.value, updated_at=now, deleted_at=now)
            _put(row, lease_until=None, claim_token=None)
            if order:
                row.update(sequencer_order=order, sequencer=sequencer)
            if announce:
                row[EVENT_DUE] = Status.DELETED.value
                row[EVENT_LEASE] = self._event_lease()
                announce(dict(row))
            return True

    def _fenced(
        self, name: str, claim: Claim, values: dict[str, Any], announce: Announce | None = None
    ) -> bool:
        """Apply ``values`` (None removes) only while the claim's token is on the row."""
        with self._lock:
            self.calls.append(name)
            row = self.rows.get((claim.ref.bucket, claim.ref.key))
            if row is None or row.get("claim_token") != claim.token:
                return False
            _put(row, updated_at=self.now(), **values)
            written = dict(row)
        if announce:
            announce(written)
        return True


def _ordered(row: dict[str, Any], order: str | None) -> bool:
    """Sequencers order this event against the row's: both have one, or neither (then the
    pipeline checked S3), or the row is a delete's tombstone."""
    return bool(order) == ("sequencer_order" in row) or row.get("revision") == TOMBSTONE


def _done(row: dict[str, Any], provider: str | None) -> bool:
    captioned = row.get("status") == Status.CAPTIONED and row.get("tag_status") in TAG_SETTLED
    return captioned and (not provider or row.get("provider") == provider)


def _put(row: dict[str, Any], **values: Any) -> None:
    for name, value in values.items():
        if value is None:
            row.pop(name, None)
        else:
            row[name] = value


# -- the provider ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProviderCall:
    image: str  # ImageSource.name
    job_id: str | None  # the job it was asked to poll; None: a new, paid submission
    url: str | None


Step = Callable[[ProviderCall, Callable[[str], None] | None], Caption]


class ScriptedProvider:
    """A caption provider that plays ``steps`` in order, one per call; with the script
    played out it captions everything "a cat"."""

    formats = frozenset({"PNG", "JPEG", "GIF", "WEBP"})
    price_usd = 0.0047
    cpu_bound = False  # a remote service: one slot per instance (limits.py)

    def __init__(self, *steps: Step, name: str = "modelslab") -> None:
        self.name = name
        self.script = list(steps)
        self.calls: list[ProviderCall] = []

    @property
    def paid(self) -> int:
        return sum(1 for c in self.calls if c.job_id is None)

    def caption(
        self,
        image: ImageSource,
        length: Length,
        *,
        deadline: float,
        job_id: str | None = None,
        on_job: Callable[[str], None] | None = None,
    ) -> Caption:
        call = ProviderCall(image.name, job_id, image.url)
        self.calls.append(call)
        step = self.script.pop(0) if self.script else answer("a cat")
        caption = step(call, on_job)
        return Caption(caption.text, self.name, length, job_id=caption.job_id or job_id)


def answer(text: str, job_id: str | None = None) -> Step:
    """A caption (``job_id``: the provider's id of the job that made it)."""
    return lambda call, on_job: Caption(text, "scripted", "normal", job_id=job_id)


def fail(error: Exception) -> Step:
    def step(call: ProviderCall, on_job: Callable[[str], None] | None) -> Caption:
        raise error

    return step


def queue(job_id: str) -> Step:
    """The provider queued the job and it was not done in time (the caller stores its id)."""

    def step(call: ProviderCall, on_job: Callable[[str], None] | None) -> Caption:
        if on_job:
            on_job(job_id)
        raise ProviderPending("queued", job_id=job_id)

    return step


def after(effect: Callable[[], object], then: Step) -> Step:
    """Run ``effect`` (an upload, a delete) while the provider works, then ``then``."""

    def step(call: ProviderCall, on_job: Callable[[str], None] | None) -> Caption:
        effect()
        return then(call, on_job)

    return step


# -- telemetry ---------------------------------------------------------------------------------


@dataclass
class RecordedTelemetry:
    outcomes: list[str] = field(default_factory=list)
    latencies: list[tuple[str, float]] = field(default_factory=list)
    retries: list[Exception] = field(default_factory=list)

    def outcome(self, status: str) -> None:
        self.outcomes.append(status)

    def provider_latency(self, provider: str, ms: float) -> None:
        self.latencies.append((provider, ms))

    def retry(self, error: Exception, wait: float) -> None:
        self.retries.append(error)


class MemoryLeases:
    """Deployment-wide provider leases: at most ``limit`` live holders; ended ones are
    cleared when the map is full. ``fail`` makes the next calls of that name raise."""

    def __init__(self, limit: int, clock: Callable[[], float] | None = None) -> None:
        import time

        self.limit = limit
        self.clock = clock or time.time
        self.holders: dict[str, float] = {}
        self.takes = 0  # successful takes
        self.given_back = 0
        self.asks = 0  # calls that look for a lease (take and has_room), whatever they find
        self.fail: dict[str, int] = {}
        self._lock = threading.Lock()

    def _maybe_fail(self, name: str) -> None:
        self.asks += name in ("take", "has_room")
        if self.fail.get(name, 0) > 0:
            self.fail[name] -= 1
            raise ConnectionError(f"{name} failed (scripted)")

    def take(self, holder: str, until: float) -> bool:
        with self._lock:
            self._maybe_fail("take")
            if holder not in self.holders and len(self.holders) >= self.limit:
                now = self.clock()
                self.holders = {h: t for h, t in self.holders.items() if t > now}
            if holder not in self.holders and len(self.holders) >= self.limit:
                return False
            self.holders[holder] = until
            self.takes += 1
            return True

    def give_back(self, holder: str) -> None:
        with self._lock:
            self._maybe_fail("give_back")
            self.holders.pop(holder, None)
            self.given_back += 1

    def has_room(self) -> bool:
        with self._lock:
            self._maybe_fail("has_room")
            now = self.clock()
            return sum(1 for t in self.holders.values() if t > now) < self.limit
