import pytest

from captioner.config import Config
from captioner.errors import ConfigError


def test_defaults():
    cfg = Config.from_env({"CAPTIONS_TABLE": "t"})
    assert cfg.provider == "modelslab" and cfg.length == "normal"
    assert cfg.skip_tag == "caption-skip" and cfg.tag_key == "caption"
    assert cfg.modelslab_api_url == "https://modelslab.com/api/v6"
    assert cfg.url_expires <= 3600


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "CAPTIONS_TABLE is not set"),
        ({"CAPTIONS_TABLE": "t", "CAPTION_LENGTH": "huge"}, "CAPTION_LENGTH must be one of"),
        ({"CAPTIONS_TABLE": "t", "CAPTION_URL_EXPIRES": "7200"}, "between 60 and 3600"),
        ({"CAPTIONS_TABLE": "t", "CAPTION_MAX_PIXELS": "lots"}, "must be an integer"),
        ({"CAPTIONS_TABLE": "t", "MODELSLAB_TIMEOUT": "0"}, "between"),
        ({"CAPTIONS_TABLE": "t", "CAPTION_TAG_KEY": "k" * 129}, "128"),
        (
            {
                "CAPTIONS_TABLE": "t",
                "CAPTION_HEADER_BYTES": "65536",
                "CAPTION_MAX_HEADER_BYTES": "2048",
            },
            "at least",
        ),
    ],
)
def test_bad_configuration_fails_loudly_with_the_variable_name(env, message):
    with pytest.raises(ConfigError, match=message):
        Config.from_env(env)


def test_repr_never_shows_the_key():
    cfg = Config.from_env({"CAPTIONS_TABLE": "t", "MODELSLAB_API_KEY": "sk-secret-value"})
    assert "sk-secret-value" not in repr(cfg) and "***" in repr(cfg)


def test_unknown_provider_is_a_config_error():
    from captioner.providers import make_provider

    with pytest.raises(ConfigError, match="CAPTION_PROVIDER must be one of"):
        make_provider(Config.from_env({"CAPTIONS_TABLE": "t", "CAPTION_PROVIDER": "magic"}))
