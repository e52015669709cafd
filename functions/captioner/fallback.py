"""Fallback providers (``CAPTION_FALLBACK_PROVIDERS``) and the circuit breakers in front of them.

When the primary cannot caption a record for a reason that is not the image's fault — a
configuration fault (invalid key, no credit) or transient faults that outlast its retries —
the next provider in the list captions it, in the same delivery, instead of the record
waiting for SQS retries and a redrive. What never falls back:

- a fault that blames the image (``ProviderImageError``): the next provider would get the
  same image; the row is FAILED;
- a record with a provider job that may still complete (a queued ModelsLab job id, stored
  on the row or queued by this delivery): that job is paid and is polled, never abandoned, so
  no version is paid to two providers (the pipeline also sends a later delivery of such a row
  to the job's provider, whatever the primary is);
- a provider asked for by name (a backfill's ``--provider``).

Each provider has a circuit breaker per instance, shared by the records the instance runs at
once: after ``failures`` failed calls in a row (a configuration fault counts as all of them)
the provider is skipped for ``cooldown`` seconds, then one call tries it again (half open);
a success closes it. A provider whose circuit is open fails at once with ``CircuitOpen``.

Time: a provider with fallbacks after it leaves them a reserve of the record's time (8 s, at
most a quarter of what is left) for their calls.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from enum import StrEnum

from captioner.errors import (
    NoTimeLeft,
    ProviderConfigError,
    ProviderError,
    ProviderImageError,
    ProviderJobGone,
    ProviderPending,
    ProviderTransientError,
)
from captioner.providers.base import Caption, CaptionProvider, ImageSource, Length

# Time kept back for the fallbacks while a provider with fallbacks after it is tried: this
# much, at most a quarter of the time left, and never so much that it could not start.
FALLBACK_RESERVE_S = 8.0
MIN_START_S = 2.0


class CircuitOpen(ProviderError):
    """The provider's circuit is open: not called (not retried in-process either)."""


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


class CircuitBreaker:
    """Counts a provider's failed calls in a row; thread-safe."""

    def __init__(
        self, failures: int, cooldown_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.failures = failures
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._lock = threading.Lock()
        self._failed = 0
        self._opened_at: float | None = None
        self._trial = False  # a half-open trial call is in flight

    @property
    def state(self) -> BreakerState:
        with self._lock:
            return self._state()

    def _state(self) -> BreakerState:
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self._clock() - self._opened_at < self.cooldown_s:
            return BreakerState.OPEN
        return BreakerState.HALF_OPEN

    def allow(self) -> bool:
        """Whether a call may go to the provider now (half open: one trial at a time)."""
        with self._lock:
            state = self._state()
            if state is BreakerState.CLOSED:
                return True
            if state is BreakerState.HALF_OPEN and not self._trial:
                self._trial = True
                return True
            return False

    def retry_in(self) -> float:
        with self._lock:
            if self._opened_at is None:
                return 0.0
            return max(self.cooldown_s - (self._clock() - self._opened_at), 0.0)

    def succeeded(self) -> None:
        with self._lock:
            self._failed, self._opened_at, self._trial = 0, None, False

    def failed(self, *, fatal: bool = False) -> None:
        """A failed call; ``fatal`` (a configuration fault) opens the circuit at once."""
        with self._lock:
            self._failed = self.failures if fatal else self._failed + 1
            if self._failed >= self.failures or self._trial:
                self._opened_at = self._clock()
            self._trial = False

    def released(self) -> None:
        """A trial call that ended without a verdict (a job still queued)."""
        with self._lock:
            self._trial = False


class Guarded:
    """A provider behind its circuit breaker (the same interface)."""

    def __init__(self, provider: CaptionProvider, breaker: CircuitBreaker) -> None:
        self.provider = provider
        self.breaker = breaker
        self.name = provider.name
        self.formats = provider.formats
        self.price_usd = provider.price_usd
        self.cpu_bound = provider.cpu_bound
        self.last_error = ""  # what the last failed call said (shown while the circuit is open)

    def caption(
        self,
        image: ImageSource,
        length: Length,
        *,
        deadline: float,
        job_id: str | None = None,
        on_job: Callable[[str], None] | None = None,
    ) -> Caption:
        if not self.breaker.allow():
            raise CircuitOpen(
                f"circuit open after repeated failures (last: {self.last_error}; tried again "
                f"in {self.breaker.retry_in():.0f} s)"
            )
        try:
            caption = self.provider.caption(
                image, length, deadline=deadline, job_id=job_id, on_job=on_job
            )
        except (ProviderPending, NoTimeLeft):
            self.breaker.released()  # a queued job, or no call made: no verdict on its health
            raise
        except ProviderImageError:
            self.breaker.succeeded()  # it answers: the image is at fault, not the provider
            raise
        except ProviderJobGone:
            self.breaker.released()  # it answers that an old job expired: no verdict either
            raise
        except (ProviderTransientError, ProviderConfigError) as exc:
            self.last_error = str(exc)[:300]
            self.breaker.failed(fatal=isinstance(exc, ProviderConfigError))
            raise
        except BaseException:
            self.breaker.released()
            raise
        self.breaker.succeeded()
        return caption


# One provider's calls and retries until ``deadline``; ``reason`` says why it is asked
# (None for the primary). The pipeline's: it stores jobs, retries transient faults.
Attempt = Callable[[CaptionProvider, float, str | None], Caption]


class FallbackChain:
    """The fallback providers after the primary, made on first use, each behind a breaker."""

    def __init__(
        self,
        names: Sequence[str],
        provider_for: Callable[[str], CaptionProvider],
        *,
        failures: int = 5,
        cooldown_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.names = tuple(names)
        self._provider_for = provider_for
        self._failures, self._cooldown_s, self._clock = failures, cooldown_s, clock
        self._guarded: dict[str, Guarded] = {}
        self._lock = threading.Lock()

    def guarded(self, provider: CaptionProvider) -> Guarded:
        with self._lock:
            if provider.name not in self._guarded:
                breaker = CircuitBreaker(self._failures, self._cooldown_s, self._clock)
                self._guarded[provider.name] = Guarded(provider, breaker)
            return self._guarded[provider.name]

    def breaker(self, name: str) -> CircuitBreaker:
        return self.guarded(self._provider_for(name)).breaker

    def _until(self, deadline: float) -> float:
        left = deadline - self._clock()
        reserve = min(FALLBACK_RESERVE_S, left / 4)
        return deadline if left - reserve < MIN_START_S else deadline - reserve

    def caption(
        self,
        primary: CaptionProvider,
        image_format: str,
        attempt: Attempt,
        *,
        deadline: float,
        job_pending: Callable[[], bool],
    ) -> Caption:
        """The primary's caption, or the first fallback's that can make one."""
        chain = [primary, *(self._provider_for(n) for n in self.names if n != primary.name)]
        reasons: list[str] = []
        errors: list[ProviderError] = []
        for index, provider in enumerate(chain):
            if image_format not in provider.formats:
                reasons.append(f"{provider.name} does not accept {image_format}")
                continue
            until = deadline if index == len(chain) - 1 else self._until(deadline)
            why = "; ".join(reasons) if index else None
            try:
                return attempt(self.guarded(provider), until, why)
            except ProviderImageError:
                raise  # the image's fault: another provider would get the same image
            except ProviderPending:
                raise  # a queued job may still complete: poll it, never pay twice
            except (ProviderTransientError, ProviderConfigError, CircuitOpen) as exc:
                if job_pending():  # the job is polled by the next delivery
                    if isinstance(exc, CircuitOpen):
                        raise ProviderTransientError(f"{provider.name}: {exc}") from exc
                    raise
                errors.append(exc)
                reasons.append(f"{provider.name}: {exc}")
        if errors and all(isinstance(e, ProviderConfigError) for e in errors):
            raise ProviderConfigError("; ".join(reasons))
        raise ProviderTransientError("no provider could caption it: " + "; ".join(reasons))
