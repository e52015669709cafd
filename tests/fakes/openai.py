"""A scriptable OpenAI-compatible chat-completions server on 127.0.0.1 only.

Tests queue replies (status, JSON or raw body, headers, delay); with nothing queued it answers
like OpenAI's documented success shape, captioning from the image it was given: the URL's
file name, or the size of a base64 data URL's bytes. Every request is recorded (with its
``Authorization`` header) so tests can assert what was sent.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlparse

from tests.fakes.modelslab import Reply


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
class FakeOpenAI:
    requests: list[ChatRequest] = field(default_factory=list)
    replies: deque[Reply] = field(default_factory=deque)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = {}
                request = ChatRequest(self.path, body, self.headers.get("Authorization"))
                with fake._lock:
                    fake.requests.append(request)
                    reply = fake.replies.popleft() if fake.replies else None
                request.reply = reply = reply or fake._success(request)
                if reply.delay:
                    time.sleep(reply.delay)
                data = reply.body if reply.body is not None else json.dumps(reply.json).encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client gave up (its deadline)
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> FakeOpenAI:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

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
