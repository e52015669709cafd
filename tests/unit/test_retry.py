import pytest

from captioner.errors import ProviderConfigError, ProviderPending, ProviderTransientError
from captioner.retry import Backoff, call_with_retries


class Clock:
    def __init__(self):
        self.now = 0.0
        self.waits = []

    def sleep(self, s):
        self.waits.append(s)
        self.now += s


BACKOFF = Backoff(base=1, cap=20, max_attempts=6)


def run(fn, deadline=100.0, backoff=BACKOFF, rand=lambda: 1.0):
    clock = Clock()
    result = call_with_retries(fn, deadline=deadline, backoff=backoff, sleep=clock.sleep,
                               clock=lambda: clock.now, rand=rand)  # fmt: skip
    return result, clock


def flaky(failures, exc=None):
    exc = exc or ProviderTransientError("busy")
    calls = []

    def fn():
        calls.append(1)
        if len(calls) <= failures:
            raise exc
        return "ok"

    fn.calls = calls
    return fn


def test_backoff_grows_exponentially_with_jitter_bounds():
    result, clock = run(flaky(3))
    assert result == "ok" and clock.waits == [2, 4, 8]


def test_jitter_can_shorten_waits():
    _, clock = run(flaky(2), rand=lambda: 0.5)
    assert clock.waits == [1, 2]


def test_retry_after_hint_is_honoured():
    _, clock = run(flaky(1, ProviderTransientError("429", retry_after=15)), rand=lambda: 0.0)
    assert clock.waits == [15]


def test_gives_up_before_the_deadline():
    fn = flaky(100)
    with pytest.raises(ProviderTransientError):
        run(fn, deadline=10)
    assert len(fn.calls) == 3  # waits 2 + 4 = 6; the next (8) would pass 10


def test_configuration_errors_are_not_retried():
    fn = flaky(1, ProviderConfigError("bad key"))
    with pytest.raises(ProviderConfigError):
        run(fn)
    assert len(fn.calls) == 1


def test_a_pending_job_is_retried_like_any_transient_fault():
    """The job id itself travels through the provider's on_job callback (tests/faults)."""
    fn = flaky(1, ProviderPending("queued", job_id="42", retry_after=3))
    _, clock = run(fn, rand=lambda: 0.0)
    assert len(fn.calls) == 2 and clock.waits == [3]
