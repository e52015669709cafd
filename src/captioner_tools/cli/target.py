"""Which deployment a command talks to (its options: ``captioner_tools.cli.options``).

Names come from flags or their environment variables when given (``--bucket`` /
``CAPTIONER_BUCKET``, ``--table`` / ``CAPTIONS_TABLE``, ``--queue-url`` /
``CAPTIONER_QUEUE_URL``, ``--dlq-url`` / ``CAPTIONER_DLQ_URL``), otherwise from the outputs
of the CloudFormation stack (``--stack-name``, default: samconfig.toml's ``stack_name``).
``captioner local up`` registers its outputs under the stack name too, so pointing
``--endpoint-url`` (or ``AWS_ENDPOINT_URL``) at it is enough.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError

from captioner.store import CaptionReader
from captioner_tools.endpoints import is_loopback
from captioner_tools.errors import CliError
from captioner_tools.local.defaults import DUMMY_CREDENTIALS

DEFAULT_STACK_NAME = "captioner"
LOCAL_REGION = "us-east-1"

OUTPUT_KEYS = {
    "bucket": "BucketName",
    "table": "TableName",
    "queue_url": "QueueUrl",
    "dlq_url": "DeadLetterQueueUrl",
}
FLAGS = {
    "bucket": "--bucket",
    "table": "--table",
    "queue_url": "--queue-url",
    "dlq_url": "--dlq-url",
}


@dataclass(frozen=True)
class TargetOptions:
    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None
    stack_name: str | None = None
    bucket: str | None = None
    table: str | None = None
    queue_url: str | None = None
    dlq_url: str | None = None


def samconfig_stack_name(directory: Path | None = None) -> str | None:
    """``stack_name`` from samconfig.toml in the working directory, as ``sam deploy`` reads it."""
    path = (directory or Path.cwd()) / "samconfig.toml"
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return None
    env = doc.get("default", {})
    for section in ("deploy", "global"):
        name = env.get(section, {}).get("parameters", {}).get("stack_name")
        if name:
            return str(name)
    return None


@dataclass
class Deployment:
    """Lazily made boto3 clients and resource names for one deployment."""

    options: TargetOptions = field(default_factory=TargetOptions)
    _session: Any = field(default=None, repr=False)
    _clients: dict[str, Any] = field(default_factory=dict, repr=False)
    _stack: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def endpoint_url(self) -> str | None:
        url = self.options.endpoint_url or None
        if url:
            _check_endpoint(url)
        return url

    @property
    def is_local(self) -> bool:
        """An endpoint on this machine: the local stack (moto), not AWS."""
        return is_loopback(self.endpoint_url)

    @property
    def stack_name(self) -> str:
        return self.options.stack_name or samconfig_stack_name() or DEFAULT_STACK_NAME

    @property
    def session(self) -> Any:
        if self._session is None:
            self._session = self._make_session()
        return self._session

    @property
    def region(self) -> str:
        return self.session.region_name or LOCAL_REGION

    def _make_session(self) -> Any:
        session = boto3.session.Session(
            profile_name=self.options.profile, region_name=self.options.region
        )
        if self.is_local and session.get_credentials() is None:
            # moto takes any credentials; do not make users export dummy ones.
            session = boto3.session.Session(
                aws_access_key_id=DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                aws_secret_access_key=DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                region_name=session.region_name or LOCAL_REGION,
            )
        elif self.is_local and session.region_name is None:
            session = boto3.session.Session(
                profile_name=self.options.profile, region_name=LOCAL_REGION
            )
        return session

    def client(self, service: str) -> Any:
        if service not in self._clients:
            config = BotoConfig(
                retries={"mode": "standard", "max_attempts": 2 if self.is_local else 4},
                connect_timeout=3 if self.is_local else 10,
                read_timeout=30,
                max_pool_connections=20,
            )
            self._clients[service] = self.session.client(
                service, endpoint_url=self.endpoint_url, config=config
            )
            if service == "s3control" and self.endpoint_url:
                # botocore puts the account id in front of the host ("123….127.0.0.1"),
                # which names no machine: an endpoint given is the endpoint used
                self._clients[service].meta.events.register(
                    "before-send", _without_account_host_prefix
                )
        return self._clients[service]

    def captions(self) -> CaptionReader:
        """The captions table, for reading."""
        return CaptionReader(self.table, self.client("dynamodb"))

    # -- names ----------------------------------------------------------------------------

    @property
    def bucket(self) -> str:
        return self._name("bucket")

    @property
    def table(self) -> str:
        return self._name("table")

    @property
    def queue_url(self) -> str:
        return self._name("queue_url")

    @property
    def dlq_url(self) -> str:
        return self._name("dlq_url")

    def _name(self, what: str) -> str:
        explicit = getattr(self.options, what)
        if explicit:
            return explicit
        value = self.outputs().get(OUTPUT_KEYS[what])
        if not value:
            raise CliError(
                f"stack {self.stack_name!r} has no output {OUTPUT_KEYS[what]}; pass {FLAGS[what]}"
            )
        return value

    def outputs(self) -> dict[str, str]:
        """The stack's outputs (one DescribeStacks call, then cached)."""
        return {o["OutputKey"]: o["OutputValue"] for o in self._describe_stack().get("Outputs", [])}

    def parameters(self) -> dict[str, str]:
        """The stack's parameter values, as deployed (lists comma-separated)."""
        return {
            p["ParameterKey"]: p.get("ParameterValue", "")
            for p in self._describe_stack().get("Parameters", [])
        }

    def stack(self) -> dict[str, Any]:
        """The stack as DescribeStacks reports it (status, outputs, parameters); cached."""
        return self._describe_stack()

    def _describe_stack(self) -> dict[str, Any]:
        if self._stack is None:
            cfn = self.client("cloudformation")
            try:
                stacks = cfn.describe_stacks(StackName=self.stack_name)["Stacks"]
            except ClientError as exc:
                if "does not exist" not in str(exc.response.get("Error", {}).get("Message", "")):
                    raise
                raise CliError(self._no_stack_message()) from None
            self._stack = stacks[0]
        return self._stack

    def _no_stack_message(self) -> str:
        where = f"at {self.endpoint_url}" if self.endpoint_url else f"in {self.region}"
        hint = (
            "is this the endpoint `captioner local up` printed?"
            if self.is_local
            else "deploy it with `sam deploy`, or pass --stack-name"
        )
        return (
            f"stack {self.stack_name!r} not found {where}: {hint} "
            "(or name the resources: --bucket/--table/--queue-url/--dlq-url)"
        )

    def describe(self) -> str:
        """Where we are talking to, for headings."""
        if self.endpoint_url:
            return self.endpoint_url
        return f"AWS {self.region}"


def _without_account_host_prefix(request: Any, **_: Any) -> None:
    import re

    request.url = re.sub(r"^(https?://)\d{12}\.", r"\1", request.url)


def _check_endpoint(url: str) -> None:
    """An endpoint is an http(s) URL with a host and, if any, a numeric port."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise CliError(f"invalid endpoint URL {url!r}: the port is not a number") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CliError(
            f"invalid endpoint URL {url!r}: expected http(s)://host[:port], "
            "e.g. http://127.0.0.1:4566"
        )
