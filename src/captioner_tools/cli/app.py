"""``captioner``: one tool for everything done with a deployment, in AWS or local.

Every command is registered below, in the order ``--help`` lists them. Adding one: write
the function in a ``commands_*.py`` module and register it here; give it
``cls=DeploymentCommand`` if it talks to a deployment (it then takes the shared deployment
options and reads them with ``captioner_tools.cli.options.deployment_of``). Raise
``captioner_tools.errors.CliError`` for user mistakes (one line on stderr, exit 1).
"""

from __future__ import annotations

import os
from importlib.metadata import version
from typing import Annotated, Any

import typer
from rich.markup import escape
from typer.core import TyperGroup
from typer.exceptions import Abort, Exit, TyperException

from captioner_tools.cli import (
    commands_backfill,
    commands_caption,
    commands_connect,
    commands_demo,
    commands_doctor,
    commands_events,
    commands_local,
    commands_queue,
    commands_rows,
    commands_ui,
    errors,
)
from captioner_tools.cli.options import DeploymentCommand
from captioner_tools.cli.render import err


class CaptionerGroup(TyperGroup):
    """Turns known errors into one line on stderr."""

    def invoke(self, ctx: Any) -> Any:  # a click Context: Typer vendors click privately
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
            for line in message.splitlines() or [message]:  # one error line per problem
                err.print(f"[bold red]error:[/] {escape(line)}", soft_wrap=True, markup=True)
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


def _print_version(value: bool) -> None:
    if value:
        print(f"captioner {version('captioner')}")  # the installed package's metadata
        raise typer.Exit()


@app.callback()
def _options(
    _version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print the installed version and exit.",
        ),
    ] = False,
) -> None:
    pass


app.command(rich_help_panel="Main job")(commands_demo.demo)
app.command(rich_help_panel="Captions")(commands_caption.caption)
app.command(cls=DeploymentCommand, rich_help_panel="Captions")(commands_rows.get)
app.command("list", cls=DeploymentCommand, rich_help_panel="Captions")(commands_rows.list_)
app.command(cls=DeploymentCommand, rich_help_panel="Captions")(commands_rows.search)
app.command(cls=DeploymentCommand, rich_help_panel="Review")(commands_ui.ui)
app.command(cls=DeploymentCommand, rich_help_panel="Review")(commands_ui.edit)
app.command(cls=DeploymentCommand, rich_help_panel="Review")(commands_ui.export)
app.command(cls=DeploymentCommand, rich_help_panel="Operations")(commands_queue.status)
app.command(cls=DeploymentCommand, rich_help_panel="Operations")(commands_doctor.doctor)
app.command(cls=DeploymentCommand, rich_help_panel="Operations")(commands_connect.connect)
app.command(cls=DeploymentCommand, rich_help_panel="Operations")(commands_events.events)
app.command(cls=DeploymentCommand, rich_help_panel="Operations")(commands_backfill.backfill)
app.command("redrive", cls=DeploymentCommand, rich_help_panel="Operations")(commands_queue.redrive_)
app.add_typer(commands_local.local_app, name="local", rich_help_panel="Local stack")


def main() -> None:
    app()
