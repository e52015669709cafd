"""The deployment-wide provider leases in the captions table (captioner/leases.py), against
moto: the rules tests/fakes/memory.py's MemoryLeases plays in the unit tests, and an App whose
records take them."""

from __future__ import annotations

import threading
from typing import Any

import boto3
import pytest

from captioner.app import App
from captioner.leases import SLOTS_PARTITION, SlotLeases
from tests import images
from tests.conftest import TABLE, LambdaContext, fast, notification, s3_record, sqs_event
from tests.fakes.modelslab import Reply
from tests.faults.harness import AtomicDynamoDB


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_leases_stop_at_the_limit_and_come_back(aws):
    clock = Clock()
    leases = SlotLeases(TABLE, aws.ddb, "modelslab", limit=2, clock=clock)
    assert leases.has_room()
    assert leases.take("a", clock.now + 60) and leases.take("b", clock.now + 60)
    assert not leases.has_room()
    assert not leases.take("c", clock.now + 60)
    leases.give_back("a")
    assert leases.take("c", clock.now + 60)
    assert set(leases.held()) == {"b", "c"}
    # another provider has leases of its own
    assert SlotLeases(TABLE, aws.ddb, "openai", limit=1, clock=clock).take("a", clock.now + 60)


def test_a_lease_whose_holder_died_is_cleared_once_it_ends(aws):
    clock = Clock()
    leases = SlotLeases(TABLE, aws.ddb, "modelslab", limit=1, clock=clock)
    assert leases.take("died", clock.now + 10)
    assert not leases.take("next", clock.now + 60)
    clock.now += 11
    assert leases.has_room()  # an ended lease does not count
    assert leases.take("next", clock.now + 60)
    assert set(leases.held()) == {"next"}


def test_a_retried_take_finds_its_own_lease(aws):
    """A request retried after its first try landed (a timeout): the holder is in the map."""
    clock = Clock()
    leases = SlotLeases(TABLE, aws.ddb, "modelslab", limit=1, clock=clock)
    assert leases.take("me", clock.now + 60)
    assert leases.take("me", clock.now + 60)
    assert not leases.take("other", clock.now + 60)


def test_a_removed_item_is_made_again(aws):
    leases = SlotLeases(TABLE, aws.ddb, "modelslab", limit=1)
    assert leases.take("a", 2e9)
    aws.ddb.delete_item(TableName=TABLE, Key={"bucket": {"S": SLOTS_PARTITION},
                                              "key": {"S": "modelslab"}})  # fmt: skip
    assert leases.take("b", 2e9) and set(leases.held()) == {"b"}


def test_concurrent_takes_never_pass_the_limit(aws):
    leases = SlotLeases(TABLE, AtomicDynamoDB(aws.ddb), "modelslab", limit=5)
    won: list[str] = []

    def take(name: str) -> None:
        if leases.take(name, 2e9):
            won.append(name)

    threads = [threading.Thread(target=take, args=(f"h{i}",)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 5 and set(leases.held()) == set(won)


# -- an App with CAPTION_PROVIDER_CONCURRENCY ---------------------------------------------------


def _uploads(aws: Any, prefix: str, count: int) -> list[dict[str, Any]]:
    out = []
    for i in range(count):
        obj = aws.put(f"{prefix}/{i}.png", images.png())
        rec = s3_record(f"{prefix}/{i}.png", version_id=obj["version_id"], etag=obj["etag"],
                        size=obj["size"], sequencer="0066A1B2C3D4E5F601")  # fmt: skip
        out.append(notification(rec))
    return out


def _instance() -> App:
    """One instance (as one container), its DynamoDB writes atomic as DynamoDB's are."""
    app = fast(App.from_env())
    atomic = AtomicDynamoDB(app.pipeline.store._db)
    app.pipeline.store._db = atomic
    assert app.pipeline.budget is not None
    app.pipeline.budget._db = atomic
    limit = app.config.provider_concurrency
    app.pipeline.slots._leases_for = lambda name: SlotLeases(TABLE, atomic, name, limit)
    return app


@pytest.mark.parametrize("instances", [1, 3])
def test_instances_use_every_free_lease_and_never_more(
    app_env, fake_modelslab, monkeypatch, instances
):
    """ProviderConcurrency 3: one instance alone fills all three leases with its batch (a
    burst needs no other instance); three instances of three records at a time each never
    put more than three requests at the provider. Nothing is held afterwards."""
    monkeypatch.setenv("CAPTION_PROVIDER_CONCURRENCY", "3")
    monkeypatch.setenv("CAPTION_PROVIDER_SLOTS", "3")
    monkeypatch.setenv("CAPTION_BATCH_CONCURRENCY", "3")
    fake_modelslab.rule = lambda body: Reply({"status": "success", "output": ["ok"]}, delay=0.15)
    apps = [_instance() for _ in range(instances)]
    batches = [_uploads(app_env, f"i{n}", 6) for n in range(instances)]
    results: list[dict[str, Any]] = []

    def run(app: App, batch: list[dict[str, Any]]) -> None:
        results.append(app.handle(sqs_event(*batch), LambdaContext()))

    threads = [threading.Thread(target=run, args=p) for p in zip(apps, batches, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [{"batchItemFailures": []}] * instances
    assert fake_modelslab.max_in_flight == 3
    assert len(fake_modelslab.accepted()) == 6 * instances
    held = SlotLeases(TABLE, boto3.client("dynamodb", region_name="us-east-1"), "modelslab", 3)
    assert held.held() == {}


class CountingLeases(SlotLeases):
    """SlotLeases that count the leases taken from DynamoDB and given back to it."""

    taken = 0
    given_back = 0

    def take(self, holder: str, until: float) -> bool:
        got = super().take(holder, until)
        type(self).taken += got
        return got

    def give_back(self, holder: str) -> None:
        super().give_back(holder)
        type(self).given_back += 1


def test_a_lease_is_kept_for_the_batch_records_still_to_call(app_env, fake_modelslab, monkeypatch):
    """One slot, records one after another: the first record's lease serves the whole batch
    (App passes each record's ticket to the slots), and goes back once, at the end."""
    monkeypatch.setenv("CAPTION_PROVIDER_CONCURRENCY", "2")
    monkeypatch.setenv("CAPTION_PROVIDER_SLOTS", "1")
    monkeypatch.setenv("CAPTION_BATCH_CONCURRENCY", "1")
    monkeypatch.setattr(CountingLeases, "taken", 0)
    monkeypatch.setattr(CountingLeases, "given_back", 0)
    fake_modelslab.rule = lambda body: Reply({"status": "success", "output": ["ok"]})
    app = _instance()
    atomic = app.pipeline.store._db
    app.pipeline.slots._leases_for = lambda name: CountingLeases(TABLE, atomic, name, 2)
    batch = _uploads(app_env, "kept", 4)
    assert app.handle(sqs_event(*batch), LambdaContext()) == {"batchItemFailures": []}
    assert len(fake_modelslab.accepted()) == 4
    assert (CountingLeases.taken, CountingLeases.given_back) == (1, 1)
    held = SlotLeases(TABLE, boto3.client("dynamodb", region_name="us-east-1"), "modelslab", 2)
    assert held.held() == {}


def test_the_lease_item_stays_out_of_the_indexes(app_env, fake_modelslab, monkeypatch):
    monkeypatch.setenv("CAPTION_PROVIDER_CONCURRENCY", "2")
    app = _instance()
    fake_modelslab.rule = lambda body: Reply({"status": "success", "output": ["a cat"]})
    assert app.handle(sqs_event(*_uploads(app_env, "x", 1)), LambdaContext()) == {
        "batchItemFailures": []
    }
    ddb = boto3.client("dynamodb", region_name="us-east-1")
    table = ddb.describe_table(TableName=TABLE)["Table"]
    for index in table.get("GlobalSecondaryIndexes", []):
        items = ddb.scan(TableName=TABLE, IndexName=index["IndexName"])["Items"]
        assert items and all(i["bucket"]["S"] != SLOTS_PARTITION for i in items), index
    assert ddb.get_item(TableName=TABLE, Key={"bucket": {"S": SLOTS_PARTITION},
                                              "key": {"S": "modelslab"}})["Item"]  # fmt: skip
