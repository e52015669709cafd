"""The ModelsLab client against httpx.MockTransport: every documented reply variant."""

import json

import httpx
import pytest

from captioner.errors import (
    ProviderConfigError,
    ProviderImageError,
    ProviderJobGone,
    ProviderPending,
    ProviderTransientError,
)
from captioner.providers.base import ImageInfo, ImageSource
from captioner.providers.modelslab import ModelsLabProvider
from tests import images

KEY = "sk-unit-SECRET"
BASE = "https://modelslab.test/api/v6"
IMAGE = ImageSource(
    info=ImageInfo("PNG", 10, 10, 100), read=lambda: images.png(), url="https://s3.test/a.png?sig=1"
)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.now += s


def provider(handler, clock=None, api_key=KEY):
    clock = clock or Clock()
    client = httpx.Client(transport=httpx.MockTransport(handler))
    return ModelsLabProvider(
        BASE, lambda: api_key, client=client, sleep=clock.sleep, clock=clock
    ), clock


def replies(*items):
    """A handler answering with each item in turn; records requests."""
    seen = []
    queue = list(items)

    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.method == "POST" and request.content else None
        seen.append((request.method, str(request.url), body))
        item = queue.pop(0)
        if isinstance(item, httpx.Response):
            return item
        if callable(item):
            return item(request)
        return httpx.Response(200, json=item)

    handle.seen = seen
    return handle


def test_success_reads_output_zero_and_sends_the_documented_body():
    h = replies({"status": "success", "id": 5, "output": ["  A   dog\non grass. "]})
    p, _ = provider(h)
    cap = p.caption(IMAGE, "short", deadline=100)
    assert cap.text == "A dog on grass." and cap.job_id == "5" and cap.provider == "modelslab"
    _method, url, body = h.seen[0]
    assert url == f"{BASE}/image_editing/caption"
    assert body == {"key": KEY, "init_image": IMAGE.url, "length": "short", "base64": False}


def test_output_as_a_plain_string_is_accepted():
    p, _ = provider(replies({"status": "success", "output": "A cat."}))
    assert p.caption(IMAGE, "normal", deadline=100).text == "A cat."


def test_output_that_is_a_link_is_fetched_for_its_text():
    h = replies(
        {"status": "success", "output": ["https://cdn.test/out.txt"]},
        httpx.Response(200, text="A linked caption."),
    )
    p, _ = provider(h)
    assert p.caption(IMAGE, "normal", deadline=100).text == "A linked caption."
    assert h.seen[1][:2] == ("GET", "https://cdn.test/out.txt")


def test_oversized_link_is_refused():
    h = replies(
        {"status": "success", "output": ["https://cdn.test/big"]},
        httpx.Response(200, content=b"x" * 70_000),
    )
    p, _ = provider(h)
    with pytest.raises(ProviderTransientError, match="64 KB"):
        p.caption(IMAGE, "normal", deadline=100)


def test_processing_polls_fetch_result_with_backoff_and_reports_the_job():
    jobs = []
    h = replies(
        {
            "status": "processing",
            "id": 9,
            "eta": 2,
            "fetch_result": f"{BASE}/image_editing/fetch/9",
        },
        {"status": "processing", "id": 9, "output": ""},
        {"status": "success", "id": 9, "output": ["Done."]},
    )
    p, clock = provider(h)
    cap = p.caption(IMAGE, "normal", deadline=100, on_job=jobs.append)
    assert cap.text == "Done." and jobs == ["9"]
    assert [u for _, u, _ in h.seen[1:]] == [f"{BASE}/image_editing/fetch/9"] * 2
    assert h.seen[1][2] == {"key": KEY}
    assert clock.slept[0] >= 2 * 0.8  # eta respected (with jitter)


def test_processing_past_the_deadline_raises_pending_with_the_job_id():
    p, _ = provider(replies({"status": "processing", "id": 12, "eta": 50}))
    with pytest.raises(ProviderPending) as exc:
        p.caption(IMAGE, "normal", deadline=10)
    assert exc.value.job_id == "12"


def test_a_known_job_is_polled_instead_of_paid_again():
    h = replies({"status": "success", "id": 3, "output": ["Polled."]})
    p, _ = provider(h)
    assert p.caption(IMAGE, "normal", deadline=100, job_id="3").text == "Polled."
    assert h.seen[0][1] == f"{BASE}/image_editing/fetch/3"


def test_a_vanished_job_is_reported_gone_never_paid_inside_the_poll():
    # The caller pays for the new job itself, after reserving its price (budget.py).
    h = replies(
        {"status": "error", "message": "Job not found"}, {"status": "success", "output": ["New."]}
    )
    p, _ = provider(h)
    with pytest.raises(ProviderJobGone):
        p.caption(IMAGE, "normal", deadline=100, job_id="3")
    assert len(h.seen) == 1 and h.seen[0][1] == f"{BASE}/image_editing/fetch/3"
    assert p.caption(IMAGE, "normal", deadline=100).text == "New."


@pytest.mark.parametrize(
    ("reply", "error", "text"),
    [
        (
            httpx.Response(401, json={"message": "Unauthorized"}),
            ProviderConfigError,
            "invalid API key",
        ),
        (httpx.Response(402, json={}), ProviderConfigError, "insufficient credits"),
        (httpx.Response(403, text="nope"), ProviderConfigError, "forbidden"),
        ({"status": "error", "message": "Invalid Api Key"}, ProviderConfigError, "Invalid Api Key"),
        (
            {"status": "error", "messege": "Insufficient credit balance"},
            ProviderConfigError,
            "credit",
        ),
        (httpx.Response(429, json={"retry_after": 30}), ProviderTransientError, "429"),
        (
            {"status": "error", "message": "Rate limit exceeded"},
            ProviderTransientError,
            "Rate limit",
        ),
        ({"status": "failed", "message": "Failed, Try Again"}, ProviderTransientError, "Try Again"),
        (
            {"status": "error", "message": {"error": "Server busy"}},
            ProviderTransientError,
            "Server busy",
        ),
        ({"status": "error", "message": "something odd"}, ProviderTransientError, "something odd"),
        (httpx.Response(502, text="bad gateway"), ProviderTransientError, "HTTP 502"),
        (httpx.Response(200, text="<html>"), ProviderTransientError, "malformed JSON"),
        ({"status": "success", "output": []}, ProviderTransientError, "empty output"),
        (
            {"status": "error", "message": "Could not download image from url"},
            ProviderImageError,
            "download image",
        ),
        (
            httpx.Response(400, json={"status": "error", "message": "Invalid image format"}),
            ProviderImageError,
            "Invalid image",
        ),
    ],
)
def test_error_replies_map_to_the_right_error_type(reply, error, text):
    p, _ = provider(replies(reply))
    with pytest.raises(error, match=text) as exc:
        p.caption(IMAGE, "normal", deadline=100)
    assert type(exc.value) is error


def test_retry_after_is_taken_from_the_body_or_header():
    p, _ = provider(replies(httpx.Response(429, json={"retry_after": 30})))
    with pytest.raises(ProviderTransientError) as exc:
        p.caption(IMAGE, "normal", deadline=100)
    assert exc.value.retry_after == 30
    p, _ = provider(replies(httpx.Response(429, headers={"Retry-After": "7"}, text="")))
    with pytest.raises(ProviderTransientError) as exc:
        p.caption(IMAGE, "normal", deadline=100)
    assert exc.value.retry_after == 7


def test_timeouts_and_connection_errors_are_transient():
    def timeout(request):
        raise httpx.ReadTimeout("slow", request=request)

    def refused(request):
        raise httpx.ConnectError("refused", request=request)

    def garbled(request):
        raise httpx.DecodingError("bad gzip", request=request)

    for fn, text in ((timeout, "timed out"), (refused, "cannot reach"), (garbled, "DecodingError")):
        p, _ = provider(replies(fn))
        with pytest.raises(ProviderTransientError, match=text):
            p.caption(IMAGE, "normal", deadline=100)


def test_the_key_is_redacted_from_every_message():
    p, _ = provider(replies({"status": "error", "message": f"key {KEY} is invalid"}))
    with pytest.raises(ProviderConfigError) as exc:
        p.caption(IMAGE, "normal", deadline=100)
    assert KEY not in str(exc.value) and "***" in str(exc.value)


def test_missing_key_is_a_configuration_error_before_any_request():
    h = replies()
    p, _ = provider(h, api_key=None)
    with pytest.raises(ProviderConfigError, match="no ModelsLab API key"):
        p.caption(IMAGE, "normal", deadline=100)
    assert h.seen == []


def test_local_files_are_uploaded_with_base64_to_url_first():
    h = replies(
        {"status": "success", "output": ["https://tmp.test/u.png"]},
        {"status": "success", "output": ["Uploaded."]},
    )
    p, _ = provider(h)
    local = ImageSource(info=ImageInfo("PNG", 64, 48, 10), read=images.png, url=None)
    assert p.caption(local, "normal", deadline=100).text == "Uploaded."
    assert h.seen[0][1] == f"{BASE}/base64_to_url"
    assert h.seen[0][2]["base64_string"].startswith("data:image/png;base64,")
    assert h.seen[1][2]["init_image"] == "https://tmp.test/u.png"


# -- found in review -------------------------------------------------------------------------


def test_a_blip_while_polling_keeps_the_job_so_the_retry_polls_instead_of_paying():
    h = replies({"status": "processing", "id": 55, "eta": 0}, httpx.Response(503, text="down"))
    p, _ = provider(h)
    with pytest.raises(ProviderPending) as exc:
        p.caption(IMAGE, "normal", deadline=100)
    assert exc.value.job_id == "55"


@pytest.mark.parametrize(
    "dead",
    [
        {"status": "failed", "message": "Failed, Try Again"},
        {"status": "error", "message": "Job not found"},
        httpx.Response(404, json={"message": "not found"}),
    ],
)
def test_a_dead_job_is_reported_gone_rather_than_polled_forever(dead):
    h = replies(dead)
    p, _ = provider(h)
    with pytest.raises(ProviderJobGone):
        p.caption(IMAGE, "normal", deadline=100, job_id="7")
    assert [u for _, u, _ in h.seen] == [f"{BASE}/image_editing/fetch/7"]


def test_a_long_eta_is_not_waited_for_in_the_function():
    p, clock = provider(replies({"status": "processing", "id": 31, "eta": 45}))
    with pytest.raises(ProviderPending) as exc:
        p.caption(IMAGE, "normal", deadline=1000)
    assert exc.value.park and exc.value.retry_after == 45 and exc.value.job_id == "31"
    assert clock.slept == []


def test_a_429_is_a_rate_limit_with_its_retry_after_and_not_charged():
    p, _ = provider(replies(httpx.Response(429, json={"retry_after": 7})))
    with pytest.raises(ProviderTransientError) as exc:
        p.caption(IMAGE, "normal", deadline=100)
    assert exc.value.rate_limited and exc.value.retry_after == 7
    assert not exc.value.maybe_charged


def test_a_rate_limited_poll_keeps_the_job():
    p, _ = provider(replies(httpx.Response(429, json={"retry_after": 3})))
    with pytest.raises(ProviderPending) as exc:
        p.caption(IMAGE, "normal", deadline=100, job_id="7")
    assert exc.value.job_id == "7" and exc.value.retry_after == 3


def test_fetch_result_on_another_host_never_receives_the_key():
    h = replies(
        {"status": "processing", "id": 4, "eta": 0, "fetch_result": "https://evil.test/steal"},
        {"status": "success", "id": 4, "output": ["Ok."]},
    )
    p, _ = provider(h)
    p.caption(IMAGE, "normal", deadline=100)
    assert h.seen[1][1] == f"{BASE}/image_editing/fetch/4"


def test_plain_http_caption_links_are_not_followed():
    p, _ = provider(replies({"status": "success", "output": ["http://cdn.test/out.txt"]}))
    with pytest.raises(ProviderTransientError, match="non-https"):
        p.caption(IMAGE, "normal", deadline=100)


def test_redaction_happens_before_truncation_and_scrubs_presigned_queries():
    message = (
        "x" * 495
        + KEY
        + " see https://bucket.s3.amazonaws.com/a.png?X-Amz-Security-Token=SECRET&sig=1"
    )
    p, _ = provider(replies({"status": "error", "message": message}))
    with pytest.raises(ProviderTransientError) as exc:
        p.caption(IMAGE, "normal", deadline=100)
    text = str(exc.value)
    assert KEY[:6] not in text and "SECRET" not in text


def test_the_key_never_leaks_url_escaped():
    key = "sk/with+specials"
    p, _ = provider(
        replies({"status": "error", "message": "key=sk%2Fwith%2Bspecials is invalid"}), api_key=key
    )
    with pytest.raises(ProviderConfigError) as exc:
        p.caption(IMAGE, "normal", deadline=100)
    assert "sk%2F" not in str(exc.value)


@pytest.mark.parametrize(
    ("message", "error"),
    [
        ("Image generation failed, please contact support", ProviderTransientError),
        ("init_image field is required", ProviderTransientError),
        ("Could not process image. No credits were deducted", ProviderImageError),
        ("Failed to download image: 403 Forbidden", ProviderImageError),
        ("Image format not allowed", ProviderTransientError),
        ("No credits left on your account", ProviderConfigError),
        ("Invalid image url", ProviderImageError),
    ],
)
def test_classification_reads_phrases_not_single_words(message, error):
    p, _ = provider(replies({"status": "error", "message": message}))
    with pytest.raises(error) as exc:
        p.caption(IMAGE, "normal", deadline=100)
    assert type(exc.value) is error


def test_huge_captions_are_clipped():
    p, _ = provider(replies({"status": "success", "output": ["word " * 10_000]}))
    assert len(p.caption(IMAGE, "normal", deadline=100).text) <= 16_000


def test_no_request_starts_without_time_for_it():
    h = replies()
    p, _ = provider(h)
    with pytest.raises(ProviderTransientError, match="not enough time"):
        p.caption(IMAGE, "normal", deadline=1.0)
    assert h.seen == []


def test_each_request_is_bounded_by_the_deadline():
    timeouts = []

    def record(request):
        timeouts.append(request.extensions["timeout"]["read"])
        return httpx.Response(200, json={"status": "success", "output": ["ok"]})

    p, _ = provider(replies(record))
    p.caption(IMAGE, "normal", deadline=7.5)
    assert timeouts == [7.5]
