"""Where the ModelsLab API key comes from: Secrets Manager in AWS, the environment locally."""

from __future__ import annotations

import json
from collections.abc import Callable

from captioner.config import Config
from captioner.errors import ProviderConfigError

SECRET_MAX_AGE = 300  # seconds; a rotated key is picked up within five minutes


def api_key_source(config: Config) -> Callable[[], str | None]:
    """A callable returning the key. The secret, when configured, wins over the variable;
    it is fetched on first use and cached per container by Powertools Parameters."""
    secret_id = config.modelslab_api_key_secret
    if not secret_id:
        return lambda: config.modelslab_api_key

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
        for name in ("key", "api_key", "apiKey", "MODELSLAB_API_KEY", "modelslab_api_key"):
            if isinstance(doc.get(name), str):
                return doc[name].strip() or None
        return None
    return raw or None
