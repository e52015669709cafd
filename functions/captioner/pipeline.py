"""Caption one object: event → object reference → image check → provider → tags → row.

This module knows nothing of Lambda or SQS. It takes plain values, talks to S3, DynamoDB and
the provider through small adapters, and either returns an ``Outcome`` (the message is done)
or raises ``RetryLater`` (the message must come back: the provider or the configuration is at
fault, not the image).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from captioner.config import Config
from captioner.errors import (
    CaptionerError,
    ConfigError,
    ImageRejected,
    ProviderConfigError,
    ProviderError,
    ProviderImageError,
    ProviderTransientError,
)
from captioner.events import ObjectEvent
from captioner.images import ImageLimits, check_image
from captioner.objects import ObjectMissing, ObjectStore
from captioner.providers.base import Caption, CaptionProvider, ImageInfo, ImageSource
from captioner.retry import Backoff, call_with_retries
from captioner.store import CaptionStore, ClaimOutcome, ObjectRef, Status
from captioner.tags import TagPlan, TagStatus, is_opted_out, plan_caption_tag

# Fields that describe one version's result; cleared when a new version takes the row.
RESULT_FIELDS = (
    "caption", "reason", "last_error", "provider", "provider_job_id", "model", "labels",
    "length", "format", "width", "height", "tag_status", "tag_value", "provider_latency_ms",
    "deleted_at", "provider_job_rev",
)  # fmt: skip


class RetryLater(CaptionerError):
    """The message must be retried by SQS (and dead-lettered when retries run out)."""


@dataclass(frozen=True)
class Attempt:
    """What the caller knows about this delivery."""

    deadline: float  # time.monotonic() by which this record must be done
    receive_count: int = 1  # SQS ApproximateReceiveCount
    # the queue's redrive maxReceiveCount; None when the retries are not ours to count
    # (a direct invocation: Lambda retries it itself)
    max_receive_count: int | None = 5

    @property
    def is_last(self) -> bool:
        return self.max_receive_count is not None and self.receive_count >= self.max_receive_count


@dataclass(frozen=True)
class Outcome:
    status: str  # a row Status, or IGNORED / DUPLICATE / STALE for messages with nothing to do
    detail: str = ""


@dataclass
class _Job:
    """One object version being captioned, and what an earlier attempt left for it."""

    ref: ObjectRef
    attempt: Attempt
    provider: CaptionProvider
    base: dict[str, Any]  # row fields every outcome writes
    job_id: str | None  # the provider's queued job (from an earlier attempt): poll it
    our_tag: str | None  # the caption tag value we wrote earlier: ours to replace


class Telemetry(Protocol):
    def outcome(self, status: str) -> None: ...
    def provider_latency(self, provider: str, ms: float) -> None: ...
    def retry(self, error: Exception, wait: float) -> None: ...


class NoTelemetry:
    def outcome(self, status: str) -> None: ...
    def provider_latency(self, provider: str, ms: float) -> None: ...
    def retry(self, error: Exception, wait: float) -> None: ...


class Pipeline:
    def __init__(
        self,
        config: Config,
        objects: ObjectStore,
        store: CaptionStore,
        provider: CaptionProvider,
        telemetry: Telemetry | None = None,
        *,
        provider_for: Callable[[str], CaptionProvider] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.config = config
        self.objects = objects
        self.store = store
        self.provider = provider
        self._provider_for = provider_for
        self.telemetry = telemetry or NoTelemetry()
        self._sleep = sleep
        self.backoff = Backoff()

    def process(self, event: ObjectEvent, attempt: Attempt) -> Outcome:
        outcome = self._process(event, attempt)
        self.telemetry.outcome(outcome.status)
        return outcome

    def _process(self, event: ObjectEvent, attempt: Attempt) -> Outcome:
        if event.kind == "ignored":
            return Outcome("IGNORED", f"{event.event_name} events need no caption")
        if event.is_folder_marker:
            return Outcome("IGNORED", "folder marker")
        if event.kind == "removed":
            return self._removed(event)
        try:
            ref = self._resolve(event)
        except ObjectMissing:
            return Outcome("IGNORED", "the object no longer exists")
        if ref is None:
            return Outcome("STALE", "the event names a version that is no longer current")
        return self._created(ref, attempt, self._choose_provider(event.provider))

    def _choose_provider(self, name: str | None) -> CaptionProvider:
        if not name or name == self.provider.name:
            return self.provider
        if self._provider_for is None:
            raise ConfigError(
                f"provider {name!r} was requested but only {self.provider.name} is set up"
            )
        return self._provider_for(name)

    def limits(self, provider: CaptionProvider) -> ImageLimits:
        return ImageLimits(
            formats=provider.formats,
            max_bytes=self.config.max_image_bytes,
            max_pixels=self.config.max_image_pixels,
            header_bytes=self.config.header_bytes,
            max_header_bytes=self.config.max_header_bytes,
        )

    # -- removal -----------------------------------------------------------------------------

    def _removed(self, event: ObjectEvent) -> Outcome:
        whole = event.is_delete_marker or not event.version_id
        marked = self.store.mark_deleted(
            event.bucket, event.key, event.version_id, event.sequencer, whole=whole
        )
        if marked:
            return Outcome(Status.DELETED, "object deleted")
        return Outcome("IGNORED", "no row for this version, or a newer event already applied")

    # -- creation ----------------------------------------------------------------------------

    def _resolve(self, event: ObjectEvent) -> ObjectRef | None:
        """The version to caption, or None when the event names a version that is no longer
        the current one.

        Events from real S3 carry a sequencer, which orders them: they are taken as they are.
        Without one (moto, backfill) nothing orders a late message against a newer upload, so
        a HEAD of the current object decides: only the current version is captioned.
        """
        version, etag, size = event.version_id, event.etag, event.size
        if event.sequencer is None:
            head = self.objects.head(event.bucket, event.key, None)
            if version is not None and head.version_id != version:
                return None
            version, etag, size = head.version_id, head.etag, head.size
        elif size is None or etag is None:
            head = self.objects.head(event.bucket, event.key, version)
            version, etag, size = head.version_id, head.etag, head.size
        return ObjectRef(event.bucket, event.key, version, etag, size, event.sequencer)

    def _created(self, ref: ObjectRef, attempt: Attempt, provider: CaptionProvider) -> Outcome:
        lease = datetime.now(UTC) + timedelta(seconds=max(attempt.deadline - time.monotonic(), 1))
        claim = self.store.claim(
            ref, lease.strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z", provider.name
        )
        if claim.outcome is ClaimOutcome.DONE:
            return Outcome("DUPLICATE", "this version is already captioned")
        if claim.outcome is ClaimOutcome.STALE:
            return Outcome("STALE", "a newer version of the object is already recorded")
        if claim.outcome is ClaimOutcome.BUSY:
            raise RetryLater("another delivery of this version is being processed")
        previous = (claim.previous or {}) if claim.same_revision(ref) else {}
        job = _Job(
            ref=ref,
            attempt=attempt,
            provider=provider,
            base={
                "attempts": int(previous.get("attempts", 0)) + 1,
                "version_id": ref.version_id,
                "etag": ref.etag,
                "size": ref.size,
            },
            # a job id is only reused for the revision it was queued for
            job_id=previous.get("provider_job_id")
            if previous.get("provider_job_rev") == ref.revision
            else None,
            our_tag=previous.get("tag_value"),
        )
        try:
            return self._caption(job)
        except ObjectMissing:
            return self._finish(
                ref, job.base, Status.DELETED, reason="object deleted while captioning"
            )
        except RetryLater:
            raise
        except Exception as exc:
            # An AWS error, a bug: the message comes back; the row must not keep claiming
            # PENDING with no reason (and says FAILED on the last delivery).
            self._record_retry(ref, job.base, exc, attempt, provider.name, job.job_id)
            raise

    def _caption(self, job: _Job) -> Outcome:
        ref, base = job.ref, job.base
        tags = self.objects.get_tags(ref.bucket, ref.key, ref.version_id)
        if is_opted_out(tags, self.config.skip_tag):
            reason = f"opted out with tag {self.config.skip_tag}=true"
            return self._finish(ref, base, Status.SKIPPED, reason=reason)
        try:
            info = check_image(self._prefix_reader(ref), ref.size or 0, self.limits(job.provider))
        except ImageRejected as exc:
            return self._finish(ref, base, Status.REJECTED, reason=exc.reason, format=exc.format)
        base = base | {"format": info.format, "width": info.width, "height": info.height}
        try:
            caption = self._call_provider(job, info)
        except ProviderImageError as exc:
            return self._finish(
                ref, base, Status.FAILED, reason=str(exc), last_error=str(exc),
                provider=job.provider.name,
            )  # fmt: skip
        except (ProviderTransientError, ProviderConfigError) as exc:
            self._record_retry(ref, base, exc, job.attempt, job.provider.name, job.job_id)
            raise RetryLater(str(exc)) from exc
        self.telemetry.provider_latency(caption.provider, caption.latency_ms)
        tag_status, tag_error, tag_written = self._tag(job, caption.text)
        return self._finish(
            ref, base, Status.CAPTIONED,
            caption=caption.text, provider=caption.provider, length=caption.length,
            model=caption.model, provider_job_id=caption.job_id,
            provider_job_rev=ref.revision if caption.job_id else None,
            labels=[{"label": lb.name, "score": round(lb.score, 4)} for lb in caption.labels]
            or None,
            provider_latency_ms=round(caption.latency_ms, 1),
            tag_status=tag_status, tag_value=tag_written, last_error=tag_error,
        )  # fmt: skip

    def _prefix_reader(self, ref: ObjectRef) -> Callable[[int], bytes]:
        return lambda n: self.objects.read_prefix(ref.bucket, ref.key, ref.version_id, n)

    def _call_provider(self, job: _Job, info: ImageInfo) -> Caption:
        ref, provider, deadline = job.ref, job.provider, job.attempt.deadline
        size_limit = self.config.max_image_bytes
        image = ImageSource(
            info=info,
            read=lambda: self.objects.read_all(ref.bucket, ref.key, ref.version_id, size_limit),
            url=self.objects.presign(ref.bucket, ref.key, ref.version_id, self.config.url_expires)
            if self.config.image_transport == "url"
            else None,
            name=f"s3://{ref.bucket}/{ref.key}",
        )

        def once(job_id: str | None) -> Caption:
            return provider.caption(
                image, self.config.length, deadline=deadline, job_id=job_id,
                on_job=lambda new_job: self._remember_job(job, new_job),
            )  # fmt: skip

        return call_with_retries(
            once, deadline=deadline, job_id=job.job_id, backoff=self.backoff,
            on_retry=self.telemetry.retry, sleep=self._sleep,
        )  # fmt: skip

    def _remember_job(self, job: _Job, job_id: str) -> None:
        job.job_id = job_id
        self.store.record_job(job.ref, job_id, job.provider.name)

    def _tag(self, job: _Job, text: str) -> tuple[str, str | None, str | None]:
        """(tag_status, error, the value now on the object that is ours or None).

        The tags are read again here, not reused from before the provider call: PutObjectTagging
        replaces the whole set, and tags the uploader added meanwhile must survive.
        """
        ref = job.ref
        tags = self.objects.get_tags(ref.bucket, ref.key, ref.version_id)
        plan: TagPlan = plan_caption_tag(tags, self.config.tag_key, text, ours=job.our_tag)
        ours = plan.value if plan.status is TagStatus.WRITTEN else None
        if plan.tags is None:
            return plan.status.value, None, ours
        try:
            self.objects.put_tags(ref.bucket, ref.key, ref.version_id, plan.tags)
        except ObjectMissing:
            raise
        except Exception as exc:  # the caption is paid for: keep it, say why
            error = f"tag not written: {type(exc).__name__}: {exc}"[:500]
            return TagStatus.FAILED.value, error, None
        return plan.status.value, None, ours

    def _record_retry(
        self,
        ref: ObjectRef,
        fields: dict[str, Any],
        exc: Exception,
        attempt: Attempt,
        provider_name: str,
        job_id: str | None,
    ) -> None:
        """Say on the row why the message is coming back, and FAILED when it will not.

        Best effort: when the store itself is what failed, the original error matters more.
        """
        if attempt.is_last:
            status = Status.FAILED
            reason = f"gave up after {attempt.receive_count} deliveries; message dead-lettered"
        else:
            status, reason = Status.PENDING, "will retry"
        if isinstance(exc, ProviderConfigError):
            reason = f"provider configuration: {exc}; {reason} (redrive after fixing it)"
        error = str(exc) if isinstance(exc, ProviderError) else f"{type(exc).__name__}: {exc}"
        row = fields | {
            "status": status.value, "reason": reason, "last_error": error[:1000],
            "provider": provider_name, "lease_until": None,
            "provider_job_id": job_id, "provider_job_rev": ref.revision if job_id else None,
        }  # fmt: skip
        with contextlib.suppress(Exception):  # the caller re-raises the original error
            self.store.finish(ref, row, remove=[f for f in RESULT_FIELDS if f not in row])

    def _finish(
        self, ref: ObjectRef, base: dict[str, Any], status: Status, **fields: Any
    ) -> Outcome:
        row = {**base, "status": status.value, "lease_until": None, **fields}
        if status is not Status.FAILED and "last_error" not in fields:
            row["last_error"] = None
        if status in (Status.CAPTIONED, Status.REJECTED, Status.SKIPPED, Status.DELETED):
            row.setdefault("reason", None)
        removable = [f for f in RESULT_FIELDS if f not in row]
        if not self.store.finish(ref, row, removable):
            return Outcome("STALE", "a newer version took the row while this one was processed")
        detail = str(fields.get("reason") or fields.get("caption") or "")
        return Outcome(status.value, detail)
