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
        config.modelslab_api_url, api_key_source(config), timeout=config.modelslab_timeout
    )


def _local(config: Config) -> CaptionProvider:
    from captioner.providers.local import LocalProvider

    return LocalProvider()


PROVIDERS: dict[str, Callable[[Config], CaptionProvider]] = {
    "modelslab": _modelslab,
    "local": _local,
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
