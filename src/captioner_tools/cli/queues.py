"""Queue depths and the dead-letter redrive."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from captioner_tools.errors import CliError

SQS_MAX_BATCH = 10
# What SQS-compatible endpoints answer for an API they lack (moto: HTTP 500).
_UNSUPPORTED = {
    "UnsupportedOperation", "AWS.SimpleQueueService.UnsupportedOperation", "InvalidAction",
    "NotImplemented", "InternalFailure", "InternalError", "500", "501",
}  # fmt: skip


@dataclass(frozen=True)
class QueueDepth:
    visible: int  # waiting to be received
    in_flight: int  # received, not yet deleted (being processed, or waiting for a retry)
    delayed: int


def queue_depth(sqs: Any, queue_url: str) -> QueueDepth:
    attrs = sqs.get_queue_attributes(
        QueueUrl=queue_url,
        AttributeNames=[
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        ],
    )["Attributes"]
    return QueueDepth(
        visible=int(attrs.get("ApproximateNumberOfMessages", 0)),
        in_flight=int(attrs.get("ApproximateNumberOfMessagesNotVisible", 0)),
        delayed=int(attrs.get("ApproximateNumberOfMessagesDelayed", 0)),
    )


def queue_arn(sqs: Any, queue_url: str) -> str:
    attrs = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
    return attrs["Attributes"]["QueueArn"]


@dataclass(frozen=True)
class RedriveResult:
    method: str  # "move-task" (SQS StartMessageMoveTask) or "copy" (receive→send→delete)
    moved: int
    failed: int = 0
    to_move: int | None = None
    task_handle: str | None = None
    status: str = "COMPLETED"  # of the move task; RUNNING when not waited for
    note: str = ""


Progress = Callable[[int], None]  # messages moved so far


def redrive(
    sqs: Any,
    dlq_url: str,
    queue_url: str,
    *,
    prefer_move_task: bool = True,
    wait: bool = True,
    timeout_s: float = 600,
    progress: Progress | None = None,
) -> RedriveResult:
    """Move the dead-letter queue's messages back to the caption queue.

    In AWS this is SQS's own message move task. Endpoints without it (the local stack:
    moto does not implement StartMessageMoveTask) get the same effect from a loop that
    receives from the DLQ, sends to the queue and only then deletes from the DLQ.
    """
    note = ""
    if prefer_move_task:
        try:
            return _move_task(sqs, dlq_url, queue_url, wait, timeout_s, progress)
        except ClientError as exc:
            if not _unsupported(exc):
                raise
            note = "this endpoint has no StartMessageMoveTask; copied instead"
    moved, failed = copy_messages(sqs, dlq_url, queue_url, progress=progress)
    return RedriveResult("copy", moved, failed, note=note)


def _move_task(
    sqs: Any,
    dlq_url: str,
    queue_url: str,
    wait: bool,
    timeout_s: float,
    progress: Progress | None,
) -> RedriveResult:
    source = queue_arn(sqs, dlq_url)
    handle = sqs.start_message_move_task(
        SourceArn=source, DestinationArn=queue_arn(sqs, queue_url)
    )["TaskHandle"]
    deadline = time.monotonic() + timeout_s
    while True:
        task = _task(sqs, source, handle)
        moved = int(task.get("ApproximateNumberOfMessagesMoved", 0))
        if progress:
            progress(moved)
        status = str(task.get("Status", "RUNNING"))
        if status != "RUNNING" or not wait or time.monotonic() > deadline:
            if status == "FAILED":
                raise CliError(f"the move task failed: {task.get('FailureReason', 'no reason')}")
            return RedriveResult(
                "move-task",
                moved,
                to_move=task.get("ApproximateNumberOfMessagesToMove"),
                task_handle=handle,
                status=status,
            )
        time.sleep(2)


def _task(sqs: Any, source_arn: str, handle: str) -> dict[str, Any]:
    tasks = sqs.list_message_move_tasks(SourceArn=source_arn, MaxResults=10).get("Results", [])
    return next((t for t in tasks if t.get("TaskHandle") == handle), tasks[0] if tasks else {})


def copy_messages(
    sqs: Any, source_url: str, target_url: str, *, progress: Progress | None = None
) -> tuple[int, int]:
    """Receive → send → delete, ten at a time, until the source looks empty.
    Returns (moved, failed); failed messages stay in the source."""
    moved = failed = 0
    while True:
        messages = sqs.receive_message(
            QueueUrl=source_url,
            MaxNumberOfMessages=SQS_MAX_BATCH,
            WaitTimeSeconds=1,
            VisibilityTimeout=60,  # ours until deleted; back in the DLQ if we crash
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not messages:
            return moved, failed
        sent = _send(sqs, target_url, messages)
        _delete(sqs, source_url, [m for i, m in enumerate(messages) if str(i) in sent])
        moved += len(sent)
        failed += len(messages) - len(sent)
        if progress:
            progress(moved)
        if not sent:  # nothing goes through: stop rather than spin
            return moved, failed


def _send(sqs: Any, queue_url: str, messages: list[dict[str, Any]]) -> set[str]:
    entries = []
    for i, m in enumerate(messages):
        entry: dict[str, Any] = {"Id": str(i), "MessageBody": m["Body"]}
        if m.get("MessageAttributes"):
            entry["MessageAttributes"] = m["MessageAttributes"]
        entries.append(entry)
    resp = sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
    return {s["Id"] for s in resp.get("Successful", [])}


def _delete(sqs: Any, queue_url: str, messages: list[dict[str, Any]]) -> None:
    if messages:
        sqs.delete_message_batch(
            QueueUrl=queue_url,
            Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
            ],
        )


def _unsupported(exc: ClientError) -> bool:
    code = str(exc.response.get("Error", {}).get("Code", ""))
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code in _UNSUPPORTED or status in (500, 501)
