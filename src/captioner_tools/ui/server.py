"""Serving the gallery: bind first (``--port 0`` picks a free port), print the URL with the
run's token at once, then run uvicorn until Ctrl-C. Access logs stay off: URLs carry the
token, keys and filters."""

from __future__ import annotations

import socket
import sys
import threading
import webbrowser
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import uvicorn

from captioner_tools.cli.target import Deployment
from captioner_tools.errors import CliError
from captioner_tools.ui.app import create_app
from captioner_tools.ui.guard import Guard


@dataclass
class Running:
    """A gallery serving in this process (``captioner local up --ui``, the tests)."""

    url: str
    server: uvicorn.Server
    thread: threading.Thread | None = None

    def stop(self) -> None:
        self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(timeout=10)


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise CliError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def prepare(deployment: Deployment, host: str, port: int) -> tuple[Running, socket.socket]:
    sock = bind(host, port)
    bound = sock.getsockname()[1]
    guard = Guard()
    guard.allow(host, bound)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{bound}/?token={quote(guard.token)}"
    app = create_app(deployment, guard)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    return Running(url, uvicorn.Server(config)), sock


def serve(
    deployment: Deployment,
    host: str,
    port: int,
    *,
    open_browser: bool,
    announce: Callable[[str], Any] | None = None,
) -> None:
    """Serve in the foreground until Ctrl-C."""
    running, sock = prepare(deployment, host, port)
    (announce or _print)(running.url)
    if open_browser:
        threading.Timer(0.5, webbrowser.open, args=(running.url,)).start()
    try:
        running.server.run(sockets=[sock])
    finally:
        sock.close()


def start(deployment: Deployment, host: str = "127.0.0.1", port: int = 0) -> Running:
    """Serve in a background thread (the local stack's ``--ui``, the tests)."""
    running, sock = prepare(deployment, host, port)
    thread = threading.Thread(
        target=running.server.run, kwargs={"sockets": [sock]}, name="captioner-ui", daemon=True
    )
    running.thread = thread
    thread.start()
    for _ in range(200):
        if running.server.started:
            break
        threading.Event().wait(0.02)
    return running


def _print(url: str) -> None:
    sys.stdout.write(f"Captioner gallery on {url}\n")
    sys.stdout.flush()
