"""Fallback providers end to end: the real handler, moto, the fake ModelsLab and the fake
OpenAI-compatible server (and the offline model, with the network switched off)."""

from __future__ import annotations

import socket

import pytest

from captioner import handler
from tests import images
from tests.conftest import EventLog, fast, sqs_event
from tests.fakes.modelslab import Reply
from tests.fakes.openai import error
from tests.integration.test_handler import put_event, run

INVALID_KEY = Reply({"message": "Invalid API key"}, status=401)
BUSY = Reply({"status": "error", "message": "Server busy, try again"})
PROCESSING = Reply({"status": "processing", "id": 4242, "eta": 0})


@pytest.fixture
def fallback_env(app_env, fake_openai, monkeypatch):
    """ModelsLab first, then the OpenAI-compatible server, then the offline model."""
    monkeypatch.setenv("CAPTION_FALLBACK_PROVIDERS", "openai,local")
    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai.url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-test-key-0000")
    handler.reset()
    return app_env


def test_an_invalid_modelslab_key_falls_back_and_the_row_says_so(
    fallback_env, fake_modelslab, fake_openai, lambda_context
):
    events = EventLog()
    fake_modelslab.queue(INVALID_KEY)
    obj, event = put_event(fallback_env, "photos/cat.png", images.png())

    assert run(event, lambda_context) == {"batchItemFailures": []}  # no redrive needed

    row = fallback_env.row("photos/cat.png")
    assert row["status"] == "CAPTIONED" and row["provider"] == "openai"
    assert row["caption"] == "A picture of cat.png."
    assert row["fallback_reason"].startswith("modelslab: ModelsLab: invalid API key")
    assert fallback_env.tags("photos/cat.png", obj["version_id"])["caption"] == row["caption"]
    assert len(fake_modelslab.accepted()) == 0 and len(fake_openai.requests) == 1
    assert "versionId=" in fake_openai.requests[0].image_url  # the presigned URL of the version
    (published,) = events.take()
    assert published["detail"]["provider"] == "openai"


def test_transient_faults_past_the_retries_fall_back(
    fallback_env, fake_modelslab, fake_openai, lambda_context
):
    fake_modelslab.queue(*[BUSY] * 10)
    _, event = put_event(fallback_env, "busy.png", images.png())
    assert run(event, lambda_context) == {"batchItemFailures": []}
    row = fallback_env.row("busy.png")
    assert row["provider"] == "openai" and "Server busy" in row["fallback_reason"]
    assert len(fake_modelslab.paid_calls()) == 4  # its retries first (fast backoff: 4 attempts)


def test_an_image_fault_does_not_fall_back(
    fallback_env, fake_modelslab, fake_openai, lambda_context
):
    fake_modelslab.queue({"status": "error", "message": "Could not decode image"})
    _, event = put_event(fallback_env, "broken.jpg", images.truncated_body_jpeg())
    assert run(event, lambda_context) == {"batchItemFailures": []}
    row = fallback_env.row("broken.jpg")
    assert row["status"] == "FAILED" and row["provider"] == "modelslab"
    assert "fallback_reason" not in row
    assert fake_openai.requests == []


def test_a_fallback_that_blames_the_image_records_failed_with_the_reason(
    fallback_env, fake_modelslab, fake_openai, lambda_context
):
    fake_modelslab.queue(INVALID_KEY)
    fake_openai.queue(Reply(error("Invalid image.", code="image_parse_error"), status=400))
    _, event = put_event(fallback_env, "odd.png", images.png())
    assert run(event, lambda_context) == {"batchItemFailures": []}
    row = fallback_env.row("odd.png")
    assert (row["status"], row["provider"]) == ("FAILED", "openai")
    assert "invalid API key" in row["fallback_reason"]


def test_local_is_the_last_resort_and_needs_no_network(
    fallback_env, fake_modelslab, fake_openai, lambda_context, monkeypatch
):
    def no_network(self, address):
        raise OSError(f"network is off (connect to {address})")

    _, event = put_event(fallback_env, "offline.png", images.png(224, 224))
    fast(handler.get_app())
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket.socket, "connect_ex", no_network)

    assert handler.lambda_handler(sqs_event(event), lambda_context) == {"batchItemFailures": []}

    monkeypatch.undo()
    row = fallback_env.row("offline.png")
    assert row["status"] == "CAPTIONED" and row["provider"] == "local"
    assert row["model"] and row["caption"]
    reason = row["fallback_reason"]
    assert "modelslab: cannot reach ModelsLab" in reason and "openai: cannot reach" in reason
    assert fake_modelslab.requests == [] and fake_openai.requests == []


def test_a_queued_job_is_polled_never_abandoned_for_a_fallback(
    fallback_env, fake_modelslab, fake_openai, lambda_context
):
    fake_modelslab.queue(PROCESSING)
    fake_modelslab.fetch_rule = lambda job: Reply({"status": "processing", "id": 4242, "eta": 0})
    _, event = put_event(fallback_env, "queued.png", images.png())
    app = fast(handler.get_app())
    app.pipeline.provider.poll_initial = app.pipeline.provider.poll_max = 0.3

    short = type(lambda_context)(remaining_ms=13_000)  # the job outlasts this delivery
    assert len(handler.lambda_handler(sqs_event(event), short)["batchItemFailures"]) == 1
    row = fallback_env.row("queued.png")
    assert row["status"] == "PENDING" and row["provider_job_id"] == "4242"
    assert fake_openai.requests == []  # the job may still complete: no second payment

    # The next delivery: the key was revoked meanwhile, so the job cannot even be polled;
    # still no fallback (ModelsLab may finish and charge the job).
    fake_modelslab.fetch_rule = lambda job: INVALID_KEY
    assert len(run(event, lambda_context, receive_count=2)["batchItemFailures"]) == 1
    assert fake_openai.requests == []

    fake_modelslab.fetch_rule = lambda job: Reply(
        {"status": "success", "id": 4242, "output": ["Finished at last."]}
    )
    assert run(event, lambda_context, receive_count=3) == {"batchItemFailures": []}
    row = fallback_env.row("queued.png")
    assert (row["status"], row["provider"], row["caption"]) == (
        "CAPTIONED", "modelslab", "Finished at last.",
    )  # fmt: skip
    assert len(fake_modelslab.accepted()) == 1 and fake_openai.requests == []


def test_a_job_queued_by_a_fallback_is_polled_there_even_when_the_primary_is_back(
    app_env, fake_modelslab, fake_openai, lambda_context, monkeypatch
):
    monkeypatch.setenv("CAPTION_PROVIDER", "openai")
    monkeypatch.setenv("CAPTION_FALLBACK_PROVIDERS", "modelslab")
    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai.url)
    handler.reset()
    fake_openai.queue(*[Reply(error("overloaded", type="server_error"), status=503)] * 4)
    fake_modelslab.queue(PROCESSING)
    fake_modelslab.fetch_rule = lambda job: Reply({"status": "processing", "id": 4242, "eta": 0})
    _, event = put_event(app_env, "swap.png", images.png())
    app = fast(handler.get_app())
    short = type(lambda_context)(remaining_ms=12_000)
    assert len(handler.lambda_handler(sqs_event(event), short)["batchItemFailures"]) == 1
    asked_openai = len(fake_openai.requests)
    assert app_env.row("swap.png")["provider"] == "modelslab"

    # OpenAI answers again, but this version has a paid ModelsLab job: poll it there.
    fake_modelslab.fetch_rule = lambda job: Reply(
        {"status": "success", "id": 4242, "output": ["From the queued job."]}
    )
    app.pipeline.fallback.breaker("modelslab")  # made already: the same instance goes on
    assert run(event, lambda_context, receive_count=2) == {"batchItemFailures": []}
    row = app_env.row("swap.png")
    assert (row["provider"], row["caption"]) == ("modelslab", "From the queued job.")
    assert len(fake_openai.requests) == asked_openai
    assert len(fake_modelslab.accepted()) == 1


def test_the_circuit_breaker_skips_a_failing_provider_then_tries_it_again(
    fallback_env, fake_modelslab, fake_openai, lambda_context
):
    clock = [1000.0]  # the breakers' clock: the cooldown passes when the test says so
    fast(handler.get_app()).pipeline.fallback._clock = lambda: clock[0]
    fake_modelslab.queue(INVALID_KEY)  # a configuration fault opens the circuit at once
    for name in ("a.png", "b.png"):
        _, event = put_event(fallback_env, name, images.png())
        assert run(event, lambda_context) == {"batchItemFailures": []}
    assert len(fake_modelslab.paid_calls()) == 1  # b.png did not ask ModelsLab at all
    assert fallback_env.row("b.png")["provider"] == "openai"
    assert "circuit open" in fallback_env.row("b.png")["fallback_reason"]
    breaker = handler.get_app().pipeline.fallback.breaker("modelslab")
    assert breaker.state == "open"

    clock[0] += 30  # the cooldown (30 s by default): one record tries ModelsLab again
    assert breaker.state == "half-open"
    _, event = put_event(fallback_env, "c.png", images.png())
    run(event, lambda_context)
    assert fallback_env.row("c.png")["provider"] == "modelslab"  # it works now
    assert breaker.state == "closed"
    assert len(fake_modelslab.paid_calls()) == 2


def test_transient_failures_open_the_circuit_after_the_threshold(
    fallback_env, fake_modelslab, fake_openai, lambda_context, monkeypatch
):
    monkeypatch.setenv("CAPTION_BREAKER_FAILURES", "2")
    handler.reset()
    fake_modelslab.queue(*[BUSY] * 10)
    _, event = put_event(fallback_env, "t.png", images.png())
    run(event, lambda_context)
    # two failed calls opened the circuit: the retries stopped there, and openai captioned
    assert len(fake_modelslab.paid_calls()) == 2
    row = fallback_env.row("t.png")
    assert row["provider"] == "openai" and "circuit open" in row["fallback_reason"]


def test_without_fallbacks_a_configuration_fault_still_waits_for_a_redrive(
    app_env, fake_modelslab, fake_openai, lambda_context
):
    fake_modelslab.queue(INVALID_KEY)
    _, event = put_event(app_env, "nofb.png", images.png())
    assert len(run(event, lambda_context)["batchItemFailures"]) == 1
    assert app_env.row("nofb.png")["status"] == "PENDING"
    assert fake_openai.requests == []
