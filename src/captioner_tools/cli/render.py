"""Printing rows: a Rich table for people, JSON or CSV for programs (stdout only; messages
and progress go to stderr so that ``--json``/``--csv`` output can be piped)."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

# `captioner list --csv` columns, in this order (a public contract: append, never reorder).
CSV_COLUMNS = (
    "bucket", "key", "status", "updated_at", "provider", "caption", "reason", "last_error",
    "version_id", "etag", "size", "format", "width", "height", "attempts", "tag_status",
)  # fmt: skip

STATUS_STYLES = {
    "CAPTIONED": "green",
    "REJECTED": "yellow",
    "SKIPPED": "cyan",
    "FAILED": "bold red",
    "PENDING": "magenta",
    "DELETED": "dim",
}

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)


def status_text(status: str) -> Text:
    return Text(status, style=STATUS_STYLES.get(status, ""))


def summary_of(row: dict[str, Any]) -> str:
    """The caption, or why there is none: the reason and its cause ("will retry" alone
    would hide a bad key or an unreachable provider, which the row's last_error names)."""
    if row.get("caption"):
        return str(row["caption"])
    reason, cause = str(row.get("reason") or ""), str(row.get("last_error") or "")
    if reason and cause and cause not in reason:
        return f"{reason}: {cause}"
    return reason or cause


def heading(text: str) -> None:
    """A line above a table (a table's own title wraps to the table's width)."""
    out.print(f"[bold]{text}[/]", soft_wrap=True)


def rows_table(rows: Iterable[dict[str, Any]]) -> Table:
    """Rows as a table; when they share one bucket, keys only (the bucket goes above)."""
    rows = list(rows)
    buckets = {row.get("bucket") for row in rows}
    one_bucket = buckets.pop() if len(buckets) == 1 else None
    table = Table(expand=False)
    table.add_column("Updated (UTC)", no_wrap=True, style="dim")
    table.add_column("Status", no_wrap=True)
    table.add_column("Key" if one_bucket else "Object", overflow="fold")
    table.add_column("Caption / reason", overflow="fold")
    for row in rows:
        where = row.get("key") if one_bucket else f"s3://{row.get('bucket')}/{row.get('key')}"
        table.add_row(
            str(row.get("updated_at", ""))[:19].replace("T", " "),
            status_text(str(row.get("status", ""))),
            str(where),
            summary_of(row),
        )
    return table


def print_rows(rows: list[dict[str, Any]], fmt: str) -> None:
    if fmt == "json":
        print_json(rows)
    elif fmt == "csv":
        print_csv(rows)
    elif rows:
        buckets = {row.get("bucket") for row in rows}
        if len(buckets) == 1:
            heading(f"{len(rows)} row(s) in s3://{buckets.pop()}/, newest first")
        out.print(rows_table(rows))
    else:
        err.print("no rows")


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, ensure_ascii=False, default=str) + "\n")


def print_csv(rows: Iterable[dict[str, Any]]) -> None:
    writer = csv.DictWriter(sys.stdout, fieldnames=CSV_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in CSV_COLUMNS})


def row_details(row: dict[str, Any]) -> Table:
    """One row, field by field, for `captioner get`."""
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    first = ("bucket", "key", "status", "caption", "reason", "last_error", "provider")
    for name in [*first, *sorted(k for k in row if k not in first)]:
        if name not in row:
            continue
        value = row[name]
        if name == "status":
            table.add_row(name, status_text(str(value)))
        elif name == "labels" and isinstance(value, list):
            table.add_row(name, ", ".join(f"{v.get('label')} {v.get('score')}" for v in value))
        else:
            table.add_row(name, str(value))
    return table
