"""Metrics through Powertools (captioner/observability.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from aws_lambda_powertools.metrics import MetricUnit

from captioner import observability


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
