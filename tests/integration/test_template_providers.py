"""template.yaml for issue 13: events, the openai and bedrock providers, fallback providers —
their parameters, the function's environment, and least-privilege IAM for each parameter set
(stacks resolved with tests/template_eval.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cfnlint.decode import cfn_yaml

from captioner.config import Config
from tests.template_eval import Resolver, identity_statements

TEMPLATE = Path(__file__).resolve().parents[2] / "template.yaml"
ACCOUNT, REGION = "123456789012", "us-east-1"
ML_SECRET = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:captioner/modelslab-AbCdEf"
OPENAI_SECRET = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:captioner/openai-AbCdEf"


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return cfn_yaml.load(str(TEMPLATE))


def stack(template: dict[str, Any], **params: str) -> dict[str, Any]:
    return Resolver(template, {"ModelsLabApiKeySecret": ML_SECRET, **params}).resources()


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def statements(resources: dict[str, Any], prefix: str) -> list[dict[str, Any]]:
    return [
        st
        for owner, st in identity_statements(resources)
        if owner == "CaptionFunctionRole"
        and any(a.startswith(prefix) for a in as_list(st["Action"]))
    ]


def environment(resources: dict[str, Any]) -> dict[str, str]:
    return resources["CaptionFunction"]["Properties"]["Environment"]["Variables"]


def test_the_new_parameters_and_their_defaults_match_the_functions(template):
    params = template["Parameters"]
    defaults = Config(captions_table="t")
    assert params["EventBusName"]["Default"] == defaults.event_bus == "default"
    assert params["FallbackProviders"]["Type"] == "CommaDelimitedList"
    assert params["FallbackProviders"]["Default"] == ""
    assert params["OpenAIBaseUrl"]["Default"] == defaults.openai_base_url
    assert params["OpenAIModel"]["Default"] == defaults.openai_model
    assert params["OpenAIImageTransport"]["AllowedValues"] == ["url", "base64"]
    assert params["OpenAIImageTransport"]["Default"] == defaults.openai_image_transport
    assert params["BedrockModelId"]["Default"] == defaults.bedrock_model_id
    assert float(params["OpenAIPriceUsd"]["Default"]) == defaults.openai_price_usd
    assert float(params["BedrockPriceUsd"]["Default"]) == defaults.bedrock_price_usd
    assert params["OpenAIApiKeySecret"]["Default"] == ""


def test_the_function_gets_every_setting(template):
    env = environment(stack(template, FallbackProviders="openai,local", EventBusName="captions"))
    assert env["CAPTION_FALLBACK_PROVIDERS"] == "openai,local"
    assert env["CAPTION_EVENT_BUS"] == "captions"
    assert env["OPENAI_BASE_URL"] == "https://api.openai.com/v1"
    assert env["OPENAI_MODEL"] == "gpt-4o-mini" and env["OPENAI_IMAGE_TRANSPORT"] == "url"
    assert env["OPENAI_API_KEY_SECRET"] == ""
    assert env["BEDROCK_MODEL_ID"] == "amazon.nova-lite-v1:0"
    assert env["OPENAI_PRICE_USD"] == "0.0005" and env["BEDROCK_PRICE_USD"] == "0.0002"
    # the upload bucket's name is known only once deployed: the evaluator leaves its Ref
    assert env["CAPTION_BUCKETS"] == "${UploadBucket},"
    env["CAPTION_BUCKETS"] = "captioner-uploads-123,"
    config = Config.from_env({**{k: str(v) for k, v in env.items()}, "CAPTIONS_TABLE": "t"})
    assert config.fallback_providers == ("openai", "local")
    assert config.served_buckets == ("captioner-uploads-123",)
    assert environment(stack(template))["CAPTION_FALLBACK_PROVIDERS"] == ""


def test_the_function_serves_the_upload_bucket_and_the_existing_ones_only(template):
    env = environment(stack(template, ExistingBucketNames="photos-archive,team.assets"))
    assert env["CAPTION_BUCKETS"] == "${UploadBucket},photos-archive,team.assets"


def test_events_may_be_put_on_the_one_bus_only(template):
    (put,) = statements(stack(template), "events:")
    assert as_list(put["Action"]) == ["events:PutEvents"]
    assert as_list(put["Resource"]) == [f"arn:aws:events:{REGION}:{ACCOUNT}:event-bus/default"]
    (put,) = statements(stack(template, EventBusName="captions"), "events:")
    assert as_list(put["Resource"]) == [f"arn:aws:events:{REGION}:{ACCOUNT}:event-bus/captions"]


def test_no_event_bus_means_no_events_permission(template):
    resources = stack(template, EventBusName="")
    assert statements(resources, "events:") == []
    assert environment(resources)["CAPTION_EVENT_BUS"] == ""


@pytest.mark.parametrize(
    ("params", "allowed"),
    [
        ({}, False),
        ({"CaptionProvider": "bedrock"}, True),
        ({"FallbackProviders": "openai,bedrock"}, True),
        ({"FallbackProviders": "bedrock"}, True),
        ({"FallbackProviders": "openai,local"}, False),
        ({"CaptionProvider": "local", "FallbackProviders": "local"}, False),
    ],
)
def test_bedrock_may_invoke_the_one_model_only_when_used(template, params, allowed):
    granted = statements(
        stack(template, BedrockModelId="amazon.nova-pro-v1:0", **params), "bedrock:"
    )
    if not allowed:
        assert granted == []
        return
    (invoke,) = granted
    assert as_list(invoke["Action"]) == ["bedrock:InvokeModel"]
    assert as_list(invoke["Resource"]) == [
        f"arn:aws:bedrock:{REGION}::foundation-model/amazon.nova-pro-v1:0"
    ]


def test_the_openai_key_secret_is_readable_only_when_given(template):
    assert len(statements(stack(template), "secretsmanager:")) == 1  # ModelsLab's
    granted = statements(stack(template, OpenAIApiKeySecret=OPENAI_SECRET), "secretsmanager:")
    resources = sorted(r for st in granted for r in as_list(st["Resource"]))
    assert resources == sorted([ML_SECRET, OPENAI_SECRET])
    assert all(as_list(st["Action"]) == ["secretsmanager:GetSecretValue"] for st in granted)


def test_rules_refuse_unknown_fallbacks_and_modelslab_without_its_key(template):
    rules = template["Rules"]
    known = rules["FallbackProvidersAreKnown"]["Assertions"][0]["Assert"]
    assert known == {
        "Fn::EachMemberIn": [
            {"Ref": "FallbackProviders"},
            ["modelslab", "local", "openai", "bedrock", ""],
        ]
    }
    needs_key = rules["ModelsLabFallbackNeedsApiKeySecret"]
    assert needs_key["RuleCondition"] == {
        "Fn::Contains": [{"Ref": "FallbackProviders"}, "modelslab"]
    }


def test_no_wildcards_with_every_provider_and_fallback(template):
    resources = stack(
        template,
        CaptionProvider="openai",
        FallbackProviders="bedrock,modelslab,local",
        OpenAIApiKeySecret=OPENAI_SECRET,
        EventBusName="captions",
    )
    for owner, st in identity_statements(resources):
        actions = as_list(st["Action"])
        if any(a.split(":")[0] in ("bedrock", "events", "secretsmanager") for a in actions):
            assert all("*" not in r for r in as_list(st["Resource"])), (owner, st)
