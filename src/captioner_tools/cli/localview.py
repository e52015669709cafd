"""What ``captioner local up`` (and ``demo --keep-running``) print about a local stack."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from captioner.events import parse_message_body
from captioner_tools.cli.render import STATUS_STYLES, out
from captioner_tools.endpoints import is_loopback
from captioner_tools.local.poller import BatchReport

if TYPE_CHECKING:  # the 'local' extra: imported by the commands once it is there
    from captioner_tools.local.stack import LocalStack


def modelslab_warning(stack: LocalStack) -> str | None:
    """A note when the real ModelsLab is used from the local stack: its presigned URLs on
    127.0.0.1 are out of ModelsLab's reach, so the handler uploads the bytes instead."""
    api = os.environ.get("MODELSLAB_API_URL", "")  # the handler's, once the stack started
    if stack.provider.name != "modelslab" or is_loopback(api):
        return None
    return (
        f"the real ModelsLab ({urlparse(api or 'https://modelslab.com').hostname}) cannot fetch "
        f"presigned URLs on {stack.endpoint_url}: images are uploaded with its base64_to_url "
        "helper instead (CAPTION_IMAGE_TRANSPORT=upload), and each caption costs 0.0047 $."
    )


def banner(stack: LocalStack) -> Panel:
    fn = stack.function
    assert fn is not None
    event = fn.events[0]
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    services = "S3, SQS, DynamoDB, CloudFormation" + (
        ", EventBridge" if stack.existing_buckets else ""
    )
    grid.add_row("Endpoint", f"{stack.endpoint_url}  (moto: {services})")
    grid.add_row("Template", str(stack.template_path))
    grid.add_row(
        "Stack name", f"{stack.stack_name}  (its outputs are registered, as after a deploy)"
    )
    grid.add_row("Bucket", f"{stack.bucket}  (versioned; ObjectCreated/ObjectRemoved → queue)")
    if stack.existing_buckets:
        grid.add_row(
            "Existing buckets",
            f"{', '.join(stack.existing_buckets)}  (stand-ins: unversioned, EventBridge "
            f"notifications on as `captioner connect` does; Object Created/Deleted → "
            f"{', '.join(stack.resources.rules)} → queue)",
        )
    grid.add_row("Table", f"{stack.table}  (indexes by-bucket-updated, by-status-updated)")
    grid.add_row("Queue", stack.queue_url)
    grid.add_row("Dead letters", f"{stack.dlq_url}  (after {stack.max_receive_count} receives)")
    if stack.events_queue_url:
        grid.add_row(
            "Events",
            f'{stack.events_queue_url}  ("Caption Status Changed" on bus '
            f"{stack.template.parameters.get('EventBusName')}: `captioner events --follow`)",
        )
    grid.add_row(
        "Function",
        f"{fn.handler} in this process: batches of {event.batch_size}, "
        f"{event.max_concurrency} at a time, {fn.timeout_s} s timeout",
    )
    grid.add_row("Provider", f"{stack.provider.name} — {stack.provider.why}")
    grid.add_row(
        "Retries",
        f"a failed message comes back after {stack.visibility_timeout} s "
        "(in AWS: the queue's 360 s visibility timeout)",
    )
    if stack.ignored_variables:
        grid.add_row(
            "Ignored",
            ", ".join(stack.ignored_variables) + " (keys come from MODELSLAB_API_KEY and "
            "OPENAI_API_KEY locally; AWS calls go to the endpoint above)",
        )
    grid.add_row("State", "in memory only: Ctrl-C stops the stack and discards everything")
    return Panel(grid, title="Captioner local stack", title_align="left", border_style="green")


def print_usage(stack: LocalStack) -> None:
    """Exports and example commands, unwrapped so they can be copied."""
    env = stack.cli_environment()
    aws = " ".join(f"{k}={v}" for k, v in env.items() if k.startswith("AWS_"))
    names = " ".join(f"{k}={v}" for k, v in env.items() if not k.startswith("AWS_"))
    lines = [
        "[bold]Point the captioner CLI, the AWS CLI or boto3 at it from another shell:[/]",
        f"  export {aws}",
        f"  export {names}",
        f"  aws --endpoint-url {stack.endpoint_url} s3 cp photo.jpg s3://{stack.bucket}/photos/",
        f"  captioner list s3://{stack.bucket}/photos/",
        *(
            f"  aws --endpoint-url {stack.endpoint_url} s3 cp photo.jpg s3://{name}/"
            f"  &&  captioner list s3://{name}/"
            for name in stack.existing_buckets[:1]
        ),
        "  captioner status",
        *(["  captioner events --follow"] if stack.events_queue_url else []),
        f'  boto3.client("s3", endpoint_url="{stack.endpoint_url}", region_name="us-east-1", '
        'aws_access_key_id="testing", aws_secret_access_key="testing")',
    ]
    for line in lines:
        out.print(line if line.startswith("[bold]") else escape(line), soft_wrap=True)


def activity_printer(stack: LocalStack) -> Callable[[BatchReport], None]:
    """One line per message the function handled, with the row it left behind."""

    def show(report: BatchReport) -> None:
        clock = time.strftime("%H:%M:%S")
        if report.error:
            out.print(f"{clock} [red]invocation failed: {escape(report.error)}", soft_wrap=True)
        for message in report.messages:
            out.print(f"{clock} {_describe(stack, message)}", soft_wrap=True)

    return show


def _describe(stack: LocalStack, message: Any) -> str:
    try:
        events = parse_message_body(message.body)
    except Exception:
        events = None
    if events is None:
        what = "[red]malformed message[/]"
    elif not events:
        return "[dim]s3:TestEvent (ignored)[/]"
    else:
        what = ", ".join(escape(f"s3://{e.bucket}/{e.key}") for e in events)
    if message.failed:
        count, limit = message.receive_count, stack.max_receive_count
        if count >= limit:
            return f"{what} [red]failed on delivery {count} of {limit} → dead-letter queue[/]"
        return (
            f"{what} [yellow]failed (delivery {count} of {limit}); "
            f"retry in {stack.visibility_timeout} s[/]"
        )
    return f"{what} → {_row_summary(stack, events or [])}"


def _row_summary(stack: LocalStack, events: list[Any]) -> str:
    if len(events) != 1:
        return "done"
    ev = events[0]
    if ev.is_folder_marker:
        return "[dim]folder marker (ignored)[/]"
    row = stack.captions().get(ev.bucket, ev.key)
    if row is None:
        return "[dim]nothing to record (ignored)[/]"
    status = str(row.get("status"))
    text = row.get("caption") or row.get("reason") or ""
    return f"[{STATUS_STYLES.get(status, '')}]{status}[/] {escape(str(text))}"


def wait_for_interrupt() -> None:
    """Block until Ctrl-C or SIGTERM (a service manager stopping us). SIGINT gets its own
    handler: a shell starts background jobs with it ignored, and then Python never raises
    KeyboardInterrupt."""
    stop = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        while not stop.wait(0.5):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
