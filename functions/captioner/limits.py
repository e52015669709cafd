"""How many caption requests may be in flight, and how much of an invocation each one gets.

Across the deployment the limit is ``ProviderConcurrency`` (the provider plan's queued-request
limit: ModelsLab 5, 10 or 15). The template turns it into instances: the event source's
``MaximumConcurrency`` and the function's reserved concurrency both equal it, so at most that
many instances run, each its own process. Each instance holds ``CAPTION_PROVIDER_SLOTS``
provider slots, a semaphore around the provider call only, while it runs several records at
once (``CAPTION_BATCH_CONCURRENCY``): a record's claim, tag and header reads before the call
and its writes after it overlap another record's provider time, so the slot never waits for
AWS.

With ``CAPTION_PROVIDER_CONCURRENCY`` set (the template sets it to ``ProviderConcurrency``)
the deployment-wide limit is also kept in DynamoDB
(``leases.py``): a record takes its instance's slot, then a lease on one of the deployment's.
An instance keeps its lease while another of its records waits for the slot (or will soon:
its batch has records still to call), and gives it back as soon as none does (at the latest
when its invocation ends), so an instance between two batches leaves its leases to the
others instead of idle.

A provider that computes in the function (``cpu_bound``: the offline model) is limited by the
instance's vCPUs instead: Lambda gives 1 vCPU per 1,769 MB of memory.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

from captioner.errors import CaptionerError
from captioner.ports import Leases
from captioner.providers.base import CaptionProvider

log = logging.getLogger(__name__)

MB_PER_VCPU = 1769  # Lambda: "at 1,769 MB, a function has the equivalent of one vCPU"
# How often an instance waiting for a deployment-wide lease looks for a free one (jittered
# 0.5-1.5x). One look is a strongly consistent GetItem: ~20 a second per waiting instance,
# 1.7 million a day, about 0.2 $ at on-demand's 0.125 $ per million reads. Several waiting
# instances look in turn, so a lease given back idles about this long over their number.
# bench_slots, 300 images: 0.962-0.964 of the paid slots busy at 0.05 s, 0.952-0.956 at 0.1 s.
LEASE_POLL_S = 0.05


class NoSlot(CaptionerError):
    """No provider slot came free before the record's time was up."""


def vcpus(env: Mapping[str, str] | None = None) -> int:
    """The vCPUs this instance may use: Lambda's share for its memory, else the machine's."""
    env = os.environ if env is None else env
    count = os.cpu_count() or 1
    memory = (env.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE") or "").strip()
    if memory.isdigit() and int(memory) > 0:
        return max(1, min(count, math.ceil(int(memory) / MB_PER_VCPU)))
    return count


def slots_for(provider: CaptionProvider, configured: int) -> int:
    """Slots of this instance for ``provider``: its vCPUs when it computes here, else the
    configured share of the deployment-wide limit."""
    return vcpus() if provider.cpu_bound else max(configured, 1)


@dataclass(frozen=True)
class _Lease:
    holder: str
    until: float  # wall-clock epoch seconds


class ProviderSlots:
    """The provider calls one instance may have in flight at once, and, with ``leases``, the
    deployment-wide lease each one needs besides.

    A record that finishes its call hands its lease to a record of the same instance that
    waits for one (no DynamoDB call); with none waiting it gives the lease back at once, so
    another instance can use it. One record per instance looks in DynamoDB for a lease at a
    time, and the instance looks at most once per ``LEASE_POLL_S`` while none is free (its
    records took turns before, back to back: ~70 reads a second per instance); the others
    wait for that look or for a handed-over lease."""

    def __init__(
        self,
        size: int,
        clock: Callable[[], float] = time.monotonic,
        *,
        leases: Leases | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.size = max(size, 1)
        self._free = threading.BoundedSemaphore(self.size)
        self._clock = clock
        self._lock = threading.Lock()
        self.in_use = 0
        self.peak = 0  # the most held at once (benchmarks and tests read it)
        # leases taken from DynamoDB, and handed from one record of this instance to another
        self.leases_taken = self.leases_handed_over = 0
        self._leases = leases
        self._wall = wall
        self._changed = threading.Condition(self._lock)  # a lease handed over or polled
        self._wanting = 0  # records of this instance waiting for a lease
        self._polling = False  # one of them is asking DynamoDB
        # no look before this (monotonic) time: one look per LEASE_POLL_S for the instance
        self._next_look = 0.0
        self._idle: list[_Lease] = []  # leases handed over, not yet picked up
        self._returning: list[Future[None]] = []  # give-backs under way
        self._pool: ThreadPoolExecutor | None = None
        self._instance = uuid.uuid4().hex[:12]  # holder names: "<instance>-<n>"
        self._numbers = itertools.count()  # next() is atomic (a generator's is not)

    @contextmanager
    def hold(
        self, until: float, lease_s: float = 0.0, still_to_call: Callable[[], int] | None = None
    ) -> Iterator[None]:
        """Hold a slot (and a lease of ``lease_s`` seconds) for the block; ``NoSlot`` when
        none is free by ``until``. ``still_to_call``: how many records of this invocation
        may still need a lease (the lease is kept for them rather than given back)."""
        if not self._free.acquire(timeout=max(until - self._clock(), 0.0)):
            raise NoSlot("no provider slot came free in this invocation's time")
        try:
            lease = self._lease(until, lease_s) if self._leases is not None else None
        except BaseException:
            self._free.release()
            raise
        with self._lock:
            self.in_use += 1
            self.peak = max(self.peak, self.in_use)
        try:
            yield
        finally:
            with self._lock:
                self.in_use -= 1
            if lease is not None:
                self._hand_over(lease, still_to_call)
            self._free.release()

    def release_idle(self) -> None:
        """Give back leases no record picked up, and finish the give-backs under way (an
        invocation's end: a frozen instance must not hold a slot of the deployment's)."""
        with self._lock:
            idle, self._idle = self._idle, []
            returning, self._returning = self._returning, []
        for lease in idle:
            self._give_back(lease)
        for future in returning:
            future.result()  # _give_back never raises

    def _background(self) -> ThreadPoolExecutor:
        """(Under the lock.) The pool that gives leases back, made on first use."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="lease")
        return self._pool

    def _hand_over(self, lease: _Lease, still_to_call: Callable[[], int] | None) -> None:
        """To a record of this instance that waits for a lease or will soon (its batch has
        records still to call), else back to DynamoDB at once for another instance. A
        record busy asking DynamoDB does not count as waiting: the lease would idle until
        it returns. Kept leases go back at the latest when the invocation ends."""
        with self._lock:
            waiting = self._wanting - int(self._polling)
            soon = still_to_call() if still_to_call is not None else 0
            if waiting > 0 or len(self._idle) < soon:
                self._idle.append(lease)
                self._changed.notify()
                return
            # in the background: the record's durable write need not wait for it
            # (release_idle waits for it before the invocation ends)
            self._returning.append(self._background().submit(self._give_back, lease))

    def _lease(self, until: float, lease_s: float) -> _Lease:
        """A handed-over lease that lasts long enough, else a new one from DynamoDB: asked
        for at once, then, while none is free, looked for every ``LEASE_POLL_S`` until
        ``until`` (``NoSlot``)."""
        with self._lock:
            self._wanting += 1
        name, asked, got = f"{self._instance}-{next(self._numbers)}", False, None
        try:
            while True:
                with self._lock:
                    # a handed-over lease is this invocation's: it lasts as long as ours
                    lease = self._idle.pop() if self._idle else None
                    self.leases_handed_over += lease is not None
                    due = self._clock() >= self._next_look
                    poll = lease is None and not self._polling and due
                    self._polling = self._polling or poll
                if lease is not None:
                    return lease
                if poll:
                    try:
                        ends = self._wall() + lease_s
                        got = self._ask(name, ends, direct=not asked)
                        if got:
                            self.leases_taken += 1
                            return _Lease(name, ends)
                    finally:
                        # after an error the take may have landed: take again directly (a
                        # holder already in the map takes its lease again)
                        asked = got is not None
                        with self._lock:
                            self._polling = False
                            if not got:  # none free (or the call failed): the next look waits
                                jitter = random.uniform(0.5, 1.5)  # noqa: S311 (not a secret)
                                self._next_look = self._clock() + LEASE_POLL_S * jitter
                            self._changed.notify_all()  # taken: the next record looks at once
                left = until - self._clock()
                if left <= 0:
                    raise NoSlot("no deployment-wide provider slot came free in time")
                with self._lock:
                    # woken by a handed-over lease, the end of a look, or the next look's time
                    wait = LEASE_POLL_S if self._polling else self._next_look - self._clock()
                    self._changed.wait(min(max(wait, 0.0), left))
        finally:
            with self._lock:
                self._wanting -= 1

    def _ask(self, name: str, ends: float, direct: bool) -> bool | None:
        """Take a lease: ``direct``ly, else only when there is room (a read costs less than a
        failed conditional write). None: the call failed; look again at the next poll."""
        assert self._leases is not None
        try:
            return (direct or self._leases.has_room()) and self._leases.take(name, ends)
        except Exception:
            log.warning("asking for a provider slot lease failed", exc_info=True)
            return None

    def _give_back(self, lease: _Lease) -> None:
        assert self._leases is not None
        try:
            self._leases.give_back(lease.holder)
        except Exception:  # it ends by itself: the slot is idle until then, nothing is lost
            log.warning("giving back provider slot lease %s failed", lease.holder, exc_info=True)


class SlotsByProvider:
    """One ``ProviderSlots`` per provider name, made on first use (a backfill may ask for a
    provider other than the deployment's). ``leases_for`` gives a remote provider's
    deployment-wide leases (None: this instance's slots are the only limit)."""

    def __init__(self, configured: int, leases_for: Callable[[str], Leases] | None = None) -> None:
        self._configured = configured
        self._leases_for = leases_for
        self._made: dict[str, ProviderSlots] = {}
        self._lock = threading.Lock()

    def __call__(self, provider: CaptionProvider) -> ProviderSlots:
        with self._lock:
            if provider.name not in self._made:
                shared = self._leases_for is not None and not provider.cpu_bound
                self._made[provider.name] = ProviderSlots(
                    slots_for(provider, self._configured),
                    leases=self._leases_for(provider.name) if shared and self._leases_for else None,
                )
            return self._made[provider.name]

    def release_idle(self) -> None:
        with self._lock:
            made = list(self._made.values())
        for slots in made:
            slots.release_idle()


class TimeShare:
    """Shares what is left of an invocation fairly between the records of its batch.

    A record's provider time starts when it gets its slot: it then gets the time left divided
    by the rounds of records still to reach the provider (itself included), ``slots`` at a
    time. So one slow provider reply (a 429's ``retry_after``, a long ``eta``) cannot leave
    the records behind it with no time, and a record that waited for the slot is not
    charged for the wait. Records that never reach the provider (duplicates, rejections)
    give their share back when they finish."""

    def __init__(
        self, end: float, records: int, slots: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._end = end
        self._waiting = records
        self._slots = max(slots, 1)
        self._clock = clock
        self._lock = threading.Lock()

    def ticket(self) -> Ticket:
        return Ticket(self)

    def _take(self) -> float:
        with self._lock:
            waiting = max(self._waiting, 1)
            self._waiting -= 1
        now = self._clock()
        return now + max(self._end - now, 0.0) / math.ceil(waiting / self._slots)

    def _skip(self) -> None:
        with self._lock:
            self._waiting -= 1

    def still_to_call(self) -> int:
        """Records of the batch that have not reached the provider yet and may still."""
        with self._lock:
            return max(self._waiting, 0)


class Ticket:
    """One record's share: ``deadline()`` when it gets its slot, ``close()`` when done."""

    def __init__(self, share: TimeShare) -> None:
        self._share = share
        self._deadline: float | None = None
        self._closed = False

    def deadline(self) -> float:
        if self._deadline is None:
            self._deadline = self._share._take()
        return self._deadline

    def still_to_call(self) -> int:
        return self._share.still_to_call()

    def close(self) -> None:
        if self._deadline is None and not self._closed:
            self._share._skip()
        self._closed = True
