"""The template passes a platform team's gate: checkov (offline, in its own venv) reports no
failed check and every skip carries its reason; the optional parameter sets (KmsKeyArn,
AccessLogBucket, SubnetIds/SecurityGroupIds, ExistingBucketNames) wire what they promise,
and change nothing when left empty.

Each parameter set is checked on the stack CloudFormation would create, with the parameter
given and without it: tests/template_eval.py resolves the conditions, Fn::If and the
Fn::Join/Fn::Split arithmetic for an example stack (account 123456789012, us-east-1, stack
"captioner").
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import socket
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
from cfnlint.decode import cfn_yaml

from tests.template_eval import Resolver, identity_statements

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
README = ROOT / "README.md"
CHECKOV = ROOT / ".tools" / "checkov" / "bin" / "checkov"

ACCOUNT, REGION = "123456789012", "us-east-1"
KEY = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
EXISTING = "photos, scans.example.com"  # CloudFormation trims each member
EXISTING_NAMES = ["photos", "scans.example.com"]
EMAIL = "ops@example.com"
# What CloudFormation names the resources it names itself: <stack>-<logical id>-<suffix>
# CloudFormation names rules <stack>-<logical id>-<suffix>
SWEEP_ARN = f"arn:aws:events:{REGION}:{ACCOUNT}:rule/captioner-BudgetSweepSchedule-1A2B3C4D5E6F"
RULE_ARN = f"arn:aws:events:{REGION}:{ACCOUNT}:rule/captioner-ExistingBucketsRule-1A2B3C4D5E6F"
LOG_GROUP_ARN = (
    f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:captioner-CaptionFunctionLogGroup-AbCdEf123456"
)
OBJECT_ACTIONS = {
    "s3:GetObject",
    "s3:GetObjectVersion",
    "s3:GetObjectTagging",
    "s3:GetObjectVersionTagging",
    "s3:PutObjectTagging",
    "s3:PutObjectVersionTagging",
    "s3:DeleteObjectTagging",
}
ENI_ACTIONS = {
    "ec2:CreateNetworkInterface",
    "ec2:DeleteNetworkInterface",
    "ec2:AssignPrivateIpAddresses",
    "ec2:UnassignPrivateIpAddresses",
}


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return cfn_yaml.load(str(TEMPLATE))


def stack(template: dict[str, Any], partition: str = "aws", **params: str) -> dict[str, Any]:
    """The resources (properties resolved) of a stack deployed with these parameters."""
    return Resolver(template, params, {"AWS::Partition": partition}).resources()


def props(resources: dict[str, Any], logical_id: str) -> dict[str, Any]:
    assert logical_id in resources, f"the stack has no {logical_id}"
    return resources[logical_id]["Properties"]


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def role_statements(resources: dict[str, Any], prefix: str) -> list[dict[str, Any]]:
    return [
        st
        for owner, st in identity_statements(resources)
        if owner == "CaptionFunctionRole"
        and any(a.startswith(prefix) for a in as_list(st["Action"]))
    ]


def allows(statements: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [s for s in statements if s["Effect"] == "Allow"]


# ------------------------------------------------------------------ checkov


class ConnectionTrap:
    """A listener on 127.0.0.1 given to checkov as its HTTP(S) proxy: it counts connection
    attempts, so a checkov that tried to reach its platform is caught, and nothing leaves
    the machine either way."""

    def __init__(self) -> None:
        self.attempts = 0
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._sock.getsockname()[1]}"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            self.attempts += 1
            conn.close()

    def __enter__(self) -> ConnectionTrap:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sock.close()


def run_checkov(path: Path) -> tuple[int, dict[str, Any]]:
    """checkov on one CloudFormation file, offline: --skip-download (no policy metadata, no
    platform calls), no update check, no API key in the environment (nothing uploaded), and
    every proxied request sent to a trap that must see none."""
    assert CHECKOV.is_file() and os.access(CHECKOV, os.X_OK), (
        f"checkov not found at {CHECKOV.relative_to(ROOT)}: the setup script installs it "
        "into its own venv (never into .venv) before the tests run"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BC_", "PRISMA_", "CKV_"))}
    env["BC_SKIP_MAPPING"] = "TRUE"
    # its banner asks PyPI for a newer checkov whenever its answer, cached for an hour in
    # the user's cache directory, has expired: the trap caught it once an hour had passed
    env["CKV_SKIP_PACKAGE_UPDATE_CHECK"] = "true"
    with ConnectionTrap() as trap:
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
            env[name] = trap.url
        env["NO_PROXY"] = env["no_proxy"] = ""
        proc = subprocess.run(
            [str(CHECKOV), "--file", str(path), "--framework", "cloudformation",
             "--skip-download", "--compact", "--output", "json"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
    assert trap.attempts == 0, f"checkov tried the network {trap.attempts} time(s)"
    try:
        report = json.loads(proc.stdout)
    except ValueError:
        raise AssertionError(
            f"checkov printed no JSON ({proc.returncode}):\n{proc.stderr}"
        ) from None
    assert isinstance(report, dict) and report.get("check_type") == "cloudformation", report
    return proc.returncode, report


def skip_problems(template: dict[str, Any], report: dict[str, Any]) -> list[str]:
    """Every skip must be inline (Metadata: checkov: skip) with an id and a real comment."""
    problems = []
    inline: set[tuple[str, str]] = set()
    for name, res in template["Resources"].items():
        for entry in res.get("Metadata", {}).get("checkov", {}).get("skip", []):
            check_id, comment = entry.get("id", ""), str(entry.get("comment", "")).strip()
            inline.add((name, check_id))
            if not re.fullmatch(r"CKV2?_AWS_\d+", check_id):
                problems.append(f"{name}: skip without a check id: {entry}")
            if len(comment.split()) < 8:
                problems.append(f"{name}: skip of {check_id} without a reason: {comment!r}")
    for skipped in report["results"].get("skipped_checks", []):
        name = skipped["resource"].rsplit(".", 1)[-1]
        comment = skipped["check_result"].get("suppress_comment", "")
        if (name, skipped["check_id"]) not in inline:
            problems.append(f"{skipped['resource']}: {skipped['check_id']} skipped, not inline")
        if not comment or comment == "No comment provided":
            problems.append(f"{skipped['resource']}: {skipped['check_id']} skipped silently")
    return problems


@pytest.fixture(scope="module")
def checkov_report() -> dict[str, Any]:
    code, report = run_checkov(TEMPLATE)
    failed = report["results"].get("failed_checks", [])
    assert code == 0 or failed, f"checkov exited {code} without a failed check"
    return report


def test_checkov_reports_no_failed_check(
    template: dict[str, Any], checkov_report: dict[str, Any]
) -> None:
    summary = checkov_report["summary"]
    failed = [
        f"{c['check_id']} {c['resource']}: {c['check_name']}"
        for c in checkov_report["results"].get("failed_checks", [])
    ]
    assert summary["failed"] == 0 and not failed, "checkov failed checks:\n" + "\n".join(failed)
    assert summary["parsing_errors"] == 0
    # every resource was scanned, and the checks the issue listed ran (passed or skipped)
    assert summary["resource_count"] == len(template["Resources"])
    results = {
        (c["check_id"], c["resource"].rsplit(".", 1)[-1])
        for kind in ("passed_checks", "skipped_checks")
        for c in checkov_report["results"][kind]
    }
    for check_id, resource in [
        ("CKV_AWS_18", "UploadBucket"),
        ("CKV_AWS_27", "CaptionQueue"),
        ("CKV_AWS_27", "CaptionDeadLetterQueue"),
        ("CKV_AWS_119", "CaptionsTable"),
        ("CKV_AWS_158", "CaptionFunctionLogGroup"),
        ("CKV_AWS_115", "CaptionFunction"),
        ("CKV_AWS_116", "CaptionFunction"),
        ("CKV_AWS_117", "CaptionFunction"),
        ("CKV_AWS_173", "CaptionFunction"),
    ]:
        assert (check_id, resource) in results, f"{check_id} did not run on {resource}"


def test_every_checkov_skip_is_inline_with_its_reason(
    template: dict[str, Any], checkov_report: dict[str, Any]
) -> None:
    assert skip_problems(template, checkov_report) == []
    skipped = {c["check_id"] for c in checkov_report["results"]["skipped_checks"]}
    assert skipped == {"CKV_AWS_116"}, "a new skip: review its reason, then list it here"


def test_the_gate_catches_a_failed_check_and_a_silent_skip(tmp_path: Path) -> None:
    """The same harness on a template with an unencrypted log group and a bare skip."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "Resources:\n"
        "  Queue:\n"
        "    Type: AWS::SQS::Queue\n"
        "    Metadata: {checkov: {skip: [{id: CKV_AWS_27}]}}\n"
        "  Logs:\n"
        "    Type: AWS::Logs::LogGroup\n"
        "    Properties: {RetentionInDays: 7}\n",
        encoding="utf-8",
    )
    code, report = run_checkov(bad)
    assert code != 0
    assert [c["check_id"] for c in report["results"]["failed_checks"]] == ["CKV_AWS_158"]
    problems = skip_problems(cfn_yaml.load(str(bad)), report)
    assert any("CKV_AWS_27 without a reason" in p for p in problems), problems
    assert any("CKV_AWS_27 skipped silently" in p for p in problems), problems


# ------------------------------------------------------------------ KmsKeyArn


def test_kms_key_encrypts_every_store_when_given(template: dict[str, Any]) -> None:
    res = stack(template, KmsKeyArn=KEY, AlarmEmail=EMAIL)
    (rule,) = props(res, "UploadBucket")["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule == {
        "ServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": KEY},
        "BucketKeyEnabled": True,
    }
    for queue in ("CaptionQueue", "CaptionDeadLetterQueue"):
        assert props(res, queue)["KmsMasterKeyId"] == KEY
        assert "SqsManagedSseEnabled" not in props(res, queue)  # the two exclude each other
    assert props(res, "CaptionsTable")["SSESpecification"] == {
        "SSEEnabled": True,
        "SSEType": "KMS",
        "KMSMasterKeyId": KEY,
    }
    assert props(res, "CaptionFunctionLogGroup")["KmsKeyId"] == KEY
    assert props(res, "CaptionFunction")["KmsKeyArn"] == KEY
    assert props(res, "AlarmTopic")["KmsMasterKeyId"] == KEY
    assert "AlarmTopicKey" not in res, "no second key when the user brings one"


def test_without_a_kms_key_encryption_stays_aws_managed(template: dict[str, Any]) -> None:
    res = stack(template, AlarmEmail=EMAIL)
    (rule,) = props(res, "UploadBucket")["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule == {
        "ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"},
        "BucketKeyEnabled": True,
    }
    for queue in ("CaptionQueue", "CaptionDeadLetterQueue"):
        assert props(res, queue)["SqsManagedSseEnabled"] is True
        assert "KmsMasterKeyId" not in props(res, queue)
    assert props(res, "CaptionsTable")["SSESpecification"] == {"SSEEnabled": True}
    assert "KmsKeyId" not in props(res, "CaptionFunctionLogGroup")
    assert "KmsKeyArn" not in props(res, "CaptionFunction")
    assert props(res, "AlarmTopic")["KmsMasterKeyId"] == "${AlarmTopicKey}"
    assert res["AlarmTopicKey"]["Type"] == "AWS::KMS::Key"
    assert not role_statements(res, "kms:")


def test_function_role_may_only_decrypt_with_the_key_through_its_services(
    template: dict[str, Any],
) -> None:
    statement, send = role_statements(stack(template, KmsKeyArn=KEY), "kms:")
    # sending to the encrypted caption queue (waits, the budget sweep): a data key via SQS
    assert as_list(send["Action"]) == ["kms:GenerateDataKey"]
    assert send["Condition"] == {"StringEquals": {"kms:ViaService": f"sqs.{REGION}.amazonaws.com"}}
    assert as_list(send["Resource"]) == [KEY]
    assert statement["Effect"] == "Allow"
    assert as_list(statement["Action"]) == ["kms:Decrypt"]
    assert as_list(statement["Resource"]) == [KEY]
    assert statement["Condition"] == {
        "StringEquals": {
            "kms:ViaService": [
                f"{service}.{REGION}.amazonaws.com"
                for service in ("s3", "sqs", "dynamodb", "lambda")
            ]
        }
    }


# What a service does with the key, by the kind of resource it writes into.
KMS_ACTIONS_FOR = {
    "queue": {"kms:GenerateDataKey", "kms:Decrypt"},
    "topic": {"kms:GenerateDataKey", "kms:Decrypt"},
    "log-group": {"kms:Encrypt", "kms:Decrypt", "kms:ReEncryptFrom", "kms:ReEncryptTo",
                  "kms:GenerateDataKey", "kms:DescribeKey"},
}  # fmt: skip


def _kms_needs(res: dict[str, Any]) -> list[tuple[str, set[str], dict[str, str]]]:
    """(service principal, actions, request context) for every service that writes into a
    resource of the stack encrypted with KEY, derived from the resolved stack."""
    needs = []
    placeholders = {"${ExistingBucketsRule.Arn}": RULE_ARN, "${BudgetSweepSchedule.Arn}": SWEEP_ARN}
    for name, r in res.items():
        p = r["Properties"]
        if r["Type"] == "AWS::SQS::QueuePolicy":
            queues = [q.strip("${}") for q in p["Queues"]]
            if not all(props(res, q).get("KmsMasterKeyId") == KEY for q in queues):
                continue
            for st in allows(p["PolicyDocument"]["Statement"]):
                service = st["Principal"]["Service"]
                source = next(iter(st["Condition"].get("ArnEquals", {}).values()))
                context = {
                    "aws:SourceAccount": ACCOUNT,
                    "aws:SourceArn": placeholders.get(source, source),
                }
                needs.append((service, KMS_ACTIONS_FOR["queue"], context))
        elif r["Type"] == "AWS::Logs::LogGroup" and p.get("KmsKeyId") == KEY:
            context = {"kms:EncryptionContext:aws:logs:arn": LOG_GROUP_ARN}
            needs.append((f"logs.{REGION}.amazonaws.com", KMS_ACTIONS_FOR["log-group"], context))
        elif r["Type"] == "AWS::CloudWatch::Alarm" and "${AlarmTopic}" in p.get("AlarmActions", []):
            assert props(res, "AlarmTopic")["KmsMasterKeyId"] == KEY, name
            context = {"aws:SourceAccount": ACCOUNT, "aws:SourceArn": f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:{name}"}  # fmt: skip
            needs.append(("cloudwatch.amazonaws.com", KMS_ACTIONS_FOR["topic"], context))
    return needs


def _readme_key_policy() -> dict[str, Any]:
    blocks = re.findall(r"```json\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    policies = [json.loads(b) for b in blocks if "CaptionerS3Notifications" in b]
    assert len(policies) == 1, "README must show the KMS key policy once, as a json block"
    return policies[0]


def _grants(statement: dict[str, Any], service: str, action: str, context: dict[str, str]) -> bool:
    """Does this key-policy statement allow ``service`` to call ``action`` in ``context``?"""
    if statement["Effect"] != "Allow" or statement.get("Principal") != {"Service": service}:
        return False
    if not any(
        fnmatch.fnmatchcase(action.lower(), a.lower()) for a in as_list(statement["Action"])
    ):
        return False
    for operator, conditions in statement.get("Condition", {}).items():
        for key, expected in conditions.items():
            if key not in context:
                return False  # a condition on something the request does not carry: denied
            match = {"StringEquals": str.__eq__, "ArnEquals": str.__eq__,
                     "ArnLike": fnmatch.fnmatchcase, "StringLike": fnmatch.fnmatchcase}[operator]  # fmt: skip
            if not any(match(context[key], e) for e in as_list(expected)):
                return False
    return True


def test_readme_key_policy_lets_every_service_use_the_key(template: dict[str, Any]) -> None:
    policy = _readme_key_policy()
    statements = policy["Statement"]
    res = stack(template, KmsKeyArn=KEY, AlarmEmail=EMAIL, ExistingBucketNames=EXISTING)
    needs = _kms_needs(res)
    services = {service for service, _, _ in needs}
    # the S3 notification, EventBridge (queue and its dead-letter target), logs, alarms
    assert services == {
        "s3.amazonaws.com",
        "events.amazonaws.com",
        f"logs.{REGION}.amazonaws.com",
        "cloudwatch.amazonaws.com",
    }, services
    assert ("s3.amazonaws.com", KMS_ACTIONS_FOR["queue"], {
        "aws:SourceAccount": ACCOUNT,
        "aws:SourceArn": f"arn:aws:s3:::{props(res, 'UploadBucket')['BucketName']}",
    }) in needs  # fmt: skip
    for service, actions, context in needs:
        for action in sorted(actions):
            assert any(_grants(s, service, action, context) for s in statements), (
                f"the README's key policy does not let {service} {action} with {context}"
            )
    # IAM policies (the function role's kms:Decrypt) only count if the key policy says so
    assert any(
        s["Principal"] == {"AWS": f"arn:aws:iam::{ACCOUNT}:root"} and s["Action"] == "kms:*"
        for s in statements
    )
    # and nothing is granted to a service for a bucket or rule of someone else
    stranger = {"aws:SourceAccount": "999999999999", "aws:SourceArn": "arn:aws:s3:::captioner-999999999999-x"}  # fmt: skip
    assert not any(_grants(s, "s3.amazonaws.com", "kms:Decrypt", stranger) for s in statements)


# ------------------------------------------------------------------ access logs, VPC


def test_access_logs_go_to_the_given_bucket_under_a_prefix(template: dict[str, Any]) -> None:
    bucket = props(stack(template, AccessLogBucket="central-access-logs"), "UploadBucket")
    assert bucket["LoggingConfiguration"] == {
        "DestinationBucketName": "central-access-logs",
        "LogFilePrefix": "captioner/UploadBucket/",
    }
    assert "LoggingConfiguration" not in props(stack(template), "UploadBucket")


def test_vpc_puts_the_function_in_the_subnets_with_network_interface_rights(
    template: dict[str, Any],
) -> None:
    res = stack(template, SubnetIds="subnet-0a1, subnet-0b2", SecurityGroupIds="sg-0c3")
    assert props(res, "CaptionFunction")["VpcConfig"] == {
        "SubnetIds": ["subnet-0a1", "subnet-0b2"],
        "SecurityGroupIds": ["sg-0c3"],
    }
    statements = role_statements(res, "ec2:")
    actions = {a for s in statements for a in as_list(s["Action"])}
    assert actions == ENI_ACTIONS | {"ec2:DescribeNetworkInterfaces", "ec2:DescribeSubnets"}
    for s in statements:
        if set(as_list(s["Action"])) & ENI_ACTIONS:
            assert set(as_list(s["Resource"])) == {
                f"arn:aws:ec2:{REGION}:{ACCOUNT}:{kind}/*"
                for kind in ("network-interface", "subnet", "security-group")
            }
        else:  # EC2's Describe actions have no resource-level permissions
            assert as_list(s["Resource"]) == ["*"]

    plain = stack(template)
    assert "VpcConfig" not in props(plain, "CaptionFunction")
    assert not role_statements(plain, "ec2:")


def test_subnets_and_security_groups_are_required_together(template: dict[str, Any]) -> None:
    rules = template["Rules"]
    empty = {"Fn::EachMemberEquals": [{"Ref": "SubnetIds"}, ""]}
    empty_groups = {"Fn::EachMemberEquals": [{"Ref": "SecurityGroupIds"}, ""]}
    pairs = {
        (json.dumps(r["RuleCondition"]), json.dumps(a["Assert"]))
        for r in rules.values()
        if "RuleCondition" in r
        for a in r["Assertions"]
    }
    assert (json.dumps({"Fn::Not": [empty]}), json.dumps({"Fn::Not": [empty_groups]})) in pairs
    assert (json.dumps({"Fn::Not": [empty_groups]}), json.dumps({"Fn::Not": [empty]})) in pairs


def test_reserved_concurrency_is_the_event_source_maximum(template: dict[str, Any]) -> None:
    fn = template["Resources"]["CaptionFunction"]["Properties"]
    (event,) = fn["Events"].values()
    assert fn["ReservedConcurrentExecutions"] == {"Ref": "ProviderConcurrency"}
    assert event["Properties"]["ScalingConfig"]["MaximumConcurrency"] == {
        "Ref": "ProviderConcurrency"
    }
    fn = props(stack(template, ProviderConcurrency="7"), "CaptionFunction")
    assert fn["ReservedConcurrentExecutions"] == "7"
    assert fn["Events"]["Uploads"]["Properties"]["ScalingConfig"]["MaximumConcurrency"] == "7"
    assert fn["Environment"]["Variables"]["CAPTION_PROVIDER_CONCURRENCY"] == "7"


# ------------------------------------------------------------------ existing buckets


def test_existing_buckets_rule_sends_their_object_events_to_the_queue(
    template: dict[str, Any],
) -> None:
    res = stack(template, ExistingBucketNames=EXISTING)
    rule = props(res, "ExistingBucketsRule")
    assert res["ExistingBucketsRule"]["Type"] == "AWS::Events::Rule"
    assert rule["State"] == "ENABLED"
    assert rule["EventPattern"] == {
        "source": ["aws.s3"],
        "detail-type": ["Object Created", "Object Deleted"],
        "detail": {"bucket": {"name": EXISTING_NAMES}},
    }
    assert rule["Targets"] == [
        {
            "Id": "caption-queue",
            "Arn": "${CaptionQueue.Arn}",
            "DeadLetterConfig": {"Arn": "${CaptionDeadLetterQueue.Arn}"},
        }
    ]
    # UploadBucket is still created, with its own direct notification
    assert "UploadBucket" in res and "NotificationConfiguration" in props(res, "UploadBucket")

    filtered = stack(template, ExistingBucketNames="photos", KeyPrefixFilter="uploads/",
                     KeySuffixFilter=".jpg")  # fmt: skip
    pattern = props(filtered, "ExistingBucketsRule")["EventPattern"]["detail"]
    assert pattern == {
        "bucket": {"name": ["photos"]},
        "object": {"key": [{"wildcard": "uploads/*.jpg"}]},
    }
    only_prefix = stack(template, ExistingBucketNames="photos", KeyPrefixFilter="uploads/")
    assert props(only_prefix, "ExistingBucketsRule")["EventPattern"]["detail"]["object"] == {
        "key": [{"wildcard": "uploads/*"}]
    }

    assert "ExistingBucketsRule" not in stack(template)


def test_queue_policies_admit_eventbridge_only_from_the_rule(template: dict[str, Any]) -> None:
    res = stack(template, ExistingBucketNames=EXISTING)
    for policy_id, queue in (
        ("CaptionQueuePolicy", "CaptionQueue"),
        ("CaptionDeadLetterQueuePolicy", "CaptionDeadLetterQueue"),
    ):
        statements = allows(props(res, policy_id)["PolicyDocument"]["Statement"])
        (events,) = [
            s for s in statements
            if s["Principal"] == {"Service": "events.amazonaws.com"}
            and s.get("Sid") != "AllowBudgetSweepSchedule"
        ]  # fmt: skip
        assert as_list(events["Action"]) == ["sqs:SendMessage"]
        assert events["Resource"] == "${" + queue + ".Arn}"
        assert events["Condition"] == {"ArnEquals": {"aws:SourceArn": "${ExistingBucketsRule.Arn}"}}

    plain = stack(template)
    principals = [
        s["Principal"]
        for p in ("CaptionQueuePolicy", "CaptionDeadLetterQueuePolicy")
        for s in allows(props(plain, p)["PolicyDocument"]["Statement"])
    ]
    assert principals == [{"Service": "s3.amazonaws.com"}, {"Service": "events.amazonaws.com"}]
    # EventBridge only for the budget sweep's schedule, and only into the caption queue
    (sweep,) = [
        s for s in allows(props(plain, "CaptionQueuePolicy")["PolicyDocument"]["Statement"])
        if s["Principal"] == {"Service": "events.amazonaws.com"}
    ]  # fmt: skip
    assert sweep["Condition"] == {"ArnEquals": {"aws:SourceArn": "${BudgetSweepSchedule.Arn}"}}
    assert as_list(sweep["Action"]) == ["sqs:SendMessage"]


def _s3_access(res: dict[str, Any]) -> tuple[set[str], set[str]]:
    """(object ARNs the function may read and tag, bucket ARNs it may list); asserts that
    these are its only S3 permissions."""
    objects: set[str] = set()
    buckets: set[str] = set()
    for st in role_statements(res, "s3:"):
        actions = set(as_list(st["Action"]))
        if actions == {"s3:ListBucket"}:
            buckets |= set(as_list(st["Resource"]))
        else:
            assert actions == OBJECT_ACTIONS, actions
            objects |= set(as_list(st["Resource"]))
    return objects, buckets


@pytest.mark.parametrize("partition", ["aws", "aws-cn", "aws-us-gov"])
def test_function_role_reaches_the_existing_buckets_and_nothing_else(
    template: dict[str, Any], partition: str
) -> None:
    res = stack(template, partition, ExistingBucketNames=EXISTING)
    objects, buckets = _s3_access(res)
    names = ["${UploadBucket}", *EXISTING_NAMES]
    assert objects == {f"arn:{partition}:s3:::{n}/*" for n in names}
    assert buckets == {f"arn:{partition}:s3:::{n}" for n in names}

    objects, buckets = _s3_access(stack(template, partition, ExistingBucketNames="photos"))
    assert objects == {f"arn:{partition}:s3:::{n}/*" for n in ("${UploadBucket}", "photos")}
    assert buckets == {f"arn:{partition}:s3:::{n}" for n in ("${UploadBucket}", "photos")}

    objects, buckets = _s3_access(stack(template, partition))
    assert objects == {f"arn:{partition}:s3:::${{UploadBucket}}/*"}
    assert buckets == {f"arn:{partition}:s3:::${{UploadBucket}}"}


def test_no_wildcards_with_every_optional_parameter_set(template: dict[str, Any]) -> None:
    res = stack(
        template,
        KmsKeyArn=KEY,
        AlarmEmail=EMAIL,
        AccessLogBucket="central-access-logs",
        SubnetIds="subnet-0a1",
        SecurityGroupIds="sg-0c3",
        ExistingBucketNames=EXISTING,
        ModelsLabApiKeySecret=f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:ml-AbCdEf",
    )
    allowed_object_arns = {f"arn:aws:s3:::{n}/*" for n in ("${UploadBucket}", *EXISTING_NAMES)}
    reports = "${BatchReportsBucket.Arn}/*"  # the batch jobs' manifests and reports
    own_log_group = {"CaptionFunctionRole": "${CaptionFunctionLogGroup}",
                     "BatchBackfillFunctionRole": "${BatchBackfillFunctionLogGroup}"}  # fmt: skip
    eni_arns = {
        f"arn:aws:ec2:{REGION}:{ACCOUNT}:{kind}/*"
        for kind in ("network-interface", "subnet", "security-group")
    }
    no_resource_level = {"xray:PutTraceSegments", "xray:PutTelemetryRecords",
                         "ec2:DescribeNetworkInterfaces", "ec2:DescribeSubnets"}  # fmt: skip
    for owner, st in identity_statements(res):
        assert st["Effect"] == "Allow" and "NotAction" not in st and "NotResource" not in st
        actions = as_list(st["Action"])
        assert not [a for a in actions if "*" in a], (owner, actions)
        for resource in as_list(st["Resource"]):
            if "*" not in resource:
                continue
            if resource == "*":
                assert set(actions) <= no_resource_level, (owner, st)
            elif resource.endswith(":log-stream:*"):
                assert own_log_group[owner] in resource and resource.count("*") == 1
            elif resource.startswith("arn:aws:ec2:"):
                assert resource in eni_arns and set(actions) <= ENI_ACTIONS, (owner, st)
            elif owner == "BatchOperationsRole":
                assert resource == reports, (owner, resource)
            else:
                assert resource in allowed_object_arns, (owner, resource)
