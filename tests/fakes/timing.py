"""A raw HTTP server on 127.0.0.1 whose replies are slow in the ways networks are: headers
late or a byte at a time, a body that trickles, a body that never ends, a connection that
closes mid-body. Every provider client must end each of these by its record's deadline.

The server answers every request (any method, any path) with ``body`` in the scripted
``Timing``; with ``post_body``, POSTs get that at once and only GETs are slow (a caption
link that trickles after a prompt success).
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from typing import Self

__all__ = ["TIMINGS", "Timing", "TimingServer"]


@dataclass(frozen=True)
class Timing:
    name: str
    header_delay: float = 0.0  # before the status line
    header_byte_gap: float = 0.0  # the headers a byte at a time
    body_byte_gap: float = 0.0  # the body a byte at a time, Content-Length announced
    endless: bool = False  # a chunked body that never ends
    close_after: int | None = None  # bytes of the body sent before the connection closes


# Each longer than any deadline the tests give (about 3 s) unless the client cuts it short.
TIMINGS = (
    Timing("slow-headers", header_delay=30.0),
    Timing("trickled-headers", header_byte_gap=0.25),
    Timing("trickled-body", body_byte_gap=0.25),
    Timing("endless-body", endless=True),
    Timing("closed-mid-body", close_after=10),
)


class TimingServer:
    def __init__(self, body: bytes, post_body: bytes | None = None) -> None:
        self.body = body
        self.post_body = post_body
        self.timing = Timing("prompt")
        self.requests = 0
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._sock.getsockname()[:2]
        return f"http://{host}:{port}"

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            try:
                method = self._read_request(conn)
                self.requests += 1
                if method == b"POST" and self.post_body is not None:
                    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    conn.sendall(head + b"Content-Length: %d\r\n\r\n" % len(self.post_body))
                    conn.sendall(self.post_body)
                    return
                self._reply(conn, self.timing)
            except OSError:
                pass  # the client gave up: what these tests want

    @staticmethod
    def _read_request(conn: socket.socket) -> bytes:
        """Read one request; its method."""
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return b""
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        while len(rest) < length:
            chunk = conn.recv(65536)
            if not chunk:
                return b""
            rest += chunk
        return head.split(b" ", 1)[0]

    def _reply(self, conn: socket.socket, t: Timing) -> None:
        if t.endless:
            head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            head += b"Transfer-Encoding: chunked\r\n\r\n"
        else:
            head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            head += b"Content-Length: %d\r\n\r\n" % len(self.body)
        deadline = time.monotonic() + 60
        if self._stop.wait(t.header_delay):
            return
        if t.header_byte_gap:
            for byte in head:
                conn.sendall(bytes([byte]))
                if self._stop.wait(t.header_byte_gap) or time.monotonic() > deadline:
                    return
        else:
            conn.sendall(head)
        if t.endless:
            while not self._stop.wait(0.05) and time.monotonic() < deadline:
                conn.sendall(b"1\r\n \r\n")
            return
        body = self.body if t.close_after is None else self.body[: t.close_after]
        if t.body_byte_gap:
            for byte in body:
                conn.sendall(bytes([byte]))
                if self._stop.wait(t.body_byte_gap) or time.monotonic() > deadline:
                    return
        else:
            conn.sendall(body)
        if t.close_after is not None:
            conn.shutdown(socket.SHUT_RDWR)
