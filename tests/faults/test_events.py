""" "Caption Status Changed" events under crashes: an instance that dies between the row's
final write and PutEvents, or between PutEvents and the write that says it went out."""

from __future__ import annotations

import pytest

from tests import images
from tests.conftest import EventLog
from tests.faults.harness import Instance, Killed, assert_paid_at_most_once, drain
from tests.faults.test_defects import upload


def statuses(events: EventLog) -> list[str]:
    return [e["detail"]["status"] for e in events.take()]


@pytest.mark.parametrize(("body", "status"), [(None, "CAPTIONED"), (b"not an image", "REJECTED")])
def test_a_crash_between_the_final_write_and_put_events_is_announced_by_the_redelivery(
    app_env, fake_modelslab, queue, clock, events, body, status
):
    instance = Instance(clock)
    _, event = upload(app_env, "crash.png", body or images.png())
    msg = queue.send(event)
    with instance.failing("publish", Killed("died before PutEvents")):
        assert queue.deliver(instance, msg) == "killed"
    assert app_env.row("crash.png")["event_due"] == status  # written, not announced
    assert events.take() == []

    drain(queue, instance, clock)

    assert statuses(events) == [status]
    assert "event_due" not in app_env.row("crash.png")
    assert_paid_at_most_once(fake_modelslab)


def test_a_crash_after_put_events_may_announce_twice_never_zero_times(
    app_env, fake_modelslab, queue, clock, events
):
    """At least once: the event went out, the row could not say so, the redelivery sends it
    again (the documented duplicate); the caption is still paid once."""
    instance = Instance(clock)
    _, event = upload(app_env, "twice.png")
    msg = queue.send(event)
    with instance.crash_after("publish"):
        assert queue.deliver(instance, msg) == "killed"
    drain(queue, instance, clock)
    assert statuses(events) == ["CAPTIONED", "CAPTIONED"]
    assert len(fake_modelslab.accepted()) == 1


def test_two_instances_delivering_one_version_announce_it_once(
    app_env, fake_modelslab, queue, clock, events
):
    import threading

    _, event = upload(app_env, "both.png")
    copies = [queue.send(event), queue.send(event)]
    instances = [Instance(clock), Instance(clock)]
    threads = [
        threading.Thread(target=queue.deliver, args=(inst, msg))
        for inst, msg in zip(instances, copies, strict=True)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    drain(queue, instances[0], clock)
    assert statuses(events) == ["CAPTIONED"]
    assert_paid_at_most_once(fake_modelslab)
