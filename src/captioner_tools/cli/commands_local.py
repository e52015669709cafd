"""``local up``: the embedded local stack in the foreground."""

from __future__ import annotations

from typing import Annotated

import typer

from captioner_tools.cli.localview import (
    activity_printer,
    banner,
    modelslab_warning,
    print_usage,
    wait_for_interrupt,
)
from captioner_tools.cli.options import ProviderOpt, TemplateOpt, VisibilityOpt
from captioner_tools.cli.render import err, out
from captioner_tools.errors import CliError
from captioner_tools.local import require_extra
from captioner_tools.local.defaults import DEFAULT_PORT, DEFAULT_RETRY_DELAY_S

local_app = typer.Typer(
    help="The embedded local stack: moto on 127.0.0.1 with the resources of template.yaml "
    "and the Lambda handler, in one process.",
    no_args_is_help=True,
)


@local_app.command("up")
def up(
    port: Annotated[
        int, typer.Option(help="Port on 127.0.0.1 (0 = any free port).")
    ] = DEFAULT_PORT,
    provider: ProviderOpt = None,
    visibility_timeout: VisibilityOpt = DEFAULT_RETRY_DELAY_S,
    template: TemplateOpt = None,
    parameter_overrides: Annotated[
        list[str] | None,
        typer.Option(
            "--parameter-overrides",
            help="Template parameters as Key=Value (like sam deploy), e.g. MaxReceiveCount=2.",
        ),
    ] = None,
    stack_name: Annotated[
        str, typer.Option(help="Stack name the outputs are registered under.")
    ] = "captioner",
    log_level: Annotated[
        str, typer.Option(help="Level of the function's own (JSON) logs: DEBUG, INFO, WARNING…")
    ] = "WARNING",
    ui: Annotated[
        bool, typer.Option("--ui", help="Also serve the gallery (`captioner ui`) beside it.")
    ] = False,
) -> None:
    """Start the local stack and run until Ctrl-C (state lives in memory)."""
    require_extra()
    from captioner_tools.local.stack import LocalStack  # the extra's libraries

    stack = LocalStack(
        port=port,
        provider=provider,
        visibility_timeout=visibility_timeout,
        template=template,
        parameters=parse_overrides(parameter_overrides or []),
        stack_name=stack_name,
        log_level=log_level,
    )
    stack.on_batch = activity_printer(stack)
    stack.start()
    try:
        out.print(banner(stack))
        print_usage(stack)
        if ui:
            from captioner_tools.cli.localui import start_gallery

            start_gallery(stack)
        warning = modelslab_warning(stack)
        if warning:
            err.print(f"[yellow]warning:[/] {warning}", soft_wrap=True)
        out.print("[bold green]ready[/] — waiting for uploads (Ctrl-C to stop)", soft_wrap=True)
        wait_for_interrupt()
    finally:
        out.print("stopping…", soft_wrap=True)
        stack.stop()
        out.print("stopped; the local stack's state is gone", soft_wrap=True)


def parse_overrides(items: list[str]) -> dict[str, str]:
    """``["A=1 B=2", "C=3"]`` → {"A": "1", "B": "2", "C": "3"} (sam deploy's syntax)."""
    values = {}
    for item in (part for text in items for part in text.split()):
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise CliError(f"--parameter-overrides: expected Key=Value, not {item!r}")
        values[name] = value
    return values
