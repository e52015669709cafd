"""``backfill``: caption what was in the bucket before the stack (or re-caption), or build
the word index of the rows already there (``--reindex``)."""

from __future__ import annotations

import os
from dataclasses import asdict
from typing import Annotated

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from captioner.config import Config
from captioner.providers import PROVIDERS
from captioner.store import CaptionStore
from captioner_tools.cli import backfill_batch, render
from captioner_tools.cli.backfill import (
    BackfillPlan,
    BackfillStats,
    ReindexStats,
    run_backfill,
    run_reindex,
)
from captioner_tools.cli.options import deployment_of
from captioner_tools.cli.s3url import parse_s3_url
from captioner_tools.cli.target import Deployment
from captioner_tools.doctor import served_buckets
from captioner_tools.errors import CliError

BATCH_PANEL = "S3 Batch Operations (--engine batch, --job)"


def backfill(
    ctx: typer.Context,
    url: Annotated[
        str | None, typer.Argument(metavar="s3://BUCKET/PREFIX", help="What to caption.")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only count, and estimate the ModelsLab cost.")
    ] = False,
    provider: Annotated[
        str | None,
        typer.Option(
            help="Ask the function for this provider (modelslab|local) instead of "
            "its default; a caption by another provider is then not skipped."
        ),
    ] = None,
    only_provider: Annotated[
        str | None,
        typer.Option(
            help="Re-enqueue only objects whose row names this provider, even if "
            "captioned (e.g. --provider modelslab --only-provider local)."
        ),
    ] = None,
    reindex: Annotated[
        bool,
        typer.Option(
            "--reindex",
            help="Instead: build the word index of `captioner search` for the rows under "
            "the prefix (tables written before it); no provider call, nothing enqueued.",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    engine: Annotated[
        str,
        typer.Option(
            help="queue: list from here and send to the caption queue (small buckets); "
            "batch: an S3 Batch Operations job runs the backfill in AWS (millions of objects).",
        ),
    ] = "queue",
    inventory: Annotated[
        str | None,
        typer.Option(
            metavar="s3://…/manifest.json",
            rich_help_panel=BATCH_PANEL,
            help="An S3 Inventory report's manifest.json instead of listing the bucket.",
        ),
    ] = None,
    manifest: Annotated[
        str | None,
        typer.Option(
            metavar="s3://…/objects.csv",
            rich_help_panel=BATCH_PANEL,
            help="A CSV manifest (bucket,key[,version], keys URL-encoded).",
        ),
    ] = None,
    created_before: Annotated[
        str | None,
        typer.Option(
            metavar="DATE",
            rich_help_panel=BATCH_PANEL,
            help="Only objects created before this date or time (ISO 8601, UTC).",
        ),
    ] = None,
    report: Annotated[
        str | None,
        typer.Option(
            metavar="s3://BUCKET/PREFIX",
            rich_help_panel=BATCH_PANEL,
            help="Where the completion report goes \\[default: the stack's "
            "BatchReportsBucket, captioner-backfill/].",
        ),
    ] = None,
    report_all: Annotated[
        bool,
        typer.Option(
            "--report-all",
            rich_help_panel=BATCH_PANEL,
            help="Report every task, not only the failed ones.",
        ),
    ] = False,
    priority: Annotated[
        int,
        typer.Option(
            min=0,
            max=2147483647,
            rich_help_panel=BATCH_PANEL,
            help="The job's priority (higher runs first).",
        ),
    ] = 10,
    yes: Annotated[
        bool,
        typer.Option("--yes", rich_help_panel=BATCH_PANEL, help="Create without asking."),
    ] = False,
    job: Annotated[
        str | None,
        typer.Option(
            metavar="JOB_ID",
            rich_help_panel=BATCH_PANEL,
            help="Instead: show the progress of this Batch Operations job.",
        ),
    ] = None,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow",
            rich_help_panel=BATCH_PANEL,
            help="With --job: until the job ends, then its failed keys.",
        ),
    ] = False,
) -> None:
    """Enqueue the objects already in the bucket, skipping those already captioned.

    Lists the objects (ListObjectsV2, folder markers skipped), looks their rows up
    (BatchGetItem), skips those CAPTIONED for the same version (same ETag and size) and
    those REJECTED for it (unless --provider asks for another provider), and sends the rest
    to the caption queue in batches of 10, as S3 notifications would.

    With --engine batch: creates an S3 Batch Operations job that does the same in AWS
    (BatchBackfillFunction decides each object, with the same rules): the cost is printed
    first, the same command twice is one job; --job JOB_ID shows its progress.

    With --reindex: reads the rows under the prefix (the bucket's index) and writes the
    postings of each row whose word index is missing or out of date (one transaction per
    row: about 2 write units per word); --dry-run counts them.
    """
    if job:
        if url:
            raise CliError("--job shows a job's progress: it takes no s3:// argument")
        backfill_batch.show_job(deployment_of(ctx), job, follow=follow, as_json=as_json)
        return
    if url is None:
        raise CliError("missing s3://BUCKET/PREFIX (or --job JOB_ID)")
    if engine not in ("queue", "batch"):
        raise CliError(f"--engine must be queue or batch, not {engine!r}")
    target = parse_s3_url(url)
    batch_only = {"--inventory": inventory, "--manifest": manifest, "--created-before":
                  created_before, "--report": report, "--report-all": report_all, "--yes": yes,
                  "--follow": follow, "--priority": priority != 10}  # fmt: skip
    if engine == "queue" and any(batch_only.values()):
        flag = next(k for k, v in batch_only.items() if v)
        raise CliError(f"{flag} is for --engine batch")
    if engine == "batch":
        if reindex:
            raise CliError("--reindex runs from here: not with --engine batch")
        options = backfill_batch.BatchOptions(
            target=target, inventory=inventory, manifest=manifest,
            created_before=backfill_batch.parse_created_before(created_before), report=report,
            report_all=report_all, priority=priority,
            provider=_provider(provider, "--provider"),
            only_provider=_provider(only_provider, "--only-provider"),
            yes=yes, dry_run=dry_run, as_json=as_json,
        )  # fmt: skip
        deployment = deployment_of(ctx)
        # before a job (and its fee) exists: every task of an unserved bucket would fail
        refuse_unserved(deployment, target.bucket)
        backfill_batch.create(deployment, options, _price)
        return
    if reindex:
        if provider or only_provider:
            raise CliError("--reindex captions nothing: it takes no --provider/--only-provider")
        _reindex(ctx, target.bucket, target.key, dry_run, as_json)
        return
    plan = BackfillPlan(
        bucket=target.bucket,
        prefix=target.key,
        provider=_provider(provider, "--provider"),
        only_provider=_provider(only_provider, "--only-provider"),
        dry_run=dry_run,
    )
    if plan.provider and plan.provider == plan.only_provider:
        render.err.print(
            f"note: rows captioned by {plan.provider} are done for {plan.provider}: "
            "the function will skip them"
        )
    deployment = deployment_of(ctx)
    refuse_unserved(deployment, target.bucket)
    captions = deployment.captions()
    queue_url = "" if dry_run else deployment.queue_url
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=render.err,
        transient=True,
        disable=not render.err.is_terminal,  # no bars in logs and pipes
    ) as progress:
        task = progress.add_task("listing…")

        def show(stats: BackfillStats) -> None:
            verb = "to enqueue" if dry_run else "enqueued"
            progress.update(
                task,
                description=f"listed {stats.listed} · {verb} {stats.enqueued}"
                f" · skipped {stats.captioned + stats.rejected + stats.other_provider + stats.folders}",
            )

        stats = run_backfill(
            deployment.client("s3"),
            captions,
            deployment.client("sqs"),
            queue_url=queue_url,
            plan=plan,
            on_progress=show,
        )
    _report(stats, plan, as_json)
    if stats.failed:
        raise typer.Exit(1)


def _report(stats: BackfillStats, plan: BackfillPlan, as_json: bool) -> None:
    price = _price(plan.provider or "modelslab")
    cost = stats.cost_usd(price)
    if as_json:
        render.print_json(
            {
                "bucket": plan.bucket,
                "prefix": plan.prefix,
                "dry_run": plan.dry_run,
                "listed": stats.listed,
                "folders": stats.folders,
                "already_captioned": stats.captioned,
                "already_rejected": stats.rejected,
                "other_provider": stats.other_provider,
                "enqueued": stats.enqueued,
                "events_owed": stats.events_owed,
                "failed": stats.failed,
                "estimated_cost_usd": cost,
            }
        )
        return
    render.heading(
        f"Backfill of s3://{plan.bucket}/{plan.prefix}" + (" (dry run)" if plan.dry_run else "")
    )
    table = Table()
    table.add_column("")
    table.add_column("Objects", justify="right")
    table.add_row("listed", str(stats.listed))
    table.add_row("skipped: folder markers", str(stats.folders))
    table.add_row("skipped: already captioned", str(stats.captioned))
    table.add_row("skipped: already rejected (same version)", str(stats.rejected))
    if plan.only_provider:
        table.add_row(f"skipped: not captioned by {plan.only_provider}", str(stats.other_provider))
    table.add_row(
        "[bold]would enqueue" if plan.dry_run else "[bold]enqueued", f"[bold]{stats.enqueued}"
    )
    if stats.events_owed:
        table.add_row("  of which finished, their event owed (free)", str(stats.events_owed))
    if stats.failed:
        table.add_row("[red]failed to enqueue", f"[red]{stats.failed}")
    render.out.print(table)
    if plan.provider == "local":
        render.out.print("estimated cost: $0 (offline local provider)")
    else:
        who = "" if plan.provider else ", if the deployment captions with ModelsLab"
        paid = stats.enqueued - stats.events_owed
        render.out.print(f"estimated cost: {paid} × ${price} = ${cost:.4f}{who}")


def _price(provider: str) -> float:
    """The provider's price per caption: its ``*_PRICE_USD`` variable, or the default."""
    return Config.from_env({**os.environ, "CAPTIONS_TABLE": "-"}).price_usd(provider)


def _provider(name: str | None, flag: str) -> str | None:
    if name is None:
        return None
    value = name.strip().lower()
    if value not in PROVIDERS:
        raise CliError(f"{flag} must be one of {', '.join(sorted(PROVIDERS))}, not {name!r}")
    return value


def _reindex(ctx: typer.Context, bucket: str, prefix: str, dry_run: bool, as_json: bool) -> None:
    deployment = deployment_of(ctx)
    store = CaptionStore(deployment.table, deployment.client("dynamodb"))
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=render.err,
        transient=True,
        disable=not render.err.is_terminal,
    ) as progress:
        task = progress.add_task("reading rows…")

        def show(stats: ReindexStats) -> None:
            progress.update(task, description=f"rows {stats.rows} · indexed {stats.indexed}")

        stats = run_reindex(
            store, deployment.captions(), bucket=bucket, prefix=prefix, dry_run=dry_run,
            on_progress=show,
        )  # fmt: skip
    summary = {"bucket": bucket, "prefix": prefix, "dry_run": dry_run, **asdict(stats)}
    if as_json:
        render.print_json(summary)
        return
    render.heading(f"Reindex of s3://{bucket}/{prefix}" + (" (dry run)" if dry_run else ""))
    table = Table()
    table.add_column("")
    table.add_column("Rows", justify="right")
    verb = "would be " if dry_run else ""
    table.add_row("read", str(stats.rows))
    table.add_row("already indexed", str(stats.current))
    table.add_row(f"[bold]{verb}indexed", f"[bold]{stats.indexed}")
    table.add_row(f"{verb}taken out of the index", str(stats.unindexed))
    if stats.changed:
        table.add_row("changed meanwhile (left to their writer)", str(stats.changed))
    render.out.print(table)


def refuse_unserved(deployment: Deployment, bucket: str) -> None:
    """A bucket the stack does not serve: every message would fail (the function's role
    cannot read it) into the dead-letter queue. Not checked when no stack says (flags only)."""
    served = served_buckets(deployment)
    if served is None or bucket in served:
        return
    raise CliError(
        f"stack {deployment.stack_name!r} does not serve s3://{bucket} (it serves "
        f"{', '.join(served)}): deploy with ExistingBucketNames=...,{bucket}, run "
        f"`captioner connect s3://{bucket}`, then backfill"
    )
