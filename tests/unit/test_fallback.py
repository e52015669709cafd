"""The circuit breaker and the fallback chain with scripted providers and a fake clock."""

from __future__ import annotations

import pytest

from captioner.errors import (
    NoTimeLeft,
    ProviderConfigError,
    ProviderImageError,
    ProviderJobGone,
    ProviderPending,
    ProviderTransientError,
)
from captioner.fallback import BreakerState, CircuitBreaker, CircuitOpen, FallbackChain
from captioner.providers.base import Caption, ImageInfo, ImageSource
from tests import images


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Scripted:
    """A provider answering from a script: a caption text or an exception per call."""

    def __init__(self, name: str, *script: object, formats=("PNG", "JPEG")) -> None:
        self.name, self.formats, self.price_usd = name, frozenset(formats), 0.0
        self.cpu_bound = False
        self.script = list(script)
        self.calls = 0

    def caption(self, image, length, *, deadline, job_id=None, on_job=None) -> Caption:
        self.calls += 1
        step = self.script.pop(0) if self.script else f"{self.name} caption"
        if isinstance(step, BaseException):
            raise step
        return Caption(text=str(step), provider=self.name, length=length)


IMAGE = ImageSource(info=ImageInfo("PNG", 8, 8, 10), read=images.png)


def attempt_once(seen: list[tuple[str, float, str | None]]):
    def attempt(provider, until, why):
        seen.append((provider.name, until, why))
        return provider.caption(IMAGE, "normal", deadline=until)

    return attempt


def chain_of(*providers, clock=None, failures=3, cooldown=30.0):
    by_name = {p.name: p for p in providers}
    return FallbackChain(
        [p.name for p in providers[1:]], by_name.__getitem__, failures=failures,
        cooldown_s=cooldown, clock=clock or Clock(),
    )  # fmt: skip


# -- the breaker --------------------------------------------------------------------------------


def test_the_circuit_opens_after_the_threshold_and_half_opens_for_one_trial():
    clock = Clock()
    breaker = CircuitBreaker(failures=2, cooldown_s=10, clock=clock)
    breaker.failed()
    assert breaker.allow() and breaker.state is BreakerState.CLOSED
    breaker.failed()
    assert breaker.state is BreakerState.OPEN and not breaker.allow()
    assert breaker.retry_in() == 10
    clock.now += 10
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allow() and not breaker.allow()  # one trial at a time
    breaker.failed()  # the trial failed: open again, for a full cooldown
    assert breaker.state is BreakerState.OPEN
    clock.now += 10
    assert breaker.allow()
    breaker.succeeded()
    assert breaker.state is BreakerState.CLOSED and breaker.allow() and breaker.allow()


def test_a_configuration_fault_opens_the_circuit_at_once():
    breaker = CircuitBreaker(failures=5, cooldown_s=10, clock=Clock())
    breaker.failed(fatal=True)
    assert breaker.state is BreakerState.OPEN


def test_a_success_resets_the_count():
    breaker = CircuitBreaker(failures=2, cooldown_s=10, clock=Clock())
    breaker.failed()
    breaker.succeeded()
    breaker.failed()
    assert breaker.state is BreakerState.CLOSED


# -- the chain ----------------------------------------------------------------------------------


def test_the_primary_answers_when_it_can():
    primary, backup = Scripted("modelslab"), Scripted("openai")
    seen = []
    caption = chain_of(primary, backup).caption(
        primary, "PNG", attempt_once(seen), deadline=160.0, job_pending=lambda: False
    )
    assert caption.provider == "modelslab" and backup.calls == 0
    # it leaves the fallbacks a reserve: 8 s of the 60 s left
    assert seen == [("modelslab", 152.0, None)]


def test_a_configuration_fault_falls_back_with_the_reason():
    primary = Scripted("modelslab", ProviderConfigError("ModelsLab: invalid API key"))
    backup = Scripted("openai")
    seen = []
    caption = chain_of(primary, backup).caption(
        primary, "PNG", attempt_once(seen), deadline=160.0, job_pending=lambda: False
    )
    assert caption.provider == "openai"
    assert seen[1] == ("openai", 160.0, "modelslab: ModelsLab: invalid API key")


@pytest.mark.parametrize(
    "error",
    [ProviderImageError("could not decode image"), ProviderPending("queued", job_id="7")],
)
def test_image_faults_and_queued_jobs_never_fall_back(error):
    primary, backup = Scripted("modelslab", error), Scripted("openai")
    with pytest.raises(type(error)):
        chain_of(primary, backup).caption(
            primary, "PNG", attempt_once([]), deadline=160.0, job_pending=lambda: False
        )
    assert backup.calls == 0


def test_a_job_queued_during_the_attempt_stops_the_fallback():
    primary = Scripted("modelslab", ProviderTransientError("poll failed"))
    backup = Scripted("openai")
    with pytest.raises(ProviderTransientError):
        chain_of(primary, backup).caption(
            primary, "PNG", attempt_once([]), deadline=160.0, job_pending=lambda: True
        )
    assert backup.calls == 0


def test_a_fallback_that_cannot_take_the_format_is_skipped():
    primary = Scripted("openai", ProviderTransientError("HTTP 503"), formats=("PNG", "WEBP"))
    modelslab, local = Scripted("modelslab"), Scripted("local", formats=("PNG", "WEBP"))
    seen = []
    caption = chain_of(primary, modelslab, local).caption(
        primary, "WEBP", attempt_once(seen), deadline=160.0, job_pending=lambda: False
    )
    assert caption.provider == "local" and modelslab.calls == 0
    assert seen[-1][2] == "openai: HTTP 503; modelslab does not accept WEBP"


def test_when_every_provider_fails_the_error_says_why_for_each():
    primary = Scripted("modelslab", ProviderConfigError("invalid key"))
    backup = Scripted("openai", ProviderConfigError("no credit"))
    with pytest.raises(ProviderConfigError, match="modelslab: invalid key; openai: no credit"):
        chain_of(primary, backup).caption(
            primary, "PNG", attempt_once([]), deadline=160.0, job_pending=lambda: False
        )
    backup.script = [ProviderTransientError("HTTP 500")]
    primary.script = [ProviderConfigError("invalid key")]
    with pytest.raises(ProviderTransientError, match="no provider could caption it"):
        chain_of(primary, backup).caption(
            primary, "PNG", attempt_once([]), deadline=160.0, job_pending=lambda: False
        )


def test_an_open_circuit_skips_the_provider_without_calling_it():
    clock = Clock()
    primary = Scripted("modelslab", *[ProviderTransientError("busy")] * 2)
    backup = Scripted("openai")
    chain = chain_of(primary, backup, clock=clock, failures=2)
    for _ in range(3):
        chain.caption(primary, "PNG", attempt_once([]), deadline=160.0, job_pending=lambda: False)
    assert primary.calls == 2 and backup.calls == 3
    with pytest.raises(CircuitOpen, match="last: busy"):
        chain.guarded(primary).caption(IMAGE, "normal", deadline=160.0)


def test_running_out_of_time_says_nothing_about_the_providers_health():
    primary = Scripted("modelslab", *[NoTimeLeft("not enough time")] * 5)
    chain = chain_of(primary, Scripted("openai"), failures=1)
    for _ in range(3):
        chain.caption(primary, "PNG", attempt_once([]), deadline=160.0, job_pending=lambda: False)
    assert chain.breaker("modelslab").state is BreakerState.CLOSED


def test_a_stored_job_found_gone_says_nothing_about_the_providers_health():
    """Polling a job that expired at the provider is answered: the record pays for a new
    request next, and the circuit stays closed however often that happens."""
    primary = Scripted("modelslab", *[ProviderJobGone("job 7 is gone")] * 5)
    chain = chain_of(primary, Scripted("openai"), failures=1)
    for _ in range(3):
        with pytest.raises(ProviderJobGone):
            chain.guarded(primary).caption(IMAGE, "normal", deadline=160.0, job_id="7")
    assert chain.breaker("modelslab").state is BreakerState.CLOSED


def test_a_record_with_little_time_keeps_it_all_for_the_primary():
    primary = Scripted("modelslab")
    seen = []
    chain_of(primary, Scripted("local")).caption(
        primary, "PNG", attempt_once(seen), deadline=102.5, job_pending=lambda: False
    )
    assert seen == [("modelslab", 102.5, None)]
