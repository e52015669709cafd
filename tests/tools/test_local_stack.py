"""The embedded local stack: resources built from template.yaml, the SQS event source
poller, and the same Lambda handler captioning real uploads end to end."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import uuid
from urllib.parse import urlparse

import pytest

from captioner_tools.errors import LocalStackError, MissingExtra
from captioner_tools.local import require_extra
from captioner_tools.local.environment import choose_provider
from captioner_tools.local.poller import (
    FunctionTarget,
    LambdaContext,
    PollerSettings,
    SqsEventSource,
)
from captioner_tools.local.stack import LocalStack
from captioner_tools.local.template import (
    StackTemplate,
    TemplateError,
    default_template_path,
    parameter_default,
    resolve_template_path,
    table_definition,
)
from tests import images
from tests.conftest import API_KEY
from tests.tools.conftest import (
    MAX_RECEIVE_COUNT,
    depth,
    wait_for,
    wait_for_status,
)

# -- resources follow the template -------------------------------------------------------------


def test_queues_take_their_properties_from_the_template(stack):
    sqs = stack.client("sqs")
    queue = sqs.get_queue_attributes(QueueUrl=stack.queue_url, AttributeNames=["All"])
    attrs = queue["Attributes"]
    template = StackTemplate()
    props = template.properties("CaptionQueue")
    assert attrs["VisibilityTimeout"] == str(props["VisibilityTimeout"]) == "360"
    assert attrs["MessageRetentionPeriod"] == str(props["MessageRetentionPeriod"])
    redrive = json.loads(attrs["RedrivePolicy"])
    assert redrive == {"deadLetterTargetArn": stack.dlq_arn, "maxReceiveCount": MAX_RECEIVE_COUNT}
    dlq = sqs.get_queue_attributes(QueueUrl=stack.dlq_url, AttributeNames=["All"])["Attributes"]
    dlq_props = template.properties("CaptionDeadLetterQueue")
    assert dlq["MessageRetentionPeriod"] == str(dlq_props["MessageRetentionPeriod"]) == "1209600"


def test_bucket_is_versioned_encrypted_and_notifies_the_queue(stack):
    s3 = stack.client("s3")
    assert s3.get_bucket_versioning(Bucket=stack.bucket)["Status"] == "Enabled"
    rules = s3.get_bucket_encryption(Bucket=stack.bucket)["ServerSideEncryptionConfiguration"]
    assert rules["Rules"][0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    config = s3.get_bucket_notification_configuration(Bucket=stack.bucket)
    events = {e for c in config["QueueConfigurations"] for e in c["Events"]}
    assert events == {"s3:ObjectCreated:*", "s3:ObjectRemoved:*"}
    assert {c["QueueArn"] for c in config["QueueConfigurations"]} == {stack.queue_arn}


def test_table_has_the_templates_keys_and_indexes(stack):
    table = stack.client("dynamodb").describe_table(TableName=stack.table)["Table"]
    spec = table_definition()
    assert table["KeySchema"] == spec["KeySchema"]
    assert {i["IndexName"]: i["KeySchema"] for i in table["GlobalSecondaryIndexes"]} == {
        i["IndexName"]: i["KeySchema"] for i in spec["GlobalSecondaryIndexes"]
    }


def test_outputs_are_registered_under_the_stack_name(stack):
    cfn = stack.client("cloudformation")
    (found,) = cfn.describe_stacks(StackName="captioner")["Stacks"]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in found["Outputs"]}
    assert outputs["BucketName"] == stack.bucket and outputs["TableName"] == stack.table
    assert outputs["QueueUrl"] == stack.queue_url
    assert outputs["DeadLetterQueueUrl"] == stack.dlq_url


def test_template_parameters_and_conditions_are_resolved():
    filtered = StackTemplate(parameters={"KeyPrefixFilter": "uploads/"})
    notification = filtered.resolve(
        filtered.properties("UploadBucket")["NotificationConfiguration"],
        {"CaptionQueue.Arn": "arn:q"},
    )
    first = notification["QueueConfigurations"][0]
    assert first["Queue"] == "arn:q"
    assert first["Filter"] == {"S3Key": {"Rules": [{"Name": "prefix", "Value": "uploads/"}]}}
    plain = StackTemplate()
    resolved = plain.resolve(plain.properties("UploadBucket")["NotificationConfiguration"], {})
    assert all("Filter" not in c for c in resolved["QueueConfigurations"])
    fn = plain.function("CaptionFunction", {"CaptionsTable": "t"})
    assert fn.handler == "captioner.handler.lambda_handler" and fn.timeout_s == 60
    assert fn.environment["CAPTIONS_TABLE"] == "t"
    assert fn.environment["CAPTION_MAX_RECEIVE_COUNT"] == str(parameter_default("MaxReceiveCount"))
    (event,) = fn.events
    assert (event.queue, event.batch_size, event.report_batch_item_failures) == (
        "CaptionQueue",
        10,
        True,
    )
    assert event.max_concurrency == parameter_default("ProviderConcurrency")
    with pytest.raises(Exception, match="parameter NoSuchParameter does not exist in the template"):
        StackTemplate(parameters={"NoSuchParameter": "x"})


def test_conditions_on_list_parameters_are_evaluated_as_cloudformation_does():
    """HasExistingBuckets and HasVpc join a CommaDelimitedList: empty by default, so false."""
    plain = StackTemplate()
    assert not plain.condition("HasExistingBuckets") and not plain.condition("HasVpc")
    assert plain.parameter("ExistingBucketNames") == [""]
    # ExistingBucketsRule has Condition: HasExistingBuckets; the budget sweep's is always there
    assert plain.resources_of_type("AWS::Events::Rule") == ["BudgetSweepSchedule"]
    given = StackTemplate(
        parameters={"ExistingBucketNames": "photos, scans", "SubnetIds": "subnet-a,subnet-b"}
    )
    assert given.condition("HasExistingBuckets") and given.condition("HasVpc")
    assert given.parameter("ExistingBucketNames") == ["photos", "scans"]  # members trimmed
    assert given.resources_of_type("AWS::Events::Rule") == [
        "ExistingBucketsRule",
        "BudgetSweepSchedule",
    ]
    fn = given.resolve(given.properties("CaptionFunction"))
    assert fn["VpcConfig"]["SubnetIds"] == ["subnet-a", "subnet-b"]


def test_existing_bucket_rule_resolves_with_the_key_filters():
    refs = {"CaptionQueue.Arn": "arn:q", "CaptionDeadLetterQueue.Arn": "arn:dlq"}
    filters = {"KeyPrefixFilter": "up/", "KeySuffixFilter": ".jpg"}
    filtered = StackTemplate(parameters={"ExistingBucketNames": "photos", **filters})
    rule = filtered.resolve(filtered.properties("ExistingBucketsRule"), refs)
    assert rule["EventPattern"]["detail"] == {
        "bucket": {"name": ["photos"]},
        "object": {"key": [{"wildcard": "up/*.jpg"}]},  # Fn::Sub of both filters
    }
    assert rule["Targets"] == [
        {"Id": "caption-queue", "Arn": "arn:q", "DeadLetterConfig": {"Arn": "arn:dlq"}}
    ]
    unfiltered = StackTemplate(parameters={"ExistingBucketNames": "photos"})
    pattern = unfiltered.resolve(unfiltered.properties("ExistingBucketsRule"), refs)
    assert "object" not in pattern["EventPattern"]["detail"]


def test_join_split_select_and_sub_resolve_what_is_known_and_keep_the_rest():
    t = StackTemplate(stack_name="cap")
    assert t.resolve({"Fn::Join": ["-", ["a", {"Ref": "CaptionLength"}]]}) == "a-normal"
    assert t.resolve({"Fn::Split": [",", "a,b"]}) == ["a", "b"]
    assert t.resolve({"Fn::Select": [1, {"Fn::Split": [",", "a,b"]}]}) == "b"
    assert t.resolve({"Fn::Sub": "${AWS::StackName}/${AWS::Region}/${!Literal}"}) == (
        "cap/us-east-1/${Literal}"
    )
    assert t.resolve({"Fn::Sub": ["${X}-${CaptionTagKey}", {"X": "x"}]}) == "x-caption"
    # what only a deployed stack knows stays as it is
    unknown = {"Fn::Join": ["", [{"Fn::GetAtt": ["Nope", "Arn"]}]]}
    assert t.resolve(unknown) == unknown
    assert t.resolve({"Fn::Sub": "${Nope.Arn}"}) == {"Fn::Sub": "${Nope.Arn}"}
    assert t.resolve({"Fn::Sub": "${Nope.Arn}"}, {"Nope.Arn": "arn:n"}) == "arn:n"
    with pytest.raises(TemplateError, match="out of range"):
        t.resolve({"Fn::Select": [3, ["a"]]})


def test_template_path_flag_then_environment_then_working_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("CAPTIONER_TEMPLATE", raising=False)
    monkeypatch.chdir(tmp_path)
    assert resolve_template_path() == default_template_path()  # no ./template.yaml here
    (tmp_path / "template.yaml").write_text(default_template_path().read_text())
    assert resolve_template_path() == tmp_path / "template.yaml"
    other = tmp_path / "other.yaml"
    other.write_text("Resources: {}\n")
    monkeypatch.setenv("CAPTIONER_TEMPLATE", str(other))
    assert resolve_template_path() == other
    assert resolve_template_path(tmp_path / "template.yaml") == tmp_path / "template.yaml"
    with pytest.raises(TemplateError, match="template not found"):
        resolve_template_path(tmp_path / "missing.yaml")


def test_a_missing_extra_is_one_line_naming_it(monkeypatch):
    require_extra()  # installed here
    real = importlib.util.find_spec
    monkeypatch.setattr(
        "captioner_tools.local.find_spec", lambda name: None if name == "moto" else real(name)
    )
    with pytest.raises(MissingExtra) as missing:
        require_extra()
    assert str(missing.value) == (
        "the local stack needs the 'local' extra: pip install 'captioner[local]'"
    )


# -- the handler's environment ---------------------------------------------------------------


def test_the_function_is_configured_for_the_stack_and_the_shell_left_alone(stack, modelslab):
    config = stack.app.config
    assert config.captions_table == stack.table
    assert config.provider == "modelslab"  # a key is configured
    assert config.max_receive_count == MAX_RECEIVE_COUNT
    assert config.modelslab_api_url == modelslab.url
    assert config.tag_key == "caption"  # from the template's Environment
    assert config.modelslab_api_key_secret is None
    for client in (stack.app.pipeline.objects._s3, stack.app.pipeline.store._db):
        assert client.meta.endpoint_url == stack.endpoint_url
    # Only Powertools' own variables are set: it reads them from the environment.
    assert os.environ["POWERTOOLS_TRACE_DISABLED"] == "true"
    assert os.environ["POWERTOOLS_METRICS_DISABLED"] == "true"
    assert os.environ.get("AWS_ENDPOINT_URL") != stack.endpoint_url
    assert os.environ.get("CAPTIONS_TABLE") != stack.table


def test_provider_is_modelslab_with_a_key_and_local_without():
    assert choose_provider(None, {"MODELSLAB_API_KEY": "k"}).name == "modelslab"
    assert choose_provider(None, {}).name == "local"
    assert choose_provider("local", {"MODELSLAB_API_KEY": "k"}).name == "local"
    assert choose_provider(None, {"CAPTION_PROVIDER": "local", "MODELSLAB_API_KEY": "k"}).name == (
        "local"
    )
    with pytest.raises(LocalStackError, match="provider must be one of"):
        choose_provider("magic", {})


# -- uploads flow through the same handler ---------------------------------------------------


def test_upload_is_captioned_tagged_and_recorded(stack, modelslab):
    s3 = stack.client("s3")
    version = s3.put_object(Bucket=stack.bucket, Key="flow/cat one.png", Body=images.png())[
        "VersionId"
    ]
    done = wait_for_status(stack, "flow/cat one.png", "CAPTIONED")
    assert done["caption"] == "A picture named cat one.png." and done["provider"] == "modelslab"
    assert done["version_id"] == version
    tags = s3.get_object_tagging(Bucket=stack.bucket, Key="flow/cat one.png", VersionId=version)
    assert {t["Key"]: t["Value"] for t in tags["TagSet"]} == {"caption": done["caption"]}
    # ModelsLab was handed a presigned URL of the local endpoint and downloaded the image.
    url, status = next((u, s) for u, s in modelslab.fetched if "cat%20one.png" in u)
    assert status == 200 and urlparse(url).port == stack.port
    call = next(c for c in modelslab.paid_calls() if "cat%20one.png" in c.body["init_image"])
    assert call.body["key"] == API_KEY


def test_delete_marks_the_row_deleted(stack):
    """moto notifies a permanent delete of the last version, not a delete marker."""
    s3 = stack.client("s3")
    put = s3.put_object(Bucket=stack.bucket, Key="flow/gone.png", Body=images.png())
    wait_for_status(stack, "flow/gone.png", "CAPTIONED")
    s3.delete_object(Bucket=stack.bucket, Key="flow/gone.png", VersionId=put["VersionId"])
    deleted = wait_for_status(stack, "flow/gone.png", "DELETED")
    assert deleted["caption"] == "A picture named gone.png."


def test_malformed_message_reaches_the_dead_letter_queue_after_max_receives(stack):
    sqs = stack.client("sqs")
    body = f"not json {uuid.uuid4()}"
    sqs.send_message(QueueUrl=stack.queue_url, MessageBody=body)
    # Each failed delivery comes back after RETRY_DELAY_S; receive MAX+1 moves it.
    wait_for(lambda: depth(stack, stack.dlq_url), lambda n: n >= 1, 15, "the DLQ")
    (dead,) = sqs.receive_message(QueueUrl=stack.dlq_url, VisibilityTimeout=0)["Messages"]
    assert dead["Body"] == body
    assert stack.poller.totals["failed"] >= MAX_RECEIVE_COUNT
    sqs.delete_message(QueueUrl=stack.dlq_url, ReceiptHandle=dead["ReceiptHandle"])


# -- the event source poller on its own ------------------------------------------------------


@pytest.fixture
def queues(stack):
    """A fresh queue with a redrive policy (max 2 receives) and its DLQ."""
    sqs, name = stack.client("sqs"), f"poller-{uuid.uuid4().hex[:8]}"
    dlq = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])
    redrive = {"deadLetterTargetArn": dlq_arn["Attributes"]["QueueArn"], "maxReceiveCount": 2}
    url = sqs.create_queue(QueueName=name, Attributes={"RedrivePolicy": json.dumps(redrive)})
    arn = sqs.get_queue_attributes(QueueUrl=url["QueueUrl"], AttributeNames=["QueueArn"])
    return sqs, url["QueueUrl"], arn["Attributes"]["QueueArn"], dlq


def test_poller_delivers_lambda_shaped_batches_and_settles_partial_failures(stack, queues):
    sqs, url, arn, dlq = queues
    seen = []

    def handler(event, context):
        seen.append((event, context))
        assert context.get_remaining_time_in_millis() <= 7_000
        return {
            "batchItemFailures": [
                {"itemIdentifier": r["messageId"]} for r in event["Records"] if "bad" in r["body"]
            ]
        }

    source = SqsEventSource(
        sqs,
        url,
        arn,
        FunctionTarget("fn-under-test", handler, timeout_s=7),
        PollerSettings(batch_size=10, retry_delay_s=1, max_receive_count=2),
    )
    for body in ("good-1", "bad-1", "good-2"):
        sqs.send_message(QueueUrl=url, MessageBody=body)
    first = wait_for(lambda: source.poll_once(wait_time_s=1), lambda r: r is not None)
    second = source.poll_once(wait_time_s=0) if first.received < 3 else None
    received = first.received + (second.received if second else 0)
    assert received == 3

    event, context = seen[0]
    record = event["Records"][0]
    assert record["eventSource"] == "aws:sqs" and record["eventSourceARN"] == arn
    assert set(record) >= {"messageId", "receiptHandle", "body", "attributes", "md5OfBody"}
    assert record["attributes"]["ApproximateReceiveCount"] == "1"
    assert context.function_name == "fn-under-test" and context.aws_request_id
    assert context.invoked_function_arn.endswith(":function:fn-under-test")

    # Only the failure comes back (after the retry delay), with its receive count raised.
    again = wait_for(lambda: source.poll_once(wait_time_s=1), lambda r: r is not None, 10)
    assert again.received == 1 and again.messages[0].body == "bad-1"
    assert again.messages[0].receive_count == 2 and again.last_deliveries == 1
    # The third receive is SQS's: the redrive policy moves it to the dead-letter queue.
    wait_for(lambda: (source.poll_once(wait_time_s=1), depth(stack, dlq))[1], lambda n: n == 1)
    assert depth(stack, url) == 0


def test_poller_applies_lambdas_rules_for_partial_batch_responses(stack, queues):
    sqs, url, arn, _ = queues
    source = SqsEventSource(sqs, url, arn, FunctionTarget("f", lambda e, c: None), PollerSettings())
    ids = ["a", "b"]
    assert source.failed_ids(None, ids) == set()
    assert source.failed_ids({"batchItemFailures": []}, ids) == set()
    assert source.failed_ids({"batchItemFailures": [{"itemIdentifier": "b"}]}, ids) == {"b"}
    # An unknown or empty identifier fails the whole batch, as in Lambda.
    assert source.failed_ids({"batchItemFailures": [{"itemIdentifier": "zz"}]}, ids) == {"a", "b"}
    assert source.failed_ids({"batchItemFailures": [{"itemIdentifier": ""}]}, ids) == {"a", "b"}
    assert source.failed_ids("not a dict", ids) == {"a", "b"}


def test_a_handler_exception_fails_the_whole_batch(stack, queues):
    sqs, url, arn, _ = queues

    def broken(event, context):
        raise RuntimeError("boom")

    source = SqsEventSource(
        sqs, url, arn, FunctionTarget("f", broken), PollerSettings(retry_delay_s=1)
    )
    sqs.send_message(QueueUrl=url, MessageBody="x")
    report = wait_for(lambda: source.poll_once(wait_time_s=1), lambda r: r is not None)
    assert report.failed == 1 and report.error == "RuntimeError: boom"
    assert depth(stack, url) == 1  # still there, for a retry


def test_lambda_context_counts_down_from_the_timeout():
    context = LambdaContext(function_name="f", timeout_s=60)
    assert 59_000 < context.get_remaining_time_in_millis() <= 60_000
    assert context.log_group_name == "/aws/lambda/f"


# -- lifecycle -------------------------------------------------------------------------------


def test_real_modelslab_gets_the_bytes_uploaded_since_it_cannot_reach_127_0_0_1(stack, monkeypatch):
    assert stack.handler_environment().get("CAPTION_IMAGE_TRANSPORT") is None  # the fake is local
    monkeypatch.setitem(stack.extra_env, "MODELSLAB_API_URL", "https://modelslab.com/api/v6")
    assert stack.handler_environment()["CAPTION_IMAGE_TRANSPORT"] == "upload"


def test_printed_exports_are_enough_for_boto3(stack, monkeypatch):
    import boto3

    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in stack.cli_environment().items():
        monkeypatch.setenv(name, value)
    urls = boto3.client("sqs").list_queues()["QueueUrls"]
    assert stack.queue_url in urls


def test_one_stack_per_process(stack):
    with pytest.raises(LocalStackError, match="already running in this process"):
        LocalStack(port=0).start()


def test_busy_port_is_a_clear_error(stack):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(LocalStackError, match=r"port \d+ on 127.0.0.1 is in use"):
            LocalStack(port=busy.getsockname()[1]).start()


def test_stop_restores_the_environment_and_frees_the_port(stack):
    """Runs last in this module: it stops the module's stack (stop() is idempotent)."""
    port = stack.port
    stack.stop()
    assert os.environ.get("POWERTOOLS_METRICS_DISABLED") == stack._shell_env.get(
        "POWERTOOLS_METRICS_DISABLED"
    )  # the value from before the stack
    with socket.socket() as probe, pytest.raises(ConnectionRefusedError):
        probe.connect(("127.0.0.1", port))
