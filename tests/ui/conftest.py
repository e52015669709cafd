"""The gallery against the real local stack (a fake ModelsLab that fetches each presigned URL),
and a real headless Chromium: Debian's ``chromium`` (``scripts/test`` installs it:
``ensure_browser`` in scripts/env.sh) or ``CAPTIONER_CHROMIUM``. A missing browser fails the
browser tests; it never skips them."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from captioner_tools.cli.target import Deployment, TargetOptions
from captioner_tools.local.stack import LocalStack
from captioner_tools.ui.server import Running, start
from tests import images
from tests.tools.conftest import (  # noqa: F401 - fixtures
    _no_leftover_replies,
    modelslab,
    stack,
    wait_for,
    wait_for_status,
)

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def chromium_path() -> str:
    path = os.environ.get("CAPTIONER_CHROMIUM") or shutil.which("chromium")
    if not path:
        pytest.fail(
            "no chromium for the browser tests: run scripts/test (it installs Debian's "
            "chromium) or set CAPTIONER_CHROMIUM=/path/to/chromium",
            pytrace=False,
        )
    return path


def deployment_of(stack: LocalStack) -> Deployment:  # noqa: F811
    return Deployment(TargetOptions(endpoint_url=stack.endpoint_url, stack_name="captioner"))


@pytest.fixture(scope="module")
def ui(stack: LocalStack) -> Iterator[Running]:  # noqa: F811
    running = start(deployment_of(stack))
    yield running
    running.stop()


def put(stack: LocalStack, key: str, body: bytes) -> dict[str, Any]:  # noqa: F811
    return stack.client("s3").put_object(Bucket=stack.bucket, Key=key, Body=body)


@pytest.fixture(scope="module")
def photos(stack: LocalStack, modelslab: Any) -> LocalStack:  # noqa: F811
    """Captioned, rejected and failed images under gallery/."""
    from tests.fakes.modelslab import Reply

    modelslab.queue(*[Reply({"status": "error", "message": "Invalid Api Key"})] * 2)
    put(stack, "gallery/broken.png", images.png(30, 20))
    wait_for_status(stack, "gallery/broken.png", "FAILED", timeout=30)
    for key, body in (("gallery/red dot.png", images.png()), ("gallery/blue.jpg", images.jpeg()),
                      ("gallery/notes.png", b"just some text, not an image")):  # fmt: skip
        put(stack, key, body)
    for key in ("gallery/red dot.png", "gallery/blue.jpg"):
        wait_for_status(stack, key, "CAPTIONED")
    wait_for_status(stack, "gallery/notes.png", "REJECTED")
    return stack


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(accept_downloads=True)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    yield tab
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"
