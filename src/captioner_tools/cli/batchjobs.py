"""``captioner backfill --engine batch``: the S3 Batch Operations job that backfills a bucket
through ``BatchBackfillFunction``, and its progress.

``job_request`` builds the ``CreateJob`` request from plain values (a manifest generator by
default; a CSV or an S3 Inventory manifest), with a ``ClientRequestToken`` that is a hash of
the request itself: the same command run twice asks for one job, and S3 creates it once.
``batch_cost`` prices it before anything is created; ``progress_of`` reads ``DescribeJob``;
``failed_tasks`` reads the completion report. No boto3 response leaves this module.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import unquote_plus

# S3 Batch Operations' prices (us-east-1, https://aws.amazon.com/s3/pricing/ "Management &
# insights"): per job, and per million object operations.
BATCH_JOB_FEE_USD = 0.25
BATCH_PER_MILLION_USD = 1.00
# The manifest generator lists the bucket: one LIST (0.005 $ per 1,000) per 1,000 keys.
LIST_PER_MILLION_USD = 0.005
# What each task costs besides: one Lambda invocation (0.20 $ per million, arm64 256 MB
# about 40 ms: 0.13 $), a HEAD (0.40 $ per million), a consistent GetItem (0.125 $ per
# million read units), and for the enqueued ones a SendMessage (0.40 $ per million).
TASK_AWS_PER_MILLION_USD = 0.20 + 0.13 + 0.40 + 0.125
SEND_PER_MILLION_USD = 0.40

# Storage classes HEAD and a ranged GET can read at once (archived objects need a restore).
READABLE_STORAGE_CLASSES = (
    "STANDARD", "STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING", "REDUCED_REDUNDANCY",
    "GLACIER_IR",
)  # fmt: skip
FINAL_STATUSES = frozenset({"Complete", "Failed", "Cancelled"})


@dataclass(frozen=True)
class Generated:
    """S3 lists the bucket itself (no inventory, no wait), with these filters."""

    created_before: datetime | None = None
    storage_classes: tuple[str, ...] = READABLE_STORAGE_CLASSES


@dataclass(frozen=True)
class CsvManifest:
    """A CSV of ``bucket,key[,version]`` rows (keys URL-encoded) already in S3."""

    bucket: str
    key: str
    etag: str
    with_versions: bool = False


@dataclass(frozen=True)
class InventoryManifest:
    """An S3 Inventory report's ``manifest.json``."""

    bucket: str
    key: str
    etag: str


Manifest = Generated | CsvManifest | InventoryManifest


@dataclass(frozen=True)
class JobPlan:
    account_id: str
    bucket: str
    prefix: str
    function_arn: str
    role_arn: str
    report_bucket: str
    report_prefix: str = "captioner-backfill"
    all_tasks_in_report: bool = False
    manifest: Manifest = field(default_factory=Generated)
    priority: int = 10
    provider: str | None = None
    only_provider: str | None = None
    partition: str = "aws"

    def arn(self, bucket: str, key: str | None = None) -> str:
        return f"arn:{self.partition}:s3:::{bucket}" + (f"/{key}" if key is not None else "")


def job_request(plan: JobPlan) -> dict[str, Any]:
    """The ``s3control.create_job`` keyword arguments, token included."""
    arguments = {
        k: v for k, v in (("provider", plan.provider), ("onlyProvider", plan.only_provider)) if v
    }
    operation: dict[str, Any] = {
        "FunctionArn": plan.function_arn,
        "InvocationSchemaVersion": "2.0",
    }
    if arguments:
        operation["UserArguments"] = arguments
    request: dict[str, Any] = {
        "AccountId": plan.account_id,
        "ConfirmationRequired": False,
        "Operation": {"LambdaInvoke": operation},
        "Report": {
            "Bucket": plan.arn(plan.report_bucket),
            "Format": "Report_CSV_20180820",
            "Enabled": True,
            "Prefix": plan.report_prefix,
            "ReportScope": "AllTasks" if plan.all_tasks_in_report else "FailedTasksOnly",
        },
        "Priority": plan.priority,
        "RoleArn": plan.role_arn,
        "Description": _description(plan),
    }
    manifest = plan.manifest
    if isinstance(manifest, Generated):
        filters: dict[str, Any] = {"MatchAnyStorageClass": list(manifest.storage_classes)}
        if plan.prefix:
            filters["KeyNameConstraint"] = {"MatchAnyPrefix": [plan.prefix]}
        if manifest.created_before:
            filters["CreatedBefore"] = manifest.created_before
        request["ManifestGenerator"] = {
            "S3JobManifestGenerator": {
                "ExpectedBucketOwner": plan.account_id,
                "SourceBucket": plan.arn(plan.bucket),
                "EnableManifestOutput": False,
                "Filter": filters,
            }
        }
    else:
        is_csv = isinstance(manifest, CsvManifest)
        spec: dict[str, Any] = {
            "Format": "S3BatchOperations_CSV_20180820"
            if is_csv
            else "S3InventoryReport_CSV_20161130"
        }
        if isinstance(manifest, CsvManifest):
            spec["Fields"] = ["Bucket", "Key", *(["VersionId"] if manifest.with_versions else [])]
        request["Manifest"] = {
            "Spec": spec,
            "Location": {
                "ObjectArn": plan.arn(manifest.bucket, manifest.key),
                "ETag": manifest.etag,
            },
        }
    request["ClientRequestToken"] = request_token(request)
    return request


def request_token(request: dict[str, Any]) -> str:
    """A hash of everything the job would do: the same request, the same token (64 hex)."""
    canonical = json.dumps(request, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _description(plan: JobPlan) -> str:
    what = f"captioner backfill s3://{plan.bucket}/{plan.prefix}"
    return what[:256]


# -- cost --------------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchCost:
    objects: int | None  # None: not known before the job lists the bucket
    job_usd: float  # Batch Operations' fee (and the listing), for the objects or per million
    aws_usd: float  # Lambda, HEAD, GetItem, SendMessage of the tasks (same basis)
    to_caption: int | None  # objects the rows say will be captioned (None: not looked up)
    caption_usd: float | None  # their caption price at the provider

    @property
    def per_million(self) -> bool:
        return self.objects is None


def batch_cost(
    objects: int | None,
    *,
    generated: bool,
    to_caption: int | None = None,
    price_usd: float = 0.0,
) -> BatchCost:
    """The job's price for ``objects`` tasks (per million when unknown), and what captioning
    ``to_caption`` of them costs at ``price_usd`` each."""
    n = 1_000_000 if objects is None else objects
    per_task = BATCH_PER_MILLION_USD + (LIST_PER_MILLION_USD if generated else 0.0)
    job = BATCH_JOB_FEE_USD + n / 1e6 * per_task
    sends = n if to_caption is None else to_caption
    aws = n / 1e6 * TASK_AWS_PER_MILLION_USD + sends / 1e6 * SEND_PER_MILLION_USD
    caption = None if to_caption is None else round(to_caption * price_usd, 4)
    return BatchCost(objects, round(job, 4), round(aws, 4), to_caption, caption)


def csv_manifest_rows(text: str) -> Iterator[tuple[str, str, str | None]]:
    """(bucket, decoded key, version id or None) of each row of a Batch Operations CSV."""
    for row in csv.reader(io.StringIO(text)):
        if not row or not row[0].strip():
            continue
        version = row[2] if len(row) > 2 and row[2] else None
        yield row[0], unquote_plus(row[1]), version


def csv_manifest(objects: Iterable[tuple[str, str, str | None]]) -> tuple[str, bool]:
    """A Batch Operations CSV manifest for (bucket, key, version) triples (keys URL-encoded,
    as S3 requires) and whether it names versions."""
    from urllib.parse import quote_plus

    rows = list(objects)
    with_versions = any(v for _, _, v in rows)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    for bucket, key, version in rows:
        writer.writerow([bucket, quote_plus(key), *([version or ""] if with_versions else [])])
    return buf.getvalue(), with_versions


# -- progress ----------------------------------------------------------------------------


@dataclass(frozen=True)
class JobProgress:
    job_id: str
    status: str
    total: int | None
    succeeded: int
    failed: int
    elapsed_s: float
    reason: str = ""

    @property
    def done(self) -> int:
        return self.succeeded + self.failed

    @property
    def finished(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the pace so far (None until there is a pace)."""
        if self.finished:
            return 0.0
        if not self.total or not self.done or self.elapsed_s <= 0:
            return None
        return (self.total - self.done) * self.elapsed_s / self.done

    def as_json(self) -> dict[str, Any]:
        eta = self.eta_s
        return {
            "job_id": self.job_id,
            "status": self.status,
            "tasks_total": self.total,
            "tasks_succeeded": self.succeeded,
            "tasks_failed": self.failed,
            "elapsed_s": round(self.elapsed_s, 1),
            "eta_s": None if eta is None else round(eta, 1),
            "reason": self.reason,
        }


def progress_of(describe_job_response: dict[str, Any]) -> JobProgress:
    job = describe_job_response["Job"]
    summary = job.get("ProgressSummary") or {}
    failures = "; ".join(
        f"{f.get('FailureCode', '')}: {f.get('FailureReason', '')}"
        for f in job.get("FailureReasons") or []
    )
    return JobProgress(
        job_id=str(job["JobId"]),
        status=str(job.get("Status", "")),
        total=summary.get("TotalNumberOfTasks"),
        succeeded=int(summary.get("NumberOfTasksSucceeded", 0)),
        failed=int(summary.get("NumberOfTasksFailed", 0)),
        elapsed_s=float((summary.get("Timers") or {}).get("ElapsedTimeInActiveSeconds", 0)),
        reason=failures or str(job.get("StatusUpdateReason") or ""),
    )


# -- the completion report -----------------------------------------------------------------


@dataclass(frozen=True)
class FailedTask:
    bucket: str
    key: str
    version_id: str | None
    code: str
    message: str


def report_manifest_key(prefix: str, job_id: str) -> str:
    """Where S3 writes a job's report manifest (``<prefix>/job-<id>/manifest.json``)."""
    return (
        f"{prefix.rstrip('/')}/job-{job_id}/manifest.json"
        if prefix
        else f"job-{job_id}/manifest.json"
    )


def failed_result_keys(report_manifest: dict[str, Any]) -> list[str]:
    return [
        str(r["Key"])
        for r in report_manifest.get("Results", [])
        if r.get("TaskExecutionStatus") == "failed"
    ]


def failed_tasks(report_csv: str) -> list[FailedTask]:
    """The rows of a ``Report_CSV_20180820`` results file: bucket, key (URL-encoded),
    version, task status, error code, HTTP status, result message."""
    found = []
    for row in csv.reader(io.StringIO(report_csv)):
        if len(row) < 7 or row[3] != "failed":
            continue
        found.append(FailedTask(row[0], unquote_plus(row[1]), row[2] or None, row[4], row[6]))
    return found
