import json

import boto3
import pytest
from moto import mock_aws

from captioner.apikey import api_key_source, parse_secret
from captioner.config import Config
from captioner.errors import ProviderConfigError


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ("sk-plain\n", "sk-plain"),
        (json.dumps({"key": "sk-json"}), "sk-json"),
        (json.dumps({"MODELSLAB_API_KEY": "sk-env"}), "sk-env"),
        (json.dumps({"other": 1}), None),
        ("", None),
    ],
)
def test_parse_secret_accepts_plain_text_or_json(raw, key):
    assert parse_secret(raw) == key


def test_environment_key_is_used_when_no_secret_is_configured():
    source = api_key_source(
        Config.from_env({"CAPTIONS_TABLE": "t", "MODELSLAB_API_KEY": "sk-local"})
    )
    assert source() == "sk-local"


def test_secret_wins_over_the_environment_and_is_cached(aws_env):
    with mock_aws():
        sm = boto3.client("secretsmanager", region_name="us-east-1")
        arn = sm.create_secret(
            Name="modelslab", SecretString=json.dumps({"key": "sk-from-secret"})
        )["ARN"]
        cfg = Config.from_env(
            {"CAPTIONS_TABLE": "t", "MODELSLAB_API_KEY": "sk-env", "MODELSLAB_API_KEY_SECRET": arn}
        )
        source = api_key_source(cfg)
        assert source() == "sk-from-secret"
        sm.put_secret_value(SecretId=arn, SecretString="sk-rotated")
        assert source() == "sk-from-secret"  # cached for the container (max_age)


def test_missing_secret_is_a_configuration_error_without_the_value(aws_env):
    with mock_aws():
        cfg = Config.from_env({"CAPTIONS_TABLE": "t", "MODELSLAB_API_KEY_SECRET": "does-not-exist"})
        with pytest.raises(ProviderConfigError, match="cannot read secret does-not-exist"):
            api_key_source(cfg)()
