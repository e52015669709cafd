"""The pipeline's decisions, with in-memory ports (tests/fakes/memory.py): no AWS, no HTTP.

The moto tests (tests/integration, tests/faults) cover the adapters and the handler end to
end; these say what the pipeline decides for each situation, and what that costs."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from captioner.config import Config
from captioner.errors import ProviderConfigError, ProviderImageError, ProviderTransientError
from captioner.events import ObjectEvent
from captioner.pipeline import SAVE_PAID_TRIES, Attempt, Pipeline, RetryLater
from captioner.retry import Backoff
from captioner.store import Status, Unchanged
from tests.fakes.memory import (
    MemoryCaptions,
    MemoryObjects,
    RecordedTelemetry,
    ScriptedProvider,
    Step,
    after,
    answer,
    fail,
    queue,
)
from tests.images import png

BUCKET = "photos"
KEY = "cats/tabby.png"


@dataclass
class World:
    """A pipeline wired to in-memory ports, and the ports, to arrange and inspect."""

    versioned: bool = True
    env: dict[str, str] = field(default_factory=dict)
    clock_offset: timedelta = timedelta()  # the store's wall clock runs this far ahead
    objects: MemoryObjects = field(init=False)
    store: MemoryCaptions = field(init=False)
    provider: ScriptedProvider = field(init=False)
    telemetry: RecordedTelemetry = field(init=False)
    pipeline: Pipeline = field(init=False)

    def __post_init__(self) -> None:
        self.objects = MemoryObjects(versioned=self.versioned)
        self.store = MemoryCaptions(clock=lambda: datetime.now(UTC) + self.clock_offset)
        self.provider = ScriptedProvider()
        self.telemetry = RecordedTelemetry()
        config = Config.from_env({"CAPTIONS_TABLE": "captions", **self.env})
        self.pipeline = Pipeline(
            config, self.objects, self.store, self.provider, self.telemetry,
            sleep=lambda seconds: None,
        )  # fmt: skip
        self.pipeline.backoff = Backoff(base=0.001, cap=0.001, max_attempts=3)

    def script(self, *steps: Step) -> None:
        self.provider.script = list(steps)

    def upload(
        self, body: bytes | None = None, tags=(), key: str = KEY, sequencer: str | None = None
    ) -> ObjectEvent:
        """Put an object and return its ObjectCreated event. Without a ``sequencer`` (as from
        moto or a backfill) the pipeline HEADs the object to know the version is current."""
        head = self.objects.put(BUCKET, key, png() if body is None else body, tags)
        return ObjectEvent(
            "created", BUCKET, key, "ObjectCreated:Put",
            head.version_id, head.etag, head.size, sequencer,
        )  # fmt: skip

    def deliver(self, event: ObjectEvent, receive_count: int = 1):
        attempt = Attempt(
            deadline=time.monotonic() + 30, receive_count=receive_count, max_receive_count=5
        )
        return self.pipeline.process(event, attempt)

    def row(self, key: str = KEY) -> dict:
        row = self.store.get(BUCKET, key)
        assert row is not None, "no row"
        return row


@pytest.fixture
def world() -> World:
    return World()


# -- the usual path ----------------------------------------------------------------------------


def test_an_image_is_paid_once_recorded_and_tagged(world):
    event = world.upload(tags=[("owner", "ana")])
    outcome = world.deliver(event)
    assert outcome.status is Status.CAPTIONED and outcome.detail == "a cat"
    row = world.row()
    assert row["status"] == "CAPTIONED" and row["caption"] == "a cat"
    assert row["tag_status"] == "WRITTEN" and "lease_until" not in row
    assert (row["format"], row["width"], row["height"]) == ("PNG", 64, 48)
    assert world.objects.tags_of(BUCKET, KEY) == [("owner", "ana"), ("caption", "a cat")]
    assert world.provider.paid == 1 and world.provider.calls[0].url  # a presigned URL
    assert world.telemetry.outcomes == ["CAPTIONED"]


def test_a_duplicate_delivery_of_a_captioned_version_pays_nothing(world):
    event = world.upload()
    world.deliver(event)
    assert world.deliver(event).status is Unchanged.DUPLICATE
    assert world.provider.paid == 1


def test_a_delivery_while_another_holds_the_lease_comes_back_later(world):
    event = world.upload()

    def duplicate_delivery() -> None:
        with pytest.raises(RetryLater, match="another delivery"):
            world.deliver(event)

    world.script(after(duplicate_delivery, answer("a cat")))
    assert world.deliver(event).status is Status.CAPTIONED
    assert world.provider.paid == 1  # the duplicate was refused (BUSY), not paid


# -- decided without the provider ------------------------------------------------------------


def test_an_opted_out_object_is_skipped_without_a_provider_call(world):
    event = world.upload(tags=[("caption-skip", " TRUE ")])
    outcome = world.deliver(event)
    assert outcome.status is Status.SKIPPED and "caption-skip" in outcome.detail
    assert world.row()["status"] == "SKIPPED" and world.provider.calls == []


def test_something_that_is_not_an_image_is_rejected_for_free(world):
    outcome = world.deliver(world.upload(b"%PDF-1.7 not an image"))
    assert outcome.status is Status.REJECTED
    row = world.row()
    assert row["status"] == "REJECTED" and row["reason"] and "lease_until" not in row
    assert world.provider.calls == []


def test_an_event_for_a_version_that_is_no_longer_current_is_stale(world):
    old = world.upload()
    world.upload(png(32, 32))  # a newer version replaced it
    assert world.deliver(old).status is Unchanged.STALE
    assert world.store.get(BUCKET, KEY) is None and world.provider.calls == []


def test_an_object_gone_before_its_event_arrives_is_ignored(world):
    event = world.upload()
    world.objects.delete(BUCKET, KEY)
    assert world.deliver(event).status is Unchanged.IGNORED
    assert world.store.get(BUCKET, KEY) is None


@pytest.mark.parametrize(
    ("name", "key"),
    [("ObjectTagging:Put", KEY), ("ObjectCreated:Put", "cats/")],
    ids=["tagging event", "folder marker"],
)
def test_events_that_need_no_caption_are_ignored(world, name, key):
    kind = "ignored" if name.startswith("ObjectTagging") else "created"
    event = ObjectEvent(kind, BUCKET, key, name)
    assert world.deliver(event).status is Unchanged.IGNORED
    assert world.store.calls == [] and world.objects.calls == []


# -- what the provider says -----------------------------------------------------------------


def test_an_image_the_provider_cannot_read_fails_for_good(world):
    world.script(fail(ProviderImageError("image is corrupt")))
    outcome = world.deliver(world.upload())  # no RetryLater: the message is done
    assert outcome.status is Status.FAILED
    row = world.row()
    assert row["reason"] == row["last_error"] == "image is corrupt"
    assert row["provider"] == "modelslab" and row["format"] == "PNG"
    assert len(world.provider.calls) == 1  # never retried in-process


def test_a_transient_fault_leaves_the_row_pending_and_the_message_coming_back(world):
    world.script(*[fail(ProviderTransientError("HTTP 503"))] * 3)
    with pytest.raises(RetryLater, match="HTTP 503"):
        world.deliver(world.upload())
    row = world.row()
    assert row["status"] == "PENDING" and row["reason"] == "will retry"
    assert row["last_error"] == "HTTP 503" and "lease_until" not in row  # free to retry
    assert len(world.provider.calls) == 3 and len(world.telemetry.retries) == 2


def test_the_last_delivery_records_failed_and_why(world):
    world.script(*[fail(ProviderTransientError("HTTP 503"))] * 3)
    with pytest.raises(RetryLater):
        world.deliver(world.upload(), receive_count=5)
    row = world.row()
    assert row["status"] == "FAILED"
    assert row["reason"] == "gave up after 5 deliveries; message dead-lettered"


def test_a_provider_configuration_fault_says_so_and_is_not_retried_in_process(world):
    world.script(fail(ProviderConfigError("invalid API key")))
    with pytest.raises(RetryLater):
        world.deliver(world.upload())
    assert world.row()["reason"] == (
        "provider configuration: invalid API key; will retry (redrive after fixing it)"
    )
    assert len(world.provider.calls) == 1


def test_an_unexpected_error_is_recorded_on_the_row_and_raised(world):
    world.objects.fail["read_prefix"] = RuntimeError("disk on fire")
    with pytest.raises(RuntimeError):
        world.deliver(world.upload())
    row = world.row()
    assert row["status"] == "PENDING" and row["last_error"] == "RuntimeError: disk on fire"


# -- paid at most once ---------------------------------------------------------------------


def test_a_queued_job_is_remembered_and_polled_by_the_next_delivery(world):
    world.pipeline.backoff = Backoff(max_attempts=1)  # give up in-process after one call
    event = world.upload()
    world.script(queue("job-7"))
    with pytest.raises(RetryLater):
        world.deliver(event)
    assert world.row()["provider_job_id"] == "job-7"
    world.script(answer("a cat", job_id="job-7"))
    assert world.deliver(event, receive_count=2).status is Status.CAPTIONED
    assert [c.job_id for c in world.provider.calls] == [None, "job-7"]
    assert world.provider.paid == 1 and world.row()["attempts"] == 2


class Killed(BaseException):
    """The instance died (timeout, out of memory): no ``except Exception`` runs."""


def test_a_job_is_stored_as_soon_as_it_is_queued_so_a_crash_cannot_make_us_pay_again(world):
    event = world.upload()

    def queued_then_killed(call, on_job):
        on_job("job-9")
        raise Killed

    world.script(queued_then_killed)
    with pytest.raises(Killed):
        world.deliver(event)
    world.clock_offset = timedelta(minutes=5)  # the dead instance's lease runs out
    world.script(answer("a cat", job_id="job-9"))
    assert world.deliver(event, receive_count=2).status is Status.CAPTIONED
    assert [c.job_id for c in world.provider.calls] == [None, "job-9"]
    assert world.provider.paid == 1


def test_a_queued_job_is_polled_within_the_same_delivery(world):
    world.script(queue("job-8"), answer("a cat", job_id="job-8"))
    assert world.deliver(world.upload()).status is Status.CAPTIONED
    assert [c.job_id for c in world.provider.calls] == [None, "job-8"]
    assert world.row()["provider_job_id"] == "job-8"


def test_a_paid_caption_is_reused_when_only_its_tag_is_left(world):
    event = world.upload()
    world.objects.fail["put_tags"] = RuntimeError("SlowDown")
    assert world.deliver(event).status is Status.CAPTIONED  # paid, tag not written
    assert world.row()["tag_status"] == "FAILED" and "SlowDown" in world.row()["last_error"]
    del world.objects.fail["put_tags"]
    assert world.deliver(event, receive_count=2).status is Status.CAPTIONED
    assert world.row()["tag_status"] == "WRITTEN" and "last_error" not in world.row()
    assert world.objects.tags_of(BUCKET, KEY) == [("caption", "a cat")]
    assert world.provider.paid == 1


def test_a_paid_caption_whose_write_fails_is_written_again_not_paid_again(world):
    """The reply succeeded, the write of the caption that follows it did not (DynamoDB
    throttled, a 500, a timeout): the caption is only in memory, and a retry of the message
    would pay for it again. It is written again while the record's time lasts."""
    event = world.upload()
    save, failures = world.store.save_result, [RuntimeError("ProvisionedThroughputExceeded")] * 2

    def flaky_save(claim, result, **kwargs):
        if result.status is Status.CAPTIONED and failures:
            raise failures.pop()
        return save(claim, result, **kwargs)

    world.store.save_result = flaky_save
    assert world.deliver(event).status is Status.CAPTIONED
    assert world.row()["caption"] == "a cat" and world.row()["tag_status"] == "WRITTEN"
    assert world.provider.paid == 1 and not failures


def test_a_paid_caption_that_cannot_be_written_is_tried_a_bounded_number_of_times(world):
    """When every write fails, the error goes to SQS (the message comes back, and pays again:
    nothing else holds the caption) after SAVE_PAID_TRIES writes, fewer when the record's
    time runs short, and the row says why."""
    event = world.upload()
    save, tries = world.store.save_result, []

    def failing_save(claim, result, **kwargs):
        if result.status is Status.CAPTIONED:
            tries.append(time.monotonic())
            raise RuntimeError("InternalServerError")
        return save(claim, result, **kwargs)

    world.store.save_result = failing_save
    with pytest.raises(RuntimeError, match="InternalServerError"):
        world.deliver(event)
    assert len(tries) == SAVE_PAID_TRIES and world.provider.paid == 1
    row = world.row()
    assert row["status"] == "PENDING" and "InternalServerError" in row["last_error"]

    tries.clear()  # with 0.15 s left: no wait of 0.2 s starts
    attempt = Attempt(deadline=time.monotonic() + 0.15, receive_count=2, max_receive_count=5)
    with pytest.raises(RuntimeError, match="InternalServerError"):
        world.pipeline.process(event, attempt)
    assert len(tries) == 3


# -- the row describes the newest version ------------------------------------------------------


def test_a_delete_while_captioning_wins_over_the_late_caption(world):
    """The delete event's write removes the claim's fence token: the caption, though paid,
    cannot bring the row back."""
    event = world.upload()
    delete = lambda: world.store.mark_deleted(BUCKET, KEY, None, None, whole=True)  # noqa: E731
    world.script(after(delete, answer("a cat")))
    outcome = world.deliver(event)
    assert outcome.status is Unchanged.STALE
    row = world.row()
    assert row["status"] == "DELETED" and "caption" not in row
    assert world.objects.tags_of(BUCKET, KEY) == []  # no tag written for a deleted row


def test_an_object_deleted_before_it_is_read_leaves_a_deleted_row():
    world = World(versioned=False)  # versioned, S3 would still serve the version by id
    event = world.upload(sequencer="0A")  # ordered by S3: taken as it is, no HEAD
    world.objects.delete(BUCKET, KEY)
    outcome = world.deliver(event)
    assert outcome.status is Status.DELETED
    assert world.row()["reason"] == "object deleted while captioning"
    assert world.provider.calls == []


def test_in_an_unversioned_bucket_a_caption_is_not_tagged_onto_a_replacement():
    world = World(versioned=False)
    event = world.upload()
    world.script(after(lambda: world.upload(png(32, 32)), answer("a cat")))
    outcome = world.deliver(event)
    assert outcome.status is Status.CAPTIONED  # the caption describes what was uploaded
    row = world.row()
    assert row["tag_status"] == "FAILED"
    assert row["last_error"] == "the object was replaced while it was captioned"
    assert world.objects.tags_of(BUCKET, KEY) == []  # the replacement keeps its own tags


def test_a_remove_event_marks_the_row_deleted(world):
    world.deliver(world.upload())
    world.objects.delete(BUCKET, KEY)
    removed = ObjectEvent("removed", BUCKET, KEY, "ObjectRemoved:DeleteMarkerCreated")
    assert world.deliver(removed).status is Status.DELETED
    row = world.row()
    assert row["status"] == "DELETED" and row["caption"] == "a cat"  # the caption is kept


def test_a_late_sequenced_event_cannot_take_a_row_a_backfill_wrote_for_a_newer_version(world):
    """Sequencers cannot order an S3 event against a row written without one: S3 decides."""
    old = world.upload(sequencer="0A")
    newer = world.upload(png(32, 32))  # captioned by a backfill: no sequencer
    assert world.deliver(newer).status is Status.CAPTIONED
    assert world.deliver(old).status is Unchanged.STALE
    assert world.row()["version_id"] == newer.version_id and world.provider.paid == 1


def test_a_late_delete_leaves_an_object_uploaded_again_alone(world):
    event = world.upload()
    world.deliver(event)
    removed = ObjectEvent("removed", BUCKET, KEY, "ObjectRemoved:DeleteMarkerCreated")
    assert world.deliver(removed).status is Unchanged.IGNORED  # S3 still has the object
    assert world.row()["status"] == "CAPTIONED"
