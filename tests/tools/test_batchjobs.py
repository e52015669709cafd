"""The CreateJob requests of ``captioner backfill --engine batch``, checked exactly with
botocore's Stubber (so botocore also validates them against the s3control model), and the
pure parts: the token, the cost, DescribeJob progress, the completion report."""

from __future__ import annotations

import gzip
import io
import json
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.response import StreamingBody
from botocore.stub import ANY, Stubber

from captioner_tools.cli import backfill_batch
from captioner_tools.cli.backfill_batch import BatchOptions
from captioner_tools.cli.batchjobs import (
    READABLE_STORAGE_CLASSES,
    Generated,
    JobPlan,
    batch_cost,
    csv_manifest,
    csv_manifest_rows,
    failed_tasks,
    job_request,
    progress_of,
)
from captioner_tools.cli.s3url import S3Url
from captioner_tools.cli.target import Deployment, TargetOptions

ACCOUNT = "123456789012"
FUNCTION = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:captioner-BatchBackfillFunction-X1"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/captioner-BatchOperationsRole-Y2"
REPORTS = "captioner-batchreportsbucket-z3"
OUTPUTS = {"BatchBackfillFunctionArn": FUNCTION, "BatchOperationsRoleArn": ROLE,
           "BatchReportsBucketName": REPORTS, "TableName": "captions"}  # fmt: skip
CREATED = datetime(2026, 1, 1, tzinfo=UTC)


def client(service: str) -> Any:
    return boto3.client(service, region_name="us-east-1", aws_access_key_id="a",
                        aws_secret_access_key="b")  # fmt: skip


def deployment(**clients: Any) -> Deployment:
    d = Deployment(TargetOptions(stack_name="captioner"))
    d._stack = {"Outputs": [{"OutputKey": k, "OutputValue": v} for k, v in OUTPUTS.items()]}
    d._clients.update(clients)
    return d


def body(data: bytes) -> StreamingBody:
    return StreamingBody(io.BytesIO(data), len(data))


def expect_job(control: Any, stub: Stubber, request: dict[str, Any], job_id: str) -> None:
    stub.add_response("create_job", {"JobId": job_id}, expected_params=request)
    stub.add_response(
        "describe_job",
        {"Job": {"JobId": job_id, "CreationTime": datetime.now(UTC)}},
        expected_params={"AccountId": ACCOUNT, "JobId": job_id},
    )


def token_free(request: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in request.items() if k != "ClientRequestToken"}


LAMBDA = {"LambdaInvoke": {"FunctionArn": FUNCTION, "InvocationSchemaVersion": "2.0"}}


def report(prefix: str = "captioner-backfill", bucket: str = REPORTS, scope="FailedTasksOnly"):
    return {"Bucket": f"arn:aws:s3:::{bucket}", "Format": "Report_CSV_20180820", "Enabled": True,
            "Prefix": prefix, "ReportScope": scope}  # fmt: skip


def test_the_default_job_lists_the_prefix_with_the_manifest_generator(capsys):
    control = client("s3control")
    options = BatchOptions(target=S3Url("photos", "2019/"), yes=True,
                           created_before=datetime(2024, 6, 1, tzinfo=UTC))  # fmt: skip
    want = {
        "AccountId": ACCOUNT,
        "ConfirmationRequired": False,
        "Operation": LAMBDA,
        "Report": report(),
        "Priority": 10,
        "RoleArn": ROLE,
        "Description": "captioner backfill s3://photos/2019/",
        "ManifestGenerator": {"S3JobManifestGenerator": {
            "ExpectedBucketOwner": ACCOUNT,
            "SourceBucket": "arn:aws:s3:::photos",
            "EnableManifestOutput": False,
            "Filter": {
                "MatchAnyStorageClass": list(READABLE_STORAGE_CLASSES),
                "KeyNameConstraint": {"MatchAnyPrefix": ["2019/"]},
                "CreatedBefore": datetime(2024, 6, 1, tzinfo=UTC),
            },
        }},
        "ClientRequestToken": ANY,
    }  # fmt: skip
    with Stubber(control) as stub:
        expect_job(control, stub, want, "job-00001")
        backfill_batch.create(deployment(s3control=control), options, lambda _: 0.0047)
        stub.assert_no_pending_responses()
    out = capsys.readouterr().out
    assert out.index("Batch Operations: $1.25 per million objects") < out.index("created job")
    assert "created job job-00001" in out


def test_the_token_is_the_request_the_same_twice_and_another_for_any_change():
    plan = JobPlan(ACCOUNT, "photos", "a/", FUNCTION, ROLE, REPORTS)
    first, second = job_request(plan), job_request(plan)
    assert first["ClientRequestToken"] == second["ClientRequestToken"]
    assert len(first["ClientRequestToken"]) == 64  # CreateJob allows 1-64 characters
    for change in (JobPlan(ACCOUNT, "photos", "b/", FUNCTION, ROLE, REPORTS),
                   JobPlan(ACCOUNT, "photos", "a/", FUNCTION, ROLE, REPORTS, priority=11),
                   JobPlan(ACCOUNT, "photos", "a/", FUNCTION, ROLE, REPORTS, provider="local")):  # fmt: skip
        assert job_request(change)["ClientRequestToken"] != first["ClientRequestToken"]


def test_a_csv_manifest_report_priority_and_providers_are_passed_exactly(capsys):
    s3, control = client("s3"), client("s3control")
    csv_text = "photos,a+b.jpg,v1\nphotos,c%2Bd.jpg,v2\n"
    options = BatchOptions(target=S3Url("photos", ""), manifest="s3://lists/todo.csv",
                           report="s3://audit/batch/", report_all=True, priority=50,
                           provider="modelslab", only_provider="local", yes=True)  # fmt: skip
    want = {
        "AccountId": ACCOUNT,
        "ConfirmationRequired": False,
        "Operation": {"LambdaInvoke": {**LAMBDA["LambdaInvoke"],
                      "UserArguments": {"provider": "modelslab", "onlyProvider": "local"}}},
        "Report": report("batch", "audit", "AllTasks"),
        "Priority": 50,
        "RoleArn": ROLE,
        "Description": "captioner backfill s3://photos/",
        "Manifest": {
            "Spec": {"Format": "S3BatchOperations_CSV_20180820",
                     "Fields": ["Bucket", "Key", "VersionId"]},
            "Location": {"ObjectArn": "arn:aws:s3:::lists/todo.csv", "ETag": "abc123"},
        },
        "ClientRequestToken": ANY,
    }  # fmt: skip
    ddb = client("dynamodb")
    with Stubber(s3) as s3_stub, Stubber(control) as stub, Stubber(ddb) as ddb_stub:
        s3_stub.add_response("head_object", {"ETag": '"abc123"'},
                             {"Bucket": "lists", "Key": "todo.csv"})  # fmt: skip
        s3_stub.add_response("get_object", {"Body": body(csv_text.encode())},
                             {"Bucket": "lists", "Key": "todo.csv"})  # fmt: skip
        # the two keys' rows: one captioned by local (re-captioned), one by modelslab (not)
        ddb_stub.add_response("batch_get_item", {"Responses": {"captions": [
            {"bucket": {"S": "photos"}, "key": {"S": "a b.jpg"}, "provider": {"S": "local"}},
            {"bucket": {"S": "photos"}, "key": {"S": "c+d.jpg"}, "provider": {"S": "modelslab"}},
        ]}})  # fmt: skip
        expect_job(control, stub, want, "job-00002")
        backfill_batch.create(deployment(s3=s3, s3control=control, dynamodb=ddb), options,
                              lambda _: 0.0047)  # fmt: skip
        stub.assert_no_pending_responses()
    out = capsys.readouterr().out
    assert "Batch Operations: $0.25 for 2 objects" in out
    assert "captions: 1 to caption × $0.0047 (modelslab) = $0.00" in out


def test_an_inventory_manifest_is_counted_from_its_files():
    s3, control = client("s3"), client("s3control")
    manifest = {"sourceBucket": "photos", "destinationBucket": f"arn:aws:s3:::{REPORTS}",
                "fileFormat": "CSV", "fileSchema": "Bucket, Key, Size",
                "files": [{"key": "inventory/photos/data/1.csv.gz"}]}  # fmt: skip
    rows = gzip.compress(b'"photos","x.jpg","10"\n"photos","y%20z.jpg","20"\n')
    options = BatchOptions(target=S3Url("photos"), dry_run=True, as_json=True,
                           inventory=f"s3://{REPORTS}/inventory/photos/manifest.json")  # fmt: skip
    ddb = client("dynamodb")
    with Stubber(s3) as s3_stub, Stubber(ddb) as ddb_stub:
        where = {"Bucket": REPORTS, "Key": "inventory/photos/manifest.json"}
        s3_stub.add_response("head_object", {"ETag": '"e-1"'}, where)
        s3_stub.add_response("get_object", {"Body": body(json.dumps(manifest).encode())}, where)
        s3_stub.add_response("get_object", {"Body": body(rows)},
                             {"Bucket": REPORTS, "Key": "inventory/photos/data/1.csv.gz"})  # fmt: skip
        ddb_stub.add_response("batch_get_item", {"Responses": {"captions": []}})
        plan_out = io.StringIO()
        import contextlib

        with contextlib.redirect_stdout(plan_out):
            backfill_batch.create(deployment(s3=s3, s3control=control, dynamodb=ddb), options,
                                  lambda _: 0.0047)  # fmt: skip
    printed = json.loads(plan_out.getvalue())
    assert printed["cost"]["objects"] == 2 and printed["cost"]["to_caption"] == 2
    assert printed["request"]["Manifest"] == {
        "Spec": {"Format": "S3InventoryReport_CSV_20161130"},
        "Location": {"ObjectArn": f"arn:aws:s3:::{REPORTS}/inventory/photos/manifest.json",
                     "ETag": "e-1"},
    }  # fmt: skip
    # and botocore takes it as is
    with Stubber(control) as stub:
        stub.add_response("create_job", {"JobId": "job-00003"})
        request = printed["request"]
        control.create_job(**request)


# -- pure parts ----------------------------------------------------------------------------


def test_the_cost_per_million_and_for_a_known_count():
    unknown = batch_cost(None, generated=True)
    assert (unknown.job_usd, unknown.per_million) == (1.255, True)
    ten_million = batch_cost(10_000_000, generated=False, to_caption=9_000_000, price_usd=0.0047)
    assert ten_million.job_usd == 10.25
    assert ten_million.caption_usd == 42_300.0
    assert ten_million.aws_usd == round(10 * (0.2 + 0.13 + 0.40 + 0.125) + 9 * 0.40, 4)


def test_csv_manifests_encode_keys_as_s3_requires_and_read_back():
    text, versions = csv_manifest([("b", "a b+c/ü.jpg", None), ("b", "plain.jpg", None)])
    assert not versions and text == "b,a+b%2Bc%2F%C3%BC.jpg\nb,plain.jpg\n"
    assert list(csv_manifest_rows(text)) == [("b", "a b+c/ü.jpg", None), ("b", "plain.jpg", None)]


def test_progress_has_an_eta_at_the_pace_so_far():
    p = progress_of({"Job": {"JobId": "j", "Status": "Active", "ProgressSummary": {
        "TotalNumberOfTasks": 1000, "NumberOfTasksSucceeded": 240, "NumberOfTasksFailed": 10,
        "Timers": {"ElapsedTimeInActiveSeconds": 50}}}})  # fmt: skip
    assert (p.done, p.eta_s, p.finished) == (250, 150.0, False)
    done = progress_of({"Job": {"JobId": "j", "Status": "Failed", "FailureReasons": [
        {"FailureCode": "TaskFailureThresholdExceeded", "FailureReason": "over 50 %"}]}})  # fmt: skip
    assert done.finished and done.reason == "TaskFailureThresholdExceeded: over 50 %"


def test_the_completion_report_gives_the_failed_keys_decoded():
    report_csv = (
        "photos,ok.jpg,,succeeded,200,200,enqueued\n"
        "photos,gone+%2B.jpg,v9,failed,PermanentFailure,400,object missing: s3://photos/gone +.jpg\n"
    )
    [t] = failed_tasks(report_csv)
    assert (t.key, t.version_id, t.code) == ("gone +.jpg", "v9", "PermanentFailure")


def test_a_generated_manifest_without_prefix_has_no_key_filter():
    request = job_request(JobPlan(ACCOUNT, "photos", "", FUNCTION, ROLE, REPORTS,
                                  manifest=Generated(storage_classes=("STANDARD",))))  # fmt: skip
    spec = request["ManifestGenerator"]["S3JobManifestGenerator"]
    assert spec["Filter"] == {"MatchAnyStorageClass": ["STANDARD"]}


def test_unreadable_manifest_is_one_error_line():
    s3 = client("s3")
    with Stubber(s3) as stub:
        stub.add_client_error("head_object", "NoSuchKey", http_status_code=404)
        with pytest.raises(
            Exception, match=r"cannot read the manifest s3://lists/x.csv: NoSuchKey"
        ):
            backfill_batch.create(deployment(s3=s3), BatchOptions(
                target=S3Url("photos"), manifest="s3://lists/x.csv"), lambda _: 0.0)  # fmt: skip
