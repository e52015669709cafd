"""Conditional writes of the captions table (moto DynamoDB, table from template.yaml)."""

import boto3
import pytest
from moto import mock_aws

from captioner.store import CaptionStore, ClaimOutcome, ObjectRef, Status, sequencer_order
from captioner_tools.local.template import table_definition

LEASE_FUTURE = "2999-01-01T00:00:00.000Z"
LEASE_PAST = "2000-01-01T00:00:00.000Z"


@pytest.fixture
def store(aws_env):
    with mock_aws():
        ddb = boto3.client("dynamodb", region_name="us-east-1")
        ddb.create_table(TableName="t", **table_definition())
        yield CaptionStore("t", ddb)


def ref(version="v1", seq="10"):
    return ObjectRef("b", "k", version, "etag", 5, seq)


def test_sequencer_order_compares_hex_values_of_different_lengths():
    assert sequencer_order("FF") < sequencer_order("0100")
    assert sequencer_order("0066A1B2C3D4E5F601") < sequencer_order("0066A1B2C3D4E5F6FF")
    assert sequencer_order(None) is None


def test_first_claim_creates_a_pending_row(store):
    claim = store.claim(ref(), LEASE_FUTURE, "modelslab")
    assert claim.outcome is ClaimOutcome.CLAIMED and claim.previous is None
    row = store.get("b", "k")
    assert row["status"] == "PENDING" and row["attempts"] == 1 and row["sequencer"] == "10"


def test_live_lease_of_the_same_version_is_busy_and_expired_lease_is_reclaimed(store):
    store.claim(ref(), LEASE_FUTURE, "modelslab")
    assert store.claim(ref(), LEASE_FUTURE, "modelslab").outcome is ClaimOutcome.BUSY
    store.finish(ref(), {"lease_until": LEASE_PAST}, [])
    again = store.claim(ref(), LEASE_FUTURE, "modelslab")
    assert again.outcome is ClaimOutcome.CLAIMED and again.previous["attempts"] == 1


def test_captioned_version_is_done_for_the_same_provider_only(store):
    store.claim(ref(), LEASE_FUTURE, "modelslab")
    store.finish(
        ref(), {"status": Status.CAPTIONED.value, "provider": "local", "lease_until": None}, []
    )
    assert store.claim(ref(), LEASE_FUTURE, "local").outcome is ClaimOutcome.DONE
    assert store.claim(ref(), LEASE_FUTURE, "modelslab").outcome is ClaimOutcome.CLAIMED


def test_older_sequencer_is_stale(store):
    store.claim(ref("v2", "20"), LEASE_FUTURE, "modelslab")
    claim = store.claim(ref("v1", "10"), LEASE_FUTURE, "modelslab")
    assert claim.outcome is ClaimOutcome.STALE
    assert store.get("b", "k")["version_id"] == "v2"


def test_finish_refuses_when_a_newer_version_took_the_row(store):
    store.claim(ref("v1", "10"), LEASE_FUTURE, "modelslab")
    store.claim(ref("v2", "20"), LEASE_FUTURE, "modelslab")
    assert store.finish(ref("v1", "10"), {"status": "CAPTIONED", "caption": "old"}, []) is False
    assert "caption" not in store.get("b", "k")


def test_finish_removes_listed_attributes(store):
    store.claim(ref(), LEASE_FUTURE, "modelslab")
    store.finish(ref(), {"reason": "x", "caption": "c"}, [])
    store.finish(ref(), {"caption": "d"}, ["reason"])
    row = store.get("b", "k")
    assert row["caption"] == "d" and "reason" not in row


def test_delete_marks_only_rows_that_exist_and_are_older(store):
    assert store.mark_deleted("b", "k", None, "05", whole=True) is False  # no row: nothing made
    store.claim(ref(seq="10"), LEASE_FUTURE, "modelslab")
    assert store.mark_deleted("b", "k", None, "05", whole=True) is False  # older than the row
    assert store.mark_deleted("b", "k", "other-version", "11", whole=False) is False
    assert store.mark_deleted("b", "k", None, "12", whole=True) is True
    assert store.get("b", "k")["status"] == "DELETED"
