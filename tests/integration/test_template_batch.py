"""The template's batch backfill resources: BatchBackfillFunction (the same package, its own
handler, its own least-privilege role), BatchOperationsRole (what a job may do) and
BatchReportsBucket, on the stacks CloudFormation would create (tests/template_eval.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cfnlint.decode import cfn_yaml

from captioner.batchbackfill import BUCKETS, CAPTIONS_TABLE, QUEUE_URL
from captioner.served import ServedBuckets
from tests.template_eval import Resolver, identity_statements

ROOT = Path(__file__).resolve().parents[2]
KEY = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
SECRET = "arn:aws:secretsmanager:us-east-1:123456789012:secret:ml-AbCdEf"


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return cfn_yaml.load(str(ROOT / "template.yaml"))


def stack(template: dict[str, Any], **params: str) -> dict[str, Any]:
    return Resolver(template, params, {"AWS::Partition": "aws"}).resources()


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def grants(resources: dict[str, Any], role: str) -> dict[str, set[str]]:
    """action -> the resources the role's statements allow it on."""
    out: dict[str, set[str]] = {}
    for owner, st in identity_statements(resources):
        if owner != role:
            continue
        assert st["Effect"] == "Allow" and "NotAction" not in st and "NotResource" not in st
        for action in as_list(st["Action"]):
            out.setdefault(action, set()).update(as_list(st["Resource"]))
    return out


def test_the_function_is_the_same_package_with_its_own_handler_and_role(template):
    fn = template["Resources"]["BatchBackfillFunction"]
    caption = template["Resources"]["CaptionFunction"]
    props = fn["Properties"]
    assert fn["Metadata"]["BuildMethod"] == caption["Metadata"]["BuildMethod"] == "makefile"
    assert props["CodeUri"] == caption["Properties"]["CodeUri"]
    assert props["Handler"] == "captioner.batch_handler.lambda_handler"
    assert (ROOT / "functions/captioner/batch_handler.py").is_file()
    assert "build-BatchBackfillFunction:" in (ROOT / "functions/Makefile").read_text()
    assert props["Role"] == {"Fn::GetAtt": ["BatchBackfillFunctionRole", "Arn"]}
    assert props["Runtime"] == "python3.12" and props["Architectures"] == ["arm64"]
    assert "Events" not in props  # invoked by S3 Batch Operations only


def test_the_function_environment_is_what_its_settings_read(template):
    variables = stack(template)["BatchBackfillFunction"]["Properties"]["Environment"]["Variables"]
    read = {CAPTIONS_TABLE.env, QUEUE_URL.env, BUCKETS.env}
    assert {k for k in variables if not k.startswith("POWERTOOLS_")} == read
    assert variables["CAPTIONS_TABLE"] == "${CaptionsTable}"
    assert variables["CAPTION_QUEUE_URL"] == "${CaptionQueue}"


@pytest.mark.parametrize(
    ("existing", "served"),
    [
        ("", {"${UploadBucket}"}),
        ("photos, scans.example.com", {"${UploadBucket}", "photos", "scans.example.com"}),
    ],
)
def test_the_function_serves_the_upload_bucket_and_the_existing_buckets(template, existing, served):
    res = stack(template, ExistingBucketNames=existing)
    raw = res["BatchBackfillFunction"]["Properties"]["Environment"]["Variables"]["CAPTION_BUCKETS"]
    assert ServedBuckets.parse(raw).names == served
    g = grants(res, "BatchBackfillFunctionRole")
    assert g["s3:GetObject"] == g["s3:GetObjectVersion"] == {f"arn:aws:s3:::{b}/*" for b in served}
    assert g["s3:ListBucket"] == {f"arn:aws:s3:::{b}" for b in served}
    jobs = grants(res, "BatchOperationsRole")
    assert jobs["s3:ListBucket"] == {f"arn:aws:s3:::{b}" for b in served}


def test_the_function_role_reads_heads_and_sends_and_nothing_more(template):
    # every optional parameter set: still no secret, no write to S3 or the table
    res = stack(template, KmsKeyArn=KEY, ModelsLabApiKeySecret=SECRET, SubnetIds="subnet-1",
                SecurityGroupIds="sg-1", EventBusName="captions")  # fmt: skip
    g = grants(res, "BatchBackfillFunctionRole")
    assert set(g) == {
        "logs:CreateLogStream", "logs:PutLogEvents", "xray:PutTraceSegments",
        "xray:PutTelemetryRecords", "sqs:SendMessage", "dynamodb:GetItem", "s3:GetObject",
        "s3:GetObjectVersion", "s3:ListBucket", "kms:Decrypt", "kms:GenerateDataKey",
        "ec2:DescribeNetworkInterfaces", "ec2:DescribeSubnets", "ec2:CreateNetworkInterface",
        "ec2:DeleteNetworkInterface", "ec2:AssignPrivateIpAddresses",
        "ec2:UnassignPrivateIpAddresses",
    }  # fmt: skip
    assert g["sqs:SendMessage"] == {"${CaptionQueue.Arn}"}
    assert g["dynamodb:GetItem"] == {"${CaptionsTable.Arn}"}
    assert g["logs:PutLogEvents"] == {
        "arn:aws:logs:us-east-1:123456789012:log-group:${BatchBackfillFunctionLogGroup}"
        ":log-stream:*"
    }
    assert g["kms:Decrypt"] == g["kms:GenerateDataKey"] == {KEY}
    without = grants(stack(template), "BatchBackfillFunctionRole")
    assert not any(a.startswith(("kms:", "ec2:")) for a in without)


def test_jobs_may_invoke_that_function_only_and_use_the_reports_bucket(template):
    res = stack(template, KmsKeyArn=KEY)
    role = res["BatchOperationsRole"]["Properties"]
    [trust] = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "batchoperations.s3.amazonaws.com"}
    assert trust["Condition"] == {"StringEquals": {"aws:SourceAccount": "123456789012"}}
    g = grants(res, "BatchOperationsRole")
    assert g == {
        "lambda:InvokeFunction": {"${BatchBackfillFunction.Arn}"},
        "s3:GetObject": {"${BatchReportsBucket.Arn}/*"},
        "s3:GetObjectVersion": {"${BatchReportsBucket.Arn}/*"},
        "s3:PutObject": {"${BatchReportsBucket.Arn}/*"},
        "s3:GetBucketLocation": {"${BatchReportsBucket.Arn}"},
        "s3:ListBucket": {"arn:aws:s3:::${UploadBucket}"},
        "kms:Decrypt": {KEY},
        "kms:GenerateDataKey": {KEY},
    }
    [kms] = [st for o, st in identity_statements(res) if o == "BatchOperationsRole"
             and "kms:Decrypt" in as_list(st["Action"])]  # fmt: skip
    assert kms["Condition"] == {"StringEquals": {"kms:ViaService": "s3.us-east-1.amazonaws.com"}}


def test_the_reports_bucket_is_private_encrypted_tls_only_and_expires_job_files(template):
    res = stack(template)
    bucket = res["BatchReportsBucket"]["Properties"]
    assert all(bucket["PublicAccessBlockConfiguration"].values())
    assert bucket["VersioningConfiguration"] == {"Status": "Enabled"}
    [rule] = bucket["LifecycleConfiguration"]["Rules"]
    assert rule["ExpirationInDays"] == 90
    statements = res["BatchReportsBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    by_sid = {s["Sid"]: s for s in statements}
    assert by_sid["DenyInsecureTransport"]["Condition"] == {
        "Bool": {"aws:SecureTransport": "false"}
    }
    inventory = by_sid["AllowInventoryReports"]
    assert inventory["Principal"] == {"Service": "s3.amazonaws.com"}
    assert inventory["Resource"] == "${BatchReportsBucket.Arn}/inventory/*"
    assert inventory["Condition"] == {"StringEquals": {"aws:SourceAccount": "123456789012"}}


def test_the_cli_finds_the_batch_resources_in_the_outputs(template):
    outputs = template["Outputs"]
    assert outputs["BatchBackfillFunctionArn"]["Value"] == {
        "Fn::GetAtt": ["BatchBackfillFunction", "Arn"]
    }
    assert outputs["BatchOperationsRoleArn"]["Value"] == {
        "Fn::GetAtt": ["BatchOperationsRole", "Arn"]
    }
    assert outputs["BatchReportsBucketName"]["Value"] == {"Ref": "BatchReportsBucket"}
