"""The in-memory captions table behaves as the real one: random sequences of claims, fenced
writes, deletes and lease expiries give the same answers and the same rows from
``MemoryCaptions`` (tests/fakes/memory.py) and ``CaptionStore`` on moto's DynamoDB."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from moto import mock_aws

from captioner.store import CaptionStore, ObjectRef, Result, Status
from captioner.tags import TagStatus
from captioner_tools.local.template import table_definition
from tests.fakes.memory import MemoryCaptions

VERSIONS = [("v1", "10"), ("v2", "20"), ("v3", "30"), ("v1", None), ("v2", None)]
CLAIM = st.tuples(
    st.just("claim"), st.sampled_from(VERSIONS), st.sampled_from([None, "local"]), st.booleans()
)
SAVE = st.tuples(
    st.just("save_result"), st.integers(0, 5), st.sampled_from(list(Status)), st.booleans(),
    st.sampled_from([None, "job-1"]), st.sampled_from([None, "local", "modelslab"]),
)  # fmt: skip
TAG = st.tuples(st.just("save_tag"), st.integers(0, 5), st.sampled_from(list(TagStatus)))
JOB = st.tuples(st.just("record_job"), st.integers(0, 5))
DELETE = st.tuples(
    st.just("delete"), st.sampled_from([None, "v1", "v2"]),
    st.sampled_from([None, "05", "15", "25", "35"]), st.booleans(),
)  # fmt: skip
ADVANCE = st.tuples(st.just("advance"), st.sampled_from([1, 120]))
OPS = st.lists(st.one_of(CLAIM, SAVE, TAG, JOB, DELETE, ADVANCE), min_size=1, max_size=12)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture(scope="module")
def dynamodb():
    with mock_aws():
        client = boto3.client(
            "dynamodb", region_name="us-east-1",
            aws_access_key_id="testing", aws_secret_access_key="testing",
        )  # fmt: skip
        client.create_table(TableName="t", **table_definition())
        yield client


KEYS = itertools.count()


# The DynamoDB store also keeps a word index of the captions (captioner/index.py) and records
# on the row what it has indexed; the pipeline never reads it, and the fake keeps no index.
INDEX_ATTRIBUTES = ("indexed_words", "indexed_at")


def _comparable(row: dict[str, Any] | None) -> dict[str, Any] | None:
    """The row without the fence token's value (random), keeping whether there is one, and
    without the word index's bookkeeping."""
    if row is None:
        return None
    kept = {k: v for k, v in row.items() if k not in INDEX_ATTRIBUTES}
    return {**kept, "claim_token": "claim_token" in row}


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=OPS)
def test_memory_captions_answers_and_writes_as_the_dynamodb_store(dynamodb, ops):
    key = f"k{next(KEYS)}"  # a fresh row per example, one table for all
    clock = Clock()
    stores = (CaptionStore("t", dynamodb, clock=clock), MemoryCaptions(clock=clock))
    claims: tuple[list, list] = ([], [])
    for op in ops:
        answers = []
        for store, held in zip(stores, claims, strict=True):
            answers.append(_apply(store, held, key, op))
        if op[0] == "advance":
            clock.now += timedelta(seconds=op[1])
        assert answers[0] == answers[1], op
        real, fake = (_comparable(s.get("b", key)) for s in stores)
        assert real == fake, op


def _apply(store: Any, held: list, key: str, op: tuple) -> Any:
    kind = op[0]
    if kind == "claim":
        (version, sequencer), provider, current = op[1:]
        ref = ObjectRef("b", key, version, "e", 5, sequencer)
        claim = store.claim(ref, 60.0, provider, current=current)
        held.append(claim)
        return claim.outcome, claim.attempts, claim.job_id, claim.same_revision
    if kind in ("save_result", "save_tag", "record_job"):
        if not held:
            return None
        claim = held[op[1] % len(held)]
        if kind == "save_result":
            status, keep, job, provider = op[2:]
            result = Result(status, caption="a cat", provider=provider, provider_job_id=job)
            return store.save_result(claim, result, keep_lease=keep)
        if kind == "save_tag":
            return store.save_tag(claim, op[2], "a cat", None)
        return store.record_job(claim, "job-2", "modelslab")
    if kind == "delete":
        version, sequencer, whole = op[1:]
        return store.mark_deleted("b", key, version, sequencer, whole)
    return None
