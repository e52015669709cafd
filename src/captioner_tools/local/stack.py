"""The embedded local stack: moto on 127.0.0.1 with the resources of template.yaml, and
the Lambda handler fed by a local SQS event source, all in this process.

Resources are made with direct API calls driven by the template's properties, because
moto's CloudFormation drops the bucket notification, queue policies and TTL, and an event
source mapping makes it try Docker. State lives in memory and is gone when the stack stops.

    with LocalStack(port=0) as stack:          # 0: any free port
        boto3.client("s3", endpoint_url=stack.endpoint_url, ...).put_object(...)
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import boto3
import httpx
from botocore.config import Config as BotoConfig

from captioner.providers import PROVIDERS as PROVIDER_FACTORIES
from captioner.store import CaptionReader
from captioner_tools.errors import LocalStackError
from captioner_tools.local.poller import (
    BatchReport,
    FunctionTarget,
    PollerSettings,
    SqsEventSource,
    import_handler,
)
from captioner_tools.local.template import (
    FunctionSpec,
    StackTemplate,
    resolve_template_path,
    table_definition,
)

HOST = "127.0.0.1"
DEFAULT_PORT = 4566
DEFAULT_RETRY_DELAY_S = 10
DEFAULT_STACK_NAME = "captioner"
REGION = "us-east-1"
ACCOUNT_ID = "123456789012"  # moto's default account
# moto accepts any credentials; these keep boto3 from looking for real ones.
DUMMY_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
}
PROVIDERS = tuple(sorted(PROVIDER_FACTORIES))  # the names CAPTION_PROVIDER accepts
# SQS queue attributes CloudFormation passes through under the same name.
_QUEUE_ATTRIBUTES = {
    "DelaySeconds", "MaximumMessageSize", "MessageRetentionPeriod",
    "ReceiveMessageWaitTimeSeconds", "VisibilityTimeout", "SqsManagedSseEnabled",
    "KmsMasterKeyId", "KmsDataKeyReusePeriodSeconds", "FifoQueue",
    "ContentBasedDeduplication", "DeduplicationScope", "FifoThroughputLimit",
}  # fmt: skip
# Variables that would send the handler's AWS calls somewhere other than the local stack.
_FOREIGN_AWS_VARIABLES = (
    "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
    "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_SQS", "AWS_ENDPOINT_URL_DYNAMODB",
    "AWS_ENDPOINT_URL_SECRETS_MANAGER", "AWS_ENDPOINT_URL_STS",
)  # fmt: skip

log = logging.getLogger(__name__)


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
class LocalNames:
    """Names of the local resources: readable and stable (CloudFormation would add a random
    suffix), so that the exports printed by ``local up`` stay valid across restarts."""

    bucket: str
    table: str
    queue: str
    dlq: str
    function: str

    @classmethod
    def for_stack(cls, stack_name: str) -> LocalNames:
        base = stack_name.lower()
        return cls(
            bucket=f"{base}-local-uploads",
            table=f"{stack_name}-local-captions",
            queue=f"{stack_name}-local-captions",
            dlq=f"{stack_name}-local-captions-dlq",
            function=f"{stack_name}-local-CaptionFunction",
        )


class LocalStack:
    """moto + the template's resources + the handler behind an SQS event source."""

    _running: ClassVar[LocalStack | None] = None  # moto's state is per process
    _guard: ClassVar[threading.Lock] = threading.Lock()

    def __init__(
        self,
        port: int = DEFAULT_PORT,
        *,
        provider: str | None = None,
        visibility_timeout: int = DEFAULT_RETRY_DELAY_S,
        template: str | Path | None = None,
        parameters: Mapping[str, Any] | None = None,
        stack_name: str = DEFAULT_STACK_NAME,
        env: Mapping[str, str] | None = None,
        poll: bool = True,
        register_stack: bool = True,
        wait_time_s: int = 1,
        log_level: str | None = None,
        on_batch: Callable[[BatchReport], None] | None = None,
    ) -> None:
        """``visibility_timeout``: seconds a failed message stays invisible before its retry
        (AWS: the queue's VisibilityTimeout, 360 s in the template). ``env``: extra
        variables for the handler (they win over the template's and the shell's).
        ``register_stack`` records the stack's outputs in moto's CloudFormation, so the CLI
        finds the resources by stack name as it does in AWS (costs ~1.5 s at first start).
        """
        self.port = port
        self.visibility_timeout = visibility_timeout
        self.template_path = resolve_template_path(template)
        self.template = StackTemplate(self.template_path, parameters)
        self.stack_name = stack_name
        self.names = LocalNames.for_stack(stack_name)
        self.extra_env = dict(env or {})
        merged = {**os.environ, **self.extra_env}
        self.provider = choose_provider(provider, merged)
        self.template.parameters["CaptionProvider"] = self.provider.name
        self.poll = poll
        self.register_stack = register_stack
        self.wait_time_s = wait_time_s
        self.log_level = log_level
        self.on_batch = on_batch
        self.refs: dict[str, str] = {}  # logical id (or "Id.Attribute") → local value
        self.ids: dict[str, str] = {}  # role (bucket, queue...) → logical id in the template
        self.outputs: dict[str, str] = {}
        self.function: FunctionSpec | None = None
        self.poller: SqsEventSource | None = None
        self.ignored_variables: list[str] = []
        self._server: Any = None
        self._clients: dict[str, Any] = {}
        self._shell_env = dict(os.environ)  # the environment before the stack changed it
        self._env = _EnvironmentPatch()
        self._old_log_level: int | None = None

    # -- what callers read --------------------------------------------------------------------

    @property
    def endpoint_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def bucket(self) -> str:
        return self.refs[self.ids["bucket"]]

    @property
    def table(self) -> str:
        return self.refs[self.ids["table"]]

    @property
    def queue_url(self) -> str:
        return self.refs[self.ids["queue"]]

    @property
    def dlq_url(self) -> str:
        return self.refs[self.ids["dlq"]]

    @property
    def queue_arn(self) -> str:
        return self.refs[self.ids["queue"] + ".Arn"]

    @property
    def dlq_arn(self) -> str:
        return self.refs[self.ids["dlq"] + ".Arn"]

    @property
    def max_receive_count(self) -> int:
        return int(self.template.parameter("MaxReceiveCount"))

    def client(self, service: str) -> Any:
        """A boto3 client for this stack (explicit endpoint and dummy credentials, so the
        process environment does not matter); made once per service, shared by threads."""
        if service not in self._clients:
            self._clients[service] = boto3.session.Session(
                aws_access_key_id=DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                aws_secret_access_key=DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
                region_name=REGION,
            ).client(
                service,
                endpoint_url=self.endpoint_url,
                config=BotoConfig(
                    retries={"mode": "standard", "max_attempts": 3}, max_pool_connections=20
                ),
            )
        return self._clients[service]

    def captions(self) -> CaptionReader:
        """The captions table, for reading."""
        return CaptionReader(self.table, self.client("dynamodb"))

    def cli_environment(self) -> dict[str, str]:
        """The variables that point the ``captioner`` CLI (and the AWS CLI) at this stack."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            "AWS_SECRET_ACCESS_KEY": DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,  # the one boto3 reads
            "CAPTIONER_STACK_NAME": self.stack_name,
            "CAPTIONER_BUCKET": self.bucket,
            "CAPTIONS_TABLE": self.table,
            "CAPTIONER_QUEUE_URL": self.queue_url,
            "CAPTIONER_DLQ_URL": self.dlq_url,
        }

    # -- lifecycle ------------------------------------------------------------------------------

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> LocalStack:
        _check_port_free(HOST, self.port)
        with LocalStack._guard:
            if LocalStack._running is not None:
                raise LocalStackError(
                    f"a local stack is already running in this process "
                    f"({LocalStack._running.endpoint_url}); moto's state is per process"
                )
            LocalStack._running = self
        try:
            self._start_server()
            self._create_resources()
            self._enter_environment()
            if self.poll:
                self.start_poller()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop polling (invocations under way finish), restore the environment, discard
        every resource and stop the server. Safe to call twice."""
        self.stop_poller()
        self._leave_environment()
        if self._server is not None:
            _reset_moto(self.endpoint_url)
            self._server.stop()
            inner = getattr(self._server, "_server", None)
            if inner is not None:
                inner.server_close()
            self._server = None
        with LocalStack._guard:
            if LocalStack._running is self:
                LocalStack._running = None

    def start_poller(self) -> None:
        """Start (or restart) the event source, e.g. after a test fixed a fault."""
        if self.poller is not None and self.poller.running:
            return
        assert self.function is not None, "start() the stack first"
        event = self._sqs_event()
        self.poller = SqsEventSource(
            self.client("sqs"),
            self.queue_url,
            self.queue_arn,
            FunctionTarget(
                name=self.names.function,
                handler=import_handler(self.function.handler),
                timeout_s=self.function.timeout_s,
                memory_mb=self.function.memory_mb,
            ),
            PollerSettings(
                batch_size=event.batch_size,
                batching_window_s=event.batching_window_s,
                max_concurrency=event.max_concurrency,
                report_batch_item_failures=event.report_batch_item_failures,
                retry_delay_s=self.visibility_timeout,
                wait_time_s=self.wait_time_s,
                max_receive_count=self.max_receive_count,
            ),
            region=REGION,
            on_batch=self.on_batch,
        ).start()

    def stop_poller(self) -> None:
        if self.poller is not None:
            self.poller.stop()

    def reset_handler(self) -> None:
        """Make the handler read its environment again on the next invocation (the next
        "cold start"), e.g. after changing a variable."""
        from captioner import handler

        handler.reset()

    # -- server ---------------------------------------------------------------------------------

    def _start_server(self) -> None:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
        self._server = ThreadedMotoServer(ip_address=HOST, port=self.port, verbose=False)
        self._server.start()
        self.port = self._server.get_host_and_port()[1]
        self._clients.clear()  # made for another port
        _reset_moto(self.endpoint_url)  # a stack started earlier in this process left state

    # -- resources ------------------------------------------------------------------------------

    def _create_resources(self) -> None:
        function_id = _only(self.template.resources_of_type("AWS::Serverless::Function"))
        self.function = self.template.function(function_id)
        queue_id = self._sqs_event().queue
        dlq_id = _dead_letter_target(self.template.properties(queue_id))
        bucket_id = _only(self.template.resources_of_type("AWS::S3::Bucket"))
        table_id = _only(self.template.resources_of_type("AWS::DynamoDB::Table"))
        self.ids = {
            "function": function_id,
            "queue": queue_id,
            "dlq": dlq_id,
            "bucket": bucket_id,
            "table": table_id,
        }
        self._create_queue(dlq_id, self.names.dlq)
        self._create_queue(queue_id, self.names.queue)  # its redrive policy names the DLQ
        self._create_bucket(bucket_id, self.names.bucket)  # its notification names the queue
        self._create_table(table_id, self.names.table)
        function_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{self.names.function}"
        self.refs.update({function_id: self.names.function, f"{function_id}.Arn": function_arn})
        # Resolved again now that every Ref has a value (CAPTIONS_TABLE: !Ref CaptionsTable).
        self.function = self.template.function(function_id, self.refs)
        self.outputs = self.template.outputs(self.refs)
        if self.register_stack:
            self._register_outputs()

    def _sqs_event(self) -> Any:
        assert self.function is not None
        if not self.function.events:
            raise LocalStackError(f"{self.function.logical_id} has no SQS event in the template")
        return self.function.events[0]

    def _create_queue(self, logical_id: str, name: str) -> None:
        props = self.template.resolve(self.template.properties(logical_id), self.refs)
        attributes = {k: _attribute(v) for k, v in props.items() if k in _QUEUE_ATTRIBUTES}
        if "RedrivePolicy" in props:
            attributes["RedrivePolicy"] = json.dumps(props["RedrivePolicy"])
        sqs = self.client("sqs")
        url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
        self.refs.update(
            {
                logical_id: url,
                f"{logical_id}.Arn": arn["Attributes"]["QueueArn"],
                f"{logical_id}.QueueName": name,
                f"{logical_id}.QueueUrl": url,
            }
        )

    def _create_bucket(self, logical_id: str, name: str) -> None:
        props = self.template.resolve(self.template.properties(logical_id), self.refs)
        s3 = self.client("s3")
        s3.create_bucket(Bucket=name)
        self.refs.update({logical_id: name, f"{logical_id}.Arn": f"arn:aws:s3:::{name}"})
        if "VersioningConfiguration" in props:
            s3.put_bucket_versioning(
                Bucket=name, VersioningConfiguration=props["VersioningConfiguration"]
            )
        if "PublicAccessBlockConfiguration" in props:
            s3.put_public_access_block(
                Bucket=name, PublicAccessBlockConfiguration=props["PublicAccessBlockConfiguration"]
            )
        if "OwnershipControls" in props:
            s3.put_bucket_ownership_controls(
                Bucket=name, OwnershipControls=props["OwnershipControls"]
            )
        if "BucketEncryption" in props:
            s3.put_bucket_encryption(
                Bucket=name,
                ServerSideEncryptionConfiguration=_encryption(props["BucketEncryption"]),
            )
        if "NotificationConfiguration" in props:
            s3.put_bucket_notification_configuration(
                Bucket=name, NotificationConfiguration=_notifications(props)
            )

    def _create_table(self, logical_id: str, name: str) -> None:
        props = self.template.resolve(self.template.properties(logical_id), self.refs)
        ddb = self.client("dynamodb")
        created = ddb.create_table(
            TableName=name, **table_definition(self.template_path, logical_id)
        )
        self.refs.update(
            {logical_id: name, f"{logical_id}.Arn": created["TableDescription"]["TableArn"]}
        )
        ttl = props.get("TimeToLiveSpecification")
        if ttl:
            ddb.update_time_to_live(TableName=name, TimeToLiveSpecification=ttl)

    def _register_outputs(self) -> None:
        """A stack holding only the outputs, so discovery by stack name works locally too."""
        warnings.filterwarnings("ignore", message="Tried to parse AWS::CloudFormation::WaitCondi")
        body = {
            "Description": f"captioner local stack (outputs only) from {self.template_path}",
            "Resources": {"Placeholder": {"Type": "AWS::CloudFormation::WaitConditionHandle"}},
            "Outputs": {k: {"Value": v} for k, v in self.outputs.items()},
        }
        self.client("cloudformation").create_stack(
            StackName=self.stack_name, TemplateBody=json.dumps(body)
        )

    # -- the handler's environment ------------------------------------------------------------

    def handler_environment(self) -> dict[str, str | None]:
        """The function's variables from the template, as Lambda would set them, with the
        shell's own values winning (like ``sam local --env-vars``) except for what the stack
        decides itself: where AWS is, the table, the provider and the receive count."""
        assert self.function is not None
        env: dict[str, str | None] = {
            k: v for k, v in self.function.environment.items() if k not in self._shell_env and v
        }
        env.update(self.extra_env)
        env.update(
            {
                **dict.fromkeys(_FOREIGN_AWS_VARIABLES),
                **DUMMY_CREDENTIALS,
                "AWS_ENDPOINT_URL": self.endpoint_url,
                "AWS_REGION": REGION,
                "AWS_DEFAULT_REGION": REGION,
                "CAPTIONS_TABLE": self.table,
                "CAPTION_PROVIDER": self.provider.name,
                "CAPTION_MAX_RECEIVE_COUNT": str(self.max_receive_count),
                # The key comes from MODELSLAB_API_KEY locally; a secret ARN would be looked up
                # in moto's (empty) Secrets Manager and fail.
                "MODELSLAB_API_KEY_SECRET": None,
                "POWERTOOLS_TRACE_DISABLED": "true",  # no X-Ray daemon here
                "POWERTOOLS_METRICS_DISABLED": "true",  # no CloudWatch to read EMF lines
            }
        )
        if self.log_level:
            env["POWERTOOLS_LOG_LEVEL"] = self.log_level.upper()
        if self.provider.name == "modelslab" and not _is_loopback_url(
            env.get("MODELSLAB_API_URL") or self._shell_env.get("MODELSLAB_API_URL")
        ):
            # The real ModelsLab cannot fetch presigned URLs on 127.0.0.1: upload the bytes.
            env["CAPTION_IMAGE_TRANSPORT"] = "upload"
        return env

    def _enter_environment(self) -> None:
        from captioner.observability import logger

        self._shell_env = dict(os.environ)
        self.ignored_variables = [
            v for v in ("MODELSLAB_API_KEY_SECRET", "AWS_PROFILE") if self._shell_env.get(v)
        ]
        environment = self.handler_environment()
        self._env.apply(environment)
        # Metrics are off locally (no CloudWatch), so Powertools' "no metrics" is noise.
        warnings.filterwarnings("ignore", message="No application metrics to publish")
        level = environment.get("POWERTOOLS_LOG_LEVEL") or "INFO"
        self._old_log_level = logger.log_level
        logger.setLevel(level)  # the logger was made at import, maybe before our variables
        self.reset_handler()  # the next invocation builds the app from this environment

    def _leave_environment(self) -> None:
        if self._old_log_level is not None:
            from captioner.observability import logger

            logger.setLevel(self._old_log_level)
            self._old_log_level = None
        if self._env.active:
            self._env.restore()
            self.reset_handler()


class _EnvironmentPatch:
    """Set variables in os.environ (None = unset) and put the old values back later."""

    def __init__(self) -> None:
        self._saved: dict[str, str | None] = {}
        self.active = False

    def apply(self, values: Mapping[str, str | None]) -> None:
        for name, value in values.items():
            self._saved.setdefault(name, os.environ.get(name))
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self.active = True

    def restore(self) -> None:
        for name, value in self._saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved.clear()
        self.active = False


def _check_port_free(host: str, port: int) -> None:
    """moto's server thread would die on a busy port and leave start() waiting forever."""
    if port == 0:
        return
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise LocalStackError(
                f"port {port} on {host} is in use ({exc.strerror}): is a local stack already "
                "running? Stop it or choose another port with --port"
            ) from None


def _reset_moto(endpoint_url: str) -> None:
    """Forget every resource (moto keeps its state per process, not per server)."""
    try:
        httpx.post(f"{endpoint_url}/moto-api/reset", timeout=10)
    except httpx.HTTPError as exc:
        log.warning("could not reset moto: %s", exc)


def _only(items: list[str]) -> str:
    if len(items) != 1:
        raise LocalStackError(f"expected one resource in the template, found {items or 'none'}")
    return items[0]


def _dead_letter_target(queue_props: Mapping[str, Any]) -> str:
    target = queue_props.get("RedrivePolicy", {}).get("deadLetterTargetArn", {})
    if isinstance(target, dict) and "Fn::GetAtt" in target:
        return str(target["Fn::GetAtt"][0])
    raise LocalStackError("the caption queue has no RedrivePolicy naming a queue of the template")


def _attribute(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def _encryption(spec: Mapping[str, Any]) -> dict[str, Any]:
    """CloudFormation's BucketEncryption → PutBucketEncryption's configuration."""
    rules = []
    for rule in spec.get("ServerSideEncryptionConfiguration", []):
        api_rule: dict[str, Any] = {
            "ApplyServerSideEncryptionByDefault": rule["ServerSideEncryptionByDefault"]
        }
        if "BucketKeyEnabled" in rule:
            api_rule["BucketKeyEnabled"] = bool(rule["BucketKeyEnabled"])
        rules.append(api_rule)
    return {"Rules": rules}


def _notifications(props: Mapping[str, Any]) -> dict[str, Any]:
    """CloudFormation's NotificationConfiguration → PutBucketNotificationConfiguration's."""
    configs = []
    for entry in props["NotificationConfiguration"].get("QueueConfigurations", []):
        config: dict[str, Any] = {"QueueArn": entry["Queue"], "Events": [entry["Event"]]}
        rules = entry.get("Filter", {}).get("S3Key", {}).get("Rules", [])
        if rules:
            config["Filter"] = {"Key": {"FilterRules": rules}}
        configs.append(config)
    return {"QueueConfigurations": configs}


def _is_loopback_url(url: str | None) -> bool:
    """True for a URL on this machine; the default ModelsLab URL (None) is not."""
    from urllib.parse import urlparse

    return bool(url) and urlparse(url).hostname in ("127.0.0.1", "localhost", "::1")
