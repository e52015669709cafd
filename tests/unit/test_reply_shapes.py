"""Every reply shape ModelsLab's documentation or behaviour allows (docs/modelslab.md), as
generated cases: status x job id present or not x output empty, text, link or list x eta x
HTTP status x Retry-After. Whatever the reply, the client

- returns a caption or raises one of the ``Provider*`` errors (never anything else),
- never loses a job it was told about: a reply with a job id and no caption in it hands the
  id over (``on_job``) or raises ``ProviderPending`` carrying it, so the next try polls,
- says a request may have been charged whenever the provider answered success,
- never shows the key, and never waits forever (the fetches are bounded by the deadline).
"""

from __future__ import annotations

import json
import math

import httpx
from hypothesis import given, settings
from hypothesis import strategies as st

from captioner.errors import ProviderError, ProviderPending
from captioner.providers.modelslab import ModelsLabProvider
from tests.unit.test_modelslab import BASE, IMAGE, KEY, Clock

STATUSES = st.sampled_from(["success", "processing", "error", "failed", "", "Success", "queued"])
IDS = st.one_of(st.none(), st.integers(1, 10**6), st.just(""), st.text("abc123", min_size=1))
LINK = f"{BASE}/links/cap.txt"
OUTPUTS = st.sampled_from(
    ["<missing>", [], [""], ["  "], ["A cat on a mat."], [LINK], "A cat.", LINK, None, [None],
     ["A first.", "A second."], [{"text": "nested"}], 42]
)  # fmt: skip
ETAS = st.sampled_from(["<missing>", 0, 1, 5, 60, 3600, -1, "NaN", "Infinity", "soon", None])
HTTP = st.sampled_from([200, 200, 200, 400, 401, 402, 403, 404, 422, 429, 500, 502, 503])
RETRY_AFTER = st.sampled_from([None, "1", "0", "-3", "NaN", "inf", "Wed, 21 Oct 2015 07:28:00 GMT"])
MESSAGES = st.sampled_from([None, "Rate limit exceeded", "invalid api key", "server busy",
                            "could not download image", "Failed, Try Again", f"bad key {KEY}"])  # fmt: skip


@st.composite
def replies(draw):
    doc = {"status": draw(STATUSES)}
    job = draw(IDS)
    if job is not None:
        doc["id"] = job
    output = draw(OUTPUTS)
    if output != "<missing>":
        doc["output"] = output
    eta = draw(ETAS)
    if eta != "<missing>":
        doc["eta"] = eta
    message = draw(MESSAGES)
    if message:
        doc[draw(st.sampled_from(["message", "messege"]))] = message
    headers = {}
    if (retry := draw(RETRY_AFTER)) is not None:
        headers["Retry-After"] = retry
    return draw(HTTP), doc, headers


def respond(status, doc, headers):
    raw = json.dumps(doc, allow_nan=True).replace('"NaN"', "NaN").replace('"Infinity"', "Infinity")
    return httpx.Response(status, content=raw.encode(), headers=headers)


def carries_a_job(status, doc) -> bool:
    """A reply that took the job on and named it, without the caption's text in it."""
    out = doc.get("output")
    first = out[0] if isinstance(out, list) and out else out
    text = isinstance(first, str) and first.strip() and not first.startswith("http")
    state = str(doc.get("status", "")).strip().lower()
    return (
        status == 200 and state in ("success", "processing")
        and doc.get("id") not in (None, "") and not text
    )  # fmt: skip


@settings(max_examples=300, deadline=None, derandomize=True)
@given(first=replies(), later=st.lists(replies(), min_size=0, max_size=4))
def test_every_reply_shape_gives_a_caption_or_a_provider_error_and_never_loses_a_job(first, later):
    answers = [first, *later]

    def handle(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":  # a caption link
            return httpx.Response(200, text="A linked caption.")
        status, doc, headers = answers.pop(0) if answers else (200, {"status": "processing"}, {})
        return respond(status, doc, headers)

    clock = Clock()
    client = httpx.Client(transport=httpx.MockTransport(handle))
    provider = ModelsLabProvider(BASE, lambda: KEY, client=client, sleep=clock.sleep, clock=clock)
    handed: list[str] = []
    try:
        caption = provider.caption(IMAGE, "short", deadline=30.0, on_job=handed.append)
    except ProviderPending as exc:
        assert exc.job_id, "a pending job always names the job to poll"
        if carries_a_job(first[0], first[1]):
            assert str(first[1]["id"]) in handed, "the job was handed over to be stored"
        assert exc.retry_after is None or math.isfinite(exc.retry_after)
        assert KEY not in str(exc)
        return
    except ProviderError as exc:
        assert KEY not in str(exc)
        retry_after = getattr(exc, "retry_after", None)
        assert retry_after is None or math.isfinite(retry_after)
        status, doc, _ = first
        if carries_a_job(status, doc):
            assert handed == [str(doc["id"])], "the job was handed over before the failure"
        if status == 200 and str(doc.get("status", "")).strip().lower() == "success":
            assert exc.maybe_charged, "a success is a paid request"
        return
    assert caption.text.strip() and KEY not in caption.text
