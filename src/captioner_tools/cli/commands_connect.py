"""``connect``: turn on an existing bucket's EventBridge notifications, keeping the rest."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from botocore.exceptions import BotoCoreError, ClientError
from rich.markup import escape

from captioner_tools.cli import render
from captioner_tools.cli.options import JsonOpt, deployment_of
from captioner_tools.cli.s3url import parse_s3_url
from captioner_tools.cli.target import Deployment
from captioner_tools.errors import CliError, ToolError
from captioner_tools.notifications import (
    EXISTING_BUCKETS_PARAMETER,
    EventBridgeChange,
    plan_eventbridge,
    write_configuration,
)


def connect(
    ctx: typer.Context,
    url: Annotated[
        str, typer.Argument(metavar="s3://BUCKET", help="The existing bucket to connect.")
    ],
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Show the configuration it would write; write nothing."),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Turn on a bucket's EventBridge notifications, keeping its other notifications.

    For the buckets in the stack's ExistingBucketNames: S3 then sends their Object Created /
    Object Deleted events to EventBridge, and the stack's rule forwards them to the caption
    queue. PutBucketNotificationConfiguration replaces the whole configuration, so this reads
    it, adds EventBridge and writes everything else back unchanged (queue, topic and Lambda
    configurations with their ids, events and filters). Already on: nothing is written.
    """
    target = parse_s3_url(url)
    if target.key.strip("/"):
        raise CliError(f"connect takes a bucket, not a prefix: s3://{target.bucket}")
    deployment = deployment_of(ctx)
    s3 = deployment.client("s3")
    change = plan_eventbridge(s3, target.bucket)
    if change.needed and target.bucket == _upload_bucket(deployment):
        raise CliError(
            f"s3://{target.bucket} is the stack's own upload bucket: S3 already sends its "
            "events to the caption queue; connect is for the buckets in "
            f"{EXISTING_BUCKETS_PARAMETER}"
        )
    listed = listed_in_stack(deployment, target.bucket)
    if change.needed and not dry_run:
        write_configuration(s3, change)
    if as_json:
        render.print_json(
            {
                "bucket": target.bucket,
                "dry_run": dry_run,
                "changed": change.needed,
                "before": change.before,
                "after": change.after,
                "kept": change.kept(),
                "listed_in_stack": listed,
            }
        )
    else:
        _report(change, dry_run)
    if listed is False:
        render.err.print(
            f"note: {escape(target.bucket)} is not in ExistingBucketNames of stack "
            f"{escape(deployment.stack_name)!r}: its events reach EventBridge, but no rule of "
            f"the stack sends them to the caption queue; deploy with "
            f"{EXISTING_BUCKETS_PARAMETER}=…,{escape(target.bucket)}",
            soft_wrap=True,
        )


def listed_in_stack(deployment: Deployment, bucket: str) -> bool | None:
    """Whether the stack's ExistingBucketNames lists the bucket; None when that cannot be
    told (no such stack, names given by flags only, no permission to describe it)."""
    try:
        value = deployment.parameters().get(EXISTING_BUCKETS_PARAMETER)
    except (ToolError, ClientError, BotoCoreError):
        return None
    if value is None:
        return None
    return bucket in [name.strip() for name in value.split(",")]


def _upload_bucket(deployment: Deployment) -> str | None:
    """The deployment's own bucket (flag, environment or stack output), if it can be told."""
    try:
        return deployment.bucket
    except (ToolError, ClientError, BotoCoreError):
        return None


def _report(change: EventBridgeChange, dry_run: bool) -> None:
    where = f"s3://{change.bucket}"
    if not change.needed:
        render.out.print(
            f"EventBridge notifications are already on for {where}: nothing changed.",
            soft_wrap=True,
        )
    elif dry_run:
        render.out.print(
            f"Would turn on EventBridge notifications for {where} (dry run: nothing written).",
            soft_wrap=True,
        )
    else:
        render.out.print(f"Turned on EventBridge notifications for {where}.", soft_wrap=True)
    kept = change.kept()
    if change.needed:
        render.out.print(
            f"Kept its {len(kept)} other notification configuration(s), unchanged:"
            if kept
            else "It had no other notification configuration.",
            soft_wrap=True,
        )
        for line in kept:
            render.out.print(f"  {escape(line)}", soft_wrap=True)
    if dry_run and change.needed:
        render.out.print("The configuration it would write:", soft_wrap=True)
        render.out.print(escape(json.dumps(change.after, indent=2)), soft_wrap=True)
    elif not dry_run:
        render.out.print(
            f"Objects that were there before: captioner backfill {where}/", soft_wrap=True
        )
