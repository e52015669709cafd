"""The function's environment in the local stack, and the provider it captions with.

Lambda hands a function its configuration as environment variables, and the handler reads
them (``Config.from_env``) on its first invocation. The local stack runs that same handler in
this process: it computes the same variables, as the template declares them, and builds the
function's app from them (``Config.from_env(variables)``). Only Powertools' own variables are
set in the process (``EnvironmentPatch``), since Powertools reads them there; the shell's
values come back when the stack stops.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from captioner.providers import PROVIDERS as PROVIDER_FACTORIES
from captioner_tools.endpoints import is_loopback
from captioner_tools.errors import LocalStackError
from captioner_tools.local.defaults import DUMMY_CREDENTIALS, REGION

PROVIDERS = tuple(sorted(PROVIDER_FACTORIES))  # the names CAPTION_PROVIDER accepts
# Variables that would send the handler's AWS calls somewhere other than the local stack.
FOREIGN_AWS_VARIABLES = (
    "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
    "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_SQS", "AWS_ENDPOINT_URL_DYNAMODB",
    "AWS_ENDPOINT_URL_SECRETS_MANAGER", "AWS_ENDPOINT_URL_STS",
)  # fmt: skip
# Shell variables the local stack overrides, named in the banner when they are set.
IGNORED_VARIABLES = ("MODELSLAB_API_KEY_SECRET", "OPENAI_API_KEY_SECRET", "AWS_PROFILE")


@dataclass(frozen=True)
class ProviderChoice:
    name: str
    why: str


def choose_provider(explicit: str | None, env: Mapping[str, str]) -> ProviderChoice:
    """A flag wins, then CAPTION_PROVIDER; otherwise ModelsLab when a key is configured and
    the offline model when not."""
    if explicit:
        return ProviderChoice(_provider_name(explicit), "chosen with --provider")
    if env.get("CAPTION_PROVIDER", "").strip():
        return ProviderChoice(_provider_name(env["CAPTION_PROVIDER"]), "from CAPTION_PROVIDER")
    if env.get("MODELSLAB_API_KEY", "").strip():
        return ProviderChoice("modelslab", "MODELSLAB_API_KEY is set")
    return ProviderChoice("local", "no MODELSLAB_API_KEY: offline model, no network")


def _provider_name(name: str) -> str:
    name = name.strip().lower()
    if name not in PROVIDERS:
        raise LocalStackError(f"provider must be one of {', '.join(PROVIDERS)}, not {name!r}")
    return name


@dataclass(frozen=True)
class StackFacts:
    """What the stack decides for the function, whatever the shell says."""

    endpoint_url: str
    table: str
    provider: str
    max_receive_count: int
    log_level: str | None = None


def handler_environment(
    declared: Mapping[str, str],
    shell: Mapping[str, str],
    overrides: Mapping[str, str],
    facts: StackFacts,
) -> dict[str, str | None]:
    """The function's variables as Lambda would set them from the template (``declared``),
    with the shell's own values winning (like ``sam local --env-vars``), then ``overrides``,
    except for what the stack decides itself: where AWS is, the table, the provider and the
    receive count. None means "unset"."""
    env: dict[str, str | None] = {k: v for k, v in declared.items() if k not in shell and v}
    env.update(overrides)
    env.update(
        {
            **dict.fromkeys(FOREIGN_AWS_VARIABLES),
            **DUMMY_CREDENTIALS,
            "AWS_ENDPOINT_URL": facts.endpoint_url,
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "CAPTIONS_TABLE": facts.table,
            "CAPTION_PROVIDER": facts.provider,
            "CAPTION_MAX_RECEIVE_COUNT": str(facts.max_receive_count),
            # The key comes from MODELSLAB_API_KEY locally; a secret ARN would be looked up
            # in moto's (empty) Secrets Manager and fail.
            "MODELSLAB_API_KEY_SECRET": None,
            "OPENAI_API_KEY_SECRET": None,  # likewise: OPENAI_API_KEY locally
            "POWERTOOLS_TRACE_DISABLED": "true",  # no X-Ray daemon here
            "POWERTOOLS_METRICS_DISABLED": "true",  # no CloudWatch to read EMF lines
        }
    )
    if facts.log_level:
        env["POWERTOOLS_LOG_LEVEL"] = facts.log_level.upper()
    api_url = env.get("MODELSLAB_API_URL") or shell.get("MODELSLAB_API_URL")
    if facts.provider == "modelslab" and not is_loopback(api_url):
        # The real ModelsLab cannot fetch presigned URLs on 127.0.0.1: upload the bytes.
        env["CAPTION_IMAGE_TRANSPORT"] = "upload"
    return env


class EnvironmentPatch:
    """Set variables in os.environ (None = unset) and put the old values back later."""

    def __init__(self) -> None:
        self._saved: dict[str, str | None] = {}
        self.active = False

    def apply(self, values: Mapping[str, str | None]) -> None:
        for name, value in values.items():
            self._saved.setdefault(name, os.environ.get(name))
            _set(name, value)
        self.active = True

    def restore(self) -> None:
        for name, value in self._saved.items():
            _set(name, value)
        self._saved.clear()
        self.active = False


def _set(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
