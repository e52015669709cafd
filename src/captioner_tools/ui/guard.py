"""Safe by default: the Host check (DNS rebinding), the per-run token for writes, and the
security headers (a strict Content-Security-Policy) on every response."""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass, field

from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

TOKEN_HEADER = "X-Captioner-Token"  # noqa: S105 - a header name, not a secret
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-resource-policy", b"same-origin"),
]
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass
class Guard:
    """Who may talk to the server: requests for one of ``hosts`` only, writes with ``token``."""

    hosts: set[str] = field(default_factory=set)
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))

    def allow(self, host: str, port: int) -> None:
        """Accept ``Host: host:port`` (and the loopback names for a loopback address)."""
        names = {host}
        if host in ("127.0.0.1", "localhost", "::1"):
            names |= {"127.0.0.1", "localhost"}
        for name in names:
            shown = f"[{name}]" if ":" in name else name
            self.hosts.add(f"{shown}:{port}".lower())

    def token_ok(self, value: str | None) -> bool:
        return bool(value) and hmac.compare_digest(str(value), self.token)


class GuardMiddleware:
    def __init__(self, app: ASGIApp, guard: Guard) -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        host = headers.get("host", "").lower()
        if host not in self.guard.hosts:
            await _deny(421, "unknown Host: this server answers only for its own address")(
                scope, receive, send
            )
            return
        if scope["method"] in WRITE_METHODS and not self.guard.token_ok(headers.get(TOKEN_HEADER)):
            await _deny(403, f"a write needs the {TOKEN_HEADER} header of this run")(
                scope, receive, send
            )
            return

        async def send_secure(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, send_secure)


def _deny(status: int, text: str) -> PlainTextResponse:
    return PlainTextResponse(text + "\n", status_code=status, headers=dict(
        (k.decode(), v.decode()) for k, v in SECURITY_HEADERS
    ))  # fmt: skip
