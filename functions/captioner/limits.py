"""How many caption requests may be in flight, and how much of an invocation each one gets.

Across the deployment the limit is ``ProviderConcurrency`` (the provider plan's queued-request
limit: ModelsLab 5, 10 or 15). The template turns it into instances: the event source's
``MaximumConcurrency`` and the function's reserved concurrency both equal it, so at most that
many instances run, each its own process. Each instance holds ``CAPTION_PROVIDER_SLOTS`` (1)
provider slots, a semaphore around the provider call only, while it runs several records at
once (``CAPTION_BATCH_CONCURRENCY``): a record's claim, tag and header reads before the call
and its writes after it overlap another record's provider time, so the slot never waits for
AWS. Instances x slots = ProviderConcurrency, whatever the instances do.

A provider that computes in the function (``cpu_bound``: the offline model) is limited by the
instance's vCPUs instead: Lambda gives 1 vCPU per 1,769 MB of memory.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

from captioner.errors import CaptionerError
from captioner.providers.base import CaptionProvider

MB_PER_VCPU = 1769  # Lambda: "at 1,769 MB, a function has the equivalent of one vCPU"


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


class ProviderSlots:
    """The provider calls one instance may have in flight at once."""

    def __init__(self, size: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.size = max(size, 1)
        self._free = threading.BoundedSemaphore(self.size)
        self._clock = clock
        self._lock = threading.Lock()
        self.in_use = 0
        self.peak = 0  # the most held at once (benchmarks and tests read it)

    @contextmanager
    def hold(self, until: float) -> Iterator[None]:
        """Hold a slot for the block; ``NoSlot`` when none is free by ``until``."""
        if not self._free.acquire(timeout=max(until - self._clock(), 0.0)):
            raise NoSlot("no provider slot came free in this invocation's time")
        with self._lock:
            self.in_use += 1
            self.peak = max(self.peak, self.in_use)
        try:
            yield
        finally:
            with self._lock:
                self.in_use -= 1
            self._free.release()


class SlotsByProvider:
    """One ``ProviderSlots`` per provider name, made on first use (a backfill may ask for a
    provider other than the deployment's)."""

    def __init__(self, configured: int) -> None:
        self._configured = configured
        self._made: dict[str, ProviderSlots] = {}
        self._lock = threading.Lock()

    def __call__(self, provider: CaptionProvider) -> ProviderSlots:
        with self._lock:
            if provider.name not in self._made:
                self._made[provider.name] = ProviderSlots(slots_for(provider, self._configured))
            return self._made[provider.name]


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

    def close(self) -> None:
        if self._deadline is None and not self._closed:
            self._share._skip()
        self._closed = True
