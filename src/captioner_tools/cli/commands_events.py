"""``captioner events``: the "Caption Status Changed" events on a queue, as they arrive.

The local stack routes the function's events to a queue of its own (stack output
``EventsQueueUrl``). In AWS, point it at a queue one of your EventBridge rules targets
(``--events-queue-url`` / ``CAPTIONER_EVENTS_QUEUE_URL``). It reads and deletes what it
shows: the queue is a feed for one reader.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Annotated, Any

import typer
from rich.markup import escape

from captioner_tools.cli import render
from captioner_tools.cli.options import deployment_of
from captioner_tools.errors import CliError

EVENTS_QUEUE_OUTPUT = "EventsQueueUrl"  # = captioner_tools.local.resources' (no 'local' extra here)


def events(
    ctx: typer.Context,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep waiting for new events (Ctrl-C stops).")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="One event per line, as EventBridge delivered it.")
    ] = False,
    queue_url: Annotated[
        str | None,
        typer.Option(
            "--events-queue-url",
            envvar="CAPTIONER_EVENTS_QUEUE_URL",
            help="SQS queue a rule sends the events to \\[default: the local stack's].",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Show "Caption Status Changed" events: what reached a final status, newest last.

    Prints what is waiting and stops, or with --follow keeps printing until Ctrl-C. The
    events shown are deleted from the queue.
    """
    deployment = deployment_of(ctx)
    url = queue_url or deployment.outputs().get(EVENTS_QUEUE_OUTPUT)
    if not url:
        raise CliError(
            f"stack {deployment.stack_name!r} has no {EVENTS_QUEUE_OUTPUT} output (only the "
            "local stack makes one): pass --events-queue-url, a queue your EventBridge rule "
            "for source 'captioner' targets"
        )
    shown = 0
    try:
        for event in read_events(deployment.client("sqs"), url, follow=follow):
            shown += 1
            if as_json:
                render.out.print(json.dumps(event), soft_wrap=True, markup=False, highlight=False)
            else:
                render.out.print(describe(event), soft_wrap=True)
    except KeyboardInterrupt:
        pass
    if not follow and not as_json and not shown:
        render.err.print("no events waiting")


def read_events(
    sqs: Any, url: str, *, follow: bool, sleep: Callable[[float], None] = time.sleep
) -> Iterator[dict[str, Any]]:
    """Events from the queue in arrival order, deleted once yielded; without ``follow`` it
    stops when the queue is empty."""
    while True:
        resp = sqs.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1 if follow else 0
        )
        messages = resp.get("Messages", [])
        if not messages and not follow:
            return
        batch = []
        for message in messages:
            try:
                batch.append(json.loads(message["Body"]))
            except ValueError:
                batch.append({"detail-type": "unreadable message", "detail": {}})
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        yield from sorted(batch, key=lambda e: str(e.get("detail", {}).get("updated_at", "")))
        if not messages:
            sleep(0.2)


def describe(event: dict[str, Any]) -> str:
    """One line: time, status, object, caption or reason, provider."""
    d = event.get("detail") or {}
    status = str(d.get("status", "?"))
    where = f"s3://{d.get('bucket')}/{d.get('key')}"
    text = d.get("caption") if status == "CAPTIONED" else d.get("reason")
    who = f" [dim]({escape(str(d['provider']))})[/]" if d.get("provider") else ""
    style = render.STATUS_STYLES.get(status, "")
    return (
        f"{escape(str(d.get('updated_at', '')))} [{style}]{escape(status)}[/] "
        f"{escape(where)}{(' ' + escape(str(text))) if text else ''}{who}"
    )
