"""Metrics through Powertools (captioner/observability.py)."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator

import pytest
from aws_lambda_powertools.metrics import MetricUnit

from captioner import handler, observability
from tests.conftest import LambdaContext


@pytest.fixture
def metrics() -> Iterator[None]:
    observability.metrics.clear_metrics()
    yield
    observability.metrics.clear_metrics()


def test_metrics_off_keep_nothing_and_print_nothing(metrics, monkeypatch, capsys):
    """Powertools alone would keep every value and print the set at the 100th."""
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    for _ in range(150):
        observability.add_metric("Captioned", MetricUnit.Count)
    assert observability.metrics.metric_set == {}
    assert capsys.readouterr().out == ""


def test_metrics_on_are_kept_for_the_flush(metrics, monkeypatch):
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "false")
    observability.add_metric("Captioned", MetricUnit.Count)
    observability.add_metric("Captioned", MetricUnit.Count)
    assert observability.metrics.metric_set["Captioned"]["Value"] == [1.0, 1.0]


class Emits:
    """An app whose every invocation emits one metric."""

    def handle(self, event, context):
        observability.add_metric("Captioned", MetricUnit.Count)
        return {"batchItemFailures": []}


def test_the_handler_publishes_metrics_when_on(metrics, monkeypatch, capsys):
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "false")
    handle = handler.handler_for(Emits)
    assert handle({"Records": []}, LambdaContext()) == {"batchItemFailures": []}
    emf = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert [m["Captioned"] for m in emf] == [[1.0]]


def test_the_handler_neither_publishes_nor_warns_when_metrics_are_off(metrics, monkeypatch, capsys):
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    handle = handler.handler_for(Emits)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Powertools' "No application metrics to publish"
        for _ in range(3):
            assert handle({"Records": []}, LambdaContext()) == {"batchItemFailures": []}
    assert '"_aws"' not in capsys.readouterr().out
