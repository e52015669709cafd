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


def test_fallback_providers_keep_their_order_without_the_primary_or_repeats():
    cfg = Config.from_env(
        {"CAPTIONS_TABLE": "t", "CAPTION_FALLBACK_PROVIDERS": " OpenAI, modelslab,local,openai,"}
    )
    assert cfg.fallback_providers == ("openai", "local")
    assert Config.from_env({"CAPTIONS_TABLE": "t"}).fallback_providers == ()


def test_an_unknown_fallback_provider_is_a_config_error():
    with pytest.raises(ConfigError, match="CAPTION_FALLBACK_PROVIDERS must be one of"):
        Config.from_env({"CAPTIONS_TABLE": "t", "CAPTION_FALLBACK_PROVIDERS": "local,magic"})


def test_events_go_to_the_default_bus_unless_turned_off():
    assert Config.from_env({"CAPTIONS_TABLE": "t"}).event_bus == "default"
    assert Config.from_env({"CAPTIONS_TABLE": "t", "CAPTION_EVENT_BUS": ""}).event_bus == ""


def test_each_provider_has_its_own_configurable_price():
    cfg = Config.from_env({"CAPTIONS_TABLE": "t", "OPENAI_PRICE_USD": "0.002"})
    assert cfg.price_usd("modelslab") == 0.0047 and cfg.price_usd("local") == 0.0
    assert cfg.price_usd("openai") == 0.002 and cfg.price_usd("bedrock") == 0.0002


def test_repr_never_shows_the_openai_key():
    cfg = Config.from_env({"CAPTIONS_TABLE": "t", "OPENAI_API_KEY": "sk-openai-secret"})
    assert "sk-openai-secret" not in repr(cfg)


def test_openai_image_transport_is_url_or_base64():
    with pytest.raises(ConfigError, match="OPENAI_IMAGE_TRANSPORT must be one of url, base64"):
        Config.from_env({"CAPTIONS_TABLE": "t", "OPENAI_IMAGE_TRANSPORT": "upload"})
