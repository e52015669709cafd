"""``status`` and ``redrive``: the queues and what the table says about them."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn
from rich.table import Table

from captioner.budget import BUDGET_REASON_PREFIX, read_day
from captioner.store import RowQuery, Status, now_iso
from captioner.sweep import count_parked
from captioner_tools.cli import render
from captioner_tools.cli.options import deployment_of
from captioner_tools.cli.queues import queue_depth, redrive
from captioner_tools.cli.target import Deployment


def status(
    ctx: typer.Context,
    errors: Annotated[
        int, typer.Option("--errors", min=0, help="How many of the newest FAILED rows to show.")
    ] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Queue depth, messages in flight, dead-letter depth, rows per status, today's spend
    against the daily budget, last errors.

    Rows per status are COUNT queries on the by-status-updated index: they read (and are
    billed for) every index entry, about 0.5 read units per 4 KB, so a few million rows
    cost a few cents.
    """
    deployment = deployment_of(ctx)
    sqs, captions = deployment.client("sqs"), deployment.captions()
    queue, dlq = queue_depth(sqs, deployment.queue_url), queue_depth(sqs, deployment.dlq_url)
    counts = captions.count_by_status()
    failed = captions.list_rows(RowQuery(status=Status.FAILED, limit=errors))
    idle, idle_rows = captions.idle_pending(now_iso(), limit=errors)
    report = {
        "queue": {"visible": queue.visible, "in_flight": queue.in_flight, "delayed": queue.delayed},
        "dead_letter": {"visible": dlq.visible, "in_flight": dlq.in_flight},
        "counts": counts,
        "last_errors": failed if errors else [],
        "idle_pending": {"count": idle, "rows": idle_rows if errors else []},
        "budget": budget_report(deployment),
    }
    if as_json:
        render.print_json(report)
    else:
        _print_status(deployment, report)


def budget_report(deployment: Deployment) -> dict[str, Any]:
    """Today's spend (UTC) against the cap: the cap the stack is deployed with (its
    DailyBudgetUsd output), else the one recorded with today's last reservation."""
    ddb = deployment.client("dynamodb")
    today = read_day(deployment.table, ddb, now_iso()[:10])
    cap: float | None = float(today.cap_usd) if today.cap_usd is not None else None
    try:
        deployed = deployment.outputs().get("DailyBudgetUsd")
    except Exception:  # resources named by flags, no stack to ask
        deployed = None
    if deployed not in (None, ""):
        cap = float(deployed)
    return {
        "day": today.day,
        "spent_usd": float(today.spent_usd),
        "cap_usd": cap,  # 0 = no cap; None = not known (no stack, nothing spent today)
        "reservations": today.reservations,
        "refunds": today.refunds,
        "parked": count_parked(deployment.table, ddb),
    }


def _budget_line(budget: dict[str, Any]) -> str:
    spent, cap = budget["spent_usd"], budget["cap_usd"]
    line = f"{spent:.4f} $ spent on {budget['day']} (UTC)"
    if cap:
        style = "bold red" if spent + 1e-9 >= cap or budget["parked"] else "green"
        line += f" of [{style}]{cap:.2f} $[/] ({100 * spent / cap:.0f} %)"
    elif cap == 0:
        line += ", no cap"
    if budget["parked"]:
        line += (
            f"; [bold]{budget['parked']}[/] row(s) PENDING '{BUDGET_REASON_PREFIX} …' "
            "resume by themselves after 00:00 UTC or when DailyBudgetUsd is raised"
        )
    return line


def _print_status(deployment: Deployment, report: dict[str, Any]) -> None:
    queue, dlq, counts = report["queue"], report["dead_letter"], report["counts"]
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("Endpoint", deployment.describe())
    grid.add_row("Table", deployment.table)
    grid.add_row(
        "Queue",
        f"{queue['visible']} waiting, {queue['in_flight']} in flight"
        + (f", {queue['delayed']} delayed" if queue["delayed"] else ""),
    )
    style = "bold red" if dlq["visible"] else "green"
    grid.add_row(
        "Dead-letter queue",
        f"[{style}]{dlq['visible']}[/] message(s)"
        + ("  → inspect, fix, then `captioner redrive`" if dlq["visible"] else ""),
    )
    grid.add_row("Daily budget", _budget_line(report["budget"]))
    render.out.print(grid)
    render.heading("Rows per status")
    table = Table()
    table.add_column("Status")
    table.add_column("Rows", justify="right")
    for name, count in counts.items():
        table.add_row(render.status_text(name), str(count))
    table.add_row("[bold]total", f"[bold]{sum(counts.values())}")
    render.out.print(table)
    idle = report["idle_pending"]
    if idle["count"]:
        render.heading(f"PENDING with an expired lease: {idle['count']}")
        render.out.print(
            "No delivery is working on these: each waits for SQS to retry it (or, with a "
            "'daily budget' reason, for the budget sweep), or is stuck if "
            "its message was dead-lettered while the function was dying (timeout, out of "
            "memory). `captioner redrive` or `captioner backfill s3://BUCKET/PREFIX` finishes "
            "them; a caption already paid for is reused, not paid again."
        )
        stuck = Table()
        stuck.add_column("Updated (UTC)", no_wrap=True, style="dim")
        stuck.add_column("Object", overflow="fold")
        stuck.add_column("Attempts", justify="right")
        stuck.add_column("Reason", overflow="fold")
        for row in idle["rows"]:
            stuck.add_row(
                str(row.get("updated_at", ""))[:19].replace("T", " "),
                f"s3://{row['bucket']}/{row['key']}",
                str(row.get("attempts", "")),
                str(row.get("reason") or "(none: the delivery died before it could say)"),
            )
        render.out.print(stuck)
    if report["last_errors"]:
        render.heading("Newest failures")
        errors = Table()
        errors.add_column("Updated (UTC)", no_wrap=True, style="dim")
        errors.add_column("Object", overflow="fold")
        errors.add_column("Reason / last error", overflow="fold")
        for row in report["last_errors"]:
            why = " — ".join(str(row[k]) for k in ("reason", "last_error") if row.get(k))
            errors.add_row(
                str(row.get("updated_at", ""))[:19].replace("T", " "),
                f"s3://{row['bucket']}/{row['key']}",
                why,
            )
        render.out.print(errors)


def redrive_(
    ctx: typer.Context,
    wait: Annotated[
        bool,
        typer.Option(
            help="Wait for SQS's move task to finish (AWS only; local moves are "
            "always done before returning)."
        ),
    ] = True,
) -> None:
    """Move dead-letter messages back to the caption queue, after fixing their cause.

    In AWS: SQS StartMessageMoveTask. Against the local stack (or any endpoint without
    that API): receive from the dead-letter queue, send to the caption queue, then delete.
    """
    deployment = deployment_of(ctx)
    sqs = deployment.client("sqs")
    before = queue_depth(sqs, deployment.dlq_url)
    if before.visible == 0:
        render.err.print(
            "the dead-letter queue is empty: nothing to redrive"
            + (f" ({before.in_flight} in flight)" if before.in_flight else "")
        )
        return
    with Progress(
        SpinnerColumn(),
        TextColumn("moving messages"),
        BarColumn(),
        MofNCompleteColumn(),
        console=render.err,
        transient=True,
        disable=not render.err.is_terminal,  # no bars in logs and pipes
    ) as progress:
        task = progress.add_task("redrive", total=before.visible)
        result = redrive(
            sqs,
            deployment.dlq_url,
            deployment.queue_url,
            prefer_move_task=not deployment.is_local,
            wait=wait,
            progress=lambda moved: progress.update(task, completed=moved),
        )
    how = "SQS move task" if result.method == "move-task" else "receive → send → delete"
    line = f"moved {result.moved} of {before.visible} message(s) back to the caption queue ({how})"
    if result.status == "RUNNING":
        line = f"move task {result.task_handle} running: {result.moved} moved so far"
    render.out.print(line)
    if result.note:
        render.err.print(f"note: {result.note}")
    if result.failed:
        render.err.print(f"[red]{result.failed} message(s) could not be sent and stay in the DLQ")
        raise typer.Exit(1)
