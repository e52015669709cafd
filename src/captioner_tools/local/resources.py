"""template.yaml's resources, made in moto by direct API calls driven by their properties.

Direct calls rather than moto's CloudFormation, because it drops the bucket notification,
the queue policies and TTL, and an event source mapping makes it try Docker. The stack's
outputs are then registered (``register_outputs``) so the CLI finds the resources by stack
name, as it does after a deploy.

With ``ExistingBucketNames``, each of those buckets is created as a stand-in for one the user
already has (unversioned, as existing buckets often are) and connected as ``captioner
connect`` would (EventBridge notifications on), and the template's EventBridge rules are made
with their patterns and targets, so S3 → EventBridge → rule → CaptionQueue runs in moto.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from captioner.announce import SOURCE as EVENT_SOURCE
from captioner_tools.errors import LocalStackError
from captioner_tools.local.defaults import ACCOUNT_ID, REGION
from captioner_tools.local.template import (
    FunctionSpec,
    SqsEventSource,
    StackTemplate,
    table_definition,
)
from captioner_tools.notifications import EXISTING_BUCKETS_PARAMETER, enable_eventbridge

Clients = Callable[[str], Any]  # service name → boto3 client of the local endpoint
# The local stack's own output: the queue its "Caption Status Changed" events reach.
EVENTS_QUEUE_OUTPUT = "EventsQueueUrl"

# Bucket naming rules (general purpose buckets), loosely: 3-63 chars, lowercase, digits, . -
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")

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
    stack: str
    events: str  # the local queue the function's "Caption Status Changed" events reach

    @classmethod
    def for_stack(cls, stack_name: str) -> LocalNames:
        base = stack_name.lower()
        return cls(
            bucket=f"{base}-local-uploads",
            table=f"{stack_name}-local-captions",
            queue=f"{stack_name}-local-captions",
            dlq=f"{stack_name}-local-captions-dlq",
            function=f"{stack_name}-local-CaptionFunction",
            stack=stack_name,
            events=f"{stack_name}-local-caption-events",
        )

    def rule(self, logical_id: str) -> str:
        return f"{self.stack}-local-{logical_id}"


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
    existing_buckets: tuple[str, ...] = ()  # stand-ins for ExistingBucketNames
    rules: tuple[str, ...] = ()  # names of the EventBridge rules made
    schedules: tuple[Schedule, ...] = ()  # scheduled rules: the local stack sends their input
    batch_function: FunctionSpec | None = None  # BatchBackfillFunction, refs resolved

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
    # the caption function is the one with the SQS event; the upload bucket the one that
    # notifies it (BatchBackfillFunction and BatchReportsBucket are made by _create_batch)
    functions = template.resources_of_type("AWS::Serverless::Function")
    function_id = _only([f for f in functions if template.function(f).events])
    queue_id = sqs_event(template.function(function_id)).queue
    buckets = template.resources_of_type("AWS::S3::Bucket")
    ids = {
        "function": function_id,
        "queue": queue_id,
        "dlq": _dead_letter_target(template.properties(queue_id)),
        "bucket": _only(
            [b for b in buckets if "NotificationConfiguration" in template.properties(b)]
        ),
        "table": _only(template.resources_of_type("AWS::DynamoDB::Table")),
    }
    refs: dict[str, str] = {}
    refs |= _create_queue(template, client("sqs"), ids["dlq"], names.dlq, refs)
    refs |= _create_queue(template, client("sqs"), ids["queue"], names.queue, refs)
    refs |= _create_bucket(template, client("s3"), ids["bucket"], names.bucket, refs)
    refs |= _create_table(template, client("dynamodb"), ids["table"], names.table, refs)
    function_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{names.function}"
    refs |= {function_id: names.function, f"{function_id}.Arn": function_arn}
    existing = _create_existing_buckets(template, client("s3"), names)
    rules: dict[str, str] = {}
    for rule_id in template.resources_of_type("AWS::Events::Rule"):
        if "ScheduleExpression" in template.properties(rule_id):
            continue  # moto never fires schedules: the local stack sends them (_schedules)
        rules |= _create_rule(template, client("events"), rule_id, names.rule(rule_id), refs)
    refs |= rules
    batch_refs, batch_function = _create_batch(template, client("s3"), names, refs)
    refs |= batch_refs
    return Resources(
        ids,
        refs,
        template.function(function_id, refs),
        template.outputs(refs) | _create_event_log(template, client, names),
        existing_buckets=existing,
        rules=tuple(v for k, v in rules.items() if "." not in k),
        schedules=_schedules(template, refs),
        batch_function=batch_function,
    )


BATCH_FUNCTION, BATCH_ROLE, BATCH_REPORTS = (
    "BatchBackfillFunction", "BatchOperationsRole", "BatchReportsBucket",
)  # fmt: skip


def _create_batch(
    template: StackTemplate, s3: Any, names: LocalNames, refs: Mapping[str, str]
) -> tuple[dict[str, str], FunctionSpec | None]:
    """The batch backfill's reports bucket, and the names and environment of its function
    and role, for the local stand-in of S3 Batch Operations (``local/batchops.py``)."""
    if BATCH_FUNCTION not in template.resources_of_type("AWS::Serverless::Function"):
        return {}, None
    made: dict[str, str] = {}
    if BATCH_REPORTS in template.resources_of_type("AWS::S3::Bucket"):
        name = f"{names.stack.lower()}-local-batch-reports"
        made |= _create_bucket(template, s3, BATCH_REPORTS, name, refs)
    function = f"{names.stack}-local-{BATCH_FUNCTION}"
    made |= {
        BATCH_FUNCTION: function,
        f"{BATCH_FUNCTION}.Arn": f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{function}",
        BATCH_ROLE: f"{names.stack}-local-{BATCH_ROLE}",
        f"{BATCH_ROLE}.Arn": f"arn:aws:iam::{ACCOUNT_ID}:role/{names.stack}-local-{BATCH_ROLE}",
    }
    return made, template.function(BATCH_FUNCTION, {**refs, **made})


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


def _create_event_log(
    template: StackTemplate, client: Clients, names: LocalNames
) -> dict[str, str]:
    """Local only: a rule on the function's event bus (EventBusName) that sends its "Caption
    Status Changed" events to a queue ``captioner events`` reads. In AWS the events go where
    your own rules send them. Nothing when EventBusName is empty (events off)."""
    bus = str(template.parameters.get("EventBusName") or "")
    if not bus:
        return {}
    events, sqs = client("events"), client("sqs")
    if bus != "default":
        events.create_event_bus(Name=bus)
    url = sqs.create_queue(QueueName=names.events)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]
    rule = names.rule("CaptionEvents")
    events.put_rule(
        Name=rule,
        EventBusName=bus,
        EventPattern=json.dumps({"source": [EVENT_SOURCE]}),
        Description="Local stack: the function's events, for `captioner events`.",
    )
    events.put_targets(
        Rule=rule, EventBusName=bus, Targets=[{"Id": "events-queue", "Arn": arn["QueueArn"]}]
    )
    return {EVENTS_QUEUE_OUTPUT: url}


def existing_bucket_names(template: StackTemplate) -> tuple[str, ...]:
    """The non-empty members of ExistingBucketNames (none when the template lacks it)."""
    if EXISTING_BUCKETS_PARAMETER not in template.parameters:
        return ()
    return tuple(n for n in template.parameter(EXISTING_BUCKETS_PARAMETER) if n)


def sqs_event(function: FunctionSpec) -> SqsEventSource:
    if not function.events:
        raise LocalStackError(f"{function.logical_id} has no SQS event in the template")
    return function.events[0]


def register_outputs(
    cfn: Any,
    stack_name: str,
    template_path: Path,
    outputs: dict[str, str],
    parameters: Mapping[str, Any] | None = None,
) -> None:
    """A stack holding only the outputs and the parameter values, so discovery by stack
    name (and ``captioner connect``'s look at ExistingBucketNames) works locally too."""
    warnings.filterwarnings("ignore", message="Tried to parse AWS::CloudFormation::WaitCondi")
    values = {k: _parameter_value(v) for k, v in (parameters or {}).items()}
    body = {
        "Description": f"captioner local stack (outputs only) from {template_path}",
        "Parameters": {k: {"Type": "String", "Default": ""} for k in values},
        "Resources": {"Placeholder": {"Type": "AWS::CloudFormation::WaitConditionHandle"}},
        "Outputs": {k: {"Value": v} for k, v in outputs.items()},
    }
    cfn.create_stack(
        StackName=stack_name,
        TemplateBody=json.dumps(body),
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in values.items()],
    )


def _parameter_value(value: Any) -> str:
    """As DescribeStacks reports it: lists comma-separated, booleans lowercase."""
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


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


def _create_existing_buckets(
    template: StackTemplate, s3: Any, names: LocalNames
) -> tuple[str, ...]:
    """Stand-ins for the buckets the user already has: plain (unversioned) buckets with
    their EventBridge notifications turned on, as ``captioner connect`` does."""
    buckets = existing_bucket_names(template)
    for name in buckets:
        if not _BUCKET_NAME.match(name):
            raise LocalStackError(f"{EXISTING_BUCKETS_PARAMETER}: invalid bucket name {name!r}")
        if name == names.bucket:
            raise LocalStackError(
                f"{EXISTING_BUCKETS_PARAMETER} must not list the stack's own bucket {name}"
            )
        s3.create_bucket(Bucket=name)
        enable_eventbridge(s3, name)
    return buckets


def _create_rule(
    template: StackTemplate, events: Any, logical_id: str, name: str, refs: Mapping[str, str]
) -> dict[str, str]:
    """An EventBridge rule on the default bus with the template's pattern and targets."""
    props = template.resolve(template.properties(logical_id), refs)
    arn = events.put_rule(
        Name=name,
        EventPattern=json.dumps(props["EventPattern"]),
        State=props.get("State", "ENABLED"),
        Description=props.get("Description", ""),
    )["RuleArn"]
    targets = props.get("Targets", [])
    unresolved = [t for t in targets if not isinstance(t.get("Arn"), str)]
    if unresolved:
        raise LocalStackError(f"{logical_id} has a target the local stack did not create")
    if targets:
        events.put_targets(Rule=name, Targets=targets)
    return {logical_id: name, f"{logical_id}.Arn": arn}


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
