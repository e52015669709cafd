"""Slow replies are faults too: every provider client ends each exchange by the record's
deadline, however the reply is slow (late headers, headers or a body a byte at a time, a
body that never ends, a connection closed mid-body). httpx's and botocore's timeouts apply
to each read, so without a bound on the whole exchange a trickling reply outlives the
record and Lambda's timeout, and the whole batch comes back (issue 20, defect 3)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config as BotoConfig

from captioner.errors import ProviderTransientError
from captioner.providers.base import ImageInfo, ImageSource
from captioner.providers.bedrock import BedrockProvider
from captioner.providers.modelslab import ModelsLabProvider
from captioner.providers.openai import OpenAIProvider
from tests import images
from tests.fakes.timing import TIMINGS, Timing, TimingServer

KEY = "sk-timing-SECRET-42"
BUDGET_S = 3.0  # the record's time left when the call starts (providers need at least 2 s)
SLACK_S = 0.6  # how late past the deadline a call may return (thread and socket wake-ups)
IMAGE = ImageSource(
    info=ImageInfo("PNG", 10, 10, 100), read=images.png, url="https://s3.test/a.png?sig=1"
)
MODELSLAB_OK = {"status": "success", "id": 7, "output": ["A prompt caption."]}
OPENAI_OK = {"choices": [{"message": {"content": "A prompt caption."}, "finish_reason": "stop"}]}
BEDROCK_OK = {
    "output": {"message": {"role": "assistant", "content": [{"text": "A prompt caption."}]}},
    "stopReason": "end_turn",
    "usage": {"inputTokens": 1, "outputTokens": 1, "totalTokens": 2},
    "metrics": {"latencyMs": 1},
}


def _modelslab(server: TimingServer) -> Callable[[float], Any]:
    client = ModelsLabProvider(server.url, lambda: KEY)
    return lambda deadline: client.caption(IMAGE, "short", deadline=deadline)


def _modelslab_poll(server: TimingServer) -> Callable[[float], Any]:
    client = ModelsLabProvider(server.url, lambda: KEY)
    return lambda deadline: client.caption(IMAGE, "short", deadline=deadline, job_id="7")


def _modelslab_link(server: TimingServer) -> Callable[[float], Any]:
    client = ModelsLabProvider(server.url, lambda: KEY)
    return lambda deadline: client.caption(IMAGE, "short", deadline=deadline)


def _openai(server: TimingServer) -> Callable[[float], Any]:
    client = OpenAIProvider(server.url, lambda: KEY, "gpt-4o-mini")
    return lambda deadline: client.caption(IMAGE, "short", deadline=deadline)


def _bedrock(server: TimingServer) -> Callable[[float], Any]:
    def client_for(timeout: float) -> Any:
        return boto3.client(
            "bedrock-runtime", region_name="us-east-1", endpoint_url=server.url,
            aws_access_key_id="testing", aws_secret_access_key="testing",
            config=BotoConfig(read_timeout=timeout, connect_timeout=2,
                              retries={"total_max_attempts": 1}),
        )  # fmt: skip

    client = BedrockProvider("amazon.nova-lite-v1:0", client_for=client_for)
    return lambda deadline: client.caption(IMAGE, "short", deadline=deadline)


# (client, the slow reply's body, a prompt POST answer first (a caption link), what success says)
CLIENTS: dict[str, tuple[Callable[[TimingServer], Callable[[float], Any]], Any, Any]] = {
    "modelslab": (_modelslab, MODELSLAB_OK, None),
    "modelslab-poll": (_modelslab_poll, MODELSLAB_OK, None),
    "modelslab-link": (_modelslab_link, "A linked caption.", "link"),
    "openai": (_openai, OPENAI_OK, None),
    "bedrock": (_bedrock, BEDROCK_OK, None),
}


@pytest.fixture(params=list(CLIENTS))
def client(request: pytest.FixtureRequest) -> Iterator[tuple[TimingServer, Callable[[float], Any]]]:
    make, body, first = CLIENTS[request.param]
    raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    server = TimingServer(raw)
    if first == "link":  # a prompt success whose caption is a link to the slow text
        server.post_body = json.dumps(
            {"status": "success", "id": 9, "output": [f"{server.url}/links/text"]}
        ).encode()
    server.start()
    yield server, make(server)
    server.stop()


def test_a_prompt_reply_is_a_caption(client):
    _, call = client
    caption = call(time.monotonic() + BUDGET_S)
    assert caption.text in ("A prompt caption.", "A linked caption.")


@pytest.mark.parametrize("timing", TIMINGS, ids=[t.name for t in TIMINGS])
def test_a_slow_reply_ends_by_the_deadline_as_a_transient_error(client, timing: Timing):
    server, call = client
    server.timing = timing
    started = time.monotonic()
    with pytest.raises(ProviderTransientError) as raised:
        call(started + BUDGET_S)
    took = time.monotonic() - started
    assert took <= BUDGET_S + SLACK_S, f"{timing.name} held the call {took:.2f} s"
    assert KEY not in str(raised.value)
