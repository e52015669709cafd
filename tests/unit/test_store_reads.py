"""Reads of the captions table (moto DynamoDB, table from template.yaml): by key, newest first
through the indexes, counts per status, and the caption search."""

import boto3
import pytest
from moto import mock_aws

from captioner import store
from captioner.store import (
    FINAL_STATUSES,
    STATUSES,
    CaptionReader,
    RowQuery,
    Status,
    TableBusy,
)
from captioner_tools.local.template import table_definition


def put(ddb, key, status, updated_at, bucket="b", **extra):
    item = {"bucket": bucket, "key": key, "status": status, "updated_at": updated_at, **extra}
    ddb.put_item(TableName="t", Item={k: {"S": str(v)} for k, v in item.items()})


@pytest.fixture
def ddb(aws_env):
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        client.create_table(TableName="t", **table_definition())
        yield client


@pytest.fixture
def rows(ddb):
    put(ddb, "photos/a.jpg", "CAPTIONED", "2026-11-25T10:00:00.000Z", caption="A Red cup")
    put(ddb, "photos/b.jpg", "REJECTED", "2026-11-25T11:00:00.000Z", reason="not an image")
    put(ddb, "photos/c.jpg", "CAPTIONED", "2026-11-25T12:00:00.000Z", caption="a blue cup")
    put(ddb, "other/d.jpg", "FAILED", "2026-11-25T13:00:00.000Z")
    put(ddb, "e.jpg", "FAILED", "2026-11-25T14:00:00.000Z", bucket="elsewhere")
    return CaptionReader("t", ddb)


def keys(found):
    return [r["key"] for r in found]


def test_get_is_the_row_or_none(rows):
    assert rows.get("b", "photos/a.jpg")["caption"] == "A Red cup"
    assert rows.get("b", "nope.jpg") is None


def test_get_many_reads_more_than_one_request_and_only_the_asked_attributes(ddb):
    for i in range(130):  # BatchGetItem takes 100 keys per request
        put(ddb, f"k{i:03d}", "CAPTIONED", "2026-11-25T10:00:00.000Z", caption=f"c{i}")
    reader = CaptionReader("t", ddb)
    wanted = [f"k{i:03d}" for i in range(130)] + ["missing", "k000"]
    found = reader.get_many("b", wanted, ("status",))
    assert set(found) == {f"k{i:03d}" for i in range(130)}
    assert found["k129"] == {"bucket": "b", "key": "k129", "status": "CAPTIONED"}
    assert "caption" in reader.get_many("b", ["k001"])["k001"]


def test_get_many_retries_unprocessed_keys_then_gives_up(ddb, monkeypatch):
    waits = []
    monkeypatch.setattr(store.time, "sleep", waits.append)
    put(ddb, "a", "CAPTIONED", "2026-11-25T10:00:00.000Z")

    class Throttled:
        """Leaves every key unprocessed ``times`` times, then answers."""

        def __init__(self, times):
            self.times = times

        def batch_get_item(self, RequestItems):
            if self.times:
                self.times -= 1
                return {"Responses": {}, "UnprocessedKeys": RequestItems}
            return ddb.batch_get_item(RequestItems=RequestItems)

    assert set(CaptionReader("t", Throttled(2)).get_many("b", ["a"])) == {"a"}
    assert waits == [0.05, 0.1]
    with pytest.raises(TableBusy, match="unprocessed"):
        CaptionReader("t", Throttled(100)).get_many("b", ["a"])


def test_a_bucket_or_prefix_is_listed_newest_first(rows):
    assert keys(rows.list_rows(RowQuery(bucket="b"))) == [
        "other/d.jpg", "photos/c.jpg", "photos/b.jpg", "photos/a.jpg",
    ]  # fmt: skip
    assert keys(rows.list_rows(RowQuery(bucket="b", prefix="photos/"))) == [
        "photos/c.jpg", "photos/b.jpg", "photos/a.jpg",
    ]  # fmt: skip
    assert keys(rows.list_rows(RowQuery(bucket="b", prefix="photos/", limit=2))) == [
        "photos/c.jpg", "photos/b.jpg",
    ]  # fmt: skip
    since = RowQuery(bucket="b", since="2026-11-25T11:00:00.000Z", limit=None)
    assert keys(rows.list_rows(since)) == ["other/d.jpg", "photos/c.jpg", "photos/b.jpg"]


def test_a_status_is_listed_across_buckets_or_within_one(rows):
    assert keys(rows.list_rows(RowQuery(status=Status.FAILED))) == ["e.jpg", "other/d.jpg"]
    assert keys(rows.list_rows(RowQuery(status="FAILED", bucket="b"))) == ["other/d.jpg"]
    assert keys(rows.list_rows(RowQuery(status="CAPTIONED", bucket="b", prefix="photos/c"))) == [
        "photos/c.jpg"
    ]
    with pytest.raises(ValueError, match="bucket or a status"):
        rows.list_rows(RowQuery())


def test_search_needs_every_word_in_any_case(rows):
    pages = []
    assert keys(rows.search("CUP red", on_page=pages.append)) == ["photos/a.jpg"]
    assert sum(pages) >= 2  # rows read, for the progress bar
    assert sorted(keys(rows.search("cup"))) == ["photos/a.jpg", "photos/c.jpg"]
    assert len(rows.search("cup", limit=1)) == 1
    with pytest.raises(ValueError, match="needs some text"):
        rows.search("  ")


def test_counts_cover_every_status(rows):
    counts = rows.count_by_status()
    assert list(counts) == [s.value for s in Status]
    assert counts == {"PENDING": 0, "CAPTIONED": 2, "REJECTED": 1, "SKIPPED": 0, "FAILED": 2,
                      "DELETED": 0}  # fmt: skip


def test_status_lists_are_the_enum():
    assert tuple(Status) == STATUSES
    assert {"CAPTIONED", "REJECTED", "SKIPPED", "FAILED", "DELETED"} == FINAL_STATUSES
    assert Status.PENDING not in FINAL_STATUSES
