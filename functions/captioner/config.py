"""Configuration, read once from the environment into a typed, validated object."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from captioner.errors import ConfigError
from captioner.providers.base import LENGTHS, Length

DEFAULT_MODELSLAB_API_URL = "https://modelslab.com/api/v6"


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
    # Provider slots of one instance for a remote provider (limits.py): the template makes
    # ProviderConcurrency instances of 1 slot each. A provider that runs in the function
    # (local) uses the instance's vCPUs instead.
    provider_slots: int = 1
    # Daily spend cap in US dollars (budget.py); 0 = no cap (spend is still counted).
    daily_budget_usd: float = 0.0
    # The caption queue: waits re-send their message there (requeue.py), and the budget
    # sweep re-queues parked rows. None: waits count as failed deliveries, no sweep.
    queue_url: str | None = None

    def __repr__(self) -> str:  # keep the key out of any log line that prints the config
        key = "***" if self.modelslab_api_key else None
        fields = {**self.__dict__, "modelslab_api_key": key}
        return "Config(" + ", ".join(f"{k}={v!r}" for k, v in fields.items()) + ")"

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
        cfg = cls(
            captions_table=table,
            provider=env.get("CAPTION_PROVIDER", "modelslab").strip().lower() or "modelslab",
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
            provider_slots=_int(env, "CAPTION_PROVIDER_SLOTS", 1, low=1, high=64),
            daily_budget_usd=_float(
                env, "CAPTION_DAILY_BUDGET_USD", 0.0, low=0.0, high=1_000_000.0
            ),
            queue_url=env.get("CAPTION_QUEUE_URL", "").strip() or None,
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


def _tag_key(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name, default).strip() or default
    if len(value) > 128:
        raise ConfigError(f"{name} must be at most 128 characters (an S3 tag key)")
    return value
