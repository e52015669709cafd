"""Where a provider's API key comes from: Secrets Manager in AWS, the environment locally."""

from __future__ import annotations

import json
from collections.abc import Callable

from captioner.config import Config
from captioner.errors import ProviderConfigError

SECRET_MAX_AGE = 300  # seconds; a rotated key is picked up within five minutes


def api_key_source(config: Config) -> Callable[[], str | None]:
    """The ModelsLab key (MODELSLAB_API_KEY_SECRET, else MODELSLAB_API_KEY)."""
    return secret_source(config.modelslab_api_key_secret, config.modelslab_api_key)


def secret_source(secret_id: str | None, value: str | None) -> Callable[[], str | None]:
    """A callable returning the key. The secret, when configured, wins over the variable's
    ``value``; it is fetched on first use and cached per container by Powertools Parameters."""
    if not secret_id:
        return lambda: value

    def from_secret() -> str | None:
        from aws_lambda_powertools.utilities import parameters

        try:
            raw = parameters.get_secret(secret_id, max_age=SECRET_MAX_AGE)
        except parameters.exceptions.GetParameterError as exc:
            # The message names the secret id, never its value.
            raise ProviderConfigError(f"cannot read secret {secret_id}: {exc}") from None
        return parse_secret(raw if isinstance(raw, str) else raw.decode("utf-8"))

    return from_secret


def parse_secret(raw: str) -> str | None:
    """Accept a plain-text secret or a JSON object with the key under a usual name."""
    raw = raw.strip()
    if raw.startswith("{"):
        try:
            doc = json.loads(raw)
        except ValueError:
            return raw
        for name in ("key", "api_key", "apiKey", "MODELSLAB_API_KEY", "modelslab_api_key",
                     "OPENAI_API_KEY", "openai_api_key"):  # fmt: skip
            if isinstance(doc.get(name), str):
                return doc[name].strip() or None
        return None
    return raw or None
