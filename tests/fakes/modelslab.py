"""A scriptable stand-in for the ModelsLab API, served on 127.0.0.1 only.

Tests queue replies (status, JSON or raw body, delay); with nothing queued it answers like
the documented success shape, captioning from the ``init_image`` URL's file name. Every
request is recorded so tests can assert what was (not) sent and paid for.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlparse

import httpx

from tests.fakes.http import FakeServer, QuietHandler, Reply, read_json, send, wait

__all__ = ["FakeModelsLab", "Reply", "Request"]


@dataclass
class Request:
    path: str
    body: dict[str, Any]
    reply: Reply | None = None  # what the fake answered
    received: float = 0.0  # time.monotonic() when it arrived
    # when its reply was written; None when writing failed (a client that has gone usually
    # still lets the write succeed: compare with the client's timeout to tell a late reply)
    answered: float | None = None

    @property
    def accepted(self) -> bool:
        """A caption request the provider took on (answered success or processing): paid."""
        doc = self.reply.json if self.reply else None
        return (
            self.path.endswith("/image_editing/caption")
            and self.reply is not None
            and self.reply.status == 200
            and isinstance(doc, dict)
            and doc.get("status") in ("success", "processing")
        )


class FakeModelsLab(FakeServer):
    base_path = "/api/v6"

    def __init__(self, *, fetch_images: bool = False) -> None:
        self.requests: list[Request] = []
        self.caption_replies: deque[Reply] = deque()
        self.fetch_replies: deque[Reply] = deque()
        # GET replies for caption links (``link_url(name)``), per name; then 200 with the text
        self.link_replies: dict[str, deque[Reply]] = {}
        self.link_gets: list[str] = []
        # An optional rule that answers caption requests before the queue (None: no opinion),
        # for concurrent tests where queue order would be a race.
        self.rule: Callable[[dict[str, Any]], Reply | None] | None = None
        # The same for polls of queued jobs: called with the job id from the path.
        self.fetch_rule: Callable[[str], Reply | None] | None = None
        self.fetch_images = fetch_images  # download init_image like the real service does
        self.fetched: list[tuple[str, int]] = []  # (url, HTTP status) of image downloads
        self._lock = threading.Lock()
        self.in_flight = 0  # requests being answered right now
        self.max_in_flight = 0  # the most answered at once: shows client concurrency
        self._jobs = 0
        # The account's limit of requests in progress (ModelsLab's queued requests): caption
        # requests beyond it are answered 429 at once; None = no limit.
        self.limit: int | None = None
        self.limit_retry_after = 1.0
        self.limited: list[float] = []  # times of the 429s the limit answered
        self.captions = 0  # caption requests in progress (what the limit counts)
        self.busy_spans: list[tuple[float, float]] = []  # (start, end) of accepted captions
        fake = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                body = read_json(self)
                paid = self.path.endswith("/image_editing/caption")
                with fake._lock:
                    over = paid and fake.limit is not None and fake.captions >= fake.limit
                    if over:
                        fake.limited.append(time.monotonic())
                    fake.in_flight += 1
                    fake.captions += paid and not over
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                started = time.monotonic()
                try:
                    request = fake._answer(self.path, body, limited=over)
                    reply = request.reply or Reply()
                    if not over:
                        wait(reply)
                finally:
                    with fake._lock:
                        fake.in_flight -= 1
                        if paid and not over:
                            fake.captions -= 1
                            fake.busy_spans.append((started, time.monotonic()))
                if send(self, reply):
                    request.answered = time.monotonic()

            def do_GET(self) -> None:
                name = self.path.rsplit("/", 1)[-1]
                with fake._lock:
                    fake.link_gets.append(name)
                    queued = fake.link_replies.get(name)
                    reply = queued.popleft() if queued else Reply(body=f"Linked {name}.".encode())
                wait(reply)
                send(self, reply, content_type=False)

        self._serve(Handler)

    def queue(self, *replies: Reply | dict[str, Any]) -> None:
        self.caption_replies.extend(r if isinstance(r, Reply) else Reply(r) for r in replies)

    def queue_fetch(self, *replies: Reply | dict[str, Any]) -> None:
        self.fetch_replies.extend(r if isinstance(r, Reply) else Reply(r) for r in replies)

    def link_url(self, name: str) -> str:
        """A caption link on the API host (followed like ModelsLab's own links)."""
        return f"{self.origin}/links/{name}"

    def queue_link(self, name: str, *replies: Reply) -> None:
        self.link_replies.setdefault(name, deque()).extend(replies)

    def paid_calls(self) -> list[Request]:
        return [r for r in self.requests if r.path.endswith("/image_editing/caption")]

    def accepted(self) -> list[Request]:
        """Caption requests the provider took on: what the account is charged for."""
        return [r for r in self.requests if r.accepted]

    def polls(self) -> list[Request]:
        return [r for r in self.requests if "/image_editing/fetch/" in r.path]

    def _answer(self, path: str, body: dict[str, Any], *, limited: bool = False) -> Request:
        request = Request(path, body, received=time.monotonic())
        with self._lock:
            self.requests.append(request)
        if limited:
            retry = self.limit_retry_after
            request.reply = Reply(
                {"status": "error", "message": "Rate limit exceeded", "retry_after": retry},
                status=429,
            )
        else:
            request.reply = self._choose(path, body)
        return request

    def _choose(self, path: str, body: dict[str, Any]) -> Reply:
        ruled = self.rule(body) if self.rule and path.endswith("/image_editing/caption") else None
        if self.fetch_rule and "/image_editing/fetch/" in path:
            ruled = self.fetch_rule(path.rsplit("/", 1)[-1])
        if ruled is not None:
            return ruled
        with self._lock:
            if "/image_editing/fetch/" in path:
                return self.fetch_replies.popleft() if self.fetch_replies else self._success(body)
            if path.endswith("/base64_to_url"):
                return Reply({"status": "success", "output": ["http://127.0.0.1:9/upload.png"]})
            if self.caption_replies:
                return self.caption_replies.popleft()
            return self._success(body)

    def _success(self, body: dict[str, Any]) -> Reply:
        self._jobs += 1
        url = str(body.get("init_image", ""))
        name = unquote(urlparse(url).path.rsplit("/", 1)[-1]) or "image"
        if self.fetch_images and url:
            status = httpx.get(url, timeout=10).status_code
            self.fetched.append((url, status))
            if status != 200:
                return Reply({"status": "error", "message": f"could not download image ({status})"})
        return Reply(
            {"status": "success", "id": self._jobs, "output": [f"A picture named {name}."]}
        )
