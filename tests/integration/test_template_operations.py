"""The template's day-one parameters for a platform team, and the offline model's layer.

Each parameter set is resolved as CloudFormation would (tests/template_eval.py): conditions
decided, NoValue dropped, so the assertions are on what a stack with those values holds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cfnlint.decode import cfn_yaml

from tests.template_eval import Resolver

ROOT = Path(__file__).resolve().parents[2]
SECRET = "arn:aws:secretsmanager:us-east-1:123456789012:secret:captioner/modelslab-AbCdEf"
BOUNDARY = "arn:aws:iam::123456789012:policy/team-boundary"


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return cfn_yaml.load(str(ROOT / "template.yaml"))


def _stack(template: dict[str, Any], **params: str) -> dict[str, Any]:
    """The resources with those parameters; a Ref or GetAtt of a resource reads "${Id}"."""
    return Resolver(template, {"ModelsLabApiKeySecret": SECRET, **params}).resources()


def _function(resources: dict[str, Any]) -> dict[str, Any]:
    props: dict[str, Any] = resources["CaptionFunction"]["Properties"]
    return props


def _policy_names(resources: dict[str, Any]) -> set[str]:
    return {p["PolicyName"] for p in resources["CaptionFunctionRole"]["Properties"]["Policies"]}


# ------------------------------------------------------------------ the offline model's layer


@pytest.mark.parametrize(
    ("params", "attached"),
    [
        ({}, False),
        ({"CaptionProvider": "openai"}, False),
        ({"CaptionProvider": "bedrock", "FallbackProviders": "openai,modelslab"}, False),
        ({"CaptionProvider": "local"}, True),
        ({"FallbackProviders": "local"}, True),
        ({"CaptionProvider": "openai", "FallbackProviders": "bedrock, local"}, True),
    ],
)
def test_the_offline_model_layer_exists_only_when_local_is_the_provider_or_a_fallback(
    template: dict[str, Any], params: dict[str, str], attached: bool
) -> None:
    resources = _stack(template, **params)
    assert ("OfflineModelLayer" in resources) is attached
    layers = _function(resources).get("Layers")
    assert layers == (["${OfflineModelLayer}"] if attached else None)


def test_the_layer_is_built_by_the_makefile_for_the_functions_runtime(
    template: dict[str, Any],
) -> None:
    layer = template["Resources"]["OfflineModelLayer"]
    assert layer["Type"] == "AWS::Serverless::LayerVersion"
    assert layer["Metadata"] == {"BuildMethod": "makefile", "BuildArchitecture": "arm64"}
    assert layer["Properties"]["CompatibleRuntimes"] == ["python3.12"]
    assert layer["Properties"]["CompatibleArchitectures"] == ["arm64"]
    makefile = (ROOT / "functions" / "Makefile").read_text(encoding="utf-8")
    assert "build-OfflineModelLayer:" in makefile
    assert "requirements-offline-model.txt" in makefile


# ------------------------------------------------------------------ TracingMode


def test_tracing_is_on_by_default_with_its_permission(template: dict[str, Any]) -> None:
    resources = _stack(template)
    fn = _function(resources)
    assert fn["Tracing"] == "Active"
    assert fn["Environment"]["Variables"]["POWERTOOLS_TRACE_DISABLED"] == "false"
    assert "xray" in _policy_names(resources)


def test_tracing_passthrough_sends_no_traces_and_grants_no_xray(
    template: dict[str, Any],
) -> None:
    resources = _stack(template, TracingMode="PassThrough")
    fn = _function(resources)
    assert fn["Tracing"] == "PassThrough"
    # observability.py then never imports the X-Ray SDK (a faster cold start)
    assert fn["Environment"]["Variables"]["POWERTOOLS_TRACE_DISABLED"] == "true"
    assert "xray" not in _policy_names(resources)


# ------------------------------------------------------------------ PermissionsBoundaryArn


def _roles(resources: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k: v["Properties"] for k, v in resources.items() if v["Type"] == "AWS::IAM::Role"}


def test_no_permissions_boundary_by_default(template: dict[str, Any]) -> None:
    roles = _roles(_stack(template))
    assert roles and all("PermissionsBoundary" not in role for role in roles.values())


def test_every_role_the_stack_creates_gets_the_permissions_boundary(
    template: dict[str, Any],
) -> None:
    """Every AWS::IAM::Role, including any added later, and SAM generates none: each
    function names its role (a generated role would not carry the boundary)."""
    resources = _stack(template, PermissionsBoundaryArn=BOUNDARY, CaptionProvider="local")
    roles = _roles(resources)
    assert {k: r.get("PermissionsBoundary") for k, r in roles.items()} == dict.fromkeys(
        roles, BOUNDARY
    )
    functions = [v for v in resources.values() if v["Type"] == "AWS::Serverless::Function"]
    assert functions and all("Role" in f["Properties"] for f in functions)


def test_the_permissions_boundary_must_be_a_policy_arn(template: dict[str, Any]) -> None:
    from captioner_tools.parameters import parameter_problems

    declared = template["Parameters"]
    assert parameter_problems(declared, {"PermissionsBoundaryArn": BOUNDARY}) == []
    assert parameter_problems(declared, {"PermissionsBoundaryArn": "team-boundary"}) == [
        "parameter PermissionsBoundaryArn='team-boundary' must be empty or the full ARN of an "
        "IAM managed policy"
    ]


# ------------------------------------------------------------------ CaptionQueueAgeAlarm


def test_the_queue_age_alarm_watches_the_oldest_message_beside_the_dead_letter_alarm(
    template: dict[str, Any],
) -> None:
    resources = _stack(template, AlarmEmail="ops@example.com", QueueAgeAlarmSeconds="900")
    age = resources["CaptionQueueAgeAlarm"]["Properties"]
    dead = resources["CaptionDeadLetterAlarm"]["Properties"]
    assert (age["Namespace"], age["MetricName"], age["Statistic"]) == (
        "AWS/SQS",
        "ApproximateAgeOfOldestMessage",
        "Maximum",
    )
    assert age["Dimensions"] == [{"Name": "QueueName", "Value": "${CaptionQueue.QueueName}"}]
    assert age["Threshold"] == "900" and age["ComparisonOperator"] == "GreaterThanThreshold"
    assert age["TreatMissingData"] == "notBreaching"
    assert age["AlarmActions"] == dead["AlarmActions"] == ["${AlarmTopic}"]
    assert age["OKActions"] == dead["OKActions"]
    assert "captioner doctor" in age["AlarmDescription"]


def test_the_queue_age_threshold_is_bounded_by_the_queues_retention(
    template: dict[str, Any],
) -> None:
    """Beyond MessageRetentionPeriod a message is gone before it could be that old."""
    spec = template["Parameters"]["QueueAgeAlarmSeconds"]
    retention = template["Resources"]["CaptionQueue"]["Properties"]["MessageRetentionPeriod"]
    assert spec["Type"] == "Number" and spec["MinValue"] == 60
    assert spec["MaxValue"] == retention
    assert spec["Default"] < retention


# ------------------------------------------------------------------ documentation


def test_every_template_parameter_is_in_the_readmes_configuration_table(
    template: dict[str, Any],
) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Configuration", 1)[1].split("Function environment", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    missing = [
        name for name in template["Parameters"] if not any(f"`{name}`" in row for row in rows)
    ]
    assert not missing, f"README's parameter table lacks {missing}"
