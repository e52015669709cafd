"""The word index: words, postings written with the row, kept right through re-captions and
deletes, and searches that read the index (never a Scan) — moto DynamoDB, the real table."""

from datetime import UTC, datetime, timedelta

import boto3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from moto import mock_aws

from captioner import index
from captioner.index import IndexState
from captioner.search import IndexSearch, NothingToSearch, SearchQuery
from captioner.store import (
    CaptionReader,
    CaptionStore,
    ObjectRef,
    Result,
    Status,
    TagStatus,
)
from captioner_tools.local.template import table_definition

LEASE = 60.0


class Clock:
    def __init__(self):
        self.now = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)

    def __call__(self):
        self.now += timedelta(milliseconds=7)  # every write has its own time
        return self.now


@pytest.fixture
def ddb(aws_env):
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        client.create_table(TableName="t", **table_definition())
        yield client


@pytest.fixture
def store(ddb):
    return CaptionStore("t", ddb, clock=Clock())


@pytest.fixture
def finder(ddb):
    return IndexSearch(CaptionReader("t", ddb))


def caption(store, key, text, version="v1", seq=None, labels=None, bucket="b"):
    claim = store.claim(ObjectRef(bucket, key, version, f"e-{version}", 5, seq), LEASE)
    result = Result(Status.CAPTIONED, caption=text, provider="local", labels=labels)
    assert store.save_result(claim, result, keep_lease=True)
    assert store.save_tag(claim, TagStatus.WRITTEN, text, None)
    return claim


def postings(ddb):
    """Every posting in the table: {(word, bucket, key, indexed_at)}."""
    items = ddb.scan(TableName="t")["Items"]
    found = set()
    for item in items:
        if index.is_posting(item["bucket"]["S"]):
            word = item["bucket"]["S"][len(index.PREFIX) :].rsplit("#", 1)[0]
            at = index.posting_at(item["key"]["S"])
            found.add((word, item["object_bucket"]["S"], item["object_key"]["S"], at))
    return found


def recorded(store, key, bucket="b"):
    """The postings the row says it has."""
    state = IndexState.of(store.get(bucket, key))
    return {(w, bucket, key, state.at) for w in state.words}


def keys(page):
    return [r["key"] for r in page.rows]


# -- words ---------------------------------------------------------------------------------------


def test_words_fold_case_accents_plurals_and_leave_out_common_words():
    assert index.words_of("A photo of two Cats on a CAFÉ terrace.") == [
        "two",
        "cat",
        "cafe",
        "terrace",
    ]
    assert index.words_of("Puppies, boxes and glasses; the bus") == ["puppy", "box", "glass", "bus"]
    assert index.words_of("Region-based segmentation") == ["region", "based", "segmentation"]
    assert index.words_of("a photo of an") == []


def test_a_row_is_found_by_its_caption_and_its_labels_capped():
    labels = [{"label": "tabby, tabby cat", "score": 0.8}, {"label": "Egyptian cat", "score": 0.1}]
    assert index.row_words("A photo of an Egyptian cat.", labels) == ["egyptian", "cat", "tabby"]
    long = " ".join(f"word{i}" for i in range(100))
    assert len(index.row_words(long, None)) == index.MAX_WORDS
    assert index.row_words(None, labels) == []


def test_a_word_in_every_caption_is_spread_over_its_shards():
    spread = {index.shard("b", f"k{i}") for i in range(200)}
    assert spread == set(range(index.SHARDS))


# -- writes --------------------------------------------------------------------------------------


def test_the_paid_caption_is_indexed_in_the_same_write_and_the_tag_write_adds_nothing(store, ddb):
    calls = []
    ddb.meta.events.register("before-call.*.*", lambda model, **kw: calls.append(model.name))
    claim = store.claim(ObjectRef("b", "k", "v1", "e", 5, None), LEASE)
    store.save_result(claim, Result(Status.CAPTIONED, caption="A red kite"), keep_lease=True)
    store.save_tag(claim, TagStatus.WRITTEN, "A red kite", None)
    assert calls == ["UpdateItem", "TransactWriteItems", "UpdateItem"]
    row = store.get("b", "k")
    assert row["indexed_words"] == ["red", "kite"]
    assert postings(ddb) == recorded(store, "k") and len(postings(ddb)) == 2


def test_a_new_version_replaces_the_words_and_a_delete_removes_them(store, ddb, finder):
    caption(store, "k", "A red kite", version="v1", seq="10")
    caption(store, "k", "A blue boat", version="v2", seq="20")
    assert {p[0] for p in postings(ddb)} == {"blue", "boat"}
    assert postings(ddb) == recorded(store, "k")
    assert keys(finder.find(SearchQuery("kite"))) == []
    assert keys(finder.find(SearchQuery("boat"))) == ["k"]
    assert store.mark_deleted("b", "k", None, "30", whole=True)
    assert postings(ddb) == set()
    row = store.get("b", "k")
    assert row["status"] == "DELETED" and row["caption"] == "A blue boat"
    assert "indexed_words" not in row
    assert keys(finder.find(SearchQuery("boat"))) == []


def test_a_rejected_new_version_takes_the_old_captions_words_away(store, ddb, finder):
    caption(store, "k", "A red kite", version="v1", seq="10")
    claim = store.claim(ObjectRef("b", "k", "v2", "e2", 5, "20"), LEASE)
    # between the takeover and the result, the old postings are hidden by the row check
    assert keys(finder.find(SearchQuery("kite"))) == []
    assert store.save_result(claim, Result(Status.REJECTED, reason="not an image"))
    assert postings(ddb) == set()


def test_a_write_whose_fence_is_gone_touches_no_posting(store, ddb):
    first = store.claim(ObjectRef("b", "k", "v1", "e1", 5, "10"), LEASE)
    caption(store, "k", "A blue boat", version="v2", seq="20")
    before = postings(ddb)
    assert not store.save_result(first, Result(Status.CAPTIONED, caption="A red kite"))
    assert postings(ddb) == before == recorded(store, "k")


def test_a_write_that_landed_unseen_is_not_indexed_twice(store, ddb):
    """A transaction that timed out but landed: the retry finds the row's index state
    changed under its fence, reads it and replaces those postings instead of orphaning them."""
    claim = store.claim(ObjectRef("b", "k", "v1", "e1", 5, None), LEASE)
    assert store.save_result(claim, Result(Status.CAPTIONED, caption="A red kite"), keep_lease=True)
    # the same claim writes again (as _record_retry would after an unseen success)
    assert store.save_result(claim, Result(Status.PENDING, reason="will retry"))
    assert postings(ddb) == set() and "indexed_at" not in store.get("b", "k")


def test_a_redelivered_delete_finishes_removing_the_postings(store, ddb):
    caption(store, "k", "A red kite", seq="10")
    real = store._drop_index
    store._drop_index = lambda *a: None  # the instance dies between the two writes
    assert store.mark_deleted("b", "k", None, "20", whole=True)
    store._drop_index = real
    assert postings(ddb) and store.get("b", "k")["status"] == "DELETED"
    assert not store.mark_deleted("b", "k", None, "20", whole=True)  # the redelivery
    assert postings(ddb) == set()


def test_reindex_builds_the_postings_of_rows_written_before_the_index(store, ddb, finder):
    caption(store, "k", "A red kite", seq="10")
    # a row as version 0.1 wrote it: a caption, no index
    ddb.update_item(
        TableName="t",
        Key={"bucket": {"S": "b"}, "key": {"S": "old"}},
        UpdateExpression="SET #s = :s, #c = :c, #u = :u",
        ExpressionAttributeNames={"#s": "status", "#c": "caption", "#u": "updated_at"},
        ExpressionAttributeValues={
            ":s": {"S": "CAPTIONED"},
            ":c": {"S": "A kite over the sea"},
            ":u": {"S": "2026-01-01T00:00:00.000Z"},
        },
    )
    assert keys(finder.find(SearchQuery("kite"))) == ["k"]
    assert store.reindex(store.get("b", "old")) == "indexed"
    assert store.reindex(store.get("b", "old")) == "current"
    assert store.reindex(store.get("b", "k")) == "current"
    assert keys(finder.find(SearchQuery("kite"))) == ["k", "old"]  # newest first
    assert postings(ddb) == recorded(store, "k") | recorded(store, "old")


# -- property: any sequence of captions, re-captions and deletes ----------------------------------

ops = st.lists(
    st.one_of(
        st.tuples(st.just("caption"), st.sampled_from("xyz"), st.sampled_from(
            ["A red kite", "A blue boat", "Two red boats", "A kite and a boat", "Nothing"]
        )),
        st.tuples(st.just("delete"), st.sampled_from("xyz"), st.just("")),
        st.tuples(st.just("fail"), st.sampled_from("xyz"), st.just("")),
    ),
    max_size=12,
)  # fmt: skip


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(ops=ops)
def test_the_index_matches_the_rows_after_any_captions_re_captions_and_deletes(aws_env, ops):
    with mock_aws():
        ddb = boto3.client("dynamodb", region_name="us-east-1")
        ddb.create_table(TableName="t", **table_definition())
        store, finder = CaptionStore("t", ddb, clock=Clock()), IndexSearch(CaptionReader("t", ddb))
        seq = 0
        for op, key, text in ops:
            seq += 1
            if op == "delete":
                store.mark_deleted("b", key, None, f"{seq:04d}", whole=True)
                continue
            claim = store.claim(ObjectRef("b", key, f"v{seq}", f"e{seq}", 5, f"{seq:04d}"), LEASE)
            if op == "fail":
                store.save_result(claim, Result(Status.FAILED, reason="unreadable"))
            else:
                store.save_result(claim, Result(Status.CAPTIONED, caption=text), keep_lease=True)
                store.save_tag(claim, TagStatus.WRITTEN, text, None)
        rows = {k: store.get("b", k) for k in "xyz"}
        assert postings(ddb) == set().union(*(recorded(store, k) for k in "xyz"))
        for word in ("red", "kite", "boat", "blue", "nothing"):
            expected = {
                k for k, row in rows.items()
                if row and row["status"] == "CAPTIONED" and word in index.words_of(row["caption"])
            }  # fmt: skip
            assert set(keys(finder.find(SearchQuery(word, limit=None)))) == expected


# -- reads ---------------------------------------------------------------------------------------


def test_search_needs_every_word_filters_by_prefix_and_status_and_pages(store, finder):
    caption(store, "a/1", "A red kite over a beach")
    caption(store, "a/2", "A red boat on a beach")
    caption(store, "b/3", "A red kite in a park")
    caption(store, "c/4", "A red kite", bucket="other")
    claim = store.claim(ObjectRef("b", "a/5", "v1", "e", 5, None), LEASE)
    store.save_result(claim, Result(Status.CAPTIONED, caption="Red kites"), keep_lease=True)
    assert keys(finder.find(SearchQuery("RED kites"))) == ["a/5", "c/4", "b/3", "a/1"]
    assert keys(finder.find(SearchQuery("red kite", bucket="b", prefix="a/"))) == ["a/5", "a/1"]
    # another provider re-captions a/1: PENDING, its caption (and postings) kept meanwhile
    store.claim(ObjectRef("b", "a/1", "v1", "e-v1", 5, None), LEASE, "modelslab")
    assert keys(finder.find(SearchQuery("kite", status="PENDING"))) == ["a/1"]
    assert keys(finder.find(SearchQuery("kite", status="CAPTIONED"))) == ["a/5", "c/4", "b/3"]
    assert keys(finder.find(SearchQuery("kite beach"))) == ["a/1"]
    first = finder.find(SearchQuery("red", limit=2))
    assert keys(first) == ["a/5", "c/4"] and first.next
    second = finder.find(SearchQuery("red", limit=2, after=first.next))
    assert keys(second) == ["b/3", "a/2"]
    last = finder.find(SearchQuery("red", limit=2, after=second.next))
    assert keys(last) == ["a/1"] and last.next is None
    with pytest.raises(NothingToSearch):
        finder.find(SearchQuery("a photo of"))


def test_a_search_reads_the_words_shards_and_the_rows_found_never_a_scan(store, ddb, finder):
    for i in range(30):
        caption(store, f"k{i:02d}", f"A {'red' if i % 3 else 'blue'} kite number {i}")
    calls = []
    ddb.meta.events.register("before-call.*.*", lambda model, **kw: calls.append(model.name))
    page = finder.find(SearchQuery("blue kite", limit=5))
    assert len(page.rows) == 5 and all("blue" in r["caption"] for r in page.rows)
    assert "Scan" not in calls
    assert calls == ["Query"] * index.SHARDS + ["BatchGetItem"]
