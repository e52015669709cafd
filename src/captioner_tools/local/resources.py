"""template.yaml's resources, made in moto by direct API calls driven by their properties.

Direct calls rather than moto's CloudFormation, because it drops the bucket notification,
the queue policies and TTL, and an event source mapping makes it try Docker. The stack's
outputs are then registered (``register_outputs``) so the CLI finds the resources by stack
name, as it does after a deploy.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from captioner_tools.errors import LocalStackError
from captioner_tools.local.defaults import ACCOUNT_ID, REGION
from captioner_tools.local.template import (
    FunctionSpec,
    SqsEventSource,
    StackTemplate,
    table_definition,
)

Clients = Callable[[str], Any]  # service name → boto3 client of the local endpoint

# SQS queue attributes CloudFormation passes through under the same name.
_QUEUE_ATTRIBUTES = {
    "DelaySeconds", "MaximumMessageSize", "MessageRetentionPeriod",
    "ReceiveMessageWaitTimeSeconds", "VisibilityTimeout", "SqsManagedSseEnabled",
    "KmsMasterKeyId", "KmsDataKeyReusePeriodSeconds", "FifoQueue",
    "ContentBasedDeduplication", "DeduplicationScope", "FifoThroughputLimit",
}  # fmt: skip


@dataclass(frozen=True)
class LocalNames:
    """Names of the local resources: readable and stable (CloudFormation would add a random
    suffix), so that the exports printed by ``local up`` stay valid across restarts."""

    bucket: str
    table: str
    queue: str
    dlq: str
    function: str

    @classmethod
    def for_stack(cls, stack_name: str) -> LocalNames:
        base = stack_name.lower()
        return cls(
            bucket=f"{base}-local-uploads",
            table=f"{stack_name}-local-captions",
            queue=f"{stack_name}-local-captions",
            dlq=f"{stack_name}-local-captions-dlq",
            function=f"{stack_name}-local-CaptionFunction",
        )


@dataclass(frozen=True)
class Schedule:
    """An EventBridge rule that sends a fixed message to one of the stack's queues on a
    schedule (the budget sweep): the local stack sends it itself, more often."""

    logical_id: str
    queue_url: str
    body: str
    expression: str  # e.g. rate(5 minutes)


@dataclass(frozen=True)
class Resources:
    """What was made: the value of every ``Ref`` and ``Fn::GetAtt`` (``"Id.Attribute"``) by
    logical id, which logical id plays which role, the function and the stack outputs."""

    ids: dict[str, str]  # role (bucket, table, queue, dlq, function) → logical id
    refs: dict[str, str]
    function: FunctionSpec  # with every Ref resolved (CAPTIONS_TABLE: !Ref CaptionsTable)
    outputs: dict[str, str]
    schedules: tuple[Schedule, ...] = ()

    @property
    def bucket(self) -> str:
        return self.refs[self.ids["bucket"]]

    @property
    def table(self) -> str:
        return self.refs[self.ids["table"]]

    @property
    def queue_url(self) -> str:
        return self.refs[self.ids["queue"]]

    @property
    def dlq_url(self) -> str:
        return self.refs[self.ids["dlq"]]

    @property
    def queue_arn(self) -> str:
        return self.refs[self.ids["queue"] + ".Arn"]

    @property
    def dlq_arn(self) -> str:
        return self.refs[self.ids["dlq"] + ".Arn"]


def create_resources(template: StackTemplate, names: LocalNames, client: Clients) -> Resources:
    """The function's queue and dead-letter queue, the bucket and the table, in the order
    their references need (the queue's redrive policy names the DLQ, the bucket's
    notification names the queue)."""
    function_id = _only(template.resources_of_type("AWS::Serverless::Function"))
    queue_id = sqs_event(template.function(function_id)).queue
    ids = {
        "function": function_id,
        "queue": queue_id,
        "dlq": _dead_letter_target(template.properties(queue_id)),
        "bucket": _only(template.resources_of_type("AWS::S3::Bucket")),
        "table": _only(template.resources_of_type("AWS::DynamoDB::Table")),
    }
    refs: dict[str, str] = {}
    refs |= _create_queue(template, client("sqs"), ids["dlq"], names.dlq, refs)
    refs |= _create_queue(template, client("sqs"), ids["queue"], names.queue, refs)
    refs |= _create_bucket(template, client("s3"), ids["bucket"], names.bucket, refs)
    refs |= _create_table(template, client("dynamodb"), ids["table"], names.table, refs)
    function_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{names.function}"
    refs |= {function_id: names.function, f"{function_id}.Arn": function_arn}
    return Resources(
        ids,
        refs,
        template.function(function_id, refs),
        template.outputs(refs),
        _schedules(template, refs),
    )


def _schedules(template: StackTemplate, refs: Mapping[str, str]) -> tuple[Schedule, ...]:
    """Scheduled rules whose target is a queue made here, with a constant input."""
    queues = {arn: refs[key[: -len(".Arn")]] for key, arn in refs.items() if key.endswith(".Arn")}
    found = []
    for logical_id in template.resources_of_type("AWS::Events::Rule"):
        props = template.resolve(template.properties(logical_id), refs)
        if "ScheduleExpression" not in props:
            continue
        for target in props.get("Targets", []):
            url = queues.get(target.get("Arn"))
            if isinstance(url, str) and url.startswith("http") and "Input" in target:
                found.append(
                    Schedule(logical_id, url, target["Input"], props["ScheduleExpression"])
                )
    return tuple(found)


def sqs_event(function: FunctionSpec) -> SqsEventSource:
    if not function.events:
        raise LocalStackError(f"{function.logical_id} has no SQS event in the template")
    return function.events[0]


def register_outputs(
    cfn: Any, stack_name: str, template_path: Path, outputs: dict[str, str]
) -> None:
    """A stack holding only the outputs, so discovery by stack name works locally too."""
    warnings.filterwarnings("ignore", message="Tried to parse AWS::CloudFormation::WaitCondi")
    body = {
        "Description": f"captioner local stack (outputs only) from {template_path}",
        "Resources": {"Placeholder": {"Type": "AWS::CloudFormation::WaitConditionHandle"}},
        "Outputs": {k: {"Value": v} for k, v in outputs.items()},
    }
    cfn.create_stack(StackName=stack_name, TemplateBody=json.dumps(body))


def _create_queue(
    template: StackTemplate, sqs: Any, logical_id: str, name: str, refs: Mapping[str, str]
) -> dict[str, str]:
    props = template.resolve(template.properties(logical_id), refs)
    attributes = {k: _attribute(v) for k, v in props.items() if k in _QUEUE_ATTRIBUTES}
    if "RedrivePolicy" in props:
        attributes["RedrivePolicy"] = json.dumps(props["RedrivePolicy"])
    url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    return {
        logical_id: url,
        f"{logical_id}.Arn": arn["Attributes"]["QueueArn"],
        f"{logical_id}.QueueName": name,
        f"{logical_id}.QueueUrl": url,
    }


def _create_bucket(
    template: StackTemplate, s3: Any, logical_id: str, name: str, refs: Mapping[str, str]
) -> dict[str, str]:
    props = template.resolve(template.properties(logical_id), refs)
    s3.create_bucket(Bucket=name)
    if "VersioningConfiguration" in props:
        s3.put_bucket_versioning(
            Bucket=name, VersioningConfiguration=props["VersioningConfiguration"]
        )
    if "PublicAccessBlockConfiguration" in props:
        s3.put_public_access_block(
            Bucket=name, PublicAccessBlockConfiguration=props["PublicAccessBlockConfiguration"]
        )
    if "OwnershipControls" in props:
        s3.put_bucket_ownership_controls(Bucket=name, OwnershipControls=props["OwnershipControls"])
    if "BucketEncryption" in props:
        s3.put_bucket_encryption(
            Bucket=name, ServerSideEncryptionConfiguration=_encryption(props["BucketEncryption"])
        )
    if "NotificationConfiguration" in props:
        s3.put_bucket_notification_configuration(
            Bucket=name, NotificationConfiguration=_notifications(props)
        )
    return {logical_id: name, f"{logical_id}.Arn": f"arn:aws:s3:::{name}"}


def _create_table(
    template: StackTemplate, ddb: Any, logical_id: str, name: str, refs: Mapping[str, str]
) -> dict[str, str]:
    props = template.resolve(template.properties(logical_id), refs)
    created = ddb.create_table(TableName=name, **table_definition(template.path, logical_id))
    ttl = props.get("TimeToLiveSpecification")
    if ttl:
        ddb.update_time_to_live(TableName=name, TimeToLiveSpecification=ttl)
    return {logical_id: name, f"{logical_id}.Arn": created["TableDescription"]["TableArn"]}


def _only(items: list[str]) -> str:
    if len(items) != 1:
        raise LocalStackError(f"expected one resource in the template, found {items or 'none'}")
    return items[0]


def _dead_letter_target(queue_props: Mapping[str, Any]) -> str:
    target = queue_props.get("RedrivePolicy", {}).get("deadLetterTargetArn", {})
    if isinstance(target, dict) and "Fn::GetAtt" in target:
        return str(target["Fn::GetAtt"][0])
    raise LocalStackError("the caption queue has no RedrivePolicy naming a queue of the template")


def _attribute(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def _encryption(spec: Mapping[str, Any]) -> dict[str, Any]:
    """CloudFormation's BucketEncryption → PutBucketEncryption's configuration."""
    rules = []
    for rule in spec.get("ServerSideEncryptionConfiguration", []):
        api_rule: dict[str, Any] = {
            "ApplyServerSideEncryptionByDefault": rule["ServerSideEncryptionByDefault"]
        }
        if "BucketKeyEnabled" in rule:
            api_rule["BucketKeyEnabled"] = bool(rule["BucketKeyEnabled"])
        rules.append(api_rule)
    return {"Rules": rules}


def _notifications(props: Mapping[str, Any]) -> dict[str, Any]:
    """CloudFormation's NotificationConfiguration → PutBucketNotificationConfiguration's."""
    configs = []
    for entry in props["NotificationConfiguration"].get("QueueConfigurations", []):
        config: dict[str, Any] = {"QueueArn": entry["Queue"], "Events": [entry["Event"]]}
        rules = entry.get("Filter", {}).get("S3Key", {}).get("Rules", [])
        if rules:
            config["Filter"] = {"Key": {"FilterRules": rules}}
        configs.append(config)
    return {"QueueConfigurations": configs}
