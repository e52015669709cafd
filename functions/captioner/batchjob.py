"""S3 Batch Operations' Lambda invocation, schema 2.0: the event in, the response out.

The event names the job (and the ``UserArguments`` its creator gave) and a list of tasks,
one object each; the key is URL-encoded (``+`` or ``%20`` for a space, ``%2B`` for ``+``)
and the version id is null for an unversioned object or a manifest without versions. The
response has one result per task: ``Succeeded``, ``TemporaryFailure`` (Batch Operations
retries the task) or ``PermanentFailure``. Nothing here knows what a task does.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import unquote_plus

from captioner.errors import CaptionerError

SCHEMA_VERSION = "2.0"
MAX_RESULT_CHARS = 1024  # Batch Operations keeps this much of a result string in the report


class MalformedInvocation(CaptionerError):
    """The event is not a schema 2.0 invocation: there is no task to answer for."""


class ResultCode(StrEnum):
    SUCCEEDED = "Succeeded"
    TEMPORARY_FAILURE = "TemporaryFailure"
    PERMANENT_FAILURE = "PermanentFailure"


@dataclass(frozen=True)
class Task:
    task_id: str
    bucket: str
    key: str  # decoded
    version_id: str | None


@dataclass(frozen=True)
class BadTask:
    """A task that lacks its bucket or key: it fails permanently, the others run."""

    task_id: str
    why: str


@dataclass(frozen=True)
class Invocation:
    invocation_id: str
    job_id: str
    user_arguments: dict[str, str]
    tasks: list[Task | BadTask]


@dataclass(frozen=True)
class TaskResult:
    task_id: str
    code: ResultCode
    text: str


def parse_invocation(event: Any) -> Invocation:
    if not isinstance(event, dict) or event.get("invocationSchemaVersion") != SCHEMA_VERSION:
        version = event.get("invocationSchemaVersion") if isinstance(event, dict) else None
        raise MalformedInvocation(f"not an S3 Batch Operations 2.0 invocation ({version!r})")
    tasks = event.get("tasks")
    if not isinstance(tasks, list):
        raise MalformedInvocation("the invocation has no task list")
    job: dict[str, Any] = event["job"] if isinstance(event.get("job"), dict) else {}
    arguments = job.get("userArguments") or {}
    parsed = [_task(t) for t in tasks]
    return Invocation(
        invocation_id=str(event.get("invocationId", "")),
        job_id=str(job.get("id", "")),
        user_arguments={str(k): str(v) for k, v in arguments.items()}
        if isinstance(arguments, dict)
        else {},
        tasks=parsed,
    )


def _task(raw: Any) -> Task | BadTask:
    if not isinstance(raw, dict) or not raw.get("taskId"):
        # without its id no answer can name it: the whole invocation is malformed
        raise MalformedInvocation("a task has no taskId")
    task_id, bucket, key = str(raw["taskId"]), raw.get("s3Bucket"), raw.get("s3Key")
    if not bucket or not isinstance(bucket, str):
        return BadTask(task_id, "malformed task: no s3Bucket")
    if not key or not isinstance(key, str):
        return BadTask(task_id, "malformed task: no s3Key")
    version = raw.get("s3VersionId")
    return Task(
        task_id=task_id,
        bucket=bucket,
        key=unquote_plus(key),
        version_id=str(version) if version not in (None, "", "null") else None,
    )


def response(invocation_id: str, results: list[TaskResult]) -> dict[str, Any]:
    return {
        "invocationSchemaVersion": SCHEMA_VERSION,
        # a task we forgot to answer for is a failure, never a silent success
        "treatMissingKeysAs": ResultCode.PERMANENT_FAILURE.value,
        "invocationId": invocation_id,
        "results": [
            {
                "taskId": r.task_id,
                "resultCode": r.code.value,
                "resultString": r.text[:MAX_RESULT_CHARS],
            }
            for r in results
        ],
    }
