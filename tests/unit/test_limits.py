"""Provider slots, the fair share of an invocation, and the wait bookkeeping."""

from __future__ import annotations

import threading
import time

import pytest

from captioner import limits
from captioner.limits import LEASE_POLL_S, NoSlot, ProviderSlots, TimeShare
from captioner.requeue import MAX_DELAY_S, MAX_WAITS, Requeue, delay_seconds, waits_of
from tests.fakes.memory import MemoryLeases


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


# -- deployment-wide leases (limits.ProviderSlots with leases.SlotLeases' rules) ---------------


def _hold_in_thread(slots: ProviderSlots, entered: threading.Event, leave: threading.Event,
                    still_to_call=None) -> threading.Thread:  # fmt: skip
    def run() -> None:
        with slots.hold(time.monotonic() + 5, 60, still_to_call):
            entered.set()
            leave.wait(5)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_every_call_holds_a_lease_and_gives_it_back_when_no_record_wants_it():
    leases = MemoryLeases(limit=2)
    slots = ProviderSlots(3, leases=leases)
    with slots.hold(time.monotonic() + 5, 60):
        assert len(leases.holders) == 1
    slots.release_idle()  # given back in the background: the invocation's end waits for it
    assert leases.holders == {} and (leases.takes, leases.given_back) == (1, 1)


def test_the_instance_never_passes_the_deployments_leases():
    leases = MemoryLeases(limit=1)
    slots = ProviderSlots(3, leases=leases)
    entered, leave = threading.Event(), threading.Event()
    first = _hold_in_thread(slots, entered, leave)
    assert entered.wait(5)
    # its own slots are free, no lease is
    with pytest.raises(NoSlot, match="deployment-wide"), slots.hold(time.monotonic() + 0.3, 60):
        pass
    assert slots.in_use == 1  # the local slot of the refused record was released
    leave.set()
    first.join()
    slots.release_idle()
    assert leases.holders == {}


def test_a_finished_call_hands_its_lease_to_a_waiting_record_of_the_instance():
    leases = MemoryLeases(limit=1)
    slots = ProviderSlots(3, leases=leases)
    entered, leave = threading.Event(), threading.Event()
    first = _hold_in_thread(slots, entered, leave)
    assert entered.wait(5)
    got = threading.Event()
    second = threading.Thread(target=lambda: _hold_briefly(slots, got))
    second.start()
    time.sleep(0.3)  # the second record waits for the lease, looking now and then
    assert not got.is_set()
    leave.set()
    first.join()
    second.join(5)
    assert got.is_set()
    assert leases.takes == 1  # handed over inside the instance: no second take
    assert (slots.leases_taken, slots.leases_handed_over) == (1, 1)  # what bench_slots prints
    slots.release_idle()
    assert leases.holders == {}


def _hold_briefly(slots: ProviderSlots, got: threading.Event) -> None:
    with slots.hold(time.monotonic() + 5, 60):
        got.set()


def test_a_lease_is_kept_for_records_still_to_call_until_the_invocation_ends():
    leases = MemoryLeases(limit=2)
    slots = ProviderSlots(3, leases=leases)
    with slots.hold(time.monotonic() + 5, 60, still_to_call=lambda: 1):
        pass
    assert len(leases.holders) == 1  # the next record of the batch will want it
    with slots.hold(time.monotonic() + 5, 60, still_to_call=lambda: 0):
        pass
    slots.release_idle()
    assert leases.takes == 1 and leases.holders == {}  # reused, then given back
    with slots.hold(time.monotonic() + 5, 60, still_to_call=lambda: 1):
        pass
    slots.release_idle()  # the invocation ends: a frozen instance holds nothing
    assert leases.holders == {}


def test_an_instance_looks_for_a_lease_once_per_poll_however_many_records_wait():
    """Each look is a DynamoDB read: the records waiting in an instance share one look
    every ``LEASE_POLL_S`` (jittered 0.5-1.5x), not one look each, back to back."""
    leases = MemoryLeases(limit=1)
    assert leases.take("another-instance", until=time.time() + 60)
    slots = ProviderSlots(6, leases=leases)
    refused = []

    def record() -> None:
        try:
            with slots.hold(time.monotonic() + 0.5, 60):
                pass
        except NoSlot:
            refused.append(1)

    threads = [threading.Thread(target=record) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(refused) == 5
    # 0.5 s at one look per 0.05 s at the most, plus the look the instance had under way
    assert leases.asks <= 0.5 / (0.5 * LEASE_POLL_S) + 2


def test_a_taken_lease_lets_the_next_waiting_record_look_at_once(monkeypatch):
    monkeypatch.setattr(limits, "LEASE_POLL_S", 5.0)  # a wait for the next look would show
    leases = MemoryLeases(limit=3)
    slots = ProviderSlots(3, leases=leases)
    entered, leave = threading.Event(), threading.Event()
    started = time.monotonic()
    holders = [_hold_in_thread(slots, threading.Event(), leave) for _ in range(2)]
    last = _hold_in_thread(slots, entered, leave)
    assert entered.wait(5)
    # three takes in a row, no poll interval between them: there was room
    assert time.monotonic() - started < 1.0
    leave.set()
    for thread in [*holders, last]:
        thread.join()
    slots.release_idle()
    assert leases.takes == 3 and leases.holders == {}


def test_a_lease_whose_holder_died_counts_no_more_once_it_ends():
    now = [1000.0]
    leases = MemoryLeases(limit=1, clock=lambda: now[0])
    assert leases.take("dead-instance", until=1010.0)
    slots = ProviderSlots(1, leases=leases, wall=lambda: now[0])
    with pytest.raises(NoSlot), slots.hold(time.monotonic() + 0.2, 60):
        pass
    now[0] = 1011.0
    with slots.hold(time.monotonic() + 1, 60):
        assert "dead-instance" not in leases.holders


def test_a_failed_lease_call_is_asked_again_at_the_next_look():
    leases = MemoryLeases(limit=1)
    leases.fail = {"take": 1}
    slots = ProviderSlots(1, leases=leases)
    with slots.hold(time.monotonic() + 2, 60):
        assert len(leases.holders) == 1
    leases.fail = {"give_back": 1}  # not given back: it ends by itself, nothing raised
    with slots.hold(time.monotonic() + 2, 60):
        pass
    slots.release_idle()
    assert len(leases.holders) == 1


def test_many_records_of_many_instances_never_pass_the_leases():
    leases = MemoryLeases(limit=3)
    instances = [ProviderSlots(3, leases=leases) for _ in range(4)]
    inside, peak, lock = [0], [0], threading.Lock()

    def record(slots: ProviderSlots) -> None:
        with slots.hold(time.monotonic() + 10, 60):
            with lock:
                inside[0] += 1
                peak[0] = max(peak[0], inside[0])
            time.sleep(0.02)
            with lock:
                inside[0] -= 1

    threads = [threading.Thread(target=record, args=(instances[i % 4],)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for slots in instances:
        slots.release_idle()
    assert peak[0] == 3 and leases.holders == {}
