"""Caption providers, chosen by name (``CAPTION_PROVIDER``).

Each provider module is imported only when chosen, so a ModelsLab deployment never pays
the cold-start cost of loading onnxruntime and numpy, and vice versa.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from captioner.errors import ConfigError
from captioner.providers.base import CaptionProvider

if TYPE_CHECKING:  # config imports providers.base; avoid the import cycle at run time
    from captioner.config import Config


def _modelslab(config: Config) -> CaptionProvider:
    from captioner.apikey import api_key_source
    from captioner.providers.modelslab import ModelsLabProvider

    return ModelsLabProvider(
        config.modelslab_api_url,
        api_key_source(config),
        timeout=config.modelslab_timeout,
        price_usd=config.modelslab_price_usd,
    )


def _local(config: Config) -> CaptionProvider:
    from captioner.providers.local import LocalProvider

    return LocalProvider()


def _openai(config: Config) -> CaptionProvider:
    from captioner.apikey import secret_source
    from captioner.providers.openai import OpenAIProvider

    return OpenAIProvider(
        config.openai_base_url,
        secret_source(config.openai_api_key_secret, config.openai_api_key),
        config.openai_model,
        image_transport=config.openai_image_transport,
        timeout=config.openai_timeout,
        price_usd=config.openai_price_usd,
    )


def _bedrock(config: Config) -> CaptionProvider:
    from captioner.providers.bedrock import BedrockProvider

    return BedrockProvider(config.bedrock_model_id, price_usd=config.bedrock_price_usd)


PROVIDERS: dict[str, Callable[[Config], CaptionProvider]] = {
    "modelslab": _modelslab,
    "local": _local,
    "openai": _openai,
    "bedrock": _bedrock,
}


def make_provider(config: Config) -> CaptionProvider:
    try:
        factory = PROVIDERS[config.provider]
    except KeyError:
        known = ", ".join(sorted(PROVIDERS))
        raise ConfigError(
            f"CAPTION_PROVIDER must be one of {known}, not {config.provider!r}"
        ) from None
    return factory(config)
