"""The local stack serializes the moto calls that AWS makes atomic, or safe beside concurrent
writes (captioner_tools.local.atomic)."""

import threading

import boto3
import pytest
from moto import mock_aws

from captioner_tools.local import atomic


@pytest.fixture
def ddb(aws_env):
    atomic.serialize_moto()
    atomic.serialize_moto()  # idempotent
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        client.create_table(
            TableName="t", BillingMode="PAY_PER_REQUEST",
            KeySchema=[{"AttributeName": "p", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "p", "AttributeType": "S"}],
        )  # fmt: skip
        yield client


CALLS = {
    "scan": lambda c: c.scan(TableName="t"),
    "query": lambda c: c.query(
        TableName="t", KeyConditionExpression="p = :p", ExpressionAttributeValues={":p": {"S": "a"}}
    ),
    "put_item": lambda c: c.put_item(TableName="t", Item={"p": {"S": "a"}}),
    "get_item": lambda c: c.get_item(TableName="t", Key={"p": {"S": "a"}}),
}


@pytest.mark.parametrize(("name", "waits"), [("scan", True), ("query", True),
                                              ("put_item", True), ("get_item", False)])  # fmt: skip
def test_queries_scans_and_writes_wait_for_a_write_under_way(ddb, name, waits):
    """moto walks a table's items in a query or scan; a write adding an item meanwhile broke
    the budget sweep's query (RuntimeError). Single-item reads need not wait."""
    done = threading.Event()
    caller = threading.Thread(target=lambda: (CALLS[name](ddb), done.set()))
    with atomic._locks["dynamodb"]:  # as a write in progress holds it
        caller.start()
        # a call that waits is still waiting after 0.3 s; one that does not, ends (a loaded
        # machine may take a while)
        assert done.wait(0.3 if waits else 5) is not waits
    assert done.wait(10)
    caller.join()
