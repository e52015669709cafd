# ruff: noqa: F811  (the fixtures of test_store.py, imported by name, are parameters here)
"""A person's caption in the captions table (moto DynamoDB; the claim rules against the
in-memory fake too): the claim treats it as done unless forced, and an edit fences out a
delivery still working on the version."""

import pytest

from captioner.store import ClaimOutcome, NotEditable, Result, Status, TagStatus
from tests.unit.test_store import LEASE, captioned, clock, ddb, dynamo_store, ref  # noqa: F401


def edited(store, caption="A person's words"):
    claim = store.claim(ref(), LEASE)
    captioned(store, claim)
    return store.save_human_caption("b", "k", ref().revision, caption)


def test_an_edit_makes_a_human_caption_and_indexes_its_words(dynamo_store):
    row = edited(dynamo_store, "A red kite over the sea")
    got = dynamo_store.get("b", "k")
    assert got["caption"] == "A red kite over the sea" and got["status"] == "CAPTIONED"
    assert got["caption_source"] == "human" and got["edited_at"] == row["edited_at"]
    assert "kite" in got["indexed_words"] and "cat" not in got["indexed_words"]
    assert "claim_token" not in got and "labels" not in got


@pytest.mark.parametrize("provider", [None, "local"])
def test_a_human_caption_is_done_for_any_provider_unless_forced(dynamo_store, clock, provider):
    edited(dynamo_store)
    assert dynamo_store.claim(ref(), LEASE, provider).outcome is ClaimOutcome.DONE
    forced = dynamo_store.claim(ref(), LEASE, provider, force=True)
    assert forced.outcome is ClaimOutcome.CLAIMED
    # the forced claim asks the provider again: nothing of the finished caption is reused
    assert forced.reusable_caption(provider) is None and forced.job_id is None


def test_a_model_caption_is_still_done_for_the_default_provider_and_forced_claims_it(
    dynamo_store,
):
    captioned(dynamo_store, dynamo_store.claim(ref(), LEASE))
    assert dynamo_store.claim(ref(), LEASE).outcome is ClaimOutcome.DONE
    forced = dynamo_store.claim(ref(), LEASE, force=True)
    assert forced.outcome is ClaimOutcome.CLAIMED and forced.reusable_caption(None) is None


def test_an_edit_fences_out_a_delivery_still_working_on_the_version(dynamo_store, clock):
    working = dynamo_store.claim(ref(), LEASE)
    dynamo_store.save_human_caption("b", "k", ref().revision, "Edited while captioning")
    late = Result(Status.CAPTIONED, caption="the model's", provider="modelslab")
    assert not dynamo_store.save_result(working, late)
    assert not dynamo_store.save_tag(working, TagStatus.WRITTEN, "x", None)
    assert dynamo_store.get("b", "k")["caption"] == "Edited while captioning"


def test_an_edit_of_another_version_or_a_deleted_row_is_refused(dynamo_store):
    edited(dynamo_store)
    with pytest.raises(NotEditable, match="no longer the row's"):
        dynamo_store.save_human_caption("b", "k", "v0", "old")
    dynamo_store.mark_deleted("b", "k", None, "99", whole=True)
    with pytest.raises(NotEditable, match="no current object"):
        dynamo_store.save_human_caption("b", "k", ref().revision, "gone")


def test_a_newer_version_clears_the_human_caption(dynamo_store):
    edited(dynamo_store)
    newer = dynamo_store.claim(ref(version="v2", seq="20"), LEASE)
    assert newer.outcome is ClaimOutcome.CLAIMED
    got = dynamo_store.get("b", "k")
    assert "caption_source" not in got and "edited_at" not in got and "caption" not in got


def test_a_model_result_says_model(dynamo_store):
    claim = dynamo_store.claim(ref(), LEASE)
    captioned(dynamo_store, claim)
    assert dynamo_store.get("b", "k")["caption_source"] == "model"
