"""Provider slots, the fair share of an invocation, and the wait bookkeeping."""

from __future__ import annotations

import threading
import time

import pytest

from captioner.limits import NoSlot, ProviderSlots, TimeShare
from captioner.requeue import MAX_DELAY_S, MAX_WAITS, Requeue, delay_seconds, waits_of


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_share_is_taken_when_the_slot_is_and_records_without_one_give_theirs_back():
    clock = Clock()
    share = TimeShare(end=40.0, records=4, slots=1, clock=clock)
    first, duplicate, second, third = (share.ticket() for _ in range(4))
    assert first.deadline() == 10.0  # 40 s for 4 records, one at a time
    assert first.deadline() == 10.0  # taken once
    duplicate.close()  # never reached the provider
    clock.now = 10.0
    assert second.deadline() == 25.0  # 30 s left for the 2 still to go
    clock.now = 12.0  # the second finished early: the third gets the rest
    assert third.deadline() == 40.0
    for ticket in (first, second, third):
        ticket.close()


def test_shares_count_rounds_of_slots():
    share = TimeShare(end=30.0, records=6, slots=2, clock=Clock())
    assert share.ticket().deadline() == 10.0  # 3 rounds of 2


def test_slots_bound_what_is_in_flight_and_time_out():
    slots = ProviderSlots(2)
    inside = []
    lock = threading.Lock()
    gate = threading.Barrier(2)

    def hold() -> None:
        with slots.hold(until=time.monotonic() + 5):
            with lock:
                inside.append(1)
            gate.wait(timeout=5)

    threads = [threading.Thread(target=hold) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert slots.peak == 2 and slots.in_use == 0
    with (
        slots.hold(until=time.monotonic() + 1),
        slots.hold(until=time.monotonic() + 1),
        pytest.raises(NoSlot),
        slots.hold(until=time.monotonic() + 0.05),
    ):
        pass


def test_waits_are_counted_on_the_message_and_bounded():
    assert waits_of(None) == 0
    assert waits_of({"captioner-waits": {"stringValue": "3", "dataType": "Number"}}) == 3
    assert waits_of({"captioner-waits": {"stringValue": "x"}}) == 0
    assert delay_seconds(0.2) == 1 and delay_seconds(4000) == MAX_DELAY_S == 900
    assert Requeue("https://q", lambda: None).can_wait(MAX_WAITS - 1)
    assert not Requeue("https://q", lambda: None).can_wait(MAX_WAITS)
    assert not Requeue(None, lambda: None).can_wait(0)


def test_a_resent_message_carries_its_wait_count_and_delay():
    sent = []

    class Sqs:
        def send_message(self, **kwargs):
            sent.append(kwargs)

    Requeue("https://q", Sqs).later('{"Records": []}', waits=2, delay=12.3)
    (msg,) = sent
    assert msg["DelaySeconds"] == 13 and msg["MessageBody"] == '{"Records": []}'
    assert msg["MessageAttributes"]["captioner-waits"]["StringValue"] == "3"
