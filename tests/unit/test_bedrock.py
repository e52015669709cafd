"""The Bedrock provider against a stubbed bedrock-runtime (botocore's Stubber checks every
request against the service model, so a malformed Converse call fails here)."""

from __future__ import annotations

import io
import time

import boto3
import pytest
from botocore.exceptions import EndpointConnectionError, ReadTimeoutError
from botocore.stub import ANY, Stubber
from PIL import Image

from captioner.errors import ProviderConfigError, ProviderImageError, ProviderTransientError
from captioner.providers import bedrock as bedrock_module
from captioner.providers.base import ImageInfo, ImageSource
from captioner.providers.bedrock import BedrockProvider
from tests import images

MODEL = "amazon.nova-lite-v1:0"


@pytest.fixture
def runtime():
    client = boto3.client(
        "bedrock-runtime",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    with Stubber(client) as stub:
        yield client, stub
        stub.assert_no_pending_responses()


def converse_reply(text: str | None, stop: str = "end_turn") -> dict:
    content = [{"text": text}] if text is not None else []
    return {
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": stop,
        "usage": {"inputTokens": 1300, "outputTokens": 20, "totalTokens": 1320},
        "metrics": {"latencyMs": 420},
    }


def source(data=None, fmt="PNG", size=(64, 48)):
    data = data if data is not None else images.png()
    return ImageSource(info=ImageInfo(fmt, *size, len(data)), read=lambda: data)


def caption(client, image=None, length="normal", seconds=30.0, timeouts=None):
    def client_for(timeout):
        if timeouts is not None:
            timeouts.append(timeout)
        return client

    provider = BedrockProvider(MODEL, client_for)
    return provider.caption(image or source(), length, deadline=time.monotonic() + seconds)


def test_converse_gets_the_image_bytes_and_the_prompt(runtime):
    client, stub = runtime
    data = images.jpeg()
    stub.add_response(
        "converse",
        converse_reply('"A red circle on a white background."'),
        {
            "modelId": MODEL,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"text": ANY},
                        {"image": {"format": "jpeg", "source": {"bytes": data}}},
                    ],
                }
            ],
            "inferenceConfig": {"maxTokens": 40},
        },
    )
    result = caption(client, source(data, "JPEG"), length="short")
    assert result.text == "A red circle on a white background."
    assert (result.provider, result.model, result.length) == ("bedrock", MODEL, "short")


def test_the_prompt_asks_for_the_chosen_length(runtime):
    client, stub = runtime
    seen = []
    client.meta.events.register(
        "provide-client-params.bedrock-runtime.Converse",
        lambda params, **kw: seen.append(params["messages"][0]["content"][0]["text"]),
    )
    stub.add_response("converse", converse_reply("A long caption. Of two sentences."))
    caption(client, length="long")
    assert "two or three sentences" in seen[0]


def test_a_large_image_is_reencoded_under_the_converse_limit(runtime, monkeypatch):
    client, stub = runtime
    monkeypatch.setattr(bedrock_module, "IMAGE_MAX_BYTES", 30_000)
    noisy = images.encode(Image.effect_noise((900, 700), 90).convert("RGB"), "PNG")
    sent = []
    client.meta.events.register(
        "provide-client-params.bedrock-runtime.Converse",
        lambda params, **kw: sent.append(params["messages"][0]["content"][1]["image"]),
    )
    stub.add_response("converse", converse_reply("Noise."))
    caption(client, source(noisy, size=(900, 700)))
    assert sent[0]["format"] == "jpeg" and len(sent[0]["source"]["bytes"]) <= 30_000
    Image.open(io.BytesIO(sent[0]["source"]["bytes"])).verify()


def test_the_client_timeout_ends_before_the_records_deadline(runtime):
    client, stub = runtime
    stub.add_response("converse", converse_reply("Fine."))
    timeouts: list[float] = []
    caption(client, seconds=10.0, timeouts=timeouts)
    assert timeouts == [8.0]


def test_no_call_starts_without_time_for_it(runtime):
    client, _ = runtime
    with pytest.raises(ProviderTransientError, match="not enough time"):
        caption(client, seconds=1.0)


@pytest.mark.parametrize(
    ("code", "message", "status", "kind"),
    [
        ("ThrottlingException", "Too many requests, please wait.", 429, ProviderTransientError),
        ("ServiceUnavailableException", "Service unavailable", 503, ProviderTransientError),
        ("ModelTimeoutException", "Model timed out", 408, ProviderTransientError),
        ("InternalServerException", "Internal error", 500, ProviderTransientError),
        ("AccessDeniedException", "You don't have access to the model with the specified model ID.",
         403, ProviderConfigError),
        ("ResourceNotFoundException", "Model not found", 404, ProviderConfigError),
        ("UnrecognizedClientException", "The security token included in the request is invalid.",
         403, ProviderConfigError),
        ("ValidationException", "This model doesn't support the image content block that you provided.",
         400, ProviderConfigError),
        ("ValidationException", "Could not process image", 400, ProviderImageError),
        ("ValidationException", "The provided image exceeds the maximum dimensions", 400,
         ProviderImageError),
        ("SomethingNewException", "surprise", 400, ProviderTransientError),
    ],
)  # fmt: skip
def test_errors_are_classified_like_modelslab(runtime, code, message, status, kind):
    client, stub = runtime
    stub.add_client_error("converse", code, message, http_status_code=status)
    with pytest.raises(kind) as caught:
        caption(client)
    assert code in str(caught.value) and type(caught.value) is kind


@pytest.mark.parametrize("stop", ["content_filtered", "guardrail_intervened"])
def test_a_filtered_image_is_the_images_fault(runtime, stop):
    client, stub = runtime
    stub.add_response("converse", converse_reply(None, stop=stop))
    with pytest.raises(ProviderImageError, match=stop):
        caption(client)


def test_an_empty_reply_is_transient(runtime):
    client, stub = runtime
    stub.add_response("converse", converse_reply(""))
    with pytest.raises(ProviderTransientError, match="empty"):
        caption(client)


@pytest.mark.parametrize(
    "error",
    [
        ReadTimeoutError(endpoint_url="https://bedrock-runtime.us-east-1.amazonaws.com"),
        EndpointConnectionError(endpoint_url="https://bedrock-runtime.us-east-1.amazonaws.com"),
    ],
)
def test_timeouts_and_unreachable_endpoints_are_transient(error):
    class Broken:
        def converse(self, **kwargs):
            raise error

    with pytest.raises(ProviderTransientError):
        BedrockProvider(MODEL, lambda timeout: Broken()).caption(
            source(), "normal", deadline=time.monotonic() + 30
        )
