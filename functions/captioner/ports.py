"""What the pipeline needs from the world, as small interfaces (its ports).

The pipeline depends on these, never on boto3: ``objects.ObjectStore`` (S3) and
``store.CaptionStore`` (DynamoDB) are the adapters the function runs with, and
``tests/fakes/memory.py`` holds in-memory ones that test the pipeline's decisions without
AWS. The fourth port, the caption provider, is ``providers.base.CaptionProvider``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from captioner.objects import ObjectHead
from captioner.store import Announce, Claim, ObjectRef, Result
from captioner.tags import TagStatus

Tags = list[tuple[str, str]]


class Objects(Protocol):
    """One bucket's objects, by version (``version_id`` None: the current object).

    Every method raises ``objects.ObjectMissing`` when the object (version) is gone."""

    def head(self, bucket: str, key: str, version_id: str | None) -> ObjectHead: ...

    def read_prefix(self, bucket: str, key: str, version_id: str | None, length: int) -> bytes:
        """The first ``length`` bytes, never the whole body."""
        ...

    def read_all(self, bucket: str, key: str, version_id: str | None, limit: int) -> bytes:
        """The whole body; ValueError past ``limit`` bytes."""
        ...

    def presign(self, bucket: str, key: str, version_id: str | None, expires: int) -> str:
        """A link the provider can GET the version from for ``expires`` seconds."""
        ...

    def get_tags(self, bucket: str, key: str, version_id: str | None) -> Tags: ...

    def put_tags(self, bucket: str, key: str, version_id: str | None, tags: Tags) -> None:
        """Replace the whole tag set."""
        ...

    def delete_tags(self, bucket: str, key: str, version_id: str | None) -> None: ...


class Captions(Protocol):
    """The captions table's write side: one row per object, owned by claims.

    ``claim`` takes the row for one version under a lease and a fence token; every later
    write of that delivery returns False (and changes nothing) once a delete or another
    version took the row. See ``store.py`` for the timeline."""

    def claim(
        self,
        ref: ObjectRef,
        lease_seconds: float,
        provider: str | None = None,
        *,
        current: bool = False,
        force: bool = False,
    ) -> Claim:
        """CLAIMED, or why not: DONE (captioned and tagged, or a person's caption; never
        with ``force``), STALE (a newer version owns the row), BUSY (another delivery
        holds a live lease), UNORDERED (another version's row that sequencers cannot order
        against this one: claim again with ``current`` once S3 says this version is the
        current one)."""
        ...

    def record_job(
        self, claim: Claim, job_id: str, provider: str, *, recaption: bool = False
    ) -> bool:
        """Remember a queued provider job, so a retry polls it instead of paying again
        (``recaption``: a re-caption's job, beside the caption it will replace)."""
        ...

    def save_result(
        self,
        claim: Claim,
        result: Result,
        *,
        keep_lease: bool = False,
        announce: Announce | None = None,
    ) -> bool:
        """Write this attempt's outcome (fields None in ``result`` are removed). With
        ``announce``, the row owes an event for its status, and ``announce`` gets the row."""
        ...

    def save_tag(
        self,
        claim: Claim,
        tag_status: TagStatus,
        tag_value: str | None,
        error: str | None,
        *,
        announce: Announce | None = None,
    ) -> bool:
        """The tag step is over: CAPTIONED, with how the tag went; the lease is released."""
        ...

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
        """The object (``whole``) or the described version is gone: DELETED, fence removed."""
        ...

    def take_event(self, row: Mapping[str, Any]) -> bool:
        """The right to publish the event ``row`` owes, once its writer's lease ran out."""
        ...

    def release_event(self, row: Mapping[str, Any]) -> None:
        """Publishing the event ``row`` owes failed: others may try at once."""
        ...

    def announced(self, row: Mapping[str, Any]) -> bool:
        """The event owed for ``row`` was published: the row owes nothing more."""
        ...


class Leases(Protocol):
    """The deployment-wide provider slots (``leases.SlotLeases``; ``MemoryLeases`` in tests)."""

    def take(self, holder: str, until: float) -> bool:
        """A lease for ``holder`` until the epoch time ``until``; False when all are held."""
        ...

    def give_back(self, holder: str) -> None: ...
    def has_room(self) -> bool: ...


class Telemetry(Protocol):
    def outcome(self, status: str) -> None: ...
    def provider_latency(self, provider: str, ms: float) -> None: ...
    def retry(self, error: Exception, wait: float) -> None: ...
    def budget_exhausted(self) -> None: ...


class NoTelemetry:
    def outcome(self, status: str) -> None: ...
    def provider_latency(self, provider: str, ms: float) -> None: ...
    def retry(self, error: Exception, wait: float) -> None: ...
    def budget_exhausted(self) -> None: ...
