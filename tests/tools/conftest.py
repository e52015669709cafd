"""Fixtures for the tests that run the real embedded stack (test_cli, test_local_stack).

Each module gets its own stack (module scope): moto's state is per process and the other
modules' ``mock_aws`` resets it, so a stack must not outlive its module.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from captioner.store import from_item
from captioner_tools.local.stack import LocalStack
from tests.conftest import API_KEY
from tests.fakes.modelslab import FakeModelsLab

MAX_RECEIVE_COUNT = 2  # small, so poison messages reach the dead-letter queue in seconds
RETRY_DELAY_S = 1  # the local stack's --visibility-timeout


@pytest.fixture(scope="module")
def modelslab() -> Iterator[FakeModelsLab]:
    """A fake ModelsLab that downloads each presigned URL, as the real service does."""
    fake = FakeModelsLab(fetch_images=True).start()
    yield fake
    fake.stop()


@pytest.fixture(autouse=True)
def _no_leftover_replies(request: pytest.FixtureRequest) -> Iterator[None]:
    """A reply a test queued but did not use must not answer the next test's caption."""
    yield
    if "modelslab" in request.fixturenames:
        request.getfixturevalue("modelslab").caption_replies.clear()


@pytest.fixture(scope="module")
def stack(modelslab: FakeModelsLab) -> Iterator[LocalStack]:
    with LocalStack(
        port=0,
        visibility_timeout=RETRY_DELAY_S,
        parameters={"MaxReceiveCount": MAX_RECEIVE_COUNT},
        env={"MODELSLAB_API_URL": modelslab.url, "MODELSLAB_API_KEY": API_KEY},
    ) as local:
        yield local


def wait_for[T](
    probe: Callable[[], T], ok: Callable[[T], bool], timeout: float = 20, what: str = ""
) -> T:
    """Poll ``probe`` until ``ok`` holds; fail with the last value seen."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if ok(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or 'condition'}: last {value!r}")
        time.sleep(0.1)


def row(stack: LocalStack, key: str, bucket: str | None = None) -> dict[str, Any] | None:
    item = stack.client("dynamodb").get_item(
        TableName=stack.table,
        Key={"bucket": {"S": bucket or stack.bucket}, "key": {"S": key}},
        ConsistentRead=True,
    )
    return from_item(item["Item"]) if "Item" in item else None


def wait_for_status(
    stack: LocalStack, key: str, *statuses: str, timeout: float = 20, bucket: str | None = None
) -> dict:
    return wait_for(
        lambda: row(stack, key, bucket),
        # .get: moto applies an UpdateItem's SETs one by one on the live item, so a read that
        # races the first write of a row can see it without its status yet
        # CAPTIONED is written before the tag; a row is finished once its tag step is too
        lambda r: r is not None and r.get("status") in statuses and finished(r),
        timeout,
        f"s3://{bucket or stack.bucket}/{key} to be {'/'.join(statuses)}",
    )


def finished(r: dict[str, Any]) -> bool:
    """Not a CAPTIONED row whose tag step is still under way (the caption is written first,
    then the tags, then ``tag_status``)."""
    return r.get("status") != "CAPTIONED" or "tag_status" in r


def depth(stack: LocalStack, queue_url: str) -> int:
    attrs = stack.client("sqs").get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(
        attrs["ApproximateNumberOfMessagesNotVisible"]
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_environment(**extra: str) -> dict[str, str]:
    """The environment for a subprocess: the test process's, minus what a running stack or
    other fixtures put there (AWS endpoint, names, provider settings)."""
    drop = ("AWS_", "CAPTION", "MODELSLAB_", "POWERTOOLS_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env.update({"COLUMNS": "200", "NO_COLOR": "1", "AWS_EC2_METADATA_DISABLED": "true"})
    env.update(extra)
    return env
