"""The six holes a black-box review found at the outside world's limits (issue 20), each
driven through the real handler against moto and the fake ModelsLab. Every test here failed
before its fix. The limits they sit at are catalogued in docs/boundaries.md."""

from __future__ import annotations

import json
import threading

import pytest

from captioner.search import IndexSearch, SearchQuery
from captioner.store import CaptionReader
from captioner.sweep import BudgetSweep
from tests import images
from tests.conftest import BUCKET, TABLE, notification, s3_record
from tests.fakes.modelslab import Reply
from tests.fakes.timing import TIMINGS, TimingServer
from tests.faults.harness import Instance, drain, paid_versions
from tests.faults.test_defects import upload

S3_MAX_KEY_BYTES = 1024  # S3: "The object key name is a sequence of Unicode characters with
# UTF-8 encoding of up to 1,024 bytes long."


def key_of(n_bytes: int, char: str = "猫") -> str:
    """A key of exactly ``n_bytes`` UTF-8 bytes made of ``char`` (and ASCII to fill)."""
    width = len(char.encode())
    body = char * ((n_bytes - 4) // width)
    return body + "x" * (n_bytes - 4 - len(body.encode())) + ".png"


# -- 1. a long key: the word index must never cost the paid caption ------------------------------


@pytest.mark.parametrize(
    "n_bytes,char",
    [(990, "a"), (1024, "a"), (1024, "猫"), (1024, "😀")],
    ids=["990-ascii", "1024-ascii", "1024-cjk", "1024-emoji"],
)
def test_1_a_key_of_any_length_s3_allows_is_captioned_paid_once_and_found(
    app_env, fake_modelslab, instance, queue, clock, n_bytes, char
):
    key = key_of(n_bytes, char)
    assert len(key.encode()) == n_bytes <= S3_MAX_KEY_BYTES
    fake_modelslab.rule = lambda body: None  # the default: "A picture named <file>."
    _, event = upload(app_env, key)

    queue.send(event)
    drain(queue, instance, clock)

    row = app_env.row(key)
    assert row["status"] == "CAPTIONED" and row["caption"].startswith("A picture named")
    assert row.get("indexed_words"), "the postings were written"
    assert len(fake_modelslab.accepted()) == 1
    found = IndexSearch(CaptionReader(TABLE, app_env.ddb)).find(
        SearchQuery("picture named", bucket=BUCKET)
    )
    assert [r["key"] for r in found.rows] == [key]


def test_1_a_paid_caption_is_saved_even_when_dynamodb_refuses_its_index_entries(
    app_env, fake_modelslab, instance, queue, clock, monkeypatch
):
    """Whatever limit the postings break (here: the unbounded sort key of 0.3), the row is
    written without them, once, and the image is not paid again."""
    from captioner import index

    monkeypatch.setattr(index, "sort_key", lambda at, bucket, key: f"{at}#{bucket}#{key}")
    key = key_of(1024, "猫")
    _, event = upload(app_env, key)

    queue.send(event)
    drain(queue, instance, clock)

    row = app_env.row(key)
    assert row["status"] == "CAPTIONED" and row["tag_status"] == "WRITTEN"
    assert "indexed_words" not in row
    assert len(fake_modelslab.accepted()) == 1


# -- 2. a success that carries a job id but no caption yet ---------------------------------------


@pytest.mark.parametrize(
    "output",
    [[], [""], ["   "], None, [None]],
    ids=["empty-list", "empty", "blank", "none", "null"],
)
def test_2_a_success_with_a_job_id_and_no_caption_polls_that_job_never_pays_again(
    app_env, fake_modelslab, instance, queue, clock, output
):
    reply = {"status": "success", "id": 41}
    if output is not None:
        reply["output"] = output
    fake_modelslab.queue(Reply(reply))
    # the text arrives later at the job's fetch endpoint: empty twice more, then there
    polls = iter([Reply(reply), Reply(reply)])
    fake_modelslab.fetch_rule = lambda job: next(
        polls, Reply({"status": "success", "id": 41, "output": ["A late caption."]})
    )
    _, event = upload(app_env, "late.png")

    queue.send(event)
    drain(queue, instance, clock)

    row = app_env.row("late.png")
    assert row["status"] == "CAPTIONED" and row["caption"] == "A late caption."
    assert len(fake_modelslab.accepted()) == 1
    assert {p.path for p in fake_modelslab.polls()} == {"/api/v6/image_editing/fetch/41"}


# -- 4 and 5. re-captions: a provider named in a message is asked, and a failure keeps the caption


@pytest.fixture
def openai_too(app_env, fake_openai, monkeypatch):
    """ModelsLab the deployment's provider, OpenAI reachable by name (re-captions)."""
    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai.url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-test-key-0000")
    return fake_openai


def recaption(aws, key, provider):
    from captioner.events import backfill_message

    head = aws.s3.head_object(Bucket=BUCKET, Key=key)
    return json.loads(
        backfill_message(
            BUCKET, key, version_id=head.get("VersionId"), etag=head["ETag"].strip('"'),
            size=head["ContentLength"], provider=provider,
        )
    )  # fmt: skip


def captioned_by_modelslab(app_env, queue, clock, key="re.png"):
    _, event = upload(app_env, key)
    queue.send(event)
    drain(queue, Instance(clock), clock)
    row = app_env.row(key)
    assert row["status"] == "CAPTIONED" and row["provider"] == "modelslab"
    return row


KEPT = ("caption", "provider", "tag_value", "tag_status", "indexed_words", "indexed_at")


def test_4_a_failed_recaption_keeps_the_caption_its_tag_and_its_index_entries(
    app_env, fake_modelslab, openai_too, queue, clock
):
    from tests.fakes.openai import error

    before = captioned_by_modelslab(app_env, queue, clock)
    openai_too.queue(*[Reply(error("bad key"), status=401)] * 3)

    queue.send(recaption(app_env, "re.png", "openai"))
    drain(queue, Instance(clock), clock)

    row = app_env.row("re.png")
    assert {k: row.get(k) for k in KEPT} == {k: before.get(k) for k in KEPT}
    assert row["status"] == "CAPTIONED"
    assert row["recaption_status"] == "FAILED" and "invalid API key" in row["recaption_reason"]
    assert row["recaption_provider"] == "openai"
    assert app_env.tags("re.png")["caption"] == before["caption"]

    # OpenAI works again: the new caption replaces the old one, on the row and on the tag
    queue.send(recaption(app_env, "re.png", "openai"))
    drain(queue, Instance(clock), clock)
    row = app_env.row("re.png")
    assert row["provider"] == "openai" and row["caption"] != before["caption"]
    assert row["tag_status"] == "WRITTEN" and app_env.tags("re.png")["caption"] == row["caption"]
    assert not any(k.startswith("recaption_") for k in row)
    assert len(fake_modelslab.accepted()) == 1


def test_4_a_waiting_recaption_keeps_the_caption_and_polls_its_own_job(
    app_env, fake_modelslab, openai_too, queue, clock, monkeypatch
):
    """Captioned by OpenAI, re-captioned by ModelsLab whose job is queued: the row keeps
    OpenAI's caption while the job is polled, and the job is never paid twice."""
    monkeypatch.setenv("CAPTION_PROVIDER", "openai")
    _, event = upload(app_env, "wait.png")
    queue.send(event)
    drain(queue, Instance(clock), clock)
    before = app_env.row("wait.png")
    assert before["provider"] == "openai"
    fake_modelslab.queue(Reply({"status": "processing", "id": 88, "eta": 60}))
    polls = iter([Reply({"status": "processing", "id": 88, "eta": 60})])
    fake_modelslab.fetch_rule = lambda job: next(
        polls, Reply({"status": "success", "id": 88, "output": ["ModelsLab's caption."]})
    )
    instance = Instance(clock)
    msg = queue.send(recaption(app_env, "wait.png", "modelslab"))
    queue.deliver(instance, msg)

    row = app_env.row("wait.png")
    assert {k: row.get(k) for k in KEPT} == {k: before.get(k) for k in KEPT}
    assert row["recaption_status"] == "PENDING" and row["recaption_job_id"] == "88"

    drain(queue, instance, clock)
    row = app_env.row("wait.png")
    assert row["caption"] == "ModelsLab's caption." and row["provider"] == "modelslab"
    assert len(fake_modelslab.accepted()) == 1


def test_4_a_recaption_over_the_budget_keeps_the_caption_and_is_swept_back(
    app_env, fake_modelslab, openai_too, queue, clock, monkeypatch
):
    before = captioned_by_modelslab(app_env, queue, clock)
    monkeypatch.setenv("CAPTION_DAILY_BUDGET_USD", "0.0001")  # less than one OpenAI request
    instance = Instance(clock)
    queue.send(recaption(app_env, "re.png", "openai"))
    drain(queue, instance, clock)

    row = app_env.row("re.png")
    assert {k: row.get(k) for k in KEPT} == {k: before.get(k) for k in KEPT}
    assert row["status"] == "PENDING" and row["reason"].startswith("daily budget")
    assert row["recaption_status"] == "PENDING" and row["requested_provider"] == "openai"
    assert openai_too.requests == []

    # the sweep re-queues it as the re-caption it is, once money is there again
    monkeypatch.setenv("CAPTION_DAILY_BUDGET_USD", "10")
    queue.send(json.loads(BudgetSweep._body(row)))
    drain(queue, Instance(clock), clock)
    row = app_env.row("re.png")
    assert row["status"] == "CAPTIONED" and row["provider"] == "openai"
    assert len(openai_too.requests) == 1 and len(fake_modelslab.accepted()) == 1


def test_5_recaptioning_with_the_primary_by_name_replaces_a_fallbacks_caption(
    app_env, fake_modelslab, queue, clock, monkeypatch
):
    """The README's workflow after a fallback: `backfill --provider modelslab
    --only-provider local` must re-caption, not ack the messages as duplicates."""
    monkeypatch.setenv("CAPTION_FALLBACK_PROVIDERS", "local")
    fake_modelslab.queue(*[Reply(status=503, body=b"down")] * 20)
    _, event = upload(app_env, "fb.png")
    queue.send(event)
    drain(queue, Instance(clock), clock)
    assert app_env.row("fb.png")["provider"] == "local"
    fake_modelslab.caption_replies.clear()

    queue.send(recaption(app_env, "fb.png", "modelslab"))
    drain(queue, Instance(clock), clock)

    row = app_env.row("fb.png")
    assert row["provider"] == "modelslab" and row["caption"] == "A picture named fb.png."
    assert len(fake_modelslab.accepted()) == 1
    # and asking for it again is a duplicate: nothing more is paid
    queue.send(recaption(app_env, "fb.png", "modelslab"))
    drain(queue, Instance(clock), clock)
    assert len(fake_modelslab.accepted()) == 1


# -- 6. one event per transition, even for duplicates delivered at the same moment --------------


def held_in_put_events(instance: Instance) -> tuple[threading.Event, threading.Event]:
    """Make ``instance`` stop between the row's final write and PutEvents until released:
    (reached, release)."""
    publisher = instance.app.pipeline.announcer._publisher
    real = publisher.publish
    reached, release = threading.Event(), threading.Event()

    def slow(detail):
        reached.set()
        assert release.wait(10)
        return real(detail)

    publisher.publish = slow
    return reached, release


@pytest.mark.parametrize("what", ["delete", "captioned-version"])
def test_6_a_duplicate_delivered_while_the_first_is_publishing_announces_nothing(
    app_env, fake_modelslab, queue, clock, events, what
):
    _, created = upload(app_env, "dup.png")
    if what == "delete":
        queue.send(created)
        drain(queue, Instance(clock), clock)
        events.take()
        marker = app_env.s3.delete_object(Bucket=BUCKET, Key="dup.png")
        event = notification(s3_record(
            "dup.png", event_name="ObjectRemoved:DeleteMarkerCreated",
            version_id=marker.get("VersionId"), sequencer="0066A1B2C3D4E5F701",
        ))  # fmt: skip
        status = "DELETED"
    else:
        event, status = created, "CAPTIONED"
    first, second = Instance(clock), Instance(clock)
    reached, release = held_in_put_events(first)
    a, b = queue.send(event), queue.send(event)
    worker = threading.Thread(target=queue.deliver, args=(first, a))
    worker.start()
    assert reached.wait(10), "the first delivery reached PutEvents"
    assert queue.deliver(second, b) == "deleted"  # the duplicate is done, and said nothing
    release.set()
    worker.join()

    assert [e["detail"]["status"] for e in events.take()] == [status]
    assert "event_due" not in app_env.row("dup.png")
    assert len(fake_modelslab.accepted()) == 1


# -- the smaller items ---------------------------------------------------------------------------


def test_an_event_for_a_bucket_the_deployment_does_not_serve_is_ignored_without_a_row(
    app_env, fake_modelslab, queue, clock, monkeypatch
):
    monkeypatch.setenv("CAPTION_BUCKETS", f"{BUCKET},archive-bucket")
    app_env.s3.create_bucket(Bucket="someone-elses-bucket")
    app_env.s3.put_object(Bucket="someone-elses-bucket", Key="x.png", Body=b"\x89PNG")
    foreign = notification(s3_record("x.png", bucket="someone-elses-bucket", sequencer="00AA"))
    msg = queue.send(foreign)
    assert queue.deliver(Instance(clock), msg) == "deleted"
    assert app_env.row("x.png", bucket="someone-elses-bucket") is None
    assert fake_modelslab.requests == []
    # the served bucket still works
    _, event = upload(app_env, "mine.png")
    queue.send(event)
    drain(queue, Instance(clock), clock)
    assert app_env.row("mine.png")["status"] == "CAPTIONED"


@pytest.mark.parametrize("sequencer", [1234, 12.5, True, ["00AB"], {"x": 1}, "not hex!", ""])
def test_a_malformed_sequencer_is_no_order_not_an_unexpected_error(
    app_env, fake_modelslab, queue, clock, sequencer
):
    """Ordering falls back to a HEAD of the object, as for events without a sequencer."""
    resp = app_env.s3.put_object(Bucket=BUCKET, Key="seq.png", Body=images.png())
    record = s3_record("seq.png", version_id=resp["VersionId"], etag=resp["ETag"].strip('"'))
    record["s3"]["object"]["sequencer"] = sequencer
    queue.send(notification(record))
    drain(queue, Instance(clock), clock)
    row = app_env.row("seq.png")
    assert row["status"] == "CAPTIONED" and "sequencer" not in row
    assert len(fake_modelslab.accepted()) == 1


@pytest.mark.parametrize("hint", ["NaN", "Infinity", "-Infinity", "-5", "1e999"])
def test_a_retry_after_that_is_not_a_finite_number_is_no_hint(
    app_env, fake_modelslab, queue, clock, hint
):
    raw = b'{"status": "error", "message": "Rate limit exceeded", "retry_after": %s}' % (
        hint.encode()
    )
    fake_modelslab.queue(Reply(status=429, body=raw, headers={"Retry-After": hint}))
    fake_modelslab.queue(Reply({"status": "processing", "id": 3, "eta": hint}, status=200))
    _, event = upload(app_env, "nan.png")
    queue.send(event)
    drain(queue, Instance(clock), clock)
    row = app_env.row("nan.png")
    assert row["status"] == "CAPTIONED"
    assert len(fake_modelslab.accepted()) == 1


# -- 3. at the handler: a slow reply never outlives the invocation --------------------------------


# every client against all five ways to be slow: tests/unit/test_reply_timing.py
@pytest.mark.parametrize("timing", [t for t in TIMINGS if t.name in ("trickled-body", "endless-body")],
                         ids=lambda t: t.name)  # fmt: skip
def test_3_a_trickling_reply_ends_within_the_invocation_and_the_row_says_why(
    app_env, queue, clock, monkeypatch, timing
):
    server = TimingServer(json.dumps({"status": "success", "id": 5, "output": ["Late."]}).encode())
    server.timing = timing
    server.start()
    try:
        monkeypatch.setenv("MODELSLAB_API_URL", server.url)
        instance = Instance(clock, remaining_ms=14_000)  # a 14 s invocation, writes get 8 s
        _, event = upload(app_env, "slow.png")
        msg = queue.send(event)
        assert queue.deliver(instance, msg) == "retry"
    finally:
        server.stop()
    assert instance.longest < 14.0, f"the invocation took {instance.longest:.1f} s"
    row = app_env.row("slow.png")
    assert row["status"] == "PENDING" and "timed out" in row["last_error"]


# -- re-captions racing the object's own changes ------------------------------------------------


def test_a_recaption_of_a_version_replaced_meanwhile_pays_nothing_for_the_old_one(
    app_env, fake_modelslab, openai_too, queue, clock
):
    captioned_by_modelslab(app_env, queue, clock, "race.png")
    stale = recaption(app_env, "race.png", "openai")  # names the version of now
    newer, event = upload(app_env, "race.png", images.jpeg(), sequencer="0066A1B2C3D4E5F701")
    queue.send(stale)
    queue.send(event)
    drain(queue, Instance(clock), clock)
    row = app_env.row("race.png")
    assert row["version_id"] == newer and row["provider"] == "modelslab"
    assert openai_too.requests == [] and len(fake_modelslab.accepted()) == 2


def test_a_recaption_of_a_deleted_object_pays_nothing_and_keeps_the_delete(
    app_env, fake_modelslab, openai_too, queue, clock
):
    captioned_by_modelslab(app_env, queue, clock, "gone.png")
    message = recaption(app_env, "gone.png", "openai")
    marker = app_env.s3.delete_object(Bucket=BUCKET, Key="gone.png")
    queue.send(notification(s3_record(
        "gone.png", event_name="ObjectRemoved:DeleteMarkerCreated",
        version_id=marker.get("VersionId"), sequencer="0066A1B2C3D4E5F701",
    )))  # fmt: skip
    queue.send(message)
    drain(queue, Instance(clock), clock)
    assert app_env.row("gone.png")["status"] == "DELETED"
    assert openai_too.requests == []


# -- found by a black-box review of the fixes above -----------------------------------------------


@pytest.mark.parametrize(
    "newer_sequencer", [None, "zz", 123], ids=["backfill", "not-hex", "number"]
)
def test_an_old_versions_late_event_never_takes_back_a_row_a_newer_version_wrote_unordered(
    app_env, fake_modelslab, queue, clock, newer_sequencer
):
    """v1 (sequenced) captioned; v2 captioned from an event that orders nothing (a backfill,
    a malformed sequencer); then S3 delivers v1's event again: stale, nothing paid."""
    _, first = upload(app_env, "back.png", sequencer="0000000000000000A1")
    queue.send(first)
    drain(queue, Instance(clock), clock)
    v2 = app_env.s3.put_object(Bucket=BUCKET, Key="back.png", Body=images.jpeg())["VersionId"]
    if newer_sequencer is None:
        queue.send(recaption(app_env, "back.png", None))
    else:
        record = s3_record("back.png", version_id=v2)
        record["s3"]["object"]["sequencer"] = newer_sequencer
        queue.send(notification(record))
    drain(queue, Instance(clock), clock)
    assert app_env.row("back.png")["version_id"] == v2

    queue.send(first)  # v1's notification, delivered again
    drain(queue, Instance(clock), clock)

    assert app_env.row("back.png")["version_id"] == v2
    assert sorted(paid_versions(fake_modelslab).values()) == [1, 1]


@pytest.mark.parametrize("delete_sequencer", [None, "zz"], ids=["none", "not-hex"])
def test_a_deleted_object_stays_deleted_when_its_create_event_comes_again(
    app_env, fake_modelslab, queue, clock, events, delete_sequencer
):
    _, created = upload(app_env, "undead.png", sequencer="0000000000000000A1")
    queue.send(created)
    drain(queue, Instance(clock), clock)
    marker = app_env.s3.delete_object(Bucket=BUCKET, Key="undead.png")
    record = s3_record("undead.png", event_name="ObjectRemoved:DeleteMarkerCreated",
                       version_id=marker.get("VersionId"))  # fmt: skip
    if delete_sequencer:
        record["s3"]["object"]["sequencer"] = delete_sequencer
    queue.send(notification(record))
    drain(queue, Instance(clock), clock)
    queue.send(created)
    drain(queue, Instance(clock), clock)
    assert app_env.row("undead.png")["status"] == "DELETED"
    assert [e["detail"]["status"] for e in events.take()] == ["CAPTIONED", "DELETED"]


def test_a_job_queued_without_an_id_is_polled_at_its_fetch_result(
    app_env, fake_modelslab, queue, clock
):
    fake_modelslab.queue(Reply({
        "status": "processing", "eta": 0, "output": [],
        "fetch_result": f"{fake_modelslab.url}/image_editing/fetch/777",
    }))  # fmt: skip
    fake_modelslab.fetch_rule = lambda job: Reply(
        {"status": "success", "id": int(job), "output": ["Fetched by its URL."]}
    )
    _, event = upload(app_env, "noid.png")
    queue.send(event)
    drain(queue, Instance(clock), clock)
    assert app_env.row("noid.png")["caption"] == "Fetched by its URL."
    assert len(fake_modelslab.accepted()) == 1


def test_a_charged_reply_without_a_caption_is_paid_once_per_delivery_and_counted(
    app_env, fake_modelslab, queue, clock, monkeypatch
):
    """`processing` with nothing to poll, or `success` with no caption and no id: charged,
    so the budget keeps it, and tried again only by the message's next delivery."""
    monkeypatch.setenv("CAPTION_DAILY_BUDGET_USD", "1")
    fake_modelslab.rule = lambda body: Reply({"status": "processing", "eta": 0, "output": []})
    _, event = upload(app_env, "lost.png")
    queue.send(event)
    drain(queue, Instance(clock), clock)
    assert len(fake_modelslab.accepted()) == 3  # one per delivery (CAPTION_MAX_RECEIVE_COUNT)
    assert app_env.row("lost.png")["status"] == "FAILED"
    item = app_env.ddb.scan(TableName=TABLE, FilterExpression="begins_with(#b, :p)",
                            ExpressionAttributeNames={"#b": "bucket"},
                            ExpressionAttributeValues={":p": {"S": "#budget"}})["Items"]  # fmt: skip
    spent = sum(float(i["spent_usd"]["N"]) for i in item if "spent_usd" in i)
    assert spent == pytest.approx(3 * 0.0047)


def test_a_recaption_answered_empty_is_paid_once_per_delivery(
    app_env, fake_modelslab, openai_too, queue, clock
):
    from tests.fakes.openai import completion

    before = captioned_by_modelslab(app_env, queue, clock)
    openai_too.rule = lambda request: Reply(completion(""))
    queue.send(recaption(app_env, "re.png", "openai"))
    drain(queue, Instance(clock), clock)
    assert len(openai_too.requests) == 3
    row = app_env.row("re.png")
    assert row["caption"] == before["caption"] and row["recaption_status"] == "FAILED"


def test_an_event_naming_the_word_indexs_partitions_is_ignored_and_search_still_works(
    app_env, fake_modelslab, queue, clock
):
    _, event = upload(app_env, "cat.png")
    queue.send(event)
    queue.send(notification(s3_record("9999-zz", bucket="#w#named#2", sequencer="FF")))
    drain(queue, Instance(clock), clock)
    assert app_env.row("9999-zz", bucket="#w#named#2") is None
    found = IndexSearch(CaptionReader(TABLE, app_env.ddb)).find(SearchQuery("named"))
    assert [r["key"] for r in found.rows] == ["cat.png"]


def test_a_parked_recaption_stays_parked_when_a_duplicate_of_the_upload_comes(
    app_env, fake_modelslab, openai_too, queue, clock, events, monkeypatch
):
    captioned_by_modelslab(app_env, queue, clock)
    head = app_env.s3.head_object(Bucket=BUCKET, Key="re.png")
    upload_event = notification(s3_record(
        "re.png", version_id=head["VersionId"], etag=head["ETag"].strip('"'),
        size=head["ContentLength"], sequencer="0066A1B2C3D4E5F601",
    ))  # fmt: skip
    events.take()
    monkeypatch.setenv("CAPTION_DAILY_BUDGET_USD", "0.005")
    queue.send(recaption(app_env, "re.png", "openai"))
    drain(queue, Instance(clock), clock)
    assert "0.005 $" in app_env.row("re.png")["reason"]

    queue.send(upload_event)  # S3's duplicate of the original upload
    drain(queue, Instance(clock), clock)

    row = app_env.row("re.png")
    assert row["status"] == "PENDING" and row["recaption_status"] == "PENDING"
    assert [e["detail"]["status"] for e in events.take()] == []


def test_a_deleted_row_keeps_no_recaption_in_progress(app_env, fake_modelslab, queue, clock):
    from captioner.store import CaptionStore, ObjectRef, Result, Status

    captioned_by_modelslab(app_env, queue, clock)
    store = CaptionStore(TABLE, app_env.ddb)
    row = app_env.row("re.png")
    claim = store.claim(ObjectRef(BUCKET, "re.png", row["version_id"], row["etag"], row["size"]),
                        60, "openai")  # fmt: skip
    kept = {k: row.get(k) for k in ("caption", "provider", "tag_status", "tag_value")}
    assert store.save_result(claim, Result(Status.CAPTIONED, recaption_status="PENDING",
                                           recaption_job_id="9", **kept))  # fmt: skip
    assert store.mark_deleted(BUCKET, "re.png", None, None, whole=True)
    assert not any(k.startswith("recaption_") for k in app_env.row("re.png"))


@pytest.mark.parametrize("output", ["HTTPS://127.0.0.1:1/x", "ftp://x/y", "file:///etc/passwd"])
def test_a_bare_url_of_any_scheme_is_never_a_caption(app_env, fake_modelslab, queue, clock, output):
    fake_modelslab.rule = lambda body: Reply({"status": "success", "output": [output]})
    _, event = upload(app_env, "url.png")
    queue.send(event)
    drain(queue, Instance(clock), clock)
    row = app_env.row("url.png")
    assert row["status"] != "CAPTIONED" and "caption" not in row


@pytest.mark.parametrize("hint", [900.0, 5000.0, 1e308])
def test_a_wait_longer_than_sqs_can_delay_says_what_happens(hint):
    from captioner.errors import ProviderPending, ProviderTransientError
    from captioner.pipeline import _wait_for, _wait_reason

    for exc in (ProviderPending("queued", job_id="6", retry_after=hint),
                ProviderTransientError("429", retry_after=hint, http_status=429)):  # fmt: skip
        delay = _wait_for(exc)
        assert delay == 900.0
        assert "about 900 s" in _wait_reason(exc, delay)
