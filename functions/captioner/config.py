"""Configuration, read once from the environment into a typed, validated object."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from captioner.errors import ConfigError
from captioner.providers.base import LENGTHS, Length

DEFAULT_MODELSLAB_API_URL = "https://modelslab.com/api/v6"
DEFAULT_OPENAI_BASE_URL = "https://api.openai.com/v1"
DEFAULT_OPENAI_MODEL = "gpt-4o-mini"
DEFAULT_BEDROCK_MODEL_ID = "amazon.nova-lite-v1:0"
# Every provider name CAPTION_PROVIDER and CAPTION_FALLBACK_PROVIDERS accept (the registry in
# providers/__init__.py makes them).
PROVIDER_NAMES = ("modelslab", "local", "openai", "bedrock")


@dataclass(frozen=True)
class Config:
    captions_table: str
    provider: str = "modelslab"
    modelslab_api_url: str = DEFAULT_MODELSLAB_API_URL
    # Secrets Manager id of the API key; wins over ``modelslab_api_key`` when both are set.
    modelslab_api_key_secret: str | None = None
    # The key itself, for local runs only. Never logged (repr=False).
    modelslab_api_key: str | None = None
    modelslab_timeout: float = 30.0
    skip_tag: str = "caption-skip"
    tag_key: str = "caption"
    length: Length = "normal"
    max_image_bytes: int = 20 * 1024 * 1024
    max_image_pixels: int = 40_000_000
    header_bytes: int = 64 * 1024
    max_header_bytes: int = 1024 * 1024
    url_expires: int = 900
    batch_concurrency: int = 4
    max_receive_count: int = 5
    # How the provider gets the pixels: "url" (a presigned GET of the version; the bytes never
    # pass through the function) or "upload" (the function reads them and uploads them, for
    # the local stack, whose presigned URLs on 127.0.0.1 are out of ModelsLab's reach).
    image_transport: str = "url"
    # -- issue 13: events, more providers, fallback --------------------------------------
    # The EventBridge bus "Caption Status Changed" events go to; "" turns them off.
    event_bus: str = "default"
    # Providers tried in order when the primary cannot caption for a reason that is not the
    # image's fault (never the primary itself, never twice).
    fallback_providers: tuple[str, ...] = ()
    breaker_failures: int = 5  # failed calls in a row that open a provider's circuit
    breaker_cooldown_s: float = 30.0  # how long an open circuit skips the provider
    openai_base_url: str = DEFAULT_OPENAI_BASE_URL
    openai_api_key_secret: str | None = None  # Secrets Manager id; wins over the variable
    openai_api_key: str | None = None  # local runs only; never logged
    openai_model: str = DEFAULT_OPENAI_MODEL
    # "url": a presigned GET of the version; "base64": the bytes as a data URL (for servers
    # that cannot reach S3, e.g. self-hosted ones)
    openai_image_transport: str = "url"
    openai_timeout: float = 30.0
    bedrock_model_id: str = DEFAULT_BEDROCK_MODEL_ID
    # What one caption costs, for the spend figures (USD; local is free).
    modelslab_price_usd: float = 0.0047
    openai_price_usd: float = 0.0005
    bedrock_price_usd: float = 0.0002

    def __repr__(self) -> str:  # keep the keys out of any log line that prints the config
        fields = {
            **self.__dict__,
            "modelslab_api_key": "***" if self.modelslab_api_key else None,
            "openai_api_key": "***" if self.openai_api_key else None,
        }
        return "Config(" + ", ".join(f"{k}={v!r}" for k, v in fields.items()) + ")"

    def price_usd(self, provider: str) -> float:
        """What one caption by ``provider`` costs (USD), for the spend figures."""
        prices = {
            "modelslab": self.modelslab_price_usd,
            "openai": self.openai_price_usd,
            "bedrock": self.bedrock_price_usd,
        }
        return prices.get(provider, 0.0)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        env = os.environ if env is None else env
        table = env.get("CAPTIONS_TABLE", "").strip()
        if not table:
            raise ConfigError("CAPTIONS_TABLE is not set: the name of the captions table")
        length = env.get("CAPTION_LENGTH", "normal").strip().lower()
        if length not in LENGTHS:
            raise ConfigError(f"CAPTION_LENGTH must be one of {', '.join(LENGTHS)}, not {length!r}")
        url_expires = _int(env, "CAPTION_URL_EXPIRES", 900, low=60, high=3600)
        transport = env.get("CAPTION_IMAGE_TRANSPORT", "url").strip().lower() or "url"
        if transport not in ("url", "upload"):
            raise ConfigError(f"CAPTION_IMAGE_TRANSPORT must be url or upload, not {transport!r}")
        provider = env.get("CAPTION_PROVIDER", "modelslab").strip().lower() or "modelslab"
        cfg = cls(
            captions_table=table,
            provider=provider,
            modelslab_api_url=(env.get("MODELSLAB_API_URL") or DEFAULT_MODELSLAB_API_URL).rstrip(
                "/"
            ),
            modelslab_api_key_secret=env.get("MODELSLAB_API_KEY_SECRET") or None,
            modelslab_api_key=env.get("MODELSLAB_API_KEY") or None,
            modelslab_timeout=_float(env, "MODELSLAB_TIMEOUT", 30.0, low=1.0, high=300.0),
            skip_tag=_tag_key(env, "CAPTION_SKIP_TAG", "caption-skip"),
            tag_key=_tag_key(env, "CAPTION_TAG_KEY", "caption"),
            length=length,  # type: ignore[arg-type]
            max_image_bytes=_int(env, "CAPTION_MAX_IMAGE_BYTES", 20 * 1024 * 1024, low=1),
            max_image_pixels=_int(env, "CAPTION_MAX_PIXELS", 40_000_000, low=1),
            header_bytes=_int(env, "CAPTION_HEADER_BYTES", 64 * 1024, low=1024),
            max_header_bytes=_int(env, "CAPTION_MAX_HEADER_BYTES", 1024 * 1024, low=1024),
            url_expires=url_expires,
            batch_concurrency=_int(env, "CAPTION_BATCH_CONCURRENCY", 4, low=1, high=64),
            max_receive_count=_int(env, "CAPTION_MAX_RECEIVE_COUNT", 5, low=1, high=1000),
            image_transport=transport,
            event_bus=env.get("CAPTION_EVENT_BUS", "default").strip(),
            fallback_providers=_fallbacks(env, provider),
            breaker_failures=_int(env, "CAPTION_BREAKER_FAILURES", 5, low=1, high=100),
            breaker_cooldown_s=_float(
                env, "CAPTION_BREAKER_COOLDOWN_S", 30.0, low=1.0, high=3600.0
            ),
            openai_base_url=(env.get("OPENAI_BASE_URL") or DEFAULT_OPENAI_BASE_URL)
            .strip()
            .rstrip("/"),
            openai_api_key_secret=env.get("OPENAI_API_KEY_SECRET") or None,
            openai_api_key=env.get("OPENAI_API_KEY") or None,
            openai_model=(env.get("OPENAI_MODEL") or DEFAULT_OPENAI_MODEL).strip(),
            openai_image_transport=_choice(env, "OPENAI_IMAGE_TRANSPORT", "url", ("url", "base64")),
            openai_timeout=_float(env, "OPENAI_TIMEOUT", 30.0, low=1.0, high=300.0),
            bedrock_model_id=(env.get("BEDROCK_MODEL_ID") or DEFAULT_BEDROCK_MODEL_ID).strip(),
            modelslab_price_usd=_float(env, "MODELSLAB_PRICE_USD", 0.0047, low=0.0, high=10.0),
            openai_price_usd=_float(env, "OPENAI_PRICE_USD", 0.0005, low=0.0, high=10.0),
            bedrock_price_usd=_float(env, "BEDROCK_PRICE_USD", 0.0002, low=0.0, high=10.0),
        )
        if cfg.max_header_bytes < cfg.header_bytes:
            raise ConfigError("CAPTION_MAX_HEADER_BYTES must be at least CAPTION_HEADER_BYTES")
        return cfg


def _int(
    env: Mapping[str, str], name: str, default: int, *, low: int, high: int | None = None
) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, not {raw!r}") from None
    if value < low or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ConfigError(f"{name} must be {bounds}, not {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, *, low: float, high: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, not {raw!r}") from None
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high}, not {value}")
    return value


def _choice(env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env.get(name, "").strip().lower() or default
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, not {value!r}")
    return value


def _fallbacks(env: Mapping[str, str], primary: str) -> tuple[str, ...]:
    """CAPTION_FALLBACK_PROVIDERS: known names in order; the primary and repeats are dropped
    (a provider that just failed is not asked again for the same record)."""
    names: list[str] = []
    for raw in env.get("CAPTION_FALLBACK_PROVIDERS", "").split(","):
        name = raw.strip().lower()
        if not name:
            continue
        if name not in PROVIDER_NAMES:
            raise ConfigError(
                f"CAPTION_FALLBACK_PROVIDERS must name providers of {', '.join(PROVIDER_NAMES)}"
                f", not {name!r}"
            )
        if name != primary and name not in names:
            names.append(name)
    return tuple(names)


def _tag_key(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name, default).strip() or default
    if len(value) > 128:
        raise ConfigError(f"{name} must be at most 128 characters (an S3 tag key)")
    return value
