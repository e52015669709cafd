"""The embedded local stack's lifecycle: moto's server on 127.0.0.1, the resources of
template.yaml in it (``resources``), the function's environment (``environment``), and the
Lambda handler fed by a local SQS event source (``poller``), all in this process. State lives
in memory and is gone when the stack stops.

The handler runs an ``App`` built from the function's environment as a ``Config`` and a boto3
session pointed at moto; only Powertools' own variables are set in ``os.environ``, because
Powertools reads them there (whether to emit metrics, at every flush).

    with LocalStack(port=0) as stack:          # 0: any free port
        boto3.client("s3", endpoint_url=stack.endpoint_url, ...).put_object(...)
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import boto3
import httpx
from botocore.config import Config as BotoConfig

from captioner.app import App
from captioner.config import Config
from captioner.handler import handler_for
from captioner.store import CaptionReader
from captioner_tools.errors import LocalStackError
from captioner_tools.local.atomic import serialize_moto
from captioner_tools.local.defaults import (
    DEFAULT_PORT,
    DEFAULT_RETRY_DELAY_S,
    DEFAULT_SCHEDULE_INTERVAL_S,
    DEFAULT_STACK_NAME,
    DUMMY_CREDENTIALS,
    HOST,
    REGION,
)
from captioner_tools.local.environment import (
    IGNORED_VARIABLES,
    EnvironmentPatch,
    StackFacts,
    choose_provider,
    handler_environment,
)
from captioner_tools.local.poller import (
    BatchReport,
    FunctionTarget,
    PollerSettings,
    SqsEventSource,
    import_handler,
)
from captioner_tools.local.resources import (
    EVENTS_QUEUE_OUTPUT,
    LocalNames,
    Resources,
    create_resources,
    register_outputs,
    sqs_event,
)
from captioner_tools.local.template import FunctionSpec, StackTemplate, resolve_template_path

if TYPE_CHECKING:
    from captioner_tools.local.batchops import LocalBatchOperations

log = logging.getLogger(__name__)


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
        schedule_interval_s: float = DEFAULT_SCHEDULE_INTERVAL_S,
    ) -> None:
        """``visibility_timeout``: seconds a failed message stays invisible before its retry
        (AWS: the queue's VisibilityTimeout, 360 s in the template). ``env``: extra
        variables for the handler (they win over the template's and the shell's).
        ``register_stack`` records the stack's outputs in moto's CloudFormation, so the CLI
        finds the resources by stack name as it does in AWS (costs ~1.5 s at first start).
        ``schedule_interval_s``: how often the template's scheduled rules (the budget sweep,
        every 5 minutes in AWS) send their message here; 0 = never.
        """
        self.port = port
        self.visibility_timeout = visibility_timeout
        self.template_path = resolve_template_path(template)
        self.template = StackTemplate(self.template_path, parameters, stack_name)
        self.stack_name = stack_name
        self.names = LocalNames.for_stack(stack_name)
        self.extra_env = dict(env or {})
        self.provider = choose_provider(provider, {**os.environ, **self.extra_env})
        self.template.parameters["CaptionProvider"] = self.provider.name
        self.poll = poll
        self.register_stack = register_stack
        self.wait_time_s = wait_time_s
        self.log_level = log_level
        self.on_batch = on_batch
        self.schedule_interval_s = schedule_interval_s
        self._schedules_stop = threading.Event()
        self._scheduler: threading.Thread | None = None
        self._resources: Resources | None = None
        self.poller: SqsEventSource | None = None
        self.ignored_variables: list[str] = []
        self._server: Any = None
        self._clients: dict[str, Any] = {}
        self._shell_env = dict(os.environ)  # the environment before the stack changed it
        self._env = EnvironmentPatch()
        self._old_log_level: int | None = None
        self._app: App | None = None
        # Each invoker thread of the event source is one function instance with its own App
        # (clients, provider slots), as separate Lambda containers are (instance_app).
        self._instance = threading.local()
        self._instance_apps: dict[str, App] = {}
        self._apps_lock = threading.Lock()
        self.batch_operations: LocalBatchOperations | None = None

    # -- what callers read --------------------------------------------------------------------

    @property
    def endpoint_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def resources(self) -> Resources:
        """What the stack made from the template (once started)."""
        if self._resources is None:
            raise LocalStackError("the local stack is not started")
        return self._resources

    @property
    def function(self) -> FunctionSpec | None:
        return self._resources.function if self._resources else None

    @property
    def bucket(self) -> str:
        return self.resources.bucket

    @property
    def table(self) -> str:
        return self.resources.table

    @property
    def existing_buckets(self) -> tuple[str, ...]:
        """The stand-ins for ExistingBucketNames (captioned through EventBridge)."""
        return self.resources.existing_buckets

    @property
    def queue_url(self) -> str:
        return self.resources.queue_url

    @property
    def events_queue_url(self) -> str | None:
        """The queue the function's events reach (None when EventBusName is empty)."""
        return self.resources.outputs.get(EVENTS_QUEUE_OUTPUT)

    @property
    def dlq_url(self) -> str:
        return self.resources.dlq_url

    @property
    def queue_arn(self) -> str:
        return self.resources.queue_arn

    @property
    def dlq_arn(self) -> str:
        return self.resources.dlq_arn

    @property
    def max_receive_count(self) -> int:
        return int(self.template.parameter("MaxReceiveCount"))

    @property
    def app(self) -> App:
        """The function's app, as the handler runs it (once started)."""
        if self._app is None:
            raise LocalStackError("the local stack is not started")
        return self._app

    def instance_app(self) -> App:
        """The app of the instance (invoker thread) running now: built on its first
        invocation from the same environment as ``app``; ``app`` outside the event source."""
        name = getattr(self._instance, "name", None)
        if name is None:
            return self.app
        with self._apps_lock:
            if name not in self._instance_apps:
                self._instance_apps[name] = self._build_app(self.handler_environment())
            return self._instance_apps[name]

    def _name_instance(self, name: str) -> None:
        self._instance.name = name

    def client(self, service: str) -> Any:
        """A boto3 client for this stack (explicit endpoint and dummy credentials, so the
        process environment does not matter); made once per service, shared by threads."""
        if service not in self._clients:
            self._clients[service] = _session().client(
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
            **(
                {"CAPTIONER_EVENTS_QUEUE_URL": self.events_queue_url}
                if self.events_queue_url
                else {}
            ),
        }

    def handler_environment(self) -> dict[str, str | None]:
        """The function's environment in this stack (see ``environment.handler_environment``)."""
        assert self.function is not None, "start() the stack first"
        facts = StackFacts(
            endpoint_url=self.endpoint_url,
            table=self.table,
            provider=self.provider.name,
            max_receive_count=self.max_receive_count,
            log_level=self.log_level,
        )
        return handler_environment(
            self.function.environment, self._shell_env, self.extra_env, facts
        )

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
            self._resources = create_resources(self.template, self.names, self.client)
            if self.register_stack:
                register_outputs(
                    self.client("cloudformation"),
                    self.stack_name,
                    self.template_path,
                    self._resources.outputs,
                    self.template.parameters,
                )
            self._enter_environment()
            self._start_batch_operations()
            if self.poll:
                self.start_poller()
                self._start_schedules()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop polling (invocations under way finish), restore the environment, discard
        every resource and stop the server. Safe to call twice."""
        self._schedules_stop.set()
        if self._scheduler is not None:
            self._scheduler.join(10)
            self._scheduler = None
        self.stop_poller()
        self._stop_batch_operations()
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

    def _start_batch_operations(self) -> None:
        """Jobs of ``captioner backfill --engine batch`` run here, BatchBackfillFunction's
        handler invoked in this process (moto has no Batch Operations: local/batchops.py)."""
        from captioner import batch_handler
        from captioner.batchbackfill import BatchSettings
        from captioner_tools.local import batchops

        spec = self.resources.batch_function
        if spec is None:
            return
        settings = BatchSettings.from_env(spec.environment)
        service = batch_handler.build(settings, session=_session(), endpoint_url=self.endpoint_url)
        self.batch_operations = batchops.LocalBatchOperations(
            self.client("s3"), batch_handler.handler_for(lambda: service)
        )
        batchops.serve(self.batch_operations)

    def _stop_batch_operations(self) -> None:
        from captioner_tools.local import batchops

        if self.batch_operations is not None:
            batchops.serve(None)
            self.batch_operations = None

    def start_poller(self) -> None:
        """Start (or restart) the event source, e.g. after a test fixed a fault."""
        if self.poller is not None and self.poller.running:
            return
        function = self.resources.function
        event = sqs_event(function)
        import_handler(function.handler)  # as Lambda would: the template's handler must exist
        self.poller = SqsEventSource(
            self.client("sqs"),
            self.queue_url,
            self.queue_arn,
            FunctionTarget(
                name=self.names.function,
                # the template's captioner.handler.lambda_handler, running this stack's app
                handler=handler_for(self.instance_app),
                timeout_s=function.timeout_s,
                memory_mb=function.memory_mb,
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
            on_instance=self._name_instance,
        ).start()

    def run_schedules(self) -> None:
        """Send every scheduled rule's message now (what EventBridge does on its schedule)."""
        for schedule in self.resources.schedules:
            self.client("sqs").send_message(QueueUrl=schedule.queue_url, MessageBody=schedule.body)

    def _start_schedules(self) -> None:
        if self.schedule_interval_s <= 0 or not self.resources.schedules:
            return
        self._schedules_stop.clear()

        def tick() -> None:
            while not self._schedules_stop.wait(self.schedule_interval_s):
                try:
                    self.run_schedules()
                except Exception as exc:  # the endpoint is going away: the next tick retries
                    log.debug("scheduled message not sent: %s", exc)

        self._scheduler = threading.Thread(target=tick, name="schedules", daemon=True)
        self._scheduler.start()

    def stop_poller(self) -> None:
        if self.poller is not None:
            self.poller.stop()

    def reset_handler(self) -> None:
        """Build the function's app again (a "cold start") from the shell's environment as
        it is now, e.g. after changing a variable."""
        self._shell_env = dict(os.environ)
        self._app = self._build_app(self.handler_environment())
        with self._apps_lock:
            self._instance_apps.clear()

    def _build_app(self, environment: Mapping[str, str | None]) -> App:
        """The app Lambda would build from ``environment``, its AWS calls sent to moto."""
        variables = dict(self._shell_env)
        for name, value in environment.items():
            if value is None:
                variables.pop(name, None)
            else:
                variables[name] = value
        return App.build(
            Config.from_env(variables), session=_session(), endpoint_url=self.endpoint_url
        )

    def _start_server(self) -> None:
        from moto.server import ThreadedMotoServer

        from captioner_tools.local import (
            batchops,
            motodispatch,
            motofixes,
            motosqs,
            mototransactions,
        )

        batchops.install()  # S3 Batch Operations' jobs, which moto lacks (see batchops)
        motofixes.install()  # S3's EventBridge side as S3 does it (see motofixes)
        motodispatch.install()  # a request's service found once per host, not per request
        mototransactions.install()  # transactions that do not copy the whole table
        motosqs.install()  # sends and receives that do not count the queue per message
        serialize_moto()  # conditional writes and receives as atomic as AWS's

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
        self._server = ThreadedMotoServer(ip_address=HOST, port=self.port, verbose=False)
        self._server.start()
        self.port = self._server.get_host_and_port()[1]
        self._clients.clear()  # made for another port
        _reset_moto(self.endpoint_url)  # a stack started earlier in this process left state

    def _enter_environment(self) -> None:
        from captioner.observability import logger

        self._shell_env = dict(os.environ)
        self.ignored_variables = [v for v in IGNORED_VARIABLES if self._shell_env.get(v)]
        environment = self.handler_environment()
        self._app = self._build_app(environment)
        # Powertools reads its variables from os.environ (metrics: at every flush).
        self._env.apply({k: v for k, v in environment.items() if k.startswith("POWERTOOLS_")})
        # Metrics are off locally (no CloudWatch), so Powertools' "no metrics" is noise.
        warnings.filterwarnings("ignore", message="No application metrics to publish")
        level = environment.get("POWERTOOLS_LOG_LEVEL") or "INFO"
        self._old_log_level = logger.log_level
        logger.setLevel(level)  # the logger was made at import, maybe before our variables

    def _leave_environment(self) -> None:
        if self._old_log_level is not None:
            from captioner.observability import logger

            logger.setLevel(self._old_log_level)
            self._old_log_level = None
        if self._env.active:
            self._env.restore()
        self._app = None
        with self._apps_lock:
            self._instance_apps.clear()


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


def _session() -> boto3.session.Session:
    """Dummy credentials and the stack's region, whatever the process environment says."""
    return boto3.session.Session(
        aws_access_key_id=DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name=REGION,
    )
