"""``captioner``: one tool for everything done with a deployment, in AWS or local.

Adding a command: create ``captioner/cli/commands_<name>.py`` with a function
``register(app: typer.Typer) -> None`` that declares the command(s) with ``@app.command()``.
Every ``commands_*`` module in this package is registered at import, in name order; nothing
here needs editing. Use ``captioner_tools.cli.target.with_deployment`` for the shared AWS options,
raise ``captioner_tools.cli.errors.CliError`` for user mistakes (one line on stderr, exit 1), and
add the command's name to ``HELP_ORDER`` if it should not be listed last.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from typing import Any

import typer
from typer.core import TyperGroup
from typer.exceptions import Abort, Exit, TyperException

from captioner_tools.cli import errors
from captioner_tools.cli.render import err

HELP_ORDER = (
    "demo", "caption", "get", "list", "search", "status", "backfill", "redrive", "local",
)  # fmt: skip


class CaptionerGroup(TyperGroup):
    """Lists commands in ``HELP_ORDER`` and turns known errors into one line on stderr."""

    def list_commands(self, ctx: typer.Context) -> list[str]:
        names = super().list_commands(ctx)
        rank = {name: i for i, name in enumerate(HELP_ORDER)}
        return sorted(names, key=lambda n: (rank.get(n, len(rank)), n))

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (Exit, Abort, TyperException, BrokenPipeError):
            raise  # --help, usage errors, Ctrl-C, `| head`: Typer's own handling
        except Exception as exc:
            message = errors.describe(exc)
            if message is None:
                if os.environ.get("CAPTIONER_DEBUG"):
                    raise
                message = (
                    f"unexpected error: {type(exc).__name__}: {exc} "
                    "(set CAPTIONER_DEBUG=1 for the traceback)"
                )
            err.print(f"[bold red]error:[/] {message}", soft_wrap=True, markup=True)
            raise typer.Exit(1) from None


app = typer.Typer(
    cls=CaptionerGroup,
    name="captioner",
    help="Caption images in S3: inspect, backfill and operate a Captioner deployment "
    "(AWS, or the local stack from `captioner local up`).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def register_commands(target: typer.Typer) -> list[str]:
    """Import every ``commands_*`` module of this package and let it add its commands."""
    import captioner_tools.cli as package

    found = sorted(m.name for m in pkgutil.iter_modules(package.__path__))
    modules = [name for name in found if name.startswith("commands_")]
    for name in modules:
        importlib.import_module(f"captioner_tools.cli.{name}").register(target)
    return modules


register_commands(app)


def main() -> None:
    app()
