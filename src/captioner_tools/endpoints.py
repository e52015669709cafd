"""Which AWS endpoints are this machine: the local stack rather than AWS."""

from __future__ import annotations

from urllib.parse import urlparse

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


def is_loopback(endpoint_url: str | None) -> bool:
    """True for a URL on this machine; None (AWS's own endpoints) is not."""
    return bool(endpoint_url) and urlparse(endpoint_url).hostname in LOOPBACK_HOSTS
