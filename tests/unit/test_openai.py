"""The OpenAI-compatible provider against a fake chat-completions server on 127.0.0.1."""

from __future__ import annotations

import base64
import io
import time

import pytest
from PIL import Image

from captioner.errors import ProviderConfigError, ProviderImageError, ProviderTransientError
from captioner.providers import openai as openai_module
from captioner.providers.base import ImageInfo, ImageSource
from captioner.providers.openai import OpenAIProvider
from tests import images
from tests.fakes.modelslab import Reply
from tests.fakes.openai import FakeOpenAI, completion, error

KEY = "sk-proj-unitSECRETvalue123"
PRESIGNED = (
    "https://bucket.s3.amazonaws.com/photos/cat.png?X-Amz-Signature=abc&X-Amz-Security-Token=tok"
)


@pytest.fixture
def fake():
    server = FakeOpenAI().start()
    yield server
    server.stop()


def source(data: bytes | None = None, url: str | None = PRESIGNED, fmt: str = "PNG") -> ImageSource:
    data = data if data is not None else images.png()
    return ImageSource(info=ImageInfo(fmt, 64, 48, len(data)), read=lambda: data, url=url)


def provider(fake, *, key=KEY, transport="url", timeout=30.0) -> OpenAIProvider:
    return OpenAIProvider(
        fake.url, lambda: key, "gpt-4o-mini", image_transport=transport, timeout=timeout
    )


def caption(p, image=None, length="normal", seconds=30.0):
    return p.caption(image or source(), length, deadline=time.monotonic() + seconds)


def test_caption_sends_the_presigned_url_with_the_model_prompt_and_key(fake):
    result = caption(provider(fake))

    (req,) = fake.requests
    assert req.path == "/v1/chat/completions"
    assert req.authorization == f"Bearer {KEY}"
    assert req.body["model"] == "gpt-4o-mini" and req.body["max_tokens"] == 100
    assert req.image_url == PRESIGNED
    assert "one caption of a single sentence" in req.prompt
    assert result.text == "A picture of cat.png."  # the quotes around the reply are removed
    assert (result.provider, result.length) == ("openai", "normal")
    assert result.model == "gpt-4o-mini-2024-07-18" and result.latency_ms > 0


@pytest.mark.parametrize(
    ("length", "asked", "tokens"),
    [("short", "at most 10 words", 40), ("long", "two or three sentences", 250)],
)
def test_the_prompt_asks_for_the_chosen_length(fake, length, asked, tokens):
    caption(provider(fake), length=length)
    assert asked in fake.requests[0].prompt and fake.requests[0].body["max_tokens"] == tokens


def test_base64_transport_sends_the_bytes_as_a_data_url(fake):
    data = images.jpeg()
    caption(provider(fake, transport="base64"), source(data, fmt="JPEG"))
    url = fake.requests[0].image_url
    assert url.startswith("data:image/jpeg;base64,")
    assert base64.b64decode(url.split(",", 1)[1]) == data


def test_a_local_file_without_url_goes_as_a_data_url(fake):
    result = caption(provider(fake), source(url=None))
    assert fake.requests[0].image_url.startswith("data:image/png;base64,")
    assert result.text.startswith("A picture of ")


def test_a_large_image_is_downscaled_under_the_data_url_limit(fake, monkeypatch):
    monkeypatch.setattr(openai_module, "DATA_URL_MAX_BYTES", 20_000)
    noisy = Image.effect_noise((1200, 900), 90).convert("RGB")
    data = images.encode(noisy, "PNG")
    assert len(data) > 20_000
    caption(provider(fake, transport="base64"), source(data))
    sent = base64.b64decode(fake.requests[0].image_url.split(",", 1)[1])
    assert len(sent) <= 20_000 and fake.requests[0].image_url.startswith("data:image/jpeg")
    assert Image.open(io.BytesIO(sent)).size[0] <= 2048


def test_a_server_without_a_key_gets_no_authorization_header(fake):
    caption(provider(fake, key=None))
    assert fake.requests[0].authorization is None


def test_content_given_as_parts_is_joined(fake):
    fake.queue(
        completion([{"type": "text", "text": "A red  ball"}, {"type": "text", "text": "on white."}])
    )
    assert caption(provider(fake)).text == "A red ball on white."


@pytest.mark.parametrize(
    ("reply", "kind", "words"),
    [
        (Reply(error(f"Incorrect API key provided: {KEY}.", code="invalid_api_key"), status=401),
         ProviderConfigError, "invalid API key"),
        (Reply(error("You exceeded your current quota.", type="insufficient_quota",
                     code="insufficient_quota"), status=429),
         ProviderConfigError, "no credit"),
        (Reply(error("The model `gpt-9` does not exist", code="model_not_found"), status=404),
         ProviderConfigError, "not found"),
        (Reply(error("Project does not have access"), status=403), ProviderConfigError, "forbidden"),
        (Reply(error("This model does not support image input."), status=400), ProviderConfigError,
         "does not take images"),
        (Reply(error(f"Error while downloading {PRESIGNED}.", code="invalid_image_url"), status=400),
         ProviderConfigError, "OPENAI_IMAGE_TRANSPORT=base64"),
        (Reply(error("Unknown parameter: 'max_tokens'."), status=400), ProviderConfigError, "refused"),
        (Reply(error("You uploaded an unsupported image. Please make sure your image is valid.",
                     code="invalid_image_format"), status=400), ProviderImageError, "cannot caption"),
        (Reply(error("Invalid image.", code="image_parse_error"), status=400), ProviderImageError, "Invalid"),
        (Reply(error("The server had an error", type="server_error"), status=500),
         ProviderTransientError, "HTTP 500"),
        (Reply(body=b"<html>Bad gateway</html>", status=502), ProviderTransientError, "HTTP 502"),
        (Reply(body=b"{not json"), ProviderTransientError, "HTTP 200"),
        (Reply({"choices": []}), ProviderTransientError, "without choices"),
        (Reply(completion("  ")), ProviderTransientError, "empty caption"),
        (Reply(completion(None, finish_reason="content_filter")), ProviderImageError,
         "content filter"),
        (Reply(completion(None, refusal="I can't help with that.")), ProviderImageError,
         "can't help"),
    ],
)  # fmt: skip
def test_replies_are_classified_like_modelslab_and_never_show_the_key(fake, reply, kind, words):
    fake.queue(reply)
    with pytest.raises(kind) as caught:
        caption(provider(fake))
    message = str(caught.value)
    assert words in message
    assert KEY not in message and "X-Amz-Signature" not in message


def test_a_rate_limit_is_transient_and_honours_retry_after(fake):
    fake.queue(
        Reply(
            error("Rate limit reached", type="requests"),
            status=429,
            headers={"retry-after-ms": "1500"},
        )
    )
    with pytest.raises(ProviderTransientError) as caught:
        caption(provider(fake))
    assert caught.value.retry_after == pytest.approx(1.5)
    assert not isinstance(caught.value, ProviderConfigError)


def test_a_stalled_server_is_cut_at_the_records_deadline(fake):
    fake.queue(Reply(completion("late"), delay=5))
    started = time.monotonic()
    with pytest.raises(ProviderTransientError, match="timed out"):
        caption(provider(fake), seconds=2.5)
    assert time.monotonic() - started < 4.5  # the budget (2.5 s), not the 5 s stall


def test_no_request_starts_without_time_for_it(fake):
    with pytest.raises(ProviderTransientError, match="not enough time"):
        caption(provider(fake), seconds=1.0)
    assert fake.requests == []


def test_an_unreachable_server_is_transient():
    dead = OpenAIProvider("http://127.0.0.1:9/v1", lambda: KEY, "m")
    with pytest.raises(ProviderTransientError, match="cannot reach"):
        caption(dead)
