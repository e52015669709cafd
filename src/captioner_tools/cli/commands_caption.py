"""``captioner caption PATH...``: caption local files (or folders) without S3, through the
same image checks and provider code as the pipeline."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress
from rich.table import Table

from captioner.config import Config
from captioner.files import FileCaption, caption_file, expand
from captioner.providers import make_provider
from captioner_tools.cli.render import err, out, status_text
from captioner_tools.errors import CliError


class ProviderChoice(StrEnum):
    local = "local"
    modelslab = "modelslab"
    openai = "openai"
    bedrock = "bedrock"


class LengthChoice(StrEnum):
    short = "short"
    normal = "normal"
    long = "long"


def caption(
    paths: Annotated[
        list[Path], typer.Argument(help="Image files or folders (searched recursively).")
    ],
    provider: Annotated[
        ProviderChoice | None,
        typer.Option(help="Default: modelslab when MODELSLAB_API_KEY is set, otherwise local."),
    ] = None,
    length: Annotated[LengthChoice, typer.Option(help="Caption length.")] = LengthChoice.normal,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per file (JSON Lines) on stdout.")
    ] = False,
) -> None:
    """Caption local image files with a provider, without S3 (try or compare providers).

    Exit status: 0 when every file was captioned, 1 when some were rejected or failed.
    The ModelsLab provider uploads each file with its base64_to_url helper first (5 MB cap;
    larger files are downscaled) and costs 0.0047 $ per image. openai sends each file as a
    data URL to OPENAI_BASE_URL (OPENAI_API_KEY, OPENAI_MODEL); bedrock calls Converse with
    your AWS credentials and region (BEDROCK_MODEL_ID).
    """
    files = list(expand(paths))
    if not files:
        raise CliError("no files found in " + ", ".join(str(p) for p in paths))
    name = (provider.value if provider else None) or (
        "modelslab"
        if os.environ.get("MODELSLAB_API_KEY") or os.environ.get("MODELSLAB_API_KEY_SECRET")
        else "local"
    )
    env = {**os.environ, "CAPTIONS_TABLE": os.environ.get("CAPTIONS_TABLE") or "-"}
    config = replace(Config.from_env(env), provider=name, length=length.value)
    chosen = make_provider(config)
    results = []
    with Progress(console=err, transient=True, disable=as_json and not err.is_terminal) as bar:
        task = bar.add_task(f"captioning with {name}", total=len(files))
        for path in files:
            result = caption_file(path, chosen, config.length, config)
            results.append(result)
            if as_json:
                out.print(
                    json.dumps(result.as_dict(), ensure_ascii=False),
                    soft_wrap=True,
                    markup=False,
                    highlight=False,
                )
            bar.advance(task)
    if not as_json:
        out.print(_table(results))
    if any(r.status != "CAPTIONED" for r in results):
        raise typer.Exit(1)


def _table(results: list[FileCaption]) -> Table:
    table = Table()
    table.add_column("File", overflow="fold")
    table.add_column("Status", no_wrap=True)
    table.add_column("Caption / reason", overflow="fold")
    table.add_column("Top labels", overflow="fold")
    for r in results:
        labels = ", ".join(f"{lb['label']} {lb['score']:.2f}" for lb in r.labels[:3])
        table.add_row(r.path, status_text(r.status), r.caption or r.reason or "", labels)
    return table
