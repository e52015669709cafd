"""``get``, ``list`` and ``search``: reading captions from the table and its word index."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import typer
from botocore.exceptions import ClientError
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from captioner.search import IndexSearch, NothingToSearch, SearchQuery
from captioner.store import STATUSES, CaptionReader, RowQuery, Status
from captioner_tools.cli import render
from captioner_tools.cli.options import CsvOpt, JsonOpt, LimitOpt, deployment_of
from captioner_tools.cli.s3url import parse_s3_url
from captioner_tools.cli.target import Deployment
from captioner_tools.errors import CliError


def output_format(as_json: bool, as_csv: bool) -> str:
    if as_json and as_csv:
        raise CliError("choose one of --json and --csv")
    return "json" if as_json else "csv" if as_csv else "table"


def get(
    ctx: typer.Context,
    url: Annotated[str, typer.Argument(metavar="s3://BUCKET/KEY", help="The object.")],
    as_json: JsonOpt = False,
) -> None:
    """The caption row of one object (status, caption or reason, provider, version...)."""
    target = parse_s3_url(url, object_key=True)
    deployment = deployment_of(ctx)
    row = deployment.captions().get(target.bucket, target.key)
    if row is None:
        require_bucket(deployment, target.bucket)
        raise CliError(
            f"no caption row for {target} (not uploaded, not captioned yet, or "
            "not in this deployment's bucket)"
        )
    if as_json:
        render.print_json(row)
    else:
        render.out.print(render.row_details(row))


def list_(
    ctx: typer.Context,
    url: Annotated[
        str | None,
        typer.Argument(
            metavar="[s3://BUCKET/PREFIX]", help="Bucket and key prefix \\[default: --bucket]."
        ),
    ] = None,
    status: Annotated[
        str | None,
        typer.Option(
            "--status",
            "-s",
            help=f"Only rows with this status: {'|'.join(STATUSES)}.",
            case_sensitive=False,
        ),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(help="Only rows updated since: ISO date/time (UTC) or an age (30m, 6h, 2d)."),
    ] = None,
    limit: LimitOpt = 50,
    as_json: JsonOpt = False,
    as_csv: CsvOpt = False,
) -> None:
    """Rows newest first, from the table's indexes (never a Scan).

    With a bucket/prefix only, queries the by-bucket-updated index (prefix as a filter).
    With --status, queries the by-status-updated index and filters by bucket/prefix when
    one is given as well: rows of one status (FAILED, REJECTED) are usually far fewer than
    the rows of a bucket. Without a URL or --status, the deployment's bucket is listed.
    """
    fmt = output_format(as_json, as_csv)
    deployment = deployment_of(ctx)
    query = RowQuery(
        status=_status(status),
        since=parse_since(since) if since else None,
        limit=limit or None,
    )
    if url:
        target = parse_s3_url(url)
        query = replace(query, bucket=target.bucket, prefix=target.key)
    elif not query.status:
        query = replace(query, bucket=deployment.bucket)
    rows = deployment.captions().list_rows(query)
    if not rows and query.bucket:
        require_bucket(deployment, query.bucket)
    render.print_rows(rows, fmt)


def require_bucket(deployment: Deployment, bucket: str) -> None:
    """Say so when the bucket does not exist (a misspelt name reads as "no rows" otherwise).
    Only a 404 counts: no permission to look (403) says nothing about the rows."""
    try:
        deployment.client("s3").head_bucket(Bucket=bucket)
    except ClientError as exc:
        if str(exc.response.get("Error", {}).get("Code", "")) in ("404", "NoSuchBucket"):
            raise CliError(f"bucket {bucket} does not exist (check the s3:// URL)") from None


def search(
    ctx: typer.Context,
    words: Annotated[
        list[str],
        typer.Argument(
            metavar="WORDS... [s3://BUCKET/PREFIX]",
            help="Words the caption (or its labels) must all contain; an s3:// argument "
            "limits the search to that bucket and key prefix.",
        ),
    ],
    status: Annotated[
        str | None,
        typer.Option(
            "--status",
            "-s",
            help=f"Only rows with this status: {'|'.join(STATUSES)}.",
            case_sensitive=False,
        ),
    ] = None,
    limit: LimitOpt = 50,
    after: Annotated[
        str | None,
        typer.Option(help="Continue after this cursor (printed on stderr under a full page)."),
    ] = None,
    scan: Annotated[
        bool,
        typer.Option(
            "--scan",
            help="Read the whole table instead of the word index (tables written before "
            "the index, until `captioner backfill --reindex`); substring match.",
        ),
    ] = False,
    meaning: Annotated[
        bool,
        typer.Option(
            "--meaning",
            help="Rank by meaning, best first, with an offline sentence-embedding model: "
            "also finds captions that say it in other words (kitten for tabby cat).",
        ),
    ] = False,
    as_json: JsonOpt = False,
    as_csv: CsvOpt = False,
) -> None:
    """Rows whose caption contains all the words, newest first, from the word index.

    The index holds each caption's words and labels (case, accents and plurals folded;
    very common words such as "a", "of" and "photo" are left out). A search reads the
    postings of its longest word (about 0.5 read units per 4 KB: some 20 postings) and one
    row per result (1 read unit each), whatever the size of the table. --scan is the old
    Scan of the whole table (1 read unit per 8 KB of rows).
    """
    fmt = output_format(as_json, as_csv)
    scope = [w for w in words if w.startswith("s3://")]
    text = " ".join(w for w in words if not w.startswith("s3://"))
    if len(scope) > 1:
        raise CliError("give at most one s3://BUCKET/PREFIX")
    if not text.split():
        raise CliError("search needs some words")
    query = SearchQuery(text, status=_status(status), limit=limit or None, after=after)
    if scope:
        target = parse_s3_url(scope[0])
        query = replace(query, bucket=target.bucket, prefix=target.key)
    if query.status == Status.DELETED and not scan:
        raise CliError(
            "deleted objects are not in the word index (their rows keep the caption): "
            "use --scan --status DELETED"
        )
    captions = deployment_of(ctx).captions()
    if scan:
        render.print_rows(_scan(captions, query), fmt)
        return
    try:
        if meaning:
            from captioner_tools.search.ranking import rank_by_meaning

            page = rank_by_meaning(IndexSearch(captions), query, notify=render.err.print)
        else:
            page = IndexSearch(captions).find(query)
    except NothingToSearch as exc:
        raise CliError(f"{exc}; add a more specific word, or use --scan") from None
    render.print_rows(page.rows, fmt)
    if page.next:
        render.err.print(f"more: add --after {page.next}", soft_wrap=True, markup=False)


def _scan(captions: CaptionReader, query: SearchQuery) -> list[dict[str, Any]]:
    total = captions.approximate_count()
    with Progress(
        SpinnerColumn(),
        TextColumn("scanning {task.completed} of ~{task.total} items"),
        BarColumn(),
        TimeElapsedColumn(),
        console=render.err,
        transient=True,
        disable=not render.err.is_terminal,  # no bars in logs and pipes
    ) as progress:
        task = progress.add_task("scan", total=total)

        def advance(n: int) -> None:
            progress.advance(task, n)

        return captions.search(
            query.text, limit=query.limit, on_page=advance, bucket=query.bucket,
            prefix=query.prefix, status=query.status,
        )  # fmt: skip


def _status(value: str | None) -> str | None:
    if value is None:
        return None
    status = value.strip().upper()
    if status not in STATUSES:
        raise CliError(f"--status must be one of {', '.join(STATUSES)}, not {value!r}")
    return status


def parse_since(text: str, now: datetime | None = None) -> str:
    """An ISO date/time (naive = UTC) or an age (``30m``, ``6h``, ``2d``, ``1w``) → the
    ``updated_at`` format, which sorts as text."""
    now = now or datetime.now(UTC)
    age = re.fullmatch(r"\s*(\d+)\s*([smhdw])\s*", text)
    if age:
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
        try:
            when = now - timedelta(**{unit[age.group(2)]: int(age.group(1))})
        except (OverflowError, ValueError):
            raise CliError(f"--since {text!r}: that age reaches before year 1") from None
    else:
        try:
            when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        except ValueError:
            raise CliError(
                f"--since {text!r}: expected an ISO date/time (2026-11-25, "
                "2026-11-25T10:00:00Z) or an age (30m, 6h, 2d)"
            ) from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
    when = when.astimezone(UTC)
    # Zero-padded year: the index compares these as text (year 999 must sort before 2026).
    return (
        f"{when.year:04d}" + when.strftime("-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"
    )
