"""The six holes a black-box review found at the outside world's limits (issue 20), each
driven through the real handler against moto and the fake ModelsLab. Every test here failed
before its fix. The limits they sit at are catalogued in docs/boundaries.md."""

from __future__ import annotations

import pytest

from captioner.search import IndexSearch, SearchQuery
from captioner.store import CaptionReader
from tests.conftest import BUCKET, TABLE
from tests.fakes.modelslab import Reply
from tests.faults.harness import Clock, Instance, Queue, drain
from tests.faults.test_defects import upload

S3_MAX_KEY_BYTES = 1024  # S3: "The object key name is a sequence of Unicode characters with
# UTF-8 encoding of up to 1,024 bytes long."


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def queue():
    return Queue(max_receive=3)


@pytest.fixture
def instance(app_env, clock):
    return Instance(clock)


def key_of(n_bytes: int, char: str = "猫") -> str:
    """A key of exactly ``n_bytes`` UTF-8 bytes made of ``char`` (and ASCII to fill)."""
    width = len(char.encode())
    body = char * ((n_bytes - 4) // width)
    return body + "x" * (n_bytes - 4 - len(body.encode())) + ".png"


# -- 1. a long key: the word index must never cost the paid caption ------------------------------


@pytest.mark.parametrize(
    "n_bytes,char",
    [(990, "a"), (1024, "a"), (1024, "猫"), (1024, "😀")],
    ids=["990-ascii", "1024-ascii", "1024-cjk", "1024-emoji"],
)
def test_1_a_key_of_any_length_s3_allows_is_captioned_paid_once_and_found(
    app_env, fake_modelslab, instance, queue, clock, n_bytes, char
):
    key = key_of(n_bytes, char)
    assert len(key.encode()) == n_bytes <= S3_MAX_KEY_BYTES
    fake_modelslab.rule = lambda body: None  # the default: "A picture named <file>."
    _, event = upload(app_env, key)

    queue.send(event)
    drain(queue, instance, clock)

    row = app_env.row(key)
    assert row["status"] == "CAPTIONED" and row["caption"].startswith("A picture named")
    assert row.get("indexed_words"), "the postings were written"
    assert len(fake_modelslab.accepted()) == 1
    found = IndexSearch(CaptionReader(TABLE, app_env.ddb)).find(
        SearchQuery("picture named", bucket=BUCKET)
    )
    assert [r["key"] for r in found.rows] == [key]


def test_1_a_paid_caption_is_saved_even_when_dynamodb_refuses_its_index_entries(
    app_env, fake_modelslab, instance, queue, clock, monkeypatch
):
    """Whatever limit the postings break (here: the unbounded sort key of 0.3), the row is
    written without them, once, and the image is not paid again."""
    from captioner import index

    monkeypatch.setattr(index, "sort_key", lambda at, bucket, key: f"{at}#{bucket}#{key}")
    key = key_of(1024, "猫")
    _, event = upload(app_env, key)

    queue.send(event)
    drain(queue, instance, clock)

    row = app_env.row(key)
    assert row["status"] == "CAPTIONED" and row["tag_status"] == "WRITTEN"
    assert "indexed_words" not in row
    assert len(fake_modelslab.accepted()) == 1


# -- 2. a success that carries a job id but no caption yet ---------------------------------------


@pytest.mark.parametrize(
    "output",
    [[], [""], ["   "], None, [None]],
    ids=["empty-list", "empty", "blank", "none", "null"],
)
def test_2_a_success_with_a_job_id_and_no_caption_polls_that_job_never_pays_again(
    app_env, fake_modelslab, instance, queue, clock, output
):
    reply = {"status": "success", "id": 41}
    if output is not None:
        reply["output"] = output
    fake_modelslab.queue(Reply(reply))
    # the text arrives later at the job's fetch endpoint: empty twice more, then there
    polls = iter([Reply(reply), Reply(reply)])
    fake_modelslab.fetch_rule = lambda job: next(
        polls, Reply({"status": "success", "id": 41, "output": ["A late caption."]})
    )
    _, event = upload(app_env, "late.png")

    queue.send(event)
    drain(queue, instance, clock)

    row = app_env.row("late.png")
    assert row["status"] == "CAPTIONED" and row["caption"] == "A late caption."
    assert len(fake_modelslab.accepted()) == 1
    assert {p.path for p in fake_modelslab.polls()} == {"/api/v6/image_editing/fetch/41"}
