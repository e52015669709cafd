"""The batch backfill: what ``BatchBackfillFunction`` does with each S3 Batch Operations task.

Per task: the bucket must be one this stack serves; a folder marker is skipped; the object's
HEAD (the task's version, or the current one) and its row decide, with the same rules as
``captioner backfill`` (``backfillrules``), whether the object goes to the caption queue as
the usual backfill message. It never calls a caption provider: the queue and the caption
function keep the pace, so ``ProviderConcurrency``, ``DailyBudgetUsd`` and paid-once hold.

Results: ``Succeeded`` ("enqueued", "skipped: <why>"); ``PermanentFailure`` for a missing
object, a malformed task, a bucket not served, or an AWS refusal that a retry would not
change (access denied); ``TemporaryFailure`` for throttling, 5xx and network faults, which
Batch Operations retries. One task's failure never touches another's result.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Protocol

from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from captioner.backfillrules import Asked, Version, skip_reason
from captioner.batchjob import (
    BadTask,
    Invocation,
    ResultCode,
    Task,
    TaskResult,
)
from captioner.config import Config, Setting
from captioner.events import backfill_message
from captioner.objects import ObjectHead, ObjectMissing
from captioner.providers import PROVIDERS
from captioner.served import ServedBuckets

# Error codes a retry may cure (the service is busy or hiccupped); anything else that AWS
# refuses is the task's own problem and would fail the same way again.
_TRANSIENT_CODES = frozenset({
    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottled",
    "RequestThrottledException", "TooManyRequestsException", "SlowDown", "RequestLimitExceeded",
    "ProvisionedThroughputExceededException", "RequestTimeout", "RequestTimeoutException",
    "InternalError", "InternalFailure", "InternalServerError", "ServiceUnavailable",
    "KMS.ThrottlingException", "AWS.SimpleQueueService.RequestThrottled",
})  # fmt: skip
_NETWORK_ERRORS = (
    EndpointConnectionError,
    ConnectTimeoutError,
    ReadTimeoutError,
    ConnectionClosedError,
)

# The settings of BatchBackfillFunction (the template sets all three).
CAPTIONS_TABLE = Setting("CAPTIONS_TABLE", "the captions table's name", required=True)
QUEUE_URL = Setting(
    "CAPTION_QUEUE_URL", "the caption queue the backfill messages go to", required=True
)
# declared once, with the caption function's settings (a task for another bucket fails
# permanently; the template always sets it)
BUCKETS = next(f.metadata["setting"] for f in fields(Config) if f.name == "served_buckets")


@dataclass(frozen=True)
class BatchSettings:
    captions_table: str
    queue_url: str
    buckets: ServedBuckets

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> BatchSettings:
        return cls(
            captions_table=str(CAPTIONS_TABLE.read(env)),
            queue_url=str(QUEUE_URL.read(env)),
            buckets=ServedBuckets(frozenset(BUCKETS.read(env) or ())),
        )


class Heads(Protocol):
    def head(self, bucket: str, key: str, version_id: str | None) -> ObjectHead: ...


class Rows(Protocol):
    def get(self, bucket: str, key: str) -> dict[str, Any] | None: ...


class Queue(Protocol):
    def send(self, body: str) -> None: ...


class SqsQueue:
    """The caption queue, one SendMessage per task (a schema 2.0 invocation has few tasks)."""

    def __init__(self, sqs_client: Any, queue_url: str) -> None:
        self._sqs, self._url = sqs_client, queue_url

    def send(self, body: str) -> None:
        self._sqs.send_message(QueueUrl=self._url, MessageBody=body)


class TemporaryTaskFailure(Exception):
    """Worth retrying: throttling, a 5xx, the network. Batch Operations retries the task."""


class PermanentTaskFailure(Exception):
    """A retry would fail the same way: the object is gone, the bucket is not ours, AWS
    refuses access. Recorded in the completion report."""


def asked_of(arguments: Mapping[str, str]) -> Asked:
    """The job's ``UserArguments`` (``provider``, ``onlyProvider``) as the backfill's ask;
    an unknown name fails every task rather than captioning with the wrong provider."""
    provider = (arguments.get("provider") or "").strip().lower() or None
    only = (arguments.get("onlyProvider") or "").strip().lower() or None
    for name in (provider, only):
        if name is not None and name not in PROVIDERS:
            raise PermanentTaskFailure(f"unknown provider {name!r} in the job's UserArguments")
    return Asked(provider, only)


class BatchBackfill:
    def __init__(self, buckets: ServedBuckets, heads: Heads, rows: Rows, queue: Queue) -> None:
        self.buckets, self.heads, self.rows, self.queue = buckets, heads, rows, queue

    def run(self, invocation: Invocation) -> list[TaskResult]:
        try:
            asked: Asked | PermanentTaskFailure = asked_of(invocation.user_arguments)
        except PermanentTaskFailure as exc:
            asked = exc
        return [self._result(task, asked) for task in invocation.tasks]

    def _result(self, task: Task | BadTask, asked: Asked | PermanentTaskFailure) -> TaskResult:
        if isinstance(task, BadTask):
            return TaskResult(task.task_id, ResultCode.PERMANENT_FAILURE, task.why)
        try:
            if isinstance(asked, PermanentTaskFailure):
                raise asked
            text = self.decide(task, asked)
        except TemporaryTaskFailure as exc:
            return TaskResult(task.task_id, ResultCode.TEMPORARY_FAILURE, str(exc))
        except PermanentTaskFailure as exc:
            return TaskResult(task.task_id, ResultCode.PERMANENT_FAILURE, str(exc))
        return TaskResult(task.task_id, ResultCode.SUCCEEDED, text)

    def decide(self, task: Task, asked: Asked) -> str:
        """ "enqueued" or "skipped: <why>"; raises a Permanent/TemporaryTaskFailure."""
        if task.bucket not in self.buckets:
            raise PermanentTaskFailure(
                f"bucket {task.bucket} is not served by this stack "
                f"(neither UploadBucket nor one of ExistingBucketNames: {self.buckets.describe()})"
            )
        if task.key.endswith("/"):
            return "skipped: folder marker"
        try:
            head = self.heads.head(task.bucket, task.key, task.version_id)
            row = self.rows.get(task.bucket, task.key)
            reason = skip_reason(Version(head.etag, head.size), row, asked)
            if reason is not None:
                return f"skipped: {reason.value}"
            self.queue.send(
                backfill_message(
                    task.bucket,
                    task.key,
                    version_id=head.version_id,
                    etag=head.etag,
                    size=head.size,
                    provider=asked.provider,
                )
            )
        except (ObjectMissing, ClientError, *_NETWORK_ERRORS) as exc:
            raise _classified(exc, task) from exc
        return "enqueued"


def _classified(exc: Exception, task: Task) -> TemporaryTaskFailure | PermanentTaskFailure:
    """AWS's error as one of the two failure types, by exception type and error code."""
    where = f"s3://{task.bucket}/{task.key}" + (
        f" (version {task.version_id})" if task.version_id else ""
    )
    if isinstance(exc, ObjectMissing):
        return PermanentTaskFailure(f"object missing: {where}")
    if isinstance(exc, ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        what = f"{exc.operation_name} {code or status}"
        if code in _TRANSIENT_CODES or status >= 500:
            return TemporaryTaskFailure(f"{what} (retried by Batch Operations)")
        return PermanentTaskFailure(f"{what}: {where}")
    return TemporaryTaskFailure(f"{type(exc).__name__} (retried by Batch Operations)")
