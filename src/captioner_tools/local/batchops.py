"""A stand-in for S3 Batch Operations in the local stack (moto has no Batch Operations jobs).

``LocalBatchOperations`` takes the same ``CreateJob`` request (the REST-XML body the CLI's
``s3control`` client sends to the stack's endpoint), builds the task list the same way (the
manifest generator's prefix, created-before and storage-class filters, a CSV manifest, or an
S3 Inventory ``manifest.json``), invokes ``BatchBackfillFunction``'s handler in this process
with schema 2.0 events (one task each, as S3 does), retries temporary failures, applies
Batch Operations' failure threshold (after 1,000 tasks, more than half failed: the job
fails), writes the completion report in S3's format and answers ``DescribeJob``.

``install`` puts it in front of moto's server: requests under ``/v20180820/jobs`` are
answered here while a stack is running, everything else goes to moto as before. A request
with the ``ClientRequestToken`` of an earlier job gets that job (S3's idempotency).
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import logging
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote_plus

from captioner_tools.local.defaults import ACCOUNT_ID

log = logging.getLogger(__name__)

NS = "http://awss3control.amazonaws.com/doc/2018-08-20/"
FAILURE_THRESHOLD_TASKS = 1000  # S3: the threshold applies once this many tasks have run
FAILURE_THRESHOLD_RATE = 0.5
TEMPORARY_RETRIES = 3  # S3 retries a TemporaryFailure; then the task counts as failed
LIST_FIELDS = {"MatchAnyPrefix", "MatchAnyStorageClass", "Fields", "MatchAnySuffix",
               "MatchAnySubstring", "ObjectReplicationStatuses", "MatchAnyObjectEncryption"}  # fmt: skip

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


@dataclass(frozen=True)
class TaskRef:
    bucket: str
    key: str
    version_id: str | None = None


@dataclass
class LocalJob:
    job_id: str
    request: dict[str, Any]
    created: datetime
    status: str = "New"
    total: int | None = None
    succeeded: int = 0
    failed: int = 0
    started: float | None = None
    ended: float | None = None
    reason: str = ""
    results: list[tuple[TaskRef, str, str]] = field(default_factory=list)  # ref, code, text
    lock: threading.Lock = field(default_factory=threading.Lock)

    def elapsed(self) -> float:
        if self.started is None:
            return 0.0
        return (self.ended or time.monotonic()) - self.started


@dataclass
class _Context:
    """What Powertools' logger reads from a Lambda context."""

    function_name: str = "captioner-local-BatchBackfillFunction"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = f"arn:aws:lambda:us-east-1:{ACCOUNT_ID}:function:batch"
    aws_request_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


class LocalBatchOperations:
    def __init__(self, s3: Any, handler: Handler, *, workers: int = 4) -> None:
        self.s3 = s3
        self.handler = handler
        self.workers = workers
        self.jobs: dict[str, LocalJob] = {}
        self._by_token: dict[str, str] = {}
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    # -- the API ---------------------------------------------------------------------------

    def create_job(self, request: dict[str, Any]) -> tuple[str, bool]:
        """(job id, created now); a known token returns its job."""
        token = str(request.get("ClientRequestToken", ""))
        with self._lock:
            if token and token in self._by_token:
                return self._by_token[token], False
            job = LocalJob(str(uuid.uuid4()), request, datetime.now(UTC))
            self.jobs[job.job_id] = job
            if token:
                self._by_token[token] = job.job_id
        thread = threading.Thread(target=self.run, args=(job,), name=f"batch-{job.job_id[:8]}")
        thread.daemon = True
        self._threads.append(thread)
        thread.start()
        return job.job_id, True

    def wait(self, job_id: str, timeout: float = 300) -> LocalJob:
        deadline = time.monotonic() + timeout
        job = self.jobs[job_id]
        while job.status not in ("Complete", "Failed", "Cancelled"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {job.status}")
            time.sleep(0.05)
        return job

    # -- running a job -----------------------------------------------------------------------

    def run(self, job: LocalJob) -> None:
        job.status, job.started = "Preparing", time.monotonic()
        try:
            tasks = list(self.tasks_of(job.request))
        except Exception as exc:  # the manifest could not be read: the job fails, as in S3
            job.status, job.reason, job.ended = (
                "Failed",
                f"ManifestNotFound: {exc}",
                time.monotonic(),
            )
            return
        job.total, job.status = len(tasks), "Active"
        operation = job.request["Operation"]["LambdaInvoke"]
        arguments = operation.get("UserArguments") or {}
        with ThreadPoolExecutor(self.workers, thread_name_prefix="batch-task") as pool:
            for ref, code, text in pool.map(lambda t: self._task(job, t, arguments), tasks):
                with job.lock:
                    job.results.append((ref, code, text))
                    if code == "Succeeded":
                        job.succeeded += 1
                    else:
                        job.failed += 1
                    done = job.succeeded + job.failed
                    if (done >= FAILURE_THRESHOLD_TASKS and job.status == "Active"
                            and job.failed / done > FAILURE_THRESHOLD_RATE):  # fmt: skip
                        job.status = "Failing"
                        job.reason = "TaskFailureThresholdExceeded"
        try:
            self._write_report(job)
        except Exception as exc:  # S3 fails a job whose report cannot be written
            job.status, job.reason = "Failing", f"CompletionReportWriteFailed: {type(exc).__name__}"
        job.ended = time.monotonic()
        job.status = "Failed" if job.status == "Failing" else "Complete"

    def _task(
        self, job: LocalJob, ref: TaskRef, arguments: dict[str, str]
    ) -> tuple[TaskRef, str, str]:
        if job.status == "Failing":
            return ref, "PermanentFailure", "job failed: TaskFailureThresholdExceeded"
        code, text = "TemporaryFailure", ""
        for attempt in range(TEMPORARY_RETRIES + 1):
            event = {
                "invocationSchemaVersion": "2.0",
                "invocationId": uuid.uuid4().hex,
                "job": {"id": job.job_id, "userArguments": arguments},
                "tasks": [{
                    "taskId": uuid.uuid4().hex,
                    "s3Bucket": ref.bucket,
                    "s3Key": quote_plus(ref.key),
                    "s3VersionId": ref.version_id,
                }],
            }  # fmt: skip
            try:
                [result] = self.handler(event, _Context())["results"]
                code, text = str(result["resultCode"]), str(result.get("resultString", ""))
            except Exception as exc:  # a failed invocation: S3 retries it like a temporary one
                code, text = "TemporaryFailure", f"invocation failed: {type(exc).__name__}"
            if code != "TemporaryFailure":
                break
            time.sleep(min(0.05 * 2**attempt, 0.5))
        if code == "TemporaryFailure":
            code = "PermanentFailure"  # out of retries: reported as failed
        return ref, code, text

    def tasks_of(self, request: dict[str, Any]) -> Iterator[TaskRef]:
        if "ManifestGenerator" in request:
            yield from self._generated(request["ManifestGenerator"]["S3JobManifestGenerator"])
            return
        manifest = request["Manifest"]
        bucket, key = _object_arn(manifest["Location"]["ObjectArn"])
        head = self.s3.head_object(Bucket=bucket, Key=key)
        want = str(manifest["Location"].get("ETag", "")).strip('"')
        if want and head["ETag"].strip('"') != want:
            raise ValueError(f"the manifest's ETag is {head['ETag']}, not {want}")
        body = self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        if manifest["Spec"]["Format"] == "S3BatchOperations_CSV_20180820":
            fields = manifest["Spec"].get("Fields") or ["Bucket", "Key"]
            yield from _csv_tasks(body.decode(), fields)
        else:
            yield from self._inventory(bucket, json.loads(body))

    def _generated(self, spec: dict[str, Any]) -> Iterator[TaskRef]:
        bucket, _ = _object_arn(spec["SourceBucket"] + "/")
        filters = spec.get("Filter") or {}
        prefixes = (filters.get("KeyNameConstraint") or {}).get("MatchAnyPrefix") or [""]
        classes = set(filters.get("MatchAnyStorageClass") or [])
        before = _datetime(filters.get("CreatedBefore"))
        for prefix in prefixes:
            pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            for page in pages:
                for obj in page.get("Contents", []):
                    if classes and obj.get("StorageClass", "STANDARD") not in classes:
                        continue
                    if before and obj["LastModified"] >= before:
                        continue
                    yield TaskRef(bucket, obj["Key"])

    def _inventory(self, bucket: str, manifest: dict[str, Any]) -> Iterator[TaskRef]:
        columns = [c.strip() for c in str(manifest["fileSchema"]).split(",")]
        at = {name: i for i, name in enumerate(columns)}
        for file in manifest.get("files", []):
            data = self.s3.get_object(Bucket=bucket, Key=file["key"])["Body"].read()
            text = gzip.decompress(data).decode() if file["key"].endswith(".gz") else data.decode()
            for row in csv.reader(io.StringIO(text)):
                if not row:
                    continue
                if "IsLatest" in at and row[at["IsLatest"]].lower() != "true":
                    continue
                if "IsDeleteMarker" in at and row[at["IsDeleteMarker"]].lower() == "true":
                    continue
                version = row[at["VersionId"]] if "VersionId" in at else None
                from urllib.parse import unquote_plus

                yield TaskRef(row[at["Bucket"]], unquote_plus(row[at["Key"]]), version or None)

    def _write_report(self, job: LocalJob) -> None:
        """``<prefix>/job-<id>/manifest.json`` and its results CSV files, as S3 writes them."""
        report = job.request.get("Report") or {}
        if str(report.get("Enabled", "false")).lower() != "true":
            return
        bucket, _ = _object_arn(report["Bucket"] + "/")
        base = (
            f"{report['Prefix'].rstrip('/')}/job-{job.job_id}"
            if report.get("Prefix")
            else f"job-{job.job_id}"
        )
        only_failed = report.get("ReportScope", "AllTasks") == "FailedTasksOnly"
        results = []
        for status in ("succeeded", "failed"):
            rows = [r for r in job.results if (r[1] == "Succeeded") == (status == "succeeded")]
            if not rows or (only_failed and status == "succeeded"):
                continue
            buf = io.StringIO()
            writer = csv.writer(buf, lineterminator="\n")
            for ref, code, text in rows:
                http = "200" if code == "Succeeded" else "400"
                writer.writerow([ref.bucket, quote_plus(ref.key), ref.version_id or "", status,
                                 code if code != "Succeeded" else "200", http, text])  # fmt: skip
            body = buf.getvalue().encode()
            key = f"{base}/results/{hashlib.sha256(body).hexdigest()}.csv"
            self.s3.put_object(Bucket=bucket, Key=key, Body=body)
            results.append({"TaskExecutionStatus": status, "Bucket": bucket,
                            "MD5Checksum": hashlib.md5(body, usedforsecurity=False).hexdigest(), "Key": key})  # fmt: skip
        manifest = {
            "Format": "Report_CSV_20180820",
            "ReportCreationDate": datetime.now(UTC).isoformat(),
            "Results": results,
            "ReportSchema": "Bucket, Key, VersionId, TaskStatus, ErrorCode, HTTPStatusCode, "
            "ResultMessage",
        }
        self.s3.put_object(Bucket=bucket, Key=f"{base}/manifest.json", Body=json.dumps(manifest))

    # -- DescribeJob ---------------------------------------------------------------------------

    def describe(self, job_id: str) -> dict[str, Any] | None:
        job = self.jobs.get(job_id)
        if job is None:
            return None
        request = job.request
        with job.lock:
            described: dict[str, Any] = {
                "JobId": job.job_id,
                "ConfirmationRequired": "false",
                "Description": request.get("Description", ""),
                "JobArn": f"arn:aws:s3:us-east-1:{ACCOUNT_ID}:job/{job.job_id}",
                "Status": job.status,
                "Priority": str(request.get("Priority", 10)),
                "ProgressSummary": {
                    **({"TotalNumberOfTasks": str(job.total)} if job.total is not None else {}),
                    "NumberOfTasksSucceeded": str(job.succeeded),
                    "NumberOfTasksFailed": str(job.failed),
                    "Timers": {"ElapsedTimeInActiveSeconds": str(int(job.elapsed()))},
                },
                "CreationTime": job.created.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "RoleArn": request.get("RoleArn", ""),
                "Report": request.get("Report", {}),
            }
        if job.reason:
            code, _, why = job.reason.partition(": ")
            described["FailureReasons"] = [{"FailureCode": code, "FailureReason": why or code}]
        return described


# -- the XML of the REST API ---------------------------------------------------------------------


def parse_xml(body: bytes) -> dict[str, Any]:
    """A CreateJob body as the dict boto3 was given (lists and maps as botocore wrote them)."""
    # the body comes from a client of the stack's own endpoint on 127.0.0.1, as moto's do
    root = ET.fromstring(body)  # noqa: S314
    parsed: dict[str, Any] = _element(root)
    return parsed


def _element(node: ET.Element) -> Any:
    children = list(node)
    name = _local(node.tag)
    if name in LIST_FIELDS:
        return [(_element(c) if list(c) else (c.text or "")) for c in children]
    if name == "UserArguments":
        return {_text(c, "key"): _text(c, "value") for c in children if _local(c.tag) == "entry"}
    if not children:
        return node.text or ""
    return {_local(c.tag): _element(c) for c in children}


def _text(node: ET.Element, child: str) -> str:
    for c in node:
        if _local(c.tag) == child:
            return c.text or ""
    return ""


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def to_xml(root: str, value: dict[str, Any]) -> bytes:
    element = ET.Element(root, xmlns=NS)
    _fill(element, value)
    return ET.tostring(element, encoding="utf-8", xml_declaration=True)


def _fill(element: ET.Element, value: Any) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            if k == "UserArguments" and isinstance(v, dict):
                child = ET.SubElement(element, k)
                for key, val in v.items():
                    entry = ET.SubElement(child, "entry")
                    ET.SubElement(entry, "key").text = key
                    ET.SubElement(entry, "value").text = val
                continue
            _fill(ET.SubElement(element, k), v)
    elif isinstance(value, list):
        for item in value:
            _fill(ET.SubElement(element, "member"), item)
    else:
        element.text = str(value)


def _object_arn(arn: str) -> tuple[str, str]:
    bucket_and_key = arn.split(":::", 1)[1]
    bucket, _, key = bucket_and_key.partition("/")
    return bucket, key


def _datetime(value: Any) -> datetime | None:
    if not value:
        return None
    text = str(value).replace("Z", "+00:00")
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _csv_tasks(text: str, fields: list[str]) -> Iterator[TaskRef]:
    from urllib.parse import unquote_plus

    at = {name: i for i, name in enumerate(fields)}
    for row in csv.reader(io.StringIO(text)):
        if not row:
            continue
        version = row[at["VersionId"]] if "VersionId" in at and len(row) > at["VersionId"] else None
        yield TaskRef(row[at["Bucket"]], unquote_plus(row[at["Key"]]), version or None)


# -- in front of moto's server -------------------------------------------------------------------

_current: LocalBatchOperations | None = None
_installed = False


def serve(runner: LocalBatchOperations | None) -> None:
    """The runner that answers ``/v20180820/jobs`` (None: moto answers, as before)."""
    global _current
    _current = runner


def install() -> None:
    global _installed
    if _installed:
        return
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    original = DomainDispatcherApplication.__call__

    def call(self: Any, environ: dict[str, Any], start_response: Any) -> Any:
        path = str(environ.get("PATH_INFO", ""))
        if _current is not None and path.startswith("/v20180820/jobs"):
            return _answer(_current, environ, start_response)
        return original(self, environ, start_response)

    DomainDispatcherApplication.__call__ = call  # type: ignore[method-assign]
    _installed = True


def _answer(runner: LocalBatchOperations, environ: dict[str, Any], start_response: Any) -> Any:
    method, path = environ["REQUEST_METHOD"], str(environ["PATH_INFO"])
    if method == "POST" and path.rstrip("/") == "/v20180820/jobs":
        size = int(environ.get("CONTENT_LENGTH") or 0)
        request = parse_xml(environ["wsgi.input"].read(size))
        request.pop("AccountId", None)
        job_id, _ = runner.create_job(request)
        return _reply(start_response, "200 OK", to_xml("CreateJobResult", {"JobId": job_id}))
    if method == "GET" and path.startswith("/v20180820/jobs/"):
        described = runner.describe(path.rsplit("/", 1)[-1])
        if described is None:
            error = {"Error": {"Code": "NoSuchJob", "Message": "The specified job does not exist"}}
            return _reply(start_response, "404 Not Found", to_xml("ErrorResponse", error))
        return _reply(start_response, "200 OK", to_xml("DescribeJobResult", {"Job": described}))
    error = {"Error": {"Code": "NotImplemented", "Message": f"{method} {path}"}}
    return _reply(start_response, "501 Not Implemented", to_xml("ErrorResponse", error))


def _reply(start_response: Any, status: str, body: bytes) -> list[bytes]:
    start_response(
        status, [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))]
    )
    return [body]
