"""The eight ways the core promise broke in 0.1 (issue 9), each driven through the real
handler against moto and the fake ModelsLab. Every test here failed before the fix."""

from __future__ import annotations

import itertools
import threading
import time

import pytest
from botocore.exceptions import ClientError

from captioner.events import backfill_message
from tests import images
from tests.conftest import BUCKET, notification, s3_record, sqs_event
from tests.fakes.modelslab import FakeModelsLab, Reply
from tests.faults.harness import (
    STEPS,
    Clock,
    Instance,
    Queue,
    assert_paid_at_most_once,
    drain,
)


def upload(aws, key, body=None, *, sequencer="0066A1B2C3D4E5F601", bucket=BUCKET):
    body = body or images.png()
    resp = aws.s3.put_object(Bucket=bucket, Key=key, Body=body)
    record = s3_record(key, bucket=bucket, version_id=resp.get("VersionId"),
                       etag=resp["ETag"].strip('"'), size=len(body), sequencer=sequencer)  # fmt: skip
    return resp.get("VersionId"), notification(record)


def success(text_or_link, job=None):
    return Reply({"status": "success", "id": job, "output": [text_or_link]})


def numbered_captions(fake: FakeModelsLab) -> None:
    """Each paid request gets its own caption, so tests can tell whose tag is whose."""
    count = itertools.count(1)
    fake.rule = lambda body: success(f"Caption number {next(count)}.")


# -- 1. a success whose caption is a link that is not ready yet ----------------------------------


@pytest.mark.parametrize("failures", [2, 8], ids=["within-one-delivery", "across-deliveries"])
def test_1_a_caption_link_that_fails_at_first_is_polled_never_paid_again(
    app_env, fake_modelslab, instance, queue, clock, failures
):
    link = fake_modelslab.link_url("cap77")
    fake_modelslab.queue(success(link, job=77))
    fake_modelslab.fetch_rule = lambda job: success(link, job=int(job))
    not_ready = [Reply(status=503, body=b"not yet"), Reply(status=404, body=b"no such file")]
    fake_modelslab.queue_link("cap77", *(not_ready * failures)[:failures])
    _, event = upload(app_env, "link.png")

    queue.send(event)
    drain(queue, instance, clock)

    row = app_env.row("link.png")
    assert row["status"] == "CAPTIONED" and row["caption"] == "Linked cap77."
    assert len(fake_modelslab.accepted()) == 1
    assert {p.path for p in fake_modelslab.polls()} == {"/api/v6/image_editing/fetch/77"}


# -- 2. an error reply while polling a queued job -----------------------------------------------


def test_2_an_error_reply_to_a_poll_keeps_polling_the_queued_job(
    app_env, fake_modelslab, instance, queue, clock
):
    fake_modelslab.queue(Reply({"status": "processing", "id": 5, "eta": 0}))
    fake_modelslab.queue_fetch(
        Reply({"status": "error", "message": "Rate limit exceeded"}),
        success("Queued caption.", job=5),
    )
    _, event = upload(app_env, "poll.png")

    queue.send(event)
    drain(queue, instance, clock)

    assert app_env.row("poll.png")["caption"] == "Queued caption."
    assert len(fake_modelslab.accepted()) == 1


# -- 3. sequencers of different lengths ---------------------------------------------------------


def test_3_a_newer_upload_with_a_shorter_sequencer_is_captioned(
    app_env, fake_modelslab, instance, queue, clock
):
    _, older = upload(app_env, "seq.png", images.png(), sequencer="0066A1B2C3D4E5F601")
    newer_version, newer = upload(app_env, "seq.png", images.jpeg(), sequencer="0066A1B2C3D4E5F7")
    queue.send(older)
    queue.send(newer)
    drain(queue, instance, clock)
    row = app_env.row("seq.png")
    assert row["version_id"] == newer_version and row["status"] == "CAPTIONED"
    assert row["format"] == "JPEG"


def test_3_a_delete_with_a_shorter_sequencer_after_the_create_is_applied(
    app_env, fake_modelslab, instance, queue, clock
):
    _, create = upload(app_env, "seqdel.png", sequencer="0066A1B2C3D4E5F60100")
    queue.send(create)
    drain(queue, instance, clock)
    app_env.s3.delete_object(Bucket=BUCKET, Key="seqdel.png")
    delete = s3_record("seqdel.png", event_name="ObjectRemoved:DeleteMarkerCreated",
                       sequencer="0066A1B2C3D4E5F7")  # fmt: skip
    queue.send(notification(delete))
    drain(queue, instance, clock)
    assert app_env.row("seqdel.png")["status"] == "DELETED"


def test_3_a_delete_delivered_before_its_create_stays_deleted(
    app_env, fake_modelslab, instance, queue, clock
):
    _, create = upload(app_env, "early-delete.png", sequencer="0066A1B2C3D4E5F601")
    app_env.s3.delete_object(Bucket=BUCKET, Key="early-delete.png")
    delete = s3_record("early-delete.png", event_name="ObjectRemoved:DeleteMarkerCreated",
                       sequencer="0066A1B2C3D4E5F7")  # fmt: skip
    queue.send(notification(delete))
    queue.send(create)
    drain(queue, instance, clock)
    assert app_env.row("early-delete.png")["status"] == "DELETED"
    assert fake_modelslab.accepted() == []


# -- 4. a delete while an event without a sequencer is being captioned --------------------------


def test_4_a_delete_during_captioning_is_not_undone_by_the_late_caption(
    app_env, fake_modelslab, instance, queue, clock
):
    other = Instance(clock)
    body = images.png()
    resp = app_env.s3.put_object(Bucket=BUCKET, Key="fence.png", Body=body)
    # no sequencer: a backfill, moto, or an S3-compatible store
    event = notification(s3_record("fence.png", version_id=resp["VersionId"], size=len(body)))
    deleted = threading.Event()

    def delete_meanwhile(request_body):
        if not deleted.is_set():
            deleted.set()
            app_env.s3.delete_object(Bucket=BUCKET, Key="fence.png")
            gone = s3_record("fence.png", event_name="ObjectRemoved:DeleteMarkerCreated")
            assert other.invoke(sqs_event(notification(gone))) == {"batchItemFailures": []}
        return None

    fake_modelslab.rule = delete_meanwhile
    queue.send(event)
    drain(queue, instance, clock)
    row = app_env.row("fence.png")
    assert row["status"] == "DELETED" and "caption" not in row


# -- 5. the caption link's GET and the deadline ---------------------------------------------------


def test_5_a_stalled_caption_link_never_outlives_the_invocation(app_env, fake_modelslab, clock):
    instance = Instance(clock, remaining_ms=12_000)  # 4 s for provider work, 8 s margin
    link = fake_modelslab.link_url("stall")
    fake_modelslab.queue(success(link, job=9))
    fake_modelslab.queue_link("stall", Reply(body=b"Too late.", delay=30))
    fake_modelslab.fetch_rule = lambda job: success("Polled caption.", job=int(job))
    queue = Queue(max_receive=3)
    _, event = upload(app_env, "stall.png")
    msg = queue.send(event)

    assert queue.deliver(instance, msg) == "retry"
    assert instance.longest < 12.0
    assert app_env.row("stall.png")["provider_job_id"] == "9"
    clock.advance(3600)
    assert queue.deliver(instance, msg) == "deleted"
    assert app_env.row("stall.png")["caption"] == "Polled caption."
    assert len(fake_modelslab.accepted()) == 1


# -- 6. the lease and the invocation's hard end ---------------------------------------------------


def test_6_a_duplicate_arriving_after_the_holders_soft_deadline_does_not_pay(
    app_env, fake_modelslab, instance, queue
):
    # The duplicate's clock reads 55 s later: past the holder's soft deadline (60 s - 8 s
    # margin) but before its invocation ends (60 s). The holder is still alive then.
    late_clock = Clock()
    late_clock.advance(55)
    duplicate = Instance(late_clock)
    _, event = upload(app_env, "lease.png")
    outcomes = []

    def duplicate_delivery(request_body):
        if not outcomes:
            outcomes.append(duplicate.invoke(sqs_event(event, receive_count=1)))
        return None

    fake_modelslab.rule = duplicate_delivery
    msg = queue.send(event)
    assert queue.deliver(instance, msg) == "deleted"
    assert len(outcomes[0]["batchItemFailures"]) == 1  # BUSY: it comes back later
    assert len(fake_modelslab.accepted()) == 1


# -- 7. records waiting behind slow ones in a batch ----------------------------------------------


def test_7_slow_records_cannot_starve_the_rest_of_the_batch(
    app_env, fake_modelslab, clock, monkeypatch
):
    monkeypatch.setenv("CAPTION_BATCH_CONCURRENCY", "2")  # two rounds of provider calls
    instance = Instance(clock, remaining_ms=24_000)  # 16 s of provider time for 10 records
    slow = {"slow-0.png", "slow-1.png"}

    def stall_slow_ones(body):
        if any(name in body.get("init_image", "") for name in slow):
            return Reply({"status": "success", "output": ["late"]}, delay=30)
        return None

    fake_modelslab.rule = stall_slow_ones
    keys = sorted(slow) + [f"fast-{i}.png" for i in range(8)]
    events = [upload(app_env, key)[1] for key in keys]

    started = time.monotonic()
    result = instance.invoke(sqs_event(*events, receive_count=1))
    assert time.monotonic() - started < 24.0
    assert len(result["batchItemFailures"]) == 2
    for key in keys:
        row = app_env.row(key)
        assert row["status"] == ("PENDING" if key in slow else "CAPTIONED"), (key, row)

    # their last delivery (a shorter invocation): they fail with a row that says why
    result = Instance(clock, remaining_ms=12_000).invoke(sqs_event(*events[:2], receive_count=3))
    assert len(result["batchItemFailures"]) == 2
    for key in sorted(slow):
        row = app_env.row(key)
        assert row["status"] == "FAILED" and "gave up after 3 deliveries" in row["reason"]


def test_7_a_record_out_of_time_on_its_last_delivery_still_leaves_a_row(
    app_env, fake_modelslab, clock
):
    instance = Instance(clock, remaining_ms=9_500)  # under a second for provider work
    events = [upload(app_env, f"late-{i}.png")[1] for i in range(3)]
    result = instance.invoke(sqs_event(*events, receive_count=3))
    assert len(result["batchItemFailures"]) == 3
    assert instance.longest < 9.5
    for i in range(3):
        row = app_env.row(f"late-{i}.png")
        assert row["status"] == "FAILED" and "dead-lettered" in row["reason"], row
    assert fake_modelslab.accepted() == []


# -- 8. unversioned buckets: a caption must not land on the object that replaced it ---------------

UNVERSIONED = "captioner-unversioned-test"


@pytest.fixture
def unversioned(app_env):
    app_env.s3.create_bucket(Bucket=UNVERSIONED)
    return app_env


def tags_of(aws, key):
    resp = aws.s3.get_object_tagging(Bucket=UNVERSIONED, Key=key)
    return {t["Key"]: t["Value"] for t in resp["TagSet"]}


def test_8_an_object_replaced_during_the_provider_call_does_not_get_the_old_caption(
    unversioned, fake_modelslab, instance, queue, clock
):
    numbered_captions(fake_modelslab)
    _, first = upload(unversioned, "photo.png", images.png(), bucket=UNVERSIONED,
                      sequencer="01")  # fmt: skip
    replaced = threading.Event()
    numbered = fake_modelslab.rule

    def replace_meanwhile(body):
        if not replaced.is_set():
            replaced.set()
            unversioned.s3.put_object(Bucket=UNVERSIONED, Key="photo.png", Body=images.jpeg())
        return numbered(body)

    fake_modelslab.rule = replace_meanwhile
    queue.send(first)
    drain(queue, instance, clock)
    assert "caption" not in tags_of(unversioned, "photo.png")
    assert app_env_row(unversioned, "photo.png")["tag_status"] == "FAILED"


def test_8_a_replacement_that_races_the_tag_write_has_the_caption_taken_off(
    unversioned, fake_modelslab, instance, queue, clock
):
    numbered_captions(fake_modelslab)
    objects = instance.app.pipeline.objects
    real_put_tags = objects.put_tags

    def replaced_just_before(bucket, key, version_id, tags):
        # S3 overwrite (no versioning) lands after our ETag check, before our tag write
        unversioned.s3.put_object(Bucket=UNVERSIONED, Key=key, Body=images.jpeg())
        objects.put_tags = real_put_tags
        return real_put_tags(bucket, key, version_id, tags)

    objects.put_tags = replaced_just_before
    _, first = upload(unversioned, "race.png", images.png(), bucket=UNVERSIONED, sequencer="01")
    queue.send(first)
    drain(queue, instance, clock)
    assert "caption" not in tags_of(unversioned, "race.png")

    # the replacement's own event then captions it, with its own caption
    head = unversioned.s3.head_object(Bucket=UNVERSIONED, Key="race.png")
    second = s3_record("race.png", bucket=UNVERSIONED, etag=head["ETag"].strip('"'),
                       size=head["ContentLength"], sequencer="02")  # fmt: skip
    queue.send(notification(second))
    drain(queue, instance, clock)
    assert tags_of(unversioned, "race.png") == {"caption": "Caption number 2."}


def app_env_row(aws, key):
    return aws.row(key, bucket=UNVERSIONED)


# -- the smaller holes ---------------------------------------------------------------------------


def test_a_failed_tag_write_is_finished_by_the_next_delivery_without_paying(
    app_env, fake_modelslab, instance, queue, clock
):
    version, event = upload(app_env, "tagfail.png")
    with instance.failing("put_tags", RuntimeError("S3 is having a bad day")):
        queue.deliver(instance, queue.send(event))
    assert app_env.row("tagfail.png")["tag_status"] == "FAILED"
    queue.deliver(instance, queue.send(event))  # S3 delivers notifications at least once
    row = app_env.row("tagfail.png")
    assert row["tag_status"] == "WRITTEN" and "last_error" not in row
    assert app_env.tags("tagfail.png", version) == {"caption": row["caption"]}
    assert len(fake_modelslab.accepted()) == 1


def test_a_failed_row_write_after_an_immediate_success_is_not_paid_again(
    app_env, fake_modelslab, instance, queue, clock
):
    throttled = ClientError(
        {"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow down"}},
        "UpdateItem",
    )
    _, event = upload(app_env, "rowfail.png")
    msg = queue.send(event)
    with instance.failing("save_tag", throttled):
        assert queue.deliver(instance, msg) == "retry"
    assert app_env.row("rowfail.png")["caption"]  # the paid caption was already durable
    clock.advance(3600)
    assert queue.deliver(instance, msg) == "deleted"
    assert app_env.row("rowfail.png")["tag_status"] == "WRITTEN"
    assert len(fake_modelslab.accepted()) == 1


def test_a_duplicate_of_a_version_captioned_by_another_provider_does_not_pay(
    app_env, fake_modelslab, instance, queue, clock
):
    version, event = upload(app_env, "other.png")
    obj = app_env.s3.head_object(Bucket=BUCKET, Key="other.png")
    backfill = backfill_message(BUCKET, "other.png", version_id=version,
                                etag=obj["ETag"].strip('"'), size=obj["ContentLength"],
                                provider="local")  # fmt: skip
    import json

    queue.send(json.loads(backfill))
    drain(queue, instance, clock)
    assert app_env.row("other.png")["provider"] == "local"
    queue.send(event)  # a duplicate S3 notification, for the default provider
    drain(queue, instance, clock)
    assert app_env.row("other.png")["provider"] == "local"
    assert fake_modelslab.accepted() == []


# -- a crash after each step, then redelivery ---------------------------------------------------


@pytest.mark.parametrize("step", sorted(STEPS))
def test_an_instance_dying_after_any_step_is_recovered_by_redelivery_and_pays_once(
    app_env, fake_modelslab, instance, queue, clock, step
):
    # a queued job, so that every step (record_job included) happens
    fake_modelslab.queue(Reply({"status": "processing", "id": 31, "eta": 0}))
    fake_modelslab.fetch_rule = lambda job: success("Caption after a crash.", job=int(job))
    version, event = upload(app_env, f"crash-{step}.png")
    msg = queue.send(event)
    with instance.crash_after(step):
        assert queue.deliver(instance, msg) == "killed"
    drain(queue, instance, clock)
    assert msg.fate == "deleted"
    row = app_env.row(f"crash-{step}.png")
    assert row["status"] == "CAPTIONED" and row["tag_status"] == "WRITTEN"
    assert app_env.tags(f"crash-{step}.png", version) == {"caption": "Caption after a crash."}
    assert_paid_at_most_once(fake_modelslab)


def test_a_delivery_that_dies_while_finishing_anothers_tag_still_does_not_pay(
    app_env, fake_modelslab, instance, queue, clock
):
    _, event = upload(app_env, "twice.png")
    msg = queue.send(event)
    with instance.crash_after("save_result"):  # paid and recorded, then died
        assert queue.deliver(instance, msg) == "killed"
    clock.advance(3600)
    with instance.crash_after("get_tags"):  # the next one dies while finishing the tag
        assert queue.deliver(instance, msg) == "killed"
    clock.advance(3600)
    assert queue.deliver(instance, msg) == "deleted"
    row = app_env.row("twice.png")
    assert row["status"] == "CAPTIONED" and row["tag_status"] == "WRITTEN"
    assert len(fake_modelslab.accepted()) == 1


def test_two_instances_delivering_one_version_at_once_pay_once(
    app_env, fake_modelslab, instance, queue, clock
):
    fake_modelslab.rule = lambda body: Reply(
        {"status": "success", "id": 1, "output": ["Slow caption."]}, delay=0.5
    )
    other = Instance(clock)
    _, event = upload(app_env, "twins.png")
    results = []
    threads = [
        threading.Thread(target=lambda i=i: results.append(i.invoke(sqs_event(event))))
        for i in (instance, other)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(len(r["batchItemFailures"]) for r in results) == [0, 1]
    assert app_env.row("twins.png")["status"] == "CAPTIONED"
    assert len(fake_modelslab.accepted()) == 1
