"""The daily budget end to end in the local stack: uploads past the cap wait PENDING, the
template's schedule (its message through the caption queue) resumes them when the cap is
raised, and `captioner status` shows today's spend against the cap."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from captioner_tools.cli.app import app
from captioner_tools.local.stack import LocalStack
from tests import images
from tests.conftest import API_KEY
from tests.fakes.modelslab import FakeModelsLab
from tests.tools.conftest import depth, row, wait_for, wait_for_status

runner = CliRunner()
CAP = "0.0094"  # two ModelsLab captions


@pytest.fixture(scope="module")
def stack(modelslab: FakeModelsLab) -> Iterator[LocalStack]:
    with LocalStack(
        port=0,
        visibility_timeout=1,
        parameters={"DailyBudgetUsd": CAP},
        env={"MODELSLAB_API_URL": modelslab.url, "MODELSLAB_API_KEY": API_KEY},
        schedule_interval_s=1.0,
    ) as local:
        yield local


def status(stack: LocalStack) -> dict:
    env = {"AWS_ENDPOINT_URL": stack.endpoint_url, "COLUMNS": "200", "CAPTIONS_TABLE": None}
    result = runner.invoke(app, ["status", "--json"], env=env)
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_uploads_past_the_cap_wait_and_resume_when_it_is_raised(stack, modelslab):
    keys = [f"budget/{i}.png" for i in range(4)]
    for key in keys:
        stack.client("s3").put_object(Bucket=stack.bucket, Key=key, Body=images.png())

    def statuses() -> list[str]:
        return sorted(str((row(stack, k) or {}).get("status")) for k in keys)

    wait_for(statuses, lambda s: s == ["CAPTIONED", "CAPTIONED", "PENDING", "PENDING"],
             what="two captioned, two parked")  # fmt: skip
    parked = [row(stack, k) for k in keys if row(stack, k)["status"] == "PENDING"]
    assert all(r["reason"].startswith("daily budget of 0.0094 $ reached") for r in parked)
    wait_for(lambda: depth(stack, stack.queue_url), lambda n: n == 0, what="queue drained")
    assert depth(stack, stack.dlq_url) == 0  # never dead-lettered for the budget

    report = status(stack)["budget"]
    assert report["spent_usd"] == pytest.approx(0.0094) and report["cap_usd"] == 0.0094
    assert report["parked"] == 2
    text = runner.invoke(app, ["status"], env={"AWS_ENDPOINT_URL": stack.endpoint_url,
                                               "COLUMNS": "200", "CAPTIONS_TABLE": None})  # fmt: skip
    assert "0.0094 $ spent on" in text.output and "2 row(s) PENDING" in text.output

    # a stack update raising DailyBudgetUsd: the scheduled sweep resumes them by itself
    stack.stop_poller()
    stack.extra_env["CAPTION_DAILY_BUDGET_USD"] = "1"
    stack._env.apply({"CAPTION_DAILY_BUDGET_USD": "1"})
    stack.reset_handler()
    stack.start_poller()
    for key in keys:
        wait_for_status(stack, key, "CAPTIONED", timeout=30)
    paid = [r for r in modelslab.accepted() if "/budget/" in r.body.get("init_image", "")]
    assert len(paid) == 4
    assert status(stack)["budget"]["parked"] == 0
