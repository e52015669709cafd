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
        jittered = rand() * min(self.cap, self.base * 2**attempt)
        return max(jittered, min(hint or 0.0, self.cap * 3))


def call_with_retries[T](
    fn: Callable[[str | None], T],
    *,
    deadline: float,
    job_id: str | None = None,
    backoff: Backoff = Backoff(),
    on_retry: Callable[[Exception, float], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    rand: Callable[[], float] = random.random,
) -> T:
    """Call ``fn(job_id)`` until it succeeds, a non-transient error is raised, the attempts
    run out, or the next wait would pass ``deadline``; then the last error propagates.
    A ``ProviderPending`` hands its job id to the next call, so it polls instead of paying."""
    attempt = 0
    while True:
        try:
            return fn(job_id)
        except ProviderTransientError as exc:
            if isinstance(exc, ProviderPending):
                job_id = exc.job_id
            attempt += 1
            wait = backoff.delay(attempt, exc.retry_after, rand)
            if attempt >= backoff.max_attempts or clock() + wait >= deadline:
                raise
            if on_retry:
                on_retry(exc, wait)
            sleep(wait)
