"""Static checks of template.yaml, samconfig.toml and events/*.json.

Nothing here talks to AWS. The template is read with cfn-lint's YAML loader, which
understands the CloudFormation short tags (!Ref, !Sub, ...) and returns plain dicts in the
long form ({"Ref": ...}, {"Fn::Sub": ...}).
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import pytest
from cfnlint.api import ManualArgs, lint_file
from cfnlint.decode import cfn_yaml

from captioner.config import SETTINGS
from captioner_tools.parameters import parameter_problems
from tests.template_eval import Resolver, identity_statements

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
SAM = ROOT / ".tools" / "sam" / "bin" / "sam"
EVENTS = ROOT / "events"

FUNCTION_TIMEOUT_MULTIPLE = 6  # Lambda: SQS visibility timeout >= 6x the function timeout
EXAMPLE_SECRET = "arn:aws:secretsmanager:us-east-1:123456789012:secret:captioner/modelslab-AbCdEf"


# ------------------------------------------------------------------ helpers


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return cfn_yaml.load(str(TEMPLATE))


@pytest.fixture(scope="module")
def resources(template: dict[str, Any]) -> dict[str, Any]:
    """The resources of a stack deployed with the default parameters (conditions resolved)."""
    return Resolver(template).resources()


def _props(resources: dict[str, Any], logical_id: str) -> dict[str, Any]:
    assert logical_id in resources, f"template.yaml has no resource {logical_id}"
    return resources[logical_id].get("Properties", {})


def _function_props(template: dict[str, Any]) -> dict[str, Any]:
    """CaptionFunction's properties with Globals.Function merged underneath."""
    merged = dict(template.get("Globals", {}).get("Function", {}))
    merged.update(_props(template["Resources"], "CaptionFunction"))
    return merged


def _branches(value: Any) -> list[Any]:
    """Every value an Fn::If may take (both branches, recursively); NoValue dropped."""
    if isinstance(value, dict) and set(value) == {"Fn::If"}:
        _, yes, no = value["Fn::If"]
        return _branches(yes) + _branches(no)
    if value == {"Ref": "AWS::NoValue"}:
        return []
    return [value]


def _as_list(value: Any) -> list[Any]:
    out: list[Any] = []
    for v in _branches(value):
        if isinstance(v, list):
            for item in v:
                out.extend(_branches(item))
        else:
            out.append(v)
    return out


def _render(value: Any) -> str:
    """An IAM Resource as a Sub-style string, e.g. "${CaptionsTable.Arn}/index/x"."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and len(value) == 1:
        ((fn, arg),) = value.items()
        if fn == "Ref":
            return "${" + arg + "}"
        if fn == "Fn::GetAtt":
            return "${" + (arg if isinstance(arg, str) else ".".join(arg)) + "}"
        if fn == "Fn::Sub":
            return arg if isinstance(arg, str) else arg[0]
        if fn == "Fn::Join":
            return arg[0].join(_render(v) for v in arg[1])
    raise AssertionError(f"unexpected IAM resource expression {value!r}")


def _possible_numbers(template: dict[str, Any], value: Any) -> list[int]:
    """Every value a numeric property can take: a literal, or a Ref to a parameter (its
    AllowedValues, else its MinValue/MaxValue/Default)."""
    if isinstance(value, (int, str)) and not isinstance(value, bool):
        return [int(value)]
    if isinstance(value, dict) and "Ref" in value:
        p = template["Parameters"][value["Ref"]]
        if "AllowedValues" in p:
            return [int(v) for v in p["AllowedValues"]]
        bounds = [p[k] for k in ("MinValue", "MaxValue", "Default") if k in p]
        assert "MinValue" in p and "MaxValue" in p, f"parameter {value['Ref']} is unbounded"
        return [int(v) for v in bounds]
    raise AssertionError(f"cannot tell the possible values of {value!r}")


# ------------------------------------------------------------------ linters


def test_cfn_lint_is_clean() -> None:
    matches = lint_file(TEMPLATE, config=ManualArgs(regions=["us-east-1"], include_checks=["I"]))
    assert not matches, "cfn-lint findings:\n" + "\n".join(str(m) for m in matches)


def test_sam_validate_lint_is_clean() -> None:
    assert SAM.is_file() and os.access(SAM, os.X_OK), (
        f"AWS SAM CLI not found at {SAM.relative_to(ROOT)}: it is installed into its own venv "
        "(never into .venv) by the setup script before the tests run"
    )
    env = {**os.environ, "SAM_CLI_TELEMETRY": "0", "AWS_DEFAULT_REGION": "us-east-1"}
    proc = subprocess.run(
        [str(SAM), "validate", "--lint", "--template-file", str(TEMPLATE)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"sam validate --lint failed ({proc.returncode}):\n{output}"
    assert "is a valid SAM Template" in output, output


def _fresh_clone(tmp_path: Path) -> Path:
    """The checkout as a clone of it has it: its tracked and new files, nothing ignored (no
    .venv, no .aws-sam). Only the AWS SAM CLI's venv is shared (a symlink), not installed again."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    clone = tmp_path / "clone"
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file() and not source.is_symlink():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, clone / name)
    (clone / ".tools").mkdir()
    (clone / ".tools" / "sam").symlink_to(SAM.parents[1])
    return clone


def _path_without_python312(tmp_path: Path) -> str:
    """A PATH like a pyenv machine's whose global version is not 3.12: `python3.12` is a shim
    that fails, and the other tools the build runs are there."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "python3.12"
    shim.write_text("#!/bin/sh\necho 'pyenv: python3.12: command not found' >&2\nexit 127\n")
    shim.chmod(0o755)
    tools = ("bash", "sh", "env", "make", "rm", "cp", "find", "mkdir", "dirname", "cat", "sha256sum",
             "cut", "touch", "grep", "uname", "ls", "git", "sed", "tr", "head")  # fmt: skip
    for tool in tools:
        found = shutil.which(tool)
        assert found, f"{tool} is needed on PATH"
        (bin_dir / tool).symlink_to(found)
    return str(bin_dir)


def test_a_fresh_clone_builds_without_python312_on_path(tmp_path: Path) -> None:
    """`scripts/deploy --build-only` (the `sam build` half of the deploy) in a fresh clone whose
    PATH has no working python3.12 and no venv: functions/Makefile finds Python 3.12 itself.

    Then both packages are checked: the function holds the real handler with precompiled
    bytecode and the arm64 wheels, without onnxruntime, numpy or the models, which are in
    OfflineModelLayer; each fits Lambda's 250 MB unzipped limit.
    """
    clone = _fresh_clone(tmp_path)
    path = _path_without_python312(tmp_path)
    env = {
        k: v for k, v in os.environ.items() if k not in ("PYTHON", "VIRTUAL_ENV", "PYENV_VERSION")
    }
    env.update({"SAM_CLI_TELEMETRY": "0", "AWS_DEFAULT_REGION": "us-east-1", "PATH": path})
    shim = shutil.which("python3.12", path=path)
    assert shim is not None and subprocess.run([shim], capture_output=True).returncode == 127
    proc = subprocess.run(
        [str(clone / "scripts" / "deploy"), "--build-only"],
        cwd=clone, env=env, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, f"sam build failed:\n{proc.stdout}\n{proc.stderr}"
    assert "Building with " in proc.stdout and "(3.12." in proc.stdout
    build_dir = clone / ".aws-sam" / "build"
    fn_dir = build_dir / "CaptionFunction"
    assert (fn_dir / "captioner" / "handler.py").is_file()
    size = _size(fn_dir)
    assert size < 60 * 2**20, f"function package is {size / 2**20:.0f} MiB unzipped"
    assert any(fn_dir.glob("PIL")) and any(fn_dir.glob("httpx"))
    # precompiled bytecode (/var/task is read-only: without it every cold start compiles),
    # no second copy of the runtime's boto3
    assert (fn_dir / "captioner" / "__pycache__" / "handler.cpython-312.pyc").is_file()
    assert list((fn_dir / "PIL" / "__pycache__").glob("Image.cpython-312.pyc"))
    assert not (fn_dir / "botocore").exists() and not (fn_dir / "boto3").exists()
    # the function package is copied whole but for the models (in the layer), and the
    # tools (CLI, local stack) are not in it
    models = ROOT / "functions" / "captioner" / "providers" / "models"
    expected = {
        f for f in _files(ROOT / "functions" / "captioner") if not f.startswith("providers/models/")
    }
    assert _files(fn_dir / "captioner") == expected
    assert not (fn_dir / "captioner" / "cli").exists()
    assert not (fn_dir / "captioner" / "local").exists()
    assert not (fn_dir / "captioner_tools").exists()
    assert not (fn_dir / "onnxruntime").exists() and not (fn_dir / "numpy").exists()
    # arm64 wheels for the arm64 function, not this machine's x86_64 ones
    assert list(fn_dir.glob("PIL/_imaging.cpython-312-aarch64-linux-gnu.so"))
    assert not list(build_dir.rglob("*x86_64-linux-gnu.so"))
    # the layer: python/ is on the runtime's sys.path; the models where modelfiles.py looks
    layer = build_dir / "OfflineModelLayer"
    assert (layer / "python" / "onnxruntime" / "__init__.py").is_file()
    assert list((layer / "python" / "numpy" / "__pycache__").glob("__init__.cpython-312.pyc"))
    assert _files(layer / "captioner-models") == _files(models)
    assert _size(layer) < 250 * 2**20 - size, "function + layer exceed 250 MB unzipped"
    built = cfn_yaml.load(str(build_dir / "template.yaml"))
    assert (
        built["Resources"]["OfflineModelLayer"]["Properties"]["ContentUri"] == "OfflineModelLayer"
    )


def test_the_build_names_a_python_that_is_not_312_in_one_line(tmp_path: Path) -> None:
    """PYTHON set to something else: the build stops before pip, saying what to set."""
    env = {**os.environ, "PYTHON": str(tmp_path / "python3.12")}
    proc = subprocess.run(
        ["make", "--no-print-directory", "-f", str(ROOT / "functions" / "Makefile"),
         "build-CaptionFunction", f"ARTIFACTS_DIR={tmp_path / 'out'}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode != 0
    assert f"error: PYTHON={tmp_path / 'python3.12'} is not a working Python 3.12" in proc.stderr
    assert "no Python 3.12 for the build" in proc.stderr
    assert not (tmp_path / "out").exists()


def _size(directory: Path) -> int:
    return sum(f.stat().st_size for f in directory.rglob("*") if f.is_file())


def _files(package: Path) -> set[str]:
    """A package's files (bytecode caches aside), relative to it."""
    return {
        p.relative_to(package).as_posix()
        for p in package.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }


# ------------------------------------------------------------------ function


def test_function_basics(template: dict[str, Any]) -> None:
    fn = _function_props(template)
    assert template["Resources"]["CaptionFunction"]["Type"] == "AWS::Serverless::Function"
    assert template["Transform"] == "AWS::Serverless-2016-10-31"
    assert fn["Runtime"] == "python3.12"
    assert fn["Architectures"] == ["arm64"]
    assert fn["Tracing"] == {"Ref": "TracingMode"}  # Active by default
    assert template["Parameters"]["TracingMode"]["Default"] == "Active"
    assert fn["Handler"] == "captioner.handler.lambda_handler"
    assert fn["CodeUri"] == "functions/"
    assert 512 in _possible_numbers(template, fn["MemorySize"])
    assert _possible_numbers(template, fn["Timeout"]) == [60]


def test_handler_resolves_to_a_module_under_code_uri(template: dict[str, Any]) -> None:
    fn = _function_props(template)
    module, _, attr = fn["Handler"].rpartition(".")
    path = ROOT / fn["CodeUri"] / (module.replace(".", "/") + ".py")
    assert path.is_file(), f"Handler {fn['Handler']} needs {path.relative_to(ROOT)}"
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    defined: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            defined.add(node.name)
        elif isinstance(node, ast.Assign):
            defined.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            defined.add(node.target.id)
        elif isinstance(node, ast.ImportFrom):
            defined.update(a.asname or a.name for a in node.names)
    assert attr in defined, f"{path.relative_to(ROOT)} defines no top-level {attr}"


def test_environment_matches_config(template: dict[str, Any]) -> None:
    read = {s.env for s in SETTINGS}
    variables = _function_props(template)["Environment"]["Variables"]
    unknown = {k for k in variables if k not in read and not k.startswith("POWERTOOLS_")}
    assert not unknown, f"template sets variables config.py never reads: {sorted(unknown)}"
    assert variables["CAPTIONS_TABLE"] == {"Ref": "CaptionsTable"}
    assert variables["CAPTION_MAX_RECEIVE_COUNT"] == {"Ref": "MaxReceiveCount"}
    assert variables["MODELSLAB_API_KEY_SECRET"] == {"Ref": "ModelsLabApiKeySecret"}
    assert variables["CAPTION_PROVIDER"] == {"Ref": "CaptionProvider"}
    assert variables["POWERTOOLS_SERVICE_NAME"] == "captioner"
    assert variables["POWERTOOLS_METRICS_NAMESPACE"] == "Captioner"
    for name in (
        "MODELSLAB_API_URL",
        "CAPTION_SKIP_TAG",
        "CAPTION_LENGTH",
        "CAPTION_TAG_KEY",
        "CAPTION_BATCH_CONCURRENCY",
        "POWERTOOLS_LOG_LEVEL",
    ):
        assert name in variables, name


def test_parameters(template: dict[str, Any]) -> None:
    params = template["Parameters"]
    assert params["CaptionProvider"]["AllowedValues"] == ["modelslab", "local", "openai", "bedrock"]
    assert params["CaptionProvider"]["Default"] == "modelslab"
    assert params["CaptionLength"]["AllowedValues"] == ["short", "normal", "long"]
    assert params["ModelsLabApiUrl"]["Default"] == "https://modelslab.com/api/v6"
    assert params["MaxReceiveCount"]["Default"] == 5
    # the smallest ModelsLab plan's queued-request limit; 2 is the SQS event source minimum
    assert params["ProviderConcurrency"]["Default"] == 5
    assert params["ProviderConcurrency"]["MinValue"] == 2
    assert params["DailyBudgetUsd"]["Default"] == 20
    assert params["DailyBudgetUsd"]["MinValue"] == 0
    for name in ("KeyPrefixFilter", "KeySuffixFilter", "ModelsLabApiKeySecret", "AlarmEmail"):
        assert params[name]["Default"] == "", name
    # modelslab without a key secret is refused at deploy time
    rule = template["Rules"]["ModelsLabNeedsApiKeySecret"]
    assert rule["RuleCondition"] == {"Fn::Equals": [{"Ref": "CaptionProvider"}, "modelslab"]}


def test_sqs_event_source(template: dict[str, Any]) -> None:
    events = _function_props(template)["Events"]
    sqs = [e["Properties"] for e in events.values() if e["Type"] == "SQS"]
    assert len(sqs) == 1 and len(events) == 1
    (src,) = sqs
    assert src["Queue"] == {"Fn::GetAtt": ["CaptionQueue", "Arn"]}
    assert src["BatchSize"] == 10
    assert 0 < src["MaximumBatchingWindowInSeconds"] <= 5
    assert src["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert src["ScalingConfig"] == {"MaximumConcurrency": {"Ref": "ProviderConcurrency"}}


def test_provider_concurrency_is_leases_and_instances(template: dict[str, Any]) -> None:
    fn = _function_props(template)
    variables = fn["Environment"]["Variables"]
    assert fn["ReservedConcurrentExecutions"] == {"Ref": "ProviderConcurrency"}
    assert variables["CAPTION_PROVIDER_CONCURRENCY"] == {"Ref": "ProviderConcurrency"}
    # a record at the provider, others doing their AWS work meanwhile; with free leases,
    # every record of the batch may be at the provider
    assert int(variables["CAPTION_BATCH_CONCURRENCY"]) >= 2
    assert variables["CAPTION_PROVIDER_SLOTS"] == variables["CAPTION_BATCH_CONCURRENCY"]
    assert variables["CAPTION_DAILY_BUDGET_USD"] == {"Ref": "DailyBudgetUsd"}
    assert variables["CAPTION_QUEUE_URL"] == {"Ref": "CaptionQueue"}


def test_budget_sweep_schedule_and_alarm(template: dict[str, Any]) -> None:
    from captioner.sweep import SWEEP_EVENT, is_sweep_message

    rule = template["Resources"]["BudgetSweepSchedule"]["Properties"]
    assert rule["ScheduleExpression"] == "rate(5 minutes)"
    (target,) = rule["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": ["CaptionQueue", "Arn"]}
    assert json.loads(target["Input"]) == SWEEP_EVENT and is_sweep_message(target["Input"])
    alarm = template["Resources"]["CaptionBudgetAlarm"]["Properties"]
    assert (alarm["Namespace"], alarm["MetricName"]) == ("Captioner", "BudgetExhausted")
    assert alarm["Dimensions"] == [{"Name": "service", "Value": "captioner"}]
    assert alarm["ComparisonOperator"] == "GreaterThanThreshold" and alarm["Threshold"] == 0


# ------------------------------------------------------------------ IAM

ALLOWED_STAR_ACTIONS_ON_ANY_RESOURCE = {"xray:PutTraceSegments", "xray:PutTelemetryRecords"}


def test_function_uses_its_own_least_privilege_role(template: dict[str, Any]) -> None:
    fn = _function_props(template)
    assert fn["Role"] == {"Fn::GetAtt": ["CaptionFunctionRole", "Arn"]}, (
        "a SAM-generated role would attach AWSLambdaSQSQueueExecutionRole (Resource '*')"
    )
    assert "Policies" not in fn
    role = _props(template["Resources"], "CaptionFunctionRole")
    assert not role.get("ManagedPolicyArns"), "no managed policies on the function role"


OWN_LOG_GROUP = {
    "CaptionFunctionRole": "CaptionFunctionLogGroup",
    "BatchBackfillFunctionRole": "BatchBackfillFunctionLogGroup",
}


def test_iam_has_no_wildcards_beyond_the_bucket_objects(resources: dict[str, Any]) -> None:
    """The default stack; tests/integration/test_template_security.py checks the optional
    parameter sets (existing buckets, KMS key, VPC) the same way."""
    statements = identity_statements(resources)
    assert statements, "no IAM statements found"
    for owner, st in statements:
        assert st["Effect"] == "Allow", (owner, st)
        assert "NotAction" not in st and "NotResource" not in st, (owner, st)
        actions = [a for a in _as_list(st["Action"])]
        for action in actions:
            assert "*" not in action, f"{owner}: wildcard action {action}"
        for resource in _as_list(st["Resource"]):
            text = _render(resource)
            if "*" not in text:
                continue
            if text == "*":
                # X-Ray has no resource-level permissions for sending traces.
                assert set(actions) <= ALLOWED_STAR_ACTIONS_ON_ANY_RESOURCE, (owner, st)
            elif text.endswith(":log-stream:*"):
                # Lambda names the streams at run time; the group is the function's own.
                group = OWN_LOG_GROUP[owner]
                assert "${" + group + "}" in text and text.count("*") == 1, text
                assert set(actions) <= {"logs:CreateLogStream", "logs:PutLogEvents"}, actions
            else:
                assert text in (
                    "arn:aws:s3:::${UploadBucket}/*",
                    "${UploadBucket.Arn}/*",
                    # the batch jobs' manifests and reports (BatchOperationsRole only)
                    *(["${BatchReportsBucket.Arn}/*"] if owner == "BatchOperationsRole" else []),
                ), f"{owner}: wildcard resource {text}"


def _statements_with(resources: dict[str, Any], prefix: str) -> list[dict[str, Any]]:
    return [
        st
        for owner, st in identity_statements(resources)
        if owner == "CaptionFunctionRole"
        and any(a.startswith(prefix) for a in _as_list(st["Action"]))
    ]


def test_iam_s3_dynamodb_sqs_secrets_scopes(template: dict[str, Any]) -> None:
    resources = Resolver(template, {"ModelsLabApiKeySecret": EXAMPLE_SECRET}).resources()
    s3, list_bucket = _statements_with(resources, "s3:")
    # ListBucket on the bucket itself only: it turns S3's 403 for a missing object into 404.
    assert _as_list(list_bucket["Action"]) == ["s3:ListBucket"]
    assert [_render(r) for r in _as_list(list_bucket["Resource"])] == [
        "arn:aws:s3:::${UploadBucket}"
    ]
    assert set(_as_list(s3["Action"])) == {
        "s3:GetObject",
        "s3:GetObjectVersion",
        "s3:GetObjectTagging",
        "s3:GetObjectVersionTagging",
        "s3:PutObjectTagging",
        "s3:PutObjectVersionTagging",
        "s3:DeleteObjectTagging",
    }
    assert [_render(r) for r in _as_list(s3["Resource"])] in (
        ["arn:aws:s3:::${UploadBucket}/*"],
        ["${UploadBucket.Arn}/*"],
    )

    (ddb,) = _statements_with(resources, "dynamodb:")
    assert set(_as_list(ddb["Action"])) == {
        "dynamodb:GetItem",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:DeleteItem",
        "dynamodb:Query",
    }
    assert {_render(r) for r in _as_list(ddb["Resource"])} == {
        "${CaptionsTable.Arn}",
        "${CaptionsTable.Arn}/index/by-bucket-updated",
        "${CaptionsTable.Arn}/index/by-status-updated",
    }

    (sqs,) = _statements_with(resources, "sqs:")
    assert [_render(r) for r in _as_list(sqs["Resource"])] == ["${CaptionQueue.Arn}"]
    assert {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"} <= set(
        _as_list(sqs["Action"])
    )

    (secret,) = _statements_with(resources, "secretsmanager:")
    assert _as_list(secret["Action"]) == ["secretsmanager:GetSecretValue"]
    assert _as_list(secret["Resource"]) == [EXAMPLE_SECRET]
    # ... and only when a secret is given
    without = Resolver(template, {"CaptionProvider": "local"}).resources()
    assert not _statements_with(without, "secretsmanager:")
    assert template["Conditions"]["HasApiKeySecret"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "ModelsLabApiKeySecret"}, ""]}]
    }


# ------------------------------------------------------------------ queues


def test_visibility_timeout_covers_six_function_timeouts(template: dict[str, Any]) -> None:
    fn = _function_props(template)
    queue = _props(template["Resources"], "CaptionQueue")
    longest = max(_possible_numbers(template, fn["Timeout"]))
    shortest = min(_possible_numbers(template, queue["VisibilityTimeout"]))
    assert shortest >= FUNCTION_TIMEOUT_MULTIPLE * longest, (shortest, longest)


def test_queues_encryption_redrive_and_retention(
    template: dict[str, Any], resources: dict[str, Any]
) -> None:
    queue, dlq = _props(resources, "CaptionQueue"), _props(resources, "CaptionDeadLetterQueue")
    # SSE-SQS by default; KmsKeyArn switches both to that key (test_template_security.py)
    assert queue["SqsManagedSseEnabled"] is True and "KmsMasterKeyId" not in queue
    assert dlq["SqsManagedSseEnabled"] is True and "KmsMasterKeyId" not in dlq
    queue = _props(template["Resources"], "CaptionQueue")
    assert queue["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": ["CaptionDeadLetterQueue", "Arn"]},
        "maxReceiveCount": {"Ref": "MaxReceiveCount"},
    }
    assert dlq["MessageRetentionPeriod"] == 1209600  # 14 days


def test_queue_policy_admits_only_the_upload_bucket(resources: dict[str, Any]) -> None:
    """The default stack: S3 from the upload bucket, and the budget sweep's schedule; with
    ExistingBucketNames EventBridge's rule is admitted too (test_template_security.py)."""
    res = resources
    policy = _props(res, "CaptionQueuePolicy")
    assert policy["Queues"] == ["${CaptionQueue}"]
    statements = policy["PolicyDocument"]["Statement"]
    allows = [s for s in statements if s["Effect"] == "Allow"]
    assert [s["Sid"] for s in allows] == [
        "AllowUploadBucketNotifications",
        "AllowBudgetSweepSchedule",
    ]
    allow = allows[0]
    assert allow["Principal"] == {"Service": "s3.amazonaws.com"}
    assert _as_list(allow["Action"]) == ["sqs:SendMessage"]
    cond = allow["Condition"]
    source_arn = (cond.get("ArnEquals") or cond.get("ArnLike"))["aws:SourceArn"]
    assert cond["StringEquals"]["aws:SourceAccount"] == "123456789012"
    # The queue policy names the bucket by the same expression as the bucket itself.
    bucket_name = _props(res, "UploadBucket")["BucketName"]
    assert source_arn == f"arn:aws:s3:::{bucket_name}"
    assert _denies_insecure_transport(statements)


def _denies_insecure_transport(statements: list[dict[str, Any]]) -> bool:
    return any(
        s["Effect"] == "Deny"
        and s["Principal"] in ("*", {"AWS": "*"})
        and s.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport") in ("false", False)
        for s in statements
    )


def test_dead_letter_alarm(template: dict[str, Any]) -> None:
    res = template["Resources"]
    alarm = _props(res, "CaptionDeadLetterAlarm")
    assert res["CaptionDeadLetterAlarm"]["Type"] == "AWS::CloudWatch::Alarm"
    assert alarm["Namespace"] == "AWS/SQS"
    assert alarm["MetricName"] == "ApproximateNumberOfMessagesVisible"
    assert alarm["Dimensions"] == [
        {"Name": "QueueName", "Value": {"Fn::GetAtt": ["CaptionDeadLetterQueue", "QueueName"]}}
    ]
    assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
    assert alarm["Threshold"] == 0
    assert res["AlarmTopic"]["Condition"] == "HasAlarmEmail"
    assert _props(res, "AlarmTopic")["Subscription"][0]["Protocol"] == "email"
    assert "KmsMasterKeyId" in _props(res, "AlarmTopic")


# ------------------------------------------------------------------ bucket


def test_bucket_name_is_deterministic_and_valid(resources: dict[str, Any]) -> None:
    name = _props(resources, "UploadBucket")["BucketName"]
    assert name == "captioner-123456789012-1234567db123"
    assert re.fullmatch(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]", name), name
    # Longest possible: the account id is always 12 digits and a UUID's last group 12 hex.
    assert len("captioner-") + 12 + 1 + 12 <= 63


def test_bucket_is_private_encrypted_versioned(resources: dict[str, Any]) -> None:
    bucket = _props(resources, "UploadBucket")
    assert bucket["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    (rule,) = bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    # SSE-S3 by default; KmsKeyArn switches to SSE-KMS (test_template_security.py)
    assert rule["ServerSideEncryptionByDefault"] == {"SSEAlgorithm": "AES256"}
    assert rule["BucketKeyEnabled"] is True
    assert bucket["VersioningConfiguration"] == {"Status": "Enabled"}
    assert bucket["OwnershipControls"] == {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}
    policy = _props(resources, "UploadBucketPolicy")
    assert policy["Bucket"] == "${UploadBucket}"
    statements = policy["PolicyDocument"]["Statement"]
    assert _denies_insecure_transport(statements)
    deny = next(s for s in statements if s["Effect"] == "Deny")
    assert {_render(r) for r in _as_list(deny["Resource"])} == {
        "${UploadBucket.Arn}",
        "${UploadBucket.Arn}/*",
    }


def test_bucket_notifies_the_queue_directly(template: dict[str, Any]) -> None:
    res = template["Resources"]
    assert res["UploadBucket"]["DependsOn"] in ("CaptionQueuePolicy", ["CaptionQueuePolicy"])
    notif = _props(res, "UploadBucket")["NotificationConfiguration"]
    assert set(notif) == {"QueueConfigurations"}, "S3 -> SQS directly, not EventBridge"
    configs = notif["QueueConfigurations"]
    assert sorted(c["Event"] for c in configs) == ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]
    for c in configs:
        assert c["Queue"] == {"Fn::GetAtt": ["CaptionQueue", "Arn"]}
        # empty filters are left out entirely
        f = c["Filter"]["Fn::If"]
        assert f[0] == "HasKeyFilter" and f[2] == {"Ref": "AWS::NoValue"}
        rules = f[1]["S3Key"]["Rules"]
        assert [r["Fn::If"][0] for r in rules] == ["HasKeyPrefixFilter", "HasKeySuffixFilter"]
        assert [r["Fn::If"][1]["Name"] for r in rules] == ["prefix", "suffix"]
    conds = template["Conditions"]
    assert conds["HasKeyFilter"] == {
        "Fn::Or": [{"Condition": "HasKeyPrefixFilter"}, {"Condition": "HasKeySuffixFilter"}]
    }


# ------------------------------------------------------------------ table


def test_table_schema(resources: dict[str, Any]) -> None:
    table = _props(resources, "CaptionsTable")
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert table["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert table["SSESpecification"]["SSEEnabled"] is True
    assert table["KeySchema"] == [
        {"AttributeName": "bucket", "KeyType": "HASH"},
        {"AttributeName": "key", "KeyType": "RANGE"},
    ]
    indexes = {i["IndexName"]: i for i in table["GlobalSecondaryIndexes"]}
    assert set(indexes) == {"by-bucket-updated", "by-status-updated"}
    assert indexes["by-bucket-updated"]["KeySchema"] == [
        {"AttributeName": "bucket", "KeyType": "HASH"},
        {"AttributeName": "updated_at", "KeyType": "RANGE"},
    ]
    assert indexes["by-status-updated"]["KeySchema"] == [
        {"AttributeName": "status", "KeyType": "HASH"},
        {"AttributeName": "updated_at", "KeyType": "RANGE"},
    ]
    for index in indexes.values():
        assert index["Projection"] == {"ProjectionType": "ALL"}
    attrs = {a["AttributeName"]: a["AttributeType"] for a in table["AttributeDefinitions"]}
    assert attrs == {"bucket": "S", "key": "S", "status": "S", "updated_at": "S"}


def test_outputs(template: dict[str, Any]) -> None:
    outputs = template["Outputs"]
    for name in ("BucketName", "TableName", "QueueUrl", "DeadLetterQueueUrl"):
        assert name in outputs, name
    for name, out in outputs.items():
        assert out.get("Description"), f"output {name} has no Description"
    assert outputs["BucketName"]["Value"] == {"Ref": "UploadBucket"}
    assert outputs["TableName"]["Value"] == {"Ref": "CaptionsTable"}
    assert outputs["QueueUrl"]["Value"] == {"Ref": "CaptionQueue"}
    assert outputs["DeadLetterQueueUrl"]["Value"] == {"Ref": "CaptionDeadLetterQueue"}


def test_samconfig() -> None:
    cfg = tomllib.loads((ROOT / "samconfig.toml").read_text(encoding="utf-8"))
    assert cfg["version"] == 0.1
    default = cfg["default"]
    assert default["global"]["parameters"]["stack_name"] == "captioner"
    deploy = default["deploy"]["parameters"]
    assert deploy["capabilities"] == "CAPABILITY_IAM"
    assert deploy["resolve_s3"] is True
    assert deploy["confirm_changeset"] is True
    assert default["build"]["parameters"]["cached"] is False
    assert "use_container" not in default["build"]["parameters"]


# An example line of samconfig.toml, commented out or not.
_OVERRIDES_LINE = re.compile(
    r'^#?\s*parameter_overrides\s*=\s*"(?P<value>[^"]*)"\s*$', re.MULTILINE
)


def _override_problems(template: dict[str, Any], line: str) -> list[str]:
    """What CloudFormation (and the template's Rules) would refuse in one parameter_overrides."""
    values = dict(item.split("=", 1) for item in shlex.split(line))
    problems = parameter_problems(template["Parameters"], values)
    if values.get("CaptionProvider", "modelslab") == "modelslab" and not values.get(
        "ModelsLabApiKeySecret"
    ):
        problems.append("ModelsLabNeedsApiKeySecret: CaptionProvider modelslab needs the secret")
    return problems


def test_samconfig_examples_use_only_real_parameters(template: dict[str, Any]) -> None:
    """Each parameter_overrides example in samconfig.toml (commented out: uncommenting one is
    how they are used) names template parameters only, with values the template accepts."""
    text = (ROOT / "samconfig.toml").read_text(encoding="utf-8")
    examples = [m["value"] for m in _OVERRIDES_LINE.finditer(text)]
    assert len(examples) >= 3, "samconfig.toml lost its examples"
    for line in examples:
        assert _override_problems(template, line) == [], line
    named = {item.split("=", 1)[0] for line in examples for item in shlex.split(line)}
    assert {"PermissionsBoundaryArn", "TracingMode", "CaptionProvider"} <= named


def test_the_samconfig_check_refuses_what_a_deploy_would(template: dict[str, Any]) -> None:
    """The old example's MaximumConcurrency (not a parameter) broke the deploy; it is caught."""
    secret = f"ModelsLabApiKeySecret={EXAMPLE_SECRET}"
    assert _override_problems(template, f"{secret} MaximumConcurrency=2") == [
        "parameter MaximumConcurrency does not exist in the template"
    ]
    assert _override_problems(template, f"{secret} TracingMode=Off") == [
        "parameter TracingMode='Off' must be one of Active, PassThrough"
    ]
    assert _override_problems(template, "CaptionProvider=modelslab") != []


# ------------------------------------------------------------------ events

EXAMPLE_BUCKET = "captioner-uploads-example"


def _load(name: str) -> Any:
    return json.loads((EVENTS / name).read_text(encoding="utf-8"))


def _check_s3_record(record: dict[str, Any]) -> None:
    assert record["eventSource"] == "aws:s3"
    assert record["eventVersion"].startswith("2.")
    assert record["s3"]["s3SchemaVersion"] == "1.0"
    assert record["s3"]["bucket"]["name"] == EXAMPLE_BUCKET
    assert record["s3"]["bucket"]["arn"] == f"arn:aws:s3:::{EXAMPLE_BUCKET}"
    for key in ("awsRegion", "eventTime", "userIdentity", "requestParameters", "responseElements"):
        assert key in record, key
    obj = record["s3"]["object"]
    assert obj["key"] and obj["versionId"]
    assert re.fullmatch(r"[0-9A-F]{16,}", obj["sequencer"]), obj["sequencer"]


def _check_sqs_record(record: dict[str, Any]) -> None:
    for key in (
        "messageId",
        "receiptHandle",
        "body",
        "attributes",
        "messageAttributes",
        "md5OfBody",
        "eventSource",
        "eventSourceARN",
        "awsRegion",
    ):
        assert key in record, key
    assert record["eventSource"] == "aws:sqs"
    assert record["eventSourceARN"].startswith(f"arn:aws:sqs:{record['awsRegion']}:")
    assert isinstance(record["body"], str)
    assert record["md5OfBody"] == hashlib.md5(record["body"].encode()).hexdigest()
    attrs = record["attributes"]
    for key in (
        "ApproximateReceiveCount",
        "SentTimestamp",
        "SenderId",
        "ApproximateFirstReceiveTimestamp",
    ):
        assert isinstance(attrs[key], str), key
    assert int(attrs["ApproximateReceiveCount"]) >= 1


def test_event_files_are_json() -> None:
    names = sorted(p.name for p in EVENTS.glob("*.json"))
    assert {
        "s3-put.json",
        "s3-delete.json",
        "sqs-s3-put.json",
        "sqs-s3-testevent.json",
        "sqs-eventbridge-put.json",
    } <= set(names)
    for name in names:
        _load(name)


def test_s3_put_event() -> None:
    (record,) = _load("s3-put.json")["Records"]
    _check_s3_record(record)
    assert record["eventName"] == "ObjectCreated:Put"
    obj = record["s3"]["object"]
    assert isinstance(obj["size"], int) and obj["size"] > 0
    assert re.fullmatch(r"[0-9a-f]{32}", obj["eTag"])
    # keys in S3 notifications are URL-encoded, a space as '+'
    assert "+" in obj["key"] and " " not in obj["key"]
    assert " " in unquote_plus(obj["key"])


def test_s3_delete_event() -> None:
    (record,) = _load("s3-delete.json")["Records"]
    _check_s3_record(record)
    assert record["eventName"] == "ObjectRemoved:DeleteMarkerCreated"
    assert "size" not in record["s3"]["object"]
    put = _load("s3-put.json")["Records"][0]["s3"]["object"]
    assert record["s3"]["object"]["key"] == put["key"]
    assert record["s3"]["object"]["sequencer"] > put["sequencer"]


def test_sqs_s3_put_event() -> None:
    (record,) = _load("sqs-s3-put.json")["Records"]
    _check_sqs_record(record)
    body = json.loads(record["body"])
    assert body == _load("s3-put.json")


def test_sqs_s3_test_event() -> None:
    (record,) = _load("sqs-s3-testevent.json")["Records"]
    _check_sqs_record(record)
    body = json.loads(record["body"])
    assert body["Service"] == "Amazon S3"
    assert body["Event"] == "s3:TestEvent"
    assert body["Bucket"] == EXAMPLE_BUCKET
    for key in ("Time", "RequestId", "HostId"):
        assert body[key], key
    assert "Records" not in body


def test_sqs_eventbridge_put_event() -> None:
    (record,) = _load("sqs-eventbridge-put.json")["Records"]
    _check_sqs_record(record)
    body = json.loads(record["body"])
    assert body["source"] == "aws.s3"
    assert body["detail-type"] == "Object Created"
    assert body["version"] == "0"
    assert body["resources"] == [f"arn:aws:s3:::{EXAMPLE_BUCKET}"]
    detail = body["detail"]
    assert detail["bucket"]["name"] == EXAMPLE_BUCKET
    assert detail["reason"] == "PutObject"
    obj = detail["object"]
    for key in ("key", "size", "etag", "version-id", "sequencer"):
        assert key in obj, key
    # EventBridge keys are NOT URL-encoded: the same object as s3-put.json, decoded.
    put = _load("s3-put.json")["Records"][0]["s3"]["object"]
    assert obj["key"] == unquote_plus(put["key"])
    assert obj["version-id"] == put["versionId"]
    assert obj["etag"] == put["eTag"]
    assert obj["size"] == put["size"]
