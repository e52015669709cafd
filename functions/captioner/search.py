"""Searching captions through the word index (``captioner.index``), never a Scan.

A search reads the postings of one of its words — the longest, likely the rarest — from the
word's SHARDS partitions, newest first, merged; the other words, the bucket and the key
prefix are filters on those postings. The rows the postings point at are then read
(BatchGetItem) and each posting is checked against its row: the row must still record that
posting (``indexed_at``), have every word, not be DELETED, and have the asked status. So the
cost is the postings of one word down to the last result, plus one row read per result.

Pages: a search returns at most ``limit`` rows and a cursor (the last posting's sort key);
the next page starts after it, in every shard at once.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from captioner import index
from captioner.store import CaptionReader, Status

PAGE_MAX = 1000  # postings per Query page (they are small: about 150-300 bytes)


@dataclass(frozen=True)
class SearchQuery:
    text: str
    bucket: str | None = None
    prefix: str = ""  # of the object key, with a bucket
    status: str | None = None
    limit: int | None = 50  # None = every match
    after: str | None = None  # the cursor of the previous page


@dataclass(frozen=True)
class SearchPage:
    rows: list[dict[str, Any]]
    next: str | None  # where the next page starts, or None when this one is the last


@dataclass(frozen=True)
class Posting:
    sort_key: str
    bucket: str
    key: str

    @property
    def at(self) -> str:
        return index.posting_at(self.sort_key)


class NothingToSearch(ValueError):
    """The text has no word the index holds (only stop words, or no letters at all)."""


def query_words(text: str) -> list[str]:
    words = index.words_of(text)
    if not words:
        raise NothingToSearch(
            f"{text!r} has no word the index holds: very common words (a, of, photo, …) "
            "are not indexed"
        )
    return words


class IndexSearch:
    def __init__(self, reader: CaptionReader) -> None:
        self._reader = reader
        self._db = reader._db
        self.table_name = reader.table_name

    def find(self, query: SearchQuery) -> SearchPage:
        """Rows whose caption (or labels) has every word, newest indexed first."""
        words = query_words(query.text)
        driver = max(words, key=lambda w: (len(w), w))
        postings = self.postings(driver, [w for w in words if w != driver], query)
        rows: list[dict[str, Any]] = []
        while True:
            want = (query.limit - len(rows)) if query.limit else 100
            chunk = [p for _, p in zip(range(min(max(want, 10), 100)), postings, strict=False)]
            if not chunk:
                return SearchPage(rows, None)
            found = self._reader.rows_at([(p.bucket, p.key) for p in chunk])
            for posting in chunk:
                row = found.get((posting.bucket, posting.key))
                if row is not None and matches(row, posting, words, query.status):
                    rows.append(row)
                    if query.limit and len(rows) >= query.limit:
                        return SearchPage(rows, posting.sort_key)

    def rows_at(self, objects: list[tuple[str, str]]) -> dict[tuple[str, str], dict[str, Any]]:
        return self._reader.rows_at(objects)

    def postings(self, word: str, others: list[str], query: SearchQuery) -> Iterator[Posting]:
        """The postings of ``word`` that also list ``others`` (and lie in the bucket and
        prefix), newest first across its shards."""
        shards = [self._shard(index.partition(word, s), others, query) for s in range(index.SHARDS)]
        return heapq.merge(*shards, key=lambda p: p.sort_key, reverse=True)

    def _shard(self, partition: str, others: list[str], query: SearchQuery) -> Iterator[Posting]:
        names = {"#p": "bucket", "#k": "key", "#pb": "object_bucket", "#pk": "object_key"}
        values: dict[str, Any] = {":p": {"S": partition}}
        condition = "#p = :p"
        if query.after:
            condition += " AND #k < :after"
            values[":after"] = {"S": query.after}
        filters = []
        for i, word in enumerate(others):
            names["#w"] = "words"
            values[f":w{i}"] = {"S": word}
            filters.append(f"contains(#w, :w{i})")
        if query.bucket:
            values[":ob"] = {"S": query.bucket}
            filters.append("#pb = :ob")
            if query.prefix:
                values[":ok"] = {"S": query.prefix}
                filters.append("begins_with(#pk, :ok)")
        limit = max(query.limit or PAGE_MAX, 10) * (4 if filters else 1)
        args: dict[str, Any] = {
            "TableName": self.table_name,
            "KeyConditionExpression": condition,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
            "ScanIndexForward": False,
            # the object, from its own attributes: a long key's sort key holds only its start
            "ProjectionExpression": "#k, #pb, #pk",
            "Limit": min(limit, PAGE_MAX),
        }
        if filters:
            args["FilterExpression"] = " AND ".join(filters)
        while True:
            page = self._db.query(**args)
            for item in page.get("Items", []):
                if "object_bucket" not in item or "object_key" not in item:
                    continue  # not a posting (nothing else should write here)
                yield Posting(item["key"]["S"], item["object_bucket"]["S"], item["object_key"]["S"])
            if "LastEvaluatedKey" not in page:
                return
            args["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def matches(row: dict[str, Any], posting: Posting, words: list[str], status: str | None) -> bool:
    """The row still stands behind the posting, and answers the query."""
    if row.get("indexed_at") != posting.at or row.get("status") == Status.DELETED:
        return False
    if status and row.get("status") != status:
        return False
    return set(words) <= set(index.row_words(row.get("caption"), row.get("labels")))
