"""Make moto's server behave like AWS where concurrency matters.

moto evaluates a DynamoDB condition and applies the update in Python without a lock, so two
requests on two server threads can both pass the same condition; DynamoDB applies each
conditional write atomically (the claim lease and the daily budget counter rely on it). And
moto's ReceiveMessage can hand one message to two concurrent receivers within its visibility
timeout, which SQS never does. And moto's Query and Scan walk the table's items while another
thread's write may add a partition ("RuntimeError: dictionary changed size during
iteration": the budget sweep's query failed 5 and 7 times in two 10,000-upload chaos runs),
which DynamoDB never does. The local stack serializes exactly those calls, in the process
that runs moto's server, so that several event sources or instances (threads, or separate
processes in the benchmarks) see AWS's guarantees. Single-item reads stay concurrent.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

_DYNAMODB_SERIALIZED = (
    "update_item", "put_item", "delete_item", "transact_write_items",
    "query", "scan",
)  # fmt: skip
_locks = {"dynamodb": threading.RLock(), "sqs": threading.RLock()}
_MARK = "_captioner_serialized"


def serialize_moto() -> None:
    """Idempotent: wraps the backends' methods once per process."""
    from moto.dynamodb.models import DynamoDBBackend
    from moto.sqs.models import SQSBackend

    for cls, names, lock in (
        (DynamoDBBackend, _DYNAMODB_SERIALIZED, _locks["dynamodb"]),
        (SQSBackend, ("receive_message",), _locks["sqs"]),
    ):
        for name in names:
            method = getattr(cls, name, None)
            if method is not None and not getattr(method, _MARK, False):
                setattr(cls, name, _locked(method, lock))


def _locked(method: Callable[..., Any], lock: threading.RLock) -> Callable[..., Any]:
    @functools.wraps(method)
    def serialized(*args: Any, **kwargs: Any) -> Any:
        with lock:
            return method(*args, **kwargs)

    setattr(serialized, _MARK, True)
    return serialized
