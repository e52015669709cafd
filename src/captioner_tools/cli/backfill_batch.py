"""``captioner backfill --engine batch`` (create the S3 Batch Operations job) and
``captioner backfill --job JOB_ID`` (its progress); the request and the figures are built in
``batchjobs``, printed here."""

from __future__ import annotations

import csv
import gzip
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import typer
from botocore.exceptions import ClientError
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from captioner.backfillrules import Asked, Version, skip_reason
from captioner_tools.cli import render
from captioner_tools.cli.batchjobs import (
    BatchCost,
    CsvManifest,
    Generated,
    InventoryManifest,
    JobPlan,
    JobProgress,
    Manifest,
    batch_cost,
    csv_manifest_rows,
    failed_result_keys,
    failed_tasks,
    job_request,
    progress_of,
    report_manifest_key,
)
from captioner_tools.cli.s3url import S3Url, parse_s3_url
from captioner_tools.cli.target import Deployment
from captioner_tools.errors import CliError

OUTPUTS = ("BatchBackfillFunctionArn", "BatchOperationsRoleArn", "BatchReportsBucketName")
LOOKUP_LIMIT = 100_000  # known keys up to this many: their rows say what will be captioned
REPORT_PREFIX = "captioner-backfill"
SAME_JOB_SLACK_S = 1.0


@dataclass(frozen=True)
class BatchOptions:
    target: S3Url
    inventory: str | None = None
    manifest: str | None = None
    created_before: datetime | None = None
    report: str | None = None
    report_all: bool = False
    priority: int = 10
    provider: str | None = None
    only_provider: str | None = None
    yes: bool = False
    dry_run: bool = False
    as_json: bool = False


def parse_created_before(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise CliError(
            f"--created-before must be a date or time (ISO 8601), not {text!r}"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def create(deployment: Deployment, options: BatchOptions, price: Callable[[str], float]) -> None:
    outputs = deployment.outputs()
    missing = [k for k in OUTPUTS if not outputs.get(k)]
    if missing:
        raise CliError(
            f"stack {deployment.stack_name!r} has no output {missing[0]}: deploy this version "
            "of template.yaml for --engine batch, or use --engine queue"
        )
    function_arn = outputs["BatchBackfillFunctionArn"]
    partition, account = function_arn.split(":")[1], function_arn.split(":")[4]
    report = (
        parse_s3_url(options.report)
        if options.report
        else S3Url(outputs["BatchReportsBucketName"], REPORT_PREFIX)
    )
    s3 = deployment.client("s3")
    manifest, keys = _manifest(s3, options)
    plan = JobPlan(
        account_id=account,
        bucket=options.target.bucket,
        prefix=options.target.key,
        function_arn=function_arn,
        role_arn=outputs["BatchOperationsRoleArn"],
        report_bucket=report.bucket,
        report_prefix=report.key.rstrip("/") or REPORT_PREFIX,
        all_tasks_in_report=options.report_all,
        manifest=manifest,
        priority=options.priority,
        provider=options.provider,
        only_provider=options.only_provider,
        partition=partition,
    )
    request = job_request(plan)
    provider = options.provider or "modelslab"
    to_caption = _to_caption(deployment, keys, options) if keys is not None else None
    cost = batch_cost(
        None if keys is None else len(keys),
        generated=isinstance(manifest, Generated),
        to_caption=to_caption,
        price_usd=price(provider),
    )
    if not options.as_json:
        _print_cost(cost, provider, price(provider))
    if options.dry_run:
        if options.as_json:
            render.print_json(
                {"dry_run": True, "cost": asdict(cost), "request": _jsonable(request)}
            )
        else:
            render.out.print("dry run: nothing created. The CreateJob request:")
            render.out.print_json(json.dumps(_jsonable(request)))
        return
    if not options.yes:
        if not render.err.is_terminal:
            raise CliError("creating a Batch Operations job needs confirmation: pass --yes")
        typer.confirm("Create the job?", abort=True, err=True)
    asked_at = datetime.now(UTC)
    control = deployment.client("s3control")
    job_id = str(control.create_job(**request)["JobId"])
    described = control.describe_job(AccountId=account, JobId=job_id)
    created_at = described["Job"].get("CreationTime")
    # S3 answers an earlier job's id for a token it knows: that job is older than this call
    # (1 s of slack for the clocks of this machine and S3)
    again = bool(created_at and created_at < asked_at - timedelta(seconds=SAME_JOB_SLACK_S))
    if options.as_json:
        render.print_json({"job_id": job_id, "created": not again, "cost": asdict(cost),
                           "token": request["ClientRequestToken"]})  # fmt: skip
        return
    if again:
        render.out.print(
            f"job {job_id} was already created by this same request at {created_at:%Y-%m-%d %H:%M:%S} "
            "UTC: not created again"
        )
    else:
        render.out.print(f"created job {job_id}")
    render.out.print(f"progress: captioner backfill --job {job_id} --follow")


def _manifest(
    s3: Any, options: BatchOptions
) -> tuple[Manifest, list[tuple[str, str, str | None]] | None]:
    """The job's manifest, and the objects it names when they are known before the job."""
    if options.inventory and options.manifest:
        raise CliError("--inventory and --manifest are two kinds of manifest: give one")
    if options.created_before and (options.inventory or options.manifest):
        raise CliError(
            "--created-before filters the generated manifest: not with --inventory/--manifest"
        )
    if not (options.inventory or options.manifest):
        return Generated(created_before=options.created_before), None
    where = parse_s3_url(options.inventory or options.manifest or "", object_key=True)
    try:
        head = s3.head_object(Bucket=where.bucket, Key=where.key)
        body = s3.get_object(Bucket=where.bucket, Key=where.key)["Body"].read()
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        raise CliError(f"cannot read the manifest {where}: {code}") from None
    etag = str(head["ETag"]).strip('"')
    if options.manifest:
        rows = list(csv_manifest_rows(body.decode()))
        with_versions = any(v for _, _, v in rows)
        return CsvManifest(where.bucket, where.key, etag, with_versions), rows
    return InventoryManifest(where.bucket, where.key, etag), _inventory_rows(s3, where.bucket, body)


def _inventory_rows(s3: Any, bucket: str, body: bytes) -> list[tuple[str, str, str | None]]:
    from urllib.parse import unquote_plus

    manifest = json.loads(body)
    columns = [c.strip() for c in str(manifest.get("fileSchema", "")).split(",")]
    at = {c: i for i, c in enumerate(columns)}
    if "Bucket" not in at or "Key" not in at:
        raise CliError(
            "the inventory's fileSchema has no Bucket and Key columns (CSV inventories only)"
        )
    rows = []
    for file in manifest.get("files", []):
        data = s3.get_object(Bucket=bucket, Key=file["key"])["Body"].read()
        text = gzip.decompress(data).decode() if file["key"].endswith(".gz") else data.decode()
        for cells in csv.reader(text.splitlines()):
            if not cells:
                continue
            version = cells[at["VersionId"]] if "VersionId" in at else None
            rows.append((cells[at["Bucket"]], unquote_plus(cells[at["Key"]]), version or None))
    return rows


def _to_caption(
    deployment: Deployment, keys: list[tuple[str, str, str | None]], options: BatchOptions
) -> int | None:
    """How many of the named objects their rows say will be captioned (the version is not
    known before the job HEADs them, so a row's own etag and size stand in for it)."""
    if len(keys) > LOOKUP_LIMIT:
        return None
    captions = deployment.captions()
    asked = Asked(options.provider, options.only_provider)
    count = 0
    by_bucket: dict[str, list[str]] = {}
    for bucket, key, _ in keys:
        by_bucket.setdefault(bucket, []).append(key)
    for bucket, bucket_keys in by_bucket.items():
        rows = captions.get_many(bucket, bucket_keys)
        for key in bucket_keys:
            row = rows.get(key)
            if key.endswith("/"):
                continue
            version = (
                Version(row.get("etag"), int(row.get("size") or 0)) if row else Version(None, 0)
            )
            count += skip_reason(version, row, asked) is None
    return count


def _print_cost(cost: BatchCost, provider: str, price: float) -> None:
    basis = "per million objects" if cost.per_million else f"for {cost.objects:,} objects"
    render.out.print(
        f"Batch Operations: ${cost.job_usd:,.2f} {basis} (0.25 $ per job + 1.00 $ per million "
        f"tasks), AWS calls of the tasks about ${cost.aws_usd:,.2f}"
    )
    if cost.caption_usd is not None:
        render.out.print(
            f"captions: {cost.to_caption:,} to caption × ${price} ({provider}) = ${cost.caption_usd:,.2f}"
        )
    else:
        render.out.print(
            f"captions: at most ${price * 1e6:,.0f} per million objects captioned ({provider}, "
            f"${price} each; already captioned ones are skipped for free)"
        )


def _jsonable(value: Any) -> Any:
    return json.loads(
        json.dumps(value, default=lambda v: v.isoformat() if isinstance(v, datetime) else str(v))
    )


# -- progress ------------------------------------------------------------------------------------


def show_job(
    deployment: Deployment, job_id: str, *, follow: bool, as_json: bool, interval: float = 5.0
) -> None:
    outputs = deployment.outputs()
    function_arn = outputs.get("BatchBackfillFunctionArn", "")
    if not function_arn:
        raise CliError(f"stack {deployment.stack_name!r} has no output BatchBackfillFunctionArn")
    account = function_arn.split(":")[4]
    control = deployment.client("s3control")

    def describe() -> tuple[JobProgress, dict[str, Any]]:
        try:
            resp = control.describe_job(AccountId=account, JobId=job_id)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            raise CliError(f"job {job_id}: {code or exc}") from None
        return progress_of(resp), resp["Job"]

    progress, job = describe()
    if as_json:
        if not follow:
            render.print_json(progress.as_json())
        else:  # one JSON object per line, as it changes
            print(json.dumps(progress.as_json()), flush=True)
        while follow and not progress.finished:
            time.sleep(interval)
            progress, job = describe()
            print(json.dumps(progress.as_json()), flush=True)
    else:
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[eta]}"),
            console=render.err,
            disable=not render.err.is_terminal,
        ) as bar:
            task = bar.add_task(progress.status, total=progress.total, eta="")
            while True:
                eta = progress.eta_s
                bar.update(task, description=progress.status, total=progress.total,
                           completed=progress.done,
                           eta="" if eta is None else f"ETA {timedelta(seconds=int(eta))}")  # fmt: skip
                if not follow or progress.finished:
                    break
                time.sleep(interval)
                progress, job = describe()
        _print_progress(progress)
    if progress.finished and progress.failed and not as_json:
        _print_failed(deployment, job, job_id)
    if progress.finished and (
        progress.status != "Complete" or (progress.failed and not progress.succeeded)
    ):
        # a job that failed, was cancelled, or failed every task: scripts see it in the code
        raise typer.Exit(1)


def _print_progress(p: JobProgress) -> None:
    total = "?" if p.total is None else f"{p.total:,}"
    eta = p.eta_s
    line = (f"job {p.job_id}: {p.status} · tasks {total} · succeeded {p.succeeded:,} · "
            f"failed {p.failed:,}")  # fmt: skip
    if eta is not None and not p.finished:
        line += f" · ETA {timedelta(seconds=int(eta))}"
    render.out.print(line)
    if p.reason:
        render.out.print(f"reason: {p.reason}")


def _print_failed(
    deployment: Deployment, job: dict[str, Any], job_id: str, limit: int = 50
) -> None:
    report = job.get("Report") or {}
    if not report.get("Bucket"):
        return
    bucket = str(report["Bucket"]).split(":::", 1)[-1]
    s3 = deployment.client("s3")
    try:
        manifest = json.loads(
            s3.get_object(Bucket=bucket, Key=report_manifest_key(report.get("Prefix", ""), job_id))[
                "Body"
            ].read()
        )
        failed = [t for key in failed_result_keys(manifest)
                  for t in failed_tasks(s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode())]  # fmt: skip
    except ClientError as exc:
        render.err.print(
            f"note: no completion report yet ({exc.response.get('Error', {}).get('Code', '')})"
        )
        return
    render.out.print(f"failed tasks ({len(failed)}):")
    for t in failed[:limit]:
        render.out.print(f"  s3://{t.bucket}/{t.key}  {t.code}: {t.message}", soft_wrap=True)
    if len(failed) > limit:
        render.out.print(
            f"  … and {len(failed) - limit} more in s3://{bucket}/{report_manifest_key(report.get('Prefix', ''), job_id)}"
        )
