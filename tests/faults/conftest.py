"""What every fault test starts from: the store's clock, a queue with the template's
receive count as the tests set it, one instance of the function, the event log."""

from __future__ import annotations

import pytest

from tests.conftest import EventLog
from tests.faults.harness import Clock, Instance, Queue


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def queue():
    return Queue(max_receive=3)  # app_env sets CAPTION_MAX_RECEIVE_COUNT=3


@pytest.fixture
def instance(app_env, clock):
    return Instance(clock)


@pytest.fixture
def events(app_env):
    """A rule on the default bus (source = captioner) whose target is a queue."""
    return EventLog()
