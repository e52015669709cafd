"""Exponential backoff with full jitter, bounded by a deadline rather than a count."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from captioner.errors import ProviderPending, ProviderTransientError


@dataclass(frozen=True)
class Backoff:
    base: float = 1.0
    cap: float = 20.0
    max_attempts: int = 6

    def delay(self, attempt: int, hint: float | None, rand: Callable[[], float]) -> float:
        """Full jitter (AWS architecture blog), but never sooner than the provider asked."""
        jittered = rand() * min(self.cap, self.base * 2.0**attempt)
        return max(jittered, min(hint or 0.0, self.cap * 3))


def call_with_retries[T](
    fn: Callable[[], T],
    *,
    deadline: float,
    backoff: Backoff = Backoff(),
    on_retry: Callable[[Exception, float], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    rand: Callable[[], float] = random.random,
) -> T:
    """Call ``fn()`` until it succeeds, a non-transient error is raised, the attempts run
    out, or the next wait would pass ``deadline``; then the last error propagates.

    Jobs a provider queued travel through the provider's ``on_job`` callback, not through
    here: every call reads the newest job id its caller knows, so a retry polls, never pays.
    A reply that was charged and of no use (``charged_reply``) is not tried again here."""
    attempt = 0
    while True:
        try:
            return fn()
        except ProviderTransientError as exc:
            if isinstance(exc, ProviderPending) and exc.park:
                raise  # a long job: its message comes back later instead
            if exc.charged_reply and not isinstance(exc, ProviderPending):
                # a request the provider may have charged (a success without a caption, a
                # reply cut off): trying again at once would pay again; at most once per
                # delivery, the message's next delivery tries again
                raise
            attempt += 1
            wait = backoff.delay(attempt, exc.retry_after, rand)
            if attempt >= backoff.max_attempts or clock() + wait >= deadline:
                raise
            if on_retry:
                on_retry(exc, wait)
            sleep(wait)
