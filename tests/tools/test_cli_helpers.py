"""The CLI's pure parts: argument parsing, error lines, backfill decisions, output formats,
stack discovery settings, and the redrive's choice between SQS's move task and a copy loop
(with botocore's Stubber: nothing leaves the process)."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime

import boto3
import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError
from botocore.stub import Stubber
from typer.testing import CliRunner

from captioner_tools.cli import render
from captioner_tools.cli.app import CaptionerGroup, app
from captioner_tools.cli.backfill import BackfillPlan
from captioner_tools.cli.commands_local import parse_overrides
from captioner_tools.cli.commands_rows import parse_since
from captioner_tools.cli.errors import describe
from captioner_tools.cli.queues import redrive
from captioner_tools.cli.s3url import S3Url, parse_s3_url
from captioner_tools.cli.target import Deployment, TargetOptions, samconfig_stack_name
from captioner_tools.endpoints import is_loopback
from captioner_tools.errors import CliError

# -- arguments ------------------------------------------------------------------------------


def test_s3_urls():
    assert parse_s3_url("s3://photos/2026/cat 1.jpg") == S3Url("photos", "2026/cat 1.jpg")
    assert parse_s3_url("s3://photos") == S3Url("photos", "")
    assert parse_s3_url("s3://photos/a%20b") == S3Url("photos", "a%20b")  # literal, as aws s3
    assert str(S3Url("b", "k")) == "s3://b/k"
    with pytest.raises(CliError, match="not an s3:// URL"):
        parse_s3_url("https://photos.s3.amazonaws.com/cat.jpg")
    with pytest.raises(CliError, match="invalid bucket name"):
        parse_s3_url("s3://Photos_Bucket/x")
    with pytest.raises(CliError, match="names a bucket, not an object"):
        parse_s3_url("s3://photos/", object_key=True)


def test_since_accepts_iso_and_ages_in_the_row_format():
    now = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)
    assert parse_since("2026-11-24", now) == "2026-11-24T00:00:00.000Z"
    assert parse_since("2026-11-24T10:30:00Z", now) == "2026-11-24T10:30:00.000Z"
    assert parse_since("0999-01-01", now) == "0999-01-01T00:00:00.000Z"  # sorts before 2026
    assert parse_since("2026-11-24T12:30:00+02:00", now) == "2026-11-24T10:30:00.000Z"
    assert parse_since("90m", now) == "2026-11-25T10:30:00.000Z"
    assert parse_since("2d", now) == "2026-11-23T12:00:00.000Z"
    with pytest.raises(CliError, match="--since"):
        parse_since("last tuesday", now)


def test_parameter_overrides_use_sams_syntax():
    assert parse_overrides(["MaxReceiveCount=2 LogLevel=DEBUG", "KeyPrefixFilter=up/"]) == {
        "MaxReceiveCount": "2",
        "LogLevel": "DEBUG",
        "KeyPrefixFilter": "up/",
    }
    with pytest.raises(CliError, match="Key=Value"):
        parse_overrides(["MaxReceiveCount"])


# -- errors ----------------------------------------------------------------------------------


def client_error(code, message="m", op="Query", status=400):
    return ClientError(
        {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        op,
    )


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (EndpointConnectionError(endpoint_url="http://127.0.0.1:4566/"), "is the local stack running"),
        (EndpointConnectionError(endpoint_url="https://sqs.eu-west-1.amazonaws.com/"), "check your network"),
        (NoCredentialsError(), "no AWS credentials found"),
        (client_error("NoSuchBucket"), "does not exist"),
        (client_error("ResourceNotFoundException", "Requested resource not found"), "--table"),
        (client_error("AWS.SimpleQueueService.NonExistentQueue"), "queue not found"),
        (client_error("ExpiredToken", "The security token included in the request is expired"), "rejected the credentials"),
        (client_error("AccessDeniedException", "not authorized", "Scan"), "access denied to Scan"),
        (client_error("ThrottlingException", "slow down"), "Query failed (ThrottlingException): slow down"),
        (CliError("plain"), "plain"),
    ],
)  # fmt: skip
def test_known_errors_become_one_line(exc, expected):
    message = describe(exc)
    assert message is not None and expected in message and "\n" not in message


def test_unknown_errors_are_not_described():
    assert describe(ZeroDivisionError("x")) is None


def test_loopback_endpoints():
    assert is_loopback("http://127.0.0.1:4566") and is_loopback("http://localhost:5005/")
    assert not is_loopback("https://dynamodb.us-east-1.amazonaws.com") and not is_loopback(None)


def test_an_unexpected_error_is_one_line_unless_debugging(monkeypatch):
    import typer

    probe = typer.Typer(cls=CaptionerGroup)  # what every captioner command runs under

    @probe.command()
    def boom() -> None:
        raise ZeroDivisionError("division by zero")

    @probe.command()
    def fine() -> None:
        raise CliError("a known mistake")

    result = CliRunner().invoke(probe, ["boom"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "unexpected error: ZeroDivisionError: division by zero" in result.output
    assert CliRunner().invoke(probe, ["fine"]).output.strip() == "error: a known mistake"
    monkeypatch.setenv("CAPTIONER_DEBUG", "1")
    assert isinstance(CliRunner().invoke(probe, ["boom"]).exception, ZeroDivisionError)


# -- backfill decisions ----------------------------------------------------------------------

OBJ = {"Key": "a.jpg", "ETag": '"e1"', "Size": 10}
CAPTIONED = {"status": "CAPTIONED", "etag": "e1", "size": 10, "provider": "modelslab",
             "tag_status": "WRITTEN"}  # fmt: skip


@pytest.mark.parametrize(
    ("plan", "row", "skip"),
    [
        (BackfillPlan("b"), None, None),
        (BackfillPlan("b"), CAPTIONED, "captioned"),
        (BackfillPlan("b"), {**CAPTIONED, "etag": "e2"}, None),  # a newer version
        (BackfillPlan("b"), {**CAPTIONED, "status": "FAILED"}, None),
        (BackfillPlan("b"), {**CAPTIONED, "status": "PENDING"}, None),  # stuck: finished
        (BackfillPlan("b"), {**CAPTIONED, "tag_status": "FAILED"}, None),  # the tag is retried
        (BackfillPlan("b"), {**CAPTIONED, "tag_status": None}, None),  # died before tagging
        (BackfillPlan("b"), {**CAPTIONED, "tag_status": "KEPT_EXISTING"}, "captioned"),
        (
            BackfillPlan("b"),
            {**CAPTIONED, "status": "REJECTED"},
            "rejected",
        ),  # same bytes, same checks
        (
            BackfillPlan("b", provider="local"),
            {**CAPTIONED, "status": "REJECTED"},
            None,
        ),  # other formats
        (BackfillPlan("b", provider="modelslab"), CAPTIONED, "captioned"),
        (BackfillPlan("b", provider="local"), CAPTIONED, None),  # re-caption with local
        (BackfillPlan("b", only_provider="local"), CAPTIONED, "other_provider"),
        (BackfillPlan("b", only_provider="local"), None, "other_provider"),
        (BackfillPlan("b", only_provider="modelslab"), CAPTIONED, None),  # even if captioned
        # finished, but its event is owed: the function sends it (free)
        (BackfillPlan("b"), {**CAPTIONED, "event_due": "CAPTIONED"}, None),
        (BackfillPlan("b"), {**CAPTIONED, "status": "REJECTED", "event_due": "REJECTED"}, None),
    ],
)
def test_backfill_decides_per_object(plan, row, skip):
    assert plan.wants(OBJ, row) == skip


# -- output formats --------------------------------------------------------------------------


def test_csv_has_the_documented_columns(capsys):
    rows = [{"bucket": "b", "key": "k,1", "status": "CAPTIONED", "caption": 'say "hi"', "size": 3,
             "labels": [{"label": "cup"}]}]  # fmt: skip
    render.print_csv(rows)
    parsed = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert tuple(parsed[0]) == render.CSV_COLUMNS
    assert parsed[0]["key"] == "k,1" and parsed[0]["caption"] == 'say "hi"'
    assert parsed[0]["reason"] == "" and parsed[0]["size"] == "3"


def test_json_is_a_plain_array(capsys):
    render.print_rows([{"bucket": "b", "key": "k", "size": 3}], "json")
    assert json.loads(capsys.readouterr().out) == [{"bucket": "b", "key": "k", "size": 3}]


# -- where the deployment is -----------------------------------------------------------------


def test_stack_name_comes_from_samconfig(tmp_path, monkeypatch):
    (tmp_path / "samconfig.toml").write_text(
        'version = 0.1\n[default.global.parameters]\nstack_name = "captions-prod"\n'
    )
    assert samconfig_stack_name(tmp_path) == "captions-prod"
    monkeypatch.chdir(tmp_path)
    assert Deployment(TargetOptions()).stack_name == "captions-prod"
    assert Deployment(TargetOptions(stack_name="other")).stack_name == "other"
    assert samconfig_stack_name(tmp_path / "nowhere") is None


def test_flags_win_over_stack_outputs():
    deployment = Deployment(TargetOptions(table="t", bucket="b"))
    deployment._stack = {"Outputs": [{"OutputKey": "TableName", "OutputValue": "from-stack"},
                                     {"OutputKey": "QueueUrl", "OutputValue": "q"}]}  # fmt: skip
    assert (deployment.table, deployment.bucket, deployment.queue_url) == ("t", "b", "q")
    with pytest.raises(CliError, match="has no output DeadLetterQueueUrl; pass --dlq-url"):
        _ = deployment.dlq_url


def test_local_endpoints_need_no_credentials(monkeypatch, tmp_path):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    local = Deployment(TargetOptions(endpoint_url="http://127.0.0.1:4566"))
    assert local.session.get_credentials() is not None and local.region == "us-east-1"


def test_help_lists_the_commands_in_the_order_they_are_registered():
    import typer

    group = typer.main.get_command(app)
    assert group.list_commands(None) == [
        "demo", "caption", "get", "list", "search", "ui", "edit", "export", "status", "doctor",
        "connect", "events", "backfill", "redrive", "local",
    ]  # fmt: skip


def test_deployment_options_reach_the_command_and_not_its_arguments(monkeypatch):
    """The shared options are parsed with the command's own and handed over as a Deployment."""
    from captioner_tools.cli import commands_rows

    seen = {}

    def fake_get(self, bucket, key):
        seen.update(table=self.table_name, bucket=bucket, key=key)
        return {"bucket": bucket, "key": key, "status": "CAPTIONED"}

    monkeypatch.setattr("captioner.store.CaptionReader.get", fake_get)
    monkeypatch.setattr(commands_rows.render, "print_json", lambda row: seen.update(row=row))
    result = CliRunner().invoke(
        app,
        ["get", "s3://bucket-name/k.png", "--json", "--table", "t1", "--endpoint-url",
         "http://127.0.0.1:4566", "--region", "eu-west-1"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert seen == {"table": "t1", "bucket": "bucket-name", "key": "k.png",
                    "row": {"bucket": "bucket-name", "key": "k.png", "status": "CAPTIONED"}}  # fmt: skip


def test_every_command_accepts_the_deployment_options_after_its_arguments():
    out = CliRunner().invoke(app, ["list", "--help"], env={"COLUMNS": "200"}).output
    for flag in ("--endpoint-url", "--stack-name", "--bucket", "--table", "--queue-url",
                 "--dlq-url", "--region", "--profile"):  # fmt: skip
        assert flag in out


# -- redrive: SQS's move task in AWS, a copy loop where it is missing -------------------------

DLQ = "https://sqs.us-east-1.amazonaws.com/123456789012/dlq"
QUEUE = "https://sqs.us-east-1.amazonaws.com/123456789012/q"


@pytest.fixture
def sqs():
    client = boto3.client(
        "sqs", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"
    )
    with Stubber(client) as stub:
        yield client, stub
        stub.assert_no_pending_responses()


def arns(stub):
    for url, arn in ((DLQ, "arn:aws:sqs:us-east-1:123456789012:dlq"),
                     (QUEUE, "arn:aws:sqs:us-east-1:123456789012:q")):  # fmt: skip
        stub.add_response(
            "get_queue_attributes",
            {"Attributes": {"QueueArn": arn}},
            {"QueueUrl": url, "AttributeNames": ["QueueArn"]},
        )


def test_redrive_uses_the_message_move_task_in_aws(sqs):
    client, stub = sqs
    arns(stub)
    stub.add_response(
        "start_message_move_task",
        {"TaskHandle": "h1"},
        {"SourceArn": "arn:aws:sqs:us-east-1:123456789012:dlq",
         "DestinationArn": "arn:aws:sqs:us-east-1:123456789012:q"},
    )  # fmt: skip
    stub.add_response(
        "list_message_move_tasks",
        {"Results": [{"TaskHandle": "h1", "Status": "COMPLETED",
                      "ApproximateNumberOfMessagesMoved": 7,
                      "ApproximateNumberOfMessagesToMove": 7}]},
    )  # fmt: skip
    result = redrive(client, DLQ, QUEUE)
    assert (result.method, result.moved, result.status) == ("move-task", 7, "COMPLETED")


def test_redrive_copies_when_the_endpoint_lacks_the_move_task(sqs):
    client, stub = sqs
    arns(stub)
    stub.add_client_error("start_message_move_task", "InternalFailure", http_status_code=500)
    message = {"MessageId": "m1", "ReceiptHandle": "r1", "Body": "{}", "MD5OfBody": "x"}
    stub.add_response("receive_message", {"Messages": [message]})
    stub.add_response(
        "send_message_batch",
        {"Successful": [{"Id": "0", "MessageId": "n1", "MD5OfMessageBody": "x"}], "Failed": []},
        {"QueueUrl": QUEUE, "Entries": [{"Id": "0", "MessageBody": "{}"}]},
    )
    stub.add_response(
        "delete_message_batch",
        {"Successful": [{"Id": "0"}], "Failed": []},
        {"QueueUrl": DLQ, "Entries": [{"Id": "0", "ReceiptHandle": "r1"}]},
    )
    stub.add_response("receive_message", {"Messages": []})
    result = redrive(client, DLQ, QUEUE)
    assert (result.method, result.moved, result.failed) == ("copy", 1, 0)
    assert "no StartMessageMoveTask" in result.note


def test_redrive_does_not_hide_real_errors(sqs):
    client, stub = sqs
    arns(stub)
    stub.add_client_error("start_message_move_task", "AccessDenied", http_status_code=403)
    with pytest.raises(ClientError):
        redrive(client, DLQ, QUEUE)


def test_since_ages_past_year_one_are_a_clear_error():
    with pytest.raises(CliError, match="before year 1"):
        parse_since("99999999d")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("localhost:4599", "expected http"),
        ("http://127.0.0.1:notaport", "not a number"),
        ("ftp://x", "expected http"),
    ],
)
def test_malformed_endpoint_urls_are_one_clear_line(url, message):
    from typer.testing import CliRunner

    from captioner_tools.cli.app import app

    result = CliRunner().invoke(app, ["get", "s3://bucket-name/key", "--endpoint-url", url])
    assert result.exit_code == 1 and message in result.stderr and "Traceback" not in result.output


@pytest.mark.parametrize("args", [["demo"], ["local", "up"]])
def test_local_stack_commands_without_the_extra_say_which_to_install(monkeypatch, args):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        "captioner_tools.local.find_spec", lambda name: None if name == "moto" else real(name)
    )
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    assert result.output.strip() == (
        "error: the local stack needs the 'local' extra: pip install 'captioner[local]'"
    )
