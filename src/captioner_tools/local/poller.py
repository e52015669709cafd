"""What Lambda's SQS event source mapping does, in threads of this process.

Long-poll the queue, hand batches shaped exactly like Lambda's SQS event to the handler
(the very function ``template.yaml`` names), delete what succeeded, and leave the
``batchItemFailures`` on the queue so that they come back and, after the redrive policy's
``maxReceiveCount`` receives, SQS itself moves them to the dead-letter queue.

One deliberate difference: in AWS a failed message reappears when the queue's visibility
timeout (360 s in the template, 6x the function timeout) runs out. Locally the queue keeps
that timeout for messages being processed, and the poller shortens it to ``retry_delay_s``
for failed ones only (``ChangeMessageVisibility``), so retries and dead-lettering happen in
seconds, and a slow caption is still never delivered twice at once.

As in Lambda, receiving and invoking are separate: one poller thread receives (long poll,
then the batching window), and only when one of ``max_concurrency`` invokers is free, so no
message waits, received and invisible, for a busy function. There is one receiver because
moto's ReceiveMessage is not thread-safe: concurrent receivers can be handed the same
message within its visibility timeout, which real SQS never does.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_all
from dataclasses import dataclass, field
from typing import Any

Handler = Callable[[dict[str, Any], Any], Any]

log = logging.getLogger(__name__)

SQS_MAX_BATCH = 10  # ReceiveMessage, DeleteMessageBatch and friends take at most 10


def import_handler(dotted: str) -> Handler:
    """``"captioner.handler.lambda_handler"`` → the function, as the Lambda runtime does."""
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


@dataclass
class LambdaContext:
    """The attributes of Lambda's context object that handlers and Powertools read."""

    function_name: str
    timeout_s: float
    memory_limit_in_mb: int = 512
    region: str = "us-east-1"
    account_id: str = "123456789012"
    function_version: str = "$LATEST"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    identity: Any = None
    client_context: Any = None
    tenant_id: str | None = None
    _started: float = field(default_factory=time.monotonic, repr=False)

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:{self.region}:{self.account_id}:function:{self.function_name}"

    @property
    def log_group_name(self) -> str:
        return f"/aws/lambda/{self.function_name}"

    @property
    def log_stream_name(self) -> str:
        return f"local/[{self.function_version}]{self.aws_request_id[:8]}"

    def get_remaining_time_in_millis(self) -> int:
        return max(int((self._started + self.timeout_s - time.monotonic()) * 1000), 0)


@dataclass(frozen=True)
class FunctionTarget:
    """The function the event source invokes."""

    name: str
    handler: Handler
    timeout_s: float = 60
    memory_mb: int = 512


@dataclass(frozen=True)
class PollerSettings:
    batch_size: int = 10
    batching_window_s: float = 0.0  # MaximumBatchingWindowInSeconds
    max_concurrency: int = 2  # ScalingConfig.MaximumConcurrency: concurrent invocations
    report_batch_item_failures: bool = True
    retry_delay_s: int = 10  # how long a failed message stays invisible (see module doc)
    wait_time_s: int = 1  # long-poll wait; short so that stop() is quick
    max_receive_count: int | None = None  # the redrive policy's, to report last deliveries


@dataclass(frozen=True)
class MessageResult:
    message_id: str
    body: str
    receive_count: int  # ApproximateReceiveCount of this delivery
    failed: bool  # reported as a batch item failure (or the whole invocation failed)


@dataclass(frozen=True)
class BatchReport:
    """One invocation, for the ``on_batch`` callback (``captioner local up`` prints it)."""

    request_id: str
    received: int
    succeeded: int
    failed: int
    last_deliveries: int  # failed on their final receive: SQS moves them to the DLQ next
    seconds: float
    error: str | None = None  # the handler raised: the whole batch failed
    messages: tuple[MessageResult, ...] = ()


class SqsEventSource:
    def __init__(
        self,
        sqs: Any,
        queue_url: str,
        queue_arn: str,
        function: FunctionTarget,
        settings: PollerSettings,
        *,
        region: str = "us-east-1",
        on_batch: Callable[[BatchReport], None] | None = None,
        on_instance: Callable[[str], None] | None = None,
    ) -> None:
        """``on_instance`` runs in each invoker thread when it starts, with its name: each
        invoker is one function instance (Lambda runs every instance in its own process;
        the handler keeps one App per instance, see ``captioner.handler.instance``)."""
        self.sqs = sqs
        self.queue_url = queue_url
        self.queue_arn = queue_arn
        self.function = function
        self.settings = settings
        self.region = region
        self.on_batch = on_batch
        self.on_instance = on_instance
        self.totals: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._receiver: threading.Thread | None = None
        self._invokers: ThreadPoolExecutor | None = None
        self._free = threading.Semaphore(max(settings.max_concurrency, 1))
        self._in_flight: set[Future[None]] = set()

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> SqsEventSource:
        self._stop.clear()
        self._invokers = ThreadPoolExecutor(
            max_workers=max(self.settings.max_concurrency, 1),
            thread_name_prefix="invoke",
            initializer=self._start_instance,
        )
        self._receiver = threading.Thread(target=self._run, name="sqs-event-source", daemon=True)
        self._receiver.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop receiving; invocations under way finish first (as a Lambda deploy would)."""
        self._stop.set()
        if self._receiver is not None:
            self._receiver.join(timeout)
            self._receiver = None
        if self._invokers is not None:
            wait_all(list(self._in_flight), timeout=timeout)
            self._invokers.shutdown(wait=False)
            self._invokers = None

    def _start_instance(self) -> None:
        if self.on_instance is not None:
            self.on_instance(threading.current_thread().name)

    @property
    def running(self) -> bool:
        return self._receiver is not None and self._receiver.is_alive()

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self._free.acquire(timeout=0.2):  # every invoker busy: do not receive
                continue
            try:
                messages = self._receive_batch(self.settings.wait_time_s)
            except Exception as exc:  # the endpoint hiccuped or is going away: back off
                self._free.release()
                log.debug("receiving from %s failed: %s", self.queue_url, exc)
                self._stop.wait(1.0)
                continue
            if not messages:
                self._free.release()
                continue
            assert self._invokers is not None
            future = self._invokers.submit(self._settle_in_background, messages)
            with self._lock:
                self._in_flight.add(future)
            future.add_done_callback(self._in_flight.discard)

    def _settle_in_background(self, messages: list[dict[str, Any]]) -> None:
        try:
            self._settle(messages)
        except Exception:  # never let one bad batch stop the event source
            log.exception("event source error on %s", self.queue_url)
            with self._lock:
                self.totals.update(poller_errors=1)
        finally:
            self._free.release()

    # -- one batch ----------------------------------------------------------------------------

    def poll_once(self, wait_time_s: int | None = None) -> BatchReport | None:
        """Receive one batch, invoke the function, settle the messages. None when idle."""
        wait = self.settings.wait_time_s if wait_time_s is None else wait_time_s
        messages = self._receive_batch(wait)
        return self._settle(messages) if messages else None

    def _settle(self, messages: list[dict[str, Any]]) -> BatchReport:
        report = self._invoke(messages)
        with self._lock:
            self.totals.update(
                invocations=1,
                received=report.received,
                succeeded=report.succeeded,
                failed=report.failed,
                errors=1 if report.error else 0,
            )
        if self.on_batch:
            self.on_batch(report)
        return report

    def _receive_batch(self, wait: int) -> list[dict[str, Any]]:
        """Up to BatchSize messages, waiting up to the batching window to fill the batch."""
        messages = self._receive(min(self.settings.batch_size, SQS_MAX_BATCH), wait)
        if not messages:
            return []
        window_ends = time.monotonic() + self.settings.batching_window_s
        while len(messages) < self.settings.batch_size and not self._stop.is_set():
            remaining = window_ends - time.monotonic()
            if remaining <= 0:
                break
            want = min(self.settings.batch_size - len(messages), SQS_MAX_BATCH)
            more = self._receive(want, 0)
            messages += more
            if not more:
                time.sleep(min(remaining, 0.1))
        return messages

    def _receive(self, count: int, wait: int) -> list[dict[str, Any]]:
        resp = self.sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=count,
            WaitTimeSeconds=wait,
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        return resp.get("Messages", [])

    def _invoke(self, messages: list[dict[str, Any]]) -> BatchReport:
        context = LambdaContext(
            function_name=self.function.name,
            timeout_s=self.function.timeout_s,
            memory_limit_in_mb=self.function.memory_mb,
            region=self.region,
            account_id=self.queue_arn.split(":")[4] or "123456789012",
        )
        event = {"Records": [self.record(m) for m in messages]}
        started = time.monotonic()
        error = None
        try:
            response = self.function.handler(event, context)
            failed_ids = self.failed_ids(response, [m["MessageId"] for m in messages])
        except Exception as exc:  # the invocation failed as a whole, as Lambda reports it
            error = f"{type(exc).__name__}: {exc}"
            failed_ids = {m["MessageId"] for m in messages}
        failed = [m for m in messages if m["MessageId"] in failed_ids]
        succeeded = [m for m in messages if m["MessageId"] not in failed_ids]
        self._delete(succeeded)
        self._retry_later(failed)
        return BatchReport(
            request_id=context.aws_request_id,
            received=len(messages),
            succeeded=len(succeeded),
            failed=len(failed),
            last_deliveries=sum(1 for m in failed if self._is_last_delivery(m)),
            seconds=time.monotonic() - started,
            error=error,
            messages=tuple(
                MessageResult(
                    m["MessageId"], m["Body"], _receive_count(m), m["MessageId"] in failed_ids
                )
                for m in messages
            ),
        )

    def failed_ids(self, response: Any, message_ids: list[str]) -> set[str]:
        """Lambda's rules for a partial batch response (ReportBatchItemFailures).

        Success: no response, an empty one, or an empty/null ``batchItemFailures``. The
        whole batch fails when an item identifier is missing, empty or not in the batch.
        Without ReportBatchItemFailures a returned value never fails anything.
        """
        if not self.settings.report_batch_item_failures or not response:
            return set()
        if not isinstance(response, dict):
            return set(message_ids)
        items = response.get("batchItemFailures") or []
        ids = {item.get("itemIdentifier") if isinstance(item, dict) else None for item in items}
        if not ids <= set(message_ids):
            return set(message_ids)
        return {i for i in ids if i}

    def record(self, message: dict[str, Any]) -> dict[str, Any]:
        """One SQS message as a record of Lambda's SQS event."""
        return {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message["Body"],
            "attributes": dict(message.get("Attributes", {})),
            "messageAttributes": {
                name: _message_attribute(value)
                for name, value in message.get("MessageAttributes", {}).items()
            },
            "md5OfBody": message.get("MD5OfBody", ""),
            "eventSource": "aws:sqs",
            "eventSourceARN": self.queue_arn,
            "awsRegion": self.region,
        }

    def _is_last_delivery(self, message: dict[str, Any]) -> bool:
        limit = self.settings.max_receive_count
        return limit is not None and _receive_count(message) >= limit

    def _delete(self, messages: list[dict[str, Any]]) -> None:
        for chunk in _chunks(messages, SQS_MAX_BATCH):
            self.sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(chunk)
                ],
            )

    def _retry_later(self, messages: list[dict[str, Any]]) -> None:
        for chunk in _chunks(messages, SQS_MAX_BATCH):
            self.sqs.change_message_visibility_batch(
                QueueUrl=self.queue_url,
                Entries=[
                    {
                        "Id": str(i),
                        "ReceiptHandle": m["ReceiptHandle"],
                        "VisibilityTimeout": self.settings.retry_delay_s,
                    }
                    for i, m in enumerate(chunk)
                ],
            )


def _receive_count(message: dict[str, Any]) -> int:
    return int(message.get("Attributes", {}).get("ApproximateReceiveCount", 1))


def _message_attribute(value: dict[str, Any]) -> dict[str, Any]:
    """SQS API attribute shape (StringValue...) → Lambda event shape (stringValue...)."""
    return {
        "stringValue": value.get("StringValue"),
        "binaryValue": value.get("BinaryValue"),
        "stringListValues": value.get("StringListValues", []),
        "binaryListValues": value.get("BinaryListValues", []),
        "dataType": value.get("DataType"),
    }


def _chunks[T](items: list[T], size: int) -> Iterable[list[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
