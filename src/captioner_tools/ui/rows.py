"""Which rows a gallery view shows, newest first, a page at a time.

A view is its URL: ``status``, ``prefix``, ``q`` (the word index, as ``captioner search``;
never a Scan), ``meaning`` (rank by meaning, as ``search --meaning``) and ``cursor``. Paging
without a search continues the index query after the last row shown (its index key is the
cursor), so a page never repeats or skips a row of the one before it.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from captioner.search import IndexSearch, NothingToSearch, SearchQuery
from captioner.store import INDEX_BY_BUCKET, INDEX_BY_STATUS, STATUSES, CaptionReader, from_item

DEFAULT_PAGE = 100
MAX_PAGE = 500


class BadView(ValueError):
    """A filter or cursor the gallery cannot use (a 400, one line)."""


@dataclass(frozen=True)
class View:
    bucket: str
    status: str | None = None
    prefix: str = ""
    q: str = ""
    meaning: bool = False
    cursor: str | None = None
    limit: int = DEFAULT_PAGE

    @classmethod
    def parse(cls, params: Any, bucket: str) -> View:
        status = (params.get("status") or "").strip().upper() or None
        if status is not None and status not in STATUSES:
            raise BadView(f"status must be one of {', '.join(STATUSES)}")
        try:
            limit = int(params.get("limit") or DEFAULT_PAGE)
        except ValueError:
            raise BadView("limit must be a number") from None
        if not 1 <= limit <= MAX_PAGE:
            raise BadView(f"limit must be between 1 and {MAX_PAGE}")
        return cls(
            bucket=(params.get("bucket") or bucket).strip(),
            status=status,
            prefix=params.get("prefix") or "",
            q=(params.get("q") or "").strip(),
            meaning=(params.get("meaning") or "") in ("1", "on", "true"),
            cursor=params.get("cursor") or None,
            limit=limit,
        )

    def params(self, **changes: Any) -> dict[str, str]:
        """The view's query parameters (for links), without empty ones."""
        values = {
            "status": self.status or "", "prefix": self.prefix, "q": self.q,
            "meaning": "1" if self.meaning else "", "cursor": self.cursor or "",
            "limit": "" if self.limit == DEFAULT_PAGE else str(self.limit),
        }  # fmt: skip
        values.update({k: "" if v is None else str(v) for k, v in changes.items()})
        return {k: v for k, v in values.items() if v}


@dataclass(frozen=True)
class Page:
    rows: list[dict[str, Any]]
    next: str | None


def read_page(captions: CaptionReader, db: Any, view: View) -> Page:
    if view.q:
        return _search(captions, view)
    return _listing(captions.table_name, db, view)


def _search(captions: CaptionReader, view: View) -> Page:
    query = SearchQuery(
        view.q, bucket=view.bucket, prefix=view.prefix, status=view.status,
        limit=view.limit, after=view.cursor,
    )  # fmt: skip
    try:
        if view.meaning:
            from captioner_tools.search.ranking import rank_by_meaning

            page = rank_by_meaning(IndexSearch(captions), query, notify=lambda *_: None)
        else:
            page = IndexSearch(captions).find(query)
    except NothingToSearch as exc:
        raise BadView(f"{exc}; add a more specific word") from None
    except ValueError as exc:  # a cursor that is not one of ours
        raise BadView(f"bad cursor or query: {exc}") from None
    return Page(page.rows, page.next)


def _listing(table: str, db: Any, view: View) -> Page:
    names: dict[str, str] = {"#p": "status" if view.status else "bucket"}
    values: dict[str, Any] = {":p": {"S": view.status or view.bucket}}
    filters = []
    if view.status:
        names["#b"], values[":b"] = "bucket", {"S": view.bucket}
        filters.append("#b = :b")
    if view.prefix:
        names["#k"], values[":k"] = "key", {"S": view.prefix}
        filters.append("begins_with(#k, :k)")
    args: dict[str, Any] = {
        "TableName": table,
        "IndexName": INDEX_BY_STATUS if view.status else INDEX_BY_BUCKET,
        "KeyConditionExpression": "#p = :p",
        "ExpressionAttributeNames": names,
        "ExpressionAttributeValues": values,
        "ScanIndexForward": False,
        "Limit": min(view.limit * (4 if filters else 1) + 1, 1000),
    }
    if filters:
        args["FilterExpression"] = " AND ".join(filters)
    start = _decode(view.cursor) if view.cursor else None
    rows: list[dict[str, Any]] = []
    while True:
        if start:
            args["ExclusiveStartKey"] = start
        resp = db.query(**args)
        for item in resp.get("Items", []):
            if len(rows) == view.limit:  # one more exists: the page ends at the last shown
                return Page(rows, _encode(_index_key(rows[-1], bool(view.status))))
            rows.append(from_item(item))
        start = resp.get("LastEvaluatedKey")
        if not start:
            return Page(rows, None)


def _index_key(row: dict[str, Any], by_status: bool) -> dict[str, Any]:
    key = {
        "bucket": {"S": row["bucket"]}, "key": {"S": row["key"]},
        "updated_at": {"S": row["updated_at"]},
    }  # fmt: skip
    if by_status:
        key["status"] = {"S": row["status"]}
    return key


def _encode(key: dict[str, Any]) -> str:
    raw = json.dumps({k: v["S"] for k, v in key.items()}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode(cursor: str) -> dict[str, Any]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        values = json.loads(raw)
        if not isinstance(values, dict) or not {"bucket", "key", "updated_at"} <= set(values):
            raise ValueError
        return {k: {"S": str(v)} for k, v in values.items()}
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadView("bad cursor: use the next link of a page") from None
