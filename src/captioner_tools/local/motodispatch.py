"""moto 5.2.5's server without its per-request scan of its own package, for the local stack.

For every request, moto's server finds the service by host name under one lock shared by all
requests: it lists moto's package directory and asks whether each of its ~150 entries is a
directory, then tries the URL pattern of every service until one matches: 0.8 ms of CPU
per request on this machine, all of it serialized (a py-spy profile of ``chaos_run.py``
showed the server's request threads waiting on that lock). The answer only depends on the
host name, so here it is kept per host. What it returns is unchanged. ``install`` is
idempotent; ``tests/tools/test_motodispatch.py`` checks it.
"""

from __future__ import annotations

import functools
from typing import Any

from captioner_tools.errors import LocalStackError

_installed = False


def install() -> None:
    global _installed
    if _installed:
        return
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    if not hasattr(DomainDispatcherApplication, "get_backend_for_host"):
        raise LocalStackError(
            "this moto has no DomainDispatcherApplication.get_backend_for_host: "
            "captioner_tools.local.motodispatch needs the moto version pyproject pins"
        )
    lookup = DomainDispatcherApplication.get_backend_for_host

    def get_backend_for_host(self: Any, host: str | None) -> Any:
        # per dispatcher: a server started with another service filter answers differently
        known: dict[str | None, Any] = self.__dict__.setdefault("_captioner_backends", {})
        if host not in known:
            known[host] = lookup(self, host)
        return known[host]

    functools.update_wrapper(get_backend_for_host, lookup)
    DomainDispatcherApplication.get_backend_for_host = get_backend_for_host  # type: ignore[method-assign]
    _installed = True
