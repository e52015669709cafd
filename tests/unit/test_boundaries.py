"""The limits AWS documents, at and just past each one, where the code depends on them
(catalogued in docs/boundaries.md, whose every row names a test; the last test here checks
that each named test exists)."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import httpx
import pytest

from captioner import index
from captioner.announce import event_detail
from captioner.errors import ProviderTransientError
from captioner.events import backfill_message, parse_message_body
from captioner.providers.openai import OpenAIProvider
from captioner.providers.vision import MAX_CAPTION_CHARS, clean_caption
from captioner.requeue import MAX_DELAY_S, delay_seconds
from captioner.store import RESULT_FIELDS
from tests.unit.test_modelslab import IMAGE

ROOT = Path(__file__).resolve().parents[2]
S3_KEY_BYTES = 1024  # S3: object keys up to 1,024 bytes of UTF-8
S3_BUCKET_CHARS = 63
DYNAMODB_SORT_KEY_BYTES = 1024
DYNAMODB_PARTITION_KEY_BYTES = 2048
DYNAMODB_ITEM_BYTES = 400 * 1024
DYNAMODB_TRANSACTION_ITEMS = 100
SQS_MESSAGE_BYTES = 256 * 1024
EVENTBRIDGE_ENTRY_BYTES = 256 * 1024
BUCKET = "b" * S3_BUCKET_CHARS


def longest_keys() -> list[str]:
    """Keys of exactly 1,024 bytes in 1-, 2-, 3- and 4-byte characters."""
    keys = []
    for char in ("a", "é", "猫", "😀"):
        body = char * (S3_KEY_BYTES // len(char.encode()))
        keys.append(body + "x" * (S3_KEY_BYTES - len(body.encode())))
    return keys


@pytest.mark.parametrize("key", longest_keys(), ids=["1-byte", "2-byte", "3-byte", "4-byte"])
def test_a_posting_key_fits_dynamodb_for_every_key_s3_allows(key):
    assert len(key.encode()) == S3_KEY_BYTES
    at = "2026-12-08T10:15:30.123Z"
    item = index.posting_key("x" * index.MAX_WORD_CHARS * 4, at, BUCKET, key)
    assert len(item["key"]["S"].encode()) <= DYNAMODB_SORT_KEY_BYTES
    assert len(item["bucket"]["S"].encode()) <= DYNAMODB_PARTITION_KEY_BYTES
    assert index.posting_at(item["key"]["S"]) == at
    # two keys that differ only past the part that fits still get their own postings
    other = index.sort_key(at, BUCKET, key[:-1] + "z")
    assert other != item["key"]["S"] and len(other.encode()) <= DYNAMODB_SORT_KEY_BYTES


def test_a_short_keys_posting_keeps_the_readable_form():
    at = "2026-12-08T10:15:30.123Z"
    assert index.sort_key(at, "bucket", "cats/tom.jpg") == f"{at}#bucket#cats/tom.jpg"
    limit = DYNAMODB_SORT_KEY_BYTES - len(f"{at}#bucket#")
    assert index.sort_key(at, "bucket", "k" * limit).endswith("#" + "k" * limit)
    assert "#~" in index.sort_key(at, "bucket", "k" * (limit + 1))


def test_a_rows_postings_and_the_row_fit_one_transaction():
    """Old postings deleted and new ones put in one TransactWriteItems with the row."""
    most = 2 * index.MAX_WORDS + 1
    assert most <= DYNAMODB_TRANSACTION_ITEMS
    caption = " ".join(f"word{n}x" for n in range(500))
    assert len(index.row_words(caption, None)) == index.MAX_WORDS


def test_the_largest_row_fits_an_item_with_room_to_spare():
    """Every attribute at its longest: a caption of MAX_CAPTION_CHARS 4-byte characters,
    the key, error texts, the postings' word list; well under 400 KB."""
    caption = clean_caption("😀 " * MAX_CAPTION_CHARS)
    assert len(caption) <= MAX_CAPTION_CHARS
    row = dict.fromkeys(RESULT_FIELDS, "x" * 1000)
    row |= {"caption": caption, "tag_value": "x" * 256, "key": longest_keys()[3]}
    row["indexed_words"] = ["w" * index.MAX_WORD_CHARS] * index.MAX_WORDS
    size = sum(
        len(k.encode()) + len(json.dumps(v, ensure_ascii=False).encode()) for k, v in row.items()
    )
    assert size < DYNAMODB_ITEM_BYTES / 4


def test_the_event_of_the_largest_row_fits_an_eventbridge_entry():
    row = {"bucket": BUCKET, "key": longest_keys()[3], "caption": "😀" * MAX_CAPTION_CHARS,
           "reason": "r" * 1000, "version_id": "v" * 1024, "status": "CAPTIONED"}  # fmt: skip
    detail = json.dumps(event_detail(row), ensure_ascii=False).encode()
    assert len(detail) < EVENTBRIDGE_ENTRY_BYTES


@pytest.mark.parametrize("key", longest_keys(), ids=["1-byte", "2-byte", "3-byte", "4-byte"])
def test_a_backfill_message_for_the_longest_key_fits_sqs_and_parses_back(key):
    body = backfill_message(BUCKET, key, version_id="v" * 1024, etag="e" * 64, size=2**40,
                            provider="modelslab")  # fmt: skip
    assert len(body.encode()) < SQS_MESSAGE_BYTES
    (event,) = parse_message_body(body)
    assert (event.bucket, event.key, event.provider) == (BUCKET, key, "modelslab")


@pytest.mark.parametrize(
    ("wait", "seconds"),
    [(0, 0), (0.2, 1), (899.5, 900), (900, 900), (901, 900), (10**9, 900), (-5, 0),
     (math.inf, 900), (math.nan, 0)],
)  # fmt: skip
def test_a_wait_becomes_an_sqs_delay_between_0_and_900_seconds(wait, seconds):
    assert delay_seconds(wait) == seconds <= MAX_DELAY_S == 900


@pytest.mark.parametrize(
    "reply",
    [{"choices": []}, {"choices": [{"message": {"content": ""}}]}, {"id": "x", "object": "chat"}],
    ids=["no-choices", "empty-content", "no-choices-key"],
)
def test_an_openai_200_without_a_caption_counts_as_charged(reply):
    client = httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(200, json=reply)))
    provider = OpenAIProvider("https://api.test/v1", lambda: "k", "m", client=client)
    with pytest.raises(ProviderTransientError) as raised:
        provider.caption(IMAGE, "short", deadline=1e12)
    assert raised.value.maybe_charged


@pytest.mark.parametrize(
    ("error", "charged"),
    [(httpx.ConnectTimeout("c"), False), (httpx.ConnectError("c"), False),
     (httpx.ReadTimeout("r"), True), (httpx.RemoteProtocolError("r"), True)],
)  # fmt: skip
def test_an_openai_failure_counts_as_charged_only_once_the_request_was_sent(error, charged):
    def fail(request):
        raise error

    client = httpx.Client(transport=httpx.MockTransport(fail))
    provider = OpenAIProvider("https://api.test/v1", lambda: "k", "m", client=client)
    with pytest.raises(ProviderTransientError) as raised:
        provider.caption(IMAGE, "short", deadline=1e12)
    assert raised.value.maybe_charged is charged


def test_every_test_the_boundary_catalogue_names_exists():
    catalogue = (ROOT / "docs" / "boundaries.md").read_text()
    named = re.findall(r"`(tests/[\w/]+\.py)::(\w+)`", catalogue)
    assert len(named) >= 30, "the catalogue names a test for each row"
    missing = [
        f"{path}::{name}"
        for path, name in named
        if not re.search(rf"^(async )?def {name}\(", (ROOT / path).read_text(), re.MULTILINE)
    ]
    assert missing == []
    rows = [
        line for line in catalogue.splitlines()
        if line.startswith("| ") and "---" not in line and not line.endswith("| Test |")
    ]  # fmt: skip
    assert len(rows) >= 30
    untested = [row for row in rows if "`tests/" not in row]
    assert untested == [], "every row of the catalogue has a test"
