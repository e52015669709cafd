"""Configuration: every environment variable the function reads, declared once.

Each ``Config`` field carries its ``Setting``: the variable's name, its default (whose type
is the setting's type), its bounds and what it means. ``Config.from_env`` reads and validates
them all at start-up, so a malformed variable fails the first invocation with its name, never
in the middle of a record. The README's "Function environment" table and the template's
defaults are checked against these declarations (tests/unit/test_config_declared.py).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from captioner.errors import ConfigError
from captioner.providers import PROVIDERS
from captioner.providers.base import LENGTHS, Length

Value = str | int | float | tuple[str, ...]


@dataclass(frozen=True)
class Setting:
    """One environment variable: name, default (its type is the setting's type), bounds.

    An unset or blank variable takes the default; ``required`` ones have none. Text is
    stripped, and lower-cased when ``choices`` are given (the choices are lower case)."""

    env: str
    meaning: str
    default: Value | None = None
    required: bool = False
    low: int | float | None = None
    high: int | float | None = None
    choices: tuple[str, ...] = ()
    max_length: int | None = None
    secret: bool = False  # never shown by ``repr``
    trailing_slash: bool = True  # False: a trailing "/" is dropped (a base URL)
    blank_is_empty: bool = False  # a variable set to "" means "" (off), not the default
    # a regular expression each value must match in full, and what it means in words
    pattern: tuple[str, str] | None = None

    @property
    def kind(self) -> type[Value]:
        """The setting's type: its default's, or text."""
        return type(self.default) if self.default is not None else str

    def read(self, env: Mapping[str, str]) -> Value | None:
        raw = env.get(self.env, "").strip()
        if raw:
            return self.parse(raw)
        if self.blank_is_empty and self.env in env:
            return ""
        if self.required:
            raise ConfigError(f"{self.env} is not set: {self.meaning}")
        return self.default

    def parse(self, raw: str) -> Value:
        """The value of a non-blank ``raw``, or ConfigError naming the variable."""
        if self.kind is int:
            return self._in_bounds(self._number(raw, int, "an integer"))
        if self.kind is float:
            return self._in_bounds(self._number(raw, float, "a number"))
        if self.kind is tuple:  # a comma-separated list of choices
            return tuple(self._text(part.strip()) for part in raw.split(",") if part.strip())
        return self._text(raw)

    def _number(self, raw: str, kind: type[int] | type[float], what: str) -> int | float:
        try:
            return kind(raw)
        except ValueError:
            raise ConfigError(f"{self.env} must be {what}, not {raw!r}") from None

    def _in_bounds(self, value: int | float) -> int | float:
        low, high = self.low, self.high
        if (low is not None and value < low) or (high is not None and value > high):
            raise ConfigError(f"{self.env} must be {self.bounds}, not {value}")
        return value

    def _text(self, value: str) -> str:
        if self.choices:
            value = value.lower()
            if value not in self.choices:
                raise ConfigError(
                    f"{self.env} must be one of {', '.join(self.choices)}, not {value!r}"
                )
        if self.max_length is not None and len(value) > self.max_length:
            raise ConfigError(f"{self.env} must be at most {self.max_length} characters")
        if self.pattern is not None and not re.fullmatch(self.pattern[0], value):
            raise ConfigError(f"{self.env} must be {self.pattern[1]}, not {value!r}")
        return value if self.trailing_slash else value.rstrip("/")

    @property
    def bounds(self) -> str:
        """What values are allowed, in words ("" when any value of the type is)."""
        low = f"{self.low:g}" if self.low is not None else None
        high = f"{self.high:g}" if self.high is not None else None
        if low and high:
            return f"between {low} and {high}"
        if low:
            return f"at least {low}"
        if high:
            return f"at most {high}"
        if self.choices:
            return "one of " + ", ".join(self.choices)
        if self.max_length is not None:
            return f"at most {self.max_length} characters"
        if self.pattern is not None:
            return self.pattern[1]
        return ""


def setting(spec: Setting) -> Any:
    """A ``Config`` field declared by its ``Setting`` (typed Any: the field's annotation is
    its type for readers and the type checker)."""
    metadata = {"setting": spec}
    if spec.required:
        return field(metadata=metadata)
    return field(default=spec.default, metadata=metadata)


@dataclass(frozen=True, kw_only=True)
class Config:
    captions_table: str = setting(Setting(
        "CAPTIONS_TABLE", "the captions table's name", required=True,
    ))  # fmt: skip
    provider: str = setting(Setting(
        "CAPTION_PROVIDER", "the caption provider", default="modelslab",
        choices=tuple(sorted(PROVIDERS)),
    ))  # fmt: skip
    modelslab_api_url: str = setting(Setting(
        "MODELSLAB_API_URL", "ModelsLab's API base URL (tests point it at a local fake)",
        default="https://modelslab.com/api/v6", trailing_slash=False,
    ))  # fmt: skip
    modelslab_api_key_secret: str | None = setting(Setting(
        "MODELSLAB_API_KEY_SECRET",
        "Secrets Manager id of the ModelsLab key; read once per container (cached 5 min); "
        "wins over `MODELSLAB_API_KEY`",
    ))  # fmt: skip
    modelslab_api_key: str | None = setting(Setting(
        "MODELSLAB_API_KEY", "the ModelsLab key itself, for local runs only", secret=True,
    ))  # fmt: skip
    modelslab_timeout: float = setting(Setting(
        "MODELSLAB_TIMEOUT", "seconds per HTTP request to ModelsLab",
        default=30.0, low=1.0, high=300.0,
    ))  # fmt: skip
    skip_tag: str = setting(Setting(
        "CAPTION_SKIP_TAG", "opt-out tag key: objects tagged `<key>=true` are not captioned",
        default="caption-skip", max_length=128,
    ))  # fmt: skip
    tag_key: str = setting(Setting(
        "CAPTION_TAG_KEY", "the tag key the caption is written to",
        default="caption", max_length=128,
    ))  # fmt: skip
    length: Length = setting(Setting(
        "CAPTION_LENGTH", "caption length", default="normal", choices=LENGTHS,
    ))  # fmt: skip
    max_image_bytes: int = setting(Setting(
        "CAPTION_MAX_IMAGE_BYTES", "larger objects are `REJECTED`",
        default=20 * 1024 * 1024, low=1,
    ))  # fmt: skip
    max_image_pixels: int = setting(Setting(
        "CAPTION_MAX_PIXELS", "larger images are `REJECTED` (decompression bombs)",
        default=40_000_000, low=1,
    ))  # fmt: skip
    header_bytes: int = setting(Setting(
        "CAPTION_HEADER_BYTES", "the first ranged read of an object, for its image header",
        default=64 * 1024, low=1024,
    ))  # fmt: skip
    max_header_bytes: int = setting(Setting(
        "CAPTION_MAX_HEADER_BYTES",
        "the one longer read for long headers (big ICC profiles, WebP); "
        "at least `CAPTION_HEADER_BYTES`",
        default=1024 * 1024, low=1024,
    ))  # fmt: skip
    url_expires: int = setting(Setting(
        "CAPTION_URL_EXPIRES", "presigned URL lifetime, seconds",
        default=900, low=60, high=3600,
    ))  # fmt: skip
    batch_concurrency: int = setting(Setting(
        "CAPTION_BATCH_CONCURRENCY",
        "records of a batch in progress at once: those holding a provider slot at the "
        "provider, the others doing their AWS work before or after their call (so a record is "
        "ready when a slot comes free)",
        default=6, low=1, high=64,
    ))  # fmt: skip
    max_receive_count: int = setting(Setting(
        "CAPTION_MAX_RECEIVE_COUNT",
        "the queue's maxReceiveCount: on the last delivery a failing row turns `FAILED`",
        default=5, low=1, high=1000,
    ))  # fmt: skip
    image_transport: str = setting(Setting(
        "CAPTION_IMAGE_TRANSPORT",
        "how the provider gets the pixels: `url`, a presigned GET of the version (the bytes "
        "never pass through the function); `upload`, the function uploads them (set by the "
        "local stack for the real ModelsLab, which cannot reach 127.0.0.1)",
        default="url", choices=("url", "upload"),
    ))  # fmt: skip
    # -- provider limits and the daily budget (issue 11) ---------------------------------
    provider_slots: int = setting(Setting(
        "CAPTION_PROVIDER_SLOTS",
        "provider requests one instance may have in flight at once, each also holding a lease "
        "when `CAPTION_PROVIDER_CONCURRENCY` is set (the template sets 6; without leases the "
        "default stays under ModelsLab's smallest plan); the `local` provider uses the "
        "instance's vCPUs instead",
        default=3, low=1, high=64,
    ))  # fmt: skip
    provider_concurrency: int = setting(Setting(
        "CAPTION_PROVIDER_CONCURRENCY",
        "most requests in flight at a remote provider across the whole deployment, kept by "
        "leases in the captions table (the template: `ProviderConcurrency`); `0` = no shared "
        "limit, only each instance's `CAPTION_PROVIDER_SLOTS`",
        default=0, low=0, high=1000,
    ))  # fmt: skip
    daily_budget_usd: float = setting(Setting(
        "CAPTION_DAILY_BUDGET_USD",
        "daily spend cap in US dollars (UTC days); `0` = no cap (spend is still counted)",
        default=20.0, low=0.0, high=100_000.0,
    ))  # fmt: skip
    queue_url: str | None = setting(Setting(
        "CAPTION_QUEUE_URL",
        "the caption queue: waits re-send their message there and the budget sweep re-queues "
        "parked rows; unset, a wait is an ordinary failed delivery and there is no sweep",
    ))  # fmt: skip
    # -- events, more providers, fallback (issue 13) --------------------------------------
    event_bus: str = setting(Setting(
        "CAPTION_EVENT_BUS",
        "the EventBridge bus `Caption Status Changed` events go to; empty turns them off",
        default="default", blank_is_empty=True,
    ))  # fmt: skip
    served_buckets: tuple[str, ...] = setting(Setting(
        "CAPTION_BUCKETS",
        "the buckets this deployment captions, comma-separated (the template sets "
        "`UploadBucket` and `ExistingBucketNames`): an event or a message naming another "
        "bucket is consumed as `IGNORED` with the reason, and makes no row; empty = any bucket",
        default=(), pattern=(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", "S3 bucket names"),
    ))  # fmt: skip
    fallback_providers: tuple[str, ...] = setting(Setting(
        "CAPTION_FALLBACK_PROVIDERS",
        "providers tried in order when the primary cannot caption for a reason that is not "
        "the image's fault (comma-separated; the primary and repeats are dropped)",
        default=(), choices=tuple(sorted(PROVIDERS)),
    ))  # fmt: skip
    breaker_failures: int = setting(Setting(
        "CAPTION_BREAKER_FAILURES", "failed calls in a row that open a provider's circuit",
        default=5, low=1, high=100,
    ))  # fmt: skip
    breaker_cooldown_s: float = setting(Setting(
        "CAPTION_BREAKER_COOLDOWN_S", "seconds an open circuit skips its provider",
        default=30.0, low=1.0, high=3600.0,
    ))  # fmt: skip
    openai_base_url: str = setting(Setting(
        "OPENAI_BASE_URL", "an OpenAI-compatible API's base URL (OpenAI, vLLM, Ollama, ...)",
        default="https://api.openai.com/v1", trailing_slash=False,
    ))  # fmt: skip
    openai_api_key_secret: str | None = setting(Setting(
        "OPENAI_API_KEY_SECRET",
        "Secrets Manager id of the OpenAI-compatible key; wins over `OPENAI_API_KEY`",
    ))  # fmt: skip
    openai_api_key: str | None = setting(Setting(
        "OPENAI_API_KEY", "the OpenAI-compatible key itself, for local runs only", secret=True,
    ))  # fmt: skip
    openai_model: str = setting(Setting(
        "OPENAI_MODEL", "the vision model the `openai` provider asks", default="gpt-4o-mini",
    ))  # fmt: skip
    openai_image_transport: str = setting(Setting(
        "OPENAI_IMAGE_TRANSPORT",
        "`url`: a presigned GET of the version; `base64`: the bytes as a data URL (for "
        "servers that cannot reach S3)",
        default="url", choices=("url", "base64"),
    ))  # fmt: skip
    openai_timeout: float = setting(Setting(
        "OPENAI_TIMEOUT", "seconds per HTTP request to the OpenAI-compatible API",
        default=30.0, low=1.0, high=300.0,
    ))  # fmt: skip
    bedrock_model_id: str = setting(Setting(
        "BEDROCK_MODEL_ID", "the Bedrock model the `bedrock` provider asks (Converse)",
        default="amazon.nova-lite-v1:0",
    ))  # fmt: skip
    modelslab_price_usd: float = setting(Setting(
        "MODELSLAB_PRICE_USD", "what one ModelsLab caption costs, USD (spend figures)",
        default=0.0047, low=0.0, high=10.0,
    ))  # fmt: skip
    openai_price_usd: float = setting(Setting(
        "OPENAI_PRICE_USD", "what one `openai` caption costs, USD (spend figures)",
        default=0.0005, low=0.0, high=10.0,
    ))  # fmt: skip
    bedrock_price_usd: float = setting(Setting(
        "BEDROCK_PRICE_USD", "what one `bedrock` caption costs, USD (spend figures)",
        default=0.0002, low=0.0, high=10.0,
    ))  # fmt: skip

    def __post_init__(self) -> None:
        if self.max_header_bytes < self.header_bytes:
            raise ConfigError("CAPTION_MAX_HEADER_BYTES must be at least CAPTION_HEADER_BYTES")
        # a provider that just failed is not asked again for the same record
        chain = tuple(dict.fromkeys(p for p in self.fallback_providers if p != self.provider))
        object.__setattr__(self, "fallback_providers", chain)

    def __repr__(self) -> str:  # keep secrets out of any log line that prints the config
        shown = []
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None and SETTINGS_BY_FIELD[f.name].secret:
                value = "***"
            shown.append(f"{f.name}={value!r}")
        return "Config(" + ", ".join(shown) + ")"

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
        """Every setting read from ``env`` (default: the process environment) and validated."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {n: s.read(env) for n, s in SETTINGS_BY_FIELD.items()}
        return cls(**values)


SETTINGS_BY_FIELD: dict[str, Setting] = {f.name: f.metadata["setting"] for f in fields(Config)}
SETTINGS: tuple[Setting, ...] = tuple(SETTINGS_BY_FIELD.values())
