"""``demo``: the main job on one machine — upload images to the local stack and wait until
the Lambda handler has captioned every one."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from captioner.store import FINAL_STATUSES
from captioner_tools.cli.localview import modelslab_warning, print_usage, wait_for_interrupt
from captioner_tools.cli.options import ProviderOpt, TemplateOpt, VisibilityOpt
from captioner_tools.cli.render import err, out, status_text, summary_of
from captioner_tools.cli.samples import find_images, write_sample_photos
from captioner_tools.errors import CliError
from captioner_tools.local import require_extra

if TYPE_CHECKING:  # the 'local' extra: imported once require_extra() said it is there
    from captioner_tools.local.stack import LocalStack

KEY_PREFIX = "demo/"


def demo(
    directory: Annotated[
        Path | None,
        typer.Argument(
            metavar="[DIR]",
            help="Images to caption \\[default: sample photos bundled with scikit-image].",
        ),
    ] = None,
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0 = any free port).")] = 0,
    provider: ProviderOpt = None,
    timeout: Annotated[float, typer.Option(min=1, help="Seconds to wait for every caption.")] = 120,
    visibility_timeout: VisibilityOpt = 5,
    template: TemplateOpt = None,
    keep_running: Annotated[
        bool, typer.Option(help="Keep the stack up afterwards, until Ctrl-C.")
    ] = False,
    verbose: Annotated[bool, typer.Option(help="Show the function's own JSON logs.")] = False,
    ui: Annotated[
        bool,
        typer.Option("--ui", help="Then serve the gallery (`captioner ui`) until Ctrl-C."),
    ] = False,
) -> None:
    """Start the local stack, upload DIR's images, wait for every caption, print them.

    Exits 0 when every image reached a final state (CAPTIONED, REJECTED, SKIPPED or
    FAILED), 1 otherwise (e.g. on --timeout). Without MODELSLAB_API_KEY the offline local
    provider captions: no key, no network.
    """
    if directory is not None and not directory.is_dir():
        raise CliError(f"not a directory: {directory}")
    require_extra()
    from captioner_tools.local.stack import LocalStack

    with tempfile.TemporaryDirectory(prefix="captioner-demo-") as tmp:
        base = directory if directory is not None else Path(tmp)
        paths = find_images(directory) if directory is not None else write_sample_photos(base)
        if not paths:
            raise CliError(f"no images in {base} (looked for .jpg, .png, .gif, .webp…)")
        stack = LocalStack(
            port=port,
            provider=provider,
            visibility_timeout=visibility_timeout,
            template=template,
            register_stack=keep_running
            or ui,  # discovery by stack name only matters if it stays up
            log_level="INFO" if verbose else "ERROR",
        )
        with stack:
            finished = _run(stack, base, paths, timeout)
            if ui:
                from captioner_tools.cli.localui import start_gallery

                start_gallery(stack)
            else:
                from captioner_tools.cli.localui import HINT

                out.print(HINT, soft_wrap=True, markup=False)
            if keep_running or ui:
                print_usage(stack)
                out.print("[bold green]still running[/] — Ctrl-C to stop", soft_wrap=True)
                wait_for_interrupt()
    if not finished:
        raise typer.Exit(1)


def _run(stack: LocalStack, base: Path, paths: list[Path], timeout: float) -> bool:
    out.print(
        f"Local stack on {stack.endpoint_url} (in memory) · bucket {stack.bucket} · "
        f"provider [bold]{stack.provider.name}[/] ({stack.provider.why})",
        soft_wrap=True,
    )
    warning = modelslab_warning(stack)
    if warning:
        err.print(f"[yellow]warning:[/] {warning}", soft_wrap=True)
    started = time.monotonic()
    keys = _upload(stack, base, paths)
    rows = _wait(stack, keys, timeout)
    seconds = time.monotonic() - started
    out.print(_results(keys, rows))
    final = [k for k in keys if rows.get(k, {}).get("status") in FINAL_STATUSES]
    counts: dict[str, int] = {}
    for key in final:
        counts[rows[key]["status"]] = counts.get(rows[key]["status"], 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "nothing"
    out.print(
        f"{len(final)} of {len(keys)} images finished in {seconds:.1f} s ({summary}) "
        f"with the {stack.provider.name} provider",
        soft_wrap=True,
    )
    if len(final) < len(keys):
        err.print(
            f"[red]timed out after {timeout:g} s:[/] {len(keys) - len(final)} image(s) "
            "not finished (see `captioner status` with --keep-running)",
            soft_wrap=True,
        )
    return len(final) == len(keys)


def _upload(stack: LocalStack, base: Path, paths: list[Path]) -> list[str]:
    s3 = stack.client("s3")
    keys = []
    with _progress("uploading") as progress:
        task = progress.add_task("upload", total=len(paths))
        for path in paths:
            key = KEY_PREFIX + path.relative_to(base).as_posix()
            s3.upload_file(str(path), stack.bucket, key)
            keys.append(key)
            progress.advance(task)
    return keys


def _wait(stack: LocalStack, keys: list[str], timeout: float) -> dict[str, dict[str, Any]]:
    """Poll the rows (BatchGetItem) until each is final or the time is up."""
    captions = stack.captions()
    rows: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    with _progress("captioning") as progress:
        task = progress.add_task("caption", total=len(keys))
        while True:
            pending = [k for k in keys if rows.get(k, {}).get("status") not in FINAL_STATUSES]
            rows.update(captions.get_many(stack.bucket, pending))
            done = sum(1 for k in keys if rows.get(k, {}).get("status") in FINAL_STATUSES)
            progress.update(task, completed=done)
            if done == len(keys) or time.monotonic() >= deadline:
                return rows
            time.sleep(0.25)


def _results(keys: list[str], rows: dict[str, dict[str, Any]]) -> Table:
    table = Table(title_justify="left")
    table.add_column("Key", no_wrap=True)
    table.add_column("Status", no_wrap=True)
    table.add_column("Caption / reason", overflow="fold")
    for key in keys:
        row = rows.get(key)
        if row is None:
            table.add_row(key, status_text("NOT SEEN"), "no row yet")
        else:
            table.add_row(key, status_text(str(row.get("status", "PENDING"))), summary_of(row))
    return table


def _progress(what: str) -> Progress:
    return Progress(
        TextColumn(f"{what:<11}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,  # no bars in logs and pipes
    )
