"""Caption one object: event → object reference → claim → image check → provider → row → tags.

This module knows nothing of Lambda or SQS. It takes plain values, talks to S3, DynamoDB and
the provider through its ports (``ports.py``), and either returns an ``Outcome`` (the message
is done) or raises ``RetryLater`` (the message must come back: the provider or the
configuration is at fault, not the image).

What it promises (tests/faults): a version is paid for at most once — a queued or linked
provider job is stored before anything else can fail and polled on retry, and a paid caption
is written to the row before the tags are touched; the row describes the newest version — every
write after the claim is fenced by the claim's token; and a message that leaves the queue has
a row that says what happened.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, fields
from functools import partial
from typing import Any, TypedDict

from captioner.announce import Announcer
from captioner.budget import BUDGET_REASON_PREFIX, BudgetExhausted, DailyBudget, Reservation, usd
from captioner.config import Config
from captioner.errors import (
    CaptionerError,
    ConfigError,
    ImageRejected,
    ProviderConfigError,
    ProviderError,
    ProviderImageError,
    ProviderJobGone,
    ProviderPending,
    ProviderTransientError,
)
from captioner.events import ObjectEvent, is_bucket_name
from captioner.fallback import FallbackChain
from captioner.images import ImageLimits, check_image
from captioner.limits import NoSlot, SlotsByProvider
from captioner.objects import ObjectMissing
from captioner.ports import Captions, NoTelemetry, Objects, Telemetry
from captioner.providers.base import Caption, CaptionProvider, ImageInfo, ImageSource
from captioner.requeue import MAX_DELAY_S
from captioner.retry import Backoff, call_with_retries
from captioner.store import (
    Announce,
    Claim,
    ClaimOutcome,
    ObjectRef,
    Result,
    Status,
    Unchanged,
)
from captioner.tags import TAG_SETTLED, TagStatus, is_opted_out, plan_caption_tag

# Leases are wall-clock times compared across Lambda instances: allow for their clocks to
# disagree by this much.
LEASE_SKEW_S = 10.0
# A provider slot is only worth waiting for while this much of the record's time is left.
MIN_PROVIDER_S = 3.0
# When a queued job gives no eta, or a 429 no retry_after: come back after this long.
DEFAULT_JOB_WAIT_S = 15.0
DEFAULT_RATE_LIMIT_WAIT_S = 5.0
# A paid caption's write is tried this many times (0.1, 0.2, 0.4 s apart, within the record's
# time): until it lands the caption is only in memory, and a retry of the message pays again.
SAVE_PAID_TRIES = 4

log = logging.getLogger(__name__)


class RetryLater(CaptionerError):
    """The message must be retried by SQS (and dead-lettered when retries run out)."""


class ComeBackLater(RetryLater):
    """Not a failure: the message should come back in about ``delay`` seconds. Raised only
    when ``Attempt.can_wait``; the caller then re-queues the message without counting a
    delivery (``requeue.py``)."""

    def __init__(self, reason: str, delay: float) -> None:
        super().__init__(reason)
        self.delay = delay


@dataclass(frozen=True)
class Attempt:
    """What the caller knows about this delivery."""

    deadline: float  # time.monotonic() by which this record's own work must be done
    receive_count: int = 1  # SQS ApproximateReceiveCount
    # the queue's redrive maxReceiveCount; None when the retries are not ours to count
    # (a direct invocation: Lambda retries it itself)
    max_receive_count: int | None = 5
    # time.monotonic() at which the invocation ends (Lambda's timeout); defaults to deadline
    hard_deadline: float | None = None
    # the record's provider deadline, asked for once it holds a provider slot (its fair
    # share of what is left: limits.TimeShare); None = ``deadline``
    provider_deadline: Callable[[], float] | None = None
    # how many records of the batch may still call the provider (a lease is kept for them)
    still_to_call: Callable[[], int] | None = None
    # waits (429, a long job, no slot) may re-queue the message without counting a delivery
    can_wait: bool = False

    @property
    def is_last(self) -> bool:
        return self.max_receive_count is not None and self.receive_count >= self.max_receive_count

    def lease_seconds(self) -> float:
        """A lease that outlives the invocation, so it never lapses while its holder runs."""
        end = self.hard_deadline if self.hard_deadline is not None else self.deadline
        return max(end - time.monotonic(), 0.0) + LEASE_SKEW_S


@dataclass(frozen=True)
class Outcome:
    status: Status | Unchanged
    detail: str = ""


@dataclass
class _Work:
    """One claimed object version on its way through the pipeline."""

    claim: Claim
    attempt: Attempt
    provider: CaptionProvider
    requested: str | None  # the provider the message asked for by name (a backfill), if any
    job_id: str | None  # the provider's queued job: polled, never paid again
    image: ImageInfo | None = None
    captioned: bool = False  # the paid caption is on the row: never record a retry over it
    fresh: bool = False  # this delivery paid for the caption (not an earlier one's)
    fallback_reason: str | None = None  # why a fallback provider is the one asked
    tags: Future[list[tuple[str, str]]] | None = None  # the tags read again after the call
    prepaid: Reservation | None = None  # spend reserved before the slot, for the first request
    # a re-caption by another provider: the row as the claim found it, whose caption (tag,
    # index entries) stays until the new caption is written (``_keep_caption``)
    replacing: dict[str, Any] | None = None


class Pipeline:
    def __init__(
        self,
        config: Config,
        objects: Objects,
        store: Captions,
        provider: CaptionProvider,
        telemetry: Telemetry | None = None,
        *,
        provider_for: Callable[[str], CaptionProvider] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        announcer: Announcer | None = None,
        fallback: FallbackChain | None = None,
        budget: DailyBudget | None = None,
        slots: SlotsByProvider | None = None,
    ) -> None:
        self.config = config
        self.objects = objects
        self.store = store
        self.provider = provider
        self._provider_for = provider_for
        self.telemetry = telemetry or NoTelemetry()
        self._sleep = sleep
        self.backoff = Backoff()
        # "Caption Status Changed" events (announce.py); off without a publisher
        self.announcer = announcer or Announcer(None, store)
        self.fallback = fallback  # CAPTION_FALLBACK_PROVIDERS (fallback.py); None: none
        self.budget = budget  # the daily spend cap (budget.py); None: nothing counted
        self.slots = slots or SlotsByProvider(config.provider_slots)  # limits.py
        # Independent AWS calls of one record run side by side (a tag read next to the
        # header read, the tag re-read next to the durable write): leaf calls only, so
        # this pool can never deadlock.
        self._overlap = ThreadPoolExecutor(max_workers=32, thread_name_prefix="overlap")

    def process(self, event: ObjectEvent, attempt: Attempt) -> Outcome:
        outcome = self._process(event, attempt)
        self.telemetry.outcome(outcome.status)
        return outcome

    def _process(self, event: ObjectEvent, attempt: Attempt) -> Outcome:
        if not is_bucket_name(event.bucket):  # e.g. "#w#…": the word index's partitions
            log.warning("event for an impossible bucket name ignored: %r", event.bucket[:80])
            return Outcome(Unchanged.IGNORED, "not an S3 bucket name")
        served = self.config.served_buckets
        if served and event.bucket not in served:
            # an EventBridge rule or a hand-made message for a bucket the function's role
            # was never granted: no row (it would describe a bucket nobody asked about)
            log.warning("event for bucket %r ignored: not one this deployment serves", event.bucket)
            return Outcome(
                Unchanged.IGNORED,
                f"bucket {event.bucket!r} is not served by this deployment "
                "(UploadBucket or ExistingBucketNames)",
            )
        if event.kind == "ignored":
            return Outcome(Unchanged.IGNORED, f"{event.event_name} events need no caption")
        if event.is_folder_marker:
            return Outcome(Unchanged.IGNORED, "folder marker")
        if event.kind == "removed":
            return self._removed(event)
        try:
            ref = self._resolve(event)
        except ObjectMissing:
            return Outcome(Unchanged.IGNORED, "the object no longer exists")
        if ref is None:
            return Outcome(Unchanged.STALE, "the event names a version that is no longer current")
        return self._created(ref, attempt, event.provider, force=event.force)

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
        if whole:
            # A delete of the whole object is checked against S3 before it is applied: a
            # late delete must not mark a row whose object was uploaded again since (the
            # row may have come from an event without a sequencer, which orders nothing).
            try:
                self.objects.head(event.bucket, event.key, None)
            except ObjectMissing:
                pass
            else:
                return Outcome(Unchanged.IGNORED, "the object was uploaded again since")
        marked = self.store.mark_deleted(
            event.bucket, event.key, event.version_id, event.sequencer, whole=whole,
            announce=self.announcer.for_deletes(),
        )  # fmt: skip
        if marked:
            return Outcome(Status.DELETED, "object deleted")
        return Outcome(
            Unchanged.IGNORED, "no row for this version, or a newer event already applied"
        )

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

    def _created(
        self, ref: ObjectRef, attempt: Attempt, requested: str | None, *, force: bool = False
    ) -> Outcome:
        provider = self._choose_provider(requested)
        # a provider named in the message is an explicit request, the primary's name too
        # (re-captioning a fallback's captions: `backfill --provider modelslab`)
        explicit = requested or None
        # an event without a sequencer named the current version already (``_resolve``)
        claim = self.store.claim(
            ref, attempt.lease_seconds(), explicit, current=ref.sequencer is None, force=force
        )
        if claim.outcome is ClaimOutcome.UNORDERED:
            try:
                current = self._is_current(ref)
            except ObjectMissing:
                current = False
            if not current:
                return Outcome(Unchanged.STALE, "a newer version of the object exists, or none")
            claim = self.store.claim(
                ref, attempt.lease_seconds(), explicit, current=True, force=force
            )
        if claim.outcome is ClaimOutcome.DONE:
            self.announcer.owed(claim.previous)  # an event an earlier delivery could not send
            return Outcome(Unchanged.DUPLICATE, "this version is already captioned")
        if claim.outcome is ClaimOutcome.STALE:
            return Outcome(Unchanged.STALE, "a newer version of the object is already recorded")
        if claim.outcome is ClaimOutcome.BUSY:
            raise RetryLater("another delivery of this version is being processed")
        # a re-caption polls only its own job: the caption it replaces may have had one too
        replacing = claim.replaced_caption(explicit)
        owner = None if replacing else claim.job_provider
        if owner and owner != provider.name and self._provider_for is not None:
            provider = self._provider_for(owner)  # only the job's provider can poll it
        job_id = claim.recaption_job(provider.name) if replacing else claim.job_id
        work = _Work(claim, attempt, provider, explicit, job_id=job_id, replacing=replacing)
        try:
            return self._caption(work)
        except ObjectMissing:
            if work.captioned:  # the caption stays; the delete event marks the row
                self.store.save_tag(
                    claim, TagStatus.FAILED, None, "object deleted while tagging",
                    announce=self._announce(work, Status.CAPTIONED),
                )  # fmt: skip
                return Outcome(Status.CAPTIONED, "object deleted while tagging")
            return self._save(
                work, Result(Status.DELETED, reason="object deleted while captioning")
            )
        except RetryLater:
            raise
        except Exception as exc:
            # An AWS error, a bug: the message comes back; the row must not keep claiming
            # PENDING with no reason (and says FAILED on the last delivery).
            self._record_retry(work, exc)
            raise

    def _caption(self, work: _Work) -> Outcome:
        ref = work.claim.ref
        paid = work.claim.reusable_caption(work.requested)
        if paid is not None and _parked_recaption(paid):
            # captioned and tagged; only a re-caption by name waits for the budget: it stays
            # parked as it was, for the sweep (a plain duplicate must not end it)
            kept = {f.name: paid.get(f.name) for f in fields(Result) if f.name != "status"}
            if not self.store.save_result(work.claim, Result(Status.PENDING, **kept)):
                return _taken()
            return Outcome(Unchanged.DUPLICATE, "this version is captioned; its re-caption waits")
        if paid is not None:  # an earlier delivery paid; only its tag is left to do
            work.captioned = True
            return self._tag_and_finish(work, str(paid["caption"]))
        # The opt-out tag and the image header are read side by side; the tag decides first.
        tags = self._overlap.submit(self.objects.get_tags, ref.bucket, ref.key, ref.version_id)
        try:
            checked: ImageInfo | ImageRejected = check_image(
                self._prefix_reader(ref), ref.size or 0, self.limits(work.provider)
            )
        except ImageRejected as exc:
            checked = exc
        finally:
            opted_out = is_opted_out(tags.result(), self.config.skip_tag)
        if opted_out:
            reason = f"opted out with tag {self.config.skip_tag}=true"
            return self._save(work, Result(Status.SKIPPED, reason=reason))
        if isinstance(checked, ImageRejected):
            why, fmt = checked.reason, checked.format
            return self._save(work, Result(Status.REJECTED, reason=why, format=fmt))
        info = work.image = checked
        try:
            caption = self._call_provider(work, info)
        except ProviderImageError as exc:
            return self._save(
                work, Result(Status.FAILED, reason=str(exc), last_error=str(exc),
                             provider=work.provider.name, fallback_reason=work.fallback_reason,
                             **_image_fields(info)),
            )  # fmt: skip
        except BudgetExhausted as exc:
            return self._park_for_budget(work, exc)
        except NoSlot as exc:
            raise self._wait(work, exc, str(exc), 1.0) from exc
        except (ProviderTransientError, ProviderConfigError) as exc:
            delay = _wait_for(exc)
            if delay is not None and work.attempt.can_wait:
                raise self._wait(work, exc, _wait_reason(exc, delay), delay) from exc
            self._record_retry(work, exc)
            raise RetryLater(str(exc)) from exc
        self.telemetry.provider_latency(caption.provider, caption.latency_ms)
        # Paid: make it durable before anything else can fail (the lease stays for the tag).
        # The tags are read again meanwhile; they are written only once the caption is safe.
        work.tags = self._overlap.submit(self.objects.get_tags, ref.bucket, ref.key, ref.version_id)
        result = _captioned(caption, info, work.fallback_reason)
        if not self._save_paid(work, result):
            _settle(work.tags)
            return _taken()
        work.captioned = work.fresh = True
        return self._tag_and_finish(work, caption.text)

    def _save_paid(self, work: _Work, result: Result) -> bool:
        """Write a paid caption (and keep the lease for its tag); False when the fence
        refused it (final). An error (throttling, a 500, a timeout) is tried again
        ``SAVE_PAID_TRIES`` times in all while the record's time allows."""
        delay = 0.1
        for _ in range(SAVE_PAID_TRIES - 1):
            try:
                return self.store.save_result(work.claim, result, keep_lease=True)
            except Exception as exc:
                if time.monotonic() + delay >= work.attempt.deadline:
                    break
                log.warning("writing a paid caption failed (%s); trying again", _name(exc))
                self._sleep(delay)
                delay *= 2
        try:
            return self.store.save_result(work.claim, result, keep_lease=True)
        except Exception as exc:
            # the message comes back and its next delivery pays again: say so
            log.error("a paid caption could not be written (%s): it is lost", _name(exc))
            raise

    def _tag_and_finish(self, work: _Work, text: str) -> Outcome:
        tag_status, error, ours = self._tag(work, text)
        announce = self._announce(work, Status.CAPTIONED)
        if not self.store.save_tag(work.claim, tag_status, ours, error, announce=announce):
            return _taken()
        return Outcome(Status.CAPTIONED, text)

    def _prefix_reader(self, ref: ObjectRef) -> Callable[[int], bytes]:
        return lambda n: self.objects.read_prefix(ref.bucket, ref.key, ref.version_id, n)

    def _call_provider(self, work: _Work, info: ImageInfo) -> Caption:
        """The provider call, inside one of this instance's provider slots and paid from
        the daily budget (``BudgetExhausted`` before any paid request it cannot afford)."""
        attempt = work.attempt
        if self.budget is not None and work.job_id is None:
            # reserved before waiting for the slot, so the slot never waits for the write
            work.prepaid = self.budget.reserve(work.provider.price_usd)
        try:
            slots = self.slots(work.provider)
            # a deployment-wide lease, if any, outlives the invocation like the claim's lease
            with slots.hold(
                attempt.deadline - MIN_PROVIDER_S, attempt.lease_seconds(), attempt.still_to_call
            ):
                share = (
                    attempt.provider_deadline() if attempt.provider_deadline else attempt.deadline
                )
                # a share too short for one request helps no one: at least MIN_PROVIDER_S
                share = max(share, time.monotonic() + MIN_PROVIDER_S)
                return self._call_in_slot(work, info, min(share, attempt.deadline))
        finally:
            if work.prepaid is not None and self.budget is not None:  # never used: no request
                self.budget.refund(work.prepaid)
                work.prepaid = None

    def _call_in_slot(self, work: _Work, info: ImageInfo, deadline: float) -> Caption:
        ref = work.claim.ref
        size_limit = self.config.max_image_bytes
        image = ImageSource(
            info=info,
            read=lambda: self.objects.read_all(ref.bucket, ref.key, ref.version_id, size_limit),
            url=self.objects.presign(ref.bucket, ref.key, ref.version_id, self.config.url_expires)
            if self.config.image_transport == "url"
            else None,
            name=f"s3://{ref.bucket}/{ref.key}",
        )

        def attempt(provider: CaptionProvider, deadline: float, why: str | None) -> Caption:
            work.provider, work.fallback_reason = provider, why

            def once() -> Caption:
                # reads work.job_id anew each time: a job queued by the previous try is polled
                # (free); a request for a new job is paid, so its spend is reserved first
                if work.job_id is not None:
                    try:
                        return provider.caption(
                            image, self.config.length, deadline=deadline, job_id=work.job_id,
                            on_job=partial(self._remember_job, work),
                        )  # fmt: skip
                    except ProviderJobGone:
                        work.job_id = None
                return self._paid(work, provider, lambda: provider.caption(
                    image, self.config.length, deadline=deadline,
                    on_job=partial(self._remember_job, work),
                ))  # fmt: skip

            return call_with_retries(
                once, deadline=deadline, backoff=self.backoff,
                on_retry=self.telemetry.retry, sleep=self._sleep,
            )  # fmt: skip

        if self.fallback is None or work.requested or work.job_id:
            # no fallbacks; a provider asked for by name; or a job to poll: that provider only
            return attempt(work.provider, deadline, None)
        return self.fallback.caption(
            work.provider, info.format, attempt, deadline=deadline,
            job_pending=lambda: work.job_id is not None,
        )  # fmt: skip

    def _paid(
        self, work: _Work, provider: CaptionProvider, request: Callable[[], Caption]
    ) -> Caption:
        """A paid request, with its price reserved first and given back when it turned out
        unpaid (a queued job or a reply that may have been charged keeps it)."""
        reservation, work.prepaid = work.prepaid, None
        if self.budget is not None:
            if reservation is not None and reservation.amount != usd(provider.price_usd):
                self.budget.refund(reservation)  # reserved for the primary; a fallback asks
                reservation = None
            if reservation is None:
                reservation = self.budget.reserve(provider.price_usd)
        try:
            return request()
        except ProviderPending as exc:  # a job was queued: paid, and polled from now on
            if exc.job_id and work.job_id != exc.job_id:
                self._remember_job(work, exc.job_id)
            raise
        except ProviderError as exc:
            if not exc.maybe_charged and self.budget is not None:
                self.budget.refund(reservation)
            raise

    def _remember_job(self, work: _Work, job_id: str) -> None:
        work.job_id = job_id
        recaption = work.replacing is not None
        self.store.record_job(work.claim, job_id, work.provider.name, recaption=recaption)

    def _keep_caption(self, work: _Work, result: Result) -> Result:
        """A re-caption that did not produce its caption leaves the one the row has (its
        tag ownership and index entries too) and says how the re-caption stands: PENDING
        while it waits or will be retried, FAILED when it gave up. The row stays CAPTIONED,
        except over the budget: PENDING then, so that the budget sweep finds it."""
        kept = work.replacing
        if kept is None or result.status is Status.DELETED:
            return result
        parked = result.status is Status.PENDING and (result.reason or "").startswith(
            BUDGET_REASON_PREFIX
        )
        why = result.reason or ""
        if result.last_error and result.last_error not in why:
            why = f"{why}: {result.last_error}" if why else result.last_error
        return Result(
            Status.PENDING if parked else Status.CAPTIONED,
            **{name: kept.get(name) for name in _CAPTION_FIELDS},
            reason=result.reason if parked else kept.get("reason"),
            requested_provider=work.requested,
            recaption_status="PENDING" if result.status is Status.PENDING else "FAILED",
            recaption_reason=why[:1000],
            recaption_provider=work.provider.name,
            recaption_job_id=work.job_id,
        )

    def _tag(self, work: _Work, text: str) -> tuple[TagStatus, str | None, str | None]:
        """(tag_status, error, the value now on the object that is ours or None).

        The tags are read again here, not reused from before the provider call: PutObjectTagging
        replaces the whole set, and tags the uploader added meanwhile must survive.

        In an unversioned bucket the key may name a new object by now, and S3 cannot make a
        tag write conditional: the ETag is checked just before the write and again after it,
        and a caption that landed on a replacement is taken off again.
        """
        ref = work.claim.ref
        if work.tags is not None:  # read next to the durable write
            tags, work.tags = work.tags.result(), None
        else:
            tags = self.objects.get_tags(ref.bucket, ref.key, ref.version_id)
        plan = plan_caption_tag(tags, self.config.tag_key, text, ours=work.claim.our_tag)
        ours = plan.value if plan.status is TagStatus.WRITTEN else None
        if plan.tags is None:
            return plan.status, None, ours
        pinned = ref.version_id is None
        if pinned and not self._is_current(ref):
            return TagStatus.FAILED, "the object was replaced while it was captioned", None
        try:
            self.objects.put_tags(ref.bucket, ref.key, ref.version_id, plan.tags)
        except ObjectMissing:
            raise
        except Exception as exc:  # the caption is paid for: keep it, say why
            return TagStatus.FAILED, f"tag not written: {type(exc).__name__}: {exc}"[:500], None
        if pinned and not self._is_current(ref):
            self._untag(ref, plan.value)
            return TagStatus.FAILED, "the object was replaced while it was tagged", None
        return plan.status, None, ours

    def _is_current(self, ref: ObjectRef) -> bool:
        head = self.objects.head(ref.bucket, ref.key, None)
        return (head.version_id, head.etag) == (ref.version_id, ref.etag)

    def _untag(self, ref: ObjectRef, value: str) -> None:
        """Take our caption off a replacement object (best effort: its own caption run
        replaces a leftover anyway, since the value is remembered as ours on the row)."""
        with contextlib.suppress(Exception):
            tags = self.objects.get_tags(ref.bucket, ref.key, None)
            if (self.config.tag_key, value) in tags:
                kept = [(k, v) for k, v in tags if k != self.config.tag_key]
                if kept:
                    self.objects.put_tags(ref.bucket, ref.key, None, kept)
                else:
                    self.objects.delete_tags(ref.bucket, ref.key, None)

    def _record_retry(self, work: _Work, exc: Exception) -> None:
        """Say on the row why the message is coming back, and FAILED when it will not.

        Never over a paid caption (the next delivery finishes its tag), and best effort: when
        the store itself is what failed, the original error matters more.
        """
        if work.captioned:
            return
        attempt = work.attempt
        if attempt.is_last:
            status = Status.FAILED
            reason = f"gave up after {attempt.receive_count} deliveries; message dead-lettered"
        else:
            status, reason = Status.PENDING, "will retry"
        if isinstance(exc, ProviderConfigError):
            reason = f"provider configuration: {exc}; {reason} (redrive after fixing it)"
        error = str(exc) if isinstance(exc, ProviderError) else f"{type(exc).__name__}: {exc}"
        result = self._keep_caption(work, Result(
            status, reason=reason, last_error=error[:1000], provider=work.provider.name,
            provider_job_id=work.job_id, requested_provider=work.requested,
            **_image_fields(work.image),
        ))  # fmt: skip
        failed = status is Status.FAILED and work.replacing is None
        announce = self._announce(work, status) if failed else None
        with contextlib.suppress(Exception):  # the caller re-raises the original error
            self.store.save_result(work.claim, result, keep_lease=False, announce=announce)

    def _wait(self, work: _Work, exc: Exception, reason: str, delay: float) -> RetryLater:
        """A wait, not a failure: the row says why (PENDING, no lease, the job kept) and the
        message comes back after ``delay`` without counting a delivery when it can."""
        if not work.attempt.can_wait:
            self._record_retry(work, exc)
            return RetryLater(str(exc))
        result = self._keep_caption(work, Result(
            Status.PENDING, reason=reason, last_error=str(exc)[:1000],
            provider=work.provider.name, provider_job_id=work.job_id,
            fallback_reason=work.fallback_reason, requested_provider=work.requested,
            **_image_fields(work.image),
        ))  # fmt: skip
        with contextlib.suppress(Exception):  # the wait happens either way
            self.store.save_result(work.claim, result, keep_lease=False)
        return ComeBackLater(reason, delay)

    def _park_for_budget(self, work: _Work, exc: BudgetExhausted) -> Outcome:
        """Over today's cap: no provider call. The row stays PENDING with the reason and the
        message is consumed; the budget sweep re-queues the row when money is available
        (sweep.py), so nothing is lost and nothing is dead-lettered for the budget."""
        self.telemetry.budget_exhausted()
        result = Result(
            Status.PENDING, reason=exc.reason, provider=work.provider.name,
            provider_job_id=work.job_id, requested_provider=work.requested,
            **_image_fields(work.image),
        )  # fmt: skip
        return self._save(work, result)

    def _save(self, work: _Work, result: Result) -> Outcome:
        if work.replacing is not None and result.status is not Status.DELETED:
            result = self._keep_caption(work, result)
            if not self.store.save_result(work.claim, result):  # no news: no event
                return _taken()
            return Outcome(result.status, f"re-caption {result.recaption_status}: "
                           f"{result.recaption_reason}")  # fmt: skip
        announce = self._announce(work, result.status)
        if not self.store.save_result(work.claim, result, announce=announce):
            return _taken()
        return Outcome(result.status, result.reason or result.caption or "")

    def _announce(self, work: _Work, status: Status) -> Announce | None:
        """The event callback for a final write of this delivery, or None: no news."""
        previous = work.claim.previous if work.claim.same_revision else None
        return self.announcer.for_transition(previous, status, paid=work.fresh)


# What a kept caption keeps of the row (``Pipeline._keep_caption``): the caption and what
# describes it, its tag, and why a fallback made it.
_CAPTION_FIELDS = (
    "caption", "provider", "model", "labels", "length", "format", "width", "height",
    "provider_latency_ms", "provider_job_id", "tag_status", "tag_value", "fallback_reason",
)  # fmt: skip


def _parked_recaption(row: dict[str, Any]) -> bool:
    """A row whose caption and tag are done and whose re-caption waits for the budget."""
    return (
        row.get("status") == Status.PENDING
        and row.get("recaption_status") == "PENDING"
        and str(row.get("reason") or "").startswith(BUDGET_REASON_PREFIX)
        and row.get("tag_status") in TAG_SETTLED
    )


def _name(exc: Exception) -> str:
    """The error's type and AWS code, without its message (it may quote the row)."""
    response = getattr(exc, "response", None)
    code = response.get("Error", {}).get("Code") if isinstance(response, dict) else None
    return f"{type(exc).__name__}: {code}" if code else type(exc).__name__


def _wait_for(exc: Exception) -> float | None:
    """How long to wait before trying again, when the error is a wait and not a failure:
    a job still processing (its eta), or a rate limit (its retry_after)."""
    if isinstance(exc, ProviderPending):
        return min(exc.retry_after or DEFAULT_JOB_WAIT_S, MAX_DELAY_S)
    if isinstance(exc, ProviderTransientError) and exc.rate_limited:
        return min(exc.retry_after or DEFAULT_RATE_LIMIT_WAIT_S, MAX_DELAY_S)
    return None


def _wait_reason(exc: Exception, delay: float) -> str:
    if isinstance(exc, ProviderPending):
        return f"waiting for provider job {exc.job_id}: polled again in about {delay:.0f} s"
    return f"provider rate limit: tried again in about {delay:.0f} s"


def _settle(future: Future[list[tuple[str, str]]] | None) -> None:
    """Wait for a side call whose result is no longer needed (and ignore its errors)."""
    if future is not None:
        with contextlib.suppress(Exception):
            future.result()


def _taken() -> Outcome:
    return Outcome(
        Unchanged.STALE, "a delete or a newer version took the row while this one was processed"
    )


class _ImageFields(TypedDict, total=False):
    format: str
    width: int
    height: int


def _image_fields(info: ImageInfo | None) -> _ImageFields:
    if info is None:
        return {}
    return {"format": info.format, "width": info.width, "height": info.height}


def _captioned(caption: Caption, info: ImageInfo, fallback_reason: str | None) -> Result:
    labels = [{"label": lb.name, "score": round(lb.score, 4)} for lb in caption.labels]
    return Result(
        Status.CAPTIONED, caption=caption.text, provider=caption.provider,
        fallback_reason=fallback_reason,
        length=caption.length, model=caption.model, labels=labels or None,
        provider_latency_ms=round(caption.latency_ms, 1), provider_job_id=caption.job_id,
        format=info.format, width=info.width, height=info.height,
    )  # fmt: skip
