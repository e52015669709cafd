"""``ui``, ``edit`` and ``export``: the gallery, a person's caption, and the alt-text export."""

from __future__ import annotations

import contextlib
import sys
from typing import Annotated

import typer

from captioner.store import STATUSES
from captioner_tools.cli import render
from captioner_tools.cli.options import JsonOpt, deployment_of
from captioner_tools.cli.s3url import parse_s3_url
from captioner_tools.errors import CliError
from captioner_tools.review import EXPORT_FORMATS, Reviewer, export_lines

UI_EXTRA = "error: the gallery needs the 'ui' extra: pip install 'captioner[ui]'"


def require_ui() -> None:
    """The ``ui`` extra's libraries are there, or one line that says what to install."""
    try:
        import jinja2  # noqa: F401
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise CliError(UI_EXTRA.removeprefix("error: ")) from None


def ui(
    ctx: typer.Context,
    host: Annotated[
        str, typer.Option(help="Address to listen on (only this machine by default).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port (0 = any free port).")] = 8765,
    no_open: Annotated[bool, typer.Option("--no-open", help="Do not open a browser tab.")] = False,
) -> None:
    """A local gallery of the captions: browse, search, filter, edit, re-caption, export.

    Prints one line with the URL (it carries this run's token, which every write needs)
    and serves until Ctrl-C. Requests for any other Host are refused.
    """
    require_ui()
    from captioner_tools.ui.server import serve

    deployment = deployment_of(ctx)
    deployment.captions()  # names resolved now: a missing stack is one line, not a 500 later
    _ = deployment.bucket
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C: the server has stopped
        serve(deployment, host, port, open_browser=not no_open)


def edit(
    ctx: typer.Context,
    url: Annotated[str, typer.Argument(metavar="s3://BUCKET/KEY", help="The object.")],
    caption: Annotated[str, typer.Argument(help="The new caption (alt text).")],
    version_id: Annotated[
        str | None,
        typer.Option(help="Refuse unless the row still describes this version."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Set a person's caption: caption_source=human, never replaced by the pipeline
    (duplicates, backfills, re-captions) unless a re-caption is forced."""
    target = parse_s3_url(url, object_key=True)
    row = Reviewer(deployment_of(ctx)).edit(target.bucket, target.key, caption, version_id)
    if as_json:
        render.print_json(row)
    else:
        render.out.print(render.row_details(row))


def export(
    ctx: typer.Context,
    url: Annotated[
        str | None,
        typer.Argument(metavar="[s3://BUCKET/PREFIX]", help="Bucket and key prefix."),
    ] = None,
    fmt: Annotated[
        str, typer.Option("--format", "-f", help=f"{'|'.join(EXPORT_FORMATS)}.")
    ] = "csv",
    status: Annotated[
        str | None,
        typer.Option("--status", "-s", help=f"Only rows with this status: {'|'.join(STATUSES)}."),
    ] = None,
    prefix: Annotated[str | None, typer.Option(help="Only keys that start with this.")] = None,
) -> None:
    """Alt text for CMS imports: bucket,key,version_id,caption,caption_source,status."""
    from captioner.store import RowQuery

    deployment = deployment_of(ctx)
    bucket, key_prefix = deployment.bucket if not url else None, ""
    if url:
        target = parse_s3_url(url)
        bucket, key_prefix = target.bucket, target.key
    assert bucket is not None
    key_prefix = prefix if prefix is not None else key_prefix
    wanted = (status or "").strip().upper() or None
    if wanted is not None and wanted not in STATUSES:
        raise CliError(f"--status must be one of {', '.join(STATUSES)}, not {status!r}")
    captions = deployment.captions()
    if wanted:
        rows = iter(captions.list_rows(RowQuery(bucket, key_prefix, wanted, limit=None)))
    else:
        rows = captions.iter_rows(bucket, key_prefix)
    for chunk in export_lines(rows, fmt):
        sys.stdout.write(chunk)
