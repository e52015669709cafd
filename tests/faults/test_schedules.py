"""Random schedules of uploads, deletes, backfills, deliveries, duplicates, concurrent
deliveries, crashes and provider replies, checked against the promises (Hypothesis).

The default run tries the same 25 schedules every time (derandomized, so CI is
repeatable); ``scripts/test tests/faults/test_schedules.py --schedules 500 --schedules-random``
explores more.
"""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, unquote_plus, urlparse

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from captioner import index
from captioner.budget import BUDGET_PARTITION
from captioner.events import backfill_message
from captioner.index import IndexState
from captioner.leases import SLOTS_PARTITION, SlotLeases
from captioner.search import IndexSearch, SearchQuery
from captioner.store import CaptionReader, from_item
from tests import images
from tests.conftest import BUCKET, TABLE, EventLog, moto_stack, notification, s3_record
from tests.fakes.modelslab import FakeModelsLab, Reply
from tests.fakes.openai import FakeOpenAI, completion, error
from tests.faults.harness import (
    Clock,
    Instance,
    Queue,
    assert_row_says_what_happened,
    current_version,
    drain,
    lease_expired,
    paid_versions,
)

# S3 allows keys of 1,024 bytes of UTF-8: the third is one, in CJK (the word index's limit)
KEYS = ("a.png", "b.jpg", "長" * 338 + "x.png")
# Where a delivery may die. Not right after an immediate ``success`` reply and before its
# durable write: nothing can make a payment and a write atomic (README, Guarantees);
# tests/faults/test_defects.py covers a crash there for queued jobs, which are stored first.
CRASH_STEPS = ("claim", "record_job", "save_result", "get_tags", "put_tags", "save_tag",
               "publish")  # fmt: skip
REPLIES = ("success", "processing", "link", "flaky_link", "poll_error", "rate_limited",
           "server_error", "image_fault", "empty_success")  # fmt: skip
# OpenAI, asked by name by re-captions: a caption, a bad key, an outage, an empty 200
OPENAI_REPLIES = ("success", "unauthorized", "server_error", "empty")
PRICE = 0.0047
OPENAI_PRICE = 0.0005
BUDGET_USD = 0.0188  # four ModelsLab requests a day: some schedules park rows

upload = st.tuples(st.just("upload"), st.sampled_from(KEYS), st.sampled_from(("", "00", "-0")))
delete = st.tuples(st.just("delete"), st.sampled_from(KEYS))
backfill = st.tuples(st.just("backfill"), st.sampled_from(KEYS))
deliver = st.tuples(
    st.just("deliver"), st.integers(0, 30), st.one_of(st.none(), st.sampled_from(CRASH_STEPS))
)
duplicate = st.tuples(st.just("duplicate"), st.integers(0, 30))
concurrent = st.tuples(st.just("concurrent"), st.integers(0, 30))
expire = st.tuples(st.just("expire"))
# a re-caption by name: OpenAI, or the deployment's own provider (after a fallback's caption)
recaption = st.tuples(
    st.just("recaption"), st.sampled_from(KEYS), st.sampled_from(("openai", "modelslab"))
)
operations = st.lists(
    st.one_of(upload, delete, backfill, recaption, deliver, deliver, duplicate, concurrent, expire),
    min_size=1,
    max_size=14,
)


@dataclass
class Script:
    """The provider's answers: each paid request takes the next kind, round robin."""

    fake: FakeModelsLab
    kinds: list[str]
    _next: Any = field(default_factory=itertools.count)
    _jobs: dict[str, str] = field(default_factory=dict)  # job id -> kind
    _polls: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def install(self) -> None:
        self.fake.rule = self.caption
        self.fake.fetch_rule = self.poll

    def caption(self, body: dict[str, Any]) -> Reply:
        with self._lock:
            n = next(self._next)
            kind = self.kinds[n % len(self.kinds)]
            job = str(1000 + n)
            self._jobs[job] = kind
        if kind == "success":
            return Reply({"status": "success", "id": int(job), "output": [f"Caption {job}."]})
        if kind in ("processing", "poll_error"):
            return Reply({"status": "processing", "id": int(job), "eta": 0})
        if kind in ("link", "flaky_link"):
            if kind == "flaky_link":
                self.fake.queue_link(job, Reply(status=503, body=b"not yet"))
            return Reply({"status": "success", "id": int(job), "output": [self.fake.link_url(job)]})
        if kind == "empty_success":  # the text arrives later at the job's fetch endpoint
            return Reply({"status": "success", "id": int(job), "output": []})
        if kind == "rate_limited":
            return Reply({"status": "error", "retry_after": 1}, status=429)
        if kind == "server_error":
            return Reply({"message": "internal"}, status=500)
        return Reply({"status": "error", "message": "could not decode image"})  # image_fault

    def poll(self, job: str) -> Reply:
        with self._lock:
            kind = self._jobs.get(job, "success")
            self._polls[job] = polls = self._polls.get(job, 0) + 1
        if kind == "poll_error" and polls == 1:
            return Reply({"status": "error", "message": "Rate limit exceeded"})
        if kind in ("link", "flaky_link"):
            return Reply({"status": "success", "id": int(job), "output": [self.fake.link_url(job)]})
        return Reply({"status": "success", "id": int(job), "output": [f"Caption {job}."]})


class World:
    """The bucket as the uploader changes it, and the queue S3 (or a backfill) feeds."""

    def __init__(self, aws: Any, clock: Clock) -> None:
        self.aws, self.clock = aws, clock
        self.queue = Queue(max_receive=3)
        self.instance = Instance(clock)
        self._seq = itertools.count(1)

    def sequencer(self, style: str = "") -> str:
        # Equal under AWS's rule (right-pad with zeros, then compare): lengths vary freely.
        value = f"{next(self._seq):04X}0A1B2C3D4E50"
        return {"": value, "00": value + "00", "-0": value.rstrip("0")}[style]

    def upload(self, key: str, style: str) -> None:
        size = 8 + next(self._seq)
        body = images.jpeg(size, 8) if key.endswith(".jpg") else images.png(size, 8)
        resp = self.aws.s3.put_object(Bucket=BUCKET, Key=key, Body=body)
        record = s3_record(key, version_id=resp["VersionId"], etag=resp["ETag"].strip('"'),
                           size=len(body), sequencer=self.sequencer(style))  # fmt: skip
        self.queue.send(notification(record))

    def delete(self, key: str) -> None:
        self.aws.s3.delete_object(Bucket=BUCKET, Key=key)
        record = s3_record(key, event_name="ObjectRemoved:DeleteMarkerCreated",
                           sequencer=self.sequencer())  # fmt: skip
        self.queue.send(notification(record))

    def backfill(self, key: str, provider: str | None = None) -> None:
        try:
            head = self.aws.s3.head_object(Bucket=BUCKET, Key=key)
        except self.aws.s3.exceptions.ClientError:
            return
        import json

        self.queue.send(json.loads(backfill_message(
            BUCKET, key, version_id=head["VersionId"], etag=head["ETag"].strip('"'),
            size=head["ContentLength"], provider=provider,
        )))  # fmt: skip

    def recaption(self, key: str, provider: str) -> None:
        self.backfill(key, provider)

    def deliver(self, index: int, crash: str | None) -> None:
        waiting = self.queue.waiting()
        if not waiting:
            return
        msg = waiting[index % len(waiting)]
        if crash is None:
            self.queue.deliver(self.instance, msg)
            return
        with self.instance.crash_after(crash):
            self.queue.deliver(self.instance, msg)

    def duplicate(self, index: int) -> None:
        if self.queue.messages:
            self.queue.send(self.queue.messages[index % len(self.queue.messages)].body)

    def concurrent(self, index: int) -> None:
        """Two containers get two copies of one notification at the same moment."""
        if not self.queue.messages:
            return
        body = self.queue.messages[index % len(self.queue.messages)].body
        copies = [self.queue.send(body), self.queue.send(body)]
        other = Instance(self.clock)
        threads = [
            threading.Thread(target=self.queue.deliver, args=(inst, msg))
            for inst, msg in zip((self.instance, other), copies, strict=True)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def apply(self, op: tuple[Any, ...]) -> None:
        name, *args = op
        if name == "expire":
            self.clock.advance(3600)
        else:
            getattr(self, name)(*args)


def check_promises(world: World, fake: FakeModelsLab, openai: FakeOpenAI) -> None:
    aws, clock = world.aws, world.clock
    check_paid(fake, openai)
    assert world.instance.longest * 1000 < world.instance.remaining_ms, "past the budget"
    for key in KEYS:
        row = aws.row(key)
        current = current_version(aws.s3, key)
        if current is None:  # deleted (or never uploaded): no caption describes it
            assert row is None or row["status"] == "DELETED", row
            continue
        assert row is not None, f"{key} exists and every message was handled, but has no row"
        assert row["version_id"] == current, f"{key}: the row describes an older version"
        assert row["status"] != "DELETED", row
        if row["status"] == "PENDING":  # only when its messages were all dead-lettered
            assert lease_expired(row, clock), row
        if row.get("recaption_status"):  # a re-caption that did not land kept the caption
            assert row.get("caption") and row["recaption_status"] in ("PENDING", "FAILED"), row
        if row["status"] == "CAPTIONED":
            assert row.get("caption"), row
            assert row.get("tag_status") in ("WRITTEN", "FAILED"), row
            tags = aws.tags(key, current)
            assert row.get("tag_status") != "WRITTEN" or tags.get("caption") == row["tag_value"]
    check_word_index(aws)
    # every invocation, crashed ones included, gave its provider leases back
    assert SlotLeases(TABLE, aws.ddb, "modelslab", 2).held() == {}
    for msg in world.queue.messages:
        assert msg.fate in ("deleted", "dead-lettered")
        key = unquote_plus(msg.body["Records"][0]["s3"]["object"]["key"])
        if msg.fate == "dead-lettered" and current_version(aws.s3, key):
            assert_row_says_what_happened(aws.row(key), msg, clock)


def check_paid(fake: FakeModelsLab, openai: FakeOpenAI) -> None:
    """Paid at most once per version and provider — ModelsLab again only after another
    provider's caption replaced its own (a re-caption asked for by name) — and never past
    the daily budget."""
    openai_captions: Counter[tuple[str, str]] = Counter()
    for req in openai.requests:
        if (
            req.reply is not None
            and req.reply.status == 200
            and "choices" in (req.reply.json or {})
        ):
            url = urlparse(req.image_url)
            key = unquote(url.path.lstrip("/"))
            key = key if url.netloc.startswith(BUCKET) else key.split("/", 1)[-1]
            openai_captions[(key, parse_qs(url.query).get("versionId", [""])[0])] += 1
    for version, paid in paid_versions(fake).items():
        assert paid <= 1 + openai_captions[version], f"paid {paid} times: {version}"
    spent = len(fake.accepted()) * PRICE + len(openai.requests) * OPENAI_PRICE
    assert spent <= BUDGET_USD + 1e-9, f"spent {spent:.4f} $ of a {BUDGET_USD} $ budget"


def check_events(world: World, log: EventLog) -> None:
    """Every final row was announced: the newest event for its key has its status; a row
    that still owes its event had a message dead-lettered by a dying instance."""
    newest: dict[str, dict[str, Any]] = {}
    for event in log.take():
        detail = event["detail"]
        if detail["updated_at"] >= newest.get(detail["key"], {}).get("updated_at", ""):
            newest[detail["key"]] = detail
    for key in KEYS:
        row = world.aws.row(key)
        if row is None or row["status"] == "PENDING":
            continue
        if row.get("event_due"):
            assert any(m.last == "killed" and m.fate == "dead-lettered"
                       for m in world.queue.messages), row  # fmt: skip
            continue
        assert key in newest, f"{key} is {row['status']} but was never announced"
        assert newest[key]["status"] == row["status"], (newest[key], row)


def check_word_index(aws: Any) -> None:
    """The postings are exactly those the rows record (none orphaned, none missing); a
    captioned row records its caption's words, a deleted one none; search finds by them."""
    items = aws.ddb.scan(TableName=TABLE)["Items"]
    postings, recorded = set(), set()
    for item in items:
        if index.is_posting(item["bucket"]["S"]):
            postings.add((item["bucket"]["S"], item["key"]["S"]))
            continue
        if item["bucket"]["S"] in (BUDGET_PARTITION, SLOTS_PARTITION):  # counters, not rows
            continue
        row = from_item(item)
        state = IndexState.of(row)
        for word in state.words:
            key = index.posting_key(word, str(state.at), row["bucket"], row["key"])
            recorded.add((key["bucket"]["S"], key["key"]["S"]))
        if row["status"] == "CAPTIONED":
            assert list(state.words) == index.row_words(row.get("caption"), row.get("labels"))
        if row["status"] == "DELETED":
            assert state.empty, row
    assert postings == recorded
    finder = IndexSearch(CaptionReader(TABLE, aws.ddb))
    for key in KEYS:
        row = aws.row(key)
        if row and row["status"] == "CAPTIONED":
            found = finder.find(SearchQuery(row["caption"], limit=None)).rows
            assert [r["key"] for r in found] == [key]


class OpenAIScript:
    """OpenAI's answers, round robin over ``kinds``."""

    def __init__(self, fake: FakeOpenAI, kinds: list[str]) -> None:
        self.kinds, self._next, self._lock = kinds, itertools.count(), threading.Lock()
        fake.requests.clear()
        fake.rule = self.answer

    def answer(self, request: Any) -> Reply | None:
        with self._lock:
            kind = self.kinds[next(self._next) % len(self.kinds)]
        if kind == "unauthorized":
            return Reply(error("Incorrect API key provided"), status=401)
        if kind == "server_error":
            return Reply(error("overloaded", type="server_error"), status=500)
        if kind == "empty":
            return Reply(completion(""))
        return None  # the fake's own caption


@pytest.fixture
def function_env(aws_env, fake_modelslab, fake_openai, monkeypatch):
    from tests.conftest import API_KEY

    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai.url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-test-key-0000")
    monkeypatch.setenv("OPENAI_PRICE_USD", str(OPENAI_PRICE))
    monkeypatch.setenv("CAPTION_DAILY_BUDGET_USD", str(BUDGET_USD))

    monkeypatch.setenv("CAPTIONS_TABLE", TABLE)
    monkeypatch.setenv("MODELSLAB_API_URL", fake_modelslab.url)
    monkeypatch.setenv("MODELSLAB_API_KEY", API_KEY)
    monkeypatch.setenv("CAPTION_MAX_RECEIVE_COUNT", "3")
    monkeypatch.setenv("CAPTION_PROVIDER_CONCURRENCY", "2")  # the template's leases
    monkeypatch.delenv("MODELSLAB_API_KEY_SECRET", raising=False)
    monkeypatch.delenv("CAPTION_PROVIDER", raising=False)
    return fake_modelslab, fake_openai


def schedules(request: pytest.FixtureRequest) -> int:
    return int(request.config.getoption("--schedules"))


@pytest.mark.slow
def test_random_schedules_keep_every_promise(function_env, request):
    fake, openai = function_env

    @settings(
        max_examples=schedules(request),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        derandomize=not request.config.getoption("--schedules-random"),
    )
    @given(
        ops=operations,
        kinds=st.lists(st.sampled_from(REPLIES), min_size=1, max_size=6),
        openai_kinds=st.lists(st.sampled_from(OPENAI_REPLIES), min_size=1, max_size=4),
    )
    def schedule(ops: list[tuple[Any, ...]], kinds: list[str], openai_kinds: list[str]) -> None:
        fake.requests.clear()
        fake.link_replies.clear()
        Script(fake, kinds).install()
        OpenAIScript(openai, openai_kinds)
        with moto_stack() as aws:
            log = EventLog()
            world = World(aws, Clock())
            for op in ops:
                world.apply(op)
            drain(world.queue, world.instance, world.clock)
            check_promises(world, fake, openai)
            check_events(world, log)

    schedule()
