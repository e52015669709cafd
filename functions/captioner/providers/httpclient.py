"""HTTP clients for the providers whose every exchange ends by the record's deadline.

httpx's timeouts apply to each socket operation, not to the request: a server that answers
at once and then sends its body a byte every half second keeps a request with a 30 s read
timeout alive for ever, past the record's deadline and past Lambda's timeout (which then
fails the whole batch, and a paid caption not yet written is paid again). Here every
connect, read and write of an exchange run ``within(seconds)`` is given at most the time
left until then, so the whole exchange — headers and body — ends by it; past it a read
raises ``httpx.ReadTimeout`` like any other timeout.

The limit is carried in a context variable: the socket work of a sync httpx request runs in
the caller's thread, so concurrent records in other threads keep their own deadlines.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import httpcore
import httpx

from captioner.errors import ProviderTransientError

_ends_at: ContextVar[float | None] = ContextVar("captioner_http_ends_at", default=None)


@contextmanager
def within(seconds: float) -> Iterator[None]:
    """Every socket operation of this thread's requests ends ``seconds`` from now."""
    token = _ends_at.set(time.monotonic() + max(seconds, 0.0))
    try:
        yield
    finally:
        _ends_at.reset(token)


def client(timeout: float, *, max_connections: int = 32) -> httpx.Client:
    """A client (JSON, keep-alive pool) whose exchanges respect ``within``."""
    transport = httpx.HTTPTransport(
        limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=16)
    )
    pool = transport._pool  # httpx exposes no parameter for the pool's network backend
    pool._network_backend = _DeadlineBackend(pool._network_backend)
    return httpx.Client(
        transport=transport,
        timeout=httpx.Timeout(timeout, connect=5.0),
        headers={"Accept": "application/json"},
    )


def post(
    client: httpx.Client,
    url: str,
    body: dict[str, Any],
    *,
    seconds: float,
    timeout: float,
    who: str,
    redact: Callable[[str], str],
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """POST ``body`` and read the whole reply within ``seconds`` (each read at most
    ``timeout``). A transport failure is a ``ProviderTransientError`` that says whether
    the request may have been charged (it was sent) and whether a 200 had begun (charged,
    of no use: not to be tried again at once)."""
    budget = max(min(timeout, seconds), 0.001)
    answered = False  # a 200's headers came: the request was taken on
    try:
        with within(seconds), client.stream(
            "POST", url, json=body, headers=headers,
            timeout=httpx.Timeout(budget, connect=min(5.0, budget)),
        ) as resp:  # fmt: skip
            answered = resp.status_code == 200
            resp.read()
    except httpx.TimeoutException as exc:
        failed = ProviderTransientError(f"{who} timed out")
        sent = not isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout)
    except httpx.HTTPError as exc:  # transport, decoding, redirects: not the image's fault
        failed = ProviderTransientError(
            f"cannot reach {who}: {redact(f'{type(exc).__name__}: {exc}')}"
        )
        sent = not isinstance(exc, httpx.ConnectError)
    else:
        return resp
    # a request that was sent may have been taken on (and charged) before the reply
    failed.maybe_charged = sent
    failed.charged_reply = answered
    raise failed from None


def _left(timeout: float | None, error: type[Exception]) -> float | None:
    """``timeout`` cut to the time left; ``error`` when none is left."""
    ends_at = _ends_at.get()
    if ends_at is None:
        return timeout
    left = ends_at - time.monotonic()
    if left <= 0:
        raise error("the record's deadline passed during the exchange")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self,
        ssl_context: Any,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        wrapped = self._stream.start_tls(
            ssl_context, server_hostname, _left(timeout, httpcore.ConnectTimeout)
        )
        return _DeadlineStream(wrapped)

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    def __init__(self, backend: httpcore.NetworkBackend) -> None:
        self._backend = backend

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.NetworkStream:
        stream = self._backend.connect_tcp(
            host, port, _left(timeout, httpcore.ConnectTimeout), local_address, socket_options
        )
        return _DeadlineStream(stream)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Any = None
    ) -> httpcore.NetworkStream:
        stream = self._backend.connect_unix_socket(
            path, _left(timeout, httpcore.ConnectTimeout), socket_options
        )
        return _DeadlineStream(stream)

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)
