"""A scriptable OpenAI-compatible chat-completions server on 127.0.0.1 only.

Tests queue replies (status, JSON or raw body, headers, delay); with nothing queued it answers
like OpenAI's documented success shape, captioning from the image it was given: the URL's
file name, or the size of a base64 data URL's bytes. Every request is recorded (with its
``Authorization`` header) so tests can assert what was sent.
"""

from __future__ import annotations

import base64
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlparse

from tests.fakes.http import FakeServer, QuietHandler, Reply, read_json, send, wait


@dataclass
class ChatRequest:
    path: str
    body: dict[str, Any]
    authorization: str | None
    reply: Reply | None = None

    @property
    def image_url(self) -> str:
        for part in self.body["messages"][-1]["content"]:
            if part.get("type") == "image_url":
                return str(part["image_url"]["url"])
        raise AssertionError("no image in the request")

    @property
    def prompt(self) -> str:
        parts = self.body["messages"][-1]["content"]
        return " ".join(p["text"] for p in parts if p.get("type") == "text")


@dataclass
class FakeOpenAI(FakeServer):
    base_path = "/v1"
    requests: list[ChatRequest] = field(default_factory=list)
    replies: deque[Reply] = field(default_factory=deque)
    # answers before the queue when it returns a reply (for schedules where order is a race)
    rule: Callable[[ChatRequest], Reply | None] | None = None

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        fake = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                request = ChatRequest(self.path, read_json(self), self.headers.get("Authorization"))
                with fake._lock:
                    fake.requests.append(request)
                    reply = fake.rule(request) if fake.rule else None
                    if reply is None and fake.replies:
                        reply = fake.replies.popleft()
                request.reply = reply = reply or fake._success(request)
                wait(reply)
                send(self, reply)

        self._serve(Handler, poll_interval=0.05)

    def queue(self, *replies: Reply | dict[str, Any]) -> None:
        self.replies.extend(r if isinstance(r, Reply) else Reply(r) for r in replies)

    def _success(self, request: ChatRequest) -> Reply:
        url = request.image_url
        if url.startswith("data:"):
            data = base64.b64decode(url.split(",", 1)[1])
            what = f"{len(data)} bytes of {url[5 : url.index(';')]}"
        else:
            what = unquote(urlparse(url).path.rsplit("/", 1)[-1]) or "image"
        return Reply(completion(f'"A picture of {what}."'))


def completion(content: Any, *, finish_reason: str = "stop", **message: Any) -> dict[str, Any]:
    """A chat completion as OpenAI documents it."""
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 1764065730,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None, **message},
                "finish_reason": finish_reason,
            }
        ],
        "usage": {"prompt_tokens": 2900, "completion_tokens": 12, "total_tokens": 2912},
    }


def error(message: str, *, type: str = "invalid_request_error", code: str | None = None) -> dict:
    """An error body as OpenAI documents it."""
    return {"error": {"message": message, "type": type, "param": None, "code": code}}
