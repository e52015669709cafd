"""Conditional writes of the captions table (moto DynamoDB, table from template.yaml).

The claim, fence and delete tests run against the in-memory fake too (tests/fakes/memory.py),
so the pipeline's unit tests exercise the same rules as the real store."""

from datetime import UTC, datetime, timedelta

import boto3
import pytest
from hypothesis import given
from hypothesis import strategies as st
from moto import mock_aws

from captioner.store import (
    CaptionStore,
    ClaimOutcome,
    ObjectRef,
    Result,
    Status,
    TagStatus,
    sequencer_order,
)
from captioner_tools.local.template import table_definition
from tests.fakes.memory import MemoryCaptions

LEASE = 60.0


class Clock:
    def __init__(self):
        self.now = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def ddb(aws_env):
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        client.create_table(TableName="t", **table_definition())
        yield client


@pytest.fixture
def dynamo_store(ddb, clock):
    return CaptionStore("t", ddb, clock=clock)


@pytest.fixture(params=["dynamodb", "memory"])
def store(request, clock):
    if request.param == "memory":
        return MemoryCaptions(clock=clock)
    return request.getfixturevalue("dynamo_store")


def ref(version="v1", seq="10", etag="etag"):
    return ObjectRef("b", "k", version, etag, 5, seq)


def captioned(store, claim, provider="modelslab", tag=TagStatus.WRITTEN):
    result = Result(Status.CAPTIONED, caption="a cat", provider=provider)
    assert store.save_result(claim, result, keep_lease=True)
    if tag:
        assert store.save_tag(claim, tag, "a cat", None)


# -- sequencer order ---------------------------------------------------------------------------

HEX = st.text(alphabet="0123456789ABCDEF", min_size=1, max_size=40)


@given(HEX, HEX)
def test_sequencer_order_is_s3s_right_padded_lexicographic_order(a, b):
    """AWS: right-pad the shorter sequencer with zeros, then compare lexicographically."""
    width = max(len(a), len(b))
    expected = (a.ljust(width, "0") > b.ljust(width, "0")) - (
        a.ljust(width, "0") < b.ljust(width, "0")
    )
    oa, ob = sequencer_order(a), sequencer_order(b)
    assert (oa > ob) - (oa < ob) == expected


def test_a_shorter_newer_sequencer_sorts_after_a_longer_older_one():
    assert sequencer_order("0066A1B2C3D4E5F7") > sequencer_order("0066A1B2C3D4E5F601")
    assert sequencer_order(None) is None and sequencer_order("  ") is None


# -- claims ------------------------------------------------------------------------------------


def test_first_claim_creates_a_pending_row_with_a_fence_token(store):
    claim = store.claim(ref(), LEASE)
    assert claim.outcome is ClaimOutcome.CLAIMED and claim.previous is None and claim.token
    row = store.get("b", "k")
    assert row["status"] == "PENDING" and row["attempts"] == 1 == claim.attempts
    assert row["sequencer"] == "10" and row["claim_token"] == claim.token


def test_live_lease_is_busy_and_an_expired_one_is_reclaimed(store, clock):
    store.claim(ref(), LEASE)
    assert store.claim(ref(), LEASE).outcome is ClaimOutcome.BUSY
    clock.advance(LEASE + 1)
    again = store.claim(ref(), LEASE)
    assert again.outcome is ClaimOutcome.CLAIMED and again.attempts == 2
    assert store.get("b", "k")["attempts"] == 2


def test_captioned_and_tagged_is_done_whichever_provider_captioned_it(store):
    claim = store.claim(ref(), LEASE)
    captioned(store, claim, provider="local")
    assert store.claim(ref(), LEASE).outcome is ClaimOutcome.DONE
    assert store.claim(ref(), LEASE, "local").outcome is ClaimOutcome.DONE
    # only a message that asks for another provider by name re-captions it
    assert store.claim(ref(), LEASE, "modelslab").outcome is ClaimOutcome.CLAIMED


def test_a_caption_whose_tag_is_unfinished_is_claimed_again_with_the_caption_to_reuse(store, clock):
    claim = store.claim(ref(), LEASE)
    captioned(store, claim, tag=None)  # crashed before the tag step
    assert store.claim(ref(), LEASE).outcome is ClaimOutcome.BUSY  # the lease still holds
    clock.advance(LEASE + 1)
    again = store.claim(ref(), LEASE)
    assert again.outcome is ClaimOutcome.CLAIMED
    assert again.reusable_caption(None)["caption"] == "a cat"
    assert again.reusable_caption("local") is None  # a different provider was asked for


def test_a_failed_tag_write_is_finished_by_a_later_delivery(store):
    claim = store.claim(ref(), LEASE)
    captioned(store, claim, tag=TagStatus.FAILED)
    again = store.claim(ref(), LEASE)
    assert again.outcome is ClaimOutcome.CLAIMED and again.reusable_caption(None)


def test_older_sequencer_is_stale(store):
    store.claim(ref("v2", "20"), LEASE)
    claim = store.claim(ref("v1", "10"), LEASE)
    assert claim.outcome is ClaimOutcome.STALE
    assert store.get("b", "k")["version_id"] == "v2"


def test_a_newer_version_takes_the_row_afresh_and_fences_out_the_older_holder(store):
    old = store.claim(ref("v1", "10"), LEASE)
    captioned(store, old, tag=None)
    new = store.claim(ref("v2", "20"), LEASE)
    assert new.outcome is ClaimOutcome.CLAIMED and new.attempts == 1
    row = store.get("b", "k")
    assert row["version_id"] == "v2" and row["attempts"] == 1 and row["status"] == "PENDING"
    assert "caption" not in row and "provider" not in row  # nothing of v1's result stays
    assert store.save_tag(old, TagStatus.WRITTEN, "a cat", None) is False
    assert store.save_result(old, Result(Status.CAPTIONED, caption="old")) is False
    assert "caption" not in store.get("b", "k")


def test_save_result_removes_every_result_field_it_does_not_set(store):
    claim = store.claim(ref(), LEASE)
    store.save_result(claim, Result(Status.PENDING, reason="will retry", last_error="busy"))
    store.save_result(claim, Result(Status.REJECTED, reason="not an image"))
    row = store.get("b", "k")
    assert row["status"] == "REJECTED" and row["reason"] == "not an image"
    assert "last_error" not in row and "lease_until" not in row


def test_a_job_is_remembered_for_its_version_only(store):
    claim = store.claim(ref(), LEASE)
    assert store.record_job(claim, "42", "modelslab")
    store.save_result(claim, Result(Status.PENDING, reason="will retry", provider_job_id="42"))
    assert store.claim(ref(), LEASE).job_id == "42"
    assert store.claim(ref("v2", "20"), LEASE).job_id is None


# -- deletes -----------------------------------------------------------------------------------


def test_delete_marks_only_rows_that_are_older(store):
    store.claim(ref(seq="10"), LEASE)
    assert store.mark_deleted("b", "k", None, "05", whole=True) is False  # older than the row
    assert store.mark_deleted("b", "k", "other-version", "11", whole=False) is False
    assert store.mark_deleted("b", "k", None, "12", whole=True) is True
    assert store.get("b", "k")["status"] == "DELETED"


def test_a_delete_before_its_create_leaves_a_tombstone_that_refuses_the_late_create(store):
    assert store.mark_deleted("b", "k", "v9", "20", whole=False) is False  # one old version
    assert store.mark_deleted("b", "k", None, None, whole=True) is False  # unordered: no row
    assert store.get("b", "k") is None
    assert store.mark_deleted("b", "k", None, "20", whole=True) is True
    assert store.get("b", "k")["status"] == "DELETED"
    assert store.claim(ref(seq="10"), LEASE).outcome is ClaimOutcome.STALE
    newer = store.claim(ref("v3", "30"), LEASE)  # an upload after the delete takes the row
    assert newer.outcome is ClaimOutcome.CLAIMED and store.get("b", "k")["version_id"] == "v3"


def test_a_delete_fences_out_a_delivery_still_captioning(store):
    """Events without a sequencer (backfill, moto) cannot order a delete against a create:
    the delete removes the claim token, so the in-flight caption cannot undo it."""
    claim = store.claim(ref(seq=None), LEASE)
    assert store.mark_deleted("b", "k", None, None, whole=True)
    assert store.save_result(claim, Result(Status.CAPTIONED, caption="late")) is False
    assert store.record_job(claim, "7", "modelslab") is False
    row = store.get("b", "k")
    assert row["status"] == "DELETED" and "caption" not in row


# -- rows written by 0.1 (left-padded sequencer order) -----------------------------------------


def legacy_row(ddb, sequencer, status="CAPTIONED", version="v1"):
    ddb.put_item(
        TableName="t",
        Item={
            "bucket": {"S": "b"},
            "key": {"S": "k"},
            "status": {"S": status},
            "revision": {"S": version},
            "version_id": {"S": version},
            "sequencer": {"S": sequencer},
            "sequencer_order": {"S": sequencer.rjust(64, "0")},  # how 0.1 stored it
            "tag_status": {"S": "WRITTEN"},
            "caption": {"S": "old"},
        },
    )


def test_a_legacy_row_is_migrated_so_a_shorter_newer_sequencer_wins(dynamo_store, ddb):
    legacy_row(ddb, "0066A1B2C3D4E5F601")
    claim = dynamo_store.claim(ref("v2", "0066A1B2C3D4E5F7"), LEASE)
    assert claim.outcome is ClaimOutcome.CLAIMED
    row = dynamo_store.get("b", "k")
    assert row["version_id"] == "v2" and row["sequencer_order"] == sequencer_order(
        "0066A1B2C3D4E5F7"
    )


def test_a_legacy_row_still_refuses_an_older_event(dynamo_store, ddb):
    legacy_row(ddb, "0066A1B2C3D4E5F7")
    assert dynamo_store.claim(ref("v0", "0066A1B2C3D4E5F601"), LEASE).outcome is ClaimOutcome.STALE
    assert dynamo_store.get("b", "k")["sequencer_order"] == sequencer_order("0066A1B2C3D4E5F7")


def test_a_delete_with_a_shorter_newer_sequencer_applies_to_a_legacy_row(dynamo_store, ddb):
    legacy_row(ddb, "0066A1B2C3D4E5F601")
    assert dynamo_store.mark_deleted("b", "k", None, "0066A1B2C3D4E5F7", whole=True)
    assert dynamo_store.get("b", "k")["status"] == "DELETED"
