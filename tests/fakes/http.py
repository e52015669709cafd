"""What the fake providers share: a scripted reply, and a threaded HTTP server on 127.0.0.1
(an ephemeral port) that writes those replies."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


@dataclass
class Reply:
    json: Any = None
    status: int = 200
    body: bytes | None = None  # raw body instead of JSON (malformed replies)
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


def read_json(handler: BaseHTTPRequestHandler) -> dict[str, Any]:
    """The request's JSON body; ``{"_raw": text}`` when it is not JSON."""
    raw = handler.rfile.read(int(handler.headers.get("Content-Length", 0)))
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        return {"_raw": raw.decode("utf-8", "replace")}
    return body if isinstance(body, dict) else {"_raw": raw.decode("utf-8", "replace")}


def send(handler: BaseHTTPRequestHandler, reply: Reply, *, content_type: bool = True) -> bool:
    """Write ``reply``; False when the client had already given up (its deadline)."""
    data = reply.body if reply.body is not None else json.dumps(reply.json).encode()
    try:
        handler.send_response(reply.status)
        if content_type:
            handler.send_header("Content-Type", "application/json")
        for k, v in reply.headers.items():
            handler.send_header(k, v)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)
        handler.wfile.flush()
    except OSError:
        return False
    return True


def wait(reply: Reply) -> None:
    if reply.delay:
        time.sleep(reply.delay)


class QuietHandler(BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


class FakeServer:
    """A fake API at ``url`` (``http://127.0.0.1:<port><base_path>``), answered by the
    handler class ``_serve`` is given, once ``start()`` has been called."""

    base_path = ""

    def _serve(self, handler: type[BaseHTTPRequestHandler], poll_interval: float = 0.5) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": poll_interval}, daemon=True
        )

    @property
    def origin(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def url(self) -> str:
        return self.origin + self.base_path

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
