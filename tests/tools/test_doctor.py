"""``captioner doctor`` against the local stack: each problem it exists for is made real here
(a bad or unreachable provider key, a served bucket that is missing or sends no events, a
dead-lettered message, rows left PENDING) and found, with the fix, in one line each; and
the commands it guards (``backfill``, ``list``, ``get``, ``local up``) say what is wrong."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from typer.testing import CliRunner

from captioner_tools.cli.app import app
from captioner_tools.local.stack import LocalStack
from tests import images
from tests.conftest import API_KEY
from tests.fakes.modelslab import FakeModelsLab, Reply
from tests.tools.conftest import free_port, wait_for

EXISTING = ("photos", "gone")  # photos without its events, gone deleted (the fixture)
RETRY_DELAY_S = 30  # a failed row stays PENDING (no lease) long enough to be looked at
runner = CliRunner()


@pytest.fixture(scope="module")
def stack(modelslab: FakeModelsLab) -> Iterator[LocalStack]:
    with LocalStack(
        port=0,
        visibility_timeout=RETRY_DELAY_S,
        parameters={"ExistingBucketNames": ",".join(EXISTING), "MaxReceiveCount": 5},
        env={"MODELSLAB_API_URL": modelslab.url, "MODELSLAB_API_KEY": API_KEY},
    ) as local:
        # The local stack makes its stand-ins connected; undo that to make the problems.
        s3 = local.client("s3")
        s3.put_bucket_notification_configuration(Bucket="photos", NotificationConfiguration={})
        s3.delete_bucket(Bucket="gone")
        yield local


def cli(stack: LocalStack, *args: str, **env: str | None) -> Any:
    """The CLI in-process, pointed at the stack by AWS_ENDPOINT_URL only; the provider's key
    and URL from the environment, as `captioner local up` read them."""
    environment: dict[str, str | None] = {
        "AWS_ENDPOINT_URL": stack.endpoint_url,
        "COLUMNS": "250",
        "MODELSLAB_API_KEY": API_KEY,
        "MODELSLAB_API_URL": stack.extra_env["MODELSLAB_API_URL"],
    }
    for name in ("CAPTIONER_BUCKET", "CAPTIONS_TABLE", "CAPTIONER_QUEUE_URL", "CAPTIONER_DLQ_URL",
                 "CAPTIONER_STACK_NAME"):  # fmt: skip
        environment[name] = None
    environment.update(env)
    return runner.invoke(app, list(args), env=environment)


def doctor(stack: LocalStack, **env: str | None) -> tuple[int, dict[str, dict[str, str]]]:
    result = cli(stack, "doctor", "--json", **env)
    report = json.loads(result.stdout)
    assert report["healthy"] is (result.exit_code == 0), result.output
    return result.exit_code, {c["name"]: c for c in report["checks"]}


def one_error_line(result: Any, *parts: str) -> str:
    assert result.exit_code == 1, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for part in parts:
        assert part in lines[0], lines[0]
    return lines[0]


# ------------------------------------------------------------------ doctor


def test_doctor_checks_aws_the_stack_the_provider_the_queues_and_the_budget(
    stack: LocalStack,
) -> None:
    code, checks = doctor(stack)
    assert checks["aws"]["status"] == "ok" and stack.endpoint_url in checks["aws"]["detail"]
    assert checks["stack"]["status"] == "ok", checks["stack"]
    assert checks["provider modelslab"]["status"] == "ok", checks["provider modelslab"]
    assert "unpaid" in checks["provider modelslab"]["detail"]
    assert checks[f"bucket {stack.bucket}"]["status"] == "ok"
    assert checks["queue"]["status"] == "ok" and checks["dead-letter queue"]["status"] == "ok"
    assert checks["budget"]["status"] == "ok" and "$ spent" in checks["budget"]["detail"]
    assert code == 1  # the existing buckets below are not ready yet


def test_doctor_makes_no_paid_call(stack: LocalStack, modelslab: FakeModelsLab) -> None:
    before = len(modelslab.paid_calls())
    doctor(stack)
    assert len(modelslab.paid_calls()) == before
    assert modelslab.requests[-1].path.endswith("/image_editing/fetch/0")


def test_a_served_bucket_that_is_missing_or_sends_no_events_fails_with_its_fix(
    stack: LocalStack,
) -> None:
    code, checks = doctor(stack)
    assert code == 1
    photos, gone = checks["bucket photos"], checks["bucket gone"]
    assert (photos["status"], photos["fix"]) == ("fail", "captioner connect s3://photos")
    assert "EventBridge" in photos["detail"]
    assert (gone["status"], gone["detail"]) == ("fail", "does not exist")
    assert "ExistingBucketNames" in gone["fix"]
    # the fixes, then every check passes and doctor exits 0
    assert cli(stack, "connect", "s3://photos").exit_code == 0
    stack.client("s3").create_bucket(Bucket="gone")
    assert cli(stack, "connect", "s3://gone").exit_code == 0
    code, checks = doctor(stack)
    assert code == 0, checks
    assert {c["status"] for c in checks.values()} == {"ok"}


def test_the_text_report_is_one_line_per_check_with_the_fix(stack: LocalStack) -> None:
    result = cli(stack, "doctor", MODELSLAB_API_KEY=None)
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[0].startswith("ok   aws: ")
    (line,) = [ln for ln in lines if "provider modelslab" in ln]
    assert line.startswith("fail provider modelslab: no key in MODELSLAB_API_KEY → fix: ")


def test_a_key_the_provider_rejects_fails_and_is_never_printed(
    stack: LocalStack, modelslab: FakeModelsLab
) -> None:
    modelslab.fetch_rule = lambda job: Reply({"status": "error", "message": "Invalid API key"}, 401)
    try:
        result = cli(stack, "doctor", "--json")
    finally:
        modelslab.fetch_rule = None
    assert result.exit_code == 1
    assert API_KEY not in result.output
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    check = checks["provider modelslab"]
    assert check["status"] == "fail" and "rejected the key (HTTP 401)" in check["detail"]
    assert "redrive" in check["fix"]


def test_a_refusal_in_an_http_200_reply_is_a_bad_key_too(
    stack: LocalStack, modelslab: FakeModelsLab
) -> None:
    modelslab.fetch_rule = lambda job: Reply({"status": "error", "message": "Invalid Api Key"})
    try:
        _, checks = doctor(stack)
    finally:
        modelslab.fetch_rule = None
    assert checks["provider modelslab"]["status"] == "fail"
    assert "refused the key" in checks["provider modelslab"]["detail"]


def test_an_unreachable_provider_fails(stack: LocalStack) -> None:
    url = f"http://127.0.0.1:{free_port()}/api/v6"
    _, checks = doctor(stack, MODELSLAB_API_URL=url)
    check = checks["provider modelslab"]
    assert check["status"] == "fail" and check["detail"].startswith(f"cannot reach {url}")


def test_a_dead_lettered_message_fails_until_redriven(stack: LocalStack) -> None:
    sqs = stack.client("sqs")
    sqs.send_message(QueueUrl=stack.dlq_url, MessageBody=json.dumps({"Records": []}))
    try:
        _, checks = doctor(stack)
        check = checks["dead-letter queue"]
        assert (check["status"], check["detail"]) == ("fail", "1 message(s) dead-lettered")
        assert "captioner redrive" in check["fix"]
    finally:
        sqs.purge_queue(QueueUrl=stack.dlq_url)


def test_a_spent_daily_budget_warns_with_the_way_to_resume(stack: LocalStack) -> None:
    """Reserved as the function reserves (the stack's cap, 20 $), then given back."""
    from captioner.budget import DailyBudget

    budget = DailyBudget(stack.names.table, stack.client("dynamodb"), cap_usd=20)
    reservation = budget.reserve(20.0)
    try:
        code, checks = doctor(stack)
    finally:
        budget.refund(reservation)
    check = checks["budget"]
    assert check["status"] == "warn" and "20.0000 $ spent" in check["detail"]
    assert "of 20.00 $" in check["detail"] and "DailyBudgetUsd" in check["fix"]
    assert code == 0  # a warning needs attention, but nothing fails
    _, after = doctor(stack)
    assert after["budget"]["status"] == "ok"


def test_rows_pending_because_of_a_bad_key_show_the_cause(
    stack: LocalStack, modelslab: FakeModelsLab
) -> None:
    """The bogus-key story: the row says PENDING "will retry"; doctor and `list` name why."""
    modelslab.rule = lambda body: Reply({"status": "error", "message": "Invalid API key"}, 401)
    try:
        stack.client("s3").put_object(Bucket=stack.bucket, Key="bad-key.png", Body=images.png())
        row = wait_for(
            lambda: stack.captions().get(stack.bucket, "bad-key.png"),
            lambda r: r is not None and bool(r.get("last_error")),
            what="a PENDING row with its last error",
        )
    finally:
        modelslab.rule = None
    assert row is not None and row["status"] == "PENDING"
    _, checks = doctor(stack)
    rows = checks["rows"]
    assert rows["status"] == "warn"
    assert (
        f"s3://{stack.bucket}/bad-key.png: ModelsLab: invalid API key (HTTP 401)" in rows["detail"]
    )
    listed = cli(stack, "list", f"s3://{stack.bucket}/bad-key")
    assert listed.exit_code == 0 and "invalid API key (HTTP 401)" in listed.output
    assert "will retry" in listed.output  # the reason, followed by its cause


def test_doctor_without_a_stack_fails_at_the_first_check(stack: LocalStack) -> None:
    result = cli(stack, "doctor", "--endpoint-url", f"http://127.0.0.1:{free_port()}")
    assert result.exit_code == 1
    assert result.output.startswith("fail aws: ") and "captioner local up" in result.output
    assert len(result.output.splitlines()) == 1
    code, checks = doctor(stack, CAPTIONER_STACK_NAME="no-such-stack")
    assert code == 1 and checks["stack"]["status"] == "fail"
    assert "'no-such-stack' not found" in checks["stack"]["detail"]


# ------------------------------------------------------------------ the guarded commands


def test_backfill_refuses_a_bucket_the_stack_does_not_serve(stack: LocalStack) -> None:
    stack.client("s3").create_bucket(Bucket="elsewhere")
    result = cli(stack, "backfill", "s3://elsewhere/")
    one_error_line(
        result, "does not serve s3://elsewhere", "ExistingBucketNames", "captioner connect"
    )
    assert cli(stack, "backfill", "s3://photos/", "--dry-run").exit_code == 0


def test_list_and_get_of_a_bucket_that_does_not_exist_say_so(stack: LocalStack) -> None:
    one_error_line(cli(stack, "list", "s3://phtoos/"), "bucket phtoos does not exist")
    one_error_line(cli(stack, "get", "s3://phtoos/a.jpg"), "bucket phtoos does not exist")
    # an existing bucket without rows is still just empty
    assert cli(stack, "list", "s3://photos/nothing-here/").exit_code == 0


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("CaptionProvider=foo", "parameter CaptionProvider='foo' must be one of modelslab, local"),
        ("MaxReceiveCount=abc", "parameter MaxReceiveCount='abc' must be a number"),
        ("MaxReceiveCount=0", "parameter MaxReceiveCount='0' must be a number not less than 1"),
        ("LogLevel=LOUD", "parameter LogLevel='LOUD' must be one of DEBUG, INFO"),
        ("AlarmEmail=nobody", "parameter AlarmEmail='nobody' must be empty or an email address"),
        ("NoSuch=1", "parameter NoSuch does not exist in the template"),
    ],
)
def test_local_up_refuses_overrides_as_cloudformation_would_in_one_line(
    stack: LocalStack, override: str, message: str
) -> None:
    result = cli(stack, "local", "up", "--port", "0", "--parameter-overrides", override)
    one_error_line(result, message)


def test_several_refused_overrides_are_an_error_line_each(stack: LocalStack) -> None:
    overrides = "MaxReceiveCount=abc CaptionProvider=foo Bogus=1"
    result = cli(stack, "local", "up", "--port", "0", "--parameter-overrides", overrides)
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 3 and "Traceback" not in result.output
    assert any("Bogus does not exist" in line for line in errors)


# ------------------------------------------------------------------ AWS only: the function's role


def test_in_aws_a_bucket_the_functions_role_may_not_read_fails(stack: LocalStack) -> None:
    """IAM's policy simulator on the role Lambda reports (moto has neither: stubbed replies
    in the shapes AWS sends, on the local stack's buckets)."""
    import boto3
    from botocore.stub import Stubber

    from captioner_tools.cli.target import Deployment, TargetOptions
    from captioner_tools.doctor import check_buckets

    assert cli(stack, "connect", "s3://photos").exit_code == 0  # its events are not the point
    role = "arn:aws:iam::123456789012:role/captioner-CaptionFunctionRole-x"
    endpoint = {"endpoint_url": "https://example.invalid", "region_name": "us-east-1",
                "aws_access_key_id": "k", "aws_secret_access_key": "s"}  # fmt: skip
    lam, iam = boto3.client("lambda", **endpoint), boto3.client("iam", **endpoint)
    deployment = Deployment(TargetOptions())  # AWS: no endpoint of this machine
    real = Deployment(TargetOptions(endpoint_url=stack.endpoint_url))
    deployment._clients.update(
        {
            "lambda": lam,
            "iam": iam,
            "s3": real.client("s3"),
            "sqs": real.client("sqs"),
            "cloudformation": real.client("cloudformation"),
        }
    )

    def decision(action: str, allowed: bool) -> dict[str, Any]:
        verdict = "allowed" if allowed else "implicitDeny"
        return {"EvaluationResults": [{"EvalActionName": action, "EvalDecision": verdict}]}

    with Stubber(lam) as lam_stub, Stubber(iam) as iam_stub:
        lam_stub.add_response(
            "get_function_configuration",
            {"Role": role},
            {"FunctionName": stack.resources.outputs["FunctionName"]},
        )
        # the upload bucket: allowed; photos: ListBucket denied; gone (when it exists): allowed
        for allowed in (True, True, True, False, True, True):
            iam_stub.add_response("simulate_principal_policy", decision("s3:x", allowed))
        checks = {c.name: c for c in check_buckets(deployment)}
    assert checks[f"bucket {stack.bucket}"].status == "ok"
    photos = checks["bucket photos"]
    assert photos.status == "fail"
    assert photos.detail == "the function's role may not s3:ListBucket on arn:aws:s3:::photos"
    assert "ExistingBucketNames" in photos.fix


def test_in_aws_the_key_comes_from_the_stacks_secret_and_is_checked_with_it(
    stack: LocalStack, modelslab: FakeModelsLab
) -> None:
    """The AWS path on the local stack's services: a stack deployed with
    ModelsLabApiKeySecret (registered as `sam deploy` would leave it), doctor as in AWS."""
    from captioner_tools.cli.target import Deployment, TargetOptions
    from captioner_tools.doctor import run_checks
    from captioner_tools.local.resources import register_outputs

    real = Deployment(TargetOptions(endpoint_url=stack.endpoint_url))
    secrets = real.client("secretsmanager")
    arn = secrets.create_secret(Name="captioner/modelslab", SecretString="placeholder")["ARN"]
    parameters = {**stack.template.parameters, "ModelsLabApiKeySecret": arn,
                  "ModelsLabApiUrl": modelslab.url, "CaptionProvider": "modelslab"}  # fmt: skip
    register_outputs(real.client("cloudformation"), "in-aws", stack.template_path,
                     stack.resources.outputs, parameters)  # fmt: skip
    services = ("sts", "cloudformation", "secretsmanager", "s3", "sqs", "dynamodb", "lambda")

    def in_aws() -> Deployment:
        deployment = Deployment(TargetOptions(stack_name="in-aws"))  # no endpoint: AWS
        deployment._clients.update({name: real.client(name) for name in services})
        return deployment

    def provider_check() -> dict[str, str]:
        checks = run_checks(in_aws(), env={})  # nothing from this shell
        return next(c.as_dict() for c in checks if c.name == "provider modelslab")

    try:
        secrets.put_secret_value(SecretId=arn, SecretString=json.dumps({"key": API_KEY}))
        assert provider_check()["status"] == "ok"
        assert modelslab.requests[-1].body == {"key": API_KEY}  # the secret's key was used
        secrets.put_secret_value(SecretId=arn, SecretString="  ")
        check = provider_check()
        assert (check["status"], check["detail"]) == ("fail", f"no key in secret {arn}")
        secrets.delete_secret(SecretId=arn, ForceDeleteWithoutRecovery=True)
        check = provider_check()
        assert check["status"] == "fail" and check["detail"].startswith(f"cannot read secret {arn}")
        assert "create the secret" in check["fix"]
    finally:
        real.client("cloudformation").delete_stack(StackName="in-aws")
