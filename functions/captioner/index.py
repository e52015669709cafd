"""The word index of captions: which words find a row, and the index items that say so.

The index lives in the captions table, in a key space no bucket can use (S3 bucket names
never contain ``#``). One item ("posting") per indexed word of a row:

    bucket = "#w#<word>#<shard>"            partition: the word, spread over SHARDS partitions
    key    = "<indexed_at>#<bucket>#<key>"  sort key: newest first, and unique per object
    object_bucket, object_key, words        the row it points at, and all its indexed words

DynamoDB limits a sort key to 1,024 bytes and S3 allows keys of 1,024 bytes, so a long key
does not fit after the time and the bucket: its sort key holds the start of the key and a
digest of the whole (``sort_key``), still unique per object and still ordered by time.
Readers take the object from ``object_bucket``/``object_key``, never from the sort key.

Postings have no ``updated_at`` or ``status``, so they stay out of both global secondary
indexes. The row records what it has in the index (``indexed_words``, ``indexed_at``), and
every change of the postings is one transaction with a conditional write of the row
(``CaptionStore``): a crash leaves both changed or neither, and a delivery that lost its
row (fence token) cannot touch the index either. Readers still verify every posting against
its row, so a posting can never show a caption the row no longer has.

Words: NFKC, case-folded, accents stripped, letters and digits only, English plurals folded
("cats" → "cat"), stop words and caption boilerplate ("a", "of", "photo") left out: they
would find everything and make one partition hot. Each word's postings are spread over
SHARDS partitions by a hash of the object, so even a word in every caption stays within a
partition's write limit; a search reads the SHARDS partitions of one word.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

PREFIX = "#w#"  # partition keys of postings start with this; S3 bucket names cannot
SHARDS = 4  # partitions per word; changing it needs `captioner backfill --reindex`
# One transaction holds the row and at most 100 items: a row's old and new postings fit.
MAX_WORDS = 48
MAX_WORD_CHARS = 64

_STOP_TEXT = """
    a about above after again against all am an and any are as at be because been before
    being below between both but by can could did do does doing down during each few for from
    further had has have having he her here hers herself him himself his how i if in into is
    it its itself just me more most my myself no nor not now of off on once only or other our
    ours ourselves out over own same she should so some such than that the their theirs them
    themselves then there these they this those through to too under until up very was we
    were what when where which while who whom why will with would you your yours yourself
    yourselves
    photo photograph picture image maybe
"""
STOP_WORDS = frozenset(_STOP_TEXT.split())

_WORD = re.compile(r"[^\W_]+")


def normalise(token: str) -> str | None:
    """The index form of one token, or None when it is not worth indexing."""
    text = unicodedata.normalize("NFKD", unicodedata.normalize("NFKC", token).casefold())
    word = "".join(c for c in text if not unicodedata.combining(c))
    if len(word) < 2 or word in STOP_WORDS:
        return None
    word = _singular(word)[:MAX_WORD_CHARS]
    return None if word in STOP_WORDS else word


def _singular(word: str) -> str:
    """English plurals folded, crudely but the same way on both sides (rows and queries)."""
    if len(word) <= 3 or not word.isalpha():
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("sses", "ches", "shes", "xes", "zes")):
        return word[:-2]
    if word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def words_of(text: str) -> list[str]:
    """The distinct index words of a text, in order of appearance."""
    found: dict[str, None] = {}
    for token in _WORD.findall(text):
        word = normalise(token)
        if word:
            found[word] = None
    return list(found)


def row_words(caption: str | None, labels: Iterable[Mapping[str, Any]] | None) -> list[str]:
    """What a row is found by: its caption's words, then its labels' (the first MAX_WORDS)."""
    if not caption:
        return []
    text = " ".join([caption, *(str(label.get("label", "")) for label in labels or ())])
    return words_of(text)[:MAX_WORDS]


@dataclass(frozen=True)
class IndexState:
    """The postings a row has: its words, all under one ``indexed_at`` time."""

    words: tuple[str, ...] = ()
    at: str | None = None

    @classmethod
    def of(cls, row: Mapping[str, Any] | None) -> IndexState:
        """What the row says it has in the index."""
        if not row or not row.get("indexed_at"):
            return cls()
        return cls(tuple(str(w) for w in row.get("indexed_words") or ()), str(row["indexed_at"]))

    @property
    def empty(self) -> bool:
        return not self.words


def wanted(row: Mapping[str, Any] | None, at: str) -> IndexState:
    """What the index should hold for a row as it is: its words unless it has no caption
    or its object is deleted."""
    if not row or row.get("status") == "DELETED":
        return IndexState()
    words = row_words(row.get("caption"), row.get("labels"))
    return IndexState(tuple(words), at) if words else IndexState()


def shard(bucket: str, key: str) -> int:
    digest = hashlib.blake2b(f"{bucket}/{key}".encode(), digest_size=2).digest()
    return int.from_bytes(digest) % SHARDS


def partition(word: str, shard_no: int) -> str:
    return f"{PREFIX}{word}#{shard_no}"


# DynamoDB's limit on a sort key (UTF-8 bytes); a posting's sort key never exceeds it.
MAX_SORT_KEY_BYTES = 1024
_DIGEST_MARK = "#~"  # "<start of the key>#~<digest>" in the sort key of a long key


def sort_key(at: str, bucket: str, key: str) -> str:
    """``<at>#<bucket>#<key>``, or for a key too long for that, ``<at>#<bucket>#<as much of
    the key as fits>#~<digest of the key>`` (at most MAX_SORT_KEY_BYTES either way)."""
    full = f"{at}#{bucket}#{key}"
    if len(full.encode()) <= MAX_SORT_KEY_BYTES:
        return full
    digest = hashlib.blake2b(key.encode(), digest_size=16).hexdigest()
    tail = f"{_DIGEST_MARK}{digest}"
    room = MAX_SORT_KEY_BYTES - len(f"{at}#{bucket}#".encode()) - len(tail)
    start = key.encode()[: max(room, 0)].decode("utf-8", errors="ignore")
    return f"{at}#{bucket}#{start}{tail}"


def posting_at(value: str) -> str:
    """The ``indexed_at`` time of a posting's sort key."""
    return value.split("#", 1)[0]


def is_posting(item_bucket: str) -> bool:
    return item_bucket.startswith(PREFIX)


def posting_key(word: str, at: str, bucket: str, key: str) -> dict[str, Any]:
    return {
        "bucket": {"S": partition(word, shard(bucket, key))},
        "key": {"S": sort_key(at, bucket, key)},
    }


def changes(
    table: str, bucket: str, key: str, old: IndexState, new: IndexState
) -> list[dict[str, Any]]:
    """Transaction items that turn the postings ``old`` into ``new`` (deletes and puts)."""
    puts: dict[str, dict[str, Any]] = {}
    if new.at is not None:
        words = {"L": [{"S": w} for w in new.words]}
        for word in new.words:
            item_key = posting_key(word, new.at, bucket, key)
            item = {**item_key, "object_bucket": {"S": bucket}, "object_key": {"S": key}}
            puts[_ident(item_key)] = {"Put": {"TableName": table, "Item": {**item, "words": words}}}
    deletes: dict[str, dict[str, Any]] = {}
    if old.at is not None:
        for word in old.words:
            item_key = posting_key(word, old.at, bucket, key)
            if _ident(item_key) not in puts:  # one transaction may touch an item only once
                deletes[_ident(item_key)] = {"Delete": {"TableName": table, "Key": item_key}}
    return [*deletes.values(), *puts.values()]


def _ident(item_key: Mapping[str, Any]) -> str:
    return f"{item_key['bucket']['S']}\n{item_key['key']['S']}"
