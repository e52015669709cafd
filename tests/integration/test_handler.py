"""The real handler, driven with real event shapes against moto and a fake ModelsLab."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlparse

import pytest

from captioner import handler
from captioner.search import IndexSearch, SearchQuery
from captioner.store import CaptionReader
from tests import images
from tests.conftest import (
    API_KEY,
    BUCKET,
    TABLE,
    eventbridge_event,
    fast,
    notification,
    s3_record,
    sqs_event,
)
from tests.fakes.modelslab import Reply


def put_event(app_env, key, body, *, sequencer="0066A1B2C3D4E5F601", tags=None, **kw):
    obj = app_env.put(key, body, tags=tags)
    rec = s3_record(key, version_id=obj["version_id"], etag=obj["etag"], size=obj["size"],
                    sequencer=sequencer, **kw)  # fmt: skip
    return obj, notification(rec)


def run(event, ctx, *, receive_count=1):
    fast(handler.get_app())
    return handler.lambda_handler(sqs_event(event, receive_count=receive_count), ctx)


# -- the happy path, for each event shape ------------------------------------------------------


def test_sqs_wrapped_s3_notification_captions_the_object_and_tags_it(
    app_env, fake_modelslab, lambda_context
):
    obj, event = put_event(app_env, "photos/cat.png", images.png(120, 80))

    result = run(event, lambda_context)

    assert result == {"batchItemFailures": []}
    row = app_env.row("photos/cat.png")
    assert row["status"] == "CAPTIONED"
    assert row["caption"] == "A picture named cat.png."
    assert row["provider"] == "modelslab" and row["length"] == "normal"
    assert (row["format"], row["width"], row["height"]) == ("PNG", 120, 80)
    assert row["version_id"] == obj["version_id"] and row["etag"] == obj["etag"]
    assert row["size"] == obj["size"] and row["attempts"] == 1
    assert row["sequencer"] == "0066A1B2C3D4E5F601"
    assert row["tag_status"] == "WRITTEN"
    assert row["created_at"].endswith("Z") and row["updated_at"] >= row["created_at"]
    assert "reason" not in row and "last_error" not in row
    assert app_env.tags("photos/cat.png", obj["version_id"]) == {
        "caption": "A picture named cat.png."
    }


def test_request_sends_a_presigned_url_for_that_exact_version_expiring_within_an_hour(
    app_env, fake_modelslab, lambda_context
):
    obj, event = put_event(app_env, "a.jpg", images.jpeg())
    run(event, lambda_context)

    (call,) = fake_modelslab.paid_calls()
    assert call.body["key"] == API_KEY and call.body["length"] == "normal"
    assert call.body["base64"] is False
    query = parse_qs(urlparse(call.body["init_image"]).query)
    assert query["versionId"] == [obj["version_id"]]
    assert 0 < int(query["X-Amz-Expires"][0]) <= 3600


def test_eventbridge_body_is_accepted_with_its_unencoded_key(
    app_env, fake_modelslab, lambda_context
):
    key = "EB dir/Ünïcode + plus%.png"
    obj = app_env.put(key, images.png())
    event = eventbridge_event(key, size=obj["size"], etag=obj["etag"], version_id=obj["version_id"],
                              sequencer="0066A1B2C3D4E5F602")  # fmt: skip
    assert run(event, lambda_context) == {"batchItemFailures": []}
    assert app_env.row(key)["status"] == "CAPTIONED"


def test_direct_invocation_failures_raise_and_leave_the_row_pending(
    app_env, fake_modelslab, lambda_context
):
    """A direct (async) invocation is retried by Lambda itself: no attempt is known to be the
    last, so a failure never marks the row FAILED; it raises so Lambda retries."""
    from captioner.pipeline import RetryLater

    fake_modelslab.queue(*[Reply({"status": "error", "message": "Server busy"})] * 10)
    _, event = put_event(app_env, "direct-busy.png", images.png())
    fast(handler.get_app())
    with pytest.raises(RetryLater):
        handler.lambda_handler(event, lambda_context)
    row = app_env.row("direct-busy.png")
    assert row["status"] == "PENDING" and "Server busy" in row["last_error"]


def test_direct_s3_event_works_for_sam_local_invoke(app_env, fake_modelslab, lambda_context):
    _, event = put_event(app_env, "direct.png", images.png())
    fast(handler.get_app())
    result = handler.lambda_handler(event, lambda_context)
    assert result["outcomes"][0]["status"] == "CAPTIONED"
    assert app_env.row("direct.png")["status"] == "CAPTIONED"


@pytest.mark.parametrize(
    "key",
    [
        "with space.png",
        "plus+sign.png",
        "ünïcödé/日本語.png",
        "percent%41.png",
        "a/b/c/deep key+1.png",
    ],
)
def test_odd_keys_are_decoded_once(app_env, fake_modelslab, lambda_context, key):
    _, event = put_event(app_env, key, images.png())
    assert run(event, lambda_context) == {"batchItemFailures": []}
    assert app_env.row(key)["status"] == "CAPTIONED"


def test_event_without_version_or_sequencer_falls_back_to_a_head(
    app_env, fake_modelslab, lambda_context
):
    """moto's notifications carry no versionId and no sequencer."""
    obj = app_env.put("moto.png", images.png())
    event = notification(s3_record("moto.png", size=obj["size"], etag=obj["etag"]))
    run(event, lambda_context)
    row = app_env.row("moto.png")
    assert row["status"] == "CAPTIONED" and row["version_id"] == obj["version_id"]


# -- nothing to do --------------------------------------------------------------------------


def test_s3_test_event_and_folder_markers_are_consumed_without_rows(
    app_env, fake_modelslab, lambda_context
):
    test_event = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Time": "2026-11-25T10:00:00Z",
                  "Bucket": BUCKET, "RequestId": "X", "HostId": "Y"}  # fmt: skip
    app_env.put("folder/", b"")
    folder = notification(s3_record("folder/", size=0, etag="d41d8cd98f00b204e9800998ecf8427e"))
    result = handler.lambda_handler(sqs_event(test_event, folder), lambda_context)
    assert result == {"batchItemFailures": []}
    assert app_env.row("folder/") is None
    assert fake_modelslab.requests == []


def test_zero_byte_object_is_rejected_as_empty(app_env, fake_modelslab, lambda_context):
    _, event = put_event(app_env, "empty.png", b"")
    run(event, lambda_context)
    row = app_env.row("empty.png")
    assert (row["status"], row["reason"]) == ("REJECTED", "empty object")
    assert fake_modelslab.requests == []


# -- image checks ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "reason_part"),
    [
        (b"hello, this is a text file\n" * 10, "not an image"),
        (images.gif(), "unsupported format GIF"),
        (images.webp(), "unsupported format WEBP"),
        (images.corrupt_header_png(), "corrupt PNG header"),
        (images.png_header_claiming(60000, 60000), "decompression bomb"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'></svg>", "not an image"),
    ],
)
def test_bad_files_are_rejected_before_paying(
    app_env, fake_modelslab, lambda_context, body, reason_part
):
    _, event = put_event(app_env, "bad.png", body)
    assert run(event, lambda_context) == {"batchItemFailures": []}
    row = app_env.row("bad.png")
    assert row["status"] == "REJECTED"
    assert reason_part in row["reason"]
    assert fake_modelslab.paid_calls() == []
    assert "caption" not in app_env.tags("bad.png")


def test_jpeg_with_large_icc_profile_is_read_with_a_second_larger_range(
    app_env, fake_modelslab, lambda_context
):
    body = images.jpeg_with_big_icc(200_000)
    _, event = put_event(app_env, "icc.jpg", body)
    run(event, lambda_context)
    row = app_env.row("icc.jpg")
    assert row["status"] == "CAPTIONED" and (row["width"], row["height"]) == (80, 60)


def test_object_over_the_size_limit_is_rejected(
    app_env, fake_modelslab, lambda_context, monkeypatch
):
    monkeypatch.setenv("CAPTION_MAX_IMAGE_BYTES", "1000")
    handler.reset()
    _, event = put_event(app_env, "big.png", images.png(400, 400) + b"\0" * 2000)
    run(event, lambda_context)
    row = app_env.row("big.png")
    assert row["status"] == "REJECTED" and "CAPTION_MAX_IMAGE_BYTES" in row["reason"]


# -- provider replies ------------------------------------------------------------------------


def test_processing_reply_is_polled_until_success(app_env, fake_modelslab, lambda_context):
    fake_modelslab.queue({"status": "processing", "id": 77, "eta": 0, "output": [],
                          "fetch_result": f"{fake_modelslab.url}/image_editing/fetch/77"})  # fmt: skip
    fake_modelslab.queue_fetch({"status": "processing", "id": 77, "output": ""},
                               {"status": "success", "id": 77, "output": ["A queued caption."]})  # fmt: skip
    _, event = put_event(app_env, "queued.png", images.png())
    run(event, lambda_context)
    row = app_env.row("queued.png")
    assert row["caption"] == "A queued caption." and row["provider_job_id"] == "77"
    assert len(fake_modelslab.paid_calls()) == 1 and len(fake_modelslab.polls()) == 2


def test_job_still_processing_at_the_deadline_is_polled_on_retry_not_paid_again(
    app_env, fake_modelslab, lambda_context
):
    lambda_context.remaining_ms = 11_500  # 3.5 s of work after the safety margin
    fake_modelslab.queue({"status": "processing", "id": 91, "eta": 5, "output": []})
    fake_modelslab.queue_fetch(*[{"status": "processing", "id": 91, "output": ""}] * 100_000)
    _, event = put_event(app_env, "slow.png", images.png())
    first = run(event, lambda_context)
    assert len(first["batchItemFailures"]) == 1
    row = app_env.row("slow.png")
    assert row["status"] == "PENDING" and row["provider_job_id"] == "91"

    lambda_context.remaining_ms = 60_000
    fake_modelslab.fetch_replies.clear()
    fake_modelslab.queue_fetch({"status": "success", "id": 91, "output": ["Finally done."]})
    second = run(event, lambda_context, receive_count=2)
    assert second == {"batchItemFailures": []}
    row = app_env.row("slow.png")
    assert (row["status"], row["caption"], row["attempts"]) == ("CAPTIONED", "Finally done.", 2)
    assert len(fake_modelslab.paid_calls()) == 1
    assert fake_modelslab.polls()[-1].path.endswith("/image_editing/fetch/91")


@pytest.mark.parametrize(
    "reply",
    [
        Reply({"status": "error", "message": "Server busy"}),
        Reply({"status": "failed", "message": "Failed, Try Again"}),
        Reply({"status": "error", "message": "Rate limit exceeded"}),
        Reply({"message": "slow down", "retry_after": 0.01}, status=429),
        Reply({"status": "error"}, status=503),
        Reply(status=500, body=b"<html>oops</html>"),
        Reply(body=b"{not json"),
    ],
    ids=[
        "busy",
        "failed-try-again",
        "rate-limit-200",
        "429",
        "503",
        "500-html",
        "bad-json",
    ],
)
def test_transient_provider_faults_are_retried_in_process(
    app_env, fake_modelslab, lambda_context, reply
):
    fake_modelslab.queue(reply)  # then the default success
    _, event = put_event(app_env, "flaky.png", images.png())
    assert run(event, lambda_context) == {"batchItemFailures": []}
    assert app_env.row("flaky.png")["status"] == "CAPTIONED"
    assert len(fake_modelslab.paid_calls()) == 2


def test_a_success_without_a_caption_is_charged_so_only_the_next_delivery_tries_again(
    app_env, fake_modelslab, lambda_context
):
    fake_modelslab.queue(Reply({"status": "success", "output": []}))  # then the default success
    _, event = put_event(app_env, "empty.png", images.png())
    assert len(run(event, lambda_context)["batchItemFailures"]) == 1  # not paid again at once
    assert len(fake_modelslab.paid_calls()) == 1
    assert run(event, lambda_context) == {"batchItemFailures": []}
    assert app_env.row("empty.png")["status"] == "CAPTIONED"
    assert len(fake_modelslab.paid_calls()) == 2


def test_timeouts_are_transient(app_env, fake_modelslab, lambda_context, monkeypatch):
    monkeypatch.setenv("MODELSLAB_TIMEOUT", "1")
    handler.reset()
    fake_modelslab.queue(Reply({"status": "success", "output": ["late"]}, delay=1.5))
    _, event = put_event(app_env, "timeout.png", images.png())
    assert run(event, lambda_context) == {"batchItemFailures": []}
    assert app_env.row("timeout.png")["caption"] == "A picture named timeout.png."


def test_persistent_transient_faults_fail_the_message_and_record_why(
    app_env, fake_modelslab, lambda_context
):
    fake_modelslab.queue(*[Reply({"status": "error", "message": "Server busy"})] * 10)
    _, event = put_event(app_env, "busy.png", images.png())
    result = run(event, lambda_context)
    assert len(result["batchItemFailures"]) == 1
    row = app_env.row("busy.png")
    assert row["status"] == "PENDING" and "Server busy" in row["last_error"]


def test_last_delivery_marks_the_row_failed(app_env, fake_modelslab, lambda_context):
    fake_modelslab.queue(*[Reply({"status": "error", "message": "Server busy"})] * 10)
    _, event = put_event(app_env, "dead.png", images.png())
    result = run(event, lambda_context, receive_count=3)  # CAPTION_MAX_RECEIVE_COUNT=3
    assert len(result["batchItemFailures"]) == 1
    row = app_env.row("dead.png")
    assert row["status"] == "FAILED" and "dead-lettered" in row["reason"]


@pytest.mark.parametrize(
    "reply",
    [
        Reply({"status": "error", "message": "Invalid Api Key"}),
        Reply({"message": "unauthorized"}, status=401),
        Reply({"message": "Insufficient credits"}, status=402),
        Reply({"status": "error", "message": "Your credit balance is empty"}),
        Reply({"message": "forbidden"}, status=403),
    ],
)
def test_key_and_credit_faults_never_reject_the_image(
    app_env, fake_modelslab, lambda_context, reply
):
    fake_modelslab.queue(reply)
    _, event = put_event(app_env, "cfg.png", images.png())
    result = run(event, lambda_context)
    assert len(result["batchItemFailures"]) == 1
    row = app_env.row("cfg.png")
    assert row["status"] == "PENDING" and row["reason"].startswith("provider configuration")
    assert len(fake_modelslab.paid_calls()) == 1  # not retried in-process: it will not heal


def test_missing_api_key_fails_the_message_without_calling_the_provider(
    app_env, fake_modelslab, lambda_context, monkeypatch
):
    monkeypatch.delenv("MODELSLAB_API_KEY")
    handler.reset()
    _, event = put_event(app_env, "nokey.png", images.png())
    assert len(run(event, lambda_context)["batchItemFailures"]) == 1
    assert "no ModelsLab API key" in app_env.row("nokey.png")["last_error"]
    assert fake_modelslab.requests == []


def test_provider_saying_the_image_is_unreadable_is_a_permanent_failure(
    app_env, fake_modelslab, lambda_context
):
    fake_modelslab.queue({"status": "error", "message": "Could not decode image"})
    _, event = put_event(app_env, "broken.jpg", images.truncated_body_jpeg())
    assert run(event, lambda_context) == {"batchItemFailures": []}
    row = app_env.row("broken.jpg")
    assert row["status"] == "FAILED" and "Could not decode image" in row["reason"]
    assert len(fake_modelslab.paid_calls()) == 1


def test_caption_given_as_a_link_is_fetched(app_env, fake_modelslab, lambda_context):
    # The fake serves POST only; a GET to it fails, which must be a transient error, then
    # the default success wins. A link to a real text document is covered in unit tests.
    fake_modelslab.queue({"status": "success", "output": [f"{fake_modelslab.url}/text/1.txt"]})
    _, event = put_event(app_env, "link.png", images.png())
    assert run(event, lambda_context) == {"batchItemFailures": []}
    assert app_env.row("link.png")["status"] == "CAPTIONED"


def test_api_key_never_appears_in_rows_or_logs(
    app_env, fake_modelslab, lambda_context, capfd, log_lines
):
    fake_modelslab.queue(*[Reply({"status": "error", "message": f"bad key {API_KEY} given"})] * 2)
    fake_modelslab.queue(
        *[Reply({"status": "error", "message": f"Server busy for {API_KEY}"})] * 10
    )
    for name in ("k1.png", "k2.png"):
        _, event = put_event(app_env, name, images.png())
        run(event, lambda_context)
    out = capfd.readouterr()
    logs = json.dumps(log_lines())
    assert "retry later" in logs  # the logs were captured
    assert API_KEY not in out.out + out.err + logs
    for name in ("k1.png", "k2.png"):
        assert API_KEY not in json.dumps(app_env.row(name))


# -- tags --------------------------------------------------------------------------------------


def test_existing_tags_are_kept_and_the_caption_sanitised(app_env, fake_modelslab, lambda_context):
    long_text = "Line one,\nwith\ttabs & «quotes» — and an emoji 🐱! " + "word " * 80
    fake_modelslab.queue({"status": "success", "output": [long_text]})
    obj, event = put_event(app_env, "t.png", images.png(), tags={"team": "blue", "env": "prod"})
    run(event, lambda_context)
    tags = app_env.tags("t.png", obj["version_id"])
    assert tags["team"] == "blue" and tags["env"] == "prod"
    value = tags["caption"]
    assert len(value) <= 256 and "\n" not in value and "\t" not in value and "🐱" not in value
    assert value.startswith("Line one with tabs + quotes and an emoji")
    row = app_env.row("t.png")
    assert row["caption"].startswith("Line one, with tabs") and len(row["caption"]) > 256


def test_ten_tags_already_means_row_captioned_but_tag_not_written(
    app_env, fake_modelslab, lambda_context
):
    user_tags = {f"k{i}": f"v{i}" for i in range(10)}
    obj, event = put_event(app_env, "full.png", images.png(), tags=user_tags)
    run(event, lambda_context)
    row = app_env.row("full.png")
    assert row["status"] == "CAPTIONED" and row["tag_status"] == "LIMIT_REACHED"
    assert app_env.tags("full.png", obj["version_id"]) == user_tags


def test_uploaders_own_caption_tag_is_never_overwritten(app_env, fake_modelslab, lambda_context):
    obj, event = put_event(app_env, "mine.png", images.png(), tags={"caption": "my own words"})
    run(event, lambda_context)
    assert app_env.tags("mine.png", obj["version_id"])["caption"] == "my own words"
    row = app_env.row("mine.png")
    assert row["tag_status"] == "KEPT_EXISTING" and row["caption"] == "A picture named mine.png."


def test_opt_out_tag_skips_the_provider(app_env, fake_modelslab, lambda_context):
    _, event = put_event(app_env, "private.png", images.png(), tags={"caption-skip": "TRUE"})
    run(event, lambda_context)
    row = app_env.row("private.png")
    assert row["status"] == "SKIPPED" and "caption-skip" in row["reason"]
    assert fake_modelslab.requests == []


def test_tag_write_failure_keeps_the_paid_caption(app_env, fake_modelslab, lambda_context):
    app = fast(handler.get_app())

    def refuse(*a, **kw):
        raise RuntimeError("AccessDenied")

    app.pipeline.objects.put_tags = refuse
    _, event = put_event(app_env, "notag.png", images.png())
    assert handler.lambda_handler(sqs_event(event), lambda_context) == {"batchItemFailures": []}
    row = app_env.row("notag.png")
    assert row["status"] == "CAPTIONED" and row["tag_status"] == "FAILED"
    assert "AccessDenied" in row["last_error"]


# -- idempotency and ordering ------------------------------------------------------------------


def test_duplicate_delivery_of_a_captioned_version_does_not_pay_again(
    app_env, fake_modelslab, lambda_context
):
    _, event = put_event(app_env, "dup.png", images.png())
    run(event, lambda_context)
    run(event, lambda_context)
    assert len(fake_modelslab.paid_calls()) == 1
    assert app_env.row("dup.png")["attempts"] == 1


def test_out_of_order_delivery_never_overwrites_the_newer_version(
    app_env, fake_modelslab, lambda_context
):
    _, old_event = put_event(app_env, "v.png", images.png(), sequencer="0066A1B2C3D4E5F601")
    new, new_event = put_event(app_env, "v.png", images.jpeg(), sequencer="0066A1B2C3D4E5F6FF")
    run(new_event, lambda_context)
    run(old_event, lambda_context)
    row = app_env.row("v.png")
    assert row["version_id"] == new["version_id"] and row["format"] == "JPEG"
    assert len(fake_modelslab.paid_calls()) == 1


def test_a_newer_version_replaces_the_row_and_clears_old_results(
    app_env, fake_modelslab, lambda_context
):
    _, first = put_event(app_env, "n.png", b"not an image at all", sequencer="01")
    run(first, lambda_context)
    assert app_env.row("n.png")["status"] == "REJECTED"
    new, second = put_event(app_env, "n.png", images.png(), sequencer="02")
    run(second, lambda_context)
    row = app_env.row("n.png")
    assert row["status"] == "CAPTIONED" and row["version_id"] == new["version_id"]
    assert "reason" not in row and row["attempts"] == 1


def test_one_bad_record_does_not_fail_its_neighbours(app_env, fake_modelslab, lambda_context):
    _, good = put_event(app_env, "good.png", images.png())
    _, rejected = put_event(app_env, "text.png", b"plain text")
    fake_modelslab.queue(*[Reply({"message": "no"}, status=401)])
    batch = sqs_event(good, "this is not json", rejected, {"unexpected": "shape"})
    fast(handler.get_app())
    result = handler.lambda_handler(batch, lambda_context)
    failed = {f["itemIdentifier"] for f in result["batchItemFailures"]}
    ids = [r["messageId"] for r in batch["Records"]]
    assert ids[1] in failed and ids[3] in failed  # malformed: dead-letter, visibly
    assert app_env.row("text.png")["status"] == "REJECTED"
    good_row = app_env.row("good.png")
    assert (good_row["status"] == "CAPTIONED") == (ids[0] not in failed)


def test_batch_records_run_concurrently(app_env, fake_modelslab, lambda_context, monkeypatch):

    monkeypatch.setenv("CAPTION_BATCH_CONCURRENCY", "5")
    monkeypatch.setenv("CAPTION_PROVIDER_SLOTS", "5")  # the template gives each instance 1
    handler.reset()
    events = []
    for i in range(5):
        _, ev = put_event(app_env, f"c{i}.png", images.png())
        events.append(ev)
    fake_modelslab.queue(
        *[Reply({"status": "success", "output": [f"c{i}"]}, delay=0.4) for i in range(5)]
    )
    fast(handler.get_app())
    assert handler.lambda_handler(sqs_event(*events), lambda_context) == {"batchItemFailures": []}
    # each reply takes 0.4 s: records in flight together show the bounded pool at work
    assert 2 <= fake_modelslab.max_in_flight <= 5
    assert all(app_env.row(f"c{i}.png")["status"] == "CAPTIONED" for i in range(5))


# -- deletes -----------------------------------------------------------------------------------


def test_delete_marker_marks_the_row_deleted(app_env, fake_modelslab, lambda_context):
    _, event = put_event(app_env, "gone.png", images.png(), sequencer="10")
    run(event, lambda_context)
    app_env.s3.delete_object(Bucket=BUCKET, Key="gone.png")
    removed = notification(
        s3_record("gone.png", event_name="ObjectRemoved:DeleteMarkerCreated", sequencer="11")
    )
    run(removed, lambda_context)
    row = app_env.row("gone.png")
    assert row["status"] == "DELETED" and row["caption"] == "A picture named gone.png."
    assert row["deleted_at"].endswith("Z")


def test_a_delete_costs_a_head_two_writes_and_its_event_and_leaves_search(
    app_env, fake_modelslab, lambda_context
):
    _, event = put_event(app_env, "gone2.png", images.png(), sequencer="10")
    run(event, lambda_context)
    finder = IndexSearch(CaptionReader(TABLE, app_env.ddb))
    assert [r["key"] for r in finder.find(SearchQuery("gone2")).rows] == ["gone2.png"]
    app_env.s3.delete_object(Bucket=BUCKET, Key="gone2.png")
    removed = notification(
        s3_record("gone2.png", event_name="ObjectRemoved:DeleteMarkerCreated", sequencer="11")
    )
    calls = count_aws_calls(handler.get_app())
    run(removed, lambda_context)
    # the object is gone (HEAD), the row DELETED, then its postings removed; the event and
    # the write that says it went out
    assert calls == ["HeadObject", "UpdateItem", "TransactWriteItems", "PutEvents", "UpdateItem"]
    assert finder.find(SearchQuery("gone2")).rows == []


def test_late_delete_of_an_older_event_does_not_mark_a_newer_upload(
    app_env, fake_modelslab, lambda_context
):
    _, event = put_event(app_env, "back.png", images.png(), sequencer="30")
    run(event, lambda_context)
    late = notification(
        s3_record("back.png", event_name="ObjectRemoved:DeleteMarkerCreated", sequencer="20")
    )
    run(late, lambda_context)
    assert app_env.row("back.png")["status"] == "CAPTIONED"


def test_object_deleted_before_processing_is_ignored(app_env, fake_modelslab, lambda_context):
    obj = app_env.put("vanished.png", images.png())
    app_env.s3.delete_object(Bucket=BUCKET, Key="vanished.png", VersionId=obj["version_id"])
    event = notification(s3_record("vanished.png"))  # no version: HEAD finds nothing
    assert run(event, lambda_context) == {"batchItemFailures": []}
    assert app_env.row("vanished.png") is None


# -- cost per record ---------------------------------------------------------------------------


def count_aws_calls(app):
    calls = []
    events = app.pipeline.announcer._publisher._events
    for client in (app.pipeline.objects._s3, app.pipeline.store._db, events):
        client.meta.events.register("before-call.*.*", lambda model, **kw: calls.append(model.name))
    return calls


def test_a_real_s3_event_costs_ten_aws_round_trips_and_one_paid_call(
    app_env, fake_modelslab, lambda_context
):
    _, event = put_event(app_env, "cost.png", images.png())
    app = fast(handler.get_app())
    calls: list[str] = []
    events = app.pipeline.announcer._publisher._events
    for client in (app.pipeline.objects._s3, app.pipeline.store._db, events):
        client.meta.events.register(
            "before-call.*.*",  # a request sent (presigning sends none)
            lambda model, params, **kw: calls.append(
                "Reserve" if "#budget" in str(params.get("body")) else model.name
            ),
        )  # fmt: skip
    handler.lambda_handler(sqs_event(event), lambda_context)
    # claim; the opt-out tags and the header side by side; the spend reserved; the paid
    # caption made durable at once (one transaction with its postings in the word index),
    # next to the tags read again (the uploader may have added some during the provider
    # call); the tag write; the tag result (with the event owed), the event, the event no
    # longer owed
    assert calls[0] == "UpdateItem"
    assert sorted(calls[1:3]) == ["GetObject", "GetObjectTagging"]
    assert calls[3] == "Reserve"
    assert sorted(calls[4:6]) == ["GetObjectTagging", "TransactWriteItems"]
    assert calls[6:] == ["PutObjectTagging", "UpdateItem", "PutEvents", "UpdateItem"]
    assert len(fake_modelslab.paid_calls()) == 1
    found = IndexSearch(CaptionReader(TABLE, app_env.ddb)).find(SearchQuery("cost png"))
    assert [r["key"] for r in found.rows] == ["cost.png"]


def test_without_an_event_bus_a_caption_costs_eight_round_trips(
    app_env, fake_modelslab, lambda_context, monkeypatch
):
    monkeypatch.setenv("CAPTION_EVENT_BUS", "")
    _, event = put_event(app_env, "cost-quiet.png", images.png())
    app = fast(handler.get_app())
    assert app.pipeline.announcer.enabled is False
    calls = []
    for client in (app.pipeline.objects._s3, app.pipeline.store._db):
        client.meta.events.register("before-call.*.*", lambda model, **kw: calls.append(model.name))
    handler.lambda_handler(sqs_event(event), lambda_context)
    # the seven of issue 9, and the reservation against the daily budget
    assert len(calls) == 8 and "event_due" not in app_env.row("cost-quiet.png")


def test_a_duplicate_costs_one_conditional_write_and_nothing_else(
    app_env, fake_modelslab, lambda_context
):
    _, event = put_event(app_env, "cost2.png", images.png())
    run(event, lambda_context)
    calls = count_aws_calls(handler.get_app())
    run(event, lambda_context)
    assert calls == ["UpdateItem"]
    assert len(fake_modelslab.paid_calls()) == 1


def test_an_event_without_version_adds_one_head(app_env, fake_modelslab, lambda_context):
    obj = app_env.put("cost3.png", images.png())
    calls = count_aws_calls(fast(handler.get_app()))
    handler.lambda_handler(
        sqs_event(notification(s3_record("cost3.png", size=obj["size"]))), lambda_context
    )
    assert calls[0] == "HeadObject" and len(calls) == 11


# -- found in review ---------------------------------------------------------------------------


def test_a_new_version_never_polls_the_previous_versions_job(
    app_env, fake_modelslab, lambda_context
):
    fake_modelslab.queue({"status": "processing", "id": 1, "eta": 0})
    fake_modelslab.queue_fetch({"status": "success", "id": 1, "output": ["Version one."]})
    _, v1 = put_event(app_env, "jobs.png", images.png(), sequencer="01")
    run(v1, lambda_context)
    assert app_env.row("jobs.png")["provider_job_id"] == "1"

    fake_modelslab.queue(*[Reply({"status": "error", "message": "Server busy"})] * 10)
    _, v2 = put_event(app_env, "jobs.png", images.jpeg(), sequencer="02")
    assert len(run(v2, lambda_context)["batchItemFailures"]) == 1
    fake_modelslab.caption_replies.clear()
    assert run(v2, lambda_context, receive_count=2) == {"batchItemFailures": []}
    row = app_env.row("jobs.png")
    assert row["caption"] == "A picture named jobs.png." and row["format"] == "JPEG"
    assert [p.path for p in fake_modelslab.polls()] == ["/api/v6/image_editing/fetch/1"]


def test_a_late_backfill_of_an_old_version_does_not_take_the_row(
    app_env, fake_modelslab, lambda_context
):
    from captioner.events import backfill_message

    old = app_env.put("bf.png", images.png())
    new, event = put_event(app_env, "bf.png", images.jpeg(), sequencer="05")
    run(event, lambda_context)
    late = backfill_message(
        BUCKET, "bf.png", version_id=old["version_id"], etag=old["etag"], size=old["size"]
    )
    assert run(json.loads(late), lambda_context) == {"batchItemFailures": []}
    assert app_env.row("bf.png")["version_id"] == new["version_id"]
    assert len(fake_modelslab.paid_calls()) == 1


def test_an_unexpected_error_is_recorded_and_fails_on_the_last_delivery(
    app_env, fake_modelslab, lambda_context
):
    app = fast(handler.get_app())

    def broken(*a, **kw):
        raise RuntimeError("S3 is having a bad day")

    app.pipeline.objects.read_prefix = broken
    _, event = put_event(app_env, "oops.png", images.png())
    assert len(handler.lambda_handler(sqs_event(event), lambda_context)["batchItemFailures"]) == 1
    row = app_env.row("oops.png")
    assert row["status"] == "PENDING" and "bad day" in row["last_error"]
    handler.lambda_handler(sqs_event(event, receive_count=3), lambda_context)
    assert app_env.row("oops.png")["status"] == "FAILED"


def test_tags_added_while_the_provider_works_survive(app_env, fake_modelslab, lambda_context):
    obj, event = put_event(app_env, "race.png", images.png(), tags={"a": "1"})

    def tag_meanwhile(body):
        app_env.s3.put_object_tagging(
            Bucket=BUCKET, Key="race.png", VersionId=obj["version_id"],
            Tagging={"TagSet": [{"Key": "a", "Value": "1"}, {"Key": "owner", "Value": "alice"}]},
        )  # fmt: skip
        return None

    fake_modelslab.rule = tag_meanwhile
    run(event, lambda_context)
    assert app_env.tags("race.png", obj["version_id"]) == {
        "a": "1",
        "owner": "alice",
        "caption": "A picture named race.png.",
    }


@pytest.fixture
def log_lines():
    """The function's JSON log lines, parsed (the Powertools handler's stream, swapped)."""
    import io

    from captioner.observability import logger

    stream = io.StringIO()
    log_handler = logger.registered_handler
    old = log_handler.setStream(stream)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    log_handler.setStream(old)


def test_the_outcome_log_line_names_the_object(app_env, fake_modelslab, lambda_context, log_lines):
    _, event = put_event(app_env, "logged.png", images.png())
    run(event, lambda_context)
    lines = log_lines()
    (processed,) = [x for x in lines if x["message"] == "processed"]
    assert processed["bucket"] == BUCKET and processed["key"] == "logged.png"
    assert (
        processed["status"] == "CAPTIONED"
        and processed["function_request_id"] == lambda_context.aws_request_id
    )


def test_records_started_without_enough_time_are_retried_without_a_claim(
    app_env, fake_modelslab, lambda_context
):
    lambda_context.remaining_ms = 9_000  # 1 s after the safety margin
    _, event = put_event(app_env, "late.png", images.png())
    assert len(run(event, lambda_context)["batchItemFailures"]) == 1
    assert app_env.row("late.png") is None and fake_modelslab.requests == []


def test_upload_transport_sends_the_bytes_instead_of_a_url(
    app_env, fake_modelslab, lambda_context, monkeypatch
):
    """For the local stack with the real ModelsLab: presigned URLs on 127.0.0.1 are out of
    its reach, so the handler uploads the image with base64_to_url."""
    import base64

    monkeypatch.setenv("CAPTION_IMAGE_TRANSPORT", "upload")
    handler.reset()
    body = images.png(30, 20)
    _, event = put_event(app_env, "upload.png", body)
    assert run(event, lambda_context) == {"batchItemFailures": []}
    upload, call = fake_modelslab.requests
    assert upload.path.endswith("/base64_to_url")
    assert base64.b64decode(upload.body["base64_string"].split(",", 1)[1]) == body
    assert call.body["init_image"] == "http://127.0.0.1:9/upload.png"
    assert app_env.row("upload.png")["status"] == "CAPTIONED"
